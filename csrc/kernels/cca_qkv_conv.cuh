// Device functions of the CCA grouped conv that the cca_qkv forward (cca_qkv.cuh) and the
// cca_qkv_functional backward (cca_qkv_backward.cuh) share: the depthwise taps of a K chunk
// (build_a_chunk) and the grouped-conv GEMM of one (token block, channel group) on the matrix units
// (conv_gemm, conv_gemm_biased). No kernels: each entry file (cuda/cca_qkv.cu, cuda/cca_qkv_backward.cu)
// includes this header and holds only its own kernels. Arguments: CcaQkvInputs (cca_qkv_inputs.h).
//
// The GEMM of one pass: Y[r][n] = sum_k A[r][k] Wg[c0 + n][k] for the bm = block_tokens(D) rows of the
// token block, K = 2D in chunks of kKC: the block builds the A chunk [bm][kKC] (depthwise conv, rounded to
// the dtype) and stages the weight chunk [D][kKC] in shared memory, then each warp multiplies one 16-row
// m-tile by up to kNT 16-column n-tiles (mma.cuh, fp32 accumulate). kLdsm (CUDA): fragments by
// ldmatrix.x4 (mma.cuh load_*_v<true>: one instruction per 16x16 operand instead of eight 32-bit loads),
// else scalar 32-bit loads (ZAYA_KERNELS=v1, and CDNA, which has no ldmatrix).
//
// Chunk sizes: kKC = 64 on CUDA (pitch 72 elements: the eight 16-byte rows of an ldmatrix phase fall in
// distinct banks); 32 on CDNA (pitch 40), so that the staging buffers of D = 256 ((32 + 256) x 40 x 2 B =
// 23 KB) and the 16-bit Y of conv_gemm_biased fit with the row tables in 26 KB of LDS: two 8-wave
// workgroups per 64 KiB CU. The K chunks change no sum: the mma steps run over k = 0, 16, 32, .. in the
// same order whatever the chunk size.
#pragma once

#include <cmath>
#include <cstdint>

#include "cca_qkv_inputs.h"
#include "mma.cuh"
#include "vendor.h"

