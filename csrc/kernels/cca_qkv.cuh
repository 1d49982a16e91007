// Portable kernel bodies of zaya::cca_qkv, the CCA prologue (spec steps 3-7 and the KV-cache writes
// of step 8), compiled by nvcc (cuda/cca_qkv.cu), hip-clang (hip/cca_qkv.hip) and the SIMT emulator.
// The launcher at the bottom implements the contract of cca_qkv_launch.h.
//
// Maths (python/zaya_ops/reference.py, same rounding points as csrc/cpu/cca_qkv.cpp): for token t of
// sequence b (index i in it) and channel group gi (query head gi < nq, else key head gi - nq),
//   A[t][2d] = u[t-1][d], A[t][2d+1] = u[t][d],  u[s][d] = round(w0 z[s-1] + w1 z[s] + b)   (depthwise)
//   Y[t][n]  = sum_k A[t][k] Wg[gi*D + n][k]                                                (grouped)
// with z[s] from qt/kt, or from the slot's conv_state for s < 0 of the sequence. A is exactly a
// 16-bit value and Wg is stored in the param dtype, so the grouped conv is an exact bf16/fp16 GEMM
// with fp32 accumulation: [tokens, 2D] x [2D, D] per group, which is what the mma runs. Then
// q/k = round(round(Y + bias) + residual), QK norm, key temperature and partial NeoX RoPE.
//
// Design: one pass per (token block, channel group); no intermediate leaves the block.
//   * Grid (ceil(T / BM), heads) per kind of group, 8 warps per block. Tokens of several sequences may share a
//     block (decode batches fill the mma rows): each row finds its sequence by binary search over
//     cu_seqlens, and its first two rows read their left context from conv_state.
//   * The K = 2D reduction runs in chunks of 64: the block builds the A chunk [BM][64] (depthwise
//     conv, rounded to the dtype) and stages the weight chunk [D][64] in shared memory, then each
//     warp multiplies one 16-row m-tile by up to four 16-column n-tiles (mma.cuh, fp32 accumulate).
//     BM = 16 * (8 / ceil(D / 64)): 128 tokens for D <= 64, 64 for D <= 128, 32 for D <= 256, so
//     every warp has one (m-tile, 64 columns) job and shared memory stays under 48 KB.
//   * The accumulators go to shared memory (fp32 [BM][D], over the staging buffers); the epilogue
//     adds bias and residual (element-parallel), takes each row's norm (a warp per row, butterfly
//     sum), applies scale, temperature and RoPE and stores q, or k into the paged cache (v, a plain
//     copy, has its own kernel).
//   * The new conv_state / value_state depend only on the raw inputs, but the first tokens of a
//     sequence read the old ones, possibly in another block: a second small kernel, launched after
//     the first on the same stream, writes each non-empty sequence's slot (one block per sequence).
//
// Roofline, ZAYA1 shapes (nq 8, nkv 2, D 128, bf16), per token: reads qt 2048 B + kt 512 B + vc/vd
// 256 B, writes q 2048 B + k 256 B + v 256 B: ~5.4 KB of DRAM traffic; re-reads (z three times for
// the two taps, qt/kt in the epilogue, g query heads per key block) hit L1/L2. Per call: the
// grouped-conv weights, 1280 x 256 x 2 B = 655 KB, from DRAM once and from L2 once per token block
// (ceil(T / 64) times), plus 2 x (C x 2 + nkv D / 2) x 2 B = 10.8 KB of state per sequence.
// FLOPs: 2 x C x 2D = 655 kFLOP per token on the tensor cores (4096 tokens: 2.7 GFLOP, ~3.4 us at
// 790 TFLOP/s against ~7 us for 22 MB at 3 TB/s): memory-bound at every T, decode by the weights.
//
// Launches, in stream order: the query-group kernel (grid ceil(T/BM) x nq), the key-group kernel
// (x nkv; two instantiations so that each keeps only its own arguments in scalar registers), the v
// cache copy (one block per token) and the state kernel (one block per sequence). On CUDA, a call
// whose tokens fit one token block (decode batches up to BM sequences) is one launch instead
// (cca_qkv_single_block_kernel: 102-110 registers, no spills): every sequence then lives in that
// block, so each group's block can rewrite its channels of the states after its own reads.
//
// Resources (compile checks only, no GPU run): nvcc sm_80/sm_90a 91-110 registers, 0 spills, 44-45 KB
// static shared memory (2 blocks per SM). tools/check_hip.sh gfx940/gfx90a: 82-90 VGPRs, 90-102
// SGPRs, no scratch or spills, 45056 B LDS, occupancy 2 waves/SIMD (LDS-bound: one 8-wave
// workgroup per CU); 16 v_mfma per arch (4 instantiations x 4 unrolled n-tiles).
#pragma once

