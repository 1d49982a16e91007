"""cca_qkv (CPU kernel) and cca_attention (every kernel target: CPU, CUDA/HIP, the SIMT emulators)
against zaya_ops.reference.

cca_qkv reproduces the reference's rounding points, so in bf16/fp16 its outputs agree bit for bit
except for rare 1-ulp flips (the grouped conv's fp32 sums run in another order than PyTorch's conv):
we ask for >= 99.8% identical elements and every element within two ulps. Values
and states are copies and must be identical. cca_attention computes scores in fp32 where the
reference computes them in the param dtype, so it is held to FlashAttention's rule: its error
against the reference run on fp32-cast inputs is at most twice the reference's own error. The GPU
kernel takes bf16/fp16 and head dims 64, 128 and 256: fp32 inputs and other head dims must raise a
clear error there. The emulated targets run ~1e6-1e7 GPU-thread instructions a second, so their
1000-token cases use smaller heads than the CPU's. The rules are zaya_ops.tolerances' (shared with
zaya_ops.selftest).
"""

from __future__ import annotations

import contextlib
import importlib

import pytest
import torch

from conftest import HOPPER_TARGETS, KERNEL_TARGETS, V1_TARGETS, use_target
from zaya_ops import ops, reference as ref, samples
from zaya_ops import tolerances as tol
from zaya_ops._selftest import one_thread
from zaya_ops.tolerances import require

# (nq, nkv, D, rotary dims)
HEADS = {"q8kv2d128": (8, 2, 128, 64), "q4kv4d64": (4, 4, 64, 64), "q8kv1d256": (8, 1, 256, 64),
         "q2kv1d32": (2, 1, 32, 16)}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def reference(fn):
    """fn on one thread: the reference is thousands of small ops (the kernels keep all threads)."""
    def run(**kw):
        with one_thread():
            return fn(**kw)
    return run


def rope_table(rot: int, positions: int, dtype: torch.dtype) -> torch.Tensor:
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot))
    return ref.rope_cos_sin(inv_freq, positions, dtype)


def qkv_args(seq_lens, heads, dtype, seed=0, block_size=16):
    nq, nkv, D, rot = HEADS[heads]
    shape = samples.SampleShape(seq_lens=tuple(seq_lens), nq=nq, nkv=nkv, head_dim=D, rot_dim=rot,
                                block_size=block_size)
    kw = samples.cca_qkv_args(shape, dtype=dtype, seed=seed)
    kw["cos_sin"] = rope_table(rot, int(kw["positions"].max()) + 1 if len(kw["positions"]) else 1, dtype)
    return kw


def run_qkv(fn, kw):
    kw = samples.clone_args(kw)
    return fn(**kw), kw


def assert_rounded_close(got, want, dtype, min_exact=None):
    """fp32: tight; bf16/fp16: within about one ulp everywhere and bit-identical almost everywhere
    (zaya_ops.tolerances.rounded_close: fp16's floor is lower, since it keeps 3 more mantissa bits than
    bf16 and a flipped row norm changes a whole head row)."""
    require(tol.rounded_close("out", got, want, dtype, min_exact))


def check_qkv(kw, dtype):
    """The kernel against the reference by zaya_ops.tolerances.cca_qkv (the rule zaya_ops.selftest applies)."""
    q_ref, a_ref = run_qkv(reference(ref.cca_qkv), kw)
    q_ker, a_ker = run_qkv(ops.cca_qkv, kw)
    require(tol.cca_qkv(q_ker, a_ker, q_ref, a_ref, dtype))
    return a_ker


# --- cca_qkv against the reference -----------------------------------------------------------------

QKV_CASES = [(d, h, T) for d in DTYPES for h in HEADS for T in (1, 2, 3, 7, 257, 1000)]
QKV_CASES += [(d, h, 4097) for d in DTYPES for h in ("q8kv2d128", "q2kv1d32")]


@pytest.mark.parametrize("dt,heads,T", QKV_CASES, ids=[f"{d}-{h}-T{t}" for d, h, t in QKV_CASES])
def test_qkv_single_sequence(dt, heads, T):
    check_qkv(qkv_args((T,), heads, DTYPES[dt], seed=T), DTYPES[dt])


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("heads", HEADS)
def test_qkv_varlen_batch(dt, heads):
    """Sequences of different lengths (one empty) in one call, continuing from non-zero slot states,
    slots in reversed order, some tokens not cached (slot_mapping -1)."""
    dtype = DTYPES[dt]
    kw = qkv_args((7, 0, 70, 1, 2, 33), heads, dtype, seed=1)
    kw["slot_mapping"][[0, 9, -1]] = -1
    a = check_qkv(kw, dtype)
    # The empty sequence's slot (state_indices[1]) is untouched, the spare slot 0 too.
    for slot in (int(kw["state_indices"][1]), 0):
        assert torch.equal(a["conv_state"][slot], kw["conv_state"][slot])
        assert torch.equal(a["value_state"][slot], kw["value_state"][slot])


