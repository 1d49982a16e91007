"""Matrix-unit layouts checked against a second, independent source that has run on silicon.

The SIMT emulator's instruction models (csrc/kernels/mma.cuh's and wgmma.cuh's ``emu_detail``) and the
kernels' fragment code (mma.cuh's loaders and accumulator maps, wgmma.cuh's descriptors) were written
from one reading of the PTX ISA and AMD's documentation, so a misreading would pass every kernel test.
Here the layouts are stated as other libraries state them, libraries whose kernels run on the
hardware every day, and the code is compared with them lane by lane and register by register:

* mma.sync m16n8k16 (bf16/fp16 in, fp32 accumulate): CuTe's MMA traits,
  ``include/cute/atom/mma_traits_sm80.hpp``, ``MMA_Traits<SM80_16x8x16_F32BF16BF16F32_TN>`` and
  ``..._F32F16F16F32_TN`` (both inherit ``MMA_Traits<SM80_16x8x16_F16F16F16F16_TN>``'s layouts);
* wgmma m64nNk16: ``include/cute/atom/mma_traits_sm90_gmma.hpp`` (``CLayout_64xN``, the register-A
  ``ALayout_64x16``, ``make_gmma_desc`` and its canonical shared-memory layouts) and the descriptor's bit
  fields in ``include/cute/arch/mma_sm90_desc.hpp`` (``GmmaDescriptor``);
* MFMA v_mfma_f32_16x16x16{bf16_1k,f16}: composable_kernel's xdlops parameters,
  ``include/ck/tensor_operation/gpu/warp/xdlops_gemm.hpp`` (``mfma_type<...>`` and ``XdlopsGemm``'s
  ``GetBlkIdx`` / ``Calculate{A,B}ThreadOriginDataIndex`` / ``GetBeginOfThreadBlk`` /
  ``MakeCDescriptor_M0_N0_M1_N1_M2_M3_M4_N2``), derived below into lane -> (row, col) maps.

The CuTe layouts are evaluated by a small evaluator written here (shape/stride hierarchical tuples ->
index, colexicographic, as CuTe's ``crd2idx``), checked first against the worked example of CuTe's own
documentation. The code side comes from the emulator modules (``zaya_ops._emu_w32`` / ``_emu_w64``,
csrc/emu/selftest.cpp's layout probes): mma.cuh's loaders run on a tile whose elements encode their
coordinates, the accumulator maps are read out, and the emulated instructions run on registers built
from the independent maps. What this cannot prove: that CUTLASS's and composable_kernel's statements
match the silicon (they are evidence, having shipped on it), and anything about timing or memory
ordering; tests/test_wgmma_tiles.py runs the wgmma forms on a Hopper GPU when one is present.
"""

from __future__ import annotations

import importlib
import itertools
import math

import pytest
import torch

from conftest import EMULATORS

# The sources read for this file (``git show <commit>:<path>`` in a mirror of each repository). The
# layouts below are stated as those files write them.
CUTLASS = "NVIDIA/cutlass 7107b05535f8977f5ecb9d01ee203205b1fd9bc4"  # main of 2026-08-20
# (the newest commit touching mma_traits_sm80.hpp, mma_traits_sm90_gmma.hpp or mma_sm90_desc.hpp there:
# aeba0d3723b8c226b7180a59081ae1cdfdf087a8)
CK = "ROCm/composable_kernel 8e22e1ae31bbf7086f69d8724e027676791d351a"
# (the newest commit touching xdlops_gemm.hpp there: 42e6dceaccda48ec99eff93e181df49abef69c11)


# ------------------------------------------------------------------------------------------------
# A CuTe layout evaluator
# ------------------------------------------------------------------------------------------------
def _size(shape) -> int:
    return math.prod(_size(s) for s in shape) if isinstance(shape, tuple) else shape


def _crd2idx(coord, shape, stride) -> int:
    """CuTe's crd2idx: a coordinate congruent to ``shape`` (or an integer within its size, split over
    the modes colexicographically: the first mode varies fastest) -> sum of coordinate x stride."""
    if isinstance(shape, tuple):
        assert isinstance(stride, tuple) and len(stride) == len(shape), "stride not congruent to shape"
        if isinstance(coord, tuple):
            assert len(coord) == len(shape)
            return sum(_crd2idx(c, s, d) for c, s, d in zip(coord, shape, stride))
        assert 0 <= coord < _size(shape), (coord, shape)
        idx = 0
        for s, d in zip(shape, stride):
            n = _size(s)
            idx += _crd2idx(coord % n, s, d)
            coord //= n
        return idx
    assert isinstance(coord, int) and 0 <= coord < shape, (coord, shape)
    return coord * stride


class Layout:
    """``Layout<Shape<...>, Stride<...>>``, called with a coordinate: ``L(t, v)`` for a TV layout."""

    def __init__(self, shape, stride):
        self.shape, self.stride = shape, stride

    def size(self) -> int:
        return _size(self.shape)

    def __call__(self, *coord) -> int:
        return _crd2idx(coord if len(coord) > 1 else coord[0], self.shape, self.stride)


def test_cute_evaluator_reproduces_cutes_documentation():
    """CuTe's media/docs/cpp/cute/0t_mma_atom.md builds the SM70 8x8x4 quad-pair accumulator layout
    ((2,2,2),(2,2,2)):((1,16,4),(8,2,32)), (T8,V8) -> m + 8 n, and lists where (T0..7, V0) and
    (T0, V0..7) land; the evaluator must agree with every listed position."""
    c = Layout(((2, 2, 2), (2, 2, 2)), ((1, 16, 4), (8, 2, 32)))
    assert [c(t, 0) for t in range(8)] == [0, 1, 16, 17, 4, 5, 20, 21]
    assert [c(0, v) for v in range(8)] == [0, 8, 2, 10, 32, 40, 34, 42]
    assert sorted(c(t, v) for t in range(8) for v in range(8)) == list(range(64))
    # hierarchical and flat coordinates address the same element
    assert c((1, 0, 1), (0, 1, 0)) == c(5, 2) == 5 + 2


