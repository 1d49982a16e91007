"""The GPU kernel of cca_qkv (csrc/kernels/cca_qkv.cuh) against zaya_ops.reference, on every GPU target:
CUDA/ROCm when present and the SIMT emulator with 32- and 64-lane warps (the CPU kernel is tested in
test_cca_cpu.py, whose helpers and exactness rule this file reuses: bf16/fp16 bit-identical almost
everywhere, values and states identical). emu32 runs the CUDA paths with ldmatrix fragments, emu32-v1
(and cuda-v1) the version-1 scalar fragment loads (conftest.V1_TARGETS, ZAYA_KERNELS=v1); emu64 the CDNA
paths (K chunks of 32, 16-bit Y: the 32 KiB LDS layout).

The emulator runs ~1e6-1e7 GPU-thread instructions per second, so the long sequences use the small
q2kv1d32 heads and the ZAYA1 heads get short ones.
"""

from __future__ import annotations

import pytest
import torch

from conftest import KERNEL_TARGETS, V1_TARGETS, use_target
from test_cca_cpu import (BAD, HEADS, QKV_BAD_INDICES, _qkv_bad, assert_rounded_close, check_qkv, check_strided_qkv,
                          qkv_args, rope_table)
from zaya_ops import ops, samples

BASE_TARGETS = [t for t in KERNEL_TARGETS if t != "cpu"]
GPU_TARGETS = BASE_TARGETS + V1_TARGETS  # both fragment loaders of the CUDA kernels
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

pytestmark = pytest.mark.skipif(not GPU_TARGETS, reason="no GPU and no SIMT emulator module built")


@pytest.fixture(params=GPU_TARGETS)
def gpu_device(request, monkeypatch) -> str:
    return use_target(request.param, monkeypatch)


def on(kw: dict, device: str) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}


def args(seq_lens, heads, dtype, device, seed=0, block_size=16):
    return on(qkv_args(seq_lens, heads, DTYPES[dtype], seed=seed, block_size=block_size), device)


# --- against the reference ------------------------------------------------------------------------

SINGLE = [("q2kv1d32", T) for T in (1, 2, 3, 257, 1000)]
SINGLE += [("q8kv2d128", 1), ("q8kv2d128", 3), ("q8kv2d128", 70), ("q4kv4d64", 2), ("q4kv4d64", 7),
           ("q8kv1d256", 3)]


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("heads,T", SINGLE, ids=[f"{h}-T{t}" for h, t in SINGLE])
def test_single_sequence(gpu_device, dt, heads, T):
    check_qkv(args((T,), heads, dt, gpu_device, seed=T), DTYPES[dt])


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("heads", ["q8kv2d128", "q2kv1d32"])
def test_varlen_batch(gpu_device, dt, heads):
    """Sequences of different lengths (one empty) continuing from non-zero states, slots reversed,
    some tokens not cached; the empty sequence's slot and the spare slot 0 stay untouched."""
    kw = args((7, 0, 70, 1, 2, 33), heads, dt, gpu_device, seed=1)
    kw["slot_mapping"][[0, 9, -1]] = -1
    a = check_qkv(kw, DTYPES[dt])
    for slot in (int(kw["state_indices"][1]), 0):
        assert torch.equal(a["conv_state"][slot], kw["conv_state"][slot])
        assert torch.equal(a["value_state"][slot], kw["value_state"][slot])


def test_sequences_across_token_blocks(gpu_device):
    """q2kv1d32 blocks hold 128 tokens: sequence 1 starts on a block's last row, so its second token
    reads conv_state in the next block; sequence 2 spans three blocks."""
    check_qkv(args((127, 2, 300, 1), "q2kv1d32", "bf16", gpu_device, seed=11), torch.bfloat16)


def test_decode_batch(gpu_device):
    """Decode: 200 sequences of one token each (and a few empty ones) share the mma rows."""
    lens = [1] * 200
    lens[5] = lens[77] = 0
    check_qkv(args(lens, "q2kv1d32", "bf16", gpu_device, seed=12), torch.bfloat16)


def test_small_decode_batch(gpu_device):
    """40 sequences in one token block (one empty, one of two tokens): on CUDA the single-launch path,
    where each group's block rewrites its own channels of the states after reading them."""
    lens = [1] * 40
    lens[3], lens[17] = 0, 2
    check_qkv(args(lens, "q8kv2d128", "bf16", gpu_device, seed=13), torch.bfloat16)


EMU_TARGETS = [t for t in GPU_TARGETS if t.startswith("emu")]