def strided_qkv_args(kw, misalign=False):
    """kw with qt/kt/vc/vd as column slices of one fused projection (one element off a 16-byte boundary
    when misalign), caches as views of a [blocks, 2, ...] KV tensor, conv_state and value_state
    transposed in memory."""
    lead = [kw["vc"][:, :1]] if misalign else []
    fused = torch.cat(lead + [kw["qt"], kw["kt"], kw["vc"], kw["vd"]], dim=1)[:, len(lead):]
    widths = [kw[n].shape[1] for n in ("qt", "kt", "vc", "vd")]
    strided = dict(kw)
    strided.update(zip(("qt", "kt", "vc", "vd"), fused.split(widths, dim=1)))
    kv = torch.stack([kw["k_cache"], kw["v_cache"]], dim=1)
    strided["k_cache"], strided["v_cache"] = kv[:, 0], kv[:, 1]
    strided["conv_state"] = kw["conv_state"].transpose(1, 2).contiguous().transpose(1, 2)
    strided["value_state"] = kw["value_state"].t().contiguous().t()
    assert not strided["qt"].is_contiguous() and not strided["k_cache"].is_contiguous()
    return strided


def check_strided_qkv(kw, dtype, misalign=False):
    """The strided views of kw give the reference's results on contiguous copies; the mutated views
    are written in place."""
    strided = strided_qkv_args(kw, misalign)
    q_ref, a_ref = run_qkv(reference(ref.cca_qkv), kw)
    q = ops.cca_qkv(**strided)
    assert_rounded_close(q, q_ref, dtype)
    assert_rounded_close(strided["k_cache"], a_ref["k_cache"], dtype)
    for name in ("v_cache", "conv_state", "value_state"):
        assert torch.equal(strided[name], a_ref[name]), name


@pytest.mark.parametrize("dt", DTYPES)
def test_qkv_strided_inputs(dt):
    """Column slices of a fused projection and strided states/caches are used in place."""
    check_strided_qkv(qkv_args((5, 19, 1), "q8kv2d128", DTYPES[dt], seed=2), DTYPES[dt])


# --- cca_attention: FlashAttention's accuracy rule, on every kernel target ---------------------------

GPU_HEAD_DIMS = (64, 128, 256)


@pytest.fixture(params=KERNEL_TARGETS + HOPPER_TARGETS + V1_TARGETS)
def target(request, monkeypatch) -> tuple[str, str]:
    """(kernel target name, device of its tensors): see conftest.KERNEL_TARGETS, plus the Hopper (wgmma)
    kernel for head dims 64 and 128 (conftest.HOPPER_TARGETS; head dim 256 falls back to the portable
    kernel there) and the version-1 kernels (conftest.V1_TARGETS)."""
    return request.param, use_target(request.param, monkeypatch)


def is_gpu(target) -> bool:
    return target[0] != "cpu"


def is_emulated(target) -> bool:
    return target[0].startswith("emu")


def attn_args(seq_lens, cached, heads, dtype, seed=0, block_size=16, q_scale=1.0, device="cpu"):
    nq, nkv, D = HEADS[heads][:3] if isinstance(heads, str) else heads
    shape = samples.SampleShape(seq_lens=tuple(seq_lens), nq=nq, nkv=nkv, head_dim=D, block_size=block_size)
    kw = samples.cca_attention_args(shape, dtype=dtype, seed=seed, cached=tuple(cached), device=device)
    kw["q"] = (kw["q"].float() * q_scale).to(dtype)
    return kw


def check_attention(kw, dtype, target=("cpu", "cpu")):
    """The kernel of `target` against the reference; on GPU targets, fp32 and unsupported head dims must
    raise NotImplementedError that says so instead (callers fall back to the reference)."""
    if is_gpu(target) and dtype == torch.float32:
        with pytest.raises(NotImplementedError, match=r"\bq\b.*float32.*CPU kernel or zaya_ops.reference"):
            ops.cca_attention(**kw)
        return
    if is_gpu(target) and kw["q"].shape[2] not in GPU_HEAD_DIMS:
        with pytest.raises(NotImplementedError, match=r"head dim .*64, 128 or 256"):
            ops.cca_attention(**kw)
        return
    out, lse = ops.cca_attention(**kw)
    require(tol.cca_attention(out, lse, *tol.attention_references(kw, run=reference(ref.cca_attention)), dtype))


