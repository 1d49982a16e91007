// Portable backward kernels of zaya::cca_qkv_functional (the op zaya::cca_qkv_functional_backward),
// compiled by nvcc (cuda/cca_qkv_backward.cu), hip-clang (hip/cca_qkv_backward.hip) and the SIMT
// emulator. The launcher at the bottom implements the contract of cca_qkv_backward_launch.h.
//
// Maths: the CPU kernel's (csrc/cpu/cca_qkv_functional_backward.cpp), the gradient of
// zaya_ops.reference.cca_qkv_functional through RoPE, the QK norm (its clamp), the key temperature, the
// q/k residual means, the two-stage causal conv with its left history (conv_state) and the delayed value
// shift. Nothing of the forward is saved: the grouped conv's output Y is recomputed by the forward's own
// code (cca_qkv_conv.cuh's conv_gemm, device functions only: this object holds no forward kernel; the
// depthwise taps A rounded to the dtype exactly as the forward and the reference round them, an exact
// bf16/fp16 GEMM with fp32 accumulation). The rest is fp32 without the
// forward's intermediate roundings (vendor::fadd/fmul, never contracted), each gradient rounded once.
// Operand precision: the dtype's 8 (bf16) or 11 (fp16) bits would cost the fp32 contract (measured: fp16
// qk_temp one ulp off at T = 257 with u rounded once), so every fp32 operand of the matrix units is
// split into two dtype parts, hi = round(v) and lo = round(v - hi), about 16-22 bits: Y = A_hi Wg + A_lo Wg,
// GA = GY_hi Wg + GY_lo Wg, dWg^T = A_hi^T GY_hi + A_hi^T GY_lo + A_lo^T GY_hi (Wg is exact in its dtype).
// For channel group gi (D channels, first c0 = gi D), token t, taps A[t] = [u[t-1], u[t]] per channel:
//   GY[t]  = d(q or k)/d(conv output), per row: RoPE^T, temperature, norm backward (fp32, kept in the
//            workspace: token t's tap gradients need GY of t + 1 and t + 2, and a key head's residual
//            path needs all g query heads of its group);
//   GA     = GY Wg         [tokens, D] x [D, 2D] per group    (mma)
//   dWg   += GY^T A        [D, tokens] x [tokens, 2D]          (mma, as dWg^T = A^T GY)
//   then per channel: gu[t] = GA[t][u[t]] + GA[t+1][u[t]] (within the sequence), d z[t] = w1 gu[t] +
//   w0 gu[t+1] (+ the residual paths (GY_q + GY_k / g) / 2), the depthwise weight/bias terms, and at a
//   sequence's first token the conv_state gradient. Values: a reshuffle of grad_v.
//
// Kernels, in stream order:
//   1. x (grid ceil(T / bm) x heads, per kind of group, bm = the forward's block_tokens(D)): conv_gemm
//      (the forward's), x = Y + bias + residual -> the workspace's GY rows; then norm (a warp per row):
//      norm/RoPE/temperature backward -> GY in place (fp32) and the row's d qk_temp term.
//   2. conv (grid S x heads x D / 16 per kind of group, S = ceil(T / 256) token ranges, 16 channels (32 K columns)
//      per CTA): for each 32-token block of its range: GY rows staged in two parts (A of GA, B of
//      dWg^T), the A chunk rebuilt (cca_qkv's build_a_chunk) and transposed (A of dWg^T), GA = GY
//      Wg[:, chunk] and dWg^T[chunk] += A^T GY (mma; dWg's accumulators stay in registers over the
//      range), GA of the two tokens after the block in fp32 SIMT (from the workspace's GY), then a
//      thread per (channel, row): input gradients, conv_state gradients, and the depthwise/bias terms
//      summed in row order. Each CTA writes its partial rows.
//   3. values (a thread per (token, value channel)); 4. reduce (ordered_sum.cuh: a thread per parameter
//      element sums the token ranges' partials in order, one rounding).
// Deterministic: no atomics anywhere; every sum runs in a fixed order that depends on T only (the
// partial ranges are fixed 256-token ranges, the temperature sums its per-token terms in token order).
//
// Matrix units: the three products (Y recompute, GA, dWg) are [tokens, 2D] x [2D, D]-sized GEMMs per
// channel group on mma.cuh (mma.sync on CUDA, v_mfma on CDNA); the per-row norm/RoPE backward and the
// depthwise conv are elementwise (SIMT).
//
// Roofline, ZAYA1 shapes (nq 8, nkv 2, D 128, C = 1280, bf16), per token: kernel 1 reads qt/kt 2.5 KB,
// grad_q/grad_k 2.5 KB and writes GY 5 KB (fp32); kernel 2 reads GY 5 KB (each of the D / 16 chunk CTAs
// of a group re-reads its group's rows from L2) and qt/kt 2.5 KB (L2 re-reads likewise), writes
// g_qt/g_kt 2.5 KB; values 0.5 KB in, 0.5 KB out: ~21 KB of DRAM traffic per token. Per call: the
// partials, ceil(T / 256) x (C x 2D + 4C) x 4 B = 1.33 MB per 256 tokens (5.2 KB per token, written
// once and read once by the reduce), the weights (0.66 MB) once per token block from L2.
// FLOPs: three [tokens, 2D] x [2D, D] products per group, 2 x C x 2D = 655 kFLOP each per token, issued
// as 2 + 2 + 3 = 7 split-operand mma passes: 4.6 MFLOP per token on the matrix units (4096 tokens: 19
// GFLOP, ~24 us at 790 TFLOP/s dense bf16) against ~26 KB x 4096 = 107 MB (~27 us at 4 TB/s): memory-
// bound, near the ridge; without the split it would be 3x under it. The fp32 GY round trip is the largest
// memory term (a fused single pass would need a 2-token halo across CTAs and a whole KV group per CTA).
// Resources (compile checks only, no GPU run; not tuned on hardware): nvcc sm_90a: x_kernel 118-122
// registers, norm_kernel 44-56, conv_kernel 99-116, 0 spills; 47104 / 38528 B static shared memory.
// tools/check_hip.sh gfx940/gfx90a: x_kernel 86-95 VGPRs (8 v_mfma; 35840 B LDS: the CDNA K chunk of 32),
// conv_kernel 130-145 VGPRs (14 v_mfma), no scratch, no spills; conv_kernel<F16, true> at 104 SGPRs on
// both (little headroom).
#pragma once

