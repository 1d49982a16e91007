// What the CUDA/HIP glue of zaya::moe_top1 (csrc/gpu/moe_top1.cpp) and of its backward
// (csrc/gpu/moe_top1_backward.cpp) share: the kernels' coverage and their view of the inputs.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "glue.h"
#include "kernels/moe_top1_launch.h"
#include "moe_checks.h"

namespace zaya::gpu {

// Valid inputs outside the kernels' coverage: NotImplementedError, like a missing kernel, so that
// callers (the model's "auto" backend) fall back to the reference.
inline void check_moe_top1_coverage(const char* op, const at::Tensor& x, const checks::MoeDims& d) {
  TORCH_CHECK_NOT_IMPLEMENTED(x.scalar_type() != at::kFloat, op,
                              ": x is float32; the GPU kernels take bfloat16 or float16 (float32 runs on the "
                              "CPU kernel or zaya_ops.reference)");
  TORCH_CHECK_NOT_IMPLEMENTED(d.H % 8 == 0 && d.I % 8 == 0, op, ": the GPU kernels need H (x.shape[1]) and I "
                              "(gate_up_proj.shape[1] / 2) to be multiples of 8, got H=", d.H, ", I=", d.I);
  TORCH_CHECK_NOT_IMPLEMENTED(d.E <= kernels::kMoeMaxExperts, op, ": the GPU kernels take at most ",
                              kernels::kMoeMaxExperts, " experts, got E=", d.E);
}

// The inputs in the layouts the kernels read (copies only where needed), the grouping workspace, and
// the launch arguments pointing at them (all but out and act).
struct MoeTop1Inputs {
  at::Tensor expert_index, x, expert_weight, gate_up, down, workspace;
  kernels::MoeTop1Args args;
};

inline MoeTop1Inputs moe_top1_inputs(const at::Tensor& x_in, const at::Tensor& expert_index_in,
                                     const at::Tensor& expert_weight_in, const at::Tensor& gate_up_in,
                                     const at::Tensor& down_in, const checks::MoeDims& d, int64_t expert_start) {
  MoeTop1Inputs in;
  in.expert_index = expert_index_in.contiguous();
  // The entries' range is not read here (glue.h): the kernels treat out-of-range entries as the skip class.
  in.x = kernel_rows(x_in);
  in.expert_weight = kernel_dense(expert_weight_in);
  in.gate_up = kernel_dense(gate_up_in);
  in.down = kernel_dense(down_in);
  in.workspace = at::empty({kernels::moe_top1_workspace_ints(d.T, d.E)}, x_in.options().dtype(at::kInt));
  kernels::MoeTop1Args& a = in.args;
  a.x = in.x.const_data_ptr();
  a.x_row_stride = in.x.stride(0);
  a.expert_index = in.expert_index.const_data_ptr();
  a.index_int64 = in.expert_index.scalar_type() == at::kLong;
  a.expert_weight = in.expert_weight.const_data_ptr();
  a.gate_up = in.gate_up.const_data_ptr();
  a.down = in.down.const_data_ptr();
  a.dtype = to_dtype(x_in.scalar_type());
  a.workspace = in.workspace.mutable_data_ptr<int32_t>();
  a.T = d.T;
  a.H = d.H;
  a.I = d.I;
  a.E = d.E;
  a.expert_start = expert_start;
  a.expert_end = d.end;
  return in;
}

}  // namespace zaya::gpu
