// torch.ops.zaya: the op schemas (csrc/schemas.h). Backend files add only their own
// TORCH_LIBRARY_IMPL blocks; the meta (fake) kernels live in python/zaya_ops/_fake.py.
#include <torch/library.h>

#include "cca_qkv_functional.h"
#include "schemas.h"

#include <ATen/ATen.h>

#include <optional>

namespace {
ZAYA_DEFINE_CCA_QKV_FUNCTIONAL(cca_qkv_functional_zaya, "zaya")
}  // namespace

TORCH_LIBRARY(zaya, m) {
  zaya::define_schemas(m);
  // F.linear for the model's projections and LM head: a fast CPU kernel for bf16/fp16 (csrc/cpu/linear.cpp);
  // on every other device (and for Meta tensors) at::linear itself. Only in torch.ops.zaya (no emulator
  // version: it is no GPU kernel body). Its autograd (F.linear's formula) is in python/zaya_ops/_autograd.py.
  m.def("linear(Tensor x, Tensor weight, Tensor? bias=None) -> Tensor");
}
TORCH_LIBRARY_IMPL(zaya, Autograd, m) {
  zaya::register_not_differentiable(m);
}
// cca_qkv_functional on every device where zaya::cca_qkv has a kernel (csrc/cca_qkv_functional.h).
TORCH_LIBRARY_IMPL(zaya, CompositeExplicitAutograd, m) {
  m.impl("linear", [](const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
    return at::linear(x, weight, bias.has_value() ? *bias : at::Tensor());
  });
  m.impl("cca_qkv_functional", &cca_qkv_functional_zaya);
}
