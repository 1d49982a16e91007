// CUDA/HIP torch glue of zaya::rms_norm_backward and zaya::residual_scale_rmsnorm_backward: argument
// checks (csrc/norm_checks.h, shared with the CPU kernels), layout fix-ups, workspace and output
// allocation, and the launch through csrc/kernels/norms_backward_launch.h (kernels in
// csrc/kernels/norms_backward.cuh, built by cuda/norms_backward.cu or hip/norms_backward.hip).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>
#include <tuple>

#include "glue.h"
#include "norms_glue.h"
#include "kernels/norms_backward_launch.h"
#include "norm_checks.h"

namespace {

using namespace zaya::checks;  // NOLINT: the shared argument checks
using namespace zaya::gpu;     // NOLINT: the shared GPU glue

void check_hidden(const char* op, const char* name, int64_t H) {
  TORCH_CHECK_NOT_IMPLEMENTED(H % 8 == 0, op, ": the hidden size (", name,
                              ".shape[1]) must be a multiple of 8 on CUDA/HIP (16-byte vector access), got ", H);
}

at::Tensor workspace(const at::Tensor& like, int64_t T, int64_t H, int64_t vectors) {
  return at::empty({zaya::kernels::norm_backward_workspace(T, H, vectors)}, like.options().dtype(at::kFloat));
}

std::tuple<at::Tensor, at::Tensor> rms_norm_backward_gpu(const at::Tensor& grad_y_in, const at::Tensor& x_in,
                                                         const at::Tensor& weight_in, double eps) {
  constexpr const char* op = "zaya::rms_norm_backward";
  check_device(op, "x", x_in);
  check_rms_norm_backward_args(grad_y_in, x_in, weight_in, eps);
  const int64_t T = x_in.size(0);
  const int64_t H = x_in.size(1);
  check_hidden(op, "x", H);

  const DeviceGuard guard(x_in.device());
  at::Tensor gx = at::empty({T, H}, x_in.options());
  at::Tensor gw = at::empty({H}, weight_in.options());
  if (H == 0) return {gx, gw};
  const at::Tensor x = kernel_rows(x_in);
  const at::Tensor gy = kernel_dense(grad_y_in);
  const at::Tensor weight = kernel_dense(weight_in);
  const at::Tensor ws = workspace(x_in, T, H, 1);

  zaya::kernels::RmsNormBackwardArgs a;
  a.grad_y = gy.const_data_ptr();
  a.x = x.const_data_ptr();
  a.x_row_stride = x.stride(0);
  a.x_dtype = to_dtype(x.scalar_type());
  a.weight = weight.const_data_ptr();
  a.w_dtype = to_dtype(weight.scalar_type());
  a.grad_x = gx.mutable_data_ptr();
  a.grad_weight = gw.mutable_data_ptr();
  a.workspace = ws.mutable_data_ptr<float>();
  a.rows = T;
  a.hidden = H;
  a.eps = static_cast<float>(eps);
  check_launch(op, zaya::kernels::launch_rms_norm_backward(a, current_stream()));
  return {gx, gw};
}

using Grads7 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Grads7 residual_scale_rmsnorm_backward_gpu(const at::Tensor& grad_new_residual_in, const at::Tensor& grad_normed_in,
                                           const at::Tensor& h_in, const at::Tensor& residual_in,
                                           const at::Tensor& h_bias, const at::Tensor& h_scale,
                                           const at::Tensor& r_bias, const at::Tensor& r_scale,
                                           const at::Tensor& norm_weight, double eps) {
  constexpr const char* op = "zaya::residual_scale_rmsnorm_backward";
  check_device(op, "h", h_in);
  check_residual_scale_rmsnorm_backward_args(grad_new_residual_in, grad_normed_in, h_in, residual_in, h_bias,
                                             h_scale, r_bias, r_scale, norm_weight, eps);
  const int64_t T = h_in.size(0);
  const int64_t H = h_in.size(1);
  check_hidden(op, "h", H);

  const DeviceGuard guard(h_in.device());
  at::Tensor gh = at::empty({T, H}, h_in.options());
  at::Tensor gr = at::empty({T, H}, residual_in.options());
  at::Tensor gvec = at::empty({5, H}, h_in.options());  // h_bias, h_scale, r_bias, r_scale, norm_weight
  if (H > 0) {
    const at::Tensor h = kernel_rows(h_in);
    const at::Tensor residual = kernel_rows(residual_in);
    const at::Tensor g_new_r = kernel_dense(grad_new_residual_in);
    const at::Tensor g_normed = kernel_dense(grad_normed_in);
    const at::Tensor* vecs_in[5] = {&h_bias, &h_scale, &r_bias, &r_scale, &norm_weight};
    at::Tensor vecs[5];
    for (int i = 0; i < 5; ++i) vecs[i] = kernel_dense(*vecs_in[i]);
    const at::Tensor ws = workspace(h_in, T, H, 5);

    zaya::kernels::ResidualScaleRmsNormBackwardArgs a;
    a.grad_new_residual = g_new_r.const_data_ptr<float>();
    a.grad_normed = g_normed.const_data_ptr();
    set_residual_scale_inputs(a, h, residual, vecs);
    a.grad_h = gh.mutable_data_ptr();
    a.grad_residual = gr.mutable_data_ptr<float>();
    a.grad_vectors = gvec.mutable_data_ptr();
    a.workspace = ws.mutable_data_ptr<float>();
    a.rows = T;
    a.hidden = H;
    a.eps = static_cast<float>(eps);
    check_launch(op, zaya::kernels::launch_residual_scale_rmsnorm_backward(a, current_stream()));
  }
  // separate [H] tensors (outputs must not share storage)
  return {gh, gr, gvec[0].clone(), gvec[1].clone(), gvec[2].clone(), gvec[3].clone(), gvec[4].clone()};
}

}  // namespace

TORCH_LIBRARY_IMPL(ZAYA_GPU_LIB, ZAYA_GPU_KEY, m) {
  m.impl("rms_norm_backward", &rms_norm_backward_gpu);
  m.impl("residual_scale_rmsnorm_backward", &residual_scale_rmsnorm_backward_gpu);
}
