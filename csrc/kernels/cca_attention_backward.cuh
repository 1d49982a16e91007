// Portable backward kernels of zaya::cca_attention (the op zaya::cca_attention_backward), compiled by
// nvcc (cuda/cca_attention_backward.cu), hip-clang (hip/cca_attention_backward.hip) and the SIMT
// emulator. The maths and the pass structure are the CPU kernel's (csrc/cpu/cca_attention_backward.cpp,
// the contract): with S = scale q k^T over the visible keys and P = exp(S - lse) recomputed from the
// saved lse,
//   dP = dO v^T, rnorm_i = 1 / rowsum(P_i), Delta_i = rnorm_i rowsum(P_i * dP_i) - dlse_i,
//   dS = rnorm P * (dP - Delta), dV = (rnorm P)^T dO, dK = scale dS^T q, dQ = scale dS k
// (Delta from P * dP instead of FlashAttention-2's dO * out, and rows renormalised by rnorm: see the CPU
// kernel's comment; out is not saved). GQA: the g query heads of KV head j are the stacked rows of one
// [n_b * g, D] matrix (row R = query R / g, head j * g + R % g), as in the forward.
//
// Three kernels, in this order, none with atomics: every output element is written by one thread,
// every sum runs in a fixed order, so the result does not depend on the schedule.
//   1. dQ (grid: query tiles of kM stacked rows x nkv x B, costliest first; the forward's block_work):
//      each warp owns 16 rows. Loop 1 over the visible key tiles (kBKq keys): S = Q K^T and dP = dO V^T
//      (mma), P = 2^(S scale log2e - lse log2e), row sums of P and P * dP in fp32; then rnorm and Delta
//      per row, written to fp32 scratch [nq, T] for kernel 2. Loop 2: S and dP again, dS = P (dP - Delta)
//      staged as the dtype in shared memory, dQ += dS K (mma, fp32 accumulators); grad_q = scale rnorm dQ
//      rounded once.
//   2. dK, dV (grid: key tiles of kBKb keys x nkv x B): each warp owns 16 keys and keeps their dK and
//      dV in fp32 registers while the block walks the query rows that see the tile (kMq rows per step,
//      Q, dO, lse, Delta and rnorm in shared memory): S^T = K Q^T and dP^T = V dO^T (mma), P^T and dS^T
//      staged as the dtype, dV += P^T dO and dK += dS^T Q (mma). The rows go, in fp32, to the
//      per-sequence partial buffers part_k/part_v (row b * max_seqlen_k + key position).
//   3. Cache gradients (grid: cache blocks x chunks of 8 * 128 elements): a cache row's gradient is the
//      sum, in sequence order, of the partial rows of every sequence whose table reads that block (prefix
//      sharing sums), rounded once; rows no sequence reads get 0. The table is scanned on the device
//      (each block reads the [B, table_cols] entries once, broadcast), never on the host.
// Operands of the matrix products are the dtype (q, k, v, dO as given; P and dS rounded to it, as
// FlashAttention-2 rounds them), accumulation fp32. CUDA loads the fragments with ldmatrix (mma.cuh
// load_*_v<true>), CDNA with the scalar loaders (wave64 MFMA).
//   D    warps  dQ rows kM / keys kBKq   dK/dV keys kBKb / rows kMq   shared memory (dQ; dK/dV)
//   64   4      64 / 32                   64 / 32                       32 KiB; 38 KiB
//   128  2      32 / 32                   32 / 32                       37 KiB; 40 KiB
// D = 256 (and float32, which the forward kernel does not take) run the reference by recompute
// (python/zaya_ops/_autograd.py): dK and dV of 16 keys x 256 in registers would spill.
//
// Roofline (per call, causal, prefill of T new tokens with no context, nq query heads, nkv KV heads,
// head dim D, 2-byte dtype). One product of a [T, D] by a [D, T] (or [T, T] by [T, D]) operand over the
// causal half is 2 * T^2 / 2 * D * nq FLOPs; the forward does 2 of them. Kernel 1 does 5 (S, dP twice,
// dQ), kernel 2 does 4 (S^T, dP^T, dV, dK): 9 products, 4.5x the forward's FLOPs (FlashAttention-2's
// backward does 5: 2.5x), the price of the race-free dQ and of Delta from P * dP.
//   ZAYA1 (nq 8, nkv 2, D 128) at T = 4096: 9 * 2 * 4096^2 / 2 * 128 * 8 = 155 GFLOP, a floor of
//   ~0.16 ms at ~990 dense bf16 TFLOP/s (H100 SXM).
//   Bytes: q, dO, grad_q (T nq D 2 each), lse/Delta/rnorm (12 T nq), the caches and their gradients
//   (4 T nkv D 2), the fp32 partials written and read (2 T nkv D 4 * 2), plus the re-reads of K/V per
//   query tile (kernel 1, twice) and of Q/dO per key tile (kernel 2), from L2: ~40 MB of DRAM traffic
//   at T = 4096 (~0.012 ms at 3.3 TB/s): compute-bound. Decode-sized calls (T small, L keys) are
//   bandwidth-bound on the cache reads (3 passes over K and V: 6 B L nkv D bytes).
// These are floors from datasheet rates, not measurements (written without a GPU).
//
// Resources (nvcc 13 -Xptxas -v, sm_90a, bf16 / fp16; no spills, no stack):
//   dQ D=64: 138 / 128 registers, D=128: 191 / 165; dK/dV D=64: 165 / 164, D=128: 249 / 249 (64-thread
//   blocks: dK and dV of 16 keys x 128 are 128 fp32 registers per lane); cache sums: 46 / 48.
// hip-clang 16 (tools/check_hip.sh), gfx940, bf16, no scratch or spills, VGPR + AGPR, occupancy in
//   waves per SIMD: dQ D=64 132 + 20 (2), D=128 180 + 32 (1); dK/dV D=64 120 + 32 (1), D=128 178 + 64
//   (1); cache sums 54 (8); gfx90a within 2 VGPRs. v_mfma in the dQ and dK/dV kernels of each arch.
#pragma once