#include <cmath>
#include <cstdint>

#include "cca_qkv_backward_launch.h"
#include "cca_qkv_conv.cuh"
#include "mma.cuh"
#include "ordered_sum.cuh"
#include "vendor.h"

namespace zaya::kernels::cca_qkv_bwd {

using cca_qkv::kLdK;
using cca_qkv::kThreads;
using cca_qkv::kWarps;
using cca_qkv::load8;
using cca_qkv::Raw8;
using cca_qkv::sequence_of;
using cca_qkv::store8;
using vendor::fadd;
using vendor::fmul;
using vendor::kWarpSize;

inline constexpr int kMaxD = 128;                  // static shared memory of the conv kernel
inline constexpr int kPerLane = kMaxD / kWarpSize;  // row elements per lane in norm_kernel
inline constexpr int kBT = 32;                      // tokens per block of the conv kernel
inline constexpr int kKW = 32;                      // K columns (16 channels, two taps) per conv CTA
inline constexpr int kCh = kKW / 2;
inline constexpr int kLdW = kKW + 8;                // pitches (elements) of the staged tiles
inline constexpr int kLdG = kMaxD + 8;
inline constexpr int kLdT = kBT + 8;
inline constexpr int kLdGA = kKW + 4;               // fp32
inline constexpr int kRowGroups = kThreads / kCh;   // threads per channel in the combine step
inline constexpr int kSuper = static_cast<int>(kCcaQkvBwdSuperTokens);
static_assert(kSuper % kBT == 0, "token ranges are whole conv blocks");
static_assert(kMaxD / 16 <= kWarps, "one dWg n-tile per warp");

// --------------------------------------------------------------------------------------------
// 1. GY: the gradient of the grouped conv's output
// --------------------------------------------------------------------------------------------
inline constexpr int kGySmemBytes = cca_qkv::conv_gemm_split_smem_bytes(kMaxD);
struct GySmem {
  uint4 raw[kGySmemBytes / 16];
  int r_i[cca_qkv::kMaxBM];  // index in its sequence; -1: no token (or in no sequence); -2: bad position
  int r_slot[cca_qkv::kMaxBM];
};

template <class P, bool IsK>
__global__ void __launch_bounds__(kThreads) x_kernel(CcaQkvBackwardArgs a) {
  __shared__ GySmem sm;
  const int tid = static_cast<int>(threadIdx.x);
  const int D = static_cast<int>(a.in.D), bm = cca_qkv::block_tokens(D);
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * bm;
  const int nq = static_cast<int>(a.in.nq), g = static_cast<int>(a.in.nq / a.in.nkv);
  const int head = static_cast<int>(blockIdx.y), gi = head + (IsK ? nq : 0), j = IsK ? head : head / g;
  const int c0 = gi * D, C = static_cast<int>((a.in.nq + a.in.nkv) * a.in.D);  // < 2^31 (heads < 65536, D <= 128)
  const uint16_t* qt = static_cast<const uint16_t*>(a.in.qt);
  const uint16_t* kt = static_cast<const uint16_t*>(a.in.kt);
  float* GY = a.workspace;

  for (int r = tid; r < bm; r += kThreads) {
    const int64_t t = t0 + r;
    int i = -1, slot = 0;
    int64_t pos = 0;
    if (t < a.in.T) {
      const int64_t b = sequence_of(a.in.cu_seqlens, a.in.B, t);
      if (b >= 0 && a.in.cu_seqlens[b] >= 0) {
        slot = static_cast<int>(b);
        pos = a.in.positions[t];
        i = pos >= 0 && pos < a.in.P ? static_cast<int>(t - a.in.cu_seqlens[b]) : -2;
      }
    }
    sm.r_i[r] = i, sm.r_slot[r] = slot;
  }
  __syncthreads();

  const uint16_t* zsrc = IsK ? kt + (c0 - static_cast<int64_t>(nq) * D) : qt + c0;
  const int64_t zrs = IsK ? a.in.kt_rs : a.in.qt_rs;
  float* Y = cca_qkv::conv_gemm<P, true>(a.in, sm.raw, bm, t0, c0, zsrc, zrs, sm.r_i, sm.r_slot);
  const int ldy = D + 4;

  // x = Y + bias + residual (rq_h = (qt_h + kt_j) / 2; keys: the mean over the group), in place.
  const uint16_t* gb = static_cast<const uint16_t*>(a.in.gb) + c0;
  const float inv_g = vendor::fdiv(1.f, static_cast<float>(g));
  for (int u = tid; u < bm * D; u += kThreads) {
    const int r = u / D, d = u % D;
    if (sm.r_i[r] < 0) continue;
    const int64_t t = t0 + r;
    const float k = P::to_float(kt[t * a.in.kt_rs + static_cast<int64_t>(j) * D + d]);
    const int h_first = IsK ? j * g : gi, h_count = IsK ? g : 1;
    float res = 0.f;
    for (int hh = 0; hh < h_count; ++hh)
      res = fadd(res,
                 fmul(fadd(P::to_float(qt[t * a.in.qt_rs + static_cast<int64_t>(h_first + hh) * D + d]), k), 0.5f));
    float* y = Y + r * ldy + d;
    *y = fadd(fadd(*y, P::to_float(gb[d])), IsK ? fmul(res, inv_g) : res);
  }
  __syncthreads();

  // x into the workspace's GY rows (norm_kernel turns them into GY in place): rows in no sequence 0,
  // rows with a bad position NaN.
  for (int u = tid; u < bm * D; u += kThreads) {
    const int r = u / D, d = u % D;
    const int64_t t = t0 + r;
    if (t >= a.in.T) break;
    const int i = sm.r_i[r];
    GY[t * C + c0 + d] = i >= 0 ? Y[r * ldy + d] : (i == -1 ? 0.f : NAN);
  }
}

// A warp per row (token blockIdx.x * kWarps + warp, head blockIdx.y of the kind): from x, gx = RoPE^T go
// (then * temp for keys), GY = r (gx - x (x . gx) / n^2) with r = sqrt(D) / max(n, eps) (the clamp passes
// no gradient to n below eps), in place; keys: the row's d qk_temp term. A separate kernel from x_kernel:
// together they kept too many scalar registers live on CDNA.
template <class P, bool IsK>
__global__ void __launch_bounds__(kThreads) norm_kernel(CcaQkvBackwardArgs a) {
  const int lane = vendor::lane_id(), warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (t >= a.in.T) return;  // uniform over the warp
  const int D = static_cast<int>(a.in.D), nq = static_cast<int>(a.in.nq);
  const int head = static_cast<int>(blockIdx.y), gi = head + (IsK ? nq : 0), j = head;
  const int c0 = gi * D, C = static_cast<int>((a.in.nq + a.in.nkv) * a.in.D);
  float* gyo = a.workspace + t * C + c0;
  const int64_t b = sequence_of(a.in.cu_seqlens, a.in.B, t);
  const int64_t pos = b >= 0 ? a.in.positions[t] : 0;
  if (b < 0 || a.in.cu_seqlens[b] < 0 || pos < 0 || pos >= a.in.P) {  // x is 0 or NaN already
    if (IsK && lane == 0) a.workspace[a.in.T * C + t * a.in.nkv + j] = b < 0 || a.in.cu_seqlens[b] < 0 ? 0.f : NAN;
    return;
  }
  const int half = static_cast<int>(a.in.half);
  const uint16_t* go = static_cast<const uint16_t*>(IsK ? a.grad_k : a.grad_q) +
                       (t * (IsK ? a.in.nkv : a.in.nq) + head) * D;
  const uint16_t* cs = static_cast<const uint16_t*>(a.in.cos_sin) + pos * a.in.cs_rs;
  float gx[kPerLane], xv[kPerLane];
  float ss = 0.f, gdot = 0.f;
#pragma unroll
  for (int m = 0; m < kPerLane; ++m) {
    const int d = lane + m * kWarpSize;
    gx[m] = xv[m] = 0.f;
    if (d >= D) continue;
    const float gd = P::to_float(go[d]);
    float v = gd;
    if (d < half) {
      v = fadd(fmul(gd, P::to_float(cs[d])), fmul(P::to_float(go[d + half]), P::to_float(cs[half + d])));
    } else if (d < 2 * half) {
      const int e = d - half;
      v = fadd(fmul(gd, P::to_float(cs[e])), -fmul(P::to_float(go[e]), P::to_float(cs[d])));
    }
    gx[m] = v;
    xv[m] = gyo[d];
    ss = fadd(ss, fmul(xv[m], xv[m]));
    gdot = fadd(gdot, fmul(v, xv[m]));
  }
  for (int off = kWarpSize / 2; off > 0; off >>= 1) {
    ss = fadd(ss, vendor::shfl_xor(ss, off));
    gdot = fadd(gdot, vendor::shfl_xor(gdot, off));
  }
  const float n = vendor::sqrt_rn(ss);
  const float rs = vendor::fdiv(a.in.sqrt_d, n < a.in.eps ? a.in.eps : n);  // NaN stays NaN
  if (IsK) {
    if (lane == 0) a.workspace[a.in.T * C + t * a.in.nkv + j] = fmul(gdot, rs);
    const float tk = P::to_float(static_cast<const uint16_t*>(a.in.temp)[j]);
#pragma unroll
    for (int m = 0; m < kPerLane; ++m) gx[m] = fmul(gx[m], tk);
    gdot = fmul(gdot, tk);  // x . (gx * temp)
  }
  if (n >= a.in.eps && n > 0.f) {
    const float kk = vendor::fdiv(gdot, fmul(n, n));
#pragma unroll
    for (int m = 0; m < kPerLane; ++m) gx[m] = fmul(rs, fadd(gx[m], -fmul(xv[m], kk)));
  } else {
#pragma unroll
    for (int m = 0; m < kPerLane; ++m) gx[m] = fmul(gx[m], rs);
  }
#pragma unroll
  for (int m = 0; m < kPerLane; ++m) {
    const int d = lane + m * kWarpSize;
    if (d < D) gyo[d] = gx[m];
  }
}

// --------------------------------------------------------------------------------------------
// 2. Conv backward: GA = GY Wg, dWg = GY^T A, depthwise and input gradients
// --------------------------------------------------------------------------------------------
struct alignas(16) ConvSmem {
  uint16_t Ws[kMaxD * kLdW];                     // Wg[c0 + n][kc0 .. kc0 + 32): B of GA (k-major)
  union {
    struct {
      uint16_t hi[kBT * kLdG], lo[kBT * kLdG];   // GY of the block's rows in two dtype parts: A of GA,
    } gy;                                        // B of dWg^T
    float GAs[(kBT + 2) * kLdGA];                // GA of those rows and the next two, this CTA's columns
    float part[kRowGroups * kCh * 4];            // the combine threads' sums, at the end
  };
  uint16_t As[2][kBT * kLdW];                    // the A chunk (cca_qkv::build_a_chunk), two parts
  uint16_t At[2][kKW * kLdT];                    // and transposed: A of dWg^T
  int r_i[kBT], r_slot[kBT], r_n[kBT];
  int64_t r_soff[kBT];                           // the row's conv_state row offset (b * st0)
};
static_assert(sizeof(ConvSmem) <= 48 * 1024, "static shared memory must stay under 48 KB");

// The two dtype parts of an fp32 value: hi = round(v), lo = round(v - hi).
template <class P>
ZAYA_DEV void split(float v, uint16_t& hi, uint16_t& lo) {
  hi = P::from_float(v);
  lo = P::from_float(fadd(v, -P::to_float(hi)));
}

// IsK: the key-head groups (blockIdx.y = KV head), else the query-head groups; two instantiations, as
// the forward's, so that each keeps only its own arguments in scalar registers.
template <class P, bool IsK>
__global__ void __launch_bounds__(kThreads) conv_kernel(CcaQkvBackwardArgs a) {
  __shared__ ConvSmem sm;
  const int tid = static_cast<int>(threadIdx.x), lane = vendor::lane_id(), warp = tid / kWarpSize;
  const int D = static_cast<int>(a.in.D), D2 = 2 * D;
  const int nq = static_cast<int>(a.in.nq), g = static_cast<int>(a.in.nq / a.in.nkv);
  const int gi = static_cast<int>(blockIdx.y) + (IsK ? nq : 0), kc = static_cast<int>(blockIdx.z), kc0 = kc * kKW;
  constexpr bool is_k = IsK;
  const int j = is_k ? gi - nq : gi / g;
  // 32-bit sizes where they fit (fewer scalar registers on CDNA): C, qw < 2^31 (heads < 65536, D <= 128).
  const int C = static_cast<int>((a.in.nq + a.in.nkv) * a.in.D), qw = static_cast<int>(a.in.nq * a.in.D), c0 = gi * D;
  const int64_t s0 = static_cast<int64_t>(blockIdx.x) * kSuper;
  const int64_t s1 = s0 + kSuper < a.in.T ? s0 + kSuper : a.in.T;
  const uint16_t* zsrc = is_k ? static_cast<const uint16_t*>(a.in.kt) + (c0 - qw) : static_cast<const uint16_t*>(a.in.qt) + c0;
  const int64_t zrs = is_k ? a.in.kt_rs : a.in.qt_rs;
  const float* GY = a.workspace;

  // The weight chunk, once: Ws[n][k] = Wg[c0 + n][kc0 + k].
  const uint16_t* gw = static_cast<const uint16_t*>(a.in.gw) + static_cast<int64_t>(c0) * D2 + kc0;
  for (int u = tid; u < D * (kKW / 8); u += kThreads) {
    const int n = u / (kKW / 8), v = (u % (kKW / 8)) * 8;
    store8(sm.Ws + n * kLdW + v, load8(gw + static_cast<int64_t>(n) * D2 + v));
  }

  // The combine step's thread: channel cl of the chunk (group channel d), rows rg, rg + kRowGroups, ..
  const int cl = tid % kCh, rg = tid / kCh, d = kc * kCh + cl;
  const int64_t c = c0 + d;
  const float w0 = P::to_float(static_cast<const uint16_t*>(a.in.dw_w)[2 * c]);
  const float w1 = P::to_float(static_cast<const uint16_t*>(a.in.dw_w)[2 * c + 1]);
  // Per-thread bases (vector registers: the loop below keeps few scalar ones live on CDNA).
  const uint16_t* zc = zsrc + d;
  const uint16_t* cst = static_cast<const uint16_t*>(a.in.conv_state) + c * a.in.st1;
  uint16_t* gst = static_cast<uint16_t*>(a.g_state) + c * 2;
  const int ors = IsK ? static_cast<int>(a.in.nkv * a.in.D) : qw;  // output row stride
  uint16_t* gout = static_cast<uint16_t*>(IsK ? a.g_kt : a.g_qt) + (IsK ? c - qw : c);
  const float* gyc = GY + c;                                                       // this channel's GY
  const float* gyo = GY + (IsK ? static_cast<int64_t>(j * g) * D : qw + static_cast<int64_t>(j) * D) + d;  // the other path's
  float s_db = 0.f, s_dw0 = 0.f, s_dw1 = 0.f, s_gb = 0.f;
  const float inv_g = vendor::fdiv(1.f, static_cast<float>(g));

  // dWg^T [32 chunk columns][D] += A^T GY: warp w owns n-tile w (rows n of the group) by both m-tiles.
  const bool has_w = warp < D / 16;
  mma::FragC accw[kKW / 16];
#pragma unroll
  for (int mt = 0; mt < kKW / 16; ++mt) mma::zero(accw[mt]);
  // GA = GY Wg[:, chunk] of the block's rows: kBT / 16 m-tiles x 2 n-tiles, a job per warp.
  constexpr int kGaJobs = kBT / 16 * (kKW / 16);
  static_assert(kGaJobs <= kWarps, "one GA tile per warp");
  const bool has_ga = warp < kGaJobs;
  const int gm = warp / (kKW / 16), gn = warp % (kKW / 16);

  for (int64_t t0 = s0; t0 < s1; t0 += kBT) {
    for (int r = tid; r < kBT; r += kThreads) {
      const int64_t t = t0 + r;
      int i = -1, b = 0, n = 0;
      if (t < a.in.T) {
        const int64_t bb = sequence_of(a.in.cu_seqlens, a.in.B, t);
        if (bb >= 0 && a.in.cu_seqlens[bb] >= 0) {
          b = static_cast<int>(bb);
          i = static_cast<int>(t - a.in.cu_seqlens[bb]);
          n = static_cast<int>(a.in.cu_seqlens[bb + 1] - a.in.cu_seqlens[bb]);
        }
      }
      sm.r_i[r] = i, sm.r_slot[r] = b, sm.r_n[r] = n, sm.r_soff[r] = b * a.in.st0;
    }
    // GY rows of the block (tokens of the range; others 0), in two parts.
    for (int u = tid; u < kBT * D; u += kThreads) {
      const int r = u / D, n = u % D;
      const int64_t t = t0 + r;
      split<P>(t < s1 ? GY[t * C + c0 + n] : 0.f, sm.gy.hi[r * kLdG + n], sm.gy.lo[r * kLdG + n]);
    }
    __syncthreads();
    cca_qkv::build_a_chunk<P, true>(a.in, sm.As[0], sm.As[1], kLdW, kBT, t0, kc0, kKW, c0, zsrc, zrs, sm.r_i,
                                    sm.r_slot, tid);
    __syncthreads();
    for (int u = tid; u < 2 * kBT * kKW; u += kThreads) {
      const int p = u / (kBT * kKW), r = (u / kKW) % kBT, k = u % kKW;
      sm.At[p][k * kLdT + r] = sm.As[p][r * kLdW + k];
    }
    __syncthreads();

    mma::FragC acc;
    if (has_ga) {
      mma::zero(acc);
      for (int ks = 0; ks < D; ks += 16) {
        const mma::FragB fb = mma::load_b_kn(sm.Ws + ks * kLdW + gn * 16, kLdW, lane);
        mma::mma<P>(acc, mma::load_a(sm.gy.hi + gm * 16 * kLdG + ks, kLdG, lane), fb);
        mma::mma<P>(acc, mma::load_a(sm.gy.lo + gm * 16 * kLdG + ks, kLdG, lane), fb);
      }
    }
    if (has_w) {
      for (int ks = 0; ks < kBT; ks += 16) {
        const mma::FragB bh = mma::load_b_kn(sm.gy.hi + ks * kLdG + warp * 16, kLdG, lane);
        const mma::FragB bl = mma::load_b_kn(sm.gy.lo + ks * kLdG + warp * 16, kLdG, lane);
#pragma unroll
        for (int mt = 0; mt < kKW / 16; ++mt) {
          const mma::FragA ah = mma::load_a(sm.At[0] + mt * 16 * kLdT + ks, kLdT, lane);
          const mma::FragA al = mma::load_a(sm.At[1] + mt * 16 * kLdT + ks, kLdT, lane);
          mma::mma<P>(accw[mt], ah, bh);  // hi x hi + hi x lo + lo x hi: about 22-bit operands
          mma::mma<P>(accw[mt], ah, bl);
          mma::mma<P>(accw[mt], al, bh);
        }
      }
    }
    __syncthreads();  // GY parts read: GAs goes over them
    if (has_ga) {
#pragma unroll
      for (int e = 0; e < mma::kAccum; ++e)
        sm.GAs[(gm * 16 + mma::c_row(lane, e)) * kLdGA + gn * 16 + mma::c_col(lane, e)] = acc.x[e];
    }
    // GA of the two tokens after the block (their taps reach the block's last inputs), fp32 SIMT.
    for (int u = tid; u < 2 * kKW; u += kThreads) {
      const int r = kBT + u / kKW, k = u % kKW;
      const int64_t t = t0 + r;
      float v = 0.f;
      if (t < a.in.T) {
        const float* gy = GY + t * C + c0;
        for (int n = 0; n < D; ++n) v = fadd(v, fmul(gy[n], P::to_float(sm.Ws[n * kLdW + k])));
      }
      sm.GAs[r * kLdGA + k] = v;
    }
    __syncthreads();

    // Per (channel, row): tap gradients -> input gradient, depthwise terms, conv_state gradient.
    for (int r = rg; r < kBT; r += kRowGroups) {
      const int i = sm.r_i[r];
      if (i < 0) continue;
      const int64_t t = t0 + r;
      const int b = sm.r_slot[r], n = sm.r_n[r];
      const uint16_t* cs_b = cst + sm.r_soff[r];
      auto z = [&](int k) {  // z[t + k] of channel c
        return i + k >= 0 ? P::to_float(zc[(t + k) * zrs]) : P::to_float(cs_b[(2 + i + k) * a.in.st2]);
      };
      const float* ga0 = sm.GAs + r * kLdGA + 2 * cl;
      const float* ga1 = ga0 + kLdGA;
      const float* ga2 = ga1 + kLdGA;
      const float gu = fadd(ga0[1], i + 1 < n ? ga1[0] : 0.f);
      const float gu_next = i + 1 < n ? fadd(ga1[1], i + 2 < n ? ga2[0] : 0.f) : 0.f;
      // residual paths, then the conv's share
      const float gy = gyc[t * C];
      s_gb = fadd(s_gb, gy);
      float gz;
      if (!is_k) {
        gz = fmul(fadd(gy, fmul(gyo[t * C], inv_g)), 0.5f);
      } else {
        const float gyk = fmul(gy, inv_g);
        gz = 0.f;
        for (int hh = 0; hh < g; ++hh) gz = fadd(gz, fmul(fadd(gyo[t * C + hh * D], gyk), 0.5f));
      }
      gz = fadd(gz, fadd(fmul(w1, gu), fmul(w0, gu_next)));
      s_db = fadd(s_db, gu);
      s_dw0 = fadd(s_dw0, fmul(gu, z(-1)));
      s_dw1 = fadd(s_dw1, fmul(gu, z(0)));
      if (i == 0) {  // u[-1] from the history: the sequence's first output reads it as u[t-1]
        const float gm0 = ga0[0];
        s_db = fadd(s_db, gm0);
        s_dw0 = fadd(s_dw0, fmul(gm0, z(-2)));
        s_dw1 = fadd(s_dw1, fmul(gm0, z(-1)));
        uint16_t* hs = gst + static_cast<int64_t>(b) * C * 2;
        hs[0] = P::from_float(fmul(w0, gm0));
        hs[1] = P::from_float(fadd(fmul(w1, gm0), fmul(w0, gu)));
      }
      gout[t * ors] = P::from_float(gz);
    }
    __syncthreads();  // GAs, As and the row table are rewritten by the next block
  }

  // This range's partials: dWg from the accumulators, the vectors summed over the row groups in order.
  const int64_t S = (a.in.T + kSuper - 1) / kSuper;
  float* pw = a.workspace + a.in.T * C + a.in.T * a.in.nkv;
  float* pgb = pw + S * C * D2;
  float* pdw = pgb + S * C;
  float* pdb = pdw + S * 2 * C;
  if (has_w) {
    float* o = pw + static_cast<int64_t>(blockIdx.x) * C * D2 + static_cast<int64_t>(c0 + warp * 16) * D2 + kc0;
#pragma unroll
    for (int mt = 0; mt < kKW / 16; ++mt) {
#pragma unroll
      for (int e = 0; e < mma::kAccum; ++e)
        o[static_cast<int64_t>(mma::c_col(lane, e)) * D2 + mt * 16 + mma::c_row(lane, e)] = accw[mt].x[e];
    }
  }
  float* part = sm.part + (rg * kCh + cl) * 4;
  part[0] = s_db, part[1] = s_dw0, part[2] = s_dw1, part[3] = s_gb;
  __syncthreads();
  if (tid < kCh) {
    float v[4] = {0.f, 0.f, 0.f, 0.f};
    for (int q = 0; q < kRowGroups; ++q) {
#pragma unroll
      for (int e = 0; e < 4; ++e) v[e] = fadd(v[e], sm.part[(q * kCh + tid) * 4 + e]);
    }
    // cc = c0 + kc * kCh + tid (cl == tid here) from the thread's c: no uniform kc * kCh live over the
    // loop (it spilled an SGPR in conv_kernel<F16, true> on gfx90a).
    const int64_t sb = blockIdx.x, cc = c;
    pdb[sb * C + cc] = v[0];
    pdw[sb * 2 * C + 2 * cc] = v[1];
    pdw[sb * 2 * C + 2 * cc + 1] = v[2];
    pgb[sb * C + cc] = v[3];
  }
}

// --------------------------------------------------------------------------------------------
// 3. Values: v[t] = [vc[t], vd[t-1] (value_state[b] at a sequence's first token)]
// --------------------------------------------------------------------------------------------
inline constexpr int kValueThreads = 256;

__global__ void __launch_bounds__(kValueThreads) values_kernel(CcaQkvBackwardArgs a) {
  const int64_t hv = a.in.nkv * a.in.D / 2;
  const int64_t e = static_cast<int64_t>(blockIdx.x) * kValueThreads + threadIdx.x;
  if (e >= a.in.T * hv) return;
  const int64_t t = e / hv, k = e % hv;
  const int64_t b = sequence_of(a.in.cu_seqlens, a.in.B, t);
  if (b < 0 || a.in.cu_seqlens[b] < 0) return;
  const uint16_t v = static_cast<const uint16_t*>(a.grad_v)[t * 2 * hv + hv + k];
  if (t > a.in.cu_seqlens[b]) {
    static_cast<uint16_t*>(a.g_vd)[(t - 1) * hv + k] = v;
  } else {
    static_cast<uint16_t*>(a.g_vs)[b * hv + k] = v;
  }
}

// --------------------------------------------------------------------------------------------
// Host side
// --------------------------------------------------------------------------------------------
using vendor::aligned16;

inline const char* launch_cca_qkv_backward_impl(const CcaQkvBackwardArgs& a, vendor::stream_t stream) {
  if (a.in.dtype != DType::BF16 && a.in.dtype != DType::F16)
    return "zaya cca_qkv_functional_backward: dtype must be bfloat16 or float16";
  if (a.in.D % 16 != 0 || a.in.D < 16 || a.in.D > kMaxD)
    return "zaya cca_qkv_functional_backward: head dim must be a multiple of 16 in [16, 128]";
  if (a.in.nkv <= 0 || a.in.nq % a.in.nkv != 0 || 2 * a.in.half > a.in.D)
    return "zaya cca_qkv_functional_backward: bad head counts or rotary width";
  if (!aligned16(a.in.qt) || !aligned16(a.in.kt) || !aligned16(a.in.gw) || !aligned16(a.in.dw_w) ||
      !aligned16(a.in.dw_b) || !aligned16(a.in.gb) || !aligned16(a.workspace) ||
      (a.in.T > 1 && ((a.in.qt_rs * 2) % 16 != 0 || (a.in.kt_rs * 2) % 16 != 0)))
    return "zaya cca_qkv_functional_backward: qt, kt, the weights and the workspace must be 16-byte aligned";
  if (a.in.T == 0 || a.in.B == 0) return nullptr;
  const int64_t C = (a.in.nq + a.in.nkv) * a.in.D, hv = a.in.nkv * a.in.D / 2, S = (a.in.T + kSuper - 1) / kSuper;
  if (a.in.T > int64_t{0x3fffffff} || a.in.nq + a.in.nkv > 65535 || a.in.B > int64_t{0x7fffffff} ||
      a.in.T * hv / 256 > 0x7fffffff)
    return "zaya cca_qkv_functional_backward: too many tokens, heads or sequences for one launch";
  int dev = 0, warp = 0;
  if (const char* err = vendor::current_device("cca_qkv_functional_backward", &dev, &warp)) return err;
  const dim3 block(static_cast<unsigned>(kWarps * warp));  // = kThreads, from the device's wave size
  const unsigned blocks = static_cast<unsigned>((a.in.T + cca_qkv::block_tokens(static_cast<int>(a.in.D)) - 1) /
                                                cca_qkv::block_tokens(static_cast<int>(a.in.D)));
  const float* ws = a.workspace;
  const float* trow = ws + a.in.T * C;
  const float* pw = trow + a.in.T * a.in.nkv;
  const float* pgb = pw + S * C * 2 * a.in.D;
  const float* pdw = pgb + S * C;
  const float* pdb = pdw + S * 2 * C;
  auto run = [&](auto pt) -> const char* {
    using P = decltype(pt);
    const unsigned nq = static_cast<unsigned>(a.in.nq), nkv = static_cast<unsigned>(a.in.nkv);
    if (const char* err = vendor::launch(&x_kernel<P, false>, dim3(blocks, nq), block, 0, stream, a)) return err;
    if (const char* err = vendor::launch(&x_kernel<P, true>, dim3(blocks, nkv), block, 0, stream, a)) return err;
    const unsigned rows = static_cast<unsigned>((a.in.T + kWarps - 1) / kWarps);
    if (const char* err = vendor::launch(&norm_kernel<P, false>, dim3(rows, nq), block, 0, stream, a)) return err;
    if (const char* err = vendor::launch(&norm_kernel<P, true>, dim3(rows, nkv), block, 0, stream, a)) return err;
    const unsigned chunks = static_cast<unsigned>(a.in.D / kCh);
    if (const char* err = vendor::launch(&conv_kernel<P, false>, dim3(static_cast<unsigned>(S),
                                         static_cast<unsigned>(a.in.nq), chunks), block, 0, stream, a))
      return err;
    if (const char* err = vendor::launch(&conv_kernel<P, true>, dim3(static_cast<unsigned>(S),
                                         static_cast<unsigned>(a.in.nkv), chunks), block, 0, stream, a))
      return err;
    if (const char* err = vendor::launch(&values_kernel, dim3(static_cast<unsigned>((a.in.T * hv + kValueThreads - 1) /
                                                                                   kValueThreads)),
                                         dim3(kValueThreads), 0, stream, a))
      return err;
    if (const char* err = ordered_sum::launch_sum_partials<P>(pw, S, C * 2 * a.in.D, a.g_gw, stream)) return err;
    if (const char* err = ordered_sum::launch_sum_partials<P>(pgb, S, C, a.g_gb, stream)) return err;
    if (const char* err = ordered_sum::launch_sum_partials<P>(pdw, S, 2 * C, a.g_dw_w, stream)) return err;
    if (const char* err = ordered_sum::launch_sum_partials<P>(pdb, S, C, a.g_dw_b, stream)) return err;
    return ordered_sum::launch_sum_partials<P>(trow, a.in.T, a.in.nkv, a.g_temp, stream);
  };
  return a.in.dtype == DType::BF16 ? run(dtype::BF16{}) : run(dtype::F16{});
}

}  // namespace zaya::kernels::cca_qkv_bwd
