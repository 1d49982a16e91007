// zaya::moe_top1 on GPUs (spec step 13; maths in zaya_ops.reference.moe_top1): top-1 SiLU-gated
// experts, one portable source for CUDA (mma.sync) and CDNA (MFMA) through mma.cuh.
//
// Three launches, no host synchronisation (capturable in a CUDA graph); decode (T <= 8) swaps the
// two matrix-tile kernels for weight-streaming ones (expert_gemv below), which on CUDA find their
// tokens themselves, so CUDA decode is two launches:
//   1. group: one block counts tokens per class (shared-memory atomics), writes class offsets, the
//      M-tile schedule of the local experts, and the token order (a counting sort; order within an
//      expert is arbitrary, which cannot change results: every output row depends on its own row only).
//   2. gate_up: a block owns 64 grouped tokens of one expert x 64 intermediate columns, accumulates
//      gate = x W_g^T and up = x W_u^T side by side (the 2I-wide product never reaches memory), and
//      writes act = round(round(SiLU(round(gate))) * round(up)) [rows, I], the reference's rounding.
//   3. down: a block owns 64 grouped tokens x 64 output columns, d = act W_d^T, and writes
//      out[token] = round(round(d) * w[token]) straight to the token's row (the scatter).
// Skip-class tokens and tokens of experts outside [expert_start, expert_end) are never computed; the
// caller zero-fills out. Blocks past the schedule's end exit at once: the grid is sized for the worst
// case (T / 64 + local experts M-tiles) because the real count is only known on the device.
//
// Tiles: BM = BN = 64, BK = 32, four warps in a 2 x 2 grid, each 32 x 32 (2 x 2 mma tiles; gate_up
// keeps gate and up accumulators: 8 tiles). Operands are staged through two shared-memory buffers with
// 16-byte asynchronous copies (cp.async on sm_80+, so the next k-step's copy overlaps this one's
// mma), rows padded by 8 elements (80-byte pitch) against bank conflicts. CUDA fragments come from
// ldmatrix.x4 (mma.cuh load_*_v<true>: 6 instructions per 16-wide k-step of gate_up instead of 24
// 32-bit loads), and the epilogue stages the rounded 64 x 64 tile in shared memory (over the free stage
// buffers) and writes each row's columns in 16-byte chunks (SASS: 5 STG.E.128 sites instead of 32
// STG.E.U16); ZAYA_KERNELS=v1 (runtime::kernels_v1, the bench's "v1" provider) selects the scalar loads
// and the 2-byte stores straight from the accumulators (CDNA keeps those too).
//
// Roofline (ZAYA1: H = 2048, I = 2048, E = 16, bf16). FLOPs per computed token: 2*H*2I + 2*I*H =
// 6*H*I = 25.2 MFLOP. Prefill T = 8192 (no skips): 206 GFLOP, ~0.21 ms at 989 dense bf16 TFLOP/s on
// H100; weights 16 * 3 * H * I * 2 B = 403 MB are read once per M-tile column of blocks (from L2 after
// the first), so the kernel is compute-bound. Decode: each hit expert's 3*H*I*2 = 25 MB of weights is
// read once for all of its tokens (n <= 64 fits one M-tile), so T = 1 is 25 MB: ~7.5 us at 3.35 TB/s.
// This portable version has a two-stage cp.async pipeline; Hopper's wgmma + TMA kernels (opt-in,
// ZAYA_WGMMA=1) are in moe_top1_sm90.cuh. See the README for what a GPU run has to measure.
//
// HIP (check_hip.sh, gfx940 / gfx90a): see the numbers in hip/moe_top1.hip's header. CUDA (ptxas -v,
// sm_80 / sm_90a): no spills; gate_up tile 136-141 registers and 30,976 B shared, down tile 95-96 and
// 20,768 B (nvcc 13 sm_90a, both versions: 140 / 141 and 96), gemv 75-132. __launch_bounds__(threads, 1): without the 1, ptxas capped some kernels at
// 32-72 registers and spilled.
#pragma once

#include <cmath>

#include "mma.cuh"
#include "moe_top1_launch.h"
#include "vendor.h"