#include <cmath>
#include <cstdint>

#include "cca_qkv_launch.h"
#include "mma.cuh"
#include "vendor.h"

namespace zaya::kernels::cca_qkv {

using vendor::fadd;
using vendor::fmul;
using vendor::kWarpSize;

inline constexpr int kWarps = 8;
inline constexpr int kThreads = kWarps * kWarpSize;
inline constexpr int kKC = 64;         // K chunk (two taps of 32 channels)
inline constexpr int kLdK = kKC + 8;   // shared row pitch of the A and W chunks, elements (144 B)
inline constexpr int kNT = 4;          // n-tiles (16 columns each) per warp
inline constexpr int kMaxD = 256;
inline constexpr int kMaxBM = 128;
inline constexpr int kStateThreads = 256;

// Tokens per block for head dim D (a multiple of 16).
ZAYA_HD int block_tokens(int D) {
  const int ng = (D / 16 + kNT - 1) / kNT;  // warps across the D columns
  return 16 * (kWarps / ng);
}

constexpr int smem_bytes_for(int D) {
  const int ng = (D / 16 + kNT - 1) / kNT, bm = 16 * (kWarps / ng);
  const int stage = (bm + D) * kLdK * 2, y = bm * (D + 4) * 4;
  return stage > y ? stage : y;
}
constexpr int max_smem_bytes() {
  int m = 0;
  for (int D = 16; D <= kMaxD; D += 16) m = smem_bytes_for(D) > m ? smem_bytes_for(D) : m;
  return m;
}
inline constexpr int kSmemBytes = (max_smem_bytes() + 15) / 16 * 16;
// conv_gemm<P, true>'s shared memory for head dims up to max_d (the A chunk's low part after Ws).
constexpr int conv_gemm_split_smem_bytes(int max_d) {
  int m = 0;
  for (int D = 16; D <= max_d; D += 16) {
    const int ng = (D / 16 + kNT - 1) / kNT, bm = 16 * (kWarps / ng);
    const int stage = (2 * bm + D) * kLdK * 2, y = bm * (D + 4) * 4, b = stage > y ? stage : y;
    m = b > m ? b : m;
  }
  return (m + 15) / 16 * 16;
}
static_assert(kSmemBytes + kMaxBM * 28 <= 48 * 1024, "static shared memory must stay under 48 KB");

// 8 consecutive 16-bit values.
struct alignas(16) Raw8 {
  uint16_t h[8];
};
ZAYA_DEV Raw8 load8(const uint16_t* p) { return *reinterpret_cast<const Raw8*>(p); }
ZAYA_DEV void store8(uint16_t* p, const Raw8& r) { *reinterpret_cast<Raw8*>(p) = r; }

// Sequence of token t: the last b with cu[b] <= t (empty sequences are passed over), or -1.
ZAYA_DEV int64_t sequence_of(const int32_t* cu, int64_t B, int64_t t) {
  int64_t lo = 0, hi = B;  // answer in [lo, hi): first index with cu[idx] > t, minus one
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (cu[mid] <= t) lo = mid; else hi = mid - 1;
  }
  return lo < B && cu[lo] <= t && t < cu[lo + 1] ? lo : -1;
}

// z of 8 channels (c, relative to the group's first channel in qt/kt, and gc absolute) for the
// token at offset k (-2..0) of row t, sequence index i: from the projections, or conv_state.
template <class P, class Args>
ZAYA_DEV void load_z(const Args& a, const uint16_t* zsrc, int64_t zrs, int64_t t, int64_t i, int k,
                     int slot, int64_t gc, float (&z)[8]) {
  if (i + k >= 0) {
    const Raw8 r = load8(zsrc + (t + k) * zrs);
#pragma unroll
    for (int e = 0; e < 8; ++e) z[e] = P::to_float(r.h[e]);
  } else {
    const uint16_t* h = static_cast<const uint16_t*>(a.conv_state) + slot * a.st0 + gc * a.st1 + (2 + i + k) * a.st2;
#pragma unroll
    for (int e = 0; e < 8; ++e) z[e] = P::to_float(h[e * a.st1]);
  }
}

