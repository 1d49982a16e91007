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
// 4 heads of a ZAYA1 group fill the M dimension together. Query tiles are launched costliest (latest,
// longest causal prefix) first. A block takes one of two paths (block-uniform, from its row count):
//
// * Prefill (more than 16 rows left in the tile): each warp owns 16 rows (one mma tile high). Per key
//   tile of kBK keys: K and V rows come from the paged cache (16-byte chunks, block_table per key) into
//   shared memory; each warp computes its 16 x kBK scores with mma (A = Q, B = K), masks them (causal per
//   row, keys past the sequence end, rows past the sequence end), updates m/l, stages P as the dtype and
//   accumulates O += P V. CUDA double-buffers K/V: tile k0 + kBK is copied by cp.async (vendor::copy_async16,
//   one commit group per tile) into the second stage while tile k0 is computed, 2 block barriers + 1 per tile.
//   Warps whose 16 rows all lie past the sequence's end skip the math but still help copy.
// * Decode (at most 16 rows: every decode step of up to 16 / g queries, and short tails of a prefill):
//   every warp holds the same 16 rows and takes 16 keys of each tile of kDK = 16 * kWarps keys (full mma
//   tiles), with its own m, l and O; V of a tile is copied while the warps multiply with its K, the next K
//   while they multiply with V. The warps exchange their row maxima per tile (one barrier) and each takes
//   the block's running maximum up to the end of its sub-tile of kBK keys, so that P = 2^(S - m) rounds
//   exactly as in a prefill block (tiles of kBK keys). After the last tile the warps' (m, l, O) merge in shared memory in the
//   fixed order warp 0, 1, .. (M = max m_w, L = sum l_w 2^(m_w - M), O = sum O_w 2^(m_w - M): one more
//   online-softmax step per warp, so NaN, +inf and all -inf rows come out as in one pass and as
//   cca_attention_combine merges splits); then out / lse, or with splits > 1 part_out / part_lse.
//   Decision: decode is deterministic (a rerun gives identical bits) and held to the FlashAttention rule
//   against fp32, but it is not bit-equal to the same row computed by a prefill: P is, the fp32 sums of
//   O and l run in another order (tests/test_cca_cpu.py asks >= 99% identical elements and lse within
//   1e-5 there; without the shared maximum only ~90% were).
//
// Shared memory per block (bf16/fp16; rows padded by 8 elements; FwdLayout below). CUDA, dynamic (above
// 48 KiB: the kernel's opt-in, made once per kernel by vendor::launch, cached):
//   D    warps  rows M  kBK  prefill: Q + 2 x (K + V) + P                 decode: Q + K + V (kDK keys) + P
//   64   4      64      64   9 + 2 x 18 + 9 KiB       = 54 KiB            2.3 + 18 (64 keys) + 3 = 23 KiB
//   128  4      64      32   17 + 2 x 17 + 5 KiB      = 56 KiB            4.3 + 34 (64 keys) + 3 = 41 KiB
//   256  2      32      16   16.5 + 2 x 16.5 + 1.5 KiB = 51 KiB           8.3 + 33 (32 keys) + 1.5 = 43 KiB
// (the launch takes the larger, the prefill's). CDNA (not launched yet: the HIP launcher keeps
// cca_attention_fwd (version 1), since this kernel spills SGPRs on gfx940/gfx90a; emulator-tested on wave32 only),
// static LDS, one K/V stage (no cp.async), D <= 128:
// Q is read into registers once (A fragments) and its region then holds K, V and P: 27 KiB (D = 64) and
// 22 KiB (D = 128), so two blocks share a CU's 64 KiB of LDS; decode: 21 KiB (D = 64) and, with V in K's
// buffer after the scores (kSharedKV), 20 KiB (D = 128); D = 256: 34.5 KiB (26 KiB decode).
// CUDA loads the fragments with ldmatrix.x4 (Q, K, P) and ldmatrix.x4.trans (V) (mma.cuh load_*_v<true>);
// CDNA with scalar loads.
// ZAYA_KERNELS=v1 (32-lane warps): cca_attention_fwd (version 1, name unchanged), the kernel before the pipelines (scalar fragment
// loads, synchronous K/V copies, 36-39 KiB static shared memory, decode on one warp), for the benchmark's
// "v1" provider.
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
// Resources (bf16; fp16 within a few registers). nvcc 13, sm_90a (cuobjdump -res-usage), STACK 0 and
// LOCAL 0 (no spills): fwd_v2 D=64: 128 registers (fp16 125), D=128: 160, D=256: 244, static shared 1 KiB
// (the rest dynamic, above); fwd (version 1) D=64: 127, D=128: 134 (fp16 128), D=256: 221/222; combine: 32.
// hip-clang 16 (tools/check_hip.sh), CDNA's kernel (version 1), bf16, no scratch or spills, occupancy in waves per SIMD:
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