#include <cmath>
#include <cstdint>

#include "cca_attention_backward_launch.h"
#include "cca_attention_tiles.cuh"  // the forward's Cfg, block_work and tile loaders
#include "mma.cuh"
#include "vendor.h"

namespace zaya::kernels::attn_bwd {

using attn::kLog2e;
using vendor::kWarpSize;

template <int D>
struct BwdCfg {
  static_assert(D == 64 || D == 128, "cca_attention backward: head dim 64 or 128");
  using F = attn::Cfg<D>;                           // the forward's row pitch and chunking
  static constexpr int kWarps = D == 64 ? 4 : 2;
  static constexpr int kThreads = kWarps * ZAYA_WARP_SIZE;
  static constexpr int kLd = F::kLd;                // Q/K/V/dO row pitch (elements)
  static constexpr int kM = 16 * kWarps;            // dQ kernel: stacked rows per block
  static constexpr int kBKq = 32;                   // dQ kernel: keys per step
  static constexpr int kBKb = 16 * kWarps;          // dK/dV kernel: keys per block
  static constexpr int kMq = 32;                    // dK/dV kernel: stacked rows per step
  static constexpr int kLdS = 32 + 8;               // staged P / dS row pitch (kBKq = kMq = 32)
};

// Cache-gradient kernel: threads per block, and elements (8 per thread) per block.
inline constexpr int kSumThreads = 128;
inline constexpr int kSumElems = 8 * kSumThreads;

// Two products of one warp sharing their B tiles' shape: c1 = A1 B1^T and c2 = A2 B2^T, where A1, A2 are
// 16 x D row-major tiles (pitch kLd) and B1, B2 kN x D row-major tiles (n-major B operands, pitch kLd):
// S = Q K^T with dP = dO V^T (dQ kernel), S^T = K Q^T with dP^T = V dO^T (dK/dV kernel).
template <class T, int D, int kN, bool kLdsm>
ZAYA_DEV void pair_products(mma::FragC (&c1)[kN / 16], mma::FragC (&c2)[kN / 16], const uint16_t* A1,
                            const uint16_t* A2, const uint16_t* B1, const uint16_t* B2, int lane) {
  constexpr int kLd = BwdCfg<D>::kLd;
#pragma unroll
  for (int nt = 0; nt < kN / 16; ++nt) mma::zero(c1[nt]), mma::zero(c2[nt]);
#pragma unroll
  for (int kd = 0; kd < D / 16; ++kd) {
    const mma::FragA a1 = mma::load_a_v<kLdsm>(A1 + kd * 16, kLd, lane);
    const mma::FragA a2 = mma::load_a_v<kLdsm>(A2 + kd * 16, kLd, lane);
#pragma unroll
    for (int nt = 0; nt < kN / 16; ++nt) {
      mma::mma<T>(c1[nt], a1, mma::load_b_nk_v<kLdsm>(B1 + nt * 16 * kLd + kd * 16, kLd, lane));
      mma::mma<T>(c2[nt], a2, mma::load_b_nk_v<kLdsm>(B2 + nt * 16 * kLd + kd * 16, kLd, lane));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Kernel 1: dQ, and each row's rnorm and Delta. grid (tiles, nkv, B), block BwdCfg<D>::kThreads.
// ---------------------------------------------------------------------------------------------
template <class T, int D, bool kLdsm>
__global__ void __launch_bounds__(BwdCfg<D>::kThreads)
    cca_attention_bwd_dq(CcaAttentionBackwardArgs ba, int64_t tiles) {
  using C = BwdCfg<D>;
  constexpr int kR = mma::kRowsPerLane;
  const CcaAttentionArgs& a = ba.fwd;
  __shared__ uint4 q_raw[C::kM * C::kLd / 8];
  __shared__ uint4 o_raw[C::kM * C::kLd / 8];
  __shared__ uint4 k_raw[C::kBKq * C::kLd / 8];
  __shared__ uint4 v_raw[C::kBKq * C::kLd / 8];
  __shared__ uint4 s_raw[C::kM * C::kLdS / 8];
  uint16_t* Qs = reinterpret_cast<uint16_t*>(q_raw);
  uint16_t* Os = reinterpret_cast<uint16_t*>(o_raw);
  uint16_t* Ks = reinterpret_cast<uint16_t*>(k_raw);
  uint16_t* Vs = reinterpret_cast<uint16_t*>(v_raw);

  const int warp = static_cast<int>(threadIdx.x) / kWarpSize, lane = vendor::lane_id();
  // One split holding every key: keys_per_split beyond any position.
  const attn::BlockWork w = attn::block_work(a, tiles, int64_t{1} << 40, C::kM);
  if (w.R0 >= w.rows) return;  // the whole block, before any barrier
  const int64_t g = w.g, j = w.j, R0 = w.R0, rows = w.rows;
  const int cu0 = w.cu0, n = w.n, L = w.L, ke = w.ke;

  attn::load_rows<D, C::kM, C::kThreads>(Qs, static_cast<const uint16_t*>(a.q), a.q_stride_t, a.q_stride_h, a.T,
                                         R0, rows, g, j, cu0);
  attn::load_rows<D, C::kM, C::kThreads>(Os, static_cast<const uint16_t*>(ba.grad_out), a.nq * D, D, a.T, R0, rows,
                                         g, j, cu0);

  // This lane's rows: query positions (-1: past the sequence's end), lse in base 2, token and head.
  int qpos[kR];
  float lse2[kR];
  int64_t tok[kR], head[kR];
#pragma unroll
  for (int s = 0; s < kR; ++s) {
    const int64_t R = R0 + warp * 16 + mma::slot_row(lane, s);
    tok[s] = cu0 + R / g, head[s] = j * g + R % g;
    const bool ok = R < rows && tok[s] >= 0 && tok[s] < a.T;
    qpos[s] = ok ? static_cast<int>(L - n + R / g) : -1;
    lse2[s] = ok ? ba.lse[head[s] * a.T + tok[s]] * kLog2e : 0.f;
  }
  const bool active = R0 + warp * 16 < rows;  // warp-uniform
  const float scale_log2 = a.scale * kLog2e;
  uint16_t* Qw = Qs + warp * 16 * C::kLd;
  uint16_t* Ow = Os + warp * 16 * C::kLd;
  uint16_t* Sw = reinterpret_cast<uint16_t*>(s_raw) + warp * 16 * C::kLdS;

  // S = Q K^T and dP = dO V^T of this warp's 16 rows and the key tile in shared memory.
  auto scores = [&](mma::FragC (&sc)[C::kBKq / 16], mma::FragC (&dp)[C::kBKq / 16]) {
    pair_products<T, D, C::kBKq, kLdsm>(sc, dp, Qw, Ow, Ks, Vs, lane);
  };

  // Loop 1: rowsum(P) and rowsum(P * dP).
  float rs[kR], pdp[kR];
#pragma unroll
  for (int s = 0; s < kR; ++s) rs[s] = 0.f, pdp[s] = 0.f;
  for (int k0 = 0; k0 < ke; k0 += C::kBKq) {
    __syncthreads();  // the previous tile is consumed (and Q, dO are written, first time)
    attn::load_kv<T, D, C::kBKq, C::kThreads>(Ks, Vs, a, w.table_row, j, k0, ke);
    __syncthreads();
    if (!active) continue;
    mma::FragC sc[C::kBKq / 16], dp[C::kBKq / 16];
    scores(sc, dp);
#pragma unroll
    for (int nt = 0; nt < C::kBKq / 16; ++nt) {
#pragma unroll
      for (int i = 0; i < mma::kAccum; ++i) {
        const int s = mma::c_slot(i);
        const int kpos = k0 + nt * 16 + mma::c_col(lane, i);
        const float p = kpos <= qpos[s] && kpos < ke ? exp2f(sc[nt].x[i] * scale_log2 - lse2[s]) : 0.f;
        rs[s] += p;
        pdp[s] += p * dp[nt].x[i];
      }
    }
  }
  float rnorm[kR], delta[kR];
  const bool lead = (lane % mma::kRowLanes) == 0;
#pragma unroll
  for (int s = 0; s < kR; ++s) {
#pragma unroll
    for (int off = 1; off < mma::kRowLanes; off *= 2) {
      rs[s] += vendor::shfl_xor(rs[s], off);
      pdp[s] += vendor::shfl_xor(pdp[s], off);
    }
    rnorm[s] = 1.f / rs[s];
    const float dl = ba.grad_lse != nullptr && qpos[s] >= 0 ? ba.grad_lse[head[s] * a.T + tok[s]] : 0.f;
    delta[s] = pdp[s] * rnorm[s] - dl;
    if (active && lead && qpos[s] >= 0) {
      ba.rnorm[head[s] * a.T + tok[s]] = rnorm[s];
      ba.delta[head[s] * a.T + tok[s]] = delta[s];
    }
  }

  // Loop 2: dS = P (dP - Delta) (P not yet normalised: dQ's rows are scaled by rnorm at the end).
  mma::FragC dq[D / 16];
#pragma unroll
  for (int nd = 0; nd < D / 16; ++nd) mma::zero(dq[nd]);
  for (int k0 = 0; k0 < ke; k0 += C::kBKq) {
    __syncthreads();
    attn::load_kv<T, D, C::kBKq, C::kThreads>(Ks, Vs, a, w.table_row, j, k0, ke);
    __syncthreads();
    if (active) {
      mma::FragC sc[C::kBKq / 16], dp[C::kBKq / 16];
      scores(sc, dp);
#pragma unroll
      for (int nt = 0; nt < C::kBKq / 16; ++nt) {
#pragma unroll
        for (int i = 0; i < mma::kAccum; ++i) {
          const int s = mma::c_slot(i);
          const int kpos = k0 + nt * 16 + mma::c_col(lane, i);
          float ds = 0.f;
          if (kpos <= qpos[s] && kpos < ke) ds = exp2f(sc[nt].x[i] * scale_log2 - lse2[s]) * (dp[nt].x[i] - delta[s]);
          Sw[mma::c_row(lane, i) * C::kLdS + nt * 16 + mma::c_col(lane, i)] = T::from_float(ds);
        }
      }
    }
    __syncthreads();  // dS visible to the whole warp
    if (active) {
#pragma unroll
      for (int kk = 0; kk < C::kBKq / 16; ++kk) {
        const mma::FragA da = mma::load_a_v<kLdsm>(Sw + kk * 16, C::kLdS, lane);
#pragma unroll
        for (int nd = 0; nd < D / 16; ++nd)
          mma::mma<T>(dq[nd], da, mma::load_b_kn_v<kLdsm>(Ks + kk * 16 * C::kLd + nd * 16, C::kLd, lane));
      }
    }
  }

  // grad_q = scale * rnorm * dQ, rounded once, staged through this warp's Q rows (only it reads them).
  if (active) {
#pragma unroll
    for (int nd = 0; nd < D / 16; ++nd) {
#pragma unroll
      for (int i = 0; i < mma::kAccum; ++i)
        Qw[mma::c_row(lane, i) * C::kLd + nd * 16 + mma::c_col(lane, i)] =
            T::from_float(dq[nd].x[i] * (a.scale * rnorm[mma::c_slot(i)]));
    }
  }
  __syncthreads();
  if (active)
    attn::store_rows<D>(static_cast<uint16_t*>(ba.grad_q), Qw, a.nq, a.T, R0 + warp * 16, rows, g, j, cu0, lane);
}

// ---------------------------------------------------------------------------------------------
// Kernel 2: dK and dV of kBKb keys per block into the partial buffers. grid (ceil(max_seqlen_k / kBKb),
// nkv, B), block BwdCfg<D>::kThreads. Reads kernel 1's rnorm and Delta.
// ---------------------------------------------------------------------------------------------
template <class T, int D, bool kLdsm>
__global__ void __launch_bounds__(BwdCfg<D>::kThreads) cca_attention_bwd_dkdv(CcaAttentionBackwardArgs ba) {
  using C = BwdCfg<D>;
  const CcaAttentionArgs& a = ba.fwd;
  __shared__ uint4 k_raw[C::kBKb * C::kLd / 8];
  __shared__ uint4 v_raw[C::kBKb * C::kLd / 8];
  __shared__ uint4 q_raw[C::kMq * C::kLd / 8];
  __shared__ uint4 o_raw[C::kMq * C::kLd / 8];
  __shared__ uint4 p_raw[C::kBKb * C::kLdS / 8];
  __shared__ uint4 d_raw[C::kBKb * C::kLdS / 8];
  __shared__ float lse2_s[C::kMq], delta_s[C::kMq], rnorm_s[C::kMq];
  __shared__ int qpos_s[C::kMq];
  uint16_t* Ks = reinterpret_cast<uint16_t*>(k_raw);
  uint16_t* Vs = reinterpret_cast<uint16_t*>(v_raw);
  uint16_t* Qs = reinterpret_cast<uint16_t*>(q_raw);
  uint16_t* Os = reinterpret_cast<uint16_t*>(o_raw);

  const int warp = static_cast<int>(threadIdx.x) / kWarpSize, lane = vendor::lane_id();
  const int64_t g = a.nq / a.nkv, j = blockIdx.y, b = blockIdx.z;
  const int cu0 = a.cu_seqlens_q[b], n = a.cu_seqlens_q[b + 1] - cu0, L = a.seqused_k[b];
  const int kmax = static_cast<int>(L < a.max_seqlen_k ? L : a.max_seqlen_k);  // keys with a partial row
  const int k0 = static_cast<int>(blockIdx.x) * C::kBKb;
  if (n <= 0 || k0 >= kmax) return;  // the whole block, before any barrier
  const int first = L - n;  // query i sits at position first + i
  const int64_t rows = int64_t{n} * g;
  const int64_t R_begin = (k0 > first ? int64_t{k0 - first} : int64_t{0}) * g;  // first row that sees key k0
  const int32_t* table_row = a.block_table + b * a.table_cols;

  attn::load_kv<T, D, C::kBKb, C::kThreads>(Ks, Vs, a, table_row, j, k0, kmax);
  const bool active = k0 + warp * 16 < kmax;  // warp-uniform
  const float scale_log2 = a.scale * kLog2e;
  uint16_t* Kw = Ks + warp * 16 * C::kLd;
  uint16_t* Vw = Vs + warp * 16 * C::kLd;
  uint16_t* Pw = reinterpret_cast<uint16_t*>(p_raw) + warp * 16 * C::kLdS;
  uint16_t* Dw = reinterpret_cast<uint16_t*>(d_raw) + warp * 16 * C::kLdS;

  mma::FragC dk[D / 16], dv[D / 16];
#pragma unroll
  for (int nd = 0; nd < D / 16; ++nd) mma::zero(dk[nd]), mma::zero(dv[nd]);

  for (int64_t Rq = R_begin; Rq < rows; Rq += C::kMq) {
    __syncthreads();  // the previous step's Q, dO, P and dS are consumed
    attn::load_rows<D, C::kMq, C::kThreads>(Qs, static_cast<const uint16_t*>(a.q), a.q_stride_t, a.q_stride_h, a.T,
                                            Rq, rows, g, j, cu0);
    attn::load_rows<D, C::kMq, C::kThreads>(Os, static_cast<const uint16_t*>(ba.grad_out), a.nq * D, D, a.T, Rq,
                                            rows, g, j, cu0);
    for (int c = static_cast<int>(threadIdx.x); c < C::kMq; c += C::kThreads) {
      const int64_t R = Rq + c, t = cu0 + R / g, h = j * g + R % g;
      const bool ok = R < rows && t >= 0 && t < a.T;
      qpos_s[c] = ok ? static_cast<int>(first + R / g) : -1;
      lse2_s[c] = ok ? ba.lse[h * a.T + t] * kLog2e : 0.f;
      delta_s[c] = ok ? ba.delta[h * a.T + t] : 0.f;
      rnorm_s[c] = ok ? ba.rnorm[h * a.T + t] : 0.f;
    }
    __syncthreads();
    if (active) {
      // S^T = K Q^T and dP^T = V dO^T: rows are this warp's 16 keys, columns the step's kMq rows.
      mma::FragC st[C::kMq / 16], dpt[C::kMq / 16];
      pair_products<T, D, C::kMq, kLdsm>(st, dpt, Kw, Vw, Qs, Os, lane);
#pragma unroll
      for (int nt = 0; nt < C::kMq / 16; ++nt) {
#pragma unroll
        for (int i = 0; i < mma::kAccum; ++i) {
          const int r = mma::c_row(lane, i), c = nt * 16 + mma::c_col(lane, i);
          const int kpos = k0 + warp * 16 + r;
          float p = 0.f, ds = 0.f;
          if (kpos <= qpos_s[c] && kpos < kmax) {
            p = exp2f(st[nt].x[i] * scale_log2 - lse2_s[c]) * rnorm_s[c];
            ds = p * (dpt[nt].x[i] - delta_s[c]);
          }
          Pw[r * C::kLdS + c] = T::from_float(p);
          Dw[r * C::kLdS + c] = T::from_float(ds);
        }
      }
    }
    __syncthreads();  // P^T and dS^T visible to the whole warp
    if (active) {
#pragma unroll
      for (int kk = 0; kk < C::kMq / 16; ++kk) {
        const mma::FragA pa = mma::load_a_v<kLdsm>(Pw + kk * 16, C::kLdS, lane);
        const mma::FragA da = mma::load_a_v<kLdsm>(Dw + kk * 16, C::kLdS, lane);
#pragma unroll
        for (int nd = 0; nd < D / 16; ++nd) {
          mma::mma<T>(dv[nd], pa, mma::load_b_kn_v<kLdsm>(Os + kk * 16 * C::kLd + nd * 16, C::kLd, lane));
          mma::mma<T>(dk[nd], da, mma::load_b_kn_v<kLdsm>(Qs + kk * 16 * C::kLd + nd * 16, C::kLd, lane));
        }
      }
    }
  }

  // Partial rows (fp32), keys below kmax only: row b * max_seqlen_k + position.
  if (active) {
#pragma unroll
    for (int nd = 0; nd < D / 16; ++nd) {
#pragma unroll
      for (int i = 0; i < mma::kAccum; ++i) {
        const int kpos = k0 + warp * 16 + mma::c_row(lane, i);
        if (kpos >= kmax) continue;
        const int64_t o = ((b * a.max_seqlen_k + kpos) * a.nkv + j) * D + nd * 16 + mma::c_col(lane, i);
        ba.part_k[o] = dk[nd].x[i] * a.scale;
        ba.part_v[o] = dv[nd].x[i];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Kernel 3: grad_k / grad_v of cache block blockIdx.x, elements blockIdx.y * kSumElems + 8 * thread ..
// + 7 of its [block_size, nkv, D] rows: the readers' partial rows summed in (sequence, table column)
// order. grid (num_blocks, ceil(block_size * nkv * D / kSumElems)), block kSumThreads.
// ---------------------------------------------------------------------------------------------
template <class T>
__global__ void __launch_bounds__(kSumThreads) cca_attention_bwd_cache(CcaAttentionBackwardArgs ba) {
  const CcaAttentionArgs& a = ba.fwd;
  const int64_t e = blockIdx.x, row_elems = a.nkv * a.D, per_block = a.block_size * row_elems;
  const int64_t idx = int64_t{blockIdx.y} * kSumElems + 8 * int64_t{threadIdx.x};
  if (idx >= per_block) return;  // no barrier in this kernel
  const int64_t off = idx / row_elems, within = idx % row_elems;  // 8 elements of one (offset, head) row
  float gk[8], gv[8];
#pragma unroll
  for (int u = 0; u < 8; ++u) gk[u] = 0.f, gv[u] = 0.f;
  for (int64_t b = 0; b < a.B; ++b) {
    if (a.cu_seqlens_q[b + 1] - a.cu_seqlens_q[b] <= 0) continue;  // no queries: reads nothing
    const int64_t L = a.seqused_k[b] < a.max_seqlen_k ? a.seqused_k[b] : a.max_seqlen_k;
    const int32_t* table_row = a.block_table + b * a.table_cols;
    const int64_t cols = (L + a.block_size - 1) / a.block_size;
    for (int64_t kb = 0; kb < cols && kb < a.table_cols; ++kb) {
      if (table_row[kb] != e) continue;
      const int64_t pos = kb * a.block_size + off;
      if (pos >= L) continue;
      const int64_t o = (b * a.max_seqlen_k + pos) * row_elems + within;
#pragma unroll
      for (int u = 0; u < 8; ++u) gk[u] += ba.part_k[o + u], gv[u] += ba.part_v[o + u];
    }
  }
  uint16_t* dk = static_cast<uint16_t*>(ba.grad_k) + e * per_block + idx;
  uint16_t* dv = static_cast<uint16_t*>(ba.grad_v) + e * per_block + idx;
  uint32_t wk[4], wv[4];
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    wk[u] = mma::pack(T::from_float(gk[2 * u]), T::from_float(gk[2 * u + 1]));
    wv[u] = mma::pack(T::from_float(gv[2 * u]), T::from_float(gv[2 * u + 1]));
  }
  *reinterpret_cast<uint4*>(dk) = uint4{wk[0], wk[1], wk[2], wk[3]};
  *reinterpret_cast<uint4*>(dv) = uint4{wv[0], wv[1], wv[2], wv[3]};
}

// --------------------------------------------------------------------------------------------
// Launcher
// --------------------------------------------------------------------------------------------

template <class T, int D>
const char* launch_typed(const CcaAttentionBackwardArgs& ba, int warp, vendor::stream_t stream) {
  using C = BwdCfg<D>;
  const CcaAttentionArgs& a = ba.fwd;
  constexpr bool kLdsm = ZAYA_WARP_SIZE == 32;  // ldmatrix on CUDA (and the 32-lane emulator)
  const dim3 block(static_cast<unsigned>(C::kWarps * warp));  // = C::kThreads
  const int64_t tiles = (a.max_seqlen_q * (a.nq / a.nkv) + C::kM - 1) / C::kM;
  const char* err = nullptr;
  if (tiles > 0 && a.B > 0)
    err = vendor::launch(&cca_attention_bwd_dq<T, D, kLdsm>,
                         dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(a.nkv), static_cast<unsigned>(a.B)),
                         block, 0, stream, ba, tiles);
  if (err != nullptr) return err;
  const int64_t key_tiles = (a.max_seqlen_k + C::kBKb - 1) / C::kBKb;
  if (key_tiles > 0 && a.B > 0 && a.T > 0) {
    err = vendor::launch(&cca_attention_bwd_dkdv<T, D, kLdsm>,
                         dim3(static_cast<unsigned>(key_tiles), static_cast<unsigned>(a.nkv),
                              static_cast<unsigned>(a.B)),
                         block, 0, stream, ba);
    if (err != nullptr) return err;
  }
  const int64_t chunks = (a.block_size * a.nkv * D + kSumElems - 1) / kSumElems;
  return vendor::launch(&cca_attention_bwd_cache<T>,
                        dim3(static_cast<unsigned>(a.num_blocks), static_cast<unsigned>(chunks)),
                        dim3(kSumThreads), 0, stream, ba);
}

inline const char* launch_impl(const CcaAttentionBackwardArgs& ba, vendor::stream_t stream) {
  const CcaAttentionArgs& a = ba.fwd;
  if (a.num_blocks == 0 || a.nkv == 0) return nullptr;  // no cache: grad_q stays as the caller made it
  bool ok = a.nq % a.nkv == 0 && a.block_size > 0 && a.T >= 0 && a.B >= 0 && a.max_seqlen_k >= 0;
  for (int i = 0; i < 3; ++i) ok = ok && a.k_stride[i] % 8 == 0 && a.v_stride[i] % 8 == 0;
  ok = ok && a.q_stride_t % 8 == 0 && a.q_stride_h % 8 == 0;
  if (!ok) return "zaya cca_attention_backward: bad shapes or strides (head and cache strides must be multiples of 8)";
  if (a.D != 64 && a.D != 128) return "zaya cca_attention_backward: head dim must be 64 or 128 on CUDA/HIP";
  if (!vendor::aligned16(a.q) || !vendor::aligned16(a.k_cache) || !vendor::aligned16(a.v_cache) ||
      !vendor::aligned16(ba.grad_out) || !vendor::aligned16(ba.grad_q) || !vendor::aligned16(ba.grad_k) ||
      !vendor::aligned16(ba.grad_v))
    return "zaya cca_attention_backward: q, the caches, grad_out and the gradients must be 16-byte aligned";
  if (ba.lse == nullptr || ba.delta == nullptr || ba.rnorm == nullptr ||
      (a.B * a.max_seqlen_k > 0 && (ba.part_k == nullptr || ba.part_v == nullptr)))
    return "zaya cca_attention_backward: missing lse or scratch";
  if (a.max_seqlen_q * (a.nq / a.nkv) / 16 >= (int64_t{1} << 31) || a.max_seqlen_k / 16 >= (int64_t{1} << 31) ||
      a.nkv > 65535 || a.B > 65535 || a.num_blocks >= (int64_t{1} << 31) ||
      (a.block_size * a.nkv * a.D + kSumElems - 1) / kSumElems > 65535)
    return "zaya cca_attention_backward: grid too large";
  int dev = 0, warp = 0;
  if (const char* err = vendor::current_device("cca_attention_backward", &dev, &warp)) return err;
  auto run = [&](auto t) -> const char* {
    using T = decltype(t);
    return a.D == 64 ? launch_typed<T, 64>(ba, warp, stream) : launch_typed<T, 128>(ba, warp, stream);
  };
  switch (a.dtype) {
    case DType::BF16: return run(dtype::BF16{});
    case DType::F16: return run(dtype::F16{});
    default: return "zaya cca_attention_backward: dtype must be bfloat16 or float16 on CUDA/HIP";
  }
}

}  // namespace zaya::kernels::attn_bwd
