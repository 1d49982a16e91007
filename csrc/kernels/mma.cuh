// Warp-level 16x16x16 matrix multiply-accumulate on tensor cores (CUDA mma.sync) and matrix cores
// (CDNA MFMA), fp32 accumulate, bf16 or fp16 operands: the one building block of the matrix kernels
// (moe_top1, router, cca_attention). A kernel stages tiles in shared memory as raw 16-bit values,
// loads fragments with load_a / load_a_kn / load_b_nk / load_b_kn, multiplies with mma(), and reads its
// accumulators through c_row / c_col. Only this file knows the fragment layouts:
//
//   CUDA, 32-lane warp: two mma.sync.m16n8k16 per call (n = 0..7 and 8..15). g = lane / 4,
//     t = lane % 4. A regs: (g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..). B regs per n-half:
//     (k = 2t..2t+1, n = g), (k = 2t+8.., n = g). C: (g, 2t + j), (g + 8, 2t + j), j = 0, 1.
//   CDNA, 64-lane wavefront: v_mfma_f32_16x16x16{bf16_1k,f16}. A: lane l holds row l % 16,
//     k = 4 * (l / 16) .. +3; B: column l % 16, same k; C: column l % 16, rows 4 * (l / 16) .. +3.
//
// Under the SIMT emulator the instruction itself is emulated from those layouts (written from the
// lane's point of view, independently of the loaders below), so the tests check the loaders and the
// accumulator mapping against the hardware's layout.
//
// Shared-memory addresses: element (r, c) of a tile with leading dimension ld is tile[r * ld + c];
// ld must be even (32-bit loads) and the tile 4-byte aligned.
#pragma once

#include <cstring>
#include <string>
#include <type_traits>

#include "vendor.h"

namespace zaya::mma {

#if ZAYA_WARP_SIZE == 32
inline constexpr int kAccum = 8;  // fp32 accumulators per lane for one 16x16 tile
struct FragA {
  uint32_t x[4];
};
struct FragB {
  uint32_t x[4];
};
#else
inline constexpr int kAccum = 4;
struct FragA {
  uint32_t x[2];
};
struct FragB {
  uint32_t x[2];
};
#endif
struct FragC {
  float x[kAccum];
};

ZAYA_DEV void zero(FragC& c) {
#pragma unroll
  for (int i = 0; i < kAccum; ++i) c.x[i] = 0.f;
}

ZAYA_DEV uint32_t ld32(const uint16_t* p) { return *reinterpret_cast<const uint32_t*>(p); }
ZAYA_DEV uint32_t pack(uint16_t lo, uint16_t hi) {
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}

// Row and column (0..15) of accumulator i of this lane.
ZAYA_DEV int c_row(int lane, int i) {
#if ZAYA_WARP_SIZE == 32
  return (lane >> 2) + 8 * ((i >> 1) & 1);
#else
  return 4 * (lane >> 4) + i;
#endif
}
ZAYA_DEV int c_col(int lane, int i) {
#if ZAYA_WARP_SIZE == 32
  return 2 * (lane & 3) + (i & 1) + 8 * (i >> 2);
#else
  (void)i;
  return lane & 15;
#endif
}

// Row reductions over the accumulators (softmax statistics): a lane holds kRowsPerLane distinct rows,
// accumulator i belongs to the row of slot c_slot(i), and the other columns of those rows sit in the
// kRowLanes lanes whose index differs from this one only in the low log2(kRowLanes) bits, so a
// shfl_xor butterfly over offsets 1, 2, .., kRowLanes / 2 reduces a row.
#if ZAYA_WARP_SIZE == 32
inline constexpr int kRowsPerLane = 2;
inline constexpr int kRowLanes = 4;
ZAYA_DEV int c_slot(int i) { return (i >> 1) & 1; }
ZAYA_DEV int slot_row(int lane, int s) { return (lane >> 2) + 8 * s; }
#else
inline constexpr int kRowsPerLane = 4;
inline constexpr int kRowLanes = 16;
ZAYA_DEV int c_slot(int i) { return i; }
ZAYA_DEV int slot_row(int lane, int s) { return 4 * (lane >> 4) + s; }
#endif

// A (16 x 16, m x k) from a row-major tile: A[m][k] = s[m * ld + k].
ZAYA_DEV FragA load_a(const uint16_t* s, int ld, int lane) {
  FragA a;
#if ZAYA_WARP_SIZE == 32
  const int g = lane >> 2, t = lane & 3;
  a.x[0] = ld32(s + g * ld + 2 * t);
  a.x[1] = ld32(s + (g + 8) * ld + 2 * t);
  a.x[2] = ld32(s + g * ld + 2 * t + 8);
  a.x[3] = ld32(s + (g + 8) * ld + 2 * t + 8);
#else
  const uint16_t* p = s + (lane & 15) * ld + 4 * (lane >> 4);
  a.x[0] = ld32(p);
  a.x[1] = ld32(p + 2);
#endif
  return a;
}

// B (16 x 16, k x n) from an n-major tile, as nn.Linear weights and attention keys are stored:
// B[k][n] = s[n * ld + k].
ZAYA_DEV FragB load_b_nk(const uint16_t* s, int ld, int lane) {
  FragB b;
#if ZAYA_WARP_SIZE == 32
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    b.x[2 * h] = ld32(s + (8 * h + g) * ld + 2 * t);
    b.x[2 * h + 1] = ld32(s + (8 * h + g) * ld + 2 * t + 8);
  }
#else
  const uint16_t* p = s + (lane & 15) * ld + 4 * (lane >> 4);
  b.x[0] = ld32(p);
  b.x[1] = ld32(p + 2);
#endif
  return b;
}

