// Hopper (sm_90a) forward kernel of zaya::cca_attention: the same flash attention as
// cca_attention_fwd (cca_attention.cuh, whose header comment gives the semantics, rounding rules,
// query-row packing, masking and flash-decoding splits; all of it holds here unchanged), with the two
// matrix products on warpgroup MMA (wgmma.cuh) instead of mma.sync. OPT-IN: the launcher selects it
// only when wgmma::hopper_paths_enabled() (environment ZAYA_WGMMA=1 on a CC 9.x device with an sm_90a
// build; the 32-lane SIMT emulator takes the variable alone) and D is 64 or 128 (D = 256 keeps
// cca_attention_fwd). It has been tested under the SIMT emulator only (emu32-wgmma target), which
// checks the wgmma operand layouts as the PTX ISA documents them; it has NOT yet run on a GPU.
//
// Tiling. A block is one warpgroup (128 threads, 4 warps) over M = 64 stacked (query, group head)
// rows, the same rows, grid and splits as cca_attention_fwd (Cfg<D>::kM = 64 for D = 64 and 128).
// Everything the tensor cores read sits in dynamic shared memory in the no-swizzle K-major core
// layout (wgmma::kmajor_offset: [rows / 8][D / 8] core matrices of 8 rows x 16 bytes):
//   Q [64][D]: loaded once; A operand of S = Q K^T (mma_ss, wgmma::kmajor_desc per 16-wide d-step:
//     LBO = 128 B, SBO = 16 D B).
//   K [kBK][D] (keys x d), two buffers: B operand of S, K-major (the same descriptors as Q).
//   V [kBK][D] (keys x d), two buffers, the same byte layout as K: read as the MN-major B operand of
//     O += P V (mma_rs<kTransB = true>, N = D, wgmma::mn_major_desc): a core matrix is 8 keys x 8
//     d-elements, so LBO (next core along k = keys) = 16 D B and SBO (next core along n = d) = 128 B
//     (tests/test_layouts.py: CUTLASS's reading; tests/test_wgmma_tiles.py settles it on a Hopper GPU).
// A K or V row is copied from the paged cache with cp.async, 16 bytes per copy, straight to its
// core-matrix position (8 consecutive threads fill one 128-byte core: no bank conflicts). Keys past
// the block's last visible key are zero-filled, keys with an out-of-range block-table entry are NaN
// (plain stores), as in load_kv. Per key tile:
//   1. prefetch tile it + 1 into the other K/V buffer (cp.async), then wait for tile it's copies,
//      fence.proxy.async, barrier;
//   2. S (64 x kBK fp32, wgmma::Acc<kBK>) = Q K^T: D / 16 mma_ss, one commit group, wait;
//   3. scale to base 2, mask, online softmax on the accumulators: thread t holds rows
//      16 (t / 32) + (t % 32) / 4 and that + 8, each spread over the 4 lanes of a quad (shfl_xor 1, 2);
//      O is rescaled in its registers;
//   4. P = 2^(S - m) rounded to the dtype goes straight from S's registers to the register A operand
//      (FlashAttention-2's trick: S accumulators 8 j .. 8 j + 7 of a thread are exactly the m16n8k16 A
//      fragment of k-step j), l adds the unrounded fp32 P;
//   5. O (64 x D fp32, wgmma::Acc<D>) += P V: kBK / 16 mma_rs, one commit group, wait; barrier (the
//      buffer is refilled by the next iteration's prefetch).
// wgmma::fence() precedes each batch (the accumulators and P were written by ordinary code) and
// fence_acc() follows each wait. The single-split epilogue stages out = O / l in Q's shared memory
// (core layout) and writes whole 16-byte chunks; splits write fp32 partials as cca_attention_fwd.
//   D    kBK  shared memory (Q + 2 x (K + V), dynamic)
//   64   128  8 + 2 x (16 + 16) KiB = 72 KiB
//   128  64   16 + 2 x (16 + 16) KiB = 80 KiB
//
// Resources: nvcc 13 -Xptxas -v, sm_90a, no spills, no stack frame, no ptxas wgmma serialization
// warning (C7510 / C7515, "warpgroup.arrive injected"):
//   bf16: D=64 179 registers, D=128 166; fp16: D=64 139, D=128 137. Resident blocks per H100 SM
//   (64K registers, 227 KiB shared):
//   D=64 bf16 2 (registers), fp16 3 (shared memory); D=128 2 (shared memory). A minimum of 3 blocks
//   (__launch_bounds__(128, 3)) makes ptxas spill for D=64 bf16, so it is not asked for.
//   (The sm_80 image of this kernel is a 50-register stub: wgmma traps there, it is never selected.)
//
// Roofline expectation (H100 SXM, datasheet rates; nothing here is measured): prefill is
// compute-bound (cca_attention.cuh: ZAYA1 T = 4096, 34.4 GFLOP, a ~0.035 ms floor at ~990 dense
// bf16 TFLOP/s). mma.sync is reported to reach only about 2/3 of that peak on H100 (FlashAttention-2
// against -3), so wgmma is what can approach the floor. This first version is not built for peak:
// one warpgroup per block issues S, softmax and PV back to back (no ping-pong between warpgroups and
// no overlap of the softmax with the next S, as FlashAttention-3 does), its loads are cp.async by the
// same threads (no TMA, no producer warp) and P / out are rounded in software; latency is hidden only
// by the 2-3 resident blocks per SM and the K/V double buffer. A guess, to be replaced by a Hopper
// measurement: well under half of the wgmma peak. Decode (flash-decoding splits) is bandwidth-bound
// either way; this kernel reads the same K/V bytes once per (KV head, split) as cca_attention_fwd.
#pragma once

