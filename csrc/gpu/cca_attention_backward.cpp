// CUDA/HIP torch glue of zaya::cca_attention_backward: argument checks (csrc/cca_checks.h, shared with
// the CPU kernel), device guard, output and scratch allocation (sizes from shapes only: the index
// values are never read here, see glue.h), and the launch through csrc/kernels/cca_attention_backward_launch.h
// (kernels in csrc/kernels/cca_attention_backward.cuh). Inputs the kernels do not cover (float32 q,
// head dims other than 64 and 128) raise NotImplementedError; zaya_ops' autograd runs the reference by
// recompute for them (python/zaya_ops/_autograd.py).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <tuple>

#include "cca_attention_args.h"
#include "cca_checks.h"
#include "glue.h"
#include "kernels/cca_attention_backward_launch.h"

namespace {

using namespace zaya::checks;  // NOLINT: the shared argument checks
using namespace zaya::gpu;     // NOLINT: the shared GPU glue

std::tuple<at::Tensor, at::Tensor, at::Tensor> cca_attention_backward_gpu(
    const at::Tensor& grad_out_in, const std::optional<at::Tensor>& grad_lse_in, const at::Tensor& q_in,
    const at::Tensor& k_cache_in, const at::Tensor& v_cache_in, const at::Tensor& lse_in,
    const at::Tensor& cu_seqlens_q, const at::Tensor& seqused_k, const at::Tensor& block_table, double scale,
    int64_t max_seqlen_q, int64_t max_seqlen_k) {
  constexpr const char* op = "zaya::cca_attention_backward";
  check_device(op, "q", q_in);
  const CcaAttentionDims d =
      check_cca_attention_shapes(q_in, k_cache_in, v_cache_in, cu_seqlens_q, seqused_k, block_table);
  check_cca_attention_scale(scale);
  check_cca_attention_backward_grads(d, q_in, grad_out_in, grad_lse_in, lse_in);
  TORCH_CHECK_VALUE(max_seqlen_q >= 0 && max_seqlen_k >= 0, op, ": max_seqlen_q and max_seqlen_k must be >= 0");
  // Valid inputs outside the kernels' coverage: NotImplementedError (autograd recomputes the reference).
  TORCH_CHECK_NOT_IMPLEMENTED(q_in.scalar_type() != at::kFloat, op,
                              ": q is float32; the CUDA/HIP kernels take bfloat16 or float16");
  TORCH_CHECK_NOT_IMPLEMENTED(d.D == 64 || d.D == 128, op, ": head dim (q.shape[2]) ", d.D,
                              " is not supported by the CUDA/HIP backward kernels (64 or 128)");

  const DeviceGuard guard(q_in.device());
  at::Tensor grad_q = at::zeros({d.T, d.nq, d.D}, q_in.options());
  at::Tensor grad_k = at::empty(k_cache_in.sizes(), k_cache_in.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor grad_v = at::empty(v_cache_in.sizes(), v_cache_in.options().memory_format(at::MemoryFormat::Contiguous));
  if (d.num_blocks == 0) return {grad_q, grad_k, grad_v};
  const CcaAttentionInputs in = cca_attention_inputs(q_in, k_cache_in, v_cache_in, cu_seqlens_q, seqused_k,
                                                     block_table, d, scale, max_seqlen_q, max_seqlen_k);
  const at::Tensor grad_out = kernel_dense(grad_out_in);
  const at::Tensor lse = lse_in.contiguous();
  at::Tensor grad_lse;
  if (grad_lse_in.has_value()) grad_lse = grad_lse_in->contiguous();
  const auto f32 = q_in.options().dtype(at::kFloat);
  at::Tensor stats = at::empty({2, d.nq, d.T}, f32);  // Delta, rnorm
  at::Tensor parts = at::empty({2, zaya::kernels::cca_attention_backward_part_elems(in.args)}, f32);

  zaya::kernels::CcaAttentionBackwardArgs a;
  a.fwd = in.args;
  a.grad_out = grad_out.const_data_ptr();
  a.lse = lse.const_data_ptr<float>();
  a.grad_lse = grad_lse.defined() ? grad_lse.const_data_ptr<float>() : nullptr;
  a.grad_q = grad_q.mutable_data_ptr();
  a.grad_k = grad_k.mutable_data_ptr();
  a.grad_v = grad_v.mutable_data_ptr();
  a.delta = stats[0].mutable_data_ptr<float>();
  a.rnorm = stats[1].mutable_data_ptr<float>();
  a.part_k = parts[0].mutable_data_ptr<float>();
  a.part_v = parts[1].mutable_data_ptr<float>();
  check_launch(op, zaya::kernels::launch_cca_attention_backward(a, current_stream()));
  return {grad_q, grad_k, grad_v};
}

}  // namespace

TORCH_LIBRARY_IMPL(ZAYA_GPU_LIB, ZAYA_GPU_KEY, m) { m.impl("cca_attention_backward", &cca_attention_backward_gpu); }
