// torch.ops.zaya: the op schemas (csrc/schemas.h). Backend files add only their own
// TORCH_LIBRARY_IMPL blocks; the meta (fake) kernels live in python/zaya_ops/_fake.py.
#include <torch/library.h>

#include "cca_qkv_functional.h"
#include "schemas.h"

namespace {
ZAYA_DEFINE_CCA_QKV_FUNCTIONAL(cca_qkv_functional_zaya, "zaya")
}  // namespace

TORCH_LIBRARY(zaya, m) { zaya::define_schemas(m); }
TORCH_LIBRARY_IMPL(zaya, Autograd, m) { zaya::register_not_differentiable(m); }
// cca_qkv_functional on every device where zaya::cca_qkv has a kernel (csrc/cca_qkv_functional.h).
TORCH_LIBRARY_IMPL(zaya, CompositeExplicitAutograd, m) { m.impl("cca_qkv_functional", &cca_qkv_functional_zaya); }