// Row r's A chunk for K columns [kc0, kc0 + kw) (kw 32 or 64) of the grouped conv of the channel group
// starting at absolute channel c0, token t0 + r: A[r][2cl] = u[t-1], A[r][2cl+1] = u[t] of channel
// kc0 / 2 + cl, rounded to the dtype (rows with r_i[r] < 0: zeros), into As (row pitch lda), by
// threads tid, tid + kThreads, ... Shared by the forward and the backward (csrc/kernels/cca_qkv_backward.cuh):
// Args is CcaQkvArgs or the backward's, with the same fields conv_state, st0..st2, dw_w, dw_b.
// kSplit (the backward): u is kept to about 22 bits as As + As_lo, As_lo = round(u - round(u)).
template <class P, bool kSplit = false, class Args>
ZAYA_DEV void build_a_chunk(const Args& a, uint16_t* As, uint16_t* As_lo, int lda, int bm, int64_t t0, int kc0,
                            int kw, int64_t c0, const uint16_t* zsrc, int64_t zrs, const int* r_i, const int* r_slot,
                            int tid) {
  const uint16_t* dw_w = static_cast<const uint16_t*>(a.dw_w);
  const uint16_t* dw_b = static_cast<const uint16_t*>(a.dw_b);
  const int ch0 = kc0 / 2, upr = kw / 16;  // first channel; 8-channel units per row
  for (int u = tid; u < bm * upr; u += kThreads) {
    const int r = u / upr, cl = (u % upr) * 8, ch = ch0 + cl;
    const int i = r_i[r];
    Raw8 lo, hi, lo2, hi2;  // A[r][2cl .. 2cl + 15] of the chunk (and the low parts)
    if (i < 0) {
#pragma unroll
      for (int e = 0; e < 8; ++e) lo.h[e] = hi.h[e] = lo2.h[e] = hi2.h[e] = 0;
    } else {
      const int64_t t = t0 + r;
      float z2[8], z1[8], z0[8];
      load_z<P>(a, zsrc + ch, zrs, t, i, -2, r_slot[r], c0 + ch, z2);
      load_z<P>(a, zsrc + ch, zrs, t, i, -1, r_slot[r], c0 + ch, z1);
      load_z<P>(a, zsrc + ch, zrs, t, i, 0, r_slot[r], c0 + ch, z0);
      const Raw8 wa = load8(dw_w + 2 * (c0 + ch)), wb = load8(dw_w + 2 * (c0 + ch) + 8);
      const Raw8 bb = load8(dw_b + c0 + ch);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const uint16_t w0r = e < 4 ? wa.h[2 * e] : wb.h[2 * e - 8];
        const uint16_t w1r = e < 4 ? wa.h[2 * e + 1] : wb.h[2 * e - 7];
        const float w0 = P::to_float(w0r), w1 = P::to_float(w1r), b = P::to_float(bb.h[e]);
        const float prev_f = fadd(fadd(fmul(w0, z2[e]), fmul(w1, z1[e])), b);  // u[t-1]
        const float cur_f = fadd(fadd(fmul(w0, z1[e]), fmul(w1, z0[e])), b);   // u[t]
        const uint16_t prev = P::from_float(prev_f), cur = P::from_float(cur_f);
        uint16_t* dst = e < 4 ? &lo.h[2 * e] : &hi.h[2 * e - 8];
        dst[0] = prev;
        dst[1] = cur;
        if constexpr (kSplit) {
          uint16_t* dst2 = e < 4 ? &lo2.h[2 * e] : &hi2.h[2 * e - 8];
          dst2[0] = P::from_float(fadd(prev_f, -P::to_float(prev)));
          dst2[1] = P::from_float(fadd(cur_f, -P::to_float(cur)));
        }
      }
    }
    store8(As + r * lda + 2 * cl, lo);
    store8(As + r * lda + 2 * cl + 8, hi);
    if constexpr (kSplit) {
      store8(As_lo + r * lda + 2 * cl, lo2);
      store8(As_lo + r * lda + 2 * cl + 8, hi2);
    }
  }
}