# ------------------------------------------------------------------------------------------------
# The independent statements
# ------------------------------------------------------------------------------------------------
# cute/atom/mma_traits_sm80.hpp, MMA_Traits<SM80_16x8x16_F16F16F16F16_TN> (inherited by the
# F32F16F16F32 and F32BF16BF16F32 traits), ThrID = Layout<_32> (logical thread = lane):
#   using ALayout = Layout<Shape <Shape < _4,_8>,Shape < _2,_2,  _2>>,
#                          Stride<Stride<_32,_1>,Stride<_16,_8,_128>>>;     (T32,V8) -> (M16,K16)
#   using BLayout = Layout<Shape <Shape < _4,_8>,Shape <_2, _2>>,
#                          Stride<Stride<_16,_1>,Stride<_8,_64>>>;          (T32,V4) -> (N8,K16)
#   using CLayout = SM80_16x8_Row;
#   using SM80_16x8_Row = Layout<Shape <Shape < _4,_8>,Shape < _2,_2>>,
#                                Stride<Stride<_32,_1>,Stride<_16,_8>>>;    (T32,V4) -> (M16,N8)
# CuTe's TV layouts give the column-major index of the coordinate (row + rows * col: 0t_mma_atom.md).
SM80_16x8x16_A = Layout(((4, 8), (2, 2, 2)), ((32, 1), (16, 8, 128)))
SM80_16x8x16_B = Layout(((4, 8), (2, 2)), ((16, 1), (8, 64)))
SM80_16x8_Row = Layout(((4, 8), (2, 2)), ((32, 1), (16, 8)))


def cute_mma_a(lane, v):
    """(m, k) of value v (0..7) of lane ``lane`` in mma.sync m16n8k16's A."""
    i = SM80_16x8x16_A(lane, v)
    return i % 16, i // 16


def cute_mma_b(lane, v):
    """(k, n) of value v (0..3) of lane ``lane`` in m16n8k16's B (N8 x K16, column-major)."""
    i = SM80_16x8x16_B(lane, v)
    return i // 8, i % 8


def cute_mma_c(lane, v):
    """(m, n) of accumulator v (0..3) of lane ``lane`` in m16n8k16's C."""
    i = SM80_16x8_Row(lane, v)
    return i % 16, i // 16


