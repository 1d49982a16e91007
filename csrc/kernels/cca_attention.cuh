// Portable kernel bodies of zaya::cca_attention (causal GQA attention over the paged KV cache, spec
// step 8), compiled by nvcc (cuda/cca_attention.cu), hip-clang (hip/cca_attention.hip) and the SIMT
// emulator; the launchers at the bottom implement cca_attention_launch.h.
//
// Semantics (python/zaya_ops/reference.py, cca_attention/_attend): query i of sequence b sits at
// position seqused_k[b] - n_b + i and attends to keys 0..that position of its KV head h / (nq / nkv),
// gathered through block_table[b]. Flash attention forward: scores S = Q K^T accumulate in fp32 on
// the matrix units, the softmax runs online in fp32 (base 2, scale * log2(e) applied to S), the
// probabilities P = 2^(S - m) are rounded to the input dtype (as the reference rounds its softmax)
// and O += P V accumulates in fp32; out = O / l rounded once, lse = (m + log2 l) * ln 2. The row sums
// l add the unrounded fp32 P (FlashAttention's choice).
//
// Tiling. A block serves one (sequence b, KV head j, query tile, key split). The g = nq / nkv query
// heads of a group share every K/V tile: the block's M = 16 * kWarps rows are consecutive rows of the
// sequence's [n_b * g] "query x group head" matrix (row R = query R / g, head j * g + R % g), so the
// 4 heads of a ZAYA1 group fill the M dimension together. Each warp owns 16 rows (one mma tile
// high). Per key tile of kBK keys: the block copies K and V rows from the paged cache (16-byte
// loads, block_table per key) into shared memory; each warp computes its 16 x kBK scores with
// mma (A = Q from shared memory, B = K via load_b_nk), masks (causal per row, keys past the sequence
// end, rows past the sequence end), updates m/l, stages P as the dtype in shared memory and
// accumulates O += P V (A = P via load_a, B = V via load_b_kn). Warps whose 16 rows all lie past the
// sequence's end skip the math (decode: 1 query x 4 heads fill one warp) but still help copy.
//   D    warps  rows M  keys kBK  shared memory (Q + K + V + P, rows padded by 8 elements)
//   64   4      64      64        9.2 + 9.2 + 9.2 + 9.2 KiB = 36 KiB
//   128  4      64      32        17 + 8.5 + 8.5 + 5 KiB    = 39 KiB
//   256  2      32      16        16.5 + 8.3 + 8.3 + 1.5 KiB = 34.5 KiB  (not tuned)
// (static shared memory stays under CUDA's 48 KiB; no cp.async here). CUDA loads the fragments with
// ldmatrix.x4 (Q, K, P) and ldmatrix.x4.trans (V) (mma.cuh load_*_v<true>: one instruction per 16 x 16
// operand instead of 8 32-bit or, for V, 16 16-bit loads); ZAYA_KERNELS=v1 selects the scalar loads.
// CDNA, D <= 128: Q is read into registers once (A fragments) and its region then holds K, V and P:
// 27 KiB (D = 64) and 22 KiB (D = 128), so two blocks share a CU's 64 KiB of LDS.
// Query tiles are launched costliest (latest, longest causal prefix) first.
// Hopper: cca_attention_sm90.cuh has an opt-in wgmma version of this kernel for D = 64 and 128 (the
// same grid, splits and combine; ZAYA_WGMMA=1, see wgmma::hopper_paths_enabled), emulator-tested only.
//
// Decode (flash-decoding): when the (B x nkv x query-tile) blocks do not fill the GPU, the key axis
// is split over `splits` blocks (cca_attention_splits: from shapes, max_seqlen_q/k and the SM count
// only), each writing O / l and its lse in fp32 to scratch; a combine kernel merges them
// (out = sum_s e^(lse_s - lse) O_s, lse = log sum_s e^lse_s). The scratch size depends on
// (splits, T, nq, D) only, so the op stays capturable in a CUDA graph with no host sync.
//
// Roofline (per call, causal, nq query heads, nkv KV heads, head dim D, 2-byte dtype):
//   prefill of T new tokens with no context: FLOPs = 4 * T^2 / 2 * D * nq (QK^T and PV, causal half);
//     ZAYA1 (nq 8, D 128) at T = 4096: 34.4 GFLOP, a floor of ~0.035 ms at ~990 dense bf16 TFLOP/s (H100 SXM).
//     Bytes: Q + out (T nq D 2 each) + K/V (T nkv D 2 each, re-read per query tile from L2) ~ 21 MB
//     at T = 4096: compute-bound; the kernel re-reads each K/V tile once per (query tile, KV head).
//   decode, B sequences of L cached keys: bytes = 2 * B * L * nkv * D * 2 (K and V, read once per
//     KV head and shared by its g query heads) + q/out; FLOPs = 4 * B * L * nq * D (AI = g = 4
//     FLOP/B for ZAYA1: bandwidth-bound). B = 64, L = 4096: 268 MB, a floor of ~0.08 ms at ~3.3 TB/s.
// These are roofline floors from datasheet rates, not measurements (written without a GPU).
//
// Resources (bf16; fp16 within a few registers). nvcc 13 -Xptxas -v, sm_80 and sm_90a, no spills:
//   fwd D=64: 127/128 registers, D=128: 128, D=256: 217/222; combine: 32.
// hip-clang 16 (tools/check_hip.sh), bf16, no scratch or spills, occupancy in waves per SIMD:
//   gfx940: fwd D=64 167 VGPR + 16 AGPR, D=128 180 + 8, D=256 201 + 4; gfx90a: 166 + 16, 177 + 28,
//   202 + 40; occupancy 2 for D = 64 and 128 (Q in registers; it was 1, LDS-bound at 36-39 KiB),
//   1 for D = 256 (LDS); combine 24 VGPR, occupancy 8. v_mfma in each arch's ISA.
#pragma once

