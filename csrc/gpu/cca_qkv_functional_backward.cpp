// CUDA/HIP torch glue of zaya::cca_qkv_functional_backward: the shared argument rules
// (csrc/cca_qkv_checks.h, as the CPU kernel), the GPU kernel's own limits (bf16/fp16 as the forward
// kernel, head dim a multiple of 16 up to 128), layout fix-ups, workspace and output allocation, and the
// launch through csrc/kernels/cca_qkv_backward_launch.h (kernels in csrc/kernels/cca_qkv_backward.cuh).
// Outside the kernel's coverage it raises NotImplementedError; python/zaya_ops/_autograd.py then runs
// the reference by recompute.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <tuple>

#include "cca_qkv_checks.h"
#include "glue.h"
#include "kernels/cca_qkv_backward_launch.h"

namespace {

using namespace zaya::gpu;  // NOLINT: the shared GPU glue

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                         at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Grads cca_qkv_functional_backward_gpu(const at::Tensor& grad_q, const at::Tensor& grad_k, const at::Tensor& grad_v,
                                      const at::Tensor& qt_in, const at::Tensor& kt_in,
                                      const at::Tensor& conv_dw_weight, const at::Tensor& conv_dw_bias,
                                      const at::Tensor& conv_g_weight, const at::Tensor& conv_g_bias,
                                      const at::Tensor& qk_temp, const at::Tensor& cos_sin_in,
                                      const at::Tensor& positions, const at::Tensor& cu_seqlens,
                                      const at::Tensor& conv_state, double qk_norm_eps) {
  constexpr const char* op = "zaya::cca_qkv_functional_backward";
  check_device(op, "qt", qt_in);
  const auto d = zaya::checks::check_cca_qkv_functional_backward_args(
      grad_q, grad_k, grad_v, qt_in, kt_in, conv_dw_weight, conv_dw_bias, conv_g_weight, conv_g_bias, qk_temp,
      cos_sin_in, positions, cu_seqlens, conv_state, qk_norm_eps);
  const auto dt = qt_in.scalar_type();
  // Valid inputs outside the kernel's coverage: NotImplementedError, so callers can fall back.
  TORCH_CHECK_NOT_IMPLEMENTED(dt == at::kBFloat16 || dt == at::kHalf, op, ": qt has dtype ", dt,
                              "; the CUDA/HIP kernel takes bfloat16 or float16 (as the forward kernel)");
  TORCH_CHECK_NOT_IMPLEMENTED(d.D % 16 == 0 && d.D <= 128, op,
                              ": the CUDA/HIP kernel needs a head dim that is a multiple of 16 and at most 128 "
                              "(conv_g_weight.shape[1]), got ", d.D);

  const DeviceGuard guard(qt_in.device());
  auto opts = qt_in.options();
  const int64_t T = d.T, B = d.B, C = d.C, hv = d.hv, D = d.D;
  at::Tensor g_qt = at::empty({T, d.nq * D}, opts), g_kt = at::empty({T, d.nkv * D}, opts);
  at::Tensor g_state = at::zeros({B, C, 2}, opts);
  at::Tensor g_dw_w = at::empty({C, 1, 2}, opts), g_dw_b = at::empty({C}, opts);
  at::Tensor g_gw = at::empty({C, D, 2}, opts), g_gb = at::empty({C}, opts), g_temp = at::empty({d.nkv}, opts);
  at::Tensor g_vd = at::zeros({T, hv}, opts), g_vs = at::zeros({B, hv}, opts);
  const at::Tensor gv = grad_v.contiguous();
  at::Tensor g_vc = gv.reshape({T, 2 * hv}).narrow(1, 0, hv).contiguous();
  if (T == 0) {
    for (auto* t : {&g_dw_w, &g_dw_b, &g_gw, &g_gb, &g_temp}) t->zero_();
    return {g_qt, g_kt, g_vc, g_vd, g_dw_w, g_dw_b, g_gw, g_gb, g_temp, g_state, g_vs};
  }
  const at::Tensor qt = kernel_rows(qt_in), kt = kernel_rows(kt_in);
  const at::Tensor cos_sin = cos_sin_in.size(1) <= 1 || cos_sin_in.stride(1) == 1 ? cos_sin_in : cos_sin_in.contiguous();
  const at::Tensor dw_w = kernel_dense(conv_dw_weight), dw_b = kernel_dense(conv_dw_bias);
  const at::Tensor gw = kernel_dense(conv_g_weight), gb = kernel_dense(conv_g_bias), temp = kernel_dense(qk_temp);
  const at::Tensor gq = grad_q.contiguous(), gk = grad_k.contiguous();
  const at::Tensor pos = positions.contiguous(), cu = cu_seqlens.contiguous();
  const at::Tensor ws =
      at::empty({zaya::kernels::cca_qkv_backward_workspace(T, d.nq, d.nkv, D)}, opts.dtype(at::kFloat));

  zaya::kernels::CcaQkvBackwardArgs a;
  a.in.dtype = to_dtype(dt);
  a.in.T = T, a.in.nq = d.nq, a.in.nkv = d.nkv, a.in.D = D, a.in.half = d.rot / 2, a.in.B = B, a.in.P = d.P;
  a.in.qt = qt.const_data_ptr(), a.in.kt = kt.const_data_ptr(), a.in.qt_rs = qt.stride(0), a.in.kt_rs = kt.stride(0);
  a.grad_q = gq.const_data_ptr(), a.grad_k = gk.const_data_ptr(), a.grad_v = gv.const_data_ptr();
  a.in.dw_w = dw_w.const_data_ptr(), a.in.dw_b = dw_b.const_data_ptr(), a.in.gw = gw.const_data_ptr();
  a.in.gb = gb.const_data_ptr(), a.in.temp = temp.const_data_ptr();
  a.in.cos_sin = cos_sin.const_data_ptr(), a.in.cs_rs = cos_sin.stride(0);
  a.in.positions = pos.const_data_ptr<int64_t>(), a.in.cu_seqlens = cu.const_data_ptr<int32_t>();
  a.in.conv_state = conv_state.const_data_ptr();
  a.in.st0 = conv_state.stride(0), a.in.st1 = conv_state.stride(1), a.in.st2 = conv_state.stride(2);
  a.g_qt = g_qt.mutable_data_ptr(), a.g_kt = g_kt.mutable_data_ptr();
  a.g_vd = g_vd.mutable_data_ptr(), a.g_vs = g_vs.mutable_data_ptr(), a.g_state = g_state.mutable_data_ptr();
  a.g_dw_w = g_dw_w.mutable_data_ptr(), a.g_dw_b = g_dw_b.mutable_data_ptr(), a.g_gw = g_gw.mutable_data_ptr();
  a.g_gb = g_gb.mutable_data_ptr(), a.g_temp = g_temp.mutable_data_ptr();
  a.workspace = ws.mutable_data_ptr<float>();
  a.in.eps = static_cast<float>(qk_norm_eps);
  a.in.sqrt_d = static_cast<float>(std::sqrt(static_cast<double>(D)));
  check_launch(op, zaya::kernels::launch_cca_qkv_backward(a, current_stream()));
  return {g_qt, g_kt, g_vc, g_vd, g_dw_w, g_dw_b, g_gw, g_gb, g_temp, g_state, g_vs};
}

}  // namespace

TORCH_LIBRARY_IMPL(ZAYA_GPU_LIB, ZAYA_GPU_KEY, m) {
  m.impl("cca_qkv_functional_backward", &cca_qkv_functional_backward_gpu);
}