// B (16 x 16, k x n) from a k-major tile, as attention values are stored: B[k][n] = s[k * ld + n].
ZAYA_DEV FragB load_b_kn(const uint16_t* s, int ld, int lane) {
  FragB b;
#if ZAYA_WARP_SIZE == 32
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const uint16_t* p = s + 8 * h + g;
    b.x[2 * h] = pack(p[(2 * t) * ld], p[(2 * t + 1) * ld]);
    b.x[2 * h + 1] = pack(p[(2 * t + 8) * ld], p[(2 * t + 9) * ld]);
  }
#else
  const int k0 = 4 * (lane >> 4);
  const uint16_t* p = s + (lane & 15);
  b.x[0] = pack(p[k0 * ld], p[(k0 + 1) * ld]);
  b.x[1] = pack(p[(k0 + 2) * ld], p[(k0 + 3) * ld]);
#endif
  return b;
}

// A (16 x 16, m x k) from a k-major tile, as the token dimension of a weight gradient is stored (the
// reduction runs over the rows of both operands): A[m][k] = s[k * ld + m].
ZAYA_DEV FragA load_a_kn(const uint16_t* s, int ld, int lane) {
  FragA a;
#if ZAYA_WARP_SIZE == 32
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int reg = 0; reg < 4; ++reg) {
    const uint16_t* p = s + (2 * t + 8 * (reg >> 1)) * ld + g + 8 * (reg & 1);
    a.x[reg] = pack(p[0], p[ld]);
  }
#else
  const int k0 = 4 * (lane >> 4);
  const uint16_t* p = s + (lane & 15);
  a.x[0] = pack(p[k0 * ld], p[(k0 + 1) * ld]);
  a.x[1] = pack(p[(k0 + 2) * ld], p[(k0 + 3) * ld]);
#endif
  return a;
}