@pytest.mark.parametrize("dt", DTYPES)
def test_attention_prefill_mixed_lengths(dt, target):
    """Lengths 1, 7, 128, 129 (and 1000 but on the slow emulators) in one batch (ZAYA1 heads), some after
    cached context."""
    lens, cached = (1, 7, 128, 129, 1000), (0, 0, 5, 0, 0)
    if is_emulated(target):
        lens, cached = lens[:-1], cached[:-1]
    kw = attn_args(lens, cached, "q8kv2d128", DTYPES[dt], seed=3, device=target[1])
    check_attention(kw, DTYPES[dt], target)


def test_attention_long_prefill(target):
    """One 1000-token prefill with small heads: 63 query tiles, the costliest launched first."""
    kw = attn_args((1000,), (0,), (2, 1, 64), torch.bfloat16, seed=10, device=target[1])
    check_attention(kw, torch.bfloat16, target)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("heads", ["q4kv4d64", "q8kv1d256", "q2kv1d32"])
def test_attention_heads(dt, heads, target):
    kw = attn_args((1, 7, 128, 129), (0, 3, 0, 200), heads, DTYPES[dt], seed=4, q_scale=3.0, device=target[1])
    check_attention(kw, DTYPES[dt], target)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("heads", HEADS)
def test_attention_decode(dt, heads, target):
    """One query per sequence after 1, 7, 128, 129 and 1000 cached tokens (an empty sequence too)."""
    kw = attn_args((1, 1, 1, 1, 0, 1), (0, 6, 127, 128, 9, 999), heads, DTYPES[dt], seed=5, block_size=32,
                   device=target[1])
    check_attention(kw, DTYPES[dt], target)


