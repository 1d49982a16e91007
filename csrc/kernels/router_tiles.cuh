// Tile machinery of the router kernels, shared by the forward (router.cuh) and the backward
// (router_backward.cuh): the block configurations, staging of 16-bit tiles into shared memory, the
// block-wide GEMM over mma.cuh fragments, the accumulator walk, GELU, and the down projection with
// its epilogue (rho = round(x down^T + b) (+ round(prev * scale))). See router.cuh for the tiling.
#pragma once

#include <cmath>
#include <cstdint>

#include "mma.cuh"
#include "router_launch.h"
#include "vendor.h"

namespace zaya::kernels::router {

using vendor::fadd;
using vendor::fmul;
using vendor::kWarpSize;

inline constexpr int kWarps = 8;  // warps per block (256 threads on CUDA, 512 on CDNA)
inline constexpr int kPad = 8;    // shared-tile row padding (elements), against bank conflicts
inline constexpr int kMlpK = 16;  // K chunk of the streamed fc1 / fc2 / out weights
inline constexpr int kTieScratch = 64;  // classes below which ties need the introselect port

// A block configuration: BT tokens, width W (R and E+1 padded up to it), down-phase K chunk KD, and
// ST buffers for the streamed chunks (ST = 2: cp.async double buffering on CUDA). ST = 1: static
// shared memory (<= 48 KiB); ST = 2: dynamic (kBytes; the launch opts in above 48 KiB).
template <int BT, int W, int KD, int ST = 1>
struct Cfg {
  static constexpr int kTokens = BT;
  static constexpr int kWidth = W;
  static constexpr int kDownK = KD;
  static constexpr int kStages = ST;            // chunk buffers
  static constexpr bool kDynamic = ST > 1;      // shared memory: dynamic (else a static array)
  static constexpr int kMT = BT / 16;           // m tiles, all owned by every warp
  static constexpr int kNT = W / 16 / kWarps;   // n tiles per warp: w, w + kWarps, ...
  static constexpr int kHld = W + kPad;         // ld of hs [BT, W]
  static constexpr int kXElems = BT * (KD + kPad);      // one x chunk [BT, KD]
  static constexpr int kWdElems = W * (KD + kPad);      // one down_weight chunk [W, KD]
  static constexpr int kWsElems = W * (kMlpK + kPad);   // one MLP weight chunk [W, kMlpK]
  static constexpr int kDownElems = ST * (kXElems + kWdElems);
  static constexpr int kMlpElems = BT * kHld + ST * kWsElems;
  static constexpr int kElems = kDownElems > kMlpElems ? kDownElems : kMlpElems;
  static constexpr int kBytes = kElems * 2;  // the tiles (the kernels add BT ints or floats)
  static_assert(BT % 16 == 0 && W % (16 * kWarps) == 0 && KD % 16 == 0 && (ST == 1 || ST == 2));
  static_assert(kDynamic || kBytes + BT * 4 <= 48 * 1024, "static shared memory is limited to 48 KiB");
  static_assert(kWarps * kTieScratch * 8 <= kWsElems * 2, "tie scratch must fit the weight tile");
};
// Version 1 (ZAYA_KERNELS=v1; the backward's kernels): single-buffered, static shared memory.
using Big = Cfg<64, 256, 64>;
using Small = Cfg<16, 512, 32>;
static_assert(Small::kWidth == kRouterMaxWidth);
// Version 2, the forward's default: Big2 when max(R, E+1) <= 256 and its blocks fill the device,
// else Small2, else (wider than Small2) Wide2.
//   CUDA: x / down_weight chunks of KD = 32 and the MLP weights' 16-column chunks double-buffered
//   through cp.async, dynamic shared memory (Big2 58,368 B, Small2 = Wide2 84,480 B).
//   CDNA (copies are synchronous there: a second buffer would only cost LDS): <= 32 KiB of LDS, so two
//   512-thread workgroups fit a 64 KiB CU. Big2 at 32 tokens (hs [64, 264] alone would be 33 KiB),
//   Small2 256 wide; a router wider than 256 (ZAYA1's is 256) keeps version 1's 42 KiB Small.
#if ZAYA_WARP_SIZE == 32
using Big2 = Cfg<64, 256, 32, 2>;
using Small2 = Cfg<16, 512, 32, 2>;
using Wide2 = Small2;
#else
using Big2 = Cfg<32, 256, 32>;
using Small2 = Cfg<16, 256, 32>;
using Wide2 = Small;
static_assert(Big2::kBytes + Big2::kTokens * 4 <= 32 * 1024 && Small2::kBytes + Small2::kTokens * 4 <= 32 * 1024,
              "two workgroups per 64 KiB CU");
#endif
static_assert(Big2::kWidth == 256 && Wide2::kWidth == kRouterMaxWidth);

// The tile regions of a configuration in a block's shared memory (smem: C::kBytes, 16-byte aligned). The
// down phase (x and down_weight chunks) and the MLP phase (hs and the weight chunks) overlap.
template <class C>
struct Tiles {
  uint16_t* hs;   // MLP phase: activations [BT, W], ld kHld
  uint16_t* ws;   // MLP phase: weight chunk buffers [W, kMlpK], kWsElems apart
  uint16_t* xs;   // down phase: x chunk buffers [BT, KD], kXElems apart
  uint16_t* wds;  // down phase: down_weight chunk buffers [W, KD], kWdElems apart
  ZAYA_DEV explicit Tiles(uint16_t* smem)
      : hs(smem), ws(smem + C::kTokens * C::kHld), xs(smem), wds(smem + C::kStages * C::kXElems) {}
};

// The launchers' cheap re-checks of the contract (router_launch.h, router_backward_launch.h), shared by
// the forward and the backward: nullptr or the op's static message; *width = max(R, E+1) rounded to 16.
struct ArgMessages {
  const char* dtype;
  const char* dims;
  const char* width;
  const char* hidden;
};

template <class Args>
inline const char* check_args(const Args& a, const ArgMessages& m, int64_t* width) {
  if (a.dtype == DType::F32) return m.dtype;
  if (a.router_dim < 1 || a.classes < 2 || a.hidden < 0 || a.tokens < 0) return m.dims;
  *width = (static_cast<int64_t>(a.router_dim > a.classes ? a.router_dim : a.classes) + 15) / 16 * 16;
  if (*width > kRouterMaxWidth) return m.width;
  if (a.hidden > INT32_MAX) return m.hidden;
  return nullptr;
}

// A row-major 16-bit matrix in global memory: rows x (its K) elements, row stride ld.
struct Mat {
  const uint16_t* p;
  int64_t ld;
  int64_t rows;
};

// Stages columns [k0, k0 + KC) of rows [0, rows) of g into the shared tile s (ld KC + kPad), with
// zeros past g.rows and past column K. 16-byte loads where the chunk is whole and aligned: kAsync,
// vendor::copy_async16 (cp.async on sm_80+: complete after copy_async_commit / copy_async_wait and a
// barrier), else plain loads and stores.
template <int KC, bool kAsync = false>
ZAYA_DEV void stage(uint16_t* s, const Mat& g, int rows, int k0, int K) {
  constexpr int kChunks = KC / 8;
  const bool vec = reinterpret_cast<uintptr_t>(g.p) % 16 == 0 && g.ld % 8 == 0;
  const int total = rows * kChunks;
  for (int c = static_cast<int>(threadIdx.x); c < total; c += static_cast<int>(blockDim.x)) {
    const int r = c / kChunks, k = k0 + (c % kChunks) * 8;
    uint16_t* d = s + r * (KC + kPad) + (c % kChunks) * 8;
    const bool in = r < g.rows;
    const uint16_t* src = g.p + (in ? r * g.ld + k : 0);
    if (in && vec && k + 8 <= K) {
      if constexpr (kAsync) {
        vendor::copy_async16(d, src, true);
      } else {
        *reinterpret_cast<uint4*>(d) = *reinterpret_cast<const uint4*>(src);
      }
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) d[e] = in && k + e < K ? src[e] : uint16_t{0};
    }
  }
}

