// Portable backward kernels of zaya::router (the op zaya::router_backward), compiled by nvcc
// (cuda/router_backward.cu), hip-clang (hip/router_backward.hip) and the SIMT emulator. The maths is the
// CPU kernel's (csrc/cpu/router_backward.cpp): autograd of zaya_ops.reference.router through
// expert_weight (the probability at the saved expert_index; none for the skip class), router_state and
// logits; every cast of the forward a rounding of the gradient, fp32 in between (vendor::fadd/fmul, never
// contracted into FMAs). The argmax choice itself is not differentiable: the forward's index is read.
//
// Kernels (the forward's tile machinery, router_tiles.cuh, on mma.cuh fragments: mma.sync with
// ldmatrix on CUDA, v_mfma_f32_16x16x16 on CDNA), one block per BT tokens in 1-4. The [R] gradients'
// partials (3.) are per router_backward_block_tokens tokens (64, or 16 when max(R, E+1) > 256: the
// shape only); the other kernels' tiles are free: version 2 (default) runs 1. on the forward's Big2
// (W <= 256) or Wide2 tiles (CUDA: cp.async double buffering; CDNA: <= 32 KiB of LDS), and on CDNA
// 2. and 4. on Big2's 32-token tiles (<= 32 KiB) when W <= 256; ZAYA_KERNELS=v1 runs all on Big / Small:
//   1. router_bwd_recompute: the forward on chip exactly as the forward kernel computes it (down GEMM with
//      x and down_weight staged, RMSNorm, fc1/fc2 + GELU, logits, softmax), then the softmax backward
//      into the picked column, one warp per row:
//        dl = round(p * (onehot_e * gw - p_e * gw)) (+ grad_logits, rounded)
//      It writes rho, the pre-activations a1, a2, the activations nrm, g1, g2 and dl to the `act`
//      workspace (rows of [T, R]; read back by 2 and by the weight-gradient products).
//   2. router_bwd_layer, three launches, the input as the resident A operand, the weight streamed 16
//      rows at a time (k-major B):
//        da2 = round(round(dl Wo) * GELU'(a2));  da1 = round(round(da2 W2) * GELU'(a1));  dn = round(da1 W1)
//   3. router_bwd_norm, one warp per token: dh = round(dn * norm_w); drho = round(RMSNorm'(dh))
//      (+ grad_state); grad_prev = round(drho * scale); each block's fp32 column sums, rows in order,
//      of norm_weight (round(dn * hn)), down_bias (drho), states_scale (round(drho * prev)), fc1_bias
//      (da1) and fc2_bias (da2).
//   4. router_bwd_dx: grad_x = round(drho Wd), blocks of BT tokens x W columns of H.
//   5. router_bwd_wgrad, dW = dY^T X for (dl, g2) -> out_weight, (da2, g1) -> fc2_weight, (da1, nrm) ->
//      fc1_weight, (drho, x) -> down_weight: one block per 64 x 128 tile of dW and per chunk of
//      kRouterBwdChunk tokens; dY^T through the k-major A loader (ldmatrix.trans on CUDA), fp32
//      accumulators, written as the chunk's partial.
//   6. router_bwd_reduce: every gradient element sums its partials in chunk (block) order in fp32 and
//      rounds once to the param dtype.
// No atomics: the result is the same on every run; the sums' grouping depends on the shape only (the
// block size BT and the chunk size), never on the device.
//
// Roofline (T tokens, hidden H, router width R, classes E1 = E + 1, 2-byte param dtype; ZAYA1:
// H = 2048, R = 256, E1 = 17; figures for T = 8192):
//   FLOPs: recompute 2TR(H + 2R + E1); backward GEMMs dl Wo, da2 W2, da1 W1: 2TR(2R + E1); drho Wd:
//     2TRH; weight gradients 2TR(H + 2R + E1): 6TRH + 12TR^2 + 6TR E1 in all, 32.4 GFLOP.
//   HBM bytes: x read twice (recompute, dWd) 4TH = 67 MB; grad_x 2TH = 34 MB; prev_state (twice),
//     grad_state, grad_prev 8TR = 17 MB; the act workspace, 2T(9R + E1) written and about 2T(12R + E1)
//     read back = 88 MB; the weight-gradient partials 4 ceil(T / 1024) R(H + 2R + E1), written and read
//     = 2 x 21 MB; weights 1.3 MB (re-read from L2 per block): about 250 MB.
//   On an H100 (~3.0 TB/s, ~990 TFLOP/s dense bf16) the floors are ~83 us of memory against ~33 us of
//   matrix work: memory bound; x, grad_x and the workspace dominate. (Keeping the activations on chip
//   and summing the weight gradients in one pass would save ~130 MB, beyond 48 KiB of static shared
//   memory per block.) NOT MEASURED: written without a GPU; version 2's recompute double-buffers its
//   chunks through cp.async on CUDA, the other kernels stage synchronously, and each block of 1 and 2
//   streams its weights from L2.
//
// Resources (written without a GPU; re-measure after changing the tiles). nvcc 13.0, sm_90a
// (cuobjdump -res-usage), 256-thread blocks, 0 spills and 0 stack in every kernel; registers bf16 / fp16,
// ldmatrix (v1): recompute version 2 Big2 128 / 117, Small2 101 / 91 (dynamic smem 58,368 / 84,480 B;
//   8 LDGSTS sites each), v1 Big 127 / 117, Small 100 / 90; layer Big 102 / 102 (107 / 107), Small 66 / 66
//   (66 / 66); norm 62 / 32; dx Big 95 / 95 (99 / 99), Small 64 / 63 (63 / 63); wgrad 60; reduce 28.
//   smem: v1 recompute and dx 46,080 (Big) / 42,240 (Small) B, layer 46,080 / 41,216, wgrad 13,312.
// tools/check_hip.sh (512-thread blocks): no scratch, no spills. Version 2 with W <= 256, Big2's 32-token
//   tiles: recompute, layer and dx LDS 29,184 B, occupancy 4 waves/SIMD (two workgroups per CU; before
//   46,080 B, 2), gfx940 VGPRs recompute 54, layer 38-39, dx 38 (gfx90a 54-60, 38-39, 38). Version 1
//   (and W > 256): gfx940 VGPRs recompute 76-80 (Big) / 64-68 (Small), layer 56 / 40, dx 56 / 40, wgrad
//   45, norm 48-52, occupancy 2 (wgrad, norm 8); LDS Big 46,080, Small 42,240 / 41,216 (layer); v_mfma
//   in recompute, layer, dx and wgrad.
// (Epilogues that touch the workspace run element by element once the tile is in shared memory:
// per-accumulator global addresses, hoisted across layers, spilled; one kernel for all the MLP steps
// spilled SGPRs on CDNA, hence the separate launches.)
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "router_backward_launch.h"
#include "router_tiles.cuh"

