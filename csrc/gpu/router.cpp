// CUDA/HIP torch glue of zaya::router: argument checks (csrc/router_checks.h, shared with the CPU
// kernel), device guard, current stream, output allocation (counts zeroed: the kernel adds into it),
// the inputs prepared by router_glue.h (shared with the backward), and the launch through the plain
// contract of csrc/kernels/router_launch.h (kernel in csrc/kernels/router.cuh, built by cuda/router.cu
// or hip/router.hip).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <tuple>

#include "glue.h"
#include "kernels/router_launch.h"
#include "router_checks.h"
#include "router_glue.h"

namespace {

using namespace zaya::gpu;  // NOLINT: the shared GPU glue

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> router_gpu(
    const at::Tensor& x_in, const std::optional<at::Tensor>& prev_state, const at::Tensor& down_weight,
    const at::Tensor& down_bias, const std::optional<at::Tensor>& states_scale, const at::Tensor& norm_weight,
    const at::Tensor& fc1_weight, const at::Tensor& fc1_bias, const at::Tensor& fc2_weight,
    const at::Tensor& fc2_bias, const at::Tensor& out_weight, const at::Tensor& balancing_biases, double eps,
    bool return_logits) {
  constexpr const char* op = "zaya::router";
  check_device(op, "x", x_in);
  zaya::checks::check_router_args(x_in, prev_state, down_weight, down_bias, states_scale, norm_weight, fc1_weight,
                                  fc1_bias, fc2_weight, fc2_bias, out_weight, balancing_biases, eps);
  // Valid inputs outside the kernel's coverage: NotImplementedError, so callers can fall back.
  TORCH_CHECK_NOT_IMPLEMENTED(x_in.scalar_type() != at::kFloat, op,
                              ": x has dtype float32; the CUDA/HIP kernel takes bfloat16 or float16 (float32 "
                              "runs on the CPU kernel or in zaya_ops.reference.router)");
  const int64_t T = x_in.size(0), H = x_in.size(1), R = down_weight.size(0), E1 = out_weight.size(0);
  TORCH_CHECK_NOT_IMPLEMENTED(std::max(R, E1) <= zaya::kernels::kRouterMaxWidth, op,
                              ": the CUDA/HIP kernel keeps R and E+1 on chip up to ",
                              zaya::kernels::kRouterMaxWidth, ", got R = ", R, " and E+1 = ", E1,
                              "; use the CPU kernel or zaya_ops.reference.router");

  const DeviceGuard guard(x_in.device());
  const auto opt = x_in.options();
  at::Tensor index = at::empty({T}, opt.dtype(at::kInt));
  at::Tensor weight = at::empty({T}, opt);
  at::Tensor state = at::empty({T, R}, opt);
  at::Tensor logits = at::empty({return_logits ? T : 0, E1}, opt);
  at::Tensor counts = at::zeros({E1}, opt.dtype(at::kInt));
  if (T == 0) return {index, weight, state, logits, counts};

  const RouterInputs in(x_in, prev_state, states_scale, down_weight, down_bias, norm_weight, fc1_weight, fc1_bias,
                        fc2_weight, fc2_bias, out_weight);
  const at::Tensor bal = kernel_dense(balancing_biases);

  zaya::kernels::RouterArgs a;
  in.set(a);
  a.balancing_biases = bal.const_data_ptr<float>();
  a.expert_index = index.mutable_data_ptr<int32_t>();
  a.expert_weight = weight.mutable_data_ptr();
  a.router_state = state.mutable_data_ptr();
  a.logits = return_logits ? logits.mutable_data_ptr() : nullptr;
  a.counts = counts.mutable_data_ptr<int32_t>();
  a.tokens = T;
  a.hidden = H;
  a.router_dim = static_cast<int32_t>(R);
  a.classes = static_cast<int32_t>(E1);
  a.eps = static_cast<float>(eps);
  check_launch(op, zaya::kernels::launch_router(a, current_stream()));
  return {index, weight, state, logits, counts};
}

}  // namespace

TORCH_LIBRARY_IMPL(ZAYA_GPU_LIB, ZAYA_GPU_KEY, m) { m.impl("router", &router_gpu); }