template <class C>
using Acc = mma::FragC[C::kMT][C::kNT];

template <class C>
ZAYA_DEV void zero(Acc<C>& acc) {
#pragma unroll
  for (int mi = 0; mi < C::kMT; ++mi)
#pragma unroll
    for (int j = 0; j < C::kNT; ++j) mma::zero(acc[mi][j]);
}

// The MMAs of one staged chunk (kend <= KC columns, the weight rows at ws, ld KC + kPad): A from a
// (ld a_ld) at column a_k.
template <class D, class C, int KC, bool kLdsm>
ZAYA_DEV void chunk_mma(Acc<C>& acc, int n_tiles, int kend, const uint16_t* a, int a_ld, int a_k, const uint16_t* ws) {
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize, lane = vendor::lane_id();
  for (int kk = 0; kk < kend; kk += 16) {
    mma::FragA af[C::kMT];
#pragma unroll
    for (int mi = 0; mi < C::kMT; ++mi) af[mi] = mma::load_a_v<kLdsm>(a + mi * 16 * a_ld + a_k + kk, a_ld, lane);
#pragma unroll
    for (int j = 0; j < C::kNT; ++j) {
      const int nt = warp + kWarps * j;
      if (nt >= n_tiles) continue;  // warp-uniform: the whole warp skips its MMAs
      const mma::FragB b = mma::load_b_nk_v<kLdsm>(ws + nt * 16 * (KC + kPad) + kk, KC + kPad, lane);
#pragma unroll
      for (int mi = 0; mi < C::kMT; ++mi) mma::mma<D>(acc[mi][j], af[mi], b);
    }
  }
}