namespace zaya::kernels::cca_qkv {

using vendor::fadd;
using vendor::fmul;
using vendor::kWarpSize;

inline constexpr int kWarps = 8;
inline constexpr int kThreads = kWarps * kWarpSize;
#if ZAYA_WARP_SIZE == 32
inline constexpr int kKC = 64;  // K chunk (two taps of 32 channels)
#else
inline constexpr int kKC = 32;  // CDNA: two taps of 16 channels (LDS budget, see above)
#endif
inline constexpr int kLdK = kKC + 8;  // shared row pitch of the A and W chunks, elements (16-byte rows)
inline constexpr int kNT = 4;         // n-tiles (16 columns each) per warp
inline constexpr int kMaxD = 256;
inline constexpr int kMaxBM = 128;
static_assert(kLdK % 8 == 0, "ldmatrix rows must be 16-byte aligned");

// Tokens per block for head dim D (a multiple of 16).
ZAYA_HD int block_tokens(int D) {
  const int ng = (D / 16 + kNT - 1) / kNT;  // warps across the D columns
  return 16 * (kWarps / ng);
}
constexpr int block_tokens_c(int D) { return 16 * (kWarps / ((D / 16 + kNT - 1) / kNT)); }

// Shared memory of one pass: the staging buffers (A chunk, W chunk; kSplit: a second A part) and then,
// over them, conv_gemm's fp32 Y [bm][D + 4] (kF32Y) or conv_gemm_biased's 16-bit Y [bm][D + 8].
constexpr int conv_smem_bytes(int max_d, bool split, bool f32y) {
  int m = 0;
  for (int D = 16; D <= max_d; D += 16) {
    const int bm = block_tokens_c(D);
    const int stage = ((split ? 2 : 1) * bm + D) * kLdK * 2;
    const int y = f32y ? bm * (D + 4) * 4 : bm * (D + 8) * 2;
    const int b = stage > y ? stage : y;
    m = b > m ? b : m;
  }
  return (m + 15) / 16 * 16;
}
// The forward (conv_gemm_biased, D <= kMaxD) and conv_gemm<P, true>'s for head dims up to max_d.
inline constexpr int kSmemBytes = conv_smem_bytes(kMaxD, false, false);
constexpr int conv_gemm_split_smem_bytes(int max_d) { return conv_smem_bytes(max_d, true, true); }

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
template <class P>
ZAYA_DEV void load_z(const CcaQkvInputs& a, const uint16_t* zsrc, int64_t zrs, int64_t t, int64_t i, int k, int slot,
                     int64_t gc, float (&z)[8]) {
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

// Row r's A chunk for K columns [kc0, kc0 + kw) (kw a multiple of 16) of the grouped conv of the channel
// group starting at absolute channel c0, token t0 + r: A[r][2cl] = u[t-1], A[r][2cl+1] = u[t] of channel
// kc0 / 2 + cl, rounded to the dtype (rows with r_i[r] < 0: zeros), into As (row pitch lda), by
// threads tid, tid + kThreads, ...
// kSplit (the backward): u is kept to about 22 bits as As + As_lo, As_lo = round(u - round(u)).
template <class P, bool kSplit = false>
ZAYA_DEV void build_a_chunk(const CcaQkvInputs& a, uint16_t* As, uint16_t* As_lo, int lda, int bm, int64_t t0,
                            int kc0, int kw, int64_t c0, const uint16_t* zsrc, int64_t zrs, const int* r_i,
                            const int* r_slot, int tid) {
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

// A warp's share of a pass: m-tile mt (rows 16 mt ..), n-tiles n0, n0 + 16, .. (ntl of them, <= kNT);
// active false for the warps beyond bm / 16 m-tiles (uniform over the warp).
struct ConvJob {
  int mt, n0, ntl;
  bool active;
};
ZAYA_DEV ConvJob conv_job(int D, int bm, int warp) {
  const int ng = (D / 16 + kNT - 1) / kNT;
  ConvJob j;
  j.mt = warp / ng;
  j.n0 = (warp % ng) * kNT * 16;
  j.ntl = (D - j.n0) / 16 < kNT ? (D - j.n0) / 16 : kNT;
  j.active = j.mt < bm / 16;
  return j;
}

// The K loop of a pass: acc[nt] = A Wg^T of the warp's job (see the top of the file) for the channel
// group at c0 (z of channel c0 + ch at zsrc[ch], row stride zrs). Every thread of the block calls it (it
// holds barriers); on return the staging buffers (smem_raw) are free.
template <class P, bool kSplit, bool kLdsm>
ZAYA_DEV void conv_accumulate(const CcaQkvInputs& a, uint4* smem_raw, const ConvJob& job, int bm, int64_t t0,
                              int64_t c0, const uint16_t* zsrc, int64_t zrs, const int* r_i, const int* r_slot,
                              mma::FragC (&acc)[kNT]) {
  const int tid = static_cast<int>(threadIdx.x), lane = vendor::lane_id();
  const int D = static_cast<int>(a.D), D2 = 2 * D;
  uint16_t* As = reinterpret_cast<uint16_t*>(smem_raw);
  uint16_t* Ws = As + bm * kLdK;
  uint16_t* As_lo = Ws + D * kLdK;  // kSplit only
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) mma::zero(acc[nt]);
  const uint16_t* gw = static_cast<const uint16_t*>(a.gw) + c0 * D2;
  const uint16_t* Aw = As + job.mt * 16 * kLdK;
  const uint16_t* Aw_lo = As_lo + job.mt * 16 * kLdK;
  const uint16_t* Bw = Ws + job.n0 * kLdK;

  for (int kc0 = 0; kc0 < D2; kc0 += kKC) {
    const int kw = D2 - kc0 < kKC ? D2 - kc0 : kKC;  // CUDA: 32 or 64; CDNA: 32
    build_a_chunk<P, kSplit>(a, As, As_lo, kLdK, bm, t0, kc0, kw, c0, zsrc, zrs, r_i, r_slot, tid);
    const int vpr = kw / 8;  // 16-byte vectors per weight row
    for (int u = tid; u < D * vpr; u += kThreads) {
      const int n = u / vpr, v = (u % vpr) * 8;
      store8(Ws + n * kLdK + v, load8(gw + static_cast<int64_t>(n) * D2 + kc0 + v));
    }
    __syncthreads();
    if (job.active) {
      for (int ks = 0; ks < kw; ks += 16) {
        const mma::FragA fa = mma::load_a_v<kLdsm>(Aw + ks, kLdK, lane);
        mma::FragB fb[kNT];
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
          if (nt < job.ntl) fb[nt] = mma::load_b_nk_v<kLdsm>(Bw + nt * 16 * kLdK + ks, kLdK, lane);
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
          if (nt < job.ntl) mma::mma<P>(acc[nt], fa, fb[nt]);
        if constexpr (kSplit) {
          const mma::FragA fl = mma::load_a_v<kLdsm>(Aw_lo + ks, kLdK, lane);
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt)
            if (nt < job.ntl) mma::mma<P>(acc[nt], fl, fb[nt]);
        }
      }
    }
    __syncthreads();
  }
}

// conv_accumulate, then store(r, n, value) for each accumulator of the block's Y[r][n] (every thread of the
// block calls it; a barrier at the end makes the stores visible to all).
template <class P, bool kSplit, bool kLdsm, class Store>
ZAYA_DEV void conv_gemm_store(const CcaQkvInputs& a, uint4* smem_raw, int bm, int64_t t0, int64_t c0,
                              const uint16_t* zsrc, int64_t zrs, const int* r_i, const int* r_slot, Store store) {
  const int lane = vendor::lane_id(), warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const ConvJob job = conv_job(static_cast<int>(a.D), bm, warp);
  mma::FragC acc[kNT];
  conv_accumulate<P, kSplit, kLdsm>(a, smem_raw, job, bm, t0, c0, zsrc, zrs, r_i, r_slot, acc);
  if (job.active) {
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      if (nt < job.ntl) {
#pragma unroll
        for (int e = 0; e < mma::kAccum; ++e)
          store(job.mt * 16 + mma::c_row(lane, e), job.n0 + nt * 16 + mma::c_col(lane, e), acc[nt].x[e]);
      }
    }
  }
  __syncthreads();
}

