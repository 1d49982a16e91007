// CUDA/HIP torch glue of zaya::moe_top1: argument checks (csrc/moe_checks.h), output and scratch
// allocation, and the launch through csrc/kernels/moe_top1_launch.h
// (kernels in csrc/kernels/moe_top1.cuh). glue.h says where it registers.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>

#include "glue.h"
#include "kernels/moe_top1_launch.h"
#include "moe_checks.h"

namespace {

using namespace zaya::gpu;  // NOLINT: the shared GPU glue

at::Tensor moe_top1_gpu(const at::Tensor& x_in, const at::Tensor& expert_index_in, const at::Tensor& expert_weight_in,
                        const at::Tensor& gate_up_in, const at::Tensor& down_in, int64_t expert_start,
                        int64_t expert_end) {
  constexpr const char* op = "moe_top1";
  check_device(op, "x", x_in);
  const zaya::checks::MoeDims d = zaya::checks::check_moe_top1_args(x_in, expert_index_in, expert_weight_in,
                                                                    gate_up_in, down_in, expert_start, expert_end);
  // Valid inputs outside the kernels' coverage: NotImplementedError, like a missing kernel, so that
  // callers (the model's "auto" backend) fall back to the reference.
  TORCH_CHECK_NOT_IMPLEMENTED(x_in.scalar_type() != at::kFloat, op,
                              ": x is float32; the GPU kernels take bfloat16 or float16 (float32 runs on the "
                              "CPU kernel or zaya_ops.reference)");
  TORCH_CHECK_NOT_IMPLEMENTED(d.H % 8 == 0 && d.I % 8 == 0, op, ": the GPU kernels need H (x.shape[1]) and I "
                              "(gate_up_proj.shape[1] / 2) to be multiples of 8, got H=", d.H, ", I=", d.I);
  TORCH_CHECK_NOT_IMPLEMENTED(d.E <= zaya::kernels::kMoeMaxExperts, op, ": the GPU kernels take at most ",
                              zaya::kernels::kMoeMaxExperts, " experts, got E=", d.E);

  const DeviceGuard guard(x_in.device());
  at::Tensor out = at::zeros({d.T, d.H}, x_in.options());
  if (d.T == 0 || expert_start == d.end) return out;
  const at::Tensor expert_index = expert_index_in.contiguous();
  // The entries' range is not read here (glue.h): the kernels treat out-of-range entries as the skip class.
  const at::Tensor x = kernel_rows(x_in);
  const at::Tensor expert_weight = kernel_dense(expert_weight_in);
  const at::Tensor gate_up = kernel_dense(gate_up_in);
  const at::Tensor down = kernel_dense(down_in);
  at::Tensor act = at::empty({d.T, d.I}, x_in.options());
  at::Tensor ws = at::empty({zaya::kernels::moe_top1_workspace_ints(d.T, d.E)}, x_in.options().dtype(at::kInt));

  zaya::kernels::MoeTop1Args a;
  a.x = x.const_data_ptr();
  a.x_row_stride = x.stride(0);
  a.expert_index = expert_index.const_data_ptr();
  a.index_int64 = expert_index.scalar_type() == at::kLong;
  a.expert_weight = expert_weight.const_data_ptr();
  a.gate_up = gate_up.const_data_ptr();
  a.down = down.const_data_ptr();
  a.dtype = to_dtype(x_in.scalar_type());
  a.out = out.mutable_data_ptr();
  a.act = act.mutable_data_ptr();
  a.workspace = ws.mutable_data_ptr<int32_t>();
  a.T = d.T;
  a.H = d.H;
  a.I = d.I;
  a.E = d.E;
  a.expert_start = expert_start;
  a.expert_end = d.end;
  check_launch(op, zaya::kernels::launch_moe_top1(a, current_stream()));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ZAYA_GPU_LIB, ZAYA_GPU_KEY, m) { m.impl("moe_top1", &moe_top1_gpu); }