// The grouped conv of one token block and channel group (first channel c0; z of channel c0 + ch at
// zsrc[ch], row stride zrs): Y[r][n] = sum_k A[r][k] Wg[c0 + n][k] for r < bm = block_tokens(D), on the
// mma (each warp one 16-row m-tile by up to kNT 16-column n-tiles, K in chunks of kKC), returned as
// fp32 [bm][D + 4] in shared memory over smem_raw (kSmemBytes; kSplit: A as two parts, two mma each,
// in conv_gemm_smem_bytes). Every thread of the block calls it (it holds barriers); the result is visible
// to all on return.
template <class P, bool kSplit = false, class Args>
ZAYA_DEV float* conv_gemm(const Args& a, uint4* smem_raw, int bm, int64_t t0, int64_t c0, const uint16_t* zsrc,
                          int64_t zrs, const int* r_i, const int* r_slot) {
  const int tid = static_cast<int>(threadIdx.x), lane = vendor::lane_id(), warp = tid / kWarpSize;
  const int D = static_cast<int>(a.D), D2 = 2 * D;
  uint16_t* As = reinterpret_cast<uint16_t*>(smem_raw);
  uint16_t* Ws = As + bm * kLdK;
  uint16_t* As_lo = Ws + D * kLdK;  // kSplit only
  const int ng = (D / 16 + kNT - 1) / kNT;
  const int mt = warp / ng, n0 = (warp % ng) * kNT * 16;
  const bool has_job = mt < bm / 16;  // uniform over the warp
  const int ntl = (D - n0) / 16 < kNT ? (D - n0) / 16 : kNT;
  mma::FragC acc[kNT];
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) mma::zero(acc[nt]);
  const uint16_t* gw = static_cast<const uint16_t*>(a.gw) + c0 * D2;

  for (int kc0 = 0; kc0 < D2; kc0 += kKC) {
    const int kw = D2 - kc0 < kKC ? D2 - kc0 : kKC;  // 32 or 64
    build_a_chunk<P, kSplit>(a, As, As_lo, kLdK, bm, t0, kc0, kw, c0, zsrc, zrs, r_i, r_slot, tid);
    const int vpr = kw / 8;  // 16-byte vectors per weight row
    for (int u = tid; u < D * vpr; u += kThreads) {
      const int n = u / vpr, v = (u % vpr) * 8;
      store8(Ws + n * kLdK + v, load8(gw + static_cast<int64_t>(n) * D2 + kc0 + v));
    }
    __syncthreads();
    if (has_job) {
      for (int ks = 0; ks < kw; ks += 16) {
        const mma::FragA fa = mma::load_a(As + mt * 16 * kLdK + ks, kLdK, lane);
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
          if (nt < ntl) {
            const mma::FragB fb = mma::load_b_nk(Ws + (n0 + nt * 16) * kLdK + ks, kLdK, lane);
            mma::mma<P>(acc[nt], fa, fb);
          }
        }
        if constexpr (kSplit) {
          const mma::FragA fl = mma::load_a(As_lo + mt * 16 * kLdK + ks, kLdK, lane);
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) {
            if (nt < ntl) {
              const mma::FragB fb = mma::load_b_nk(Ws + (n0 + nt * 16) * kLdK + ks, kLdK, lane);
              mma::mma<P>(acc[nt], fl, fb);
            }
          }
        }
      }
    }
    __syncthreads();
  }

  float* Y = reinterpret_cast<float*>(smem_raw);  // [bm][D + 4], over the staging buffers
  const int ldy = D + 4;
  if (has_job) {
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      if (nt < ntl) {
#pragma unroll
        for (int e = 0; e < mma::kAccum; ++e)
          Y[(mt * 16 + mma::c_row(lane, e)) * ldy + n0 + nt * 16 + mma::c_col(lane, e)] = acc[nt].x[e];
      }
    }
  }
  __syncthreads();
  return Y;
}

// Shared memory of one (token block, channel group) pass.
struct GroupSmem {
  uint4 raw[kSmemBytes / 16];
  // Per row, resolved once so that the epilogue keeps no cache or table strides live.
  int64_t r_cs[kMaxBM];    // offset of the token's cos_sin row
  int64_t r_kdst[kMaxBM];  // offset of its k_cache row (key groups; -1: not cached)
  int r_i[kMaxBM];         // index in its sequence; -1: no token, -2: invalid indices
  int r_slot[kMaxBM];
  float r_scale[kMaxBM];
};