# cute/atom/mma_traits_sm90_gmma.hpp (namespace SM90::GMMA), ThrID = Layout<_128> (warpgroup thread):
#   template<int N>
#   using CLayout_64xN   = Layout<Shape <Shape <  _4,_8, _4>,Shape < _2,_2,Int<N/8>>>,
#                                 Stride<Stride<_128,_1,_16>,Stride<_64,_8,   _512>>>;   (T128,V) -> (M64,N)
#   // Register source layout for 16-bit (sparse 32-bit) value types
#   using ALayout_64x16  = Layout<Shape <Shape <  _4,_8, _4>,Shape < _2,_2,  _2>>,
#                                 Stride<Stride<_128,_1,_16>,Stride<_64,_8,_512>>>;   (T128,V8) -> (M64,K16)
def CLayout_64xN(n):
    return Layout(((4, 8, 4), (2, 2, n // 8)), ((128, 1, 16), (64, 8, 512)))


ALayout_64x16 = Layout(((4, 8, 4), (2, 2, 2)), ((128, 1, 16), (64, 8, 512)))


def cute_wgmma_c(n, t, v):
    i = CLayout_64xN(n)(t, v)
    return i % 64, i // 64


def cute_wgmma_a(t, v):
    i = ALayout_64x16(t, v)
    return i % 64, i // 64


# composable_kernel, include/ck/tensor_operation/gpu/warp/xdlops_gemm.hpp:
#   template <> struct mfma_type<MfmaInstr::mfma_f32_16x16x16bf16_1k>   (and mfma_f32_16x16x16f16: equal)
#     group_size = 4, num_groups_per_blk = 1, num_regs_per_blk = 4, num_threads_per_blk = 16,
#     wave_size = 64, num_input_blks = 4, num_output_blks = 1, m_per_blk = 16, n_per_blk = 16,
#     k_per_blk = 4, is_k_reduction = true
CK_MFMA_16x16x16 = dict(group_size=4, num_groups_per_blk=1, num_regs_per_blk=4, num_threads_per_blk=16,
                        wave_size=64, num_input_blks=4, num_output_blks=1, m_per_blk=16, n_per_blk=16,
                        k_per_blk=4, is_k_reduction=True)


def _ck_blk(lane, p=CK_MFMA_16x16x16):
    # XdlopsGemm::GetBlkIdx: the lane id unmerged over (1, num_input_blks, num_threads_per_blk).
    return (lane // p["num_threads_per_blk"]) % p["num_input_blks"], lane % p["num_threads_per_blk"]


def ck_mfma_a(lane, e, p=CK_MFMA_16x16x16):
    """(m, k) of A element e (0..k_per_blk-1) of a lane. CalculateAThreadOriginDataIndex (k reduction):
    (blk_id, blk_td) = (k block, row); each lane feeds k_per_blk consecutive k of its block."""
    blk_id, blk_td = _ck_blk(lane, p)
    return blk_td, blk_id * p["k_per_blk"] + e


def ck_mfma_b(lane, e, p=CK_MFMA_16x16x16):
    """(k, n) of B element e of a lane (CalculateBThreadOriginDataIndex: (k block, column))."""
    blk_id, blk_td = _ck_blk(lane, p)
    return blk_id * p["k_per_blk"] + e, blk_td


def ck_mfma_c(lane, i, p=CK_MFMA_16x16x16):
    """(m, n) of accumulator i of a lane. GetBeginOfThreadBlk: n = blk_td, m starts at blk_id *
    group_size; MakeCDescriptor_M0_N0_M1_N1_M2_M3_M4_N2 unmerges the M of the registers over
    (num_groups_per_blk, num_input_blks, group_size)."""
    blk_id, blk_td = _ck_blk(lane, p)
    g, j = divmod(i, p["group_size"])
    return g * p["num_input_blks"] * p["group_size"] + blk_id * p["group_size"] + j, blk_td


def test_ck_parameters_are_self_consistent():
    """composable_kernel's own static_asserts on these parameters (MfmaSelector) hold, so the
    derivation above reads them in the roles CK gives them."""
    p = CK_MFMA_16x16x16
    assert p["group_size"] * p["num_groups_per_blk"] == p["num_regs_per_blk"]
    assert p["num_threads_per_blk"] == p["n_per_blk"]
    assert p["num_regs_per_blk"] * p["num_input_blks"] == p["m_per_blk"]
    assert p["num_regs_per_blk"] * p["wave_size"] == p["m_per_blk"] * p["n_per_blk"]
    # KPerXdlops = num_input_blks * k_per_blk: one instruction is 16 deep
    assert p["num_input_blks"] * p["k_per_blk"] == 16


# ------------------------------------------------------------------------------------------------
# mma.cuh's 16 x 16 x 16 step in terms of the instruction maps
# ------------------------------------------------------------------------------------------------
# CUDA: mma.cuh issues two m16n8k16 per call (its inline asm): n-half h takes all four A registers,
# B registers 2h and 2h+1 and accumulators 4h..4h+3. CuTe's value v sits in 16-bit half v % 2 of
# register v // 2 (the SM80 MMA's fma takes the fragment recast to uint32_t registers, low half first
# on these little-endian machines). CDNA: one MFMA, two registers of two 16-bit halves for A and B.
def expected_maps(warp):
    """Per lane, the (row, col) of every 16-bit half of FragA (m, k) and FragB (k, n) and of every
    accumulator of FragC (m, n), as the independent source states them."""
    if warp == 32:
        a = [[cute_mma_a(l, e) for e in range(8)] for l in range(32)]
        b = [[(cute_mma_b(l, e % 4)[0], cute_mma_b(l, e % 4)[1] + 8 * (e // 4)) for e in range(8)] for l in range(32)]
        c = [[(cute_mma_c(l, i % 4)[0], cute_mma_c(l, i % 4)[1] + 8 * (i // 4)) for i in range(8)] for l in range(32)]
    else:
        a = [[ck_mfma_a(l, e) for e in range(4)] for l in range(64)]
        b = [[ck_mfma_b(l, e) for e in range(4)] for l in range(64)]
        c = [[ck_mfma_c(l, i) for i in range(4)] for l in range(64)]
    return a, b, c


@pytest.mark.parametrize("warp", [32, 64])
def test_independent_maps_cover_each_tile_once(warp):
    a, b, c = expected_maps(warp)
    for m in (a, b, c):
        cells = [rc for lane in m for rc in lane]
        assert sorted(cells) == [(r, cc) for r in range(16) for cc in range(16)]


def _emu(target):
    return importlib.import_module(f"zaya_ops._emu_w{target[3:]}")


needs_emu = pytest.mark.skipif(not EMULATORS, reason="built without the SIMT emulator (ZAYA_BACKENDS=...,emu)")
W32 = pytest.mark.skipif("emu32" not in EMULATORS, reason="wgmma exists on the 32-lane emulator only")


def _diff(got, want, what):
    """The lanes and registers where two per-lane maps differ, for an assertion message."""
    bad = [(l, e, g, w) for l, (gl, wl) in enumerate(zip(got, want)) for e, (g, w) in enumerate(zip(gl, wl)) if g != w]
    return f"{what}: {len(bad)} mismatches, first (lane, element, code, source): {bad[:6]}"


def _per_lane(flat, n):
    return [flat[i:i + n] for i in range(0, len(flat), n)]


@needs_emu
@pytest.mark.parametrize("target", EMULATORS)
@pytest.mark.parametrize("kind", ["a", "b_nk", "b_kn", "a_ldsm", "b_nk_ldsm", "b_kn_ldsm"])
@pytest.mark.parametrize("ld", [16, 24, 40])
def test_mma_cuh_loaders_match_the_instruction_layout(target, kind, ld):
    """Every lane's registers after mma.cuh's load_a / load_b_nk / load_b_kn (and their ldmatrix forms
    load_*_v<true>, 32-lane only) hold exactly the operand elements CuTe (mma.sync) or composable_kernel
    (MFMA) say the instruction takes there."""
    if kind.endswith("_ldsm") and target != "emu32":
        pytest.skip("ldmatrix: 32-lane warps only")
    emu = _emu(target)
    warp = emu.warp_size
    regs = emu.mma_loader_regs(kind, ld)
    halves = len(regs) // warp
    got = [[(v >> 8, v & 0xFF) for v in lane] for lane in _per_lane(regs, halves)]
    a, b, _ = expected_maps(warp)
    want = a if kind.startswith("a") else b
    assert got == want, _diff(got, want, f"{target} {kind} ld={ld}")


@needs_emu
@pytest.mark.parametrize("target", EMULATORS)
def test_mma_cuh_accumulator_map_matches(target):
    """c_row / c_col (where the kernels store accumulator i) and the row-reduction helpers agree with
    the independent C layout, and the lanes sharing a row form the shfl_xor butterfly the kernels use
    (offsets 1 .. mma_row_lanes / 2)."""
    emu = _emu(target)
    warp = emu.warp_size
    _, _, c = expected_maps(warp)
    m = _per_lane(emu.mma_accumulator_map(), len(c[0]))
    got = [[(r, cc) for r, cc, _ in lane] for lane in m]
    assert got == c, _diff(got, c, f"{target} accumulators")
    assert [[s for _, _, s in lane] for lane in m] == [[r for r, _ in lane] for lane in c]
    g = emu.mma_row_lanes
    for row in range(16):
        lanes = sorted({l for l in range(warp) for r, _ in c[l] if r == row})
        assert lanes == sorted(lanes[0] ^ x for x in range(g)), (row, lanes)


@needs_emu
@pytest.mark.parametrize("target", EMULATORS)
def test_emulated_instruction_view_matches(target):
    """The emulator's model of the instruction (mma.cuh emu_detail::a_elem / b_elem / c_elem, written
    from the manuals) places every register element where the independent source does."""
    emu = _emu(target)
    a, b, c = expected_maps(emu.warp_size)
    for name, want in (("a", a), ("b", b), ("c", c)):
        got = [[tuple(rc) for rc in lane] for lane in _per_lane(emu.mma_instruction_map(name), len(want[0]))]
        assert got == want, _diff(got, want, f"{target} instruction {name}")


def _bits(x: torch.Tensor) -> list[int]:
    """Raw 16-bit patterns of a bf16/fp16 tensor."""
    return (x.contiguous().view(torch.int16).to(torch.int32) & 0xFFFF).flatten().tolist()


@needs_emu
@pytest.mark.parametrize("target", EMULATORS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_emulated_instruction_computes_with_the_independent_maps(target, dtype):
    """Registers built from random A, B, C by the independent maps go through the emulated
    instruction; read back through the independent C map, the result is C + A B (small integers:
    exact in fp32 whatever the summation order)."""
    emu = _emu(target)
    warp = emu.warp_size
    amap, bmap, cmap = expected_maps(warp)
    g = torch.Generator().manual_seed(warp)
    A = torch.randint(-8, 9, (16, 16), generator=g).to(dtype)
    B = torch.randint(-8, 9, (16, 16), generator=g).to(dtype)
    C = torch.randint(-64, 65, (16, 16), generator=g).float()
    a_regs = _bits(torch.stack([A[r, k] for lane in amap for r, k in lane]))
    b_regs = _bits(torch.stack([B[k, n] for lane in bmap for k, n in lane]))
    c_regs = [C[r, n].item() for lane in cmap for r, n in lane]
    d = _per_lane(emu.mma_instruction(dtype == torch.bfloat16, a_regs, b_regs, c_regs), len(cmap[0]))
    want = C + A.float() @ B.float()
    got = torch.full((16, 16), float("nan"))
    for lane, rcs in enumerate(cmap):
        for i, (r, n) in enumerate(rcs):
            got[r, n] = d[lane][i]
    assert torch.equal(got, want), (got - want).abs().max()


# ------------------------------------------------------------------------------------------------
# wgmma: accumulators and the register A operand
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [64, 128])
def test_wgmma_register_a_is_mma_sync_a_per_warp(n):
    """wgmma.cuh passes mma.sync's A fragment as the register A (warp w: rows 16w..16w+15). By CuTe,
    ALayout_64x16 restricted to warp w is SM80's ALayout shifted by 16 w rows; and cca_attention_sm90
    turns S's accumulators 8 kk .. 8 kk + 7 into k-step kk's A fragment (register r = accumulators
    8 kk + 2r, +1): CLayout_64xN's value 8 kk + v is ALayout_64x16's value v, 16 kk columns on."""
    for t in range(128):
        w, lane = divmod(t, 32)
        for v in range(8):
            m, k = cute_mma_a(lane, v)
            assert cute_wgmma_a(t, v) == (16 * w + m, k)
            for kk in range(n // 16):
                r, col = cute_wgmma_c(n, t, 8 * kk + v)
                assert (r, col - 16 * kk) == cute_wgmma_a(t, v)


@W32
@pytest.mark.parametrize("n", [64, 128])
def test_wgmma_accumulator_map_matches_clayout(n):
    got = _per_lane([tuple(x) for x in _emu("emu32").wgmma_accumulator_map(n)], n // 2)
    want = [[cute_wgmma_c(n, t, i) for i in range(n // 2)] for t in range(128)]
    assert got == want, _diff(got, want, f"acc_row/acc_col N={n}")


# ------------------------------------------------------------------------------------------------
# wgmma shared-memory descriptors
# ------------------------------------------------------------------------------------------------
# cute/arch/mma_sm90_desc.hpp, union GmmaDescriptor, struct bitfield:
#   uint16_t start_address_ : 14, : 2;        // bit [0,14), 4LSB not included
#   uint16_t leading_byte_offset_ : 14, : 2;  // bit [16,30), 4LSB not included
#   uint16_t stride_byte_offset_ : 14, : 2;   // bit [32,46), 4LSB not included
#   uint8_t : 1, base_offset_ : 3, : 4;       // bit [49,52)
#   uint8_t : 6, layout_type_ : 2;            // bit [62,64): SWIZZLE_NONE (INTERLEAVE) = 0, B128 = 1, B64 = 2, B32 = 3
# make_gmma_desc fills start_address_ = smem address >> 4, base_offset_ = 0 and LBO/SBO in 16-byte units.
GMMA_FIELDS = {"start_address": (0, 14), "leading_byte_offset": (16, 14), "stride_byte_offset": (32, 14),
               "base_offset": (49, 3), "layout_type": (62, 2)}


def gmma_fields(desc: int) -> dict:
    f = {name: (desc >> lo) & ((1 << w) - 1) for name, (lo, w) in GMMA_FIELDS.items()}
    used = sum(((1 << w) - 1) << lo for lo, w in GMMA_FIELDS.values())
    f["unused_bits"] = desc & ~used & (2**64 - 1)
    return f


@W32
@pytest.mark.parametrize("offset,lbo,sbo", [(0, 128, 1024), (16, 16 * 128, 128), (4096, 2048, 256),
                                            (0x3FFF0, 0x3FFF0, 0x3FFF0), (208 * 1024, 1 << 14, 16)])
def test_descriptor_encoder_fields_match_gmma_descriptor(offset, lbo, sbo):
    """wgmma::make_desc, field by field as GmmaDescriptor lays them out: start address, LBO and SBO in
    16-byte units (14 bits each), base offset 0, layout type 0 (no swizzle), every other bit 0."""
    d = _emu("emu32").wgmma_desc("raw", offset, lbo, sbo)
    f = gmma_fields(d)
    assert f == {"start_address": (offset >> 4) & 0x3FFF, "leading_byte_offset": (lbo >> 4) & 0x3FFF,
                 "stride_byte_offset": (sbo >> 4) & 0x3FFF, "base_offset": 0, "layout_type": 0, "unused_bits": 0}, f


# make_gmma_desc (cute/atom/mma_traits_sm90_gmma.hpp), no swizzle (LayoutType::INTERLEAVE), in units of
# uint128_t (16 bytes = T = 8 elements of 16 bits):
#   Major::K : canonical ((8,n),2):((1,SBO),LBO)   -> stride_byte_offset_  = stride<0,1>, leading_byte_offset_ = stride<1,0>
#   Major::MN: canonical ((1,n),(8,k)):((X,SBO),(1,LBO))
#              desc.bitfield.stride_byte_offset_  = (LAYOUT_TYPE == INTERLEAVE) ? stride_01 : stride_11;
#              desc.bitfield.leading_byte_offset_ = (LAYOUT_TYPE == INTERLEAVE) ? stride_11 : stride_01;
#   i.e. no-swizzle MN-major: SBO = next 16-byte column along MN, LBO = next 8 k-rows; for the swizzled
#   MN-major modes the roles swap (LBO along MN, SBO along K).
# The PTX ISA's table of strides says the same (read in a stored copy of its tcgen05 chapter, 9.7.16.3,
# "Major-ness supported by Strides", whose descriptor fields are wgmma's; the wgmma chapter's own table
# was not at hand): leading dimension byte offset, MN-major,
# "Interleave: stride from the first 8 columns to the next 8 columns" (columns run along K there:
# the no-swizzle MN-major atom is 1 x 8, MN x K, in 128-bit elements), "Swizzled layouts: stride from
# the first (swizzle-byte-size/16) rows to the next" (rows along MN). The older wgmma wording, "LBO:
# distance between two adjacent core matrices in the K dimension; SBO: ... in the M or N dimension",
# agrees for no swizzle.
# The source that reads differently: the field comments of GmmaDescriptor itself (mma_sm90_desc.hpp),
#   leading_byte_offset_:  "For T: This is the stride from the first 8 rows to the next 8 rows."
#   stride_byte_offset_:   "For T: This is the stride fro mthe first 8 cols to the next 8 cols."
# Read literally for a no-swizzle MN-major ("T") operand, that would put the MN stride in LBO and the K
# stride in SBO: cca_attention_sm90's V would need LBO = 128, SBO = 16 D instead of LBO = 16 D,
# SBO = 128. The code follows make_gmma_desc's INTERLEAVE branch (the code CUTLASS's kernels run, via
# Layout_MN_INTER_Atom) and the PTX ISA's table, which agree; the comment matches the swizzled case
# (8 rows of 16 bytes = one 128-byte swizzle atom along MN). Only silicon settles it:
# tests/test_wgmma_tiles.py::test_mn_major_b on a Hopper GPU, whose case is chosen so the two readings
# give different products.
def cute_canonical_kmajor(m_blocks):
    """Major::K INTERLEAVE canonical layout ((8,m),(T,2)):((1T,SBO),(1,LBO)) as a function of
    (LBO, SBO) in elements: (mn, k) -> element offset."""
    return lambda lbo, sbo: Layout(((8, m_blocks), (8, 2)), ((8, sbo), (1, lbo)))


def cute_canonical_mn_major(m_blocks):
    """Major::MN INTERLEAVE canonical layout ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO)), k = 2 for a k16 step."""
    return lambda lbo, sbo: Layout(((8, 1, m_blocks), (8, 2)), ((1, 8, sbo), (8, lbo)))


def make_gmma_desc_interleave(layout_u128: Layout, major: str, start_bytes: int) -> dict:
    """make_gmma_desc's choice of fields for a no-swizzle operand, from its layout in 16-byte units
    given in the canonical hierarchical form: Major::K ((8,n),2), Major::MN ((1,n),(8,2))."""
    s = layout_u128.stride
    if major == "K":
        assert s[0][0] == 1, "not a canonical GMMA_K layout: the 8 rows of a core matrix must be 16 bytes apart"
        sbo, lbo = s[0][1], s[1]
    else:
        assert s[1][0] == 1, "not a canonical GMMA_MN layout: the 8 k-rows of a core matrix must be 16 bytes apart"
        sbo, lbo = s[0][1], s[1][1]
    return {"start_address": start_bytes >> 4, "leading_byte_offset": lbo, "stride_byte_offset": sbo,
            "base_offset": 0, "layout_type": 0, "unused_bits": 0}


@W32
@pytest.mark.parametrize("cols", [16, 32, 64, 128, 256])
def test_descriptor_helpers_follow_make_gmma_desc(cols):
    """kmajor_desc / mn_major_desc (the descriptors of cca_attention_sm90's Q, K and V and of the
    one-tile tests) equal what make_gmma_desc builds for the tiles the kernels write with
    kmajor_offset. The tiles, in 16-byte units, as CuTe layouts of a k16 step:
      K-major (rows = m or n, k along the cols): element (r, k) -> ((8, rows/8), 2):((1, cols), 8);
      MN-major (rows = k, n along the cols):     element (n, k) -> ((1, cols/8), (8, 2)):((0, 8), (1, cols));
    both checked against kmajor_offset itself first."""
    emu = _emu("emu32")
    rows = 64
    off = emu.wgmma_kmajor_offsets(rows, cols)  # row-major [rows][cols], in elements
    kmaj = Layout(((8, rows // 8), 2), ((1, cols), 8))
    mnmaj = Layout(((1, cols // 8), (8, 2)), ((0, 8), (1, cols)))
    for ks in range(cols // 16):
        base = ks * 128  # element offset of the k-step's first core matrix in a K-major tile
        for r in range(rows):
            for k in range(16):
                e = off[r * cols + 16 * ks + k]
                assert e % 8 == k % 8 and (e - base) // 8 == kmaj(r, k // 8), (ks, r, k)
        d = make_gmma_desc_interleave(kmaj, "K", 4096 + 2 * base)
        assert gmma_fields(emu.wgmma_desc("kmajor", 4096, ks, cols)) == d
    if cols >= 64:  # an MN-major B of N = cols (64 or 128 in the kernels): k16 steps of a [K][cols] tile
        kdim = 32
        off = emu.wgmma_kmajor_offsets(kdim, cols)
        for ks in range(kdim // 16):
            base = ks * 16 * cols
            for n in range(cols):
                for k in range(16):
                    e = off[(16 * ks + k) * cols + n]
                    assert e % 8 == n % 8 and (e - base) // 8 == mnmaj(n // 8, k), (ks, n, k)
            assert gmma_fields(emu.wgmma_desc("mn_major", 4096, ks, cols)) == make_gmma_desc_interleave(
                mnmaj, "MN", 4096 + 2 * base)
        # the V descriptor of cca_attention_sm90: LBO = 16 D bytes, SBO = 128 bytes
        f = gmma_fields(emu.wgmma_desc("mn_major", 0, 0, cols))
        assert (f["leading_byte_offset"] << 4, f["stride_byte_offset"] << 4) == (16 * cols, 128)


@W32
@pytest.mark.parametrize("mn_major", [False, True])
@pytest.mark.parametrize("lbo,sbo", [(128, 1024), (2048, 128), (256, 4096), (4096, 256)])
def test_emulated_wgmma_reads_the_canonical_layouts(mn_major, lbo, sbo):
    """The emulated wgmma reads operand element (mn, k) at the address CuTe's canonical INTERLEAVE
    layout gives for the descriptor's LBO and SBO (start + 2 x element offset)."""
    emu = _emu("emu32")
    start = 256
    d = emu.wgmma_desc("raw", start, lbo, sbo)
    rows = 128
    got = emu.wgmma_operand_offsets(d, rows, mn_major)
    lay = (cute_canonical_mn_major if mn_major else cute_canonical_kmajor)(rows // 8)(lbo // 2, sbo // 2)
    want = [start + 2 * lay(mn, k) for mn in range(rows) for k in range(16)]
    assert got == want


def _image_for(M, lay, dtype):
    """A shared-memory image (16-bit elements) holding M (rows = mn, 16 columns = k) at the element
    offsets of the canonical layout ``lay``; the halves in between hold NaN, so reading one shows."""
    offs = {(r, k): lay(r, k) for r in range(M.shape[0]) for k in range(16)}
    assert len(set(offs.values())) == len(offs), "the layout maps two elements to one address"
    img = torch.full((1 + max(offs.values()),), float("nan"), dtype=dtype)
    for (r, k), o in offs.items():
        img[o] = M[r, k]
    return img


# (LBO, SBO) in elements for B: a padded and an interleaved arrangement per major-ness, none of them
# the kernels' own values.
B_STRIDES = {False: [(64, 192), (lambda n: 16 * n + 64, 64)], True: [(lambda n: 8 * n + 64, 64), (64, 128)]}


@W32
@pytest.mark.parametrize("n", [64, 128])
@pytest.mark.parametrize("a_regs,b_mn_major", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("variant", [0, 1])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_emulated_wgmma_computes_with_cute_layouts(n, a_regs, b_mn_major, variant, dtype):
    """One emulated k16 wgmma, every operand placed by the independent statements: shared memory by
    CuTe's canonical layouts (LBO != SBO, padded or interleaved), register A by ALayout_64x16; read
    back through CLayout_64xN the accumulators must be A B^T exactly."""
    emu = _emu("emu32")
    g = torch.Generator().manual_seed(n + 2 * a_regs + b_mn_major + 4 * variant)
    A = torch.randint(-8, 9, (64, 16), generator=g).to(dtype)
    B = torch.randint(-8, 9, (n, 16), generator=g).to(dtype)  # B[n][k]
    a_lbo, a_sbo = 8 * 128 + 64, 128  # elements: K-halves far apart, 8-row groups padded
    lbo, sbo = (x(n) if callable(x) else x for x in B_STRIDES[b_mn_major][variant])
    a_lay = cute_canonical_kmajor(8)(a_lbo, a_sbo)
    b_lay = (cute_canonical_mn_major if b_mn_major else cute_canonical_kmajor)(n // 8)(lbo, sbo)
    a_img, b_img = _image_for(A, a_lay, dtype), _image_for(B, b_lay, dtype)
    b_off = 16 * ((2 * a_img.numel() + 15) // 16) + 32  # bytes, 16-aligned, a gap after A
    image = torch.full((b_off // 2 + b_img.numel(),), float("nan"), dtype=dtype)
    image[: a_img.numel()] = a_img
    image[b_off // 2:] = b_img
    regs = _bits(torch.stack([A[cute_wgmma_a(t, v)] for t in range(128) for v in range(8)])) if a_regs else []
    a_desc = [] if a_regs else [0, 2 * a_lbo, 2 * a_sbo]
    acc = _per_lane(emu.wgmma_instruction(dtype == torch.bfloat16, n, _bits(image), regs, a_desc,
                                          [b_off, 2 * lbo, 2 * sbo], b_mn_major), n // 2)
    got = torch.full((64, n), float("nan"))
    for t in range(128):
        for i in range(n // 2):
            got[cute_wgmma_c(n, t, i)] = acc[t][i]
    want = A.float() @ B.float().T
    assert torch.equal(got, want), (got - want).abs().max()


@W32
def test_mn_major_readings_differ_for_the_v_tile():
    """The two readings of a no-swizzle MN-major descriptor (see the comment above
    cute_canonical_kmajor) address different bytes for cca_attention_sm90's V tile, so the one-tile
    GPU test can tell them apart; the code's descriptor is the make_gmma_desc / PTX-table reading."""
    emu = _emu("emu32")
    for D in (64, 128):
        f = gmma_fields(emu.wgmma_desc("mn_major", 0, 0, D))
        lbo, sbo = f["leading_byte_offset"] << 4, f["stride_byte_offset"] << 4
        code = cute_canonical_mn_major(D // 8)(lbo // 2, sbo // 2)
        swapped = cute_canonical_mn_major(D // 8)(sbo // 2, lbo // 2)
        crds = [(n, k) for n in range(D) for k in range(16)]
        assert sum(code(*c) != swapped(*c) for c in crds) > len(crds) // 2
        # what the kernels store there (kmajor_offset(k, n, D)) is what the code's reading reads
        off = emu.wgmma_kmajor_offsets(16, D)
        assert [code(n, k) for n, k in crds] == [off[k * D + n] for n, k in crds]


# ------------------------------------------------------------------------------------------------
# The K-major 128-byte swizzle (moe_top1_sm90's A and B tiles, TMA CU_TENSOR_MAP_SWIZZLE_128B)
# ------------------------------------------------------------------------------------------------
# cute/swizzle.hpp (CUTLASS above; the newest commit touching it, pointer_swizzle.hpp or
# mma_traits_sm90_gmma.hpp there: 0d2b201e8c1c4a03efa6e9c468161916e2334725):
#   template <int BBits, int MBase, int SShift = BBits> struct Swizzle
#     yyy_msk = ((1 << BBits) - 1) << (MBase + max(0, SShift)); zzz_msk = ((1 << BBits) - 1) << (MBase - min(0, SShift))
#     apply(offset) = offset ^ shiftr(offset & yyy_msk, SShift)       // ZZZ ^= YYY
# cute/pointer_swizzle.hpp, swizzle_ptr::apply_swizzle: SwizzleFn::apply(reinterpret_cast<uintptr_t>(ptr)):
#   the swizzle acts on the byte address ("Arch chose to design hardware with position-dependent swizzles").
# cute/atom/mma_traits_sm90_gmma.hpp:
#   using Layout_K_SW128_Atom_Bits = ComposedLayout<Swizzle<3,4,3>, smem_ptr_flag, Layout<Shape<_8,_1024>,Stride<_1024,_1>>>;
#   (Layout_K_SW128_Atom<T> = upcast<sizeof_bits<T>>: (8, 64):(64, 1) for 16-bit T, the swizzle unchanged)
#   make_gmma_desc<Major::K>, in uint128_t units:
#     LayoutType::B128 : Swizzle<3,4,3> o smem_ptr o ((8,n),2):((8,SBO),1)
#     desc.bitfield.layout_type_ = uint8_t(LayoutType::B128)  (= 1, mma_sm90_desc.hpp), base_offset_ = 0,
#     stride_byte_offset_ = stride<0,1>(canonical_layout), leading_byte_offset_ = stride<1,0> = 1 (asserted 1)
# cute/atom/copy_traits_sm90_tma_swizzle.hpp, get_tma_swizzle_bits(Swizzle<3,4,3>) = TMA::SmemSwizzleBits::B128.
def cute_swizzle(b, m, s):
    yyy = ((1 << b) - 1) << (m + max(0, s))
    return lambda off: off ^ ((off & yyy) >> s)


SW128 = cute_swizzle(3, 4, 3)


def cute_k_sw128_tile(rows):
    """tile_to_shape(Layout_K_SW128_Atom<16-bit>, (rows, 64)): the (8, 64):(64, 1) atoms stacked along
    the rows, (r, k) -> byte address offset from a 1024-byte-aligned start, swizzled."""
    lay = Layout(((8, rows // 8), 64), ((64, 512), 1))
    return lambda r, k: SW128(2 * lay((r % 8, r // 8), k))


def test_swizzle_343_is_chunk_xor_row():
    """Swizzle<3,4,3> on byte addresses, read off CuTe's definition: the 16-byte chunk index within a
    128-byte row is XORed with the row's index within its 1024-byte, 8-row atom."""
    for a in range(0, 4096, 2):
        row, chunk, rest = (a >> 7), (a >> 4) & 7, a & 15
        assert SW128(a) == (row << 7) | ((chunk ^ (row & 7)) << 4) | rest


@W32
@pytest.mark.parametrize("rows", [8, 64, 128])
def test_sw128_offsets_follow_cute_k_sw128_atom(rows):
    """wgmma::sw128_offset (where moe_top1_sm90's cp.async writes A and where the tests place swizzled
    tiles) is Layout_K_SW128_Atom tiled over the rows, byte for byte."""
    off = _emu("emu32").wgmma_sw128_offsets(rows)
    cute = cute_k_sw128_tile(rows)
    assert [2 * o for o in off] == [cute(r, k) for r in range(rows) for k in range(64)]


@W32
@pytest.mark.parametrize("box_rows,row0,col0", [(64, 0, 0), (16, 3, 8), (64, 40, 64)])
def test_emulated_tma_swizzle_128b_places_like_cute(box_rows, row0, col0):
    """An emulated TMA box with the 128-byte swizzle (64 x 64 elements, 128-byte rows) lands where
    CuTe's K-major SW128 layout puts box element (r, c), zero fill outside the matrix included; without
    the swizzle the same box lands row-major."""
    emu = _emu("emu32")
    rows, cols = 96, 120

    def want_val(r, c):
        return (1 + ((row0 + r) << 8) + col0 + c) if row0 + r < rows and col0 + c < cols else 0

    img = emu.tma_box_image(rows, cols, box_rows, 64, row0, col0, True)
    cute = cute_k_sw128_tile(box_rows)
    got = {(r, c): img[cute(r, c) // 2] for r in range(box_rows) for c in range(64)}
    assert got == {(r, c): want_val(r, c) for r in range(box_rows) for c in range(64)}
    flat = emu.tma_box_image(rows, cols, box_rows, 64, row0, col0, False)
    assert flat == [want_val(r, c) for r in range(box_rows) for c in range(64)]
    if box_rows >= 8:
        assert img != flat  # the swizzle moved something


def make_gmma_desc_k_sw128(layout_u128: Layout, start_bytes: int) -> dict:
    """make_gmma_desc<Major::K>'s fields for a B128 operand given its canonical ((8,n),2) form in
    16-byte units (before the swizzle), with the static_asserts it makes."""
    s = layout_u128.stride
    assert s[0][0] == 8, "not a canonical GMMA_K B128 layout: rows must be 8 units (128 bytes) apart"
    assert s[1] == 1, "not a canonical GMMA_K B128 layout: the two k-halves must be adjacent"
    return {"start_address": start_bytes >> 4, "leading_byte_offset": 1, "stride_byte_offset": s[0][1],
            "base_offset": 0, "layout_type": 1, "unused_bits": 0}


@W32
@pytest.mark.parametrize("rows", [64, 128])
def test_sw128_descriptor_follows_make_gmma_desc(rows):
    """make_desc_sw128 as moe_top1_sm90 and the one-tile test call it (tile at a 1024-byte-aligned
    offset, k-step ks 32 ks bytes in, SBO 1024) equals make_gmma_desc's B128 K-major descriptor of
    the k16 slice of CuTe's tile_to_shape(Layout_K_SW128_Atom, (rows, 64))."""
    emu = _emu("emu32")
    for start in (0, 8192, 3 * 1024):
        for ks in range(4):
            # the k16 slice, in uint128 units: ((8, rows/8), 2):((8, 64), 1), starting 2 ks units in
            canon = Layout(((8, rows // 8), 2), ((8, 64), 1))
            want = make_gmma_desc_k_sw128(canon, start + 32 * ks)
            assert gmma_fields(emu.wgmma_desc("sw128", start, ks, 1024)) == want, (start, ks)


@W32
@pytest.mark.parametrize("sbo", [1024, 2048])
@pytest.mark.parametrize("ks", [0, 1, 3])
def test_emulated_wgmma_reads_the_sw128_canonical_layout(sbo, ks):
    """The emulated wgmma reads operand element (mn, k) of a B128 K-major descriptor at CuTe's address:
    Swizzle<3,4,3> applied to start + byte offset of ((8,m),(T,2)):((8T,SBO),(1,T)) (T = 8 elements)."""
    emu = _emu("emu32")
    start = 4096 + 32 * ks
    d = emu.wgmma_desc("sw128", 4096, ks, sbo)
    rows = 128
    got = emu.wgmma_operand_offsets(d, rows, False)
    lay = Layout(((8, rows // 8), (8, 2)), ((64, sbo // 2), (1, 8)))  # elements
    want = [SW128(start + 2 * lay((mn % 8, mn // 8), (k % 8, k // 8))) for mn in range(rows) for k in range(16)]
    assert got == want


@W32
def test_emulated_wgmma_refuses_unmodelled_swizzles():
    """64- and 32-byte swizzles, a base offset, an LBO other than CuTe's 16 bytes, and a swizzled
    MN-major operand are not modelled: the launch fails instead of reading some other layout."""
    emu = _emu("emu32")
    d = emu.wgmma_desc("sw128", 0, 0, 1024)
    for bad, what in ((d ^ (3 << 62), "layouts are modelled"), (d | (1 << 49), "base offset"),
                      (d + (1 << 16), "LBO = 16")):
        with pytest.raises(RuntimeError, match=what):
            emu.wgmma_operand_offsets(bad, 8, False)
    with pytest.raises(RuntimeError, match="K-major 128-byte swizzle"):
        emu.wgmma_operand_offsets(d, 8, True)


def test_sources_are_named():
    """The sources above are pinned to commits (a moving 'main' would make the statements unverifiable)."""
    for src in (CUTLASS, CK):
        repo, commit = src.split()
        assert "/" in repo and len(commit) == 40 and all(ch in "0123456789abcdef" for ch in commit)


def test_cute_a_and_b_share_the_k_pairing():
    """Within one m16n8k16, the value pairs of a register (v, v + 1) are consecutive k in A and in B,
    and lane l's A values meet B values of the same k: the pairing that lets mma.cuh load both with
    32-bit reads along k (load_a, load_b_nk)."""
    for lane, v in itertools.product(range(32), range(0, 8, 2)):
        m0, k0 = cute_mma_a(lane, v)
        assert cute_mma_a(lane, v + 1) == (m0, k0 + 1)
    for lane, v in itertools.product(range(32), range(0, 4, 2)):
        k0, n0 = cute_mma_b(lane, v)
        assert cute_mma_b(lane, v + 1) == (k0 + 1, n0)


# ------------------------------------------------------------------------------------------------
# ldmatrix (mma.cuh ldmatrix<N, kTrans> and the load_*_v<true> loaders of the version-2 kernels)
# ------------------------------------------------------------------------------------------------
# cute/atom/copy_traits_sm75.hpp of CUTLASS above (the newest commit touching it there:
# 0d2b201e8c1c4a03efa6e9c468161916e2334725). ThrID = Layout<_32>; the maps go from (thread, value) to the
# bit of the source, the N 8x8 matrices of 16-bit elements with their rows stacked (128 bits a row):
#   Copy_Traits<SM75_U32x1_LDSM_N>  SrcLayout = Layout<Shape <Shape <  _8,_4>,_128>, Stride<Stride<_128,_0>,  _1>>
#                                   DstLayout = Layout<Shape <_32,_32>, Stride<_32, _1>>
#   Copy_Traits<SM75_U32x2_LDSM_N>  SrcLayout = Layout<Shape <Shape < _16,_2>,_128>, Stride<Stride<_128,_0>,  _1>>
#                                   DstLayout = Layout<Shape <_32,Shape <_32,   _2>>, Stride<_32,Stride< _1,_1024>>>
#   Copy_Traits<SM75_U32x4_LDSM_N>  SrcLayout = Layout<Shape < _32,_128>, Stride<_128,  _1>>
#                                   DstLayout = Layout<Shape <_32,Shape <_32,   _4>>, Stride<_32,Stride< _1,_1024>>>
#   Copy_Traits<SM75_U16x2_LDSM_T>  SrcLayout as U32x1_LDSM_N
#                                   DstLayout = Layout<Shape <Shape <  _4, _8>,Shape <_16,  _2>>,
#                                                      Stride<Stride<_256,_16>,Stride< _1,_128>>>
#   Copy_Traits<SM75_U16x4_LDSM_T>  SrcLayout as U32x2_LDSM_N
#                                   DstLayout = Layout<Shape <Shape <  _4, _8>,Shape <_16,  _2,   _2>>,
#                                                      Stride<Stride<_256,_16>,Stride< _1,_128,_1024>>>
#   Copy_Traits<SM75_U16x8_LDSM_T>  SrcLayout as U32x4_LDSM_N
#                                   DstLayout = Layout<Shape <Shape <  _4, _8>,Shape <_16,  _2,   _4>>,
#                                                      Stride<Stride<_256,_16>,Stride< _1,_128,_1024>>>
# A stride-0 thread mode in SrcLayout: those threads name the same rows as the first ones (the PTX ISA:
# only threads 0..8N-1 supply addresses); the row a thread supplies is SrcLayout(t, 0) / 128.
LDSM_SRC = {1: Layout(((8, 4), 128), ((128, 0), 1)), 2: Layout(((16, 2), 128), ((128, 0), 1)),
            4: Layout((32, 128), (128, 1))}
LDSM_DST_N = {1: Layout((32, 32), (32, 1)), 2: Layout((32, (32, 2)), (32, (1, 1024))),
              4: Layout((32, (32, 4)), (32, (1, 1024)))}
LDSM_DST_T = {1: Layout(((4, 8), (16, 2)), ((256, 16), (1, 128))),
              2: Layout(((4, 8), (16, 2, 2)), ((256, 16), (1, 128, 1024))),
              4: Layout(((4, 8), (16, 2, 4)), ((256, 16), (1, 128, 1024)))}


def cute_ldsm_regs(n, trans, rows):
    """Per lane, the n 32-bit registers CuTe's LDSM traits say ldmatrix.x<n>[.trans] delivers when lane t
    supplies the address of tile row rows[t] and tile element (r, c) holds (r << 8) | c."""
    supplier = {}
    for t in range(32):  # the first thread naming a stacked row supplies it
        supplier.setdefault(LDSM_SRC[n](t, 0) // 128, t)

    def element(bit):
        assert bit % 16 == 0
        k, c = bit // 128, (bit % 128) // 16  # stacked row, element within the row
        return (rows[supplier[k]] << 8) | c

    out = []
    for lane in range(32):
        for j in range(n):
            if trans:
                lo, hi = (LDSM_DST_T[n](lane, 16 * h + 32 * j) for h in (0, 1))
            else:
                lo, hi = LDSM_DST_N[n](lane, 32 * j), LDSM_DST_N[n](lane, 32 * j + 16)
            out.append(element(lo) | (element(hi) << 16))
    return out


def test_cute_ldsm_sources_cover_the_matrices():
    for n in (1, 2, 4):
        assert sorted({LDSM_SRC[n](t, 0) // 128 for t in range(32)}) == list(range(8 * n))
        for dst in (LDSM_DST_N[n], LDSM_DST_T[n]):  # every 16-bit element delivered once
            bits = sorted(dst(lane, v) for lane in range(32) for v in range(0, 32 * n, 16))
            assert bits == list(range(0, 128 * 8 * n, 16))


@pytest.mark.skipif("emu32" not in EMULATORS, reason="ldmatrix exists on the 32-lane emulator only")
@pytest.mark.parametrize("n", [1, 2, 4])
@pytest.mark.parametrize("trans", [False, True], ids=["N", "T"])
@pytest.mark.parametrize("ld", [8, 40])
def test_emulated_ldmatrix_matches_cute_copy_atoms(n, trans, ld):
    """The emulated ldmatrix (which lane's address feeds which row, which lanes receive which words)
    against CuTe's SM75 LDSM copy traits, with every lane naming a different row (a permutation), so that
    a wrong supplier lane, or a use of the addresses of lanes >= 8n, changes the result."""
    emu = _emu("emu32")
    g = torch.Generator().manual_seed(100 * n + ld + trans)
    rows = torch.randperm(32, generator=g).tolist()
    got = emu.ldmatrix_regs(n, trans, rows, ld)
    want = cute_ldsm_regs(n, trans, rows)
    assert got == want, _diff(_per_lane(got, n), _per_lane(want, n), f"ldmatrix x{n} trans={trans}")


@pytest.mark.skipif("emu32" not in EMULATORS, reason="ldmatrix exists on the 32-lane emulator only")
def test_emulated_ldmatrix_refuses_unaligned_rows():
    emu = _emu("emu32")
    with pytest.raises(RuntimeError, match="16-byte aligned"):
        emu.ldmatrix_regs(4, False, list(range(32)), 12)  # row 1 starts 24 bytes in
