// torch.ops.zaya: the op schemas (csrc/schemas.h). Backend files add only their own
// TORCH_LIBRARY_IMPL blocks; the meta (fake) kernels live in python/zaya_ops/_fake.py.
#include <torch/library.h>

#include "schemas.h"

#include <ATen/ATen.h>

#include <optional>

TORCH_LIBRARY(zaya, m) {
  zaya::define_schemas(m);
  // F.linear for the model's projections and LM head: a fast CPU kernel for bf16/fp16 (csrc/cpu/linear.cpp);
  // on every other device (and for Meta tensors) at::linear itself. Only in torch.ops.zaya (no emulator
  // version: it is no GPU kernel body), inference only (no autograd formula).
  m.def("linear(Tensor x, Tensor weight, Tensor? bias=None) -> Tensor");
}
TORCH_LIBRARY_IMPL(zaya, Autograd, m) {
  zaya::register_not_differentiable(m);
  m.impl("linear", torch::autograd::autogradNotImplementedFallback());
}
TORCH_LIBRARY_IMPL(zaya, CompositeExplicitAutograd, m) {
  m.impl("linear", [](const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
    return at::linear(x, weight, bias.has_value() ? *bias : at::Tensor());
  });
}