// ------------------------------------------------------------------------------------------------
// Version 2 (the default): cp.async pipelines, decode over all warps
// ------------------------------------------------------------------------------------------------

// Shared-memory layout of cca_attention_fwd_v2 (elements of 16 bits from the block's base; every region
// starts 16-byte aligned). Prefill blocks: Q [kM][kLd], then kStages stages of K [kBK][kLd] + V [kBK][kLd]
// (CUDA: 2, the next tile is copied by cp.async while this one is computed; CDNA: 1, and Q lives in
// registers after one pass through the base, so K starts there), then P [kM][kLdP]. Decode blocks
// (rows - R0 <= 16): Q [16][kLd], K [kDK][kLd] and V [kDK][kLd] of kDK = 16 * kWarps keys (each warp takes
// 16 of them; kSharedKV, CDNA D >= 128: V reuses K's buffer, so the LDS stays as small as the prefill's),
// then one P [16][kLdPD] per warp. After the key loop the decode blocks' warp combine reuses the base:
// m and l [kWarps][16][2] fp32, then each warp's scaled O [kWarps][16][kLdO] fp32, kCombCols columns at a time.
template <int D>
struct FwdLayout {
  using C = Cfg<D>;
  static constexpr bool kCdna = ZAYA_WARP_SIZE == 64;
  static constexpr bool kQRegs = kCdna && D <= 128;  // see cca_attention_fwd
  static constexpr int kStages = kCdna ? 1 : 2;       // prefill K/V stages (cp.async double buffer on CUDA)
  static constexpr bool kSharedKV = kCdna && D >= 128;
  static constexpr int kDK = 16 * C::kWarps;  // decode keys per tile
  static constexpr int kLdPD = 16 + 8;        // decode P row pitch
  static constexpr int max(int x, int y) { return x > y ? x : y; }
  // prefill
  static constexpr int kPreK = kQRegs ? 0 : C::kM * C::kLd;
  static constexpr int kPreStage = 2 * C::kBK * C::kLd;  // K then V
  static constexpr int kPreP = kPreK + kStages * kPreStage;
  static constexpr int kPreEnd = max(kPreP + C::kM * C::kLdP, C::kM * C::kLd);
  // decode
  static constexpr int kDecK = kQRegs ? 0 : 16 * C::kLd;
  static constexpr int kDecV = kDecK + (kSharedKV ? 0 : kDK * C::kLd);
  static constexpr int kDecP = kDecV + kDK * C::kLd;
  static constexpr int kDecMX = kDecP + C::kWarps * 16 * kLdPD;  // fp32 [kWarps][16]
  static constexpr int kDecEnd = max(kDecMX + C::kWarps * 16 * 2, 16 * C::kLd);
  static constexpr int kBytes = 2 * max(kPreEnd, kDecEnd);
  // decode combine: as many columns per round as fit
  static constexpr int combine_bytes(int cols) { return 4 * C::kWarps * 16 * (2 + cols + 4); }
  static constexpr int kCombCols = combine_bytes(D) <= kBytes ? D : combine_bytes(D / 2) <= kBytes ? D / 2 : D / 4;
  static constexpr int kLdO = kCombCols + 4;  // fp32 row pitch of the combine (16-byte rows)
  static_assert(combine_bytes(kCombCols) <= kBytes, "decode combine scratch");
  static_assert(kBytes % 16 == 0 && C::kLd % 8 == 0 && C::kLdP % 8 == 0 && kLdPD % 8 == 0, "16-byte regions");
  // CUDA: dynamic shared memory (above 48 KiB: vendor::launch's cached opt-in); CDNA: static LDS.
  static constexpr size_t kDynamicBytes = kCdna ? 0 : static_cast<size_t>(kBytes);
};

