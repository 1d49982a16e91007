"""The paths of cca_attention's portable forward kernel (csrc/kernels/cca_attention.cuh,
``cca_attention_fwd_v2``) on the SIMT emulators: decode blocks (at most 16 stacked query x head rows: a
decode step, a few speculative queries, a short tail of a prefill) spread every key tile over all
warps and merge the warps' (m, l, O) in shared memory; prefill blocks double-buffer K/V (cp.async on
CUDA; the emulator copies synchronously through the same code). Every test counts the blocks that took
each path (the emulator TU exports a counter: csrc/emu/kernels_cca_attention.cpp), so a path that
silently stopped running fails here. The version-1 kernel (``emu32-v1``: ZAYA_KERNELS=v1, one-warp
decode) counts nothing: that proves the switch still launches it. CDNA (``emu64``) launches the
version-1 kernel too (the version-2 kernel spills SGPRs on gfx940/gfx90a): its tests here check that.

Accuracy: FlashAttention's rule against the fp32 reference (zaya_ops.tolerances.cca_attention). The
decode path need not be bit-equal to a prefill's last row (another summation order), but a rerun must
give identical bits.
"""

from __future__ import annotations

import ctypes
import importlib

import pytest
import torch

from conftest import EMULATORS, use_target
from zaya_ops import ops, reference as ref, samples
from zaya_ops import tolerances as tol
from zaya_ops._selftest import one_thread
from zaya_ops.tolerances import require

pytestmark = pytest.mark.skipif(not EMULATORS, reason="built without the SIMT emulator (ZAYA_BACKENDS=...,emu)")

TARGETS = EMULATORS + (["emu32-v1"] if "emu32" in EMULATORS else [])
HEADS = {"q8kv2d128": (8, 2, 128), "q4kv4d64": (4, 4, 64), "q8kv1d256": (8, 1, 256), "q4kv1d64": (4, 1, 64)}
EMU_SMS = 4  # the SM count the emulated device reports (vendor.h query_sm_count)
ROWS = {64: 64, 128: 64, 256: 32}  # stacked rows per block (Cfg<D>::kM)


class Emu:
    """The emulator module of a target, its launch counter and the forward kernel's path counters."""

    def __init__(self, target: str):
        self.mod = importlib.import_module(f"zaya_ops._emu_w{target[3:5]}")
        fn = ctypes.CDLL(self.mod.__file__).zaya_emu_cca_attention_fwd_blocks
        fn.restype, fn.argtypes = ctypes.c_int64, [ctypes.c_int]
        self._blocks = fn

    def snapshot(self) -> tuple[int, int, int]:
        """(launches, prefill blocks, decode blocks) so far."""
        return self.mod.launches(), self._blocks(0), self._blocks(1)

    def delta(self, before) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(before, self.snapshot()))


@pytest.fixture(params=TARGETS)
def target(request, monkeypatch) -> str:
    use_target(request.param, monkeypatch)
    return request.param


def attn_args(lens, cached, heads, dtype=torch.bfloat16, seed=0, block_size=16):
    nq, nkv, D = HEADS[heads]
    shape = samples.SampleShape(seq_lens=tuple(lens), nq=nq, nkv=nkv, head_dim=D, block_size=block_size)
    return samples.cca_attention_args(shape, dtype=dtype, seed=seed, cached=tuple(cached))