#include <cmath>
#include <cstdint>

#include "cca_attention_launch.h"
#include "mma.cuh"
#include "vendor.h"
#include "wgmma.cuh"

#if defined(ZAYA_HAVE_WGMMA_SOURCE)

namespace zaya::kernels::attn {

template <int D>
struct Sm90Cfg {
  static_assert(D == 64 || D == 128, "cca_attention sm90: head dim 64 or 128");
  static constexpr int kD = D;
  static constexpr int kThreads = wgmma::kThreads;  // one warpgroup
  static constexpr int kM = 64;                      // stacked (query, group head) rows per block
  static constexpr int kBK = D == 64 ? 128 : 64;     // keys per tile (the N of S: 64 or 128)
  static constexpr int kChunks = D / 8;              // 16-byte chunks per row
  static constexpr int kQElems = kM * D;
  static constexpr int kKVElems = kBK * D;
  static constexpr int kSmemBytes = (kQElems + 4 * kKVElems) * 2;  // Q, K[2], V[2]
};

// Chunk c (0 .. rows * kChunks - 1) of a [rows][D] tile: row and 16-byte chunk, ordered so that 8
// consecutive c fill one 128-byte core matrix (8 rows of the same chunk).
template <int D>
ZAYA_DEV void sm90_chunk(int c, int& r, int& ch) {
  constexpr int kChunks = D / 8;
  ch = (c >> 3) % kChunks;
  r = (c >> 3) / kChunks * 8 + (c & 7);
}

// cp.async of keys k0 .. k0 + kBK - 1 of (sequence b, KV head j) into K-major core layout; keys at or
// past kend are zeros, a key with an out-of-range block-table entry NaNs (as load_kv).
template <class T, int D>
ZAYA_DEV void load_kv_sm90(uint16_t* Ks, uint16_t* Vs, const CcaAttentionArgs& a, const int32_t* table_row,
                           int64_t j, int k0, int kend) {
  using C = Sm90Cfg<D>;
  const uint16_t* kc = static_cast<const uint16_t*>(a.k_cache);
  const uint16_t* vc = static_cast<const uint16_t*>(a.v_cache);
  for (int c = static_cast<int>(threadIdx.x); c < C::kBK * C::kChunks; c += C::kThreads) {
    int r, ch;
    sm90_chunk<D>(c, r, ch);
    const int dst = wgmma::kmajor_offset(r, ch * 8, D);
    const int pos = k0 + r;
    const uint16_t* ks = kc;
    const uint16_t* vs = vc;
    bool valid = false;
    if (pos < kend) {
      const int bs = static_cast<int>(a.block_size), col = pos / bs, off = pos % bs;
      const int64_t blk = col < a.table_cols ? table_row[col] : -1;
      if (blk >= 0 && blk < a.num_blocks) {
        ks = kc + blk * a.k_stride[0] + off * a.k_stride[1] + j * a.k_stride[2] + ch * 8;
        vs = vc + blk * a.v_stride[0] + off * a.v_stride[1] + j * a.v_stride[2] + ch * 8;
        valid = true;
      } else {
        *reinterpret_cast<uint4*>(Ks + dst) = nan_chunk<T>();
        *reinterpret_cast<uint4*>(Vs + dst) = nan_chunk<T>();
        continue;
      }
    }
    vendor::copy_async16(Ks + dst, ks, valid);
    vendor::copy_async16(Vs + dst, vs, valid);
  }
}

// grid (tiles, nkv * splits, B), block 128 threads, Sm90Cfg<D>::kSmemBytes of dynamic shared memory.
// keys_per_split: a multiple of Sm90Cfg<D>::kBK.
template <class T, int D>
__global__ void __launch_bounds__(Sm90Cfg<D>::kThreads)
    cca_attention_fwd_sm90(CcaAttentionArgs a, int64_t tiles, int64_t keys_per_split) {
  using C = Sm90Cfg<D>;
  constexpr int kBK = C::kBK;
  uint16_t* Qs = vendor::dynamic_smem<uint16_t>();
  uint16_t* Ks0 = Qs + C::kQElems;          // K buffers [2][kBK * D]
  uint16_t* Vs0 = Ks0 + 2 * C::kKVElems;    // V buffers [2][kBK * D]

  const int tid = static_cast<int>(threadIdx.x), lane = vendor::lane_id();
  const BlockWork w = block_work(a, tiles, keys_per_split, C::kM);
  if (w.R0 >= w.rows) return;  // the whole block, before any barrier
  const int64_t g = w.g, j = w.j, split = w.split, R0 = w.R0, rows = w.rows;
  const int cu0 = w.cu0, n = w.n, L = w.L, kb = w.kb, ke = w.ke;
  const int32_t* table_row = w.table_row;
  const int ntiles = ke > kb ? (ke - kb + kBK - 1) / kBK : 0;

  // Q rows (zeros past the sequence's end) and the first K/V tile: one cp.async group.
  const uint16_t* q = static_cast<const uint16_t*>(a.q);
  for (int c = tid; c < C::kM * C::kChunks; c += C::kThreads) {
    int r, ch;
    sm90_chunk<D>(c, r, ch);
    const int64_t R = R0 + r, t = cu0 + R / g;
    const bool valid = R < rows && t >= 0 && t < a.T;
    const uint16_t* src = valid ? q + t * a.q_stride_t + (j * g + R % g) * a.q_stride_h + ch * 8 : q;
    vendor::copy_async16(Qs + wgmma::kmajor_offset(r, ch * 8, D), src, valid);
  }
  if (ntiles > 0) load_kv_sm90<T, D>(Ks0, Vs0, a, table_row, j, kb, ke);
  vendor::copy_async_commit();

  // This thread's two rows (wgmma::acc_row, slots s = 0, 1): query positions (-1: past the end).
  int qpos[2];
#pragma unroll
  for (int s = 0; s < 2; ++s) {
    const int64_t R = R0 + wgmma::acc_row(tid, 2 * s);
    qpos[s] = R < rows ? static_cast<int>(L - n + R / g) : -1;
  }
  const float scale_log2 = a.scale * kLog2e;

  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  wgmma::Acc<D> o;
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o.x[i] = 0.f;
  wgmma::Acc<kBK> sc;

  for (int it = 0; it < ntiles; ++it) {
    const int k0 = kb + it * kBK;
    const uint16_t* Ks = Ks0 + (it & 1) * C::kKVElems;
    const uint16_t* Vs = Vs0 + (it & 1) * C::kKVElems;
    // Prefetch the next tile into the other buffer (its readers retired before the last barrier).
    if (it + 1 < ntiles)
      load_kv_sm90<T, D>(Ks0 + ((it + 1) & 1) * C::kKVElems, Vs0 + ((it + 1) & 1) * C::kKVElems, a, table_row, j,
                         k0 + kBK, ke);
    vendor::copy_async_commit();
    vendor::copy_async_wait<1>();  // this tile's group (and Q's) landed
    wgmma::fence_async_proxy();
    __syncthreads();

    // S = Q K^T over D / 16 k-steps.
#pragma unroll
    for (int i = 0; i < kBK / 2; ++i) sc.x[i] = 0.f;
    wgmma::fence();
#pragma unroll
    for (int kd = 0; kd < D / 16; ++kd) {
      wgmma::mma_ss<T, false>(sc, wgmma::kmajor_desc(Qs, kd, D), wgmma::kmajor_desc(Ks, kd, D), kd > 0);
    }
    wgmma::commit();
    wgmma::wait<0>();
    wgmma::fence_acc(sc);

    // Scale to base 2 and mask: keys after the row's position, and (zero-filled) keys past ke.
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int i = 0; i < kBK / 2; ++i) {
      const int s = (i >> 1) & 1;
      const int kpos = k0 + wgmma::acc_col(tid, i);
      const float x = kpos <= qpos[s] && kpos < ke ? sc.x[i] * scale_log2 : -INFINITY;
      sc.x[i] = x;
      mx[s] = max_nan(mx[s], x);  // NaN-propagating, see row_lse
    }
    float m_use[2];
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      mx[s] = max_nan(mx[s], vendor::shfl_xor(mx[s], 1));
      mx[s] = max_nan(mx[s], vendor::shfl_xor(mx[s], 2));
      const float alpha = online_softmax_step(m[s], l[s], mx[s], m_use[s]);
#pragma unroll
      for (int i = 0; i < D / 2; ++i)
        if (((i >> 1) & 1) == s) o.x[i] *= alpha;
    }
    // P in registers as the A operand: k-step kk's fragment is accumulators 8 kk .. 8 kk + 7.
    wgmma::FragA pa[kBK / 16];
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int s = r & 1;
        const float p0 = exp2f(sc.x[8 * kk + 2 * r] - m_use[s]);
        const float p1 = exp2f(sc.x[8 * kk + 2 * r + 1] - m_use[s]);
        l[s] += p0;
        l[s] += p1;
        pa[kk].x[r] = mma::pack(T::from_float(p0), T::from_float(p1));
      }
    }
    // O += P V over kBK / 16 k-steps (V read MN-major).
    wgmma::fence();
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk)
      wgmma::mma_rs<T, true>(o, pa[kk], wgmma::mn_major_desc(Vs, kk, D), true);
    wgmma::commit();
    wgmma::wait<0>();
    wgmma::fence_acc(o);
    __syncthreads();  // every thread retired this buffer's readers: the next prefetch may overwrite it
  }
  vendor::copy_async_wait<0>();  // no copy may still be landing in Q (a block with no key tile)

  // Row sums over the quad; lse in natural log (row_lse: -inf for a row that saw no key).
  float inv[2], lse[2];