// The grouped conv of one token block and channel group, as fp32 Y [bm][D + 4] in shared memory over
// smem_raw (conv_gemm_split_smem_bytes for kSplit: A as two parts, two mma each; the backward's). Every
// thread of the block calls it (it holds barriers); the result is visible to all on return.
template <class P, bool kSplit = false, bool kLdsm = false>
ZAYA_DEV float* conv_gemm(const CcaQkvInputs& a, uint4* smem_raw, int bm, int64_t t0, int64_t c0,
                          const uint16_t* zsrc, int64_t zrs, const int* r_i, const int* r_slot) {
  float* Y = reinterpret_cast<float*>(smem_raw);  // over the staging buffers
  const int ldy = static_cast<int>(a.D) + 4;
  conv_gemm_store<P, kSplit, kLdsm>(a, smem_raw, bm, t0, c0, zsrc, zrs, r_i, r_slot,
                                    [=](int r, int n, float v) { Y[r * ldy + n] = v; });
  return Y;
}

// The forward's form: Y + bias rounded to the dtype, round(Y[r][n] + gb[c0 + n]), as 16-bit Y
// [bm][D + 8] over smem_raw (kSmemBytes): the forward rounds there first, so the 16-bit values are
// exact, and half the fp32 buffer's size. Barriers and visibility as conv_gemm.
template <class P, bool kLdsm>
ZAYA_DEV uint16_t* conv_gemm_biased(const CcaQkvInputs& a, uint4* smem_raw, int bm, int64_t t0, int64_t c0,
                                    const uint16_t* zsrc, int64_t zrs, const int* r_i, const int* r_slot) {
  uint16_t* Y = reinterpret_cast<uint16_t*>(smem_raw);  // over the staging buffers
  const int ldy = static_cast<int>(a.D) + 8;
  const uint16_t* gb = static_cast<const uint16_t*>(a.gb) + c0;
  conv_gemm_store<P, false, kLdsm>(a, smem_raw, bm, t0, c0, zsrc, zrs, r_i, r_slot, [=](int r, int n, float v) {
    Y[r * ldy + n] = P::from_float(fadd(v, P::to_float(gb[n])));
  });
  return Y;
}

}  // namespace zaya::kernels::cca_qkv