def splits_of(kw) -> int:
    """cca_attention_splits for the emulated device (num_splits_impl: about two blocks per SM when the
    (sequence, KV head, query tile) blocks do not fill the 4 SMs, at least 128 keys a split, at most 32)."""
    nq, D = kw["q"].shape[1:]
    nkv, B = kw["k_cache"].shape[2], len(kw["seqused_k"])
    tiles = (kw["max_seqlen_q"] * (nq // nkv) + ROWS[D] - 1) // ROWS[D]
    base = B * nkv * tiles
    if base >= EMU_SMS:
        return 1
    return max(1, min((2 * EMU_SMS + base - 1) // base, kw["max_seqlen_k"] // 128, 32))


def expected_blocks(kw) -> tuple[int, int]:
    """(prefill, decode) blocks of the version-2 kernel: per sequence, KV head and split, its query tiles
    with rows (those past the end return at once), decode when at most 16 rows are left in the tile."""
    nq, D = kw["q"].shape[1:]
    nkv = kw["k_cache"].shape[2]
    g, M = nq // nkv, ROWS[D]
    cu = kw["cu_seqlens_q"].tolist()
    prefill = decode = 0
    for b in range(len(cu) - 1):
        rows = (cu[b + 1] - cu[b]) * g
        for r0 in range(0, rows, M):
            if rows - r0 <= 16:
                decode += 1
            else:
                prefill += 1
    s = splits_of(kw) * nkv
    return prefill * s, decode * s


def run_counted(kw, target):
    """cca_attention on the target with its launches and path counts checked; returns (out, lse)."""
    emu = Emu(target)
    before = emu.snapshot()
    out, lse = ops.cca_attention(**kw)
    launches, prefill, decode = emu.delta(before)
    splits = splits_of(kw)
    assert launches == (2 if splits > 1 else 1), (launches, splits)
    if target.endswith("-v1") or target == "emu64":  # CDNA keeps the version-1 kernel (see launch_typed)
        assert (prefill, decode) == (0, 0), "ZAYA_KERNELS=v1 and CDNA launch the version-1 kernel"
    else:
        assert (prefill, decode) == expected_blocks(kw)
    return out, lse


def check(kw, target, dtype=torch.bfloat16):
    out, lse = run_counted(kw, target)
    with one_thread():
        refs = tol.attention_references(kw)
    require(tol.cca_attention(out, lse, *refs, dtype))
    return out, lse


# Decode batches: one query per sequence after 1, 7, 257 and a long context (and an empty sequence).
DECODE = [
    ("q8kv2d128", (1, 1, 1, 1, 0), (0, 6, 256, 2047, 5), 16),  # ZAYA1 heads; 8 blocks: one split
    ("q4kv4d64", (1, 1, 1, 1), (0, 6, 256, 1500), 32),
    ("q8kv1d256", (1, 1, 1, 1, 1), (0, 6, 256, 1200, 40), 64),
]


@pytest.mark.parametrize("dt", ["bf16", "fp16"])
@pytest.mark.parametrize("heads,lens,cached,block_size", DECODE, ids=[c[0] for c in DECODE])
def test_decode_varlen_contexts(heads, lens, cached, block_size, dt, target):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[dt]
    kw = attn_args(lens, cached, heads, dtype, seed=31, block_size=block_size)
    assert splits_of(kw) == 1
    check(kw, target, dtype)


SPLIT = [
    ("q8kv2d128", (1,), (2100,), 16),        # ZAYA1 decode of one sequence: 2 blocks, 4 splits
    ("q4kv1d64", (1, 1), (1000, 129), 32),   # the short sequence leaves later splits empty
    ("q8kv1d256", (1, 1), (700, 1), 64),     # L = 1 and a long one
    ("q4kv1d64", (3,), (257,), 16),          # three speculative queries (12 rows), 2 splits
]


@pytest.mark.parametrize("heads,lens,cached,block_size", SPLIT, ids=[c[0] + "-" + str(c[2]) for c in SPLIT])
def test_decode_split_keys(heads, lens, cached, block_size, target):
    """Too few blocks for the emulated GPU's 4 SMs: key splits, each block's warps merged first, then the
    combine kernel."""
    kw = attn_args(lens, cached, heads, seed=32, block_size=block_size)
    assert splits_of(kw) > 1
    check(kw, target)


def test_short_tails_of_a_prefill_take_the_decode_path(target):
    """A prefill batch whose last query tiles hold at most 16 rows (67 tokens x 4 heads: 256 + 12 rows; 3
    tokens: 12 rows) next to full tiles: both paths in one launch."""
    kw = attn_args((67, 3, 20), (5, 0, 300), "q8kv2d128", seed=33)
    prefill, decode = expected_blocks(kw)
    assert prefill > 0 and decode > 0
    check(kw, target)


@pytest.mark.parametrize("heads,lens,cached", [("q8kv2d128", (1, 1, 1, 1), (700, 3, 64, 1)),
                                               ("q8kv2d128", (1,), (1500,)), ("q4kv4d64", (4, 1), (90, 33))])
def test_decode_is_deterministic(heads, lens, cached, target):
    """The warps merge in a fixed order (and the splits too): a rerun gives identical bits."""
    kw = attn_args(lens, cached, heads, seed=34)
    out, lse = run_counted(kw, target)
    for _ in range(2):
        out2, lse2 = run_counted(kw, target)
        assert torch.equal(out2, out) and torch.equal(lse2, lse)


def test_decode_strided_q(target):
    """q as a head view of a fused projection (row stride > nq * D) and at an odd address (copied): the
    bits of the contiguous call."""
    kw = attn_args((1, 1, 1), (40, 300, 7), "q8kv2d128", seed=35)
    T, nq, D = kw["q"].shape
    fused = torch.cat([kw["q"].reshape(T, nq * D), torch.zeros(T, 4 * D, dtype=kw["q"].dtype)], dim=1)
    odd = torch.empty(T * nq * D + 1, dtype=kw["q"].dtype)[1:].view(T, nq, D)
    odd.copy_(kw["q"])
    want_out, want_lse = run_counted(kw, target)
    for q in (fused[:, :nq * D].view(T, nq, D), odd):
        out, lse = run_counted({**kw, "q": q}, target)
        assert torch.equal(out, want_out) and torch.equal(lse, want_lse)


def _special(t: torch.Tensor) -> torch.Tensor:
    c = torch.zeros(t.shape, dtype=torch.int8)
    c[t.isnan()] = 1
    c[t == float("inf")] = 2
    c[t == float("-inf")] = 3
    return c


# (what is poisoned, the key position in the last sequence): keys in different warps' shares of a tile
SPECIAL = [("nan-k", 1), ("nan-k", 40), ("inf-k", 17), ("inf-k", 63), ("nan-v", 50), ("inf-v", 5), ("nan-q", 0),
           ("inf-q", 0), ("all-neg-inf", 0)]


@pytest.mark.parametrize("layout", ["one-split", "splits"])
@pytest.mark.parametrize("heads", ["q8kv2d128", "q4kv1d64"])
@pytest.mark.parametrize("case,pos", SPECIAL, ids=[f"{c}-{p}" for c, p in SPECIAL])
def test_decode_special_values(case, pos, heads, layout, target):
    """NaN and infinite q, k or v in a decode batch: the reference's special values after the warps'
    merge (a NaN or +inf score in one warp's share, all scores -inf, ...), the other rows accurate."""
    if layout == "one-split":  # 4 sequences x nkv blocks fill the 4 SMs
        kw = attn_args((1, 1, 1, 1), (300, 40, 7, 200), heads, seed=36, block_size=16)
    else:
        kw = attn_args((1,), (300,), heads, seed=37, block_size=16)
    assert (splits_of(kw) > 1) == (layout == "splits")
    q, k, v, bs = kw["q"], kw["k_cache"], kw["v_cache"], kw["k_cache"].shape[1]
    last, T = len(kw["seqused_k"]) - 1, q.shape[0]
    blk, off = int(kw["block_table"][last, pos // bs]), pos % bs
    nan, inf = float("nan"), float("inf")
    if case == "nan-k":
        k[blk, off, -1, 17] = nan
    elif case == "inf-k":
        k[blk, off, -1, 9] = inf
        q[T - 1, -1, 9] = q[T - 1, -1, 9].abs() + 0.5  # one row's score +inf (lse +inf, out NaN)
    elif case == "nan-v":
        v[blk, off, -1, 3] = nan
    elif case == "inf-v":
        v[blk, off, -1, 60] = -inf
    elif case == "nan-q":
        q[T - 1, 1] = nan
    elif case == "inf-q":
        q[T - 1, -1, 5] = inf
    else:  # -inf * (k > 0) in every score of the row: lse -inf, out 0/0
        q[T - 1, 2, 0] = -inf
        k[..., 0] = k[..., 0].abs() + 0.25
    with one_thread():
        out_ref, lse_ref = ref.cca_attention(**kw)
        f32 = {n: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t for n, t in kw.items()}
        out32, lse32 = ref.cca_attention(**f32)
    assert not (out_ref.isfinite().all() and lse_ref.isfinite().all()), "the case must reach the output"
    out, lse = run_counted(kw, target)
    for name, got, want, want32 in (("lse", lse, lse_ref, lse32), ("out", out, out_ref, out32)):
        bad = (_special(got) != _special(want)).nonzero().tolist()
        assert not bad, f"{name}: special values differ at {bad[:4]}"
        fin = want.isfinite()
        if not fin.any():  # one KV head and one sequence: every row sees the NaN key
            continue
        err = (got[fin].float() - want32[fin]).abs().max().item()
        ref_err = (want[fin].float() - want32[fin]).abs().max().item()
        assert err <= 2 * ref_err + 1e-5, f"{name}: kernel error {err:.3g} > 2 x reference error {ref_err:.3g}"


@pytest.mark.skipif("emu32" not in EMULATORS, reason="no 32-lane emulator module")
def test_v1_and_v2_agree(monkeypatch):
    """The version-1 kernel (one-warp decode, synchronous K/V) and version 2 on the same decode and
    prefill batches: both within the rule, and close to each other (not bit-equal: the decode merge sums
    in another order)."""
    kws = [attn_args((1, 1, 1, 1), (900, 6, 256, 33), "q8kv2d128", seed=38),
           attn_args((67, 3), (5, 0), "q8kv2d128", seed=39)]
    for kw in kws:
        use_target("emu32-v1", monkeypatch)
        out1, lse1 = run_counted(kw, "emu32-v1")
        use_target("emu32", monkeypatch)
        out2, lse2 = run_counted(kw, "emu32")
        require(tol.rounded_close("out", out2, out1, torch.bfloat16, 0.95))
        torch.testing.assert_close(lse2, lse1, rtol=1e-5, atol=1e-5)