@pytest.mark.parametrize("target", EMU_TARGETS)
@pytest.mark.parametrize("lens", [(1,) * 40, (1,) * 65], ids=["one-block", "two-blocks"])
def test_launches_per_call(target, lens, monkeypatch):
    """Decode batches that fit one token block (64 tokens at D = 128) take one launch on CUDA (emu32);
    larger calls, and every call on CDNA (emu64), take four: two conv passes, the v copy, the states."""
    import importlib

    use_target(target, monkeypatch)
    emu = importlib.import_module(f"zaya_ops._emu_w{target[3:5]}")
    kw = args(lens, "q8kv2d128", "bf16", "cpu", seed=14)
    before = emu.launches()
    ops.cca_qkv(**kw)
    single = target.startswith("emu32") and len(lens) <= 64
    assert emu.launches() - before == (1 if single else 4)


@pytest.mark.parametrize("dt", DTYPES)
def test_strided_inputs(gpu_device, dt):
    """qt/kt/vc/vd as column slices of one fused projection (at an offset that is not 16-byte aligned:
    copied by the glue), caches as views of a [blocks, 2, ...] KV tensor and conv_state transposed in
    memory (written in place with their strides)."""
    check_strided_qkv(args((5, 19, 1), "q8kv2d128", dt, gpu_device, seed=2), DTYPES[dt], misalign=True)


@pytest.mark.skipif(not ({"emu32", "emu32-v1"} <= set(GPU_TARGETS)), reason="needs the 32-lane emulator")
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("heads,lens", [("q8kv2d128", (70, 1, 0, 9)), ("q8kv1d256", (3, 40)), ("q4kv4d64", (5,) * 30),
                                        ("q2kv1d32", (1,) * 12)], ids=["d128", "d256", "d64", "d32-decode"])
def test_ldmatrix_equals_v1_bitwise(dt, heads, lens, monkeypatch):
    """The version-2 CUDA kernels (ldmatrix fragments) and version 1 (scalar loads) feed the same registers
    to the same mma sequence: every output and mutated tensor is bit-identical (32-lane emulator)."""
    base = args(lens, heads, dt, "cpu", seed=21)
    outs = {}
    for target in ("emu32", "emu32-v1"):
        use_target(target, monkeypatch)
        kw = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in base.items()}
        q = ops.cca_qkv(**kw)
        outs[target] = [q] + [kw[n] for n in ("conv_state", "value_state", "k_cache", "v_cache")]
    for a, b in zip(outs["emu32"], outs["emu32-v1"]):
        assert torch.equal(a.view(torch.int16), b.view(torch.int16))


# --- chunked prefill and decode == one prefill ----------------------------------------------------------