// One key tile of one warp: S = Q K^T over its 16 rows and NT * 16 keys (K rows Kt.., key positions
// kpos0..), masked (causal per row, keys at or past ke), the online softmax step, P = 2^(S - m) rounded
// to T into Pw (pitch ldp), O rescaled. Q from registers (qf, QN = D / 16) or shared memory (Qw).
// tile_max(mx): called by every thread with this warp's row maxima of the tile (reduced over the row's
// lanes); it may raise them to the maxima the online softmax must use (the decode path: the block's
// running maximum up to this warp's share, so that P rounds as in a prefill's tile of kBK keys).
template <class T, int D, int NT, bool kLdsm, int QN, class TileMax>
ZAYA_DEV void warp_scores(const mma::FragA (&qf)[QN], const uint16_t* Qw, const uint16_t* Kt, int kpos0, int ke,
                          const int (&qpos)[mma::kRowsPerLane], float scale_log2, float (&m)[mma::kRowsPerLane],
                          float (&l)[mma::kRowsPerLane], mma::FragC (&o)[D / 16], uint16_t* Pw, int ldp, int lane,
                          TileMax&& tile_max) {
  using C = Cfg<D>;
  constexpr int kR = mma::kRowsPerLane;
  constexpr bool kQRegs = QN == D / 16;
  mma::FragC sc[NT];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) mma::zero(sc[nt]);
#pragma unroll
  for (int kd = 0; kd < D / 16; ++kd) {
    const mma::FragA qa = kQRegs ? qf[kQRegs ? kd : 0] : mma::load_a_v<kLdsm>(Qw + kd * 16, C::kLd, lane);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
      mma::mma<T>(sc[nt], qa, mma::load_b_nk_v<kLdsm>(Kt + nt * 16 * C::kLd + kd * 16, C::kLd, lane));
  }
  float mx[kR];
#pragma unroll
  for (int s = 0; s < kR; ++s) mx[s] = -INFINITY;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int i = 0; i < mma::kAccum; ++i) {
      const int s = mma::c_slot(i);
      const int kpos = kpos0 + nt * 16 + mma::c_col(lane, i);
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
  }
  tile_max(mx);
#pragma unroll
  for (int s = 0; s < kR; ++s) {
    const float alpha = online_softmax_step(m[s], l[s], mx[s], m_use[s]);
#pragma unroll
    for (int nd = 0; nd < D / 16; ++nd) {
#pragma unroll
      for (int i = 0; i < mma::kAccum; ++i)
        if (mma::c_slot(i) == s) o[nd].x[i] *= alpha;
    }
  }
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int i = 0; i < mma::kAccum; ++i) {
      const int s = mma::c_slot(i);
      const float p = exp2f(sc[nt].x[i] - m_use[s]);
      l[s] += p;
      Pw[mma::c_row(lane, i) * ldp + nt * 16 + mma::c_col(lane, i)] = T::from_float(p);
    }
  }
}

// O += P V for one warp: P [16][NT * 16] at Pw (pitch ldp), V rows Vt.. (NT * 16 keys).
template <class T, int D, int NT, bool kLdsm>
ZAYA_DEV void warp_pv(mma::FragC (&o)[D / 16], const uint16_t* Pw, int ldp, const uint16_t* Vt, int lane) {
  using C = Cfg<D>;
  mma::FragA pa[NT];
#pragma unroll
  for (int kk = 0; kk < NT; ++kk) pa[kk] = mma::load_a_v<kLdsm>(Pw + kk * 16, ldp, lane);
#pragma unroll
  for (int nd = 0; nd < D / 16; ++nd) {
#pragma unroll
    for (int kk = 0; kk < NT; ++kk)
      mma::mma<T>(o[nd], pa[kk], mma::load_b_kn_v<kLdsm>(Vt + kk * 16 * C::kLd + nd * 16, C::kLd, lane));
  }
}