namespace zaya::kernels::moe {

using vendor::kWarpSize;

inline constexpr int kBM = 64, kBN = 64, kBK = 32, kPitch = kBK + 8;
// Shared-memory buffers per operand tile (gate_up: 15 KB each). Two on CUDA, where cp.async overlaps
// the next copy with this mma; one on CDNA, where copies are synchronous (copy_async16) and a second
// buffer would only halve occupancy. The emulator runs both: emu32 two, emu64 one.
inline constexpr int kStages = ZAYA_WARP_SIZE == 64 ? 1 : 2;
inline constexpr int kWarps = 4;
inline constexpr int kThreads = kWarps * ZAYA_WARP_SIZE;
inline constexpr int kGroupThreads = 512;

struct Workspace {
  int32_t* offsets;     // [E + 2]: class c's tokens are order[offsets[c] .. offsets[c + 1])
  int32_t* tile_start;  // [local + 1]: M-tiles of local expert lo + j start at tile_start[j]
  int32_t* order;       // [T]
};

ZAYA_DEV Workspace workspace(const MoeTop1Args& a) {
  return {a.workspace, a.workspace + (a.E + 2), a.workspace + 2 * (a.E + 2)};
}

// The M-tile of schedule entry g (blockIdx.x of the matrix kernels) for tiles of kTileRows grouped
// rows: its expert, its first grouped row and how many rows it has; expert = -1 past the schedule's end.
struct MTile {
  int expert, row0, rows;
};

template <int kTileRows>
ZAYA_DEV MTile m_tile(const MoeTop1Args& a, const Workspace& ws, int g) {
  const int lo = static_cast<int>(a.expert_start), local = static_cast<int>(a.expert_end) - lo;
  if (g >= ws.tile_start[local]) return {-1, 0, 0};
  int j = 0;
  while (ws.tile_start[j + 1] <= g) ++j;
  const int e = lo + j;
  const int row0 = ws.offsets[e] + (g - ws.tile_start[j]) * kTileRows;
  const int left = ws.offsets[e + 1] - row0;
  return {e, row0, left < kTileRows ? left : kTileRows};
}

ZAYA_DEV int class_of(const MoeTop1Args& a, int64_t t) {
  const int64_t e = a.index_int64 ? static_cast<const int64_t*>(a.expert_index)[t]
                                  : static_cast<const int32_t*>(a.expert_index)[t];
  return (e < 0 || e > a.E) ? static_cast<int>(a.E) : static_cast<int>(e);
}

// kTileRows: rows of the M-tiles of the matrix kernel that follows (kBM, or the Hopper kernel's).
template <int kTileRows>
__global__ void __launch_bounds__(kGroupThreads) group_tokens(MoeTop1Args a) {
  __shared__ int count[kMoeMaxExperts + 1];
  __shared__ int cursor[kMoeMaxExperts + 1];
  const Workspace ws = workspace(a);
  const int tid = static_cast<int>(threadIdx.x), nt = static_cast<int>(blockDim.x);
  const int E = static_cast<int>(a.E);
  for (int c = tid; c <= E; c += nt) count[c] = 0;
  __syncthreads();
  for (int64_t t = tid; t < a.T; t += nt) vendor::atomic_add(&count[class_of(a, t)], 1);
  __syncthreads();
  if (tid == 0) {
    int off = 0;
    for (int c = 0; c <= E; ++c) {
      ws.offsets[c] = off;
      cursor[c] = off;
      off += count[c];
    }
    ws.offsets[E + 1] = off;
    int tiles = 0;
    const int lo = static_cast<int>(a.expert_start), hi = static_cast<int>(a.expert_end);
    for (int e = lo; e < hi; ++e) {
      ws.tile_start[e - lo] = tiles;
      tiles += (count[e] + kTileRows - 1) / kTileRows;
    }
    ws.tile_start[hi - lo] = tiles;
  }
  __syncthreads();
  for (int64_t t = tid; t < a.T; t += nt) {
    const int pos = vendor::atomic_add(&cursor[class_of(a, t)], 1);
    ws.order[pos] = static_cast<int32_t>(t);
  }
}

ZAYA_DEV float silu(float x) { return vendor::fdiv(x, vendor::fadd(1.0f, expf(-x))); }

// ------------------------------------------------------------------------------------------------
// Tile machinery shared by the matrix kernels here and the backward's (moe_top1_backward.cuh): a
// 64 x 64 output tile per block, four warps in a 2 x 2 grid of 32 x 32 blocks, k-steps of kBK.
// Operand tiles in shared memory are either m/n-major ([64 rows][kPitch], k contiguous: gathered token
// rows, nn.Linear weight rows) or k-major ([kBK k-rows][kPitchKn], the 64 m/n columns contiguous:
// a weight read along its rows' other dimension, or the token dimension of a weight gradient).
// ------------------------------------------------------------------------------------------------
inline constexpr int kPitchKn = kBN + 8;  // 144-byte k-major rows: 16-byte aligned, off the banks' period
// The version-2 epilogue's staged output tile: [kBM][kOutPitch], 144-byte rows (16-byte aligned; the
// 32-bit stores of a warp's accumulator pairs fall on 32 distinct banks).
inline constexpr int kOutPitch = kBN + 8;
inline constexpr int kTileElems = kBM * kPitch > kBK * kPitchKn ? kBM * kPitch : kBK * kPitchKn;

// The k-loop: issue(kt) stages k-step kt's operand tiles into buffer kt % kNStages (16-byte copies,
// vendor::copy_async16), compute(st) multiplies buffer st. While the warps multiply step kt, the copies
// of the next kNStages - 1 steps are in flight (cp.async on sm_80+; synchronous copies on CDNA and in
// the emulator). Returns with every warp past its last compute only after the caller's next barrier.
template <int kNStages, class Issue, class Compute>
ZAYA_DEV void k_pipeline(int64_t ksteps, Issue&& issue, Compute&& compute) {
#pragma unroll
  for (int s = 0; s < kNStages - 1; ++s) {
    if (s < ksteps) issue(s);
    vendor::copy_async_commit();  // one group per stage, empty or not, so the wait count stays fixed
  }
  for (int64_t kt = 0; kt < ksteps; ++kt) {
    if constexpr (kNStages == 1) {
      __syncthreads();  // everyone is done with the previous k-step's tiles
      issue(kt);
      vendor::copy_async_commit();
      vendor::copy_async_wait<0>();
      __syncthreads();
    } else {
      vendor::copy_async_wait<kNStages - 2>();  // this thread's copies of stage kt have landed
      __syncthreads();                           // ... and everyone's; stage kt - 1 is free again
      if (kt + kNStages - 1 < ksteps) issue(kt + kNStages - 1);
      vendor::copy_async_commit();
    }
    compute(static_cast<int>(kt % kNStages));
  }
}

// One kBK-deep step of this warp's 32 x 32 block: acc[b][i][j] += A(rows wm + 16 i) * B_b(columns
// wn + 16 j) for the kNB B tiles (sB0, then sB1), which share A's fragments. kAKn / kBKn: the A / B
// tiles are k-major (else m/n-major). The mma order per accumulator is fixed by k alone.
template <class D, bool kAKn, bool kBKn, bool kLdsm, int kNB>
ZAYA_DEV void warp_step(mma::FragC (&acc)[kNB][2][2], const uint16_t* sA, const uint16_t* sB0, const uint16_t* sB1,
                        int wm, int wn, int lane) {
#pragma unroll
  for (int ks = 0; ks < kBK; ks += 16) {
    mma::FragA fa[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      if constexpr (kAKn) {
        fa[i] = mma::load_a_kn_v<kLdsm>(sA + ks * kPitchKn + wm + 16 * i, kPitchKn, lane);
      } else {
        fa[i] = mma::load_a_v<kLdsm>(sA + (wm + 16 * i) * kPitch + ks, kPitch, lane);
      }
    }
#pragma unroll
    for (int jj = 0; jj < 2; ++jj) {
#pragma unroll
      for (int b = 0; b < kNB; ++b) {
        const uint16_t* sB = b == 0 ? sB0 : sB1;
        mma::FragB fb;
        if constexpr (kBKn) {
          fb = mma::load_b_kn_v<kLdsm>(sB + ks * kPitchKn + wn + 16 * jj, kPitchKn, lane);
        } else {
          fb = mma::load_b_nk_v<kLdsm>(sB + (wn + 16 * jj) * kPitch + ks, kPitch, lane);
        }
#pragma unroll
        for (int i = 0; i < 2; ++i) mma::mma<D>(acc[b][i][jj], fa[i], fb);
      }
    }
  }
}

// kGateUp: phase 2 (A = gathered x rows, B = gate and up rows of gate_up[e], writes act);
// otherwise phase 3 (A = act rows, B = down[e], writes out). blockIdx.x: M-tile in the schedule,
// blockIdx.y: N-tile.
template <class D, bool kGateUp, bool kLdsm>
__global__ void __launch_bounds__(kThreads, 1) expert_gemm(MoeTop1Args a) {
  struct alignas(16) Tiles {  // kStages buffers of each operand tile; 16-byte copies into them
    uint16_t a[kStages][kBM * kPitch], b0[kStages][kBN * kPitch], b1[kStages][kGateUp ? kBN * kPitch : 8];
    int32_t tok[kBM];
  };
  __shared__ Tiles sm;
  int32_t* const tok = sm.tok;

  const Workspace ws = workspace(a);
  const MTile tile = m_tile<kBM>(a, ws, static_cast<int>(blockIdx.x));
  if (tile.expert < 0) return;  // the whole block: past the schedule's end
  const int e = tile.expert, row0 = tile.row0, rows = tile.rows;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kBN;
  const int64_t H = a.H, I = a.I;
  const int64_t N = kGateUp ? I : H, K = kGateUp ? H : I;

  const int tid = static_cast<int>(threadIdx.x);
  for (int r = tid; r < kBM; r += kThreads) tok[r] = r < rows ? ws.order[row0 + r] : -1;
  __syncthreads();

  const uint16_t* x = static_cast<const uint16_t*>(a.x);
  uint16_t* act = static_cast<uint16_t*>(a.act);
  const uint16_t* w0;  // B rows n of this expert: gate (phase 2) or down (phase 3)
  const uint16_t* w1;  // up rows (phase 2)
  if constexpr (kGateUp) {
    w0 = static_cast<const uint16_t*>(a.gate_up) + static_cast<int64_t>(e) * 2 * I * H;
    w1 = w0 + I * H;
  } else {
    w0 = static_cast<const uint16_t*>(a.down) + static_cast<int64_t>(e) * H * I;
    w1 = w0;
  }

  const int warp = tid / kWarpSize, lane = vendor::lane_id();
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
  constexpr int kNB = kGateUp ? 2 : 1;  // gate_up: gate and up accumulators side by side
  mma::FragC acc[kNB][2][2];
#pragma unroll
  for (int b = 0; b < kNB; ++b)
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int jj = 0; jj < 2; ++jj) mma::zero(acc[b][i][jj]);

