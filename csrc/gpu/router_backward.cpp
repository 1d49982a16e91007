// CUDA/HIP torch glue of zaya::router_backward: argument checks (csrc/router_checks.h, shared with the
// CPU kernel; index values are not read on the host), layout fix-ups, workspaces and outputs, and the
// launch through csrc/kernels/router_backward_launch.h (kernels in csrc/kernels/router_backward.cuh,
// built by cuda/router_backward.cu or hip/router_backward.hip). Valid inputs the kernels do not cover
// (float32, max(R, E+1) > kRouterMaxWidth: the forward kernel's coverage too) raise NotImplementedError;
// the autograd formula (python/zaya_ops/_autograd.py) then runs the reference by recompute.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <tuple>

#include "glue.h"
#include "kernels/router_backward_launch.h"
#include "router_checks.h"
#include "router_glue.h"

namespace {

using namespace zaya::gpu;  // NOLINT: the shared GPU glue

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                         at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Grads router_backward_gpu(const std::optional<at::Tensor>& grad_weight, const std::optional<at::Tensor>& grad_state,
                          const std::optional<at::Tensor>& grad_logits, const at::Tensor& x_in,
                          const std::optional<at::Tensor>& prev_state, const at::Tensor& down_weight,
                          const at::Tensor& down_bias, const std::optional<at::Tensor>& states_scale,
                          const at::Tensor& norm_weight, const at::Tensor& fc1_weight, const at::Tensor& fc1_bias,
                          const at::Tensor& fc2_weight, const at::Tensor& fc2_bias, const at::Tensor& out_weight,
                          const at::Tensor& expert_index, double eps) {
  constexpr const char* op = "zaya::router_backward";
  check_device(op, "x", x_in);
  zaya::checks::check_router_backward_args(op, grad_weight, grad_state, grad_logits, x_in, prev_state, down_weight,
                                           down_bias, states_scale, norm_weight, fc1_weight, fc1_bias, fc2_weight,
                                           fc2_bias, out_weight, expert_index, eps, /*allow_f64=*/false);
  TORCH_CHECK_NOT_IMPLEMENTED(x_in.scalar_type() != at::kFloat, op,
                              ": x has dtype float32; the CUDA/HIP kernel takes bfloat16 or float16 (the autograd "
                              "formula runs the reference by recompute)");
  const int64_t T = x_in.size(0), H = x_in.size(1), R = down_weight.size(0), E1 = out_weight.size(0);
  TORCH_CHECK_NOT_IMPLEMENTED(std::max(R, E1) <= zaya::kernels::kRouterMaxWidth, op,
                              ": the CUDA/HIP kernel keeps R and E+1 on chip up to ",
                              zaya::kernels::kRouterMaxWidth, ", got R = ", R, " and E+1 = ", E1);
  const bool has_prev = prev_state.has_value();

  const DeviceGuard guard(x_in.device());
  const auto opt = x_in.options();
  at::Tensor gx = at::empty({T, H}, opt);
  at::Tensor gprev = at::empty({has_prev ? T : 0, R}, opt);
  at::Tensor gdw = at::empty({R, H}, opt), gw1 = at::empty({R, R}, opt), gw2 = at::empty({R, R}, opt);
  at::Tensor gwo = at::empty({E1, R}, opt);
  at::Tensor gvec = at::empty({5, R}, opt);  // down_bias, fc1_bias, fc2_bias, norm_weight, states_scale
  if (T == 0) {
    for (at::Tensor* t : {&gdw, &gw1, &gw2, &gwo, &gvec}) t->zero_();
  } else {
    const RouterInputs in(x_in, prev_state, states_scale, down_weight, down_bias, norm_weight, fc1_weight,
                          fc1_bias, fc2_weight, fc2_bias, out_weight);
    const at::Tensor index = kernel_dense(expert_index);
    const auto dense = [](const std::optional<at::Tensor>& g) { return g ? kernel_dense(*g) : at::Tensor(); };
    const at::Tensor g_w = dense(grad_weight), g_s = dense(grad_state), g_l = dense(grad_logits);
    const at::Tensor act = at::empty({zaya::kernels::router_backward_act_elems(T, R, E1)}, opt);
    const at::Tensor wsum =
        at::empty({zaya::kernels::router_backward_wsum_floats(T, H, R, E1)}, opt.dtype(at::kFloat));

    zaya::kernels::RouterBackwardArgs a;
    a.grad_weight = g_w.defined() ? g_w.const_data_ptr() : nullptr;
    a.grad_state = g_s.defined() ? g_s.const_data_ptr() : nullptr;
    a.grad_logits = g_l.defined() ? g_l.const_data_ptr() : nullptr;
    in.set(a);
    if (has_prev) a.grad_prev = gprev.mutable_data_ptr();
    a.expert_index = index.const_data_ptr<int32_t>();
    a.grad_x = gx.mutable_data_ptr();
    a.grad_down_w = gdw.mutable_data_ptr();
    a.grad_fc1_w = gw1.mutable_data_ptr();
    a.grad_fc2_w = gw2.mutable_data_ptr();
    a.grad_out_w = gwo.mutable_data_ptr();
    a.grad_vectors = gvec.mutable_data_ptr();
    a.act = act.mutable_data_ptr();
    a.wsum = wsum.mutable_data_ptr<float>();
    a.tokens = T;
    a.hidden = H;
    a.router_dim = static_cast<int32_t>(R);
    a.classes = static_cast<int32_t>(E1);
    a.eps = static_cast<float>(eps);
    check_launch(op, zaya::kernels::launch_router_backward(a, current_stream()));
  }
  // separate [R] tensors (outputs must not share storage)
  at::Tensor gscale = has_prev ? gvec[4].clone() : at::empty({0}, opt);
  return {gx, gprev, gdw, gvec[0].clone(), gscale, gvec[3].clone(), gw1, gvec[1].clone(), gw2, gvec[2].clone(), gwo};
}

}  // namespace

TORCH_LIBRARY_IMPL(ZAYA_GPU_LIB, ZAYA_GPU_KEY, m) { m.impl("router_backward", &router_backward_gpu); }
