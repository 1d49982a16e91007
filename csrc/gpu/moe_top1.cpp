// CUDA/HIP torch glue of zaya::moe_top1: argument checks (csrc/moe_checks.h, moe_top1_glue.h), output and
// scratch allocation, and the launch through csrc/kernels/moe_top1_launch.h
// (kernels in csrc/kernels/moe_top1.cuh). glue.h says where it registers.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>

#include "moe_top1_glue.h"

namespace {

using namespace zaya::gpu;  // NOLINT: the shared GPU glue

at::Tensor moe_top1_gpu(const at::Tensor& x_in, const at::Tensor& expert_index_in, const at::Tensor& expert_weight_in,
                        const at::Tensor& gate_up_in, const at::Tensor& down_in, int64_t expert_start,
                        int64_t expert_end) {
  constexpr const char* op = "moe_top1";
  check_device(op, "x", x_in);
  const zaya::checks::MoeDims d = zaya::checks::check_moe_top1_args(x_in, expert_index_in, expert_weight_in,
                                                                    gate_up_in, down_in, expert_start, expert_end);
  check_moe_top1_coverage(op, x_in, d);

  const DeviceGuard guard(x_in.device());
  at::Tensor out = at::zeros({d.T, d.H}, x_in.options());
  if (d.T == 0 || expert_start == d.end) return out;
  MoeTop1Inputs in = moe_top1_inputs(x_in, expert_index_in, expert_weight_in, gate_up_in, down_in, d, expert_start);
  at::Tensor act = at::empty({d.T, d.I}, x_in.options());
  zaya::kernels::MoeTop1Args& a = in.args;
  a.out = out.mutable_data_ptr();
  a.act = act.mutable_data_ptr();
  check_launch(op, zaya::kernels::launch_moe_top1(a, current_stream()));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ZAYA_GPU_LIB, ZAYA_GPU_KEY, m) { m.impl("moe_top1", &moe_top1_gpu); }