  constexpr int kChunks = kBM * kBK / 8;  // 16-byte chunks per tile (kBM == kBN)
  auto issue = [&](int64_t kt) {
    const int st = static_cast<int>(kt % kStages);
    for (int c = tid; c < kChunks; c += kThreads) {
      const int r = c / (kBK / 8), kc = (c % (kBK / 8)) * 8;
      const int64_t k = kt * kBK + kc;
      const int t = tok[r];
      const uint16_t* arow = kGateUp ? x + static_cast<int64_t>(t < 0 ? 0 : t) * a.x_row_stride
                                     : act + static_cast<int64_t>(row0 + (t < 0 ? 0 : r)) * I;
      vendor::copy_async16(sm.a[st] + r * kPitch + kc, arow + (k < K ? k : 0), t >= 0 && k < K);
      const int64_t n = n0 + r;
      const bool bok = n < N && k < K;
      const int64_t boff = bok ? n * K + k : 0;
      vendor::copy_async16(sm.b0[st] + r * kPitch + kc, w0 + boff, bok);
      if constexpr (kGateUp) vendor::copy_async16(sm.b1[st] + r * kPitch + kc, w1 + boff, bok);
    }
  };
  k_pipeline<kStages>((K + kBK - 1) / kBK, issue, [&](int st) {
    warp_step<D, false, false, kLdsm, kNB>(acc, sm.a[st], sm.b0[st], sm.b1[st], wm, wn, lane);
  });

