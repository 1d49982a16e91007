// torch.ops.zaya: the op schemas (csrc/schemas.h). Backend files add only their own
// TORCH_LIBRARY_IMPL blocks; the meta (fake) kernels live in python/zaya_ops/_fake.py.
#include <torch/library.h>

#include "schemas.h"

TORCH_LIBRARY(zaya, m) { zaya::define_schemas(m); }
TORCH_LIBRARY_IMPL(zaya, Autograd, m) { zaya::register_not_differentiable(m); }