#pragma unroll
  for (int s = 0; s < 2; ++s) {
    l[s] += vendor::shfl_xor(l[s], 1);
    l[s] += vendor::shfl_xor(l[s], 2);
    inv[s] = 1.f / l[s];  // inf for a row that saw no key: 0 * inf = NaN, like the reference's 0/0
    lse[s] = row_lse(m[s], l[s]);
  }
  const bool lead = (lane & 3) == 0;
  if (a.splits > 1) {
#pragma unroll
    for (int i = 0; i < D / 2; ++i) {
      const int64_t R = R0 + wgmma::acc_row(tid, i);
      if (R >= rows) continue;
      const int64_t t = cu0 + R / g, h = j * g + R % g;
      if (t < 0 || t >= a.T) continue;
      const int s = (i >> 1) & 1;
      a.part_out[((split * a.T + t) * a.nq + h) * D + wgmma::acc_col(tid, i)] =
          l[s] > 0.f ? o.x[i] * inv[s] : 0.f;  // an empty split weighs 0 in the combine
    }
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      const int64_t R = R0 + wgmma::acc_row(tid, 2 * s);
      const int64_t t = cu0 + R / g;
      if (lead && R < rows && t >= 0 && t < a.T) a.part_lse[(split * a.nq + j * g + R % g) * a.T + t] = lse[s];
    }
    return;
  }

  // Single split: out = O / l rounded to T, staged in Q's shared memory (core layout: a row's 8
  // elements of one chunk are contiguous) so that the global stores are whole 16-byte chunks.
  __syncthreads();  // every Q copy landed and no wgmma reads Q any more