  // Epilogue: the reference's rounding points, in D.
  const auto* ew = static_cast<const typename D::storage*>(a.expert_weight);
  auto* out = static_cast<typename D::storage*>(a.out);
  // The value stored for one accumulator: gate_up from its gate and up sums, down from its sum and the
  // row's routing weight w.
  auto value = [&](float gate_or_d, float up, float w) -> uint16_t {
    if constexpr (kGateUp) {
      return D::from_float(vendor::fmul(D::round(silu(D::round(gate_or_d))), D::round(up)));
    } else {
      return D::from_float(vendor::fmul(D::round(gate_or_d), w));
    }
  };
  if constexpr (kLdsm) {
    // Version 2: the rounded tile is staged in shared memory over the (now free) operand buffers, then
    // written out in 16-byte chunks: a row's 64 columns are contiguous in act (row row0 + r) and in
    // out (row tok[r]). N, H and I are multiples of 8, so a row's columns end on a whole chunk; rows
    // past `rows` and chunks past N are skipped.
    static_assert(!kLdsm || kBM * kOutPitch <= kStages * kBM * kPitch, "the output tile must fit over the A buffers");
    static_assert(!kLdsm || ZAYA_WARP_SIZE == 32, "ldmatrix kernels: mma.sync accumulators (q, q + 1 adjacent)");
    uint16_t* const so = &sm.a[0][0];
    __syncthreads();  // every warp is past its last warp_step: nobody reads the stage buffers any more
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int jj = 0; jj < 2; ++jj)
#pragma unroll
        for (int q = 0; q < mma::kAccum; q += 2) {  // accumulators q, q + 1: columns c, c + 1 of row r
          const int r = wm + 16 * i + mma::c_row(lane, q), c = wn + 16 * jj + mma::c_col(lane, q);
          float w = 0.f;
          if constexpr (!kGateUp) w = r < rows ? D::to_float(ew[tok[r]]) : 0.f;
          const auto& g = acc[0][i][jj].x;
          const auto& u = acc[kNB - 1][i][jj].x;
          *reinterpret_cast<uint32_t*>(so + r * kOutPitch + c) =
              mma::pack(value(g[q], u[q], w), value(g[q + 1], u[q + 1], w));
        }
    __syncthreads();
    constexpr int kRowChunks = kBN / 8;
    for (int c = tid; c < kBM * kRowChunks; c += kThreads) {
      const int r = c / kRowChunks, n = (c % kRowChunks) * 8;
      if (r >= rows || n0 + n >= N) continue;
      const uint4 v = *reinterpret_cast<const uint4*>(so + r * kOutPitch + n);
      uint16_t* dst = kGateUp ? act + static_cast<int64_t>(row0 + r) * I + n0 + n
                              : reinterpret_cast<uint16_t*>(out) + static_cast<int64_t>(tok[r]) * H + n0 + n;
      *reinterpret_cast<uint4*>(dst) = v;
    }
  } else {
    // Version 1 (and CDNA): each accumulator straight to global memory, 2 bytes at a time.
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int jj = 0; jj < 2; ++jj)
#pragma unroll
        for (int q = 0; q < mma::kAccum; ++q) {
          const int r = wm + 16 * i + mma::c_row(lane, q);
          const int64_t n = n0 + wn + 16 * jj + mma::c_col(lane, q);
          if (r >= rows || n >= N) continue;
          if constexpr (kGateUp) {
            act[static_cast<int64_t>(row0 + r) * I + n] = value(acc[0][i][jj].x[q], acc[kNB - 1][i][jj].x[q], 0.f);
          } else {
            const int64_t t = tok[r];
            out[t * H + n] = value(acc[0][i][jj].x[q], 0.f, D::to_float(ew[t]));
          }
        }
  }
}