@pytest.mark.parametrize("dt", ["bf16", "fp16"])
@pytest.mark.parametrize("heads,lens,cached,block_size", [  # (B x nkv x query tiles) = 2 blocks each
    ("q8kv2d128", (1,), (999,), 16),         # ZAYA1 decode of one sequence
    ("q8kv1d256", (1, 1), (1000, 129), 64),  # the short sequence leaves the later splits empty
    ((4, 1, 64), (3, 2), (500, 20), 128),    # a few queries per sequence (speculative decoding)
])
def test_attention_few_blocks_split_keys(dt, heads, lens, cached, block_size, target):
    """Too few (sequence, KV head) blocks to fill the GPU (the emulator reports 4 SMs): the GPU kernel
    splits the key axis over blocks and merges the splits (flash-decoding)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[dt]
    kw = attn_args(lens, cached, heads, dtype, seed=11, block_size=block_size, device=target[1])
    check_attention(kw, dtype, target)


def test_attention_bounds_larger_than_needed(target):
    """max_seqlen_q/k are upper bounds (static shapes for decode): larger ones change nothing that matters."""
    kw = attn_args((1, 5), (40, 3), "q8kv2d128", torch.bfloat16, seed=12, device=target[1])
    out, lse = ops.cca_attention(**kw)
    out2, lse2 = ops.cca_attention(**{**kw, "max_seqlen_q": 40, "max_seqlen_k": 700})
    assert_rounded_close(out2, out, torch.bfloat16, min_exact=0.99)
    torch.testing.assert_close(lse2, lse, rtol=1e-5, atol=1e-5)


def test_attention_strided_inputs(target):
    """q as a head view of a fused projection and the caches as views of one [blocks, 2, ...] KV tensor
    (used in place), and q at an odd address (copied): the results of contiguous inputs."""
    dtype, dev = torch.bfloat16, target[1]
    kw = attn_args((5, 19, 1), (0, 4, 30), "q8kv2d128", dtype, seed=2, device=dev)
    T, nq, D = kw["q"].shape
    fused = torch.cat([kw["q"].reshape(T, nq * D), torch.zeros(T, 4 * D, dtype=dtype, device=dev)], dim=1)
    kv = torch.stack([kw["k_cache"], kw["v_cache"]], dim=1)
    odd = torch.empty(T * nq * D + 1, dtype=dtype, device=dev)[1:].view(T, nq, D)
    odd.copy_(kw["q"])
    want_out, want_lse = ops.cca_attention(**kw)
    views = [(fused[:, :nq * D].view(T, nq, D), kv[:, 0], kv[:, 1]), (odd, kw["k_cache"], kw["v_cache"])]
    assert not views[0][0].is_contiguous() and not views[0][1].is_contiguous() and odd.data_ptr() % 16
    for q, k_cache, v_cache in views:
        out, lse = ops.cca_attention(**{**kw, "q": q, "k_cache": k_cache, "v_cache": v_cache})
        assert torch.equal(out, want_out) and torch.equal(lse, want_lse)


def test_attention_fp16(target):
    kw = attn_args((1, 7, 129), (300, 0, 2), "q4kv4d64", torch.float16, seed=8, device=target[1])
    check_attention(kw, torch.float16, target)


@pytest.mark.parametrize("D", [8, 40, 300])
def test_attention_odd_head_dims(D, target):
    """Head dims that are not multiples of the 8-wide vectors or the tile sizes (CPU: fp32, tight); the
    GPU kernel refuses them (NotImplementedError)."""
    dtype = torch.bfloat16 if is_gpu(target) else torch.float32
    check_attention(attn_args((3, 130), (0, 40), (2, 1, D), dtype, seed=9, device=target[1]), dtype, target)


def test_attention_prefill_then_decode_equals_one_prefill(target):
    """Three sequences: a chunk of prefill, then one token at a time, against one prefill of everything
    over the same cache (seqused_k and the causal mask hide the later tokens' keys)."""
    dtype, dev, lengths, prefill = torch.bfloat16, target[1], (37, 20, 9), (30, 12, 1)
    kw = attn_args(lengths, (0, 0, 0), "q8kv2d128", dtype, seed=13, device=dev)
    starts = [0, *torch.tensor(lengths).cumsum(0).tolist()[:-1]]
    full_out, full_lse = ops.cca_attention(**kw)

    def step(spans):
        rows = torch.cat([torch.arange(s0 + a, s0 + b) for s0, (a, b) in zip(starts, spans)]).to(dev)
        cu = torch.tensor([0] + [b - a for a, b in spans], device=dev).cumsum(0).to(torch.int32)
        used = torch.tensor([b for _, b in spans], dtype=torch.int32, device=dev)
        out, lse = ops.cca_attention(kw["q"][rows], kw["k_cache"], kw["v_cache"], cu, used, kw["block_table"])
        assert_rounded_close(out, full_out[rows], dtype, min_exact=0.99)
        torch.testing.assert_close(lse, full_lse[:, rows], rtol=1e-5, atol=1e-5)

    step([(0, p) for p in prefill])
    pos = list(prefill)
    while any(p < n for p, n in zip(pos, lengths)):
        spans = [(p, min(p + 1, n)) for p, n in zip(pos, lengths)]
        step(spans)
        pos = [b for _, b in spans]


# --- prefill then decode == one long prefill, through both ops ---------------------------------------

def _stream(lengths, heads, dtype, seed, block_size=8):
    """Projections of a few sequences, shared parameters and a fresh paged cache / state layout."""
    nq, nkv, D, rot = HEADS[heads]
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, sc=1.0: (torch.randn(*s, generator=g) * sc).to(dtype)  # noqa: E731
    C, hv = (nq + nkv) * D, nkv * D // 2
    proj = [dict(qt=r(n, nq * D), kt=r(n, nkv * D), vc=r(n, hv), vd=r(n, hv)) for n in lengths]
    params = dict(conv_dw_weight=r(C, 1, 2, sc=0.5), conv_dw_bias=r(C, sc=0.1), conv_g_weight=r(C, D, 2, sc=D ** -0.5),
                  conv_g_bias=r(C, sc=0.1), qk_temp=r(nkv) + 1, cos_sin=rope_table(rot, max(lengths), dtype))
    blocks = [(n + block_size - 1) // block_size for n in lengths]
    table = torch.randperm(sum(blocks), generator=g).to(torch.int32)
    table = torch.stack([torch.nn.functional.pad(t, (0, max(blocks) - len(t)), value=-1)
                         for t in table.split(blocks)])
    S = len(lengths) + 2
    state = dict(conv_state=torch.zeros(S, C, 2, dtype=dtype), value_state=torch.zeros(S, hv, dtype=dtype),
                 k_cache=torch.zeros(sum(blocks), block_size, nkv, D, dtype=dtype),
                 v_cache=torch.zeros(sum(blocks), block_size, nkv, D, dtype=dtype))
    slots = torch.tensor([2 + b for b in range(len(lengths))], dtype=torch.int32)  # not 0..B-1
    return proj, params, table, state, slots, block_size


def _step(proj, params, table, state, slots, block_size, spans):
    """cca_qkv then cca_attention for tokens spans[b] = (start, stop) of each sequence."""
    take = lambda name: torch.cat([p[name][s:e] for p, (s, e) in zip(proj, spans)])  # noqa: E731
    positions = torch.cat([torch.arange(s, e) for s, e in spans])
    seq = torch.cat([torch.full((e - s,), b) for b, (s, e) in enumerate(spans)])
    slot_mapping = table[seq, positions // block_size].long() * block_size + positions % block_size
    cu = torch.tensor([0] + [e - s for s, e in spans]).cumsum(0).to(torch.int32)
    q = ops.cca_qkv(take("qt"), take("kt"), take("vc"), take("vd"), **params, positions=positions, cu_seqlens=cu,
                    state_indices=slots, slot_mapping=slot_mapping, **state)
    used = torch.tensor([e for _, e in spans], dtype=torch.int32)
    out, lse = ops.cca_attention(q, state["k_cache"], state["v_cache"], cu, used, table)
    return q, out, lse


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("heads", ["q8kv2d128", "q2kv1d32"])
def test_prefill_then_decode_equals_one_prefill(dt, heads):
    """Through cca_qkv and cca_attention (CPU kernels)."""
    dtype = DTYPES[dt]
    lengths, prefill = (37, 20, 9), (30, 12, 1)
    proj, params, table, state, slots, bs = _stream(lengths, heads, dtype, seed=6)
    full = {k: v.clone() for k, v in state.items()}
    q_full, out_full, lse_full = _step(proj, params, table, full, slots, bs, [(0, n) for n in lengths])

    chunked = {k: v.clone() for k, v in state.items()}
    pieces = [_step(proj, params, table, chunked, slots, bs, [(0, p) for p in prefill])]
    pos = list(prefill)
    while any(p < n for p, n in zip(pos, lengths)):  # decode: one token per unfinished sequence
        spans = [(p, min(p + 1, n)) for p, n in zip(pos, lengths)]
        pieces.append(_step(proj, params, table, chunked, slots, bs, spans))
        pos = [e for _, e in spans]

    def by_sequence(x, spans_list):
        """Reorder rows of the concatenated pieces into sequence order (full prefill's layout)."""
        rows = {b: [] for b in range(len(lengths))}
        for piece, spans in zip(x, spans_list):
            off = 0
            for b, (s, e) in enumerate(spans):
                rows[b].append(piece[off:off + e - s])
                off += e - s
        return torch.cat([torch.cat(rows[b]) for b in range(len(lengths))])

    spans_list, pos = [[(0, p) for p in prefill]], list(prefill)
    while any(p < n for p, n in zip(pos, lengths)):
        spans_list.append([(p, min(p + 1, n)) for p, n in zip(pos, lengths)])
        pos = [e for _, e in spans_list[-1]]
    q = by_sequence([p[0] for p in pieces], spans_list)
    out = by_sequence([p[1] for p in pieces], spans_list)
    lse = by_sequence([p[2].t() for p in pieces], spans_list).t()

    assert_rounded_close(q, q_full, dtype)
    assert_rounded_close(chunked["k_cache"], full["k_cache"], dtype)
    for name in ("v_cache", "conv_state", "value_state"):
        assert torch.equal(chunked[name], full[name]), name
    assert_rounded_close(out, out_full, dtype, min_exact=0.99)
    torch.testing.assert_close(lse, lse_full, rtol=1e-5, atol=1e-5)


def test_qkv_fp16():
    """fp16 takes the same code paths (scalar dtype conversions)."""
    check_qkv(qkv_args((7, 0, 70, 1), "q8kv2d128", torch.float16, seed=8), torch.float16)


# --- NaN and infinite inputs: the reference's special values, on every kernel target -----------------

NONFINITE_CASES = ["nan-q-row", "inf-q", "neg-inf-q", "all-neg-inf-scores", "nan-k", "inf-k", "nan-v", "inf-v"]


def _special(t: torch.Tensor) -> torch.Tensor:
    """0 finite, 1 NaN, 2 +inf, 3 -inf, per element."""
    c = torch.zeros(t.shape, dtype=torch.int8, device=t.device)
    c[t.isnan()] = 1
    c[t == float("inf")] = 2
    c[t == float("-inf")] = 3
    return c


def _poison(kw: dict, case: str) -> None:
    """Puts NaN or infinite values into one sample's q or cache, in place; keys are edited in the last
    sequence at positions every one of its new queries sees."""
    q, k, v = kw["q"], kw["k_cache"], kw["v_cache"]
    nan, inf, T, last = float("nan"), float("inf"), kw["q"].shape[0], kw["block_table"].shape[0] - 1
    bs = k.shape[1]

    def key(pos):  # (block, offset) of key `pos` of the last sequence
        return int(kw["block_table"][last, pos // bs]), pos % bs

    if case == "nan-q-row":
        q[T - 1, 1] = nan
    elif case == "inf-q":  # scores +-inf by the sign of k[..., 5]: lse +inf
        q[T - 1, 3, 5] = inf
    elif case == "neg-inf-q":
        q[0, 0, 7] = -inf
    elif case == "all-neg-inf-scores":  # -inf * (k > 0) in every score of the row: lse -inf, out 0/0
        q[T - 1, 2, 0] = -inf
        k[..., 0] = k[..., 0].abs() + 0.25
    elif case == "nan-k":
        k[key(2)][-1, 17] = nan
    elif case == "inf-k":
        k[key(1)][0, 9] = inf
    elif case == "nan-v":
        v[key(2)][-1, 3] = nan
    elif case == "inf-v":
        v[key(0)][0, 60] = -inf


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("layout", ["prefill", "decode", "decode-splits"])
@pytest.mark.parametrize("case", NONFINITE_CASES)
def test_attention_nonfinite_inputs_match_the_reference(case, layout, dt, target):
    """NaN and infinite q, k or v give the reference's special values: lse as torch.logsumexp over the
    visible scores (NaN if one is NaN, +inf if one is +inf, -inf if all are -inf: a NaN q row used to
    give -inf), out NaN where the reference's is; the other rows unchanged and accurate. "decode-splits"
    has too few blocks for the GPU (the emulator reports 4 SMs), so the GPU kernel splits the keys and
    its combine merges the special values; "decode" fills the emulator's 4 SMs with (sequence, KV head)
    blocks, so one block sees every key and its warps' merge (the decode kernel) carries them."""
    dtype = DTYPES[dt]
    if is_gpu(target) and dtype == torch.float32:
        pytest.skip("the GPU kernels take bf16/fp16 (fp32 raises NotImplementedError, tested above)")
    if layout == "prefill":
        kw = attn_args((5, 1, 11), (0, 3, 6), (4, 2, 64), dtype, seed=21, block_size=8)
    elif layout == "decode":
        kw = attn_args((1, 1, 1, 1), (300, 40, 7, 200), (4, 1, 64), dtype, seed=23, block_size=16)
    else:
        kw = attn_args((1, 1), (300, 40), (4, 1, 64), dtype, seed=22, block_size=16)
    _poison(kw, case)
    out_ref, lse_ref = reference(ref.cca_attention)(**kw)
    assert not (out_ref.isfinite().all() and lse_ref.isfinite().all()), "the case must reach the output"
    f32 = {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in kw.items()}
    out32, lse32 = reference(ref.cca_attention)(**f32)
    emu = importlib.import_module(f"zaya_ops._emu_w{target[0][3:5]}") if is_emulated(target) else None
    before = emu.launches() if emu else 0
    out, lse = ops.cca_attention(**{k: v.to(target[1]) if isinstance(v, torch.Tensor) else v for k, v in kw.items()})
    out, lse = out.cpu(), lse.cpu()
    if emu:  # the forward kernel, plus the combine when the keys are split
        assert emu.launches() - before == (2 if layout == "decode-splits" else 1)
    for name, got, want, want32 in (("lse", lse, lse_ref, lse32), ("out", out, out_ref, out32)):
        bad = (_special(got) != _special(want)).nonzero().tolist()
        assert not bad, (f"{name}: special values differ at {bad[:4]}: got {[got[tuple(i)].item() for i in bad[:4]]}, "
                         f"reference {[want[tuple(i)].item() for i in bad[:4]]}")
        fin = want.isfinite()
        err = (got[fin].float() - want32[fin]).abs().max().item()
        ref_err = (want[fin].float() - want32[fin]).abs().max().item()
        assert err <= 2 * ref_err + 1e-5, f"{name}: kernel error {err:.3g} > 2 x reference error {ref_err:.3g}"


# --- opcheck on more samples -------------------------------------------------------------------------

@pytest.mark.parametrize("dt", DTYPES)
def test_opcheck_samples(dt):
    dtype = DTYPES[dt]
    qkv = qkv_args((3, 0, 9), "q2kv1d32", dtype, seed=7)
    torch.library.opcheck(torch.ops.zaya.cca_qkv.default, samples.to_op_args("cca_qkv", qkv))
    attn = attn_args((1, 1, 4), (5, 0, 9), "q4kv4d64", dtype, seed=7, block_size=4)
    torch.library.opcheck(torch.ops.zaya.cca_attention.default, samples.to_op_args("cca_attention", attn))


# --- bad inputs: the C++ checks name the argument (called through torch.ops, past the wrappers) ----------

def _qkv_bad(change):
    kw = samples.cca_qkv_args()  # seq_lens (5, 1, 11), 4 state slots, 5 blocks of 8
    kw.update(change(kw))
    torch.ops.zaya.cca_qkv(*samples.to_op_args("cca_qkv", kw))


i32 = lambda *v: torch.tensor(v, dtype=torch.int32)  # noqa: E731

# Bad index values of cca_qkv: named by the wrapper on every target and by the CPU kernel's C++ checks
# (the GPU glue never reads index values), in the same words.
QKV_BAD_INDICES = [
    (lambda k: {"cu_seqlens": i32(0, 6, 5, 17)}, r"cu_seqlens must be non-decreasing, but cu_seqlens\[2\] = 5"),
    (lambda k: {"cu_seqlens": i32(0, 5, 6, 18)}, r"cu_seqlens\[-1\] must equal the number of tokens 17, got 18"),
    (lambda k: {"cu_seqlens": i32(1, 5, 6, 17)}, r"cu_seqlens\[0\] must be 0, got 1"),
    (lambda k: {"state_indices": i32(3, 4, 1)}, r"state_indices\[1\] = 4 is outside the 4 state slots"),
    (lambda k: {"state_indices": i32(-1, 2, 1)}, r"state_indices\[0\] = -1 is outside"),
    (lambda k: {"state_indices": i32(2, 1, 2)}, r"state_indices\[2\] = 2 is the slot of an earlier sequence"),
    (lambda k: {"state_indices": i32(2, 2, 1), "cu_seqlens": i32(0, 5, 5, 17)}, None),  # empty sequences may share
    (lambda k: {"slot_mapping": k["slot_mapping"].index_fill(0, torch.tensor([4]), 40)},
     r"slot_mapping\[4\] = 40 is outside the cache \(5 blocks of 8 slots; -1 skips\)"),
    (lambda k: {"slot_mapping": k["slot_mapping"].index_fill(0, torch.tensor([0]), -2)}, r"slot_mapping\[0\] = -2"),
    (lambda k: {"positions": k["positions"].index_fill(0, torch.tensor([3]), 64)},
     r"positions\[3\] = 64 is outside the 64 rows of cos_sin"),
]


@pytest.mark.parametrize("change,match", QKV_BAD_INDICES, ids=[f"idx-{i}" for i in range(len(QKV_BAD_INDICES))])
def test_qkv_bad_indices_name_the_argument(change, match):
    """On the CPU: the wrapper's check and the kernel's own (past the wrapper) raise the same message."""
    kw = samples.cca_qkv_args()
    kw.update(change(kw))
    if match is None:  # valid: both run
        ops.cca_qkv(**samples.clone_args(kw))
        torch.ops.zaya.cca_qkv(*samples.to_op_args("cca_qkv", kw))
        return
    with pytest.raises(ValueError, match=match) as wrapper:
        ops.cca_qkv(**kw)
    with pytest.raises(ValueError) as kernel:
        torch.ops.zaya.cca_qkv(*samples.to_op_args("cca_qkv", kw))
    assert str(wrapper.value) in str(kernel.value)


BAD = [
    (_qkv_bad, lambda k: {"cu_seqlens": k["cu_seqlens"].long()}, TypeError, r"cu_seqlens must have dtype"),
    (_qkv_bad, lambda k: {"qt": k["qt"][:, :96]}, ValueError, r"query heads \(3\) must be a multiple of KV heads"),
    (_qkv_bad, lambda k: {"k_cache": k["k_cache"][..., :31], "v_cache": k["v_cache"][..., :31]}, ValueError,
     r"head dim must be even"),
    (_qkv_bad, lambda k: {"cos_sin": k["cos_sin"][:, :6].repeat(1, 6)}, ValueError, r"cos_sin width"),
    (_qkv_bad, lambda k: {"value_state": k["value_state"].float()}, TypeError, r"value_state must have dtype"),
    (_qkv_bad, lambda k: {"k_cache": k["k_cache"][:, :, :0], "v_cache": k["v_cache"][:, :, :0]}, ValueError,
     r"k_cache must have at least one KV head"),
]


@pytest.mark.parametrize("call,change,exc,match", BAD, ids=[f"{b[0].__name__[1:]}-{i}" for i, b in enumerate(BAD)])
def test_bad_inputs_name_the_argument(call, change, exc, match):
    with pytest.raises(exc, match=match):
        call(change)


def _attn_args(change, device):
    """The sample (head dim 64, so that the GPU kernel supports the shapes) with `change` applied."""
    kw = samples.cca_attention_args(samples.SampleShape(head_dim=64))  # seq_lens (5, 1, 11) after 0, 3, 6 cached
    kw.update(change(kw))
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}


def _attn_bad(change, device):
    """A direct op call (past the wrapper) on the kernel target: the C++ checks of shapes and dtypes."""
    ops._OPS.cca_attention(*samples.to_op_args("cca_attention", _attn_args(change, device)))


# Bad index values: the wrapper names them on every target (the GPU glue never reads index values; the
# CPU kernel's own C++ checks say the same, past the wrapper).
ATTN_BAD_INDICES = [
    (lambda k: {"block_table": k["block_table"].index_fill(1, torch.tensor([0]), 99)},
     r"block_table\[0, 0\] = 99 is outside the cache's \d+ blocks"),
    (lambda k: {"seqused_k": i32(5, 0, 17)}, r"seqused_k\[1\] = 0 is smaller than the sequence's 1 new queries"),
    (lambda k: {"seqused_k": i32(5, 4, 100)}, r"seqused_k\[2\] = 100 exceeds the block_table capacity"),
    (lambda k: {"cu_seqlens_q": i32(0, 5, 4, 17)},
     r"cu_seqlens_q must be non-decreasing, but cu_seqlens_q\[2\] = 4 < cu_seqlens_q\[1\] = 5"),
    (lambda k: {"cu_seqlens_q": i32(1, 5, 6, 17)}, r"cu_seqlens_q\[0\] must be 0, got 1"),
    (lambda k: {"cu_seqlens_q": i32(0, 5, 6, 16)}, r"cu_seqlens_q\[-1\] must equal the number of tokens 17, got 16"),
    (lambda k: {"max_seqlen_q": 3}, r"max_seqlen_q = 3 is smaller than the longest query run \(11\)"),
    (lambda k: {"max_seqlen_k": 3}, r"max_seqlen_k = 3 is smaller than the longest seqused_k \(17\)"),
    (lambda k: {"k_cache": k["k_cache"][:3], "v_cache": k["v_cache"][:3]},
     r"block_table\[\d+, \d+\] = \d+ is outside the cache's 3 blocks"),
    (lambda k: {"block_table": k["block_table"].index_fill(1, torch.tensor([1]), -1)},
     r"block_table\[\d, 1\] = -1 is outside the cache"),
]


@pytest.mark.parametrize("change,match", ATTN_BAD_INDICES, ids=[f"idx-{i}" for i in range(len(ATTN_BAD_INDICES))])
def test_attention_bad_indices_name_the_argument(change, match, target):
    with pytest.raises(ValueError, match=match) as wrapper:
        ops.cca_attention(**_attn_args(change, target[1]))
    if target[0] == "cpu":  # the CPU kernel's C++ check, past the wrapper: the same words
        with pytest.raises(ValueError) as kernel:
            _attn_bad(change, "cpu")
        assert str(wrapper.value) in str(kernel.value)


ATTN_BAD = [
    (lambda k: {"q": k["q"][:, :3]}, ValueError, r"q heads \(3\) must be a multiple of k_cache heads"),
    (lambda k: {"block_table": k["block_table"].long()}, TypeError, r"block_table must have dtype"),
    (lambda k: {"k_cache": k["k_cache"][..., :32], "v_cache": k["v_cache"][..., :32]}, ValueError,
     r"k_cache head dim 32 must equal q's head dim 64"),
    (lambda k: {"v_cache": k["v_cache"][:, :4]}, ValueError, r"v_cache must have shape"),
    (lambda k: {"v_cache": k["v_cache"].half()}, TypeError, r"v_cache must have dtype bfloat16"),
    (lambda k: {"scale": float("nan")}, ValueError, r"scale must be a finite number \(in float32's range\), got nan"),
    (lambda k: {"scale": float("inf")}, ValueError, r"scale must be a finite number .*, got inf"),
    (lambda k: {"scale": -1e39}, ValueError, r"scale must be a finite number .*, got -1e\+39"),
]


@pytest.mark.parametrize("change,exc,match", ATTN_BAD, ids=[f"attn-{i}" for i in range(len(ATTN_BAD))])
def test_attention_bad_inputs_name_the_argument(change, exc, match, target):
    with pytest.raises(exc, match=match):
        _attn_bad(change, target[1])


def test_wrapper_passes_value_errors_through(target):
    kw = samples.cca_attention_args(samples.SampleShape(head_dim=64), device=target[1])
    kw["seqused_k"] = i32(5, 0, 17).to(target[1])
    with pytest.raises(ValueError, match=r"seqused_k\[1\]"):
        ops.cca_attention(**kw)