@pytest.mark.parametrize("heads", ["q8kv2d128", "q2kv1d32"])
def test_prefill_then_decode_equals_one_prefill(gpu_device, heads):
    dtype, bs = torch.bfloat16, 8
    nq, nkv, D, rot = HEADS[heads]
    # Short for the ZAYA1 heads: every decode step is a call, and the emulator is slow.
    lengths, prefill = ((13, 6, 4), (10, 2, 1)) if D >= 128 else ((37, 20, 9), (30, 12, 1))
    g = torch.Generator().manual_seed(6)
    r = lambda *s, sc=1.0: (torch.randn(*s, generator=g) * sc).to(dtype).to(gpu_device)  # noqa: E731
    C, hv = (nq + nkv) * D, nkv * D // 2
    proj = [dict(qt=r(n, nq * D), kt=r(n, nkv * D), vc=r(n, hv), vd=r(n, hv)) for n in lengths]
    params = dict(conv_dw_weight=r(C, 1, 2, sc=0.5), conv_dw_bias=r(C, sc=0.1), conv_g_weight=r(C, D, 2, sc=D ** -0.5),
                  conv_g_bias=r(C, sc=0.1), qk_temp=r(nkv) + 1,
                  cos_sin=rope_table(rot, max(lengths), dtype).to(gpu_device))
    offset = [sum(lengths[:b]) + 3 * b for b in range(len(lengths))]  # each sequence's first flat cache slot
    blocks = -(-(sum(lengths) + 3 * len(lengths)) // bs)
    slots = torch.tensor([3, 1, 2], dtype=torch.int32, device=gpu_device)
    base = dict(conv_state=torch.zeros(4, C, 2, dtype=dtype), value_state=torch.zeros(4, hv, dtype=dtype),
                k_cache=torch.zeros(blocks, bs, nkv, D, dtype=dtype), v_cache=torch.zeros(blocks, bs, nkv, D, dtype=dtype))

    def step(state, spans):
        take = lambda n: torch.cat([p[n][s:e] for p, (s, e) in zip(proj, spans)])  # noqa: E731
        positions = torch.cat([torch.arange(s, e) for s, e in spans]).to(gpu_device)
        sm = torch.cat([torch.arange(s, e) + o for (s, e), o in zip(spans, offset)]).to(gpu_device)
        cu = torch.tensor([0] + [e - s for s, e in spans]).cumsum(0).to(torch.int32).to(gpu_device)
        q = ops.cca_qkv(take("qt"), take("kt"), take("vc"), take("vd"), **params, positions=positions, cu_seqlens=cu,
                        state_indices=slots, slot_mapping=sm, **state)
        return [q[o - (e - s):o] for o, (s, e) in zip(cu[1:].tolist(), spans)]

    full = {k: v.clone().to(gpu_device) for k, v in base.items()}
    q_full = step(full, [(0, n) for n in lengths])
    chunked = {k: v.clone().to(gpu_device) for k, v in base.items()}
    pieces = [[q] for q in step(chunked, [(0, p) for p in prefill])]
    pos = list(prefill)
    while any(p < n for p, n in zip(pos, lengths)):
        spans = [(p, min(p + 1, n)) for p, n in zip(pos, lengths)]  # finished sequences: empty
        for b, q in enumerate(step(chunked, spans)):
            pieces[b].append(q)
        pos = [e for _, e in spans]
    for b in range(len(lengths)):
        assert_rounded_close(torch.cat(pieces[b]), q_full[b], dtype)
    assert_rounded_close(chunked["k_cache"], full["k_cache"], dtype)
    for name in ("v_cache", "conv_state", "value_state"):
        assert torch.equal(chunked[name], full[name]), name


# --- errors -----------------------------------------------------------------------------------------------

def test_fp32_is_not_implemented(gpu_device):
    kw = on(samples.cca_qkv_args(dtype=torch.float32), gpu_device)
    with pytest.raises(NotImplementedError, match=r"qt has dtype float32.*CPU kernel or .*zaya_ops.reference"):
        ops.cca_qkv(**kw)


@pytest.mark.parametrize("D", [40, 8])
def test_unsupported_head_dim(gpu_device, D):
    kw = on(samples.cca_qkv_args(samples.SampleShape(head_dim=D, rot_dim=8), dtype=torch.bfloat16), gpu_device)
    with pytest.raises(NotImplementedError, match=r"head dim that is a multiple of 16 and at most 256"):
        ops.cca_qkv(**kw)


QKV_BAD = [b for b in BAD if b[0] is _qkv_bad]
QKV_BAD += [(_qkv_bad, lambda k: {"conv_state": k["conv_state"][:, :-1]}, ValueError, r"conv_state must have shape"),
            (_qkv_bad, lambda k: {"conv_state": k["conv_state"].half()}, TypeError, r"conv_state must have dtype"),
            (_qkv_bad, lambda k: {"cu_seqlens": k["cu_seqlens"][:1]}, ValueError, r"cu_seqlens must be 1-D and hold")]


@pytest.mark.parametrize("change,match", QKV_BAD_INDICES, ids=[f"idx{i}" for i in range(len(QKV_BAD_INDICES))])
def test_bad_indices_name_the_argument(gpu_device, change, match):
    """Bad index values: the wrapper names them (the GPU glue never reads index values on the host)."""
    kw = on(samples.cca_qkv_args(), gpu_device)
    kw.update(on(change(kw), gpu_device))
    if match is None:
        ops.cca_qkv(**kw)
    else:
        with pytest.raises(ValueError, match=match):
            ops.cca_qkv(**kw)


@pytest.mark.parametrize("target", BASE_TARGETS)
@pytest.mark.parametrize("call,change,exc,match", QKV_BAD, ids=[f"bad{i}" for i in range(len(QKV_BAD))])
def test_bad_inputs_name_the_argument(target, monkeypatch, call, change, exc, match):
    """The C++ checks of the GPU glue (dtypes, shapes), called past the wrappers."""
    device = use_target(target, monkeypatch)
    lib = torch.ops.zaya if target == "cuda" else getattr(torch.ops, "zaya_" + target)
    monkeypatch.setattr(torch.ops, "zaya", lib)  # _qkv_bad calls torch.ops.zaya.cca_qkv
    with pytest.raises(exc, match=match):
        call(lambda k: on({**k, **change(k)}, device))