// ------------------------------------------------------------------------------------------------
// Decode (T <= kGemvTokens): every expert has at most that many tokens, too few rows for a matrix
// tile. A block of kWarps warps owns kGemvCols output columns of one expert; each warp streams its
// columns' weight rows once with 16-byte loads, dots them with all of the expert's token rows (read
// from L1/L2: they are tiny), and reduces over the warp. Grid: column blocks x local experts, so T = 1
// on ZAYA1 spreads 2048 / 16 = 128 blocks over the GPU in each phase.
// ------------------------------------------------------------------------------------------------
inline constexpr int kGemvTokens = 8;
inline constexpr int kGemvColsPerWarp = 4;
inline constexpr int kGemvCols = kWarps * kGemvColsPerWarp;

template <class D>
ZAYA_DEV void fma2(float* acc, uint32_t w, uint32_t x) {
  *acc += D::to_float(static_cast<uint16_t>(w & 0xffffu)) * D::to_float(static_cast<uint16_t>(x & 0xffffu));
  *acc += D::to_float(static_cast<uint16_t>(w >> 16)) * D::to_float(static_cast<uint16_t>(x >> 16));
}

template <class D>
ZAYA_DEV void fma8(float* acc, const uint4& w, const uint4& x) {
  fma2<D>(acc, w.x, x.x);
  fma2<D>(acc, w.y, x.y);
  fma2<D>(acc, w.z, x.z);
  fma2<D>(acc, w.w, x.w);
}