namespace zaya::kernels::router_bwd {

using router::Acc;
using router::block_gemm;
using router::for_each_acc;
using router::kMlpK;
using router::kPad;
using router::kWarps;
using router::Mat;
using router::stage;
using router::zero;
using vendor::fadd;
using vendor::fmul;
using vendor::kWarpSize;

// ATen's GELU backward (erf form): cdf + x * pdf, pdf = exp(-x^2 / 2) / sqrt(2 pi).
ZAYA_DEV float gelu_grad(float x) {
  const float cdf = fmul(0.5f, fadd(1.0f, erff(fmul(x, 0.70710678118654752f))));
  const float pdf = fmul(expf(fmul(fmul(-0.5f, x), x)), 0.39894228040143268f);
  return fadd(cdf, fmul(x, pdf));
}

// The act workspace: nine [T, ldr] buffers and dl [T, lde], 16-byte aligned rows.
struct Act {
  enum { kRho, kA1, kA2, kNrm, kG1, kG2, kDa2, kDa1, kDrho };
  uint16_t* base;
  int64_t tokens, ldr, lde;
  ZAYA_DEV uint16_t* buf(int k) const { return base + k * tokens * ldr; }
  ZAYA_DEV uint16_t* dl() const { return base + 9 * tokens * ldr; }
};

ZAYA_DEV Act act_of(const RouterBackwardArgs& a) {
  return Act{static_cast<uint16_t*>(a.act), a.tokens, (a.router_dim + 7) / 8 * 8, (a.classes + 7) / 8 * 8};
}

// acc += A [BT, K] x B with B[k][n] = w[k, n0 + n] (a weight read k-major: rows k of w, `cols` columns);
// A resident in shared memory (a, ld a_ld, columns K..ceil16(K) zero); w streamed 16 rows at a time
// through ws [16, W + kPad]. Warp w owns the n tiles w, w + kWarps, ... below n_tiles. Every thread
// calls it (barriers); it starts and ends with the tiles free for reuse.
template <class D, class C, bool kLdsm>
ZAYA_DEV void block_gemm_kn(Acc<C>& acc, const Mat& w, int64_t n0, int64_t cols, int n_tiles, int K,
                            const uint16_t* a, int a_ld, uint16_t* ws) {
  constexpr int kLd = C::kWidth + kPad;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize, lane = vendor::lane_id();
  const int kp = (K + 15) / 16 * 16;
  for (int k0 = 0; k0 < kp; k0 += 16) {
    stage<C::kWidth>(ws, Mat{w.p + k0 * w.ld, w.ld, K - k0}, 16, static_cast<int>(n0), static_cast<int>(cols));
    __syncthreads();
    mma::FragA af[C::kMT];
#pragma unroll
    for (int mi = 0; mi < C::kMT; ++mi) af[mi] = mma::load_a_v<kLdsm>(a + mi * 16 * a_ld + k0, a_ld, lane);
#pragma unroll
    for (int j = 0; j < C::kNT; ++j) {
      const int nt = warp + kWarps * j;
      if (nt >= n_tiles) continue;  // warp-uniform
      const mma::FragB b = mma::load_b_kn_v<kLdsm>(ws + nt * 16, kLd, lane);
#pragma unroll
      for (int mi = 0; mi < C::kMT; ++mi) mma::mma<D>(acc[mi][j], af[mi], b);
    }
    __syncthreads();
  }
}

// part[j] = sum over the block's rows i < rows, in order, of term(i, j), j < R (fp32).
template <class F>
ZAYA_DEV void column_sums(int rows, int R, float* part, F&& term) {
  for (int j = static_cast<int>(threadIdx.x); j < R; j += static_cast<int>(blockDim.x)) {
    float s = 0.f;
    for (int i = 0; i < rows; ++i) s = fadd(s, term(i, j));
    part[j] = s;
  }
}

template <class D, class C, bool kLdsm>
__global__ void __launch_bounds__(kWarps * kWarpSize, 1) router_bwd_recompute(RouterBackwardArgs a) {
  constexpr int BT = C::kTokens, HLD = C::kHld;
  const router::Tiles<C> tiles(router::tile_smem<C>());
  uint16_t* const hs = tiles.hs;  // MLP phases: activations [BT, W]
  uint16_t* const ws = tiles.ws;  // MLP phases: weight chunk buffers

  using S = uint16_t;
  const auto f = [](S v) { return D::to_float(v); };
  const int tid = static_cast<int>(threadIdx.x), warp = tid / kWarpSize, lane = vendor::lane_id();
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * BT;
  const int rows = a.tokens - t0 < BT ? static_cast<int>(a.tokens - t0) : BT;
  const int R = a.router_dim, E1 = a.classes;
  const int r_tiles = (R + 15) / 16, e_tiles = (E1 + 15) / 16;
  const int H = static_cast<int>(a.hidden);
  const Act act = act_of(a);
  const int64_t ldr = act.ldr;
  S* const rho_g = act.buf(Act::kRho);
  const S* nw = static_cast<const S*>(a.norm_weight);
  const S* prev = static_cast<const S*>(a.prev_state);

  Acc<C> acc;

  // ---- recompute, as the forward kernel: rho, the RMSNorm, two GELU layers, logits ----
  const Mat x{static_cast<const S*>(a.x) + t0 * a.x_row_stride, a.x_row_stride, rows};
  router::rho_tile<D, C, kLdsm>(acc, x, static_cast<const S*>(a.down_weight), H, R,
                                static_cast<const S*>(a.down_bias), prev, a.prev_row_stride,
                                static_cast<const S*>(a.states_scale), t0, rows, tiles);
  __syncthreads();
  for (int row = warp; row < BT; row += kWarps) {
    S* hr = hs + row * HLD;
    const bool valid = row < rows;
    float ss = 0.f;
    for (int j = lane; j < R; j += kWarpSize) ss = fadd(ss, fmul(f(hr[j]), f(hr[j])));
    for (int off = kWarpSize / 2; off > 0; off >>= 1) ss = fadd(ss, vendor::shfl_xor(ss, off));
    const float inv = vendor::fdiv(1.0f, vendor::sqrt_rn(fadd(vendor::fdiv(ss, static_cast<float>(R)), a.eps)));
    for (int j = lane; j < R; j += kWarpSize) {
      const S s = hr[j];
      const S n = D::from_float(fmul(f(nw[j]), D::round(fmul(f(s), inv))));
      hr[j] = n;
      if (valid) {
        rho_g[(t0 + row) * ldr + j] = s;
        act.buf(Act::kNrm)[(t0 + row) * ldr + j] = n;
      }
    }
  }
  __syncthreads();
  for (int layer = 0; layer < 2; ++layer) {
    const S* w = static_cast<const S*>(layer == 0 ? a.fc1_weight : a.fc2_weight);
    const S* bias = static_cast<const S*>(layer == 0 ? a.fc1_bias : a.fc2_bias);
    S* pre_g = act.buf(layer == 0 ? Act::kA1 : Act::kA2);
    S* out_g = act.buf(layer == 0 ? Act::kG1 : Act::kG2);
    zero<C>(acc);
    block_gemm<D, C, kMlpK, false, kLdsm>(acc, Mat{w, R, R}, r_tiles, R, Mat{}, hs, HLD, ws);
    for_each_acc<C>(acc, r_tiles, [&](int row, int col, float v) {  // pre = round(fc(h) + b)
      hs[row * HLD + col] = D::from_float(col < R ? fadd(v, f(bias[col])) : 0.f);
    });
    __syncthreads();
    // round(gelu(pre)) element by element, and both to the workspace (coalesced, few registers)
    for (int i = tid; i < BT * R; i += static_cast<int>(blockDim.x)) {
      const int row = i / R, col = i % R;
      const S pre = hs[row * HLD + col];
      const S g = D::from_float(router::gelu(f(pre)));
      hs[row * HLD + col] = g;
      if (row < rows) {
        pre_g[(t0 + row) * ldr + col] = pre;
        out_g[(t0 + row) * ldr + col] = g;
      }
    }
    __syncthreads();
  }
  zero<C>(acc);
  block_gemm<D, C, kMlpK, false, kLdsm>(acc, Mat{static_cast<const S*>(a.out_weight), R, E1}, e_tiles, R, Mat{}, hs,
                                        HLD, ws);
  for_each_acc<C>(acc, e_tiles, [&](int row, int col, float v) {
    if (col < E1) hs[row * HLD + col] = D::from_float(v);
  });
  __syncthreads();

  // ---- softmax backward into the picked column (+ grad_logits): dl, one warp per row ----
  {
    const S* gw = static_cast<const S*>(a.grad_weight);
    const S* gl = static_cast<const S*>(a.grad_logits);
    S* dl_g = act.dl();
    const int ep = e_tiles * 16;
    for (int row = warp; row < BT; row += kWarps) {
      S* lr = hs + row * HLD;
      const bool valid = row < rows;
      const int64_t t = t0 + row;
      const int e = valid ? a.expert_index[t] : -1;
      const bool picked = e >= 0 && e < E1 - 1;  // the skip class's weight is the constant 0
      const float le = picked ? f(lr[e]) : 0.f;   // read before any lane overwrites the row
      float mx = -INFINITY;
      for (int j = lane; j < E1; j += kWarpSize) mx = fmaxf(mx, f(lr[j]));
      for (int off = kWarpSize / 2; off > 0; off >>= 1) mx = fmaxf(mx, vendor::shfl_xor(mx, off));
      float sum = 0.f;
      for (int j = lane; j < E1; j += kWarpSize) sum = fadd(sum, expf(fadd(f(lr[j]), -mx)));
      for (int off = kWarpSize / 2; off > 0; off >>= 1) sum = fadd(sum, vendor::shfl_xor(sum, off));
      const float inv = vendor::fdiv(1.0f, sum);
      const float g = picked && gw != nullptr ? f(gw[t]) : 0.f;
      const float s = picked ? fmul(D::round(fmul(expf(fadd(le, -mx)), inv)), g) : 0.f;
      for (int j = lane; j < ep; j += kWarpSize) {
        float v = 0.f;
        if (j < E1 && valid) {
          if (g != 0.f) v = D::round(fmul(router::prob<D>(lr[j], mx, inv), fadd(j == e ? g : 0.f, -s)));
          if (gl != nullptr) v = D::round(fadd(v, f(gl[t * E1 + j])));
          dl_g[t * act.lde + j] = D::from_float(v);
        }
        lr[j] = D::from_float(v);
      }
    }
  }
}

// 2. One step of the chain backwards through the MLP per launch, BT tokens per block; step 0: dl Wo ->
// da2 = round(round(.) * GELU'(a2)); 1: da2 W2 -> da1 (GELU'(a1)); 2: da1 W1 -> round(dn), into a1's
// rows (not read again). The input (from the workspace) is the resident A operand, the weight streamed
// k-major (the norm kernel sums da2 and da1 for fc2_bias and fc1_bias, so BT here is free). Separate
// launches (not the recompute's tail, nor one kernel for all three): each keeps its VGPRs and SGPRs in
// bounds.
template <class D, class C, bool kLdsm>
__global__ void __launch_bounds__(kWarps * kWarpSize, 1) router_bwd_layer(RouterBackwardArgs a, int step) {
  constexpr int BT = C::kTokens, HLD = C::kHld;
  static_assert(16 * (C::kWidth + kPad) <= C::kWidth * (kMlpK + kPad), "the k-major weight chunk must fit");
  __shared__ uint4 smem_raw[(C::kMlpElems * 2 + 15) / 16];
  uint16_t* const hs = reinterpret_cast<uint16_t*>(smem_raw);  // activations [BT, W]
  uint16_t* const ws = hs + BT * HLD;                           // weight chunk [16, W]

  using S = uint16_t;
  const auto f = [](S v) { return D::to_float(v); };
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize, lane = vendor::lane_id();
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * BT;
  const int rows = a.tokens - t0 < BT ? static_cast<int>(a.tokens - t0) : BT;
  const int R = a.router_dim;
  const Act act = act_of(a);
  const int64_t ldr = act.ldr;
  const S* in_g = step == 0 ? act.dl() : act.buf(step == 1 ? Act::kDa2 : Act::kDa1);
  const int64_t in_ld = step == 0 ? act.lde : ldr;
  const int K = step == 0 ? a.classes : R;
  const S* w = static_cast<const S*>(step == 0 ? a.out_weight : step == 1 ? a.fc2_weight : a.fc1_weight);
  const S* pre_g = step == 2 ? nullptr : act.buf(step == 0 ? Act::kA2 : Act::kA1);
  S* out_g = act.buf(step == 0 ? Act::kDa2 : step == 1 ? Act::kDa1 : Act::kA1);

  Acc<C> acc;
  // zeros past K and rows; the GEMM's first barrier publishes it
  stage<C::kWidth>(hs, Mat{in_g + t0 * in_ld, in_ld, rows}, BT, 0, K);
  zero<C>(acc);
  block_gemm_kn<D, C, kLdsm>(acc, Mat{w, R, K}, 0, R, (R + 15) / 16, K, hs, HLD, ws);
  for_each_acc<C>(acc, (R + 15) / 16, [&](int row, int col, float v) {  // round(.)
    hs[row * HLD + col] = D::from_float(col < R && row < rows ? v : 0.f);
  });
  __syncthreads();
  // times GELU'(pre), rounded, element by element (coalesced reads of pre, few registers)
  for (int row = warp; row < rows; row += kWarps) {
    for (int col = lane; col < R; col += kWarpSize) {
      S d = hs[row * HLD + col];
      if (pre_g != nullptr) d = D::from_float(fmul(f(d), gelu_grad(f(pre_g[(t0 + row) * ldr + col]))));
      out_g[(t0 + row) * ldr + col] = d;
    }
  }
}

// 3. RMSNorm backward, grad_state and EDA for BT tokens per block, one warp per row: drho (to the
// workspace) and grad_prev; then the block's column sums of norm_weight (round(dn * hn), hn =
// round(rho * inv)), down_bias (drho), states_scale (round(drho * prev)), fc1_bias (da1) and fc2_bias
// (da2). BT here is router_backward_block_tokens (the shape's), whatever the other kernels' tiles.
template <class D, class C>
__global__ void __launch_bounds__(kWarps * kWarpSize) router_bwd_norm(RouterBackwardArgs a) {
  constexpr int BT = C::kTokens;
  __shared__ float rinv[BT];
  using S = uint16_t;
  const auto f = [](S v) { return D::to_float(v); };
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize, lane = vendor::lane_id();
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * BT;
  const int rows = a.tokens - t0 < BT ? static_cast<int>(a.tokens - t0) : BT;
  const int R = a.router_dim;
  const Act act = act_of(a);
  const int64_t ldr = act.ldr;
  const S* const rho_g = act.buf(Act::kRho);
  const S* const dn_g = act.buf(Act::kA1);
  S* const drho_g = act.buf(Act::kDrho);
  const S* nw = static_cast<const S*>(a.norm_weight);
  const S* prev = static_cast<const S*>(a.prev_state);
  const S* gs = static_cast<const S*>(a.grad_state);
  const S* scale = static_cast<const S*>(a.states_scale);
  S* gprev = static_cast<S*>(a.grad_prev);
  float* const part = a.wsum + static_cast<int64_t>(blockIdx.x) * 5 * R;

  for (int row = warp; row < rows; row += kWarps) {
    const int64_t t = t0 + row;
    const S* rr = rho_g + t * ldr;
    const S* dr = dn_g + t * ldr;
    float ss = 0.f, dot = 0.f;  // 1 / rms(rho) as the recompute's norm computed it; sum(dh * rho)
    for (int j = lane; j < R; j += kWarpSize) {
      ss = fadd(ss, fmul(f(rr[j]), f(rr[j])));
      dot = fadd(dot, fmul(D::round(fmul(f(dr[j]), f(nw[j]))), f(rr[j])));
    }
    for (int off = kWarpSize / 2; off > 0; off >>= 1) {
      ss = fadd(ss, vendor::shfl_xor(ss, off));
      dot = fadd(dot, vendor::shfl_xor(dot, off));
    }
    const float inv = vendor::fdiv(1.0f, vendor::sqrt_rn(fadd(vendor::fdiv(ss, static_cast<float>(R)), a.eps)));
    if (lane == 0) rinv[row] = inv;
    const float coef = fmul(-vendor::fdiv(dot, static_cast<float>(R)), fmul(fmul(inv, inv), inv));
    for (int j = lane; j < R; j += kWarpSize) {
      const float dh = D::round(fmul(f(dr[j]), f(nw[j])));
      float g = D::round(fadd(fmul(dh, inv), fmul(f(rr[j]), coef)));
      if (gs != nullptr) g = D::round(fadd(g, f(gs[t * R + j])));
      drho_g[t * ldr + j] = D::from_float(g);
      if (prev != nullptr) gprev[t * R + j] = D::from_float(fmul(g, f(scale[j])));
    }
  }
  __syncthreads();
  column_sums(rows, R, part + 3 * R, [&](int i, int j) {  // norm_weight
    const float hn = D::round(fmul(f(rho_g[(t0 + i) * ldr + j]), rinv[i]));
    return D::round(fmul(f(dn_g[(t0 + i) * ldr + j]), hn));
  });
  column_sums(rows, R, part, [&](int i, int j) { return f(drho_g[(t0 + i) * ldr + j]); });  // down_bias
  column_sums(rows, R, part + 4 * R, [&](int i, int j) {                                    // states_scale
    return prev != nullptr ? D::round(fmul(f(drho_g[(t0 + i) * ldr + j]), f(prev[(t0 + i) * a.prev_row_stride + j])))
                           : 0.f;
  });
  const S* const da1_g = act.buf(Act::kDa1);
  const S* const da2_g = act.buf(Act::kDa2);
  column_sums(rows, R, part + R, [&](int i, int j) { return f(da1_g[(t0 + i) * ldr + j]); });      // fc1_bias
  column_sums(rows, R, part + 2 * R, [&](int i, int j) { return f(da2_g[(t0 + i) * ldr + j]); });  // fc2_bias
}

// grad_x = round(drho Wd) for BT tokens and W columns of H per block (grid: token blocks x column
// chunks): drho (from the act workspace) is the resident A operand, down_weight streamed k-major.
// A kernel of its own: it keeps the token kernel's registers down and spreads H over more blocks.
template <class D, class C, bool kLdsm>
__global__ void __launch_bounds__(kWarps * kWarpSize, 1) router_bwd_dx(RouterBackwardArgs a) {
  constexpr int BT = C::kTokens, HLD = C::kHld;
  __shared__ uint4 smem_raw[(C::kElems * 2 + 15) / 16];
  uint16_t* const hs = reinterpret_cast<uint16_t*>(smem_raw);  // drho [BT, W]
  uint16_t* const ws = hs + BT * HLD;                           // weight chunk [16, W]
  using S = uint16_t;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * BT, n0 = static_cast<int64_t>(blockIdx.y) * C::kWidth;
  const int rows = a.tokens - t0 < BT ? static_cast<int>(a.tokens - t0) : BT;
  const int R = a.router_dim;
  const Act act = act_of(a);
  stage<C::kWidth>(hs, Mat{act.buf(Act::kDrho) + t0 * act.ldr, act.ldr, rows}, BT, 0, R);  // zeros past R, rows
  const int64_t left = (a.hidden - n0 + 15) / 16;
  const int n_tiles = left < C::kWidth / 16 ? static_cast<int>(left) : C::kWidth / 16;
  Acc<C> acc;
  zero<C>(acc);
  block_gemm_kn<D, C, kLdsm>(acc, Mat{static_cast<const S*>(a.down_weight), a.hidden, R}, n0, a.hidden, n_tiles, R,
                             hs, HLD, ws);  // its first barrier publishes hs
  S* gx = static_cast<S*>(a.grad_x);
  for_each_acc<C>(acc, n_tiles, [&](int row, int col, float v) {
    if (row < rows && n0 + col < a.hidden) gx[(t0 + row) * a.hidden + n0 + col] = D::from_float(v);
  });
}

// ------------------------------------------------------------------------------------------------
// Weight gradients: part[chunk][n][k] = sum over the chunk's tokens t of y[t][n] * x[t][k]
// ------------------------------------------------------------------------------------------------
inline constexpr int kWgM = 64, kWgN = 128, kWgK = 32;  // dW tile (rows n, columns k), tokens per stage

struct WgradJob {
  const uint16_t* y;  // [tokens, N], row stride ldy
  int64_t ldy;
  const uint16_t* x;  // [tokens, K], row stride ldx
  int64_t ldx;
  int64_t n, k;       // dW is [n, k]
  float* part;        // [chunks, n, k]
  int64_t tokens;
};

// Warp w owns rows 32 (w % 2) .. + 31 and columns 32 (w / 2) .. + 31 of the block's 64 x 128 tile.
template <class D, bool kLdsm>
__global__ void __launch_bounds__(kWarps * kWarpSize) router_bwd_wgrad(WgradJob j) {
  static_assert(kWarps == 8, "the tile split assumes 2 x 4 warps");
  constexpr int kYld = kWgM + kPad, kXld = kWgN + kPad;
  __shared__ uint4 smem_raw[(kWgK * (kYld + kXld) * 2 + 15) / 16];
  uint16_t* const ys = reinterpret_cast<uint16_t*>(smem_raw);  // [kWgK tokens][kWgM]
  uint16_t* const xs = ys + kWgK * kYld;                        // [kWgK tokens][kWgN]
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize, lane = vendor::lane_id();
  const int wm = warp % 2, wn = warp / 2;
  const int64_t m_tiles = (j.n + kWgM - 1) / kWgM;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) % m_tiles * kWgM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) / m_tiles * kWgN;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kRouterBwdChunk;
  const int64_t c1 = j.tokens - c0 < kRouterBwdChunk ? j.tokens : c0 + kRouterBwdChunk;

  mma::FragC acc[2][2];
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int ni = 0; ni < 2; ++ni) mma::zero(acc[mi][ni]);
  for (int64_t t = c0; t < c1; t += kWgK) {
    stage<kWgM>(ys, Mat{j.y + t * j.ldy, j.ldy, c1 - t}, kWgK, static_cast<int>(m0), static_cast<int>(j.n));
    stage<kWgN>(xs, Mat{j.x + t * j.ldx, j.ldx, c1 - t}, kWgK, static_cast<int>(n0), static_cast<int>(j.k));
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kWgK; kk += 16) {
      mma::FragA af[2];
      mma::FragB bf[2];
#pragma unroll
      for (int mi = 0; mi < 2; ++mi) af[mi] = mma::load_a_km_v<kLdsm>(ys + kk * kYld + wm * 32 + mi * 16, kYld, lane);
#pragma unroll
      for (int ni = 0; ni < 2; ++ni) bf[ni] = mma::load_b_kn_v<kLdsm>(xs + kk * kXld + wn * 32 + ni * 16, kXld, lane);
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int ni = 0; ni < 2; ++ni) mma::mma<D>(acc[mi][ni], af[mi], bf[ni]);
    }
    __syncthreads();
  }
  float* out = j.part + static_cast<int64_t>(blockIdx.y) * j.n * j.k;
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int ni = 0; ni < 2; ++ni)
#pragma unroll
      for (int i = 0; i < mma::kAccum; ++i) {
        const int64_t r = m0 + wm * 32 + mi * 16 + mma::c_row(lane, i);
        const int64_t c = n0 + wn * 32 + ni * 16 + mma::c_col(lane, i);
        if (r < j.n && c < j.k) out[r * j.k + c] = acc[mi][ni].x[i];
      }
}

