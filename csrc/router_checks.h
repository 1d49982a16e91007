// Argument rules of zaya::router, shared by the CPU kernel (csrc/cpu/router.cpp) and the GPU glue
// (csrc/gpu/router.cpp): each failure is a TypeError/ValueError naming the argument, the same
// messages as the Python wrapper's checks. The caller checks x's device for its backend; every
// other tensor must sit on x's device.
#pragma once

#include <optional>

#include "arg_checks.h"

namespace zaya::checks {

// Everything but balancing_biases, for `op` ("router" or "zaya::router_backward"). float64 (every float
// argument float64: the gradcheck mode of training) is accepted when allow_f64 (the CPU backward).
inline void check_router_params(const char* op, const at::Tensor& x, const std::optional<at::Tensor>& prev_state,
                                const at::Tensor& down_weight, const at::Tensor& down_bias,
                                const std::optional<at::Tensor>& states_scale, const at::Tensor& norm_weight,
                                const at::Tensor& fc1_weight, const at::Tensor& fc1_bias,
                                const at::Tensor& fc2_weight, const at::Tensor& fc2_bias,
                                const at::Tensor& out_weight, double eps, bool allow_f64 = false) {
  TORCH_CHECK_VALUE(x.dim() == 2, op, ": x must be 2-D [T, H], got shape ", shape_str(x.sizes()));
  const at::ScalarType dt = x.scalar_type();
  if (allow_f64) {
    check_dtype(op, "x", x, {at::kBFloat16, at::kHalf, at::kFloat, at::kDouble});
  } else {
    check_dtype(op, "x", x, {at::kBFloat16, at::kHalf, at::kFloat});
  }
  const int64_t T = x.size(0), H = x.size(1);
  TORCH_CHECK_VALUE(down_weight.dim() == 2, op, ": down_weight must be 2-D [R, H], got shape ",
                    shape_str(down_weight.sizes()));
  const int64_t R = down_weight.size(0);
  TORCH_CHECK_VALUE(out_weight.dim() == 2 && out_weight.size(0) >= 2, op,
                    ": out_weight must be [E+1, R] with at least 2 rows, got shape ", shape_str(out_weight.sizes()));
  const int64_t E1 = out_weight.size(0);
  const auto arg = [&](const at::Tensor& t, const char* name, at::ScalarType want, at::IntArrayRef shape) {
    check_dtype(op, name, t, {want});
    check_shape(op, name, t, shape);
    check_same_device(op, name, t, x, "x");
  };
  arg(down_weight, "down_weight", dt, {R, H});
  arg(down_bias, "down_bias", dt, {R});
  arg(norm_weight, "norm_weight", dt, {R});
  arg(fc1_weight, "fc1_weight", dt, {R, R});
  arg(fc1_bias, "fc1_bias", dt, {R});
  arg(fc2_weight, "fc2_weight", dt, {R, R});
  arg(fc2_bias, "fc2_bias", dt, {R});
  arg(out_weight, "out_weight", dt, {E1, R});
  TORCH_CHECK_VALUE(prev_state.has_value() == states_scale.has_value(), op,
                    ": prev_state and states_scale must be given together (layers after the first) "
                    "or both be None (first layer)");
  if (prev_state) {
    arg(*prev_state, "prev_state", dt, {T, R});
    arg(*states_scale, "states_scale", dt, {R});
  }
  TORCH_CHECK_VALUE(eps > 0.0 && std::isfinite(eps), op, ": eps must be a positive finite number, got ", eps);
}

inline void check_router_args(const at::Tensor& x, const std::optional<at::Tensor>& prev_state,
                              const at::Tensor& down_weight, const at::Tensor& down_bias,
                              const std::optional<at::Tensor>& states_scale, const at::Tensor& norm_weight,
                              const at::Tensor& fc1_weight, const at::Tensor& fc1_bias,
                              const at::Tensor& fc2_weight, const at::Tensor& fc2_bias,
                              const at::Tensor& out_weight, const at::Tensor& balancing_biases, double eps) {
  constexpr const char* op = "router";
  check_router_params(op, x, prev_state, down_weight, down_bias, states_scale, norm_weight, fc1_weight, fc1_bias,
                      fc2_weight, fc2_bias, out_weight, eps);
  check_dtype(op, "balancing_biases", balancing_biases, {at::kFloat});
  check_shape(op, "balancing_biases", balancing_biases, {out_weight.size(0)});
  check_same_device(op, "balancing_biases", balancing_biases, x, "x");
}

// The backward op's arguments (zaya::router_backward, CPU kernel and GPU glue): the parameters as above,
// the upstream gradients (None or x's dtype and the output's shape) and expert_index (int32 [T]). Index
// values are not read here (the CPU kernel checks them; the GPU kernels never follow a bad one).
inline void check_router_backward_args(const char* op, const std::optional<at::Tensor>& grad_weight,
                                       const std::optional<at::Tensor>& grad_state,
                                       const std::optional<at::Tensor>& grad_logits, const at::Tensor& x,
                                       const std::optional<at::Tensor>& prev_state, const at::Tensor& down_weight,
                                       const at::Tensor& down_bias, const std::optional<at::Tensor>& states_scale,
                                       const at::Tensor& norm_weight, const at::Tensor& fc1_weight,
                                       const at::Tensor& fc1_bias, const at::Tensor& fc2_weight,
                                       const at::Tensor& fc2_bias, const at::Tensor& out_weight,
                                       const at::Tensor& expert_index, double eps, bool allow_f64) {
  check_router_params(op, x, prev_state, down_weight, down_bias, states_scale, norm_weight, fc1_weight, fc1_bias,
                      fc2_weight, fc2_bias, out_weight, eps, allow_f64);
  const at::ScalarType dt = x.scalar_type();
  const int64_t T = x.size(0), R = down_weight.size(0), E1 = out_weight.size(0);
  const auto grad_arg = [&](const std::optional<at::Tensor>& g, const char* name, at::IntArrayRef shape) {
    if (!g) return;
    check_dtype(op, name, *g, {dt});
    check_shape(op, name, *g, shape);
    check_same_device(op, name, *g, x, "x");
  };
  grad_arg(grad_weight, "grad_weight", {T});
  grad_arg(grad_state, "grad_state", {T, R});
  grad_arg(grad_logits, "grad_logits", {T, E1});
  check_dtype(op, "expert_index", expert_index, {at::kInt});
  check_shape(op, "expert_index", expert_index, {T});
  check_same_device(op, "expert_index", expert_index, x, "x");
}

}  // namespace zaya::checks