ZAYA_DEV float warp_sum(float v) {
  for (int off = kWarpSize / 2; off > 0; off >>= 1) v += vendor::shfl_xor(v, off);
  return v;  // the same bits in every lane
}

// kGateUp: columns j of I, act[row] = round(round(SiLU(round(x.Wg[j]))) * round(x.Wu[j])); otherwise
// columns j of H, out[token][j] = round(round(act.Wd[j]) * w[token]).
template <class D, bool kGateUp>
__global__ void __launch_bounds__(kThreads, 1) expert_gemv(MoeTop1Args a) {
  // This expert's tokens (n <= kGemvTokens); act rows are indexed by token. CUDA: found by a scan of
  // the T <= kGemvTokens indices, so decode needs no grouping launch. CDNA: from group_tokens' order
  // (the scan made hip-clang spill scalar registers).
  const int e = static_cast<int>(a.expert_start) + static_cast<int>(blockIdx.y);
#if ZAYA_WARP_SIZE == 32
  __shared__ int mine[kGemvTokens];
  __shared__ int tok_list[kGemvTokens];
  const int tid = static_cast<int>(threadIdx.x);
  if (tid < kGemvTokens) mine[tid] = tid < a.T && class_of(a, tid) == e;
  __syncthreads();
  int n = 0;
#pragma unroll
  for (int t = 0; t < kGemvTokens; ++t) {
    if (mine[t]) {
      if (tid == 0) tok_list[n] = t;
      ++n;
    }
  }
  __syncthreads();
  auto token = [&](int t) -> int64_t { return tok_list[t]; };
#else
  const Workspace ws = workspace(a);
  const int first = ws.offsets[e], n = ws.offsets[e + 1] - first;
  auto token = [&](int t) -> int64_t { return ws.order[first + t]; };
#endif
  if (n == 0) return;  // the whole block
  const int64_t H = a.H, I = a.I, N = kGateUp ? I : H, K = kGateUp ? H : I;
  const uint16_t* x = static_cast<const uint16_t*>(a.x);
  uint16_t* act = static_cast<uint16_t*>(a.act);
  const uint16_t* w0 = kGateUp ? static_cast<const uint16_t*>(a.gate_up) + static_cast<int64_t>(e) * 2 * I * H
                               : static_cast<const uint16_t*>(a.down) + static_cast<int64_t>(e) * H * I;
  const auto* ew = static_cast<const typename D::storage*>(a.expert_weight);
  auto* out = static_cast<typename D::storage*>(a.out);
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize, lane = vendor::lane_id();

  for (int cc = 0; cc < kGemvColsPerWarp; ++cc) {
    const int64_t j = static_cast<int64_t>(blockIdx.x) * kGemvCols + warp * kGemvColsPerWarp + cc;
    if (j >= N) return;  // uniform over the warp; later columns are larger
    float acc0[kGemvTokens] = {}, acc1[kGemvTokens] = {};
    const uint16_t* r0 = w0 + j * K;
    const uint16_t* r1 = w0 + (I + j) * K;  // up row (gate_up only)
    for (int64_t k = static_cast<int64_t>(lane) * 8; k < K; k += static_cast<int64_t>(kWarpSize) * 8) {
      const uint4 wa = *reinterpret_cast<const uint4*>(r0 + k);
      uint4 wb{0u, 0u, 0u, 0u};
      if constexpr (kGateUp) wb = *reinterpret_cast<const uint4*>(r1 + k);
#pragma unroll
      for (int t = 0; t < kGemvTokens; ++t) {  // predicated, not broken out of: keeps acc in registers
        if (t < n) {
          const int64_t tok = token(t);
          const uint16_t* src = kGateUp ? x + tok * a.x_row_stride : act + tok * I;
          const uint4 xv = *reinterpret_cast<const uint4*>(src + k);
          fma8<D>(&acc0[t], wa, xv);
          if constexpr (kGateUp) fma8<D>(&acc1[t], wb, xv);
        }
      }
    }
#pragma unroll
    for (int t = 0; t < kGemvTokens; ++t) {
      if (t < n) {  // n is uniform over the block: every lane takes part in the sums
        const float s0 = warp_sum(acc0[t]);
        const float s1 = kGateUp ? warp_sum(acc1[t]) : 0.f;
        const int64_t tok = token(t);
        if (lane == 0) {
          if constexpr (kGateUp) {
            act[tok * I + j] = D::from_float(vendor::fmul(D::round(silu(D::round(s0))), D::round(s1)));
          } else {
            out[tok * H + j] = D::from_float(vendor::fmul(D::round(s0), D::to_float(ew[tok])));
          }
        }
      }
    }
  }
}

}  // namespace zaya::kernels::moe

