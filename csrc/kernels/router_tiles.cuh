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

template <int BT, int W, int KD>
struct Cfg {
  static constexpr int kTokens = BT;
  static constexpr int kWidth = W;
  static constexpr int kDownK = KD;
  static constexpr int kMT = BT / 16;           // m tiles, all owned by every warp
  static constexpr int kNT = W / 16 / kWarps;   // n tiles per warp: w, w + kWarps, ...
  static constexpr int kHld = W + kPad;         // ld of hs [BT, W]
  static constexpr int kDownElems = (BT + W) * (KD + kPad);
  static constexpr int kMlpElems = BT * kHld + W * (kMlpK + kPad);
  static constexpr int kElems = kDownElems > kMlpElems ? kDownElems : kMlpElems;
  static_assert(BT % 16 == 0 && W % (16 * kWarps) == 0 && KD % 16 == 0);
  static_assert(kElems * 2 + BT * 4 <= 48 * 1024, "static shared memory is limited to 48 KiB");
  static_assert(kWarps * kTieScratch * 8 <= W * (kMlpK + kPad) * 2, "tie scratch must fit the weight tile");
};
using Big = Cfg<64, 256, 64>;
using Small = Cfg<16, 512, 32>;
static_assert(Small::kWidth == kRouterMaxWidth);

// A row-major 16-bit matrix in global memory: rows x (its K) elements, row stride ld.
struct Mat {
  const uint16_t* p;
  int64_t ld;
  int64_t rows;
};

// Stages columns [k0, k0 + KC) of rows [0, rows) of g into the shared tile s (ld KC + kPad), with
// zeros past g.rows and past column K. 16-byte loads where the chunk is whole and aligned.
template <int KC>
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
      *reinterpret_cast<uint4*>(d) = *reinterpret_cast<const uint4*>(src);
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

// acc += A [BT, K] x B^T, B = w [n_tiles * 16 rows, K] streamed through ws in chunks of KC columns.
// A is either staged per chunk from global x (kStageA: into a, ld KC + kPad) or resident in shared
// memory (a, ld a_ld, all K columns). Every thread of the block calls it (it holds barriers); it
// starts and ends with the tiles free for reuse.
template <class D, class C, int KC, bool kStageA, bool kLdsm>
ZAYA_DEV void block_gemm(Acc<C>& acc, const Mat& w, int n_tiles, int K, const Mat& x, uint16_t* a, int a_ld,
                         uint16_t* ws) {
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize, lane = vendor::lane_id();
  const int kp = (K + 15) / 16 * 16;
  for (int k0 = 0; k0 < kp; k0 += KC) {
    stage<KC>(ws, w, n_tiles * 16, k0, K);
    if constexpr (kStageA) stage<KC>(a, x, C::kTokens, k0, K);
    __syncthreads();
    const int kend = kp - k0 < KC ? kp - k0 : KC;
    for (int kk = 0; kk < kend; kk += 16) {
      mma::FragA af[C::kMT];
#pragma unroll
      for (int mi = 0; mi < C::kMT; ++mi) af[mi] = mma::load_a_v<kLdsm>(a + mi * 16 * a_ld + (kStageA ? kk : k0 + kk), a_ld, lane);
#pragma unroll
      for (int j = 0; j < C::kNT; ++j) {
        const int nt = warp + kWarps * j;
        if (nt >= n_tiles) continue;  // warp-uniform: the whole warp skips its MMAs
        const mma::FragB b = mma::load_b_nk_v<kLdsm>(ws + nt * 16 * (KC + kPad) + kk, KC + kPad, lane);
#pragma unroll
        for (int mi = 0; mi < C::kMT; ++mi) mma::mma<D>(acc[mi][j], af[mi], b);
      }
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
// and no prev. xs and wds are the down phase's staging tiles; every thread calls it (barriers), and
// it returns before the barrier that publishes hs.
template <class D, class C, bool kLdsm>
ZAYA_DEV void rho_tile(Acc<C>& acc, const Mat& x, const uint16_t* down_weight, int H, int R, const uint16_t* bias,
                       const uint16_t* prev, int64_t prev_ld, const uint16_t* scale, int64_t t0, int rows,
                       uint16_t* xs, uint16_t* wds, uint16_t* hs) {
  const auto f = [](uint16_t v) { return D::to_float(v); };
  zero<C>(acc);
  block_gemm<D, C, C::kDownK, true, kLdsm>(acc, Mat{down_weight, H, R}, (R + 15) / 16, H, x, xs, C::kDownK + kPad,
                                           wds);
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

}  // namespace zaya::kernels::router