#include <cmath>
#include <cstdint>

#include "cca_attention_launch.h"
#include "cca_attention_tiles.cuh"  // Cfg, block_work, load_kv, load_rows
#include "mma.cuh"
#include "vendor.h"

namespace zaya::kernels::attn {

using vendor::kWarpSize;

// NaN and infinite inputs give the reference's special values (torch.softmax and torch.logsumexp over
// the row's visible scores): a NaN score makes the row's out and lse NaN; a +inf score (none NaN) makes
// its out NaN (inf - inf) and its lse +inf; a row whose visible scores are all -inf (or that sees no
// key) has out NaN (0 / 0) and lse -inf. Row maxima therefore propagate NaN (fmaxf drops it: a NaN row
// would end with lse -inf), and row_lse maps the running (m, l) to those values.
ZAYA_DEV float max_nan(float a, float b) { return a > b || a != a ? a : b; }

// A row's lse in natural log from its base-2 running maximum m and sum l: NaN when m is NaN (a NaN
// score), +inf when m is +inf (l is NaN then: 2^(inf - inf)), -inf when l = 0 (no score above -inf).
ZAYA_DEV float row_lse(float m, float l) {
  return m == INFINITY ? INFINITY : l == 0.f ? -INFINITY : (m + log2f(l)) * kLn2;
}

// Online softmax step of one row (base 2): folds this key tile's row maximum into the running maximum
// m, rescales the running sum l, sets m_use (the exponent offset of this tile's P; 0 while the row has
// seen no key, so P = 0) and returns the factor the row's output accumulators must be scaled by. A NaN
// maximum stays NaN (max_nan), so that every later P, l and O of the row are NaN too.
ZAYA_DEV float online_softmax_step(float& m, float& l, float tile_max, float& m_use) {
  const float m_new = max_nan(m, tile_max);
  m_use = m_new == -INFINITY ? 0.f : m_new;
  const float alpha = exp2f(m - m_use);
  m = m_new;
  l *= alpha;
  return alpha;
}

// grid (tiles, nkv * splits, B), block Cfg<D>::kThreads. keys_per_split: a multiple of kBK.
// kLdsm: fragments through ldmatrix (mma.cuh load_*_v; CUDA), else scalar loads (ZAYA_KERNELS=v1, CDNA).
template <class T, int D, bool kLdsm>
__global__ void __launch_bounds__(Cfg<D>::kThreads)
    cca_attention_fwd(CcaAttentionArgs a, int64_t tiles, int64_t keys_per_split) {
  using C = Cfg<D>;
  constexpr int kR = mma::kRowsPerLane;
  // CDNA, D <= 128: Q lives in registers (D / 16 A fragments of 2 VGPRs) after one pass through
  // shared memory, whose Q region then serves K, V and P: 22-28 KiB instead of 36-39 KiB, so two
  // blocks fit a CU's 64 KiB of LDS. CUDA keeps Q in shared memory (its registers are the limit there).
  constexpr bool kQRegs = ZAYA_WARP_SIZE == 64 && D <= 128;
  constexpr int kQElems = C::kM * C::kLd, kKVPElems = 2 * C::kBK * C::kLd + C::kM * C::kLdP;
  constexpr int kElems = kQElems > kKVPElems ? kQElems : kKVPElems;  // with kQRegs: Q, then K, V, P
  __shared__ uint4 q_raw[(kQRegs ? kElems : kQElems) / 8];
  __shared__ uint4 k_raw[kQRegs ? 1 : C::kBK * C::kLd / 8];
  __shared__ uint4 v_raw[kQRegs ? 1 : C::kBK * C::kLd / 8];
  __shared__ uint4 p_raw[kQRegs ? 1 : C::kM * C::kLdP / 8];
  uint16_t* Qs = reinterpret_cast<uint16_t*>(q_raw);
  uint16_t* Ks = kQRegs ? Qs : reinterpret_cast<uint16_t*>(k_raw);
  uint16_t* Vs = kQRegs ? Ks + C::kBK * C::kLd : reinterpret_cast<uint16_t*>(v_raw);
  uint16_t* Ps = kQRegs ? Vs + C::kBK * C::kLd : reinterpret_cast<uint16_t*>(p_raw);

  const int warp = static_cast<int>(threadIdx.x) / kWarpSize, lane = vendor::lane_id();
  const BlockWork w = block_work(a, tiles, keys_per_split, C::kM);
  if (w.R0 >= w.rows) return;  // the whole block, before any barrier
  const int64_t g = w.g, j = w.j, split = w.split, R0 = w.R0, rows = w.rows;
  const int cu0 = w.cu0, n = w.n, L = w.L, kb = w.kb, ke = w.ke;
  const int32_t* table_row = w.table_row;

  // Q rows (zeros past the sequence's end).
  load_rows<D, C::kM, C::kThreads>(Qs, static_cast<const uint16_t*>(a.q), a.q_stride_t, a.q_stride_h, a.T, R0, rows,
                                   g, j, cu0);

  // This lane's rows: their query positions (-1: past the sequence's end, sees no key).
  int qpos[kR];
#pragma unroll
  for (int s = 0; s < kR; ++s) {
    const int64_t R = R0 + warp * 16 + mma::slot_row(lane, s);
    qpos[s] = R < rows ? static_cast<int>(L - n + R / g) : -1;
  }
  const bool active = R0 + warp * 16 < rows;  // warp-uniform
  const float scale_log2 = a.scale * kLog2e;

  float m[kR], l[kR];
#pragma unroll
  for (int s = 0; s < kR; ++s) m[s] = -INFINITY, l[s] = 0.f;
  mma::FragC o[D / 16];
#pragma unroll
  for (int nd = 0; nd < D / 16; ++nd) mma::zero(o[nd]);
  uint16_t* Pw = Ps + warp * 16 * C::kLdP;
  uint16_t* Qw = Qs + warp * 16 * C::kLd;
  mma::FragA q_frag[kQRegs ? D / 16 : 1];
  if constexpr (kQRegs) {
    __syncthreads();  // Q is written
#pragma unroll
    for (int kd = 0; kd < D / 16; ++kd) q_frag[kd] = mma::load_a_v<kLdsm>(Qw + kd * 16, C::kLd, lane);
    // The loop's first barrier orders these reads before K, V and P overwrite the region.
  }

  for (int k0 = kb; k0 < ke; k0 += C::kBK) {
    __syncthreads();  // the previous tile's K, V and P are consumed (and Q is written, first time)
    load_kv<T, D>(Ks, Vs, a, table_row, j, k0, ke);
    __syncthreads();
    if (active) {
      mma::FragC sc[C::kBK / 16];
#pragma unroll
      for (int nt = 0; nt < C::kBK / 16; ++nt) mma::zero(sc[nt]);
#pragma unroll
      for (int kd = 0; kd < D / 16; ++kd) {
        const mma::FragA qa = kQRegs ? q_frag[kQRegs ? kd : 0] : mma::load_a_v<kLdsm>(Qw + kd * 16, C::kLd, lane);
#pragma unroll
        for (int nt = 0; nt < C::kBK / 16; ++nt)
          mma::mma<T>(sc[nt], qa, mma::load_b_nk_v<kLdsm>(Ks + nt * 16 * C::kLd + kd * 16, C::kLd, lane));
      }
      // Scale to base 2 and mask: keys after the row's position, and (zero-filled) keys past ke.
      float mx[kR];
#pragma unroll
      for (int s = 0; s < kR; ++s) mx[s] = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < C::kBK / 16; ++nt) {
#pragma unroll
        for (int i = 0; i < mma::kAccum; ++i) {
          const int s = mma::c_slot(i);
          const int kpos = k0 + nt * 16 + mma::c_col(lane, i);
          const float x = kpos <= qpos[s] && kpos < ke ? sc[nt].x[i] * scale_log2 : -INFINITY;
          sc[nt].x[i] = x;
          mx[s] = max_nan(mx[s], x);
        }
      }
      float m_use[kR];
#pragma unroll
      for (int s = 0; s < kR; ++s) {
#pragma unroll
        for (int off = 1; off < mma::kRowLanes; off *= 2) mx[s] = max_nan(mx[s], vendor::shfl_xor(mx[s], off));
        const float alpha = online_softmax_step(m[s], l[s], mx[s], m_use[s]);
#pragma unroll
        for (int nd = 0; nd < D / 16; ++nd) {
#pragma unroll
          for (int i = 0; i < mma::kAccum; ++i)
            if (mma::c_slot(i) == s) o[nd].x[i] *= alpha;
        }
      }
#pragma unroll
      for (int nt = 0; nt < C::kBK / 16; ++nt) {
#pragma unroll
        for (int i = 0; i < mma::kAccum; ++i) {
          const int s = mma::c_slot(i);
          const float p = exp2f(sc[nt].x[i] - m_use[s]);
          l[s] += p;
          Pw[mma::c_row(lane, i) * C::kLdP + nt * 16 + mma::c_col(lane, i)] = T::from_float(p);
        }
      }
    }
    __syncthreads();  // P visible to the whole warp (and V to everyone, already)
    if (active) {
      mma::FragA pa[C::kBK / 16];
#pragma unroll
      for (int kk = 0; kk < C::kBK / 16; ++kk) pa[kk] = mma::load_a_v<kLdsm>(Pw + kk * 16, C::kLdP, lane);
#pragma unroll
      for (int nd = 0; nd < D / 16; ++nd) {
#pragma unroll
        for (int kk = 0; kk < C::kBK / 16; ++kk)
          mma::mma<T>(o[nd], pa[kk], mma::load_b_kn_v<kLdsm>(Vs + kk * 16 * C::kLd + nd * 16, C::kLd, lane));
      }
    }
  }