#include "moe_top1_sm90.cuh"

namespace zaya::kernels::moe {

inline const char* launch_moe_top1_impl(const MoeTop1Args& a, vendor::stream_t stream) {
  if (a.T == 0 || a.expert_start == a.expert_end) return nullptr;
  if (a.dtype != DType::BF16 && a.dtype != DType::F16) return "zaya moe_top1: GPU kernels take bf16 or fp16";
  if (a.H % 8 != 0 || a.I % 8 != 0) return "zaya moe_top1: H and I must be multiples of 8";
  if (a.E < 1 || a.E > kMoeMaxExperts) return "zaya moe_top1: unsupported number of experts";
  if (a.T > int64_t{0x7fffffff} - kBM * (a.E + 1)) return "zaya moe_top1: too many tokens for one call";
  int dev = 0, warp = 0;
  if (const char* err = vendor::current_device("moe_top1", &dev, &warp)) return err;

  const int64_t m_tiles = (a.T + kBM - 1) / kBM + (a.expert_end - a.expert_start);
#if defined(ZAYA_HAVE_WGMMA_SOURCE)
  if (a.T > kGemvTokens && wgmma::hopper_paths_enabled(dev)) return launch_sm90(a, stream);
#endif
  if (a.T > kGemvTokens || ZAYA_WARP_SIZE != 32) {  // CUDA decode: expert_gemv scans the indices itself
    if (const char* err = vendor::launch(&group_tokens<kBM>, dim3(1), dim3(kGroupThreads), 0, stream, a)) return err;
  }
  const dim3 block(static_cast<unsigned>(kWarps * warp));  // = kThreads, from the device's wave size
  const dim3 grid_gu(static_cast<unsigned>(m_tiles), static_cast<unsigned>((a.I + kBN - 1) / kBN));
  const dim3 grid_dn(static_cast<unsigned>(m_tiles), static_cast<unsigned>((a.H + kBN - 1) / kBN));
  const unsigned local = static_cast<unsigned>(a.expert_end - a.expert_start);
  const dim3 gemv_gu(static_cast<unsigned>((a.I + kGemvCols - 1) / kGemvCols), local);
  const dim3 gemv_dn(static_cast<unsigned>((a.H + kGemvCols - 1) / kGemvCols), local);
  auto run = [&](auto tag) -> const char* {
    using D = decltype(tag);
    if (a.T <= kGemvTokens) {
      if (const char* err = vendor::launch(&expert_gemv<D, true>, gemv_gu, block, 0, stream, a)) return err;
      return vendor::launch(&expert_gemv<D, false>, gemv_dn, block, 0, stream, a);
    }
    auto gemm = [&](auto ldsm) -> const char* {
      constexpr bool kLdsm = decltype(ldsm)::value;
      if (const char* err = vendor::launch(&expert_gemm<D, true, kLdsm>, grid_gu, block, 0, stream, a)) return err;
      return vendor::launch(&expert_gemm<D, false, kLdsm>, grid_dn, block, 0, stream, a);
    };
#if ZAYA_WARP_SIZE == 32
    if (!runtime::kernels_v1()) return gemm(std::true_type{});  // ldmatrix fragments (version 2)
#endif
    return gemm(std::false_type{});
  };
  return a.dtype == DType::BF16 ? run(dtype::BF16{}) : run(dtype::F16{});
}

}  // namespace zaya::kernels::moe