// ------------------------------------------------------------------------------------------------
// ldmatrix (CUDA sm_75+, and the 32-lane emulator): one warp-wide instruction loads N = 1, 2 or 4 8x8
// matrices of 16-bit elements from shared memory. Lane 8 * i + r supplies the address of row r of
// matrix i (a 16-byte aligned run of 8 elements; lanes >= 8 * N supply nothing); register i of lane l
// receives row l / 4, elements 2 * (l % 4) and + 1 of matrix i (low half first), or with kTrans its
// column l / 4, rows 2 * (l % 4) and + 1. (CuTe: SM75_U32x{1,2,4}_LDSM_N, SM75_U16x{2,4,8}_LDSM_T;
// tests/test_layouts.py checks the emulated instruction against them lane by lane.)
#if ZAYA_WARP_SIZE == 32
template <int N, bool kTrans>
ZAYA_DEV void ldmatrix(uint32_t (&r)[N], const uint16_t* row) {
  static_assert(N == 1 || N == 2 || N == 4, "ldmatrix: .x1, .x2 or .x4");
#if defined(ZAYA_EMU)
  const int lane = emu::lane_id();
  if (lane < 8 * N && (reinterpret_cast<uintptr_t>(row) & 15u) != 0)
    emu::fail("ldmatrix: the row address of lane " + std::to_string(lane) + " is not 16-byte aligned");
  std::memcpy(emu::lane_slot(lane), &row, sizeof row);
  emu::syncwarp();
  auto row_of = [](int src_lane) {  // the row address lane src_lane supplied
    const uint16_t* p;
    std::memcpy(&p, emu::lane_slot(src_lane), sizeof p);
    return p;
  };
  uint32_t v[N];
  for (int i = 0; i < N; ++i) {
    if constexpr (kTrans) {
      const int c = lane / 4, r0 = 2 * (lane % 4);
      v[i] = pack(row_of(8 * i + r0)[c], row_of(8 * i + r0 + 1)[c]);
    } else {
      const uint16_t* p = row_of(8 * i + lane / 4);
      v[i] = pack(p[2 * (lane % 4)], p[2 * (lane % 4) + 1]);
    }
  }
  emu::syncwarp();  // every lane has read the addresses before the slots are reused
  for (int i = 0; i < N; ++i) r[i] = v[i];
#elif defined(ZAYA_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
  const uint32_t a = vendor::smem_u32(row);
  if constexpr (N == 1 && !kTrans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(a));
  } else if constexpr (N == 1) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(a));
  } else if constexpr (N == 2 && !kTrans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(a));
  } else if constexpr (N == 2) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(a));
  } else if constexpr (!kTrans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
  }
#elif defined(__CUDA_ARCH__)
  (void)row;
  __trap();  // ldmatrix needs sm_75 (the matrix kernels are built for sm_80 and newer)
#else
  (void)r;
  (void)row;
#endif
}
#endif

// The fragment loaders of the version-2 kernels: kLdsm (32-lane warps only) loads each 16 x 16 operand
// with one ldmatrix.x4 (.trans for the k-major B) instead of eight 32-bit (load_a, load_b_nk) or sixteen
// 16-bit (load_b_kn) shared-memory loads; the registers are the same. Without kLdsm, or on CDNA (no
// ldmatrix), they are load_a / load_b_nk / load_b_kn. Rows must be 16-byte aligned (ld a multiple of 8).
// Which lane supplies which row: lane l gives row l % 16, column 8 * (l / 16) of A (matrices: rows 0-7 /
// 8-15 x cols 0-7, then x cols 8-15, the order of a.x[0..3]); of the n-major B, n-row 8 * (l / 16) + l % 8,
// k-column 8 * ((l / 8) % 2) (b.x[0..3] = (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, ...)); of the k-major
// B, k-row 8 * ((l / 8) % 2) + l % 8, n-column 8 * (l / 16), transposed.
#if ZAYA_WARP_SIZE == 32
template <class F, bool kTrans>
ZAYA_DEV F ldsm_x4(const uint16_t* row) {
  F f;
  ldmatrix<4, kTrans>(f.x, row);
  return f;
}
#endif
template <bool kLdsm>
ZAYA_DEV FragA load_a_v(const uint16_t* s, int ld, int lane) {
#if ZAYA_WARP_SIZE == 32
  if constexpr (kLdsm) return ldsm_x4<FragA, false>(s + (lane & 15) * ld + 8 * (lane >> 4));
#endif
  return load_a(s, ld, lane);
}
template <bool kLdsm>
ZAYA_DEV FragB load_b_nk_v(const uint16_t* s, int ld, int lane) {
#if ZAYA_WARP_SIZE == 32
  if constexpr (kLdsm) return ldsm_x4<FragB, false>(s + (8 * (lane >> 4) + (lane & 7)) * ld + 8 * ((lane >> 3) & 1));
#endif
  return load_b_nk(s, ld, lane);
}
// The k-major A (load_a_kn): lane l gives k-row 8 * (l / 16) + l % 8, m-column 8 * ((l / 8) % 2), transposed
// (matrices: m 0-7 / 8-15 x k 0-7, then x k 8-15, the order of a.x[0..3]).
template <bool kLdsm>
ZAYA_DEV FragA load_a_kn_v(const uint16_t* s, int ld, int lane) {
#if ZAYA_WARP_SIZE == 32
  if constexpr (kLdsm) return ldsm_x4<FragA, true>(s + (8 * (lane >> 4) + (lane & 7)) * ld + 8 * ((lane >> 3) & 1));
#endif
  return load_a_kn(s, ld, lane);
}
template <bool kLdsm>
ZAYA_DEV FragB load_b_kn_v(const uint16_t* s, int ld, int lane) {
#if ZAYA_WARP_SIZE == 32
  if constexpr (kLdsm) return ldsm_x4<FragB, true>(s + (8 * ((lane >> 3) & 1) + (lane & 7)) * ld + 8 * (lane >> 4));
#endif
  return load_b_kn(s, ld, lane);
}