  // Row sums over the lanes of each row; lse in natural log (row_lse: -inf for a row that saw no key).
  float inv[kR], lse[kR];
#pragma unroll
  for (int s = 0; s < kR; ++s) {
#pragma unroll
    for (int off = 1; off < mma::kRowLanes; off *= 2) l[s] += vendor::shfl_xor(l[s], off);
    inv[s] = 1.f / l[s];  // inf for a row that saw no key: 0 * inf = NaN, like the reference's 0/0
    lse[s] = row_lse(m[s], l[s]);
  }
  const bool lead = (lane % mma::kRowLanes) == 0;
  if (a.splits > 1) {
    // Partial results straight from the accumulators: O / l and lse per split, fp32.
    if (active) {
#pragma unroll
      for (int nd = 0; nd < D / 16; ++nd) {
#pragma unroll
        for (int i = 0; i < mma::kAccum; ++i) {
          const int64_t R = R0 + warp * 16 + mma::c_row(lane, i);
          if (R >= rows) continue;
          const int64_t t = cu0 + R / g, h = j * g + R % g;
          if (t < 0 || t >= a.T) continue;
          const int s = mma::c_slot(i);
          // An empty split weighs 0 in the combine; one with a NaN l (its lse NaN or +inf) weighs NaN.
          a.part_out[((split * a.T + t) * a.nq + h) * D + nd * 16 + mma::c_col(lane, i)] =
              l[s] > 0.f ? o[nd].x[i] * inv[s] : 0.f;
        }
      }
#pragma unroll
      for (int s = 0; s < kR; ++s) {
        const int64_t R = R0 + warp * 16 + mma::slot_row(lane, s);
        const int64_t t = cu0 + R / g;
        if (lead && R < rows && t >= 0 && t < a.T) a.part_lse[(split * a.nq + j * g + R % g) * a.T + t] = lse[s];
      }
    }
    return;
  }

