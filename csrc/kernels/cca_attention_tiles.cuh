// What the cca_attention kernels share (the forward, csrc/kernels/cca_attention.cuh, and the backward,
// csrc/kernels/cca_attention_backward.cuh): the forward's tile configuration, the block-to-work map of
// a query-tile grid, and the tile loaders from the paged caches and from [T, nq, D] rows into shared
// memory. Device code only: no kernels and no launchers, so including it instantiates nothing.
#pragma once

#include <cmath>
#include <cstdint>

#include "cca_attention_launch.h"
#include "vendor.h"

namespace zaya::kernels::attn {

template <int D>
struct Cfg {
  static_assert(D == 64 || D == 128 || D == 256, "cca_attention: head dim 64, 128 or 256");
  static constexpr int kD = D;
  static constexpr int kWarps = D == 256 ? 2 : 4;
  static constexpr int kThreads = kWarps * ZAYA_WARP_SIZE;
  static constexpr int kM = 16 * kWarps;           // stacked (query, group head) rows per block
  static constexpr int kBK = D == 64 ? 64 : D == 128 ? 32 : 16;  // keys per tile
  static constexpr int kLd = D + 8;                 // Q/K/V row pitch (elements): even, 16-byte rows
  static constexpr int kLdP = kBK + 8;              // P row pitch
  static constexpr int kChunks = D / 8;             // 16-byte chunks per row
  static constexpr int kMinSplitKeys = 128;         // fewest keys worth a split of their own
};

inline constexpr int kMaxSplits = 32;
inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

template <class T>
ZAYA_DEV uint4 nan_chunk() {  // eight NaNs of dtype T
  const uint32_t h = T::from_float(vendor::u2f(0x7fc00000u));
  const uint32_t w = h | (h << 16);
  return uint4{w, w, w, w};
}

// What block (blockIdx.x, .y, .z) of a forward kernel with kM stacked rows per query tile works on:
// sequence b, KV head j, split, its rows R0 .. and the keys [kb, ke) it reads; R0 >= rows means the
// block has nothing to do (it returns before any barrier).
struct BlockWork {
  int64_t g, j, split, b, R0, rows;
  int cu0, n, L, kb, ke;
  const int32_t* table_row;
};

ZAYA_DEV BlockWork block_work(const CcaAttentionArgs& a, int64_t tiles, int64_t keys_per_split, int kM) {
  BlockWork w;
  w.g = a.nq / a.nkv;
  const int64_t tile = tiles - 1 - static_cast<int64_t>(blockIdx.x);  // costliest first
  w.j = blockIdx.y % a.nkv, w.split = blockIdx.y / a.nkv, w.b = blockIdx.z;
  w.cu0 = a.cu_seqlens_q[w.b], w.n = a.cu_seqlens_q[w.b + 1] - w.cu0, w.L = a.seqused_k[w.b];
  w.R0 = tile * kM;
  w.rows = int64_t{w.n} * w.g;
  w.kb = w.ke = 0;
  w.table_row = a.block_table + w.b * a.table_cols;
  if (w.R0 >= w.rows) return w;
  const int64_t i_hi = (w.R0 + kM - 1 < w.rows ? w.R0 + kM - 1 : w.rows - 1) / w.g;
  const int key_end = static_cast<int>(w.L - w.n + i_hi + 1);  // keys the block's last query sees
  const int64_t kb64 = w.split * keys_per_split;
  w.kb = static_cast<int>(kb64);
  const int64_t split_end = kb64 + keys_per_split;
  w.ke = kb64 >= key_end ? w.kb : key_end < split_end ? key_end : static_cast<int>(split_end);
  return w;
}

// Copies K and V of keys k0 .. k0 + kRows - 1 of (sequence b, KV head j) into shared memory (row pitch
// Cfg<D>::kLd), the block's kThreads threads in turn; keys at or past `kend` are zeros (masked later:
// zeros keep 0 * V finite), a key whose block-table entry is outside the table or the cache reads as
// NaN (see cca_attention_launch.h). The forward copies Cfg<D>::kBK keys with Cfg<D>::kThreads threads;
// the backward kernels (cca_attention_backward.cuh) their own tile sizes.
template <class T, int D, int kRows = Cfg<D>::kBK, int kThreads = Cfg<D>::kThreads>
ZAYA_DEV void load_kv(uint16_t* Ks, uint16_t* Vs, const CcaAttentionArgs& a, const int32_t* table_row, int64_t j,
                      int k0, int kend) {
  using C = Cfg<D>;
  const uint16_t* kc = static_cast<const uint16_t*>(a.k_cache);
  const uint16_t* vc = static_cast<const uint16_t*>(a.v_cache);
  for (int c = static_cast<int>(threadIdx.x); c < kRows * C::kChunks; c += kThreads) {
    const int r = c / C::kChunks, ch = c % C::kChunks;
    const int pos = k0 + r;  // key positions are int32 (seqused_k)
    uint4 kv = {0u, 0u, 0u, 0u}, vv = {0u, 0u, 0u, 0u};
    if (pos < kend) {
      const int bs = static_cast<int>(a.block_size), col = pos / bs, off = pos % bs;
      const int64_t blk = col < a.table_cols ? table_row[col] : -1;
      if (blk >= 0 && blk < a.num_blocks) {
        kv = *reinterpret_cast<const uint4*>(kc + blk * a.k_stride[0] + off * a.k_stride[1] + j * a.k_stride[2] +
                                             ch * 8);
        vv = *reinterpret_cast<const uint4*>(vc + blk * a.v_stride[0] + off * a.v_stride[1] + j * a.v_stride[2] +
                                             ch * 8);
      } else {
        kv = vv = nan_chunk<T>();
      }
    }
    *reinterpret_cast<uint4*>(Ks + r * C::kLd + ch * 8) = kv;
    *reinterpret_cast<uint4*>(Vs + r * C::kLd + ch * 8) = vv;
  }
}

// load_kv for the forward's pipelines (cca_attention_fwd_v2): the same tile (zeros at or past `kend`, NaN
// for a key whose block-table entry is out of range), but each 16-byte chunk through vendor::copy_async16:
// cp.async on CUDA sm_80+, which the caller completes with copy_async_commit / copy_async_wait and a
// barrier before other threads read the tile; a plain copy on CDNA and the emulator. The NaN chunks are
// plain stores (ordered by the same barrier). kK / kV: which of the two tiles to copy (the decode path
// copies V while it multiplies with K).
template <class T, int D, int kRows, int kThreads, bool kK = true, bool kV = true>
ZAYA_DEV void load_kv_async(uint16_t* Ks, uint16_t* Vs, const CcaAttentionArgs& a, const int32_t* table_row,
                            int64_t j, int k0, int kend) {
  using C = Cfg<D>;
  const uint16_t* kc = static_cast<const uint16_t*>(a.k_cache);
  const uint16_t* vc = static_cast<const uint16_t*>(a.v_cache);
  for (int c = static_cast<int>(threadIdx.x); c < kRows * C::kChunks; c += kThreads) {
    const int r = c / C::kChunks, ch = c % C::kChunks;
    const int pos = k0 + r;
    uint16_t* kd = Ks + r * C::kLd + ch * 8;
    uint16_t* vd = Vs + r * C::kLd + ch * 8;
    const bool in = pos < kend;
    const uint16_t* ks = kc;  // not read when !in (zero fill)
    const uint16_t* vs = vc;
    if (in) {
      const int bs = static_cast<int>(a.block_size), col = pos / bs, off = pos % bs;
      const int64_t blk = col < a.table_cols ? table_row[col] : -1;
      if (blk < 0 || blk >= a.num_blocks) {
        if (kK) *reinterpret_cast<uint4*>(kd) = nan_chunk<T>();
        if (kV) *reinterpret_cast<uint4*>(vd) = nan_chunk<T>();
        continue;
      }
      ks = kc + blk * a.k_stride[0] + off * a.k_stride[1] + j * a.k_stride[2] + ch * 8;
      vs = vc + blk * a.v_stride[0] + off * a.v_stride[1] + j * a.v_stride[2] + ch * 8;
    }
    if (kK) vendor::copy_async16(kd, ks, in);
    if (kV) vendor::copy_async16(vd, vs, in);
  }
}

// Copies kRows stacked "query x group head" rows R0 .. R0 + kRows - 1 of a [T, nq, D] tensor x (row R:
// token cu0 + R / g, head j * g + R % g; strides in elements, unit stride along D) into shared memory
// (pitch Cfg<D>::kLd), the block's kThreads threads in turn; rows at or past `rows` (the sequence's
// end), or whose token falls outside [0, T), are zeros.
template <int D, int kRows, int kThreads>
ZAYA_DEV void load_rows(uint16_t* dst, const uint16_t* x, int64_t stride_t, int64_t stride_h, int64_t T, int64_t R0,
                        int64_t rows, int64_t g, int64_t j, int cu0) {
  using C = Cfg<D>;
  for (int c = static_cast<int>(threadIdx.x); c < kRows * C::kChunks; c += kThreads) {
    const int r = c / C::kChunks, ch = c % C::kChunks;
    const int64_t R = R0 + r, t = cu0 + R / g;
    uint4 v = {0u, 0u, 0u, 0u};
    if (R < rows && t >= 0 && t < T)
      v = *reinterpret_cast<const uint4*>(x + t * stride_t + (j * g + R % g) * stride_h + ch * 8);
    *reinterpret_cast<uint4*>(dst + r * C::kLd + ch * 8) = v;
  }
}

// The inverse of load_rows for one warp: copies its 16 staged rows src[r * Cfg<D>::kLd ..] (stacked rows
// Rw .. Rw + 15) to a contiguous [T, nq, D] tensor dst as whole 16-byte chunks, skipping rows at or past
// `rows` and tokens outside [0, T).
template <int D>
ZAYA_DEV void store_rows(uint16_t* dst, const uint16_t* src, int64_t nq, int64_t T, int64_t Rw, int64_t rows,
                         int64_t g, int64_t j, int cu0, int lane) {
  using C = Cfg<D>;
  for (int c = lane; c < 16 * C::kChunks; c += ZAYA_WARP_SIZE) {
    const int r = c / C::kChunks, ch = c % C::kChunks;
    const int64_t R = Rw + r, t = cu0 + R / g;
    if (R < rows && t >= 0 && t < T)
      *reinterpret_cast<uint4*>(dst + (t * nq + j * g + R % g) * D + ch * 8) =
          *reinterpret_cast<const uint4*>(src + r * C::kLd + ch * 8);
  }
}

}  // namespace zaya::kernels::attn