#pragma unroll
  for (int i = 0; i < D / 2; i += 2) {
    const int s = (i >> 1) & 1;
    const int r = wgmma::acc_row(tid, i), c = wgmma::acc_col(tid, i);  // c even: i, i + 1 adjacent
    *reinterpret_cast<uint32_t*>(Qs + wgmma::kmajor_offset(r, c, D)) =
        mma::pack(T::from_float(o.x[i] * inv[s]), T::from_float(o.x[i + 1] * inv[s]));
  }
#pragma unroll
  for (int s = 0; s < 2; ++s) {
    const int64_t R = R0 + wgmma::acc_row(tid, 2 * s);
    const int64_t t = cu0 + R / g;
    if (lead && R < rows && t >= 0 && t < a.T) a.lse[(j * g + R % g) * a.T + t] = lse[s];
  }
  __syncthreads();
  uint16_t* out = static_cast<uint16_t*>(a.out);
  for (int c = tid; c < C::kM * C::kChunks; c += C::kThreads) {
    int r, ch;
    sm90_chunk<D>(c, r, ch);
    const int64_t R = R0 + r, t = cu0 + R / g;
    if (R < rows && t >= 0 && t < a.T)
      *reinterpret_cast<uint4*>(out + (t * a.nq + j * g + R % g) * D + ch * 8) =
          *reinterpret_cast<const uint4*>(Qs + wgmma::kmajor_offset(r, ch * 8, D));
  }
}

}  // namespace zaya::kernels::attn

#endif  // ZAYA_HAVE_WGMMA_SOURCE