  // Single split: out = O / l rounded to T, staged through this warp's Q rows (only it reads them) so
  // that the global stores are whole 16-byte chunks.
  __syncthreads();  // every warp is done reading Q (the loop's last barrier may not have run)
  if (active) {
#pragma unroll
    for (int nd = 0; nd < D / 16; ++nd) {
#pragma unroll
      for (int i = 0; i < mma::kAccum; ++i) {
        Qw[mma::c_row(lane, i) * C::kLd + nd * 16 + mma::c_col(lane, i)] =
            T::from_float(o[nd].x[i] * inv[mma::c_slot(i)]);
      }
    }
#pragma unroll
    for (int s = 0; s < kR; ++s) {
      const int64_t R = R0 + warp * 16 + mma::slot_row(lane, s);
      const int64_t t = cu0 + R / g;
      if (lead && R < rows && t >= 0 && t < a.T) a.lse[(j * g + R % g) * a.T + t] = lse[s];
    }
  }
  __syncthreads();
  if (active) store_rows<D>(static_cast<uint16_t*>(a.out), Qw, a.nq, a.T, R0 + warp * 16, rows, g, j, cu0, lane);
}

// Merges the splits of every (token, head): grid T, block 128 threads over the nq * D outputs. The
// special values compose as in one pass: a NaN split lse makes out and lse NaN, a +inf one (none NaN)
// out NaN and lse +inf, all -inf (no key seen) out NaN and lse -inf.
template <class T>
__global__ void __launch_bounds__(128) cca_attention_combine(CcaAttentionArgs a) {
  const int64_t t = blockIdx.x, HD = a.nq * a.D;
  for (int64_t idx = threadIdx.x; idx < HD; idx += blockDim.x) {
    const int64_t h = idx / a.D;
    float mx = -INFINITY;
    for (int64_t s = 0; s < a.splits; ++s) mx = max_nan(mx, a.part_lse[(s * a.nq + h) * a.T + t]);
    float sum = 0.f, acc = 0.f;
    for (int64_t s = 0; s < a.splits; ++s) {
      const float ls = a.part_lse[(s * a.nq + h) * a.T + t];
      const float w = ls == -INFINITY ? 0.f : expf(ls - mx);
      sum += w;
      acc += w * a.part_out[(s * a.T + t) * HD + idx];
    }
    static_cast<uint16_t*>(a.out)[t * HD + idx] = T::from_float(acc / sum);  // 0/0 = NaN: no key seen
    if (idx % a.D == 0) a.lse[h * a.T + t] = mx == INFINITY ? INFINITY : sum == 0.f ? -INFINITY : mx + logf(sum);
  }
}

}  // namespace zaya::kernels::attn