// One (token block, channel group) pass: IsK, key head `head` (group nq + head), else query head
// `head`. Every thread of the block runs it to the end (it holds barriers).
template <class P, bool IsK>
ZAYA_DEV void group_pass(const CcaQkvArgs& a, GroupSmem& sm, int head) {
  uint4* const smem_raw = sm.raw;
  int64_t* const r_cs = sm.r_cs;
  int64_t* const r_kdst = sm.r_kdst;
  int* const r_i = sm.r_i;
  int* const r_slot = sm.r_slot;
  float* const r_scale = sm.r_scale;

  const int tid = static_cast<int>(threadIdx.x), lane = vendor::lane_id(), warp = tid / kWarpSize;
  const int D = static_cast<int>(a.D);
  const int bm = block_tokens(D);
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * bm;
  const int nq = static_cast<int>(a.nq), g = static_cast<int>(a.nq / a.nkv);
  constexpr bool is_k = IsK;
  const int gi = head + (IsK ? nq : 0);
  const int j = is_k ? gi - nq : gi / g;  // KV head of the group
  const int64_t c0 = static_cast<int64_t>(gi) * D;
  const uint16_t* qt = static_cast<const uint16_t*>(a.qt);
  const uint16_t* kt = static_cast<const uint16_t*>(a.kt);

  // --- rows: sequence, position, slot -------------------------------------------------------------
  for (int r = tid; r < bm; r += kThreads) {
    const int64_t t = t0 + r;
    int i = -1, slot = 0;
    int64_t pos = 0, sm = -1, kdst = -1;
    if (t < a.T) {
      const int64_t b = sequence_of(a.cu_seqlens, a.B, t);
      i = -2;
      if (b >= 0) {
        slot = a.state_indices[b];
        pos = a.positions[t];
        sm = a.slot_mapping[t];
        const bool ok = slot >= 0 && slot < a.S && pos >= 0 && pos < a.P && sm >= -1 && sm < a.cache_slots &&
                        a.cu_seqlens[b] >= 0;
        if (ok) i = static_cast<int>(t - a.cu_seqlens[b]);
        if (ok && IsK && sm >= 0) kdst = (sm / a.block_size) * a.kc0 + (sm % a.block_size) * a.kc1 + j * a.kc2;
      }
    }
    r_i[r] = i, r_slot[r] = slot, r_cs[r] = pos * a.cs_rs, r_kdst[r] = kdst;
  }
  __syncthreads();

  // --- grouped conv: Y = A Wg^T over K chunks ------------------------------------------------------
  const uint16_t* zsrc = is_k ? kt + (c0 - static_cast<int64_t>(nq) * D) : qt + c0;
  const int64_t zrs = is_k ? a.kt_rs : a.qt_rs;
  float* Y = conv_gemm<P>(a, smem_raw, bm, t0, c0, zsrc, zrs, r_i, r_slot);
  const int ldy = D + 4;

  // --- bias and residual: x = round(round(Y + bias) + residual), in place --------------------------
  const uint16_t* gb = static_cast<const uint16_t*>(a.gb) + c0;
  const int upr = D / 8;
  for (int u = tid; u < bm * upr; u += kThreads) {
    const int r = u / upr, d8 = (u % upr) * 8;
    if (r_i[r] < 0) continue;
    const int64_t t = t0 + r;
    const Raw8 kr = load8(kt + t * a.kt_rs + static_cast<int64_t>(j) * D + d8);
    float res[8];
    const int h_first = is_k ? j * g : gi, h_count = is_k ? g : 1;
#pragma unroll
    for (int e = 0; e < 8; ++e) res[e] = 0.f;
    for (int hh = 0; hh < h_count; ++hh) {  // rq_h = round(round(qt_h + kt_j) * 0.5), summed for keys
      const Raw8 qr = load8(qt + t * a.qt_rs + static_cast<int64_t>(h_first + hh) * D + d8);
#pragma unroll
      for (int e = 0; e < 8; ++e)
        res[e] = fadd(res[e], P::round(fmul(P::round(fadd(P::to_float(qr.h[e]), P::to_float(kr.h[e]))), 0.5f)));
    }
    const Raw8 br = load8(gb + d8);
    float* y = Y + r * ldy + d8;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const float rk = is_k ? P::round(vendor::fdiv(res[e], static_cast<float>(g))) : res[e];
      y[e] = P::round(fadd(P::round(fadd(y[e], P::to_float(br.h[e]))), rk));
    }
  }
  __syncthreads();

  // --- QK norm scale per row: sqrt(D) / max(||x||, eps), a warp per row ----------------------------
  for (int r = warp; r < bm; r += kWarps) {
    if (r_i[r] < 0) continue;  // uniform over the warp
    float ss = 0.f;
    for (int d = lane; d < D; d += kWarpSize) ss = fadd(ss, fmul(Y[r * ldy + d], Y[r * ldy + d]));
    for (int off = kWarpSize / 2; off > 0; off >>= 1) ss = fadd(ss, vendor::shfl_xor(ss, off));
    if (lane == 0) {
      float norm = P::round(vendor::sqrt_rn(ss));
      norm = P::round(norm < a.eps ? a.eps : norm);  // NaN stays NaN, as clamp_min
      r_scale[r] = P::round(fmul(P::round(vendor::fdiv(1.f, norm)), a.sqrt_d));
    }
  }
  __syncthreads();

  // --- scale, temperature, RoPE, outputs -------------------------------------------------------------
  const int half = static_cast<int>(a.half);
  const float tk = is_k ? P::to_float(static_cast<const uint16_t*>(a.temp)[j]) : 1.f;
  const uint16_t* cos_sin = static_cast<const uint16_t*>(a.cos_sin);
  for (int u = tid; u < bm * upr; u += kThreads) {
    const int r = u / upr, d8 = (u % upr) * 8;
    const int i = r_i[r];
    const int64_t t = t0 + r;
    if (i == -1) continue;
    uint16_t* qo = is_k ? nullptr : static_cast<uint16_t*>(a.q_out) + (t * a.nq + gi) * D + d8;
    if (i < 0) {  // indices out of range (unchecked call): poison q, write nothing else
      Raw8 nan;
#pragma unroll
      for (int e = 0; e < 8; ++e) nan.h[e] = P::from_float(NAN);
      if (qo != nullptr) store8(qo, nan);
      continue;
    }
    const float sc = r_scale[r];
    const float* x = Y + r * ldy;
    auto scaled = [&](int d) {
      const float v = P::round(fmul(x[d], sc));
      return is_k ? P::round(fmul(v, tk)) : v;
    };
    const uint16_t* cs = cos_sin + r_cs[r];
    Raw8 o;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int d = d8 + e;
      float v = scaled(d);
      if (d < half) {
        const float c = P::to_float(cs[d]), s = P::to_float(cs[half + d]);
        v = P::round(fadd(P::round(fmul(v, c)), P::round(fmul(-scaled(d + half), s))));
      } else if (d < 2 * half) {
        const float c = P::to_float(cs[d - half]), s = P::to_float(cs[d]);
        v = P::round(fadd(P::round(fmul(v, c)), P::round(fmul(scaled(d - half), s))));
      }
      o.h[e] = P::from_float(v);
    }
    if (!is_k) {
      store8(qo, o);
      continue;
    }
    if (r_kdst[r] < 0) continue;
    uint16_t* kd = static_cast<uint16_t*>(a.k_cache) + r_kdst[r];
