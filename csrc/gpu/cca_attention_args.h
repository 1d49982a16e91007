// What the CUDA/HIP glue of zaya::cca_attention (cca_attention.cpp) and of its backward
// (cca_attention_backward.cpp) share: the layout fix-ups of q and the caches and the kernels' argument
// struct (csrc/kernels/cca_attention_launch.h) filled from the checked tensors.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "cca_checks.h"
#include "glue.h"
#include "kernels/cca_attention_launch.h"

namespace zaya::gpu {

// The kernels load 16 bytes at a time: unit stride along D, other strides multiples of 8 elements,
// 16-byte aligned base. Anything else is copied (a whole-cache copy for an odd cache layout: slow but
// correct; the model's caches qualify as they are).
inline at::Tensor kernel_heads(const at::Tensor& t) {
  const int64_t last = t.dim() - 1;
  bool ok = (t.size(last) <= 1 || t.stride(last) == 1) && aligned16(t.data_ptr());
  for (int64_t i = 0; i < last; ++i) ok = ok && (t.size(i) <= 1 || t.stride(i) % 8 == 0);
  return ok ? t : t.clone(at::MemoryFormat::Contiguous);
}

// The forward's inputs as the kernels read them (the tensors stay alive as long as this object).
struct CcaAttentionInputs {
  at::Tensor q, k_cache, v_cache, cu, used, table;
  kernels::CcaAttentionArgs args;  // out, lse, splits and the split scratch left unset
};

inline CcaAttentionInputs cca_attention_inputs(const at::Tensor& q_in, const at::Tensor& k_cache_in,
                                               const at::Tensor& v_cache_in, const at::Tensor& cu_seqlens_q,
                                               const at::Tensor& seqused_k, const at::Tensor& block_table,
                                               const checks::CcaAttentionDims& d, double scale, int64_t max_seqlen_q,
                                               int64_t max_seqlen_k) {
  CcaAttentionInputs in;
  in.q = kernel_heads(q_in);
  in.k_cache = kernel_heads(k_cache_in);
  in.v_cache = kernel_heads(v_cache_in);
  in.cu = cu_seqlens_q.contiguous();
  in.used = seqused_k.contiguous();
  in.table = block_table.contiguous();
  kernels::CcaAttentionArgs& a = in.args;
  a.q = in.q.const_data_ptr();
  a.q_stride_t = in.q.stride(0);
  a.q_stride_h = in.q.stride(1);
  a.k_cache = in.k_cache.const_data_ptr();
  a.v_cache = in.v_cache.const_data_ptr();
  for (int i = 0; i < 3; ++i) {
    a.k_stride[i] = in.k_cache.stride(i);
    a.v_stride[i] = in.v_cache.stride(i);
  }
  a.cu_seqlens_q = in.cu.const_data_ptr<int32_t>();
  a.seqused_k = in.used.const_data_ptr<int32_t>();
  a.block_table = in.table.const_data_ptr<int32_t>();
  a.table_cols = d.cols;
  a.dtype = to_dtype(in.q.scalar_type());
  a.T = d.T, a.B = d.B, a.nq = d.nq, a.nkv = d.nkv, a.D = d.D;
  a.block_size = d.block_size, a.num_blocks = d.num_blocks;
  a.scale = static_cast<float>(scale);
  a.max_seqlen_q = max_seqlen_q, a.max_seqlen_k = max_seqlen_k;
  return in;
}

}  // namespace zaya::gpu