// The Hopper (wgmma) forward kernel, opt-in (CUDA sm_90a and the 32-lane emulator only).
#include "cca_attention_sm90.cuh"

namespace zaya::kernels::attn {

// --------------------------------------------------------------------------------------------
// Launchers
// --------------------------------------------------------------------------------------------

template <class F>
const char* with_head_dim(int64_t D, F&& f) {
  switch (D) {
    case 64: return f(Cfg<64>{});
    case 128: return f(Cfg<128>{});
    case 256: return f(Cfg<256>{});
    default: return "zaya cca_attention: head dim must be 64, 128 or 256 on CUDA/HIP";
  }
}

template <class C>
int64_t query_tiles(const CcaAttentionArgs& a) {
  return (a.max_seqlen_q * (a.nq / a.nkv) + C::kM - 1) / C::kM;
}

template <class C>
int64_t keys_per_split(const CcaAttentionArgs& a, int64_t splits) {
  const int64_t per = (a.max_seqlen_k + splits - 1) / splits;
  return (per + C::kBK - 1) / C::kBK * C::kBK;
}

inline int64_t num_splits_impl(const CcaAttentionArgs& a) {
  if (a.nkv <= 0 || a.B <= 0 || a.max_seqlen_q <= 0) return 1;
  int64_t splits = 1;
  with_head_dim(a.D, [&](auto cfg) -> const char* {
    using C = decltype(cfg);
    const int64_t base = a.B * a.nkv * query_tiles<C>(a);
    int dev = 0, sms = 1;
    if (vendor::get_device(&dev) != vendor::kSuccess || (sms = vendor::device_sm_count(dev)) <= 0) sms = 1;
    if (base >= sms) return nullptr;
    int64_t s = (2 * static_cast<int64_t>(sms) + base - 1) / base;  // about two blocks per SM
    const int64_t by_keys = a.max_seqlen_k / C::kMinSplitKeys;
    s = s < by_keys ? s : by_keys;
    s = s < kMaxSplits ? s : kMaxSplits;
    splits = s > 1 ? s : 1;
    return nullptr;
  });
  return splits;
}

using vendor::aligned16;

#if defined(ZAYA_HAVE_WGMMA_SOURCE)
// The Hopper kernel: the same grid (Sm90Cfg<D>::kM = Cfg<D>::kM rows per block), splits and combine.
template <class T, int D>
const char* launch_sm90(const CcaAttentionArgs& a, vendor::stream_t stream) {
  using C = Sm90Cfg<D>;
  static_assert(C::kM == Cfg<D>::kM, "the splits (num_splits_impl) assume Cfg<D>'s query tiles");
  const int64_t tiles = query_tiles<C>(a);
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(a.nkv * a.splits), static_cast<unsigned>(a.B));
  const char* err = vendor::launch(&cca_attention_fwd_sm90<T, D>, grid, dim3(C::kThreads),
                                   static_cast<size_t>(C::kSmemBytes), stream, a, tiles, keys_per_split<C>(a, a.splits));
  if (err != nullptr || a.splits == 1) return err;
  return vendor::launch(&cca_attention_combine<T>, dim3(static_cast<unsigned>(a.T)), dim3(128), 0, stream, a);
}
#endif