#pragma unroll
    for (int e = 0; e < 8; ++e) kd[static_cast<int64_t>(d8 + e) * a.kc3] = o.h[e];
  }
}

// IsK: the key-head groups (blockIdx.y = KV head), else the query-head groups (blockIdx.y = query
// head). Two instantiations instead of one branch: each keeps only its own arguments live (the AMD
// build ran out of scalar registers with both).
template <class P, bool IsK>
__global__ void __launch_bounds__(kThreads) cca_qkv_kernel(CcaQkvArgs a) {
  __shared__ GroupSmem sm;
  group_pass<P, IsK>(a, sm, static_cast<int>(blockIdx.y));
}

// v of token t into the paged cache: concat(vc[t], vd[t-1]) as nkv heads (vd[t-1] is the slot's
// value_state for a sequence's first token), by threads tid, tid + nt, ... of the caller's block.
// It must run before the value_state update of t's sequence.
ZAYA_DEV void copy_values(const CcaQkvArgs& a, int64_t t, int tid, int nt) {
  const int64_t b = sequence_of(a.cu_seqlens, a.B, t), sm = a.slot_mapping[t];
  if (b < 0 || sm < 0 || sm >= a.cache_slots || a.cu_seqlens[b] < 0) return;
  const int64_t i = t - a.cu_seqlens[b], slot = a.state_indices[b];
  if (i == 0 && !(0 <= slot && slot < a.S)) return;
  const int64_t blk = sm / a.block_size, off = sm % a.block_size, hv = a.nkv * a.D / 2;
  uint16_t* dst = static_cast<uint16_t*>(a.v_cache) + blk * a.vc0 + off * a.vc1;
  const uint16_t* vc = static_cast<const uint16_t*>(a.vc) + t * a.vc_rs;
  const uint16_t* vd = i > 0 ? static_cast<const uint16_t*>(a.vd) + (t - 1) * a.vd_rs : nullptr;
  const uint16_t* vs = static_cast<const uint16_t*>(a.value_state) + slot * a.vs0;
  for (int64_t e = tid; e < 2 * hv; e += nt) {
    const uint16_t v = e < hv ? vc[e] : (i > 0 ? vd[e - hv] : vs[(e - hv) * a.vs1]);
    dst[(e / a.D) * a.vc2 + (e % a.D) * a.vc3] = v;
  }
}