// acc += A [BT, K] x B^T, B = w [n_tiles * 16 rows, K] streamed through ws in chunks of KC columns.
// A is either staged per chunk from global x (kStageA: into a, ld KC + kPad) or resident in shared
// memory (a, ld a_ld, all K columns). ws and a (kStageA) are the first of C::kStages buffers,
// C::kWidth (C::kTokens) x (KC + kPad) elements each. One stage: stage chunk, barrier, MMAs, barrier.
// Two stages: the copies of chunk kt + 1 (cp.async on sm_80+) are in flight while the warps multiply
// chunk kt. Every thread of the block calls it (it holds barriers); it starts and ends with the tiles
// free for reuse and no copy in flight.
template <class D, class C, int KC, bool kStageA, bool kLdsm>
ZAYA_DEV void block_gemm(Acc<C>& acc, const Mat& w, int n_tiles, int K, const Mat& x, uint16_t* a, int a_ld,
                         uint16_t* ws) {
  const int kp = (K + 15) / 16 * 16;
  if constexpr (C::kStages == 1) {
    for (int k0 = 0; k0 < kp; k0 += KC) {
      stage<KC>(ws, w, n_tiles * 16, k0, K);
      if constexpr (kStageA) stage<KC>(a, x, C::kTokens, k0, K);
      __syncthreads();
      chunk_mma<D, C, KC, kLdsm>(acc, n_tiles, kp - k0 < KC ? kp - k0 : KC, a, a_ld, kStageA ? 0 : k0, ws);
      __syncthreads();
    }
  } else {
    constexpr int kWStage = C::kWidth * (KC + kPad), kAStage = C::kTokens * (KC + kPad);
    const int nk = (kp + KC - 1) / KC;
    const auto issue = [&](int kt) {
      const int st = kt & 1;
      stage<KC, true>(ws + st * kWStage, w, n_tiles * 16, kt * KC, K);
      if constexpr (kStageA) stage<KC, true>(a + st * kAStage, x, C::kTokens, kt * KC, K);
    };
    if (nk > 0) issue(0);
    vendor::copy_async_commit();
    for (int kt = 0; kt < nk; ++kt) {
      vendor::copy_async_wait<0>();  // this thread's copies of chunk kt have landed
      __syncthreads();               // ... and everyone's; chunk kt - 1's buffer is free again
      if (kt + 1 < nk) issue(kt + 1);
      vendor::copy_async_commit();
      const int st = kt & 1, k0 = kt * KC, kend = kp - k0 < KC ? kp - k0 : KC;
      chunk_mma<D, C, KC, kLdsm>(acc, n_tiles, kend, kStageA ? a + st * kAStage : a, a_ld, kStageA ? 0 : k0,
                                 ws + st * kWStage);
    }
    __syncthreads();
  }
}