// out[e] = round_p(sum over parts b < parts, in order, of ws[b * stride + e]), e < n.
template <class D>
__global__ void __launch_bounds__(256) router_bwd_reduce(const float* ws, int64_t parts, int64_t stride, int64_t n,
                                                          void* out) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * 256 + threadIdx.x;
  if (e >= n) return;
  float s = 0.f;
  for (int64_t b = 0; b < parts; ++b) s = fadd(s, ws[b * stride + e]);
  static_cast<uint16_t*>(out)[e] = D::from_float(s);
}

// ------------------------------------------------------------------------------------------------
// Launcher
// ------------------------------------------------------------------------------------------------

template <class D>
const char* reduce(const float* ws, int64_t parts, int64_t stride, int64_t n, void* out, vendor::stream_t stream) {
  if (n == 0) return nullptr;
  return vendor::launch(&router_bwd_reduce<D>, dim3(static_cast<unsigned>((n + 255) / 256)), dim3(256), 0, stream, ws,
                        parts, stride, n, out);
}

template <class D, bool kLdsm>
const char* run_wgrad(const WgradJob& j, int64_t chunks, int warp, void* out, vendor::stream_t stream) {
  const int64_t tiles = (j.n + kWgM - 1) / kWgM * ((j.k + kWgN - 1) / kWgN);
  if (tiles == 0) return nullptr;
  if (tiles > int64_t{0x7fffffff}) return "zaya router_backward: weight gradient too large for one launch";
  if (const char* err = vendor::launch(&router_bwd_wgrad<D, kLdsm>, dim3(static_cast<unsigned>(tiles),
                                                                          static_cast<unsigned>(chunks)),
                                       dim3(static_cast<unsigned>(kWarps * warp)), 0, stream, j))
    return err;
  return reduce<D>(j.part, chunks, j.n * j.k, j.n * j.k, out, stream);
}