// New slot history of sequence b for channels [c_begin, c_end) (the last two raw z steps; one new
// token: the old newest step moves down) and, with values, its value_state (the last vd row), by
// threads tid, tid + nt, ... Runs after every read of the old history.
ZAYA_DEV void update_state(const CcaQkvArgs& a, int64_t b, int64_t c_begin, int64_t c_end, bool values, int tid,
                           int nt) {
  const int64_t s = a.cu_seqlens[b], e = a.cu_seqlens[b + 1], slot = a.state_indices[b];
  if (!(0 <= s && s < e && e <= a.T && 0 <= slot && slot < a.S)) return;  // empty (or invalid): untouched
  const int64_t last = e - 1, n = e - s, qw = a.nq * a.D, hv = a.nkv * a.D / 2;
  const uint16_t* qt = static_cast<const uint16_t*>(a.qt);
  const uint16_t* kt = static_cast<const uint16_t*>(a.kt);
  uint16_t* conv = static_cast<uint16_t*>(a.conv_state) + slot * a.st0;
  for (int64_t c = c_begin + tid; c < c_end; c += nt) {
    const uint16_t* z = c < qw ? qt + c : kt + (c - qw);
    const int64_t zrs = c < qw ? a.qt_rs : a.kt_rs;
    uint16_t* h = conv + c * a.st1;
    const uint16_t prev = n >= 2 ? z[(last - 1) * zrs] : h[a.st2];
    h[0] = prev;
    h[a.st2] = z[last * zrs];
  }
  if (!values) return;
  uint16_t* vs = static_cast<uint16_t*>(a.value_state) + slot * a.vs0;
  const uint16_t* vd = static_cast<const uint16_t*>(a.vd) + last * a.vd_rs;
  for (int64_t k = tid; k < hv; k += nt) vs[k * a.vs1] = vd[k];
}

// v of token blockIdx.x (one block per token); launched after the conv kernels, before the state kernel.
// static: this header is included by cca_qkv_backward.cuh too, and the emulator links both translation
// units into one module (non-template kernels with external linkage were defined twice there).
static __global__ void __launch_bounds__(kStateThreads) cca_qkv_values_kernel(CcaQkvArgs a) {
  copy_values(a, blockIdx.x, static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x));
}

// New state of sequence blockIdx.x; launched after the conv kernels, which read the old one.
static __global__ void __launch_bounds__(kStateThreads) cca_qkv_state_kernel(CcaQkvArgs a) {
  update_state(a, blockIdx.x, 0, (a.nq + a.nkv) * a.D, true, static_cast<int>(threadIdx.x),
               static_cast<int>(blockDim.x));
}

