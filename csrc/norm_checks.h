// Argument rules of zaya::rms_norm and zaya::residual_scale_rmsnorm, shared by the CPU and GPU glue.
// The caller checks that the first input (x or h) is on its backend's device; everything else must
// sit on that same device. float64 (every float argument float64: the gradcheck mode of training) is
// accepted by the CPU kernels only (allow_f64); the GPU glue rejects it with the dtype list.
#pragma once

#include "arg_checks.h"

namespace zaya::checks {

// float32/bfloat16/float16, or float64 when allowed and `all_f64` (the other float arguments are too).
inline void check_norm_float(const char* op, const char* name, const at::Tensor& t, bool allow_f64,
                             bool all_f64) {
  if (allow_f64 && t.scalar_type() == at::kDouble) {
    TORCH_CHECK_TYPE(all_f64, op, ": ", name,
                     " is float64, which is accepted only when every float argument is float64 (got ",
                     "mixed dtypes)");
    return;
  }
  check_float(op, name, t);
}

inline void check_rms_norm_args(const at::Tensor& x, const at::Tensor& weight, double eps,
                                bool allow_f64 = false) {
  constexpr const char* op = "zaya::rms_norm";
  const bool all_f64 = x.scalar_type() == at::kDouble && weight.scalar_type() == at::kDouble;
  check_norm_float(op, "x", x, allow_f64, all_f64);
  check_matrix(op, "x", x);
  check_norm_float(op, "weight", weight, allow_f64, all_f64);
  check_same_device(op, "weight", weight, x, "x");
  check_vector(op, "weight", weight, x.size(1));
  check_eps(op, eps);
}

inline void check_residual_scale_rmsnorm_args(const at::Tensor& h, const at::Tensor& residual,
                                              const at::Tensor& h_bias, const at::Tensor& h_scale,
                                              const at::Tensor& r_bias, const at::Tensor& r_scale,
                                              const at::Tensor& norm_weight, double eps,
                                              bool allow_f64 = false) {
  constexpr const char* op = "zaya::residual_scale_rmsnorm";
  const bool f64 = allow_f64 && h.scalar_type() == at::kDouble;
  check_norm_float(op, "h", h, allow_f64, true);
  check_matrix(op, "h", h);
  const int64_t T = h.size(0);
  const int64_t H = h.size(1);
  check_dtype(op, "residual", residual, f64 ? at::kDouble : at::kFloat, f64 ? " (h is float64)" : "");
  TORCH_CHECK_VALUE(residual.dim() == 2 && residual.size(0) == T && residual.size(1) == H, op,
                    ": residual must have shape [", T, ", ", H, "], got ", residual.sizes());
  check_same_device(op, "residual", residual, h, "h");
  const char* names[5] = {"h_bias", "h_scale", "r_bias", "r_scale", "norm_weight"};
  const at::Tensor* vecs[5] = {&h_bias, &h_scale, &r_bias, &r_scale, &norm_weight};
  for (int i = 0; i < 5; ++i) {
    check_dtype(op, names[i], *vecs[i], h.scalar_type(), " (h's dtype)");
    check_vector(op, names[i], *vecs[i], H);
    check_same_device(op, names[i], *vecs[i], h, "h");
  }
  check_eps(op, eps);
}

// The backward ops: the forward's rules plus the upstream gradients' (dtype, shape, device).
inline void check_rms_norm_backward_args(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
                                         double eps, bool allow_f64 = false) {
  constexpr const char* op = "zaya::rms_norm_backward";
  check_rms_norm_args(x, weight, eps, allow_f64);
  check_dtype(op, "grad_y", grad_y, weight.scalar_type(), " (weight's dtype)");
  check_same_device(op, "grad_y", grad_y, x, "x");
  TORCH_CHECK_VALUE(grad_y.sizes() == x.sizes(), op, ": grad_y must have shape [", x.size(0), ", ", x.size(1),
                    "], got ", grad_y.sizes());
}

inline void check_residual_scale_rmsnorm_backward_args(
    const at::Tensor& grad_new_residual, const at::Tensor& grad_normed, const at::Tensor& h,
    const at::Tensor& residual, const at::Tensor& h_bias, const at::Tensor& h_scale, const at::Tensor& r_bias,
    const at::Tensor& r_scale, const at::Tensor& norm_weight, double eps, bool allow_f64 = false) {
  constexpr const char* op = "zaya::residual_scale_rmsnorm_backward";
  check_residual_scale_rmsnorm_args(h, residual, h_bias, h_scale, r_bias, r_scale, norm_weight, eps, allow_f64);
  const int64_t T = h.size(0);
  const int64_t H = h.size(1);
  check_dtype(op, "grad_new_residual", grad_new_residual, residual.scalar_type(), " (residual's dtype)");
  check_dtype(op, "grad_normed", grad_normed, h.scalar_type(), " (h's dtype)");
  check_same_device(op, "grad_new_residual", grad_new_residual, h, "h");
  check_same_device(op, "grad_normed", grad_normed, h, "h");
  TORCH_CHECK_VALUE(grad_new_residual.sizes() == h.sizes(), op, ": grad_new_residual must have shape [", T, ", ",
                    H, "], got ", grad_new_residual.sizes());
  TORCH_CHECK_VALUE(grad_normed.sizes() == h.sizes(), op, ": grad_normed must have shape [", T, ", ", H,
                    "], got ", grad_normed.sizes());
}

}  // namespace zaya::checks