// f(row, col, value) for each accumulator of this warp's n tiles below n_tiles.
template <class C, class F>
ZAYA_DEV void for_each_acc(const Acc<C>& acc, int n_tiles, F&& f) {
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize, lane = vendor::lane_id();
#pragma unroll
  for (int j = 0; j < C::kNT; ++j) {
    const int nt = warp + kWarps * j;
    if (nt >= n_tiles) continue;
#pragma unroll
    for (int mi = 0; mi < C::kMT; ++mi)
#pragma unroll
      for (int i = 0; i < mma::kAccum; ++i)
        f(mi * 16 + mma::c_row(lane, i), nt * 16 + mma::c_col(lane, i), acc[mi][j].x[i]);
  }
}

// GELU with the exact erf, in ATen's operation order: x * 0.5 * (1 + erf(x / sqrt(2))).
ZAYA_DEV float gelu(float v) { return fmul(fmul(v, 0.5f), fadd(1.0f, erff(fmul(v, 0.70710678118654752f)))); }

// A softmax probability as ATen computes it: round(exp(logit - max) * (1 / sum)).
template <class D>
ZAYA_DEV float prob(uint16_t logit, float mx, float inv) {
  return D::round(fmul(expf(fadd(D::to_float(logit), -mx)), inv));
}

// 1. of both kernels: hs[row, col] = rho = round(x down^T + b) (after the first layer round(rho +
// round(prev * scale))) for the block's tokens t0 + row, zeros past R; rows past `rows` read zero x
// and no prev. The down phase stages through t.xs and t.wds; every thread calls it (barriers), and it
// returns before the barrier that publishes t.hs.
template <class D, class C, bool kLdsm>
ZAYA_DEV void rho_tile(Acc<C>& acc, const Mat& x, const uint16_t* down_weight, int H, int R, const uint16_t* bias,
                       const uint16_t* prev, int64_t prev_ld, const uint16_t* scale, int64_t t0, int rows,
                       const Tiles<C>& t) {
  const auto f = [](uint16_t v) { return D::to_float(v); };
  zero<C>(acc);
  block_gemm<D, C, C::kDownK, true, kLdsm>(acc, Mat{down_weight, H, R}, (R + 15) / 16, H, x, t.xs, C::kDownK + kPad,
                                           t.wds);
  uint16_t* const hs = t.hs;
  for_each_acc<C>(acc, (R + 15) / 16, [&](int row, int col, float v) {
    float r = 0.f;
    if (col < R) {
      r = D::round(fadd(v, f(bias[col])));
      if (prev != nullptr && row < rows) {
        const float eda = D::round(fmul(f(prev[(t0 + row) * prev_ld + col]), f(scale[col])));
        r = D::round(fadd(r, eda));
      }
    }
    hs[row * C::kHld + col] = D::from_float(r);
  });
}

// The block's tile memory: dynamic shared memory for the double-buffered configurations, else a
// static array (one per configuration).
template <class C>
ZAYA_DEV uint16_t* tile_smem() {
  if constexpr (C::kDynamic) {
    return vendor::dynamic_smem<uint16_t>();
  } else {
    __shared__ uint4 smem_raw[(C::kElems * 2 + 15) / 16];
    return reinterpret_cast<uint16_t*>(smem_raw);
  }
}

}  // namespace zaya::kernels::router
