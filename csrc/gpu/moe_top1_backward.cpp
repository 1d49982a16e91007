// CUDA/HIP torch glue of zaya::moe_top1_backward: argument checks (csrc/moe_checks.h, shared with the CPU
// kernel csrc/cpu/moe_top1_backward.cpp), zero-filled outputs, scratch, and the launch through
// csrc/kernels/moe_top1_backward_launch.h (kernels in csrc/kernels/moe_top1_backward.cuh).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>
#include <tuple>

#include "kernels/moe_top1_backward_launch.h"
#include "moe_top1_glue.h"

namespace {

using namespace zaya::gpu;  // NOLINT: the shared GPU glue

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> moe_top1_backward_gpu(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& expert_index_in,
    const at::Tensor& expert_weight_in, const at::Tensor& gate_up_in, const at::Tensor& down_in,
    int64_t expert_start, int64_t expert_end) {
  constexpr const char* op = "moe_top1_backward";
  check_device(op, "x", x_in);
  const zaya::checks::MoeDims d = zaya::checks::check_moe_top1_args(x_in, expert_index_in, expert_weight_in,
                                                                    gate_up_in, down_in, expert_start, expert_end, op);
  zaya::checks::check_dtype(op, "grad_out", grad_out_in, x_in.scalar_type(), " (x's dtype)");
  zaya::checks::check_shape(op, "grad_out", grad_out_in, x_in.sizes());
  zaya::checks::check_same_device(op, "grad_out", grad_out_in, x_in, "x");
  check_moe_top1_coverage(op, x_in, d);  // the forward's: the autograd formula never needs more

  const DeviceGuard guard(x_in.device());
  at::Tensor grad_x = at::zeros({d.T, d.H}, x_in.options());
  at::Tensor grad_w = at::zeros({d.T}, expert_weight_in.options());
  at::Tensor grad_gate_up = at::zeros(gate_up_in.sizes(), gate_up_in.options());
  at::Tensor grad_down = at::zeros(down_in.sizes(), down_in.options());
  if (d.T == 0 || expert_start == d.end) return {grad_x, grad_w, grad_gate_up, grad_down};
  zaya::kernels::MoeTop1BackwardArgs b;
  MoeTop1Inputs in = moe_top1_inputs(x_in, expert_index_in, expert_weight_in, gate_up_in, down_in, d, expert_start);
  b.fwd = in.args;
  const at::Tensor grad_out = kernel_rows(grad_out_in);
  at::Tensor act_w = at::empty({d.T, d.I}, x_in.options());
  at::Tensor d_gate_up = at::empty({d.T, 2 * d.I}, x_in.options());
  at::Tensor partials = at::empty({zaya::kernels::moe_top1_backward_partials(d.T, d.I)},
                                  x_in.options().dtype(at::kFloat));
  b.grad_out = grad_out.const_data_ptr();
  b.grad_out_row_stride = grad_out.stride(0);
  b.grad_x = grad_x.mutable_data_ptr();
  b.grad_expert_weight = grad_w.mutable_data_ptr();
  b.grad_gate_up = grad_gate_up.mutable_data_ptr();
  b.grad_down = grad_down.mutable_data_ptr();
  b.act_w = act_w.mutable_data_ptr();
  b.d_gate_up = d_gate_up.mutable_data_ptr();
  b.dw_partial = partials.mutable_data_ptr<float>();
  check_launch(op, zaya::kernels::launch_moe_top1_backward(b, current_stream()));
  return {grad_x, grad_w, grad_gate_up, grad_down};
}

}  // namespace

TORCH_LIBRARY_IMPL(ZAYA_GPU_LIB, ZAYA_GPU_KEY, m) { m.impl("moe_top1_backward", &moe_top1_backward_gpu); }
