// zaya::linear on the CPU: F.linear (y = x @ weight^T + bias, fp32 accumulation, one rounding to the
// param dtype) for the model's dense projections and LM head, fast where ATen is slow: bf16/fp16 on CPUs
// without AVX-512, whose ATen GEMMs run a scalar fallback (1.3-2.7 GB/s of weights in decode, ~1.3
// GFLOP/s in prefill on this repo's AMD EPYC VM).
//   rows <= cpu_gemv::kMaxRows (decode): the streaming AVX2 kernel of gemv.h, weights read once;
//   more rows (prefill): operands converted to fp32, ATen's sgemm, rounded once (router_moe_common.h's
//   "upcast" contract: only the summation order differs from F.linear, at most one rounding step);
//   fp32, or a CPU with ATen's fast oneDNN path, or ZAYA_CPU_GEMM=native: at::linear itself.
// Other devices run at::linear (the CompositeExplicitAutograd kernel registered in csrc/ops.cpp).
#include "gemv.h"
#include "router_moe_common.h"

#include <ATen/Dispatch.h>

#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <optional>

namespace {

using zaya::checks::check_cpu;
using zaya::checks::check_float;
using zaya::checks::dtype_name;
using zaya::checks::shape_str;

constexpr const char* kOp = "zaya.linear";

at::Tensor linear_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  check_float(kOp, "x", x);
  check_cpu(kOp, "weight", weight);
  TORCH_CHECK_VALUE(x.dim() >= 1, kOp, ": x must have at least 1 dimension, got a scalar");
  TORCH_CHECK_VALUE(weight.dim() == 2, kOp, ": weight must be 2-D [N, K], got shape ", shape_str(weight.sizes()));
  const int64_t K = x.size(-1), N = weight.size(0);
  TORCH_CHECK_VALUE(weight.size(1) == K, kOp, ": weight must have shape [N, ", K, "] (K = x.size(-1)), got ",
                    shape_str(weight.sizes()));
  TORCH_CHECK_TYPE(weight.scalar_type() == x.scalar_type(), kOp, ": weight must have dtype ",
                   dtype_name(x.scalar_type()), " like x, got ", dtype_name(weight.scalar_type()));
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias) {
    check_cpu(kOp, "bias", *bias);
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == N, kOp, ": bias must have shape [", N, "], got ",
                      shape_str(bias->sizes()));
    TORCH_CHECK_TYPE(bias->scalar_type() == x.scalar_type(), kOp, ": bias must have dtype ",
                     dtype_name(x.scalar_type()), " like x, got ", dtype_name(bias->scalar_type()));
  }
  const at::ScalarType dt = x.scalar_type();
  const char* mode = std::getenv("ZAYA_CPU_GEMM");
  const bool native = dt == at::kFloat || (mode && std::strcmp(mode, "native") == 0) ||
                      zaya::router_moe::aten_has_fast_gemm(dt);
  if (native) return at::linear(x, weight, has_bias ? *bias : at::Tensor());
  const int64_t rows = K == 0 ? 0 : x.numel() / K;
  const bool forced_upcast = mode && std::strcmp(mode, "upcast") == 0;
  if (rows > zaya::cpu_gemv::kMaxRows || forced_upcast || K == 0) {
    at::Tensor y = at::linear(x.to(at::kFloat), weight.to(at::kFloat),
                              has_bias ? bias->to(at::kFloat) : at::Tensor());
    return y.to(dt);
  }
  const at::Tensor x2 = x.reshape({rows, K}).contiguous();
  const at::Tensor w = weight.stride(1) == 1 ? weight : weight.contiguous();
  const at::Tensor b = has_bias ? bias->to(at::kFloat).contiguous() : at::Tensor();
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = N;
  at::Tensor y = at::empty({rows, N}, x.options());
  AT_DISPATCH_REDUCED_FLOATING_TYPES(dt, "zaya_linear_cpu", [&] {
    zaya::cpu_gemv::gemv<scalar_t>(x2.data_ptr<scalar_t>(), K, rows, w.data_ptr<scalar_t>(), w.stride(0), N, K,
                                   has_bias ? b.data_ptr<float>() : nullptr, y.data_ptr<scalar_t>(), N);
  });
  return y.view(out_shape);
}

}  // namespace

TORCH_LIBRARY_IMPL(zaya, CPU, m) { m.impl("linear", &linear_cpu); }