// C: the shape's token blocks (router_backward_block_tokens: the norm kernel and the [R] partials);
// CR: the recompute's tiles; CL: the layer and dx kernels' tiles (their own grids).
template <class D, class C, class CR, class CL, bool kLdsm>
const char* run(const RouterBackwardArgs& a, int warp, vendor::stream_t stream) {
  const int64_t T = a.tokens, R = a.router_dim, E1 = a.classes;
  const int64_t blocks = (T + C::kTokens - 1) / C::kTokens;
  const int64_t r_blocks = (T + CR::kTokens - 1) / CR::kTokens, l_blocks = (T + CL::kTokens - 1) / CL::kTokens;
  const int64_t chunks = (T + kRouterBwdChunk - 1) / kRouterBwdChunk;
  if (r_blocks > int64_t{0x7fffffff} || l_blocks > int64_t{0x7fffffff} || blocks > int64_t{0x7fffffff} ||
      chunks > 65535)
    return "zaya router_backward: too many tokens for one launch";
  const dim3 block(static_cast<unsigned>(kWarps * warp));
  if (const char* err = vendor::launch(&router_bwd_recompute<D, CR, kLdsm>, dim3(static_cast<unsigned>(r_blocks)),
                                       block, CR::kDynamic ? CR::kBytes : 0, stream, a))
    return err;
  for (int step = 0; step < 3; ++step)
    if (const char* err = vendor::launch(&router_bwd_layer<D, CL, kLdsm>, dim3(static_cast<unsigned>(l_blocks)), block,
                                         0, stream, a, step))
      return err;
  if (const char* err = vendor::launch(&router_bwd_norm<D, C>, dim3(static_cast<unsigned>(blocks)), block, 0, stream, a))
    return err;
  if (const char* err = reduce<D>(a.wsum, blocks, 5 * R, 5 * R, a.grad_vectors, stream)) return err;
  const int64_t h_chunks = (a.hidden + CL::kWidth - 1) / CL::kWidth;
  if (h_chunks > 65535) return "zaya router_backward: hidden too large for one launch";
  if (h_chunks > 0) {
    if (const char* err = vendor::launch(&router_bwd_dx<D, CL, kLdsm>, dim3(static_cast<unsigned>(l_blocks),
                                                                             static_cast<unsigned>(h_chunks)),
                                         block, 0, stream, a))
      return err;
  }
  const int64_t ldr = (R + 7) / 8 * 8, lde = (E1 + 7) / 8 * 8;
  const auto* act = static_cast<const uint16_t*>(a.act);
  const auto buf = [&](int k) { return act + k * T * ldr; };
  float* part = a.wsum + blocks * 5 * R;
  const WgradJob jobs[4] = {
      {act + 9 * T * ldr, lde, buf(5), ldr, E1, R, part, T},                                      // out: dl^T g2
      {buf(6), ldr, buf(4), ldr, R, R, part + chunks * E1 * R, T},                                // fc2: da2^T g1
      {buf(7), ldr, buf(3), ldr, R, R, part + chunks * (E1 * R + R * R), T},                      // fc1: da1^T nrm
      {buf(8), ldr, static_cast<const uint16_t*>(a.x), a.x_row_stride, R, a.hidden,               // down: drho^T x
       part + chunks * (E1 * R + 2 * R * R), T}};
  void* outs[4] = {a.grad_out_w, a.grad_fc2_w, a.grad_fc1_w, a.grad_down_w};
  for (int i = 0; i < 4; ++i)
    if (const char* err = run_wgrad<D, kLdsm>(jobs[i], chunks, warp, outs[i], stream)) return err;
  return nullptr;
}