// Decode and short calls (T <= one token block): everything in one launch. Every token is in token
// block 0, so the only reader of a sequence's old conv history for group gi's channels is block gi,
// which rewrites them after its pass; block nq (key head 0) also copies every token's v and then
// rewrites the value states (each sequence's first-token copy reads the old value state first).
// CUDA only: with both passes in one kernel, hip-clang spills scalar registers (93-115 SGPRs to
// VGPR lanes on gfx90a), so CDNA keeps the four launches below at every T.
#if ZAYA_WARP_SIZE == 32
#define ZAYA_CCA_QKV_SINGLE_LAUNCH 1
template <class P>
__global__ void __launch_bounds__(kThreads) cca_qkv_single_block_kernel(CcaQkvArgs a) {
  __shared__ GroupSmem sm;
  const int y = static_cast<int>(blockIdx.y), nq = static_cast<int>(a.nq);
  if (y < nq) {
    group_pass<P, false>(a, sm, y);
  } else {
    group_pass<P, true>(a, sm, y - nq);
  }
  __syncthreads();  // the pass has read the old histories
  const int tid = static_cast<int>(threadIdx.x);
  const bool values = y == nq;
  if (values) {
    for (int64_t t = 0; t < a.T; ++t) copy_values(a, t, tid, kThreads);
    __syncthreads();  // first-token copies read the old value state
  }
  for (int64_t b = 0; b < a.B; ++b) update_state(a, b, static_cast<int64_t>(y) * a.D, (y + 1) * a.D, values, tid, kThreads);
}
#endif

// --------------------------------------------------------------------------------------------
// Host side
// --------------------------------------------------------------------------------------------
using vendor::aligned16;

inline const char* launch_cca_qkv_impl(const CcaQkvArgs& a, vendor::stream_t stream) {
  if (a.dtype != DType::BF16 && a.dtype != DType::F16) return "zaya cca_qkv: dtype must be bfloat16 or float16";
  if (a.D % 16 != 0 || a.D < 16 || a.D > kMaxD) return "zaya cca_qkv: head dim must be a multiple of 16 in [16, 256]";
  if (a.nkv <= 0 || a.nq % a.nkv != 0 || 2 * a.half > a.D) return "zaya cca_qkv: bad head counts or rotary width";
  if (!aligned16(a.qt) || !aligned16(a.kt) || !aligned16(a.gw) || !aligned16(a.dw_w) || !aligned16(a.dw_b) ||
      !aligned16(a.gb) || !aligned16(a.q_out) || (a.T > 1 && ((a.qt_rs * 2) % 16 != 0 || (a.kt_rs * 2) % 16 != 0)))
    return "zaya cca_qkv: qt, kt, the weights and q_out must be 16-byte aligned (rows too)";
  if (a.T == 0 || a.B == 0) return nullptr;
  const int bm = block_tokens(static_cast<int>(a.D));
  const int64_t blocks = (a.T + bm - 1) / bm;
  if (a.T > int64_t{0x7fffffff} || a.nq + a.nkv > 65535 || a.B > int64_t{0x7fffffff})
    return "zaya cca_qkv: too many tokens, heads or sequences for one launch";
  int dev = 0, warp = 0;
  if (const char* err = vendor::current_device("cca_qkv", &dev, &warp)) return err;
  const dim3 block(static_cast<unsigned>(kWarps * warp));  // = kThreads, from the device's wave size
  auto run = [&](auto pt) -> const char* {
    using P = decltype(pt);
#if defined(ZAYA_CCA_QKV_SINGLE_LAUNCH)
    if (blocks == 1)  // decode batches up to one token block: one launch
      return vendor::launch(&cca_qkv_single_block_kernel<P>, dim3(1, static_cast<unsigned>(a.nq + a.nkv)),
                            block, 0, stream, a);
#endif
    const dim3 qgrid(static_cast<unsigned>(blocks), static_cast<unsigned>(a.nq));
    const dim3 kgrid(static_cast<unsigned>(blocks), static_cast<unsigned>(a.nkv));
    if (const char* err = vendor::launch(&cca_qkv_kernel<P, false>, qgrid, block, 0, stream, a)) return err;
    if (const char* err = vendor::launch(&cca_qkv_kernel<P, true>, kgrid, block, 0, stream, a)) return err;
    if (const char* err = vendor::launch(&cca_qkv_values_kernel, dim3(static_cast<unsigned>(a.T)),
                                         dim3(kStateThreads), 0, stream, a))
      return err;
    return vendor::launch(&cca_qkv_state_kernel, dim3(static_cast<unsigned>(a.B)), dim3(kStateThreads), 0, stream, a);
  };
  return a.dtype == DType::BF16 ? run(dtype::BF16{}) : run(dtype::F16{});
}

}  // namespace zaya::kernels::cca_qkv