// A (16 x 16, m x k) from a k-major tile, the transpose of a row-major one (weight gradients dY^T X with
// dY stored token-major): A[m][k] = s[k * ld + m]. It holds the values load_b_kn_v reads with n = m; on
// CUDA A's registers are B's n-halves and k-halves swapped ((m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7,
// k 8-15), ... against B's (n 0-7, k 0-7), (n 0-7, k 8-15), ...), on CDNA the two layouts coincide.
template <bool kLdsm>
ZAYA_DEV FragA load_a_km_v(const uint16_t* s, int ld, int lane) {
  const FragB b = load_b_kn_v<kLdsm>(s, ld, lane);
  FragA a;
#if ZAYA_WARP_SIZE == 32
  a.x[0] = b.x[0];
  a.x[1] = b.x[2];
  a.x[2] = b.x[1];
  a.x[3] = b.x[3];
#else
  a.x[0] = b.x[0];
  a.x[1] = b.x[1];
#endif
  return a;
}

#if defined(ZAYA_EMU)
namespace emu_detail {
// The hardware's view: which (row, col) of the 16x16 operand or accumulator register element e of
// lane l holds. CUDA: A/B/C as in the PTX ISA's m16n8k16 figures, B and C per n-half h.
struct Coord {
  int r, c;
};
inline Coord a_elem(int l, int e) {  // e = 2 * reg + half
#if ZAYA_WARP_SIZE == 32
  const int reg = e >> 1, half = e & 1;
  return {(l >> 2) + 8 * (reg & 1), 2 * (l & 3) + half + 8 * (reg >> 1)};
#else
  return {l % 16, 4 * (l / 16) + e};
#endif
}
inline Coord b_elem(int l, int e) {  // (k, n)
#if ZAYA_WARP_SIZE == 32
  const int reg = e >> 1, half = e & 1, nh = reg >> 1, kr = reg & 1;
  return {2 * (l & 3) + half + 8 * kr, (l >> 2) + 8 * nh};
#else
  return {4 * (l / 16) + e, l % 16};
#endif
}
inline Coord c_elem(int l, int e) {
#if ZAYA_WARP_SIZE == 32
  const int nh = e >> 2, i = e & 3;
  return {(l >> 2) + 8 * (i >> 1), 2 * (l & 3) + (i & 1) + 8 * nh};
#else
  return {4 * (l / 16) + e, l % 16};
#endif
}
struct LaneFrags {
  FragA a;
  FragB b;
  FragC c;
};
}  // namespace emu_detail
#endif

