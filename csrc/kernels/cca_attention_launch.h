// Launch contract of the cca_attention GPU kernels, shared by the CUDA (cuda/cca_attention.cu) and HIP
// (hip/cca_attention.hip) builds and called by the torch glue (csrc/gpu/cca_attention.cpp). Plain
// C++: no torch, CUDA or HIP headers, so the glue compiles with the host compiler.
//
// Requirements the caller must meet (the launcher re-checks the cheap ones and returns an error):
//   * dtype BF16 or F16; head dim D = 64, 128 or 256;
//   * q [T, nq, D] and the caches [num_blocks, block_size, nkv, D] with unit stride along D, every
//     other stride a multiple of 8 elements and 16-byte aligned base pointers (16-byte loads);
//   * out [T, nq * D] contiguous, lse [nq, T] contiguous fp32;
//   * cu_seqlens_q [B + 1], seqused_k [B], block_table [B, table_cols] int32, contiguous, on the device;
//   * when cca_attention_splits() > 1: part_out [splits, T, nq, D] and part_lse [splits, nq, T] fp32
//     scratch (contiguous), whose size depends on shapes only, so the call can be graph-captured.
// The kernels never read outside the cache or the block table, whatever the index values: a key whose
// block-table entry is out of range reads as NaN, so the rows that see it come out NaN (the glue
// validates the index values on the host when it is not capturing a CUDA graph).
// Launchers return nullptr on success, else a static error message (never owned by the caller).
#pragma once

#include <cstdint>

#include "launch_common.h"  // DType

namespace zaya::kernels {

struct CcaAttentionArgs {
  const void* q = nullptr;  // [T, nq, D], dtype
  int64_t q_stride_t = 0, q_stride_h = 0;
  const void* k_cache = nullptr;  // [num_blocks, block_size, nkv, D], dtype
  const void* v_cache = nullptr;
  int64_t k_stride[3] = {0, 0, 0};  // block, offset, head (elements)
  int64_t v_stride[3] = {0, 0, 0};
  const int32_t* cu_seqlens_q = nullptr;  // [B + 1]
  const int32_t* seqused_k = nullptr;     // [B]
  const int32_t* block_table = nullptr;   // [B, table_cols]
  int64_t table_cols = 0;
  DType dtype = DType::BF16;
  int64_t T = 0, B = 0, nq = 0, nkv = 0, D = 0, block_size = 0, num_blocks = 0;
  float scale = 1.f;
  int64_t max_seqlen_q = 0, max_seqlen_k = 0;  // upper bounds of the query runs and of seqused_k
  void* out = nullptr;                          // [T, nq * D], dtype
  float* lse = nullptr;                         // [nq, T]
  int64_t splits = 1;                           // cca_attention_splits(*this)
  float* part_out = nullptr;                    // [splits, T, nq, D] when splits > 1
  float* part_lse = nullptr;                    // [splits, nq, T]
};

// Number of key-axis splits (flash-decoding) for these shapes: 1 when the (sequence, KV head, query
// tile) blocks already fill the GPU. Depends on the shapes, max_seqlen_q/k and the device's SM count
// only, never on the index values.
int64_t cca_attention_splits(const CcaAttentionArgs& args);

const char* launch_cca_attention(const CcaAttentionArgs& args, void* stream);

}  // namespace zaya::kernels