#if defined(ZAYA_EMU)
// Blocks of cca_attention_fwd_v2 that took the prefill (0) and the decode (1) path, counted under the
// emulator only (the tests' proof of which path ran; csrc/emu/kernels_cca_attention.cpp exports it).
inline std::atomic<int64_t>& emu_fwd_blocks(int decode) {
  static std::atomic<int64_t> n[2];
  return n[decode];
}
#endif

// Prefill blocks (rows - R0 > 16): each warp its 16 rows over every key of a tile of kBK keys. CUDA
// double-buffers K/V: tile k0 + kBK is copied by cp.async into the other stage while tile k0 is computed
// (one commit group per tile, waited for at the top of the next iteration).
template <class T, int D>
ZAYA_DEV void fwd_prefill(const CcaAttentionArgs& a, const BlockWork& w, uint16_t* smem, int warp, int lane) {
  using C = Cfg<D>;
  using L = FwdLayout<D>;
  constexpr int kR = mma::kRowsPerLane;
  constexpr bool kLdsm = ZAYA_WARP_SIZE == 32;
  constexpr bool kQRegs = L::kQRegs;
  const int64_t g = w.g, j = w.j, split = w.split, R0 = w.R0, rows = w.rows;
  const int cu0 = w.cu0, n = w.n, Lk = w.L, kb = w.kb, ke = w.ke;
  uint16_t* Qs = smem;
  uint16_t* Ks0 = smem + L::kPreK;  // stage s: K at Ks0 + s * kPreStage, V kBK rows further
  uint16_t* Ps = smem + L::kPreP;
#if defined(ZAYA_EMU)
  if (threadIdx.x == 0) emu_fwd_blocks(0).fetch_add(1, std::memory_order_relaxed);
#endif

  load_rows<D, C::kM, C::kThreads>(Qs, static_cast<const uint16_t*>(a.q), a.q_stride_t, a.q_stride_h, a.T, R0, rows,
                                   g, j, cu0);
  int qpos[kR];
#pragma unroll
  for (int s = 0; s < kR; ++s) {
    const int64_t R = R0 + warp * 16 + mma::slot_row(lane, s);
    qpos[s] = R < rows ? static_cast<int>(Lk - n + R / g) : -1;
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
  mma::FragA q_frag[kQRegs ? D / 16 : 1] = {};  // not read unless kQRegs
  if constexpr (kQRegs) {
    __syncthreads();  // Q is written
#pragma unroll
    for (int kd = 0; kd < D / 16; ++kd) q_frag[kd] = mma::load_a_v<kLdsm>(Qw + kd * 16, C::kLd, lane);
    // The loop's first barrier orders these reads before K, V and P overwrite the region.
  }

  if constexpr (L::kStages == 2) {
    if (kb < ke) load_kv_async<T, D, C::kBK, C::kThreads>(Ks0, Ks0 + C::kBK * C::kLd, a, w.table_row, j, kb, ke);
    vendor::copy_async_commit();
  }
  int st = 0;
  for (int k0 = kb; k0 < ke; k0 += C::kBK, st ^= 1) {
    if constexpr (L::kStages == 2) {
      vendor::copy_async_wait<0>();  // this thread's copies of tile k0
      __syncthreads();  // everyone's (and Q); every warp is done with the other stage and with P
      uint16_t* Kn = Ks0 + (st ^ 1) * L::kPreStage;
      if (k0 + C::kBK < ke)
        load_kv_async<T, D, C::kBK, C::kThreads>(Kn, Kn + C::kBK * C::kLd, a, w.table_row, j, k0 + C::kBK, ke);
      vendor::copy_async_commit();
    } else {
      __syncthreads();  // the previous tile's K, V and P are consumed (and Q is read, first time)
      load_kv_async<T, D, C::kBK, C::kThreads>(Ks0, Ks0 + C::kBK * C::kLd, a, w.table_row, j, k0, ke);
      __syncthreads();
    }
    const uint16_t* Kt = Ks0 + (L::kStages == 2 ? st : 0) * L::kPreStage;
    if (active)
      warp_scores<T, D, C::kBK / 16, kLdsm>(q_frag, Qw, Kt, k0, ke, qpos, scale_log2, m, l, o, Pw, C::kLdP, lane,
                                            [](float (&)[kR]) {});
    __syncthreads();  // P visible to the whole warp
    if (active) warp_pv<T, D, C::kBK / 16, kLdsm>(o, Pw, C::kLdP, Kt + C::kBK * C::kLd, lane);
  }
  vendor::copy_async_wait<0>();  // nothing is in flight past the last tile (an empty group at most)

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
  __syncthreads();  // every warp is done reading Q, K, V and P (the staging below reuses Q's rows)
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

// Decode blocks (rows - R0 <= 16: a decode step's 1 query x g heads, a few speculative queries, a short
// tail): all warps hold the same 16 rows; warp w takes keys k0 + 16 w .. + 15 of each tile of kDK keys,
// with its own m, l and O. Pipeline: V of tile k0 is copied while the warps multiply with its K, K of the
// next tile while they multiply with V (cp.async on CUDA; kSharedKV: one buffer, plain copies between
// barriers). Then the warps' (m, l, O) merge in shared memory, warp 0, 1, .. in that fixed order (a
// rerun gives the same bits), as one more online-softmax step per warp: M = max_nan of the warps' m,
// L = sum_w l_w 2^(m_w - M), O = sum_w O_w 2^(m_w - M), so NaN, +inf and all -inf rows come out as in
// one pass (and as cca_attention_combine merges splits). With splits > 1 the merged O / L and lse go to
// part_out / part_lse for the combine kernel.
template <class T, int D>
ZAYA_DEV void fwd_decode(const CcaAttentionArgs& a, const BlockWork& w, uint16_t* smem, int warp, int lane) {
  using C = Cfg<D>;
  using L = FwdLayout<D>;
  constexpr int kR = mma::kRowsPerLane;
  constexpr bool kLdsm = ZAYA_WARP_SIZE == 32;
  constexpr bool kQRegs = L::kQRegs;
  constexpr int kDK = L::kDK;
  const int64_t g = w.g, j = w.j, split = w.split, R0 = w.R0, rows = w.rows;
  const int cu0 = w.cu0, n = w.n, Lk = w.L, kb = w.kb, ke = w.ke;
  uint16_t* Qs = smem;
  uint16_t* Ks = smem + L::kDecK;
  uint16_t* Vs = smem + L::kDecV;
  uint16_t* Pw = smem + L::kDecP + warp * 16 * L::kLdPD;
#if defined(ZAYA_EMU)
  if (threadIdx.x == 0) emu_fwd_blocks(1).fetch_add(1, std::memory_order_relaxed);
#endif

  load_rows<D, 16, C::kThreads>(Qs, static_cast<const uint16_t*>(a.q), a.q_stride_t, a.q_stride_h, a.T, R0, rows, g,
                                j, cu0);
  int qpos[kR];
#pragma unroll
  for (int s = 0; s < kR; ++s) {
    const int64_t R = R0 + mma::slot_row(lane, s);
    qpos[s] = R < rows ? static_cast<int>(Lk - n + R / g) : -1;
  }
  const float scale_log2 = a.scale * kLog2e;
  float m[kR], l[kR];
#pragma unroll
  for (int s = 0; s < kR; ++s) m[s] = -INFINITY, l[s] = 0.f;
  mma::FragC o[D / 16];
#pragma unroll
  for (int nd = 0; nd < D / 16; ++nd) mma::zero(o[nd]);
  mma::FragA q_frag[kQRegs ? D / 16 : 1] = {};  // not read unless kQRegs
  if constexpr (kQRegs) {
    __syncthreads();  // Q is written
#pragma unroll
    for (int kd = 0; kd < D / 16; ++kd) q_frag[kd] = mma::load_a_v<kLdsm>(Qs + kd * 16, C::kLd, lane);
    if constexpr (!L::kSharedKV) __syncthreads();  // read before K overwrites the region
  }

  const uint16_t* Kw = Ks + warp * 16 * C::kLd;
  const uint16_t* Vw = Vs + warp * 16 * C::kLd;
  float* MX = reinterpret_cast<float*>(smem + L::kDecMX);  // [kWarps][16]: the warps' row maxima of a tile
  constexpr int kWarpsPerBK = C::kBK / 16;                 // warps per prefill tile of kBK keys
  float m_run[kR];                                         // the block's running maximum per row
#pragma unroll
  for (int s = 0; s < kR; ++s) m_run[s] = -INFINITY;
  if constexpr (!L::kSharedKV) {
    if (kb < ke) load_kv_async<T, D, kDK, C::kThreads, true, false>(Ks, Vs, a, w.table_row, j, kb, ke);
    vendor::copy_async_commit();
  }
  for (int k0 = kb; k0 < ke; k0 += kDK) {
    if constexpr (L::kSharedKV) {
      __syncthreads();  // every warp is done with the previous tile's V and P (and Q, first time)
      load_kv_async<T, D, kDK, C::kThreads, true, false>(Ks, Vs, a, w.table_row, j, k0, ke);
      __syncthreads();
    } else {
      vendor::copy_async_wait<0>();  // this thread's copies of K
      __syncthreads();  // everyone's (and Q); every warp is done with the previous V and P
      load_kv_async<T, D, kDK, C::kThreads, false, true>(Ks, Vs, a, w.table_row, j, k0, ke);
      vendor::copy_async_commit();
    }
    // The block's running maximum over the tile's sub-tiles of kBK keys, up to this warp's: P then rounds
    // as in a prefill block (whose tiles are kBK keys), so decode and prefill rows agree almost bit for bit.
    auto tile_max = [&](float (&mx)[kR]) {
      if (lane % mma::kRowLanes == 0) {
#pragma unroll
        for (int s = 0; s < kR; ++s) MX[warp * 16 + mma::slot_row(lane, s)] = mx[s];
      }
      __syncthreads();  // every warp's maxima (kSharedKV: and every warp is done with K)
      if constexpr (L::kSharedKV) load_kv_async<T, D, kDK, C::kThreads, false, true>(Ks, Vs, a, w.table_row, j, k0, ke);
#pragma unroll
      for (int s = 0; s < kR; ++s) {
        const int r = mma::slot_row(lane, s);
        float run = m_run[s];
        for (int ww = 0; ww < C::kWarps; ++ww) {
          run = max_nan(run, MX[ww * 16 + r]);
          if (ww == (warp / kWarpsPerBK) * kWarpsPerBK + kWarpsPerBK - 1) mx[s] = run;
        }
        m_run[s] = run;
      }
    };
    warp_scores<T, D, 1, kLdsm>(q_frag, Qs, Kw, k0 + warp * 16, ke, qpos, scale_log2, m, l, o, Pw, L::kLdPD, lane,
                                tile_max);
    if constexpr (L::kSharedKV) {
      __syncthreads();  // V and P visible; MX read
    } else {
      vendor::copy_async_wait<0>();
      __syncthreads();  // V and P visible; every warp is done with K
      if (k0 + kDK < ke) load_kv_async<T, D, kDK, C::kThreads, true, false>(Ks, Vs, a, w.table_row, j, k0 + kDK, ke);
      vendor::copy_async_commit();
    }
    warp_pv<T, D, 1, kLdsm>(o, Pw, L::kLdPD, Vw, lane);
  }
  vendor::copy_async_wait<0>();

  // The warps' merge. Row sums over the lanes of each row first, then (m, l) per warp and row.
#pragma unroll
  for (int s = 0; s < kR; ++s) {
#pragma unroll
    for (int off = 1; off < mma::kRowLanes; off *= 2) l[s] += vendor::shfl_xor(l[s], off);
  }
  float* ML = reinterpret_cast<float*>(smem);  // [kWarps][16][2]: m, l
  float* Os = ML + C::kWarps * 16 * 2;        // [kWarps][16][kLdO]
  __syncthreads();  // every warp is done with the last tile (the merge reuses its shared memory)
  if (lane % mma::kRowLanes == 0) {
#pragma unroll
    for (int s = 0; s < kR; ++s) {
      const int r = mma::slot_row(lane, s);
      ML[(warp * 16 + r) * 2] = m[s];
      ML[(warp * 16 + r) * 2 + 1] = l[s];
    }
  }
  __syncthreads();
  float fac[kR];  // 2^(m_w - M) of this warp's rows
#pragma unroll
  for (int s = 0; s < kR; ++s) {
    const int r = mma::slot_row(lane, s);
    float M = -INFINITY;
    for (int ww = 0; ww < C::kWarps; ++ww) M = max_nan(M, ML[(ww * 16 + r) * 2]);
    fac[s] = exp2f(m[s] - (M == -INFINITY ? 0.f : M));
  }
  constexpr int kCols = L::kCombCols, kCh = kCols / 8;
#pragma unroll
  for (int c0 = 0; c0 < D; c0 += kCols) {
    if (c0 > 0) __syncthreads();  // the previous columns are read
#pragma unroll
    for (int nd = 0; nd < D / 16; ++nd) {
      if (nd * 16 < c0 || nd * 16 >= c0 + kCols) continue;
#pragma unroll
      for (int i = 0; i < mma::kAccum; ++i)
        Os[(warp * 16 + mma::c_row(lane, i)) * L::kLdO + nd * 16 - c0 + mma::c_col(lane, i)] =
            o[nd].x[i] * fac[mma::c_slot(i)];
    }
    __syncthreads();
    for (int c = static_cast<int>(threadIdx.x); c < 16 * kCh; c += C::kThreads) {
      const int r = c / kCh, col = (c % kCh) * 8;  // col: within this round's columns
      const int64_t R = R0 + r, t = cu0 + R / g, h = j * g + R % g;
      if (R >= rows || t < 0 || t >= a.T) continue;
      float M = -INFINITY;
      for (int ww = 0; ww < C::kWarps; ++ww) M = max_nan(M, ML[(ww * 16 + r) * 2]);
      const float M_use = M == -INFINITY ? 0.f : M;
      float Lsum = 0.f, acc[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] = 0.f;
      for (int ww = 0; ww < C::kWarps; ++ww) {
        Lsum += ML[(ww * 16 + r) * 2 + 1] * exp2f(ML[(ww * 16 + r) * 2] - M_use);
        const uint4* src = reinterpret_cast<const uint4*>(Os + (ww * 16 + r) * L::kLdO + col);  // 2 x 4 floats
        const uint4 x0 = src[0], x1 = src[1];
        acc[0] += vendor::u2f(x0.x), acc[1] += vendor::u2f(x0.y), acc[2] += vendor::u2f(x0.z);
        acc[3] += vendor::u2f(x0.w), acc[4] += vendor::u2f(x1.x), acc[5] += vendor::u2f(x1.y);
        acc[6] += vendor::u2f(x1.z), acc[7] += vendor::u2f(x1.w);
      }
      const float inv = 1.f / Lsum;  // inf for a row that saw no key: 0 * inf = NaN (0/0)
      if (a.splits > 1) {
        float* dst = a.part_out + ((split * a.T + t) * a.nq + h) * D + c0 + col;
        float v[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) v[e] = Lsum > 0.f ? acc[e] * inv : 0.f;  // empty: weight 0 in the combine
        reinterpret_cast<uint4*>(dst)[0] = uint4{vendor::f2u(v[0]), vendor::f2u(v[1]), vendor::f2u(v[2]), vendor::f2u(v[3])};
        reinterpret_cast<uint4*>(dst)[1] = uint4{vendor::f2u(v[4]), vendor::f2u(v[5]), vendor::f2u(v[6]), vendor::f2u(v[7])};
        if (c0 + col == 0) a.part_lse[(split * a.nq + h) * a.T + t] = row_lse(M, Lsum);
      } else {
        uint32_t u[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) u[e] = T::from_float(acc[e] * inv);
        *reinterpret_cast<uint4*>(static_cast<uint16_t*>(a.out) + (t * a.nq + h) * D + c0 + col) =
            uint4{u[0] | (u[1] << 16), u[2] | (u[3] << 16), u[4] | (u[5] << 16), u[6] | (u[7] << 16)};
        if (c0 + col == 0) a.lse[h * a.T + t] = row_lse(M, Lsum);
      }
    }
  }
}

// grid (tiles, nkv * splits, B), block Cfg<D>::kThreads; CUDA: FwdLayout<D>::kDynamicBytes of dynamic
// shared memory. keys_per_split: a multiple of FwdLayout<D>::kDK (and so of kBK).
template <class T, int D>
__global__ void __launch_bounds__(Cfg<D>::kThreads)
    cca_attention_fwd_v2(CcaAttentionArgs a, int64_t tiles, int64_t keys_per_split) {
  using C = Cfg<D>;
#if ZAYA_WARP_SIZE == 32
  uint16_t* smem = vendor::dynamic_smem<uint16_t>();
#else
  __shared__ uint4 smem_raw[FwdLayout<D>::kBytes / 16];
  uint16_t* smem = reinterpret_cast<uint16_t*>(smem_raw);
#endif
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize, lane = vendor::lane_id();
  const BlockWork w = block_work(a, tiles, keys_per_split, C::kM);
  if (w.R0 >= w.rows) return;  // the whole block, before any barrier
  if (w.rows - w.R0 <= 16)     // block-uniform
    fwd_decode<T, D>(a, w, smem, warp, lane);
  else
    fwd_prefill<T, D>(a, w, smem, warp, lane);
}

// ------------------------------------------------------------------------------------------------
// Version 1 (ZAYA_KERNELS=v1 on 32-lane warps; always on CDNA): the kernel before the pipelines, kept unchanged so
// that one GPU run times both (the benchmark's "v1" provider): scalar fragment loads, synchronous K/V
// copies, decode on one warp. It is also CDNA's kernel (its kQRegs layout: Q in registers, 2 blocks per
// CU), since the version-2 kernel spills SGPRs there.
// ------------------------------------------------------------------------------------------------

// grid (tiles, nkv * splits, B), block Cfg<D>::kThreads. keys_per_split: a multiple of kBK.
template <class T, int D>
__global__ void __launch_bounds__(Cfg<D>::kThreads)
    cca_attention_fwd(CcaAttentionArgs a, int64_t tiles, int64_t keys_per_split) {
  using C = Cfg<D>;
  constexpr bool kLdsm = false;
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

// Keys per split, rounded up to a multiple of `granule` (the kernel's key tile: C::kBK; cca_attention_fwd_v2's
// decode tile FwdLayout<D>::kDK, a multiple of kBK).
template <class C>
int64_t keys_per_split(const CcaAttentionArgs& a, int64_t splits, int64_t granule = C::kBK) {
  const int64_t per = (a.max_seqlen_k + splits - 1) / splits;
  return (per + granule - 1) / granule * granule;
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
    using L = FwdLayout<C::kD>;
    const char* err = nullptr;
    // CDNA keeps the version-1 kernel for now: the version-2 kernel compiles there (FwdLayout's CDNA
    // layout keeps 2 blocks per CU) but spills SGPRs (tools/check_hip.sh), so it is not launched on 64-lane
    // wavefronts yet.
#if ZAYA_WARP_SIZE == 32
    if (!runtime::kernels_v1())
      err = vendor::launch(&cca_attention_fwd_v2<T, C::kD>, grid, block, L::kDynamicBytes, stream, a, tiles,
                           keys_per_split<C>(a, a.splits, L::kDK));
    else
#else
    (void)sizeof(L);
#endif
      err = vendor::launch(&cca_attention_fwd<T, C::kD>, grid, block, 0, stream, a, tiles, keys_per_split<C>(a, a.splits));
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
