// Argument rules of zaya::moe_top1, shared by the CPU kernel (csrc/cpu/moe_top1.cpp) and the GPU glue
// (csrc/gpu/moe_top1.cpp): dtypes, shapes, devices and the expert range. The per-entry range of
// expert_index (0..E) is checked by the CPU kernel where it reads the indices and by the Python wrapper
// for direct GPU calls; the GPU kernels treat an out-of-range entry as the skip class. `op` names the op
// in the messages (moe_top1_backward shares these rules); `allow_f64`: the CPU kernels also take float64
// (every float argument float64), for gradcheck.
#pragma once

#include "arg_checks.h"

namespace zaya::checks {

struct MoeDims {
  int64_t T, H, I, E, end;  // end: expert_end with -1 resolved to E
};

inline MoeDims check_moe_top1_args(const at::Tensor& x, const at::Tensor& expert_index,
                                   const at::Tensor& expert_weight, const at::Tensor& gate_up_proj,
                                   const at::Tensor& down_proj, int64_t expert_start, int64_t expert_end,
                                   const char* op = "moe_top1", bool allow_f64 = false) {
  TORCH_CHECK_VALUE(x.dim() == 2, op, ": x must be 2-D [T, H], got shape ", shape_str(x.sizes()));
  if (allow_f64 && x.scalar_type() == at::kDouble) {
    // float64 (the CPU kernels' gradcheck mode): every float argument float64, checked below against x.
  } else {
    check_dtype(op, "x", x, {at::kBFloat16, at::kHalf, at::kFloat});
  }
  const at::ScalarType dt = x.scalar_type();
  const int64_t T = x.size(0), H = x.size(1);
  check_dtype(op, "expert_index", expert_index, {at::kInt, at::kLong});
  check_shape(op, "expert_index", expert_index, {T});
  check_dtype(op, "expert_weight", expert_weight, {dt});
  check_shape(op, "expert_weight", expert_weight, {T});
  check_dtype(op, "gate_up_proj", gate_up_proj, {dt});
  TORCH_CHECK_VALUE(gate_up_proj.dim() == 3 && gate_up_proj.size(1) % 2 == 0 && gate_up_proj.size(2) == H, op,
                    ": gate_up_proj must have shape [E, 2I, ", H, "], got ", shape_str(gate_up_proj.sizes()));
  const int64_t E = gate_up_proj.size(0), I = gate_up_proj.size(1) / 2;
  check_dtype(op, "down_proj", down_proj, {dt});
  check_shape(op, "down_proj", down_proj, {E, H, I});
  const int64_t end = expert_end < 0 ? E : expert_end;
  TORCH_CHECK_VALUE(0 <= expert_start && expert_start <= end && end <= E, op, ": expert range [", expert_start,
                    ", ", expert_end, ") must lie within [0, ", E, "]");
  const at::Tensor* others[] = {&expert_index, &expert_weight, &gate_up_proj, &down_proj};
  const char* names[] = {"expert_index", "expert_weight", "gate_up_proj", "down_proj"};
  for (int i = 0; i < 4; ++i) check_same_device(op, names[i], *others[i], x, "x");
  return {T, H, I, E, end};
}

}  // namespace zaya::checks
