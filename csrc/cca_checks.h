// Argument rules of zaya::cca_attention (and the index-tensor helpers of the CCA ops): the shapes are
// shared by the CPU kernel (csrc/cpu/) and the CUDA/HIP/emulator glue (csrc/gpu/); the index values
// are read on the host by the CPU kernel only (the GPU glue never reads them, see csrc/gpu/glue.h; the
// Python wrappers check them for direct GPU calls, python/zaya_ops/_index_checks.py, same messages).
// The caller checks that q is on its backend's device; every other tensor must sit on the same device.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "arg_checks.h"

namespace zaya::checks {

// dtype and rank of an index tensor (its device is the caller's business).
inline void check_index_tensor(const char* name, const at::Tensor& t, at::ScalarType dt, int64_t ndim) {
  TORCH_CHECK_TYPE(t.scalar_type() == dt, name, " must have dtype ", dt, ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == ndim, name, " must be ", ndim, "-D, got shape ", t.sizes());
}

// Validated cu_seqlens values: cu[0] = 0, non-decreasing, cu[B] = T.
inline std::vector<int64_t> checked_cu_seqlens(const char* name, const at::Tensor& cu_t, int64_t T) {
  check_index_tensor(name, cu_t, at::kInt, 1);
  auto cu = host_ints(cu_t);
  check_cu_seqlens_values(name, cu, T);
  return cu;
}

// Shapes of one cca_attention call.
struct CcaAttentionDims {
  int64_t T, nq, D, num_blocks, block_size, nkv, B, cols;
};

// Shapes, dtypes and devices (no index value is read). q: fp32, bf16 or fp16 (a backend may narrow it),
// or float64 where `allow_f64` (the CPU kernels' gradcheck mode; k_cache and v_cache then float64 too).
inline CcaAttentionDims check_cca_attention_shapes(const at::Tensor& q, const at::Tensor& k_cache,
                                                   const at::Tensor& v_cache, const at::Tensor& cu_seqlens_q,
                                                   const at::Tensor& seqused_k, const at::Tensor& block_table,
                                                   bool allow_f64 = false) {
  constexpr const char* op = "zaya::cca_attention";
  const auto dt = q.scalar_type();
  if (!(allow_f64 && dt == at::kDouble)) check_float(op, "q", q);
  TORCH_CHECK_VALUE(q.dim() == 3, "q must be 3-D [T, nq, D], got shape ", q.sizes());
  CcaAttentionDims d{};
  d.T = q.size(0), d.nq = q.size(1), d.D = q.size(2);
  check_same_device(op, "k_cache", k_cache, q, "q");
  TORCH_CHECK_VALUE(k_cache.dim() == 4, "k_cache must be 4-D [num_blocks, block_size, nkv, D], got shape ",
                    k_cache.sizes());
  check_dtype(op, "k_cache", k_cache, dt, " (like q)");
  d.num_blocks = k_cache.size(0), d.block_size = k_cache.size(1), d.nkv = k_cache.size(2);
  TORCH_CHECK_VALUE(k_cache.size(3) == d.D, "k_cache head dim ", k_cache.size(3), " must equal q's head dim ", d.D);
  TORCH_CHECK_VALUE(d.D > 0 && d.nq > 0, "q must have at least one head of positive size, got shape ", q.sizes());
  TORCH_CHECK_VALUE(d.nkv > 0 && d.nq % d.nkv == 0, "q heads (", d.nq, ") must be a multiple of k_cache heads (",
                    d.nkv, ")");
  check_same_device(op, "v_cache", v_cache, q, "q");
  check_dtype(op, "v_cache", v_cache, dt, " (like q)");
  check_shape(op, "v_cache", v_cache, k_cache.sizes());
  TORCH_CHECK_VALUE(d.block_size > 0, "k_cache block_size must be positive");

  check_same_device(op, "cu_seqlens_q", cu_seqlens_q, q, "q");
  check_index_tensor("cu_seqlens_q", cu_seqlens_q, at::kInt, 1);
  TORCH_CHECK_VALUE(cu_seqlens_q.size(0) >= 2, "cu_seqlens_q must hold at least two entries (one sequence)");
  d.B = cu_seqlens_q.size(0) - 1;
  check_same_device(op, "seqused_k", seqused_k, q, "q");
  check_index_tensor("seqused_k", seqused_k, at::kInt, 1);
  TORCH_CHECK_VALUE(seqused_k.size(0) == d.B, "seqused_k must have shape [", d.B, "], got ", seqused_k.sizes());
  check_same_device(op, "block_table", block_table, q, "q");
  check_index_tensor("block_table", block_table, at::kInt, 2);
  TORCH_CHECK_VALUE(block_table.size(0) == d.B, "block_table must have ", d.B,
                    " rows (one per sequence), got shape ", block_table.sizes());
  d.cols = block_table.size(1);
  return d;
}

// The backward op's own arguments (zaya::cca_attention_backward): grad_out [T, nq * D] like q, lse and
// grad_lse (optional) [nq, T] fp32 (float64 when q is), on q's device. d: check_cca_attention_shapes.
inline void check_cca_attention_backward_grads(const CcaAttentionDims& d, const at::Tensor& q,
                                               const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse,
                                               const at::Tensor& lse) {
  constexpr const char* op = "zaya::cca_attention_backward";
  const auto dt = q.scalar_type();
  const auto lse_dt = dt == at::kDouble ? at::kDouble : at::kFloat;
  const char* like = dt == at::kDouble ? " (q is float64)" : "";
  check_same_device(op, "grad_out", grad_out, q, "q");
  check_dtype(op, "grad_out", grad_out, dt, " (like q)");
  check_shape(op, "grad_out", grad_out, {d.T, d.nq * d.D});
  check_same_device(op, "lse", lse, q, "q");
  check_dtype(op, "lse", lse, lse_dt, like);
  check_shape(op, "lse", lse, {d.nq, d.T});
  if (grad_lse.has_value()) {
    check_same_device(op, "grad_lse", *grad_lse, q, "q");
    check_dtype(op, "grad_lse", *grad_lse, lse_dt, like);
    check_shape(op, "grad_lse", *grad_lse, {d.nq, d.T});
  }
}

// The softmax scale: finite, and within float32's range (the kernels take it as a float32).
inline void check_cca_attention_scale(double scale) {
  TORCH_CHECK_VALUE(std::isfinite(scale) && std::abs(scale) <= std::numeric_limits<float>::max(),
                    "zaya::cca_attention: scale must be a finite number (in float32's range), got ", scale);
}

// The index tensors' values on the host.
struct CcaAttentionIndices {
  std::vector<int64_t> cu, used, table;
};

// Reads and validates the index values: query runs within seqused_k, seqused_k within the block table,
// the table entries a sequence uses inside the cache, max_seqlen_q/k upper bounds of the runs.
inline CcaAttentionIndices check_cca_attention_indices(const CcaAttentionDims& d, const at::Tensor& cu_seqlens_q,
                                                       const at::Tensor& seqused_k, const at::Tensor& block_table,
                                                       int64_t max_seqlen_q, int64_t max_seqlen_k) {
  CcaAttentionIndices ix;
  ix.cu = checked_cu_seqlens("cu_seqlens_q", cu_seqlens_q, d.T);
  ix.used = host_ints(seqused_k);
  ix.table = host_ints(block_table);
  int64_t longest_q = 0, longest_k = 0;
  for (int64_t b = 0; b < d.B; ++b) {
    const int64_t n = ix.cu[b + 1] - ix.cu[b], L = ix.used[b];
    TORCH_CHECK_VALUE(L >= n, "seqused_k[", b, "] = ", L, " is smaller than the sequence's ", n,
                      " new queries (seqused_k counts them too)");
    if (n == 0) continue;
    TORCH_CHECK_VALUE(L <= d.cols * d.block_size, "seqused_k[", b, "] = ", L,
                      " exceeds the block_table capacity of ", d.cols, " blocks of ", d.block_size, " keys");
    for (int64_t kb = 0; kb < (L + d.block_size - 1) / d.block_size; ++kb) {
      const int64_t e = ix.table[b * d.cols + kb];
      TORCH_CHECK_VALUE(e >= 0 && e < d.num_blocks, "block_table[", b, ", ", kb, "] = ", e,
                        " is outside the cache's ", d.num_blocks, " blocks");
    }
    longest_q = std::max(longest_q, n);
    longest_k = std::max(longest_k, L);
  }
  TORCH_CHECK_VALUE(max_seqlen_q >= longest_q, "max_seqlen_q = ", max_seqlen_q,
                    " is smaller than the longest query run (", longest_q, ")");
  TORCH_CHECK_VALUE(max_seqlen_k >= longest_k, "max_seqlen_k = ", max_seqlen_k,
                    " is smaller than the longest seqused_k (", longest_k, ")");
  return ix;
}

}  // namespace zaya::checks