// dev, warp: the current device and its wave size (vendor::current_device, checked by launch_impl).
template <class T>
const char* launch_typed(const CcaAttentionArgs& a, int dev, int warp, vendor::stream_t stream) {
#if defined(ZAYA_HAVE_WGMMA_SOURCE)
  if ((a.D == 64 || a.D == 128) && wgmma::hopper_paths_enabled(dev))
    return a.D == 64 ? launch_sm90<T, 64>(a, stream) : launch_sm90<T, 128>(a, stream);
#else
  (void)dev;
#endif
  return with_head_dim(a.D, [&](auto cfg) -> const char* {
    using C = decltype(cfg);
    const int64_t tiles = query_tiles<C>(a);
    const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(a.nkv * a.splits),
                    static_cast<unsigned>(a.B));
    const dim3 block(static_cast<unsigned>(C::kWarps * warp));  // = C::kThreads, from the device's wave size
    const int64_t kps = keys_per_split<C>(a, a.splits);
    const char* err = nullptr;
#if ZAYA_WARP_SIZE == 32
    if (!runtime::kernels_v1())
      err = vendor::launch(&cca_attention_fwd<T, C::kD, true>, grid, block, 0, stream, a, tiles, kps);
    else
#endif
      err = vendor::launch(&cca_attention_fwd<T, C::kD, false>, grid, block, 0, stream, a, tiles, kps);
    if (err != nullptr || a.splits == 1) return err;
    return vendor::launch(&cca_attention_combine<T>, dim3(static_cast<unsigned>(a.T)), dim3(128), 0, stream, a);
  });
}

inline const char* launch_impl(const CcaAttentionArgs& a, vendor::stream_t stream) {
  if (a.T == 0 || a.B == 0 || a.max_seqlen_q == 0) return nullptr;
  bool ok = a.nkv > 0 && a.nq % a.nkv == 0 && a.block_size > 0 && a.splits >= 1 && a.splits <= kMaxSplits;
  for (int i = 0; i < 3; ++i) ok = ok && a.k_stride[i] % 8 == 0 && a.v_stride[i] % 8 == 0;
  ok = ok && a.q_stride_t % 8 == 0 && a.q_stride_h % 8 == 0;
  if (!ok) return "zaya cca_attention: bad shapes or strides (head and cache strides must be multiples of 8)";
  if (!aligned16(a.q) || !aligned16(a.k_cache) || !aligned16(a.v_cache) || !aligned16(a.out))
    return "zaya cca_attention: q, the caches and out must be 16-byte aligned";
  if (a.splits > 1 && (a.part_out == nullptr || a.part_lse == nullptr))
    return "zaya cca_attention: split launch without scratch";
  if (a.max_seqlen_q * (a.nq / a.nkv) / 16 >= (int64_t{1} << 31) || a.nkv * a.splits > 65535 || a.B > 65535)
    return "zaya cca_attention: grid too large";
  int dev = 0, warp = 0;
  if (const char* err = vendor::current_device("cca_attention", &dev, &warp)) return err;
  switch (a.dtype) {
    case DType::BF16: return launch_typed<dtype::BF16>(a, dev, warp, stream);
    case DType::F16: return launch_typed<dtype::F16>(a, dev, warp, stream);
    default: return "zaya cca_attention: dtype must be bfloat16 or float16 on CUDA/HIP";
  }
}

}  // namespace zaya::kernels::attn