// c += A * B. D is dtype::BF16 or dtype::F16 (the operands' type).
template <class D>
ZAYA_DEV void mma(FragC& c, const FragA& a, const FragB& b) {
#if defined(ZAYA_EMU)
  using namespace emu_detail;
  constexpr int W = ZAYA_WARP_SIZE, nA = static_cast<int>(sizeof(FragA) / 2), nC = kAccum;
  static_assert(sizeof(LaneFrags) <= static_cast<size_t>(emu::kLaneScratch));
  const int lane = emu::lane_id();
  const LaneFrags mine{a, b, c};
  std::memcpy(emu::lane_slot(lane), &mine, sizeof mine);
  emu::syncwarp();
  // Lane 0 rebuilds the operands from every lane's registers and computes the product once.
  float* P = reinterpret_cast<float*>(emu::warp_buffer());  // [16][16] = A * B
  static_assert(16 * 16 * sizeof(float) <= static_cast<size_t>(emu::kWarpShared));
  if (lane == 0) {
    float A[16][16], B[16][16];
    for (int l = 0; l < W; ++l) {
      LaneFrags f;
      std::memcpy(&f, emu::lane_slot(l), sizeof f);
      uint16_t av[nA], bv[nA];
      std::memcpy(av, f.a.x, sizeof av);
      std::memcpy(bv, f.b.x, sizeof bv);
      for (int e = 0; e < nA; ++e) {
        const Coord pa = a_elem(l, e), pb = b_elem(l, e);
        A[pa.r][pa.c] = D::to_float(av[e]);
        B[pb.r][pb.c] = D::to_float(bv[e]);
      }
    }
    for (int r = 0; r < 16; ++r)
      for (int cc = 0; cc < 16; ++cc) {
        float acc = 0.f;
        for (int k = 0; k < 16; ++k) acc += A[r][k] * B[k][cc];
        P[r * 16 + cc] = acc;
      }
  }
  emu::syncwarp();
  FragC d = c;
  for (int e = 0; e < nC; ++e) {
    const Coord pc = c_elem(lane, e);
    d.x[e] = c.x[e] + P[pc.r * 16 + pc.c];
  }
  emu::syncwarp();
  c = d;
#elif defined(ZAYA_CUDA)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if constexpr (std::is_same_v<D, dtype::BF16>) {
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
          "{%0,%1,%2,%3};\n"
          : "+f"(c.x[4 * h]), "+f"(c.x[4 * h + 1]), "+f"(c.x[4 * h + 2]), "+f"(c.x[4 * h + 3])
          : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b.x[2 * h]), "r"(b.x[2 * h + 1]));
    } else {
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
          "{%0,%1,%2,%3};\n"
          : "+f"(c.x[4 * h]), "+f"(c.x[4 * h + 1]), "+f"(c.x[4 * h + 2]), "+f"(c.x[4 * h + 3])
          : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b.x[2 * h]), "r"(b.x[2 * h + 1]));
    }
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // the matrix kernels are built for sm_80 and newer only (mma.sync with bf16)
#endif
#elif defined(ZAYA_HIP)
#if defined(__HIP_DEVICE_COMPILE__)
  static_assert(ZAYA_WARP_SIZE == 64, "the MFMA paths need a 64-lane wavefront (CDNA)");
  typedef float v4f __attribute__((ext_vector_type(4)));
  v4f acc = {c.x[0], c.x[1], c.x[2], c.x[3]};
  if constexpr (std::is_same_v<D, dtype::BF16>) {
    typedef short v4s __attribute__((ext_vector_type(4)));
    acc = __builtin_amdgcn_mfma_f32_16x16x16bf16_1k(__builtin_bit_cast(v4s, a), __builtin_bit_cast(v4s, b),
                                                    acc, 0, 0, 0);
  } else {
    typedef _Float16 v4h __attribute__((ext_vector_type(4)));
    acc = __builtin_amdgcn_mfma_f32_16x16x16f16(__builtin_bit_cast(v4h, a), __builtin_bit_cast(v4h, b),
                                                acc, 0, 0, 0);
  }
  c.x[0] = acc[0];
  c.x[1] = acc[1];
  c.x[2] = acc[2];
  c.x[3] = acc[3];
#endif
#endif
}

}  // namespace zaya::mma
