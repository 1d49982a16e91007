// CUDA/HIP torch glue of zaya::rms_norm and zaya::residual_scale_rmsnorm: argument checks, device
// guard, current stream, output allocation, and the launch through the plain contract of
// csrc/kernels/norms_launch.h (kernels in csrc/kernels/norms.cuh, built by cuda/norms.cu or
// hip/norms.hip). Compiled by the host C++ compiler; glue.h says where it registers.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>

#include "glue.h"
#include "norms_glue.h"
#include "norm_checks.h"
#include "kernels/norms_launch.h"

namespace {

using namespace zaya::checks;  // NOLINT: the shared argument checks
using namespace zaya::gpu;     // NOLINT: the shared GPU glue

void check_hidden(const char* op, const char* name, int64_t H) {
  // A valid size outside the kernels' coverage: NotImplementedError, so callers can fall back.
  TORCH_CHECK_NOT_IMPLEMENTED(H % 8 == 0, op, ": the hidden size (", name,
                    ".shape[1]) must be a multiple of 8 on CUDA/HIP (16-byte vector access), got ", H);
}

at::Tensor kernel_vector(const at::Tensor& t) {  // [H]
  const bool ok = (t.size(0) <= 1 || t.stride(0) == 1) && aligned16(t.data_ptr());
  return ok ? t : t.clone(at::MemoryFormat::Contiguous);
}

// ------------------------------------------------------------------------------------------------
// Ops
// ------------------------------------------------------------------------------------------------

at::Tensor rms_norm_gpu(const at::Tensor& x_in, const at::Tensor& weight_in, double eps) {
  constexpr const char* op = "zaya::rms_norm";
  check_device(op, "x", x_in);
  check_rms_norm_args(x_in, weight_in, eps);
  const int64_t T = x_in.size(0);
  const int64_t H = x_in.size(1);
  check_hidden(op, "x", H);

  const DeviceGuard guard(x_in.device());
  at::Tensor y = at::empty({T, H}, x_in.options().dtype(weight_in.scalar_type()));
  if (T == 0 || H == 0) return y;
  const at::Tensor x = kernel_rows(x_in);
  const at::Tensor weight = kernel_vector(weight_in);

  zaya::kernels::RmsNormArgs a;
  a.x = x.const_data_ptr();
  a.x_row_stride = x.stride(0);
  a.x_dtype = to_dtype(x.scalar_type());
  a.weight = weight.const_data_ptr();
  a.w_dtype = to_dtype(weight.scalar_type());
  a.out = y.mutable_data_ptr();
  a.rows = T;
  a.hidden = H;
  a.eps = static_cast<float>(eps);
  check_launch(op, zaya::kernels::launch_rms_norm(a, current_stream()));
  return y;
}

std::tuple<at::Tensor, at::Tensor> residual_scale_rmsnorm_gpu(
    const at::Tensor& h_in, const at::Tensor& residual_in, const at::Tensor& h_bias,
    const at::Tensor& h_scale, const at::Tensor& r_bias, const at::Tensor& r_scale,
    const at::Tensor& norm_weight, double eps) {
  constexpr const char* op = "zaya::residual_scale_rmsnorm";
  check_device(op, "h", h_in);
  check_residual_scale_rmsnorm_args(h_in, residual_in, h_bias, h_scale, r_bias, r_scale, norm_weight, eps);
  const int64_t T = h_in.size(0);
  const int64_t H = h_in.size(1);
  check_hidden(op, "h", H);

  const DeviceGuard guard(h_in.device());
  at::Tensor new_r = at::empty({T, H}, residual_in.options());
  at::Tensor y = at::empty({T, H}, h_in.options());
  if (T == 0 || H == 0) return {new_r, y};
  const at::Tensor h = kernel_rows(h_in);
  const at::Tensor residual = kernel_rows(residual_in);
  const at::Tensor* vecs_in[5] = {&h_bias, &h_scale, &r_bias, &r_scale, &norm_weight};
  at::Tensor vecs[5];
  for (int i = 0; i < 5; ++i) vecs[i] = kernel_vector(*vecs_in[i]);

  zaya::kernels::ResidualScaleRmsNormArgs a;
  set_residual_scale_inputs(a, h, residual, vecs);
  a.new_residual = new_r.mutable_data_ptr<float>();
  a.normed = y.mutable_data_ptr();
  a.rows = T;
  a.hidden = H;
  a.eps = static_cast<float>(eps);
  check_launch(op, zaya::kernels::launch_residual_scale_rmsnorm(a, current_stream()));
  return {new_r, y};
}

}  // namespace

TORCH_LIBRARY_IMPL(ZAYA_GPU_LIB, ZAYA_GPU_KEY, m) {
  m.impl("rms_norm", &rms_norm_gpu);
  m.impl("residual_scale_rmsnorm", &residual_scale_rmsnorm_gpu);
}