// Version 2 by default: the recompute on the forward's version-2 tiles (Big2, else Wide2: cp.async
// double buffering on CUDA, <= 32 KiB of LDS on CDNA up to a width of 256), and on CDNA the layer and
// dx kernels on Big2's 32-token tiles (LDS <= 32 KiB). ZAYA_KERNELS=v1: every kernel on version 1's
// tiles (Big / Small) with scalar fragment loads.
template <class D, class C>
const char* run_cfg(const RouterBackwardArgs& a, int warp, vendor::stream_t stream) {
  using router::Big2;
  using router::Wide2;
  constexpr bool kBig = C::kTokens == router::Big::kTokens;
  using CR = std::conditional_t<kBig, Big2, Wide2>;
  if (runtime::kernels_v1()) return run<D, C, C, C, false>(a, warp, stream);
#if ZAYA_WARP_SIZE == 32
  return run<D, C, CR, C, true>(a, warp, stream);
#else
  return run<D, C, CR, std::conditional_t<kBig, Big2, C>, false>(a, warp, stream);
#endif
}

inline const char* launch_router_backward_impl(const RouterBackwardArgs& a, vendor::stream_t stream) {
  int64_t width = 0;
  if (const char* err = router::check_args(
          a,
          router::ArgMessages{"zaya router_backward: the GPU kernel takes bfloat16 or float16",
                              "zaya router_backward: need router_dim >= 1, classes >= 2, hidden >= 0, tokens >= 0",
                              "zaya router_backward: max(router_dim, classes) exceeds kRouterMaxWidth",
                              "zaya router_backward: hidden exceeds the kernel's 32-bit column index"},
          &width))
    return err;
  if (a.tokens == 0) return nullptr;
  int dev = 0, warp = 0;
  if (const char* err = vendor::current_device("router_backward", &dev, &warp)) return err;
  const bool big = router_backward_block_tokens(a.router_dim, a.classes) == router::Big::kTokens;
  static_assert(router::Small::kTokens == 16 && router::Big::kWidth == 256, "router_backward_block_tokens");
  if (a.dtype == DType::BF16)
    return big ? run_cfg<dtype::BF16, router::Big>(a, warp, stream) : run_cfg<dtype::BF16, router::Small>(a, warp, stream);
  return big ? run_cfg<dtype::F16, router::Big>(a, warp, stream) : run_cfg<dtype::F16, router::Small>(a, warp, stream);
}

}  // namespace zaya::kernels::router_bwd
