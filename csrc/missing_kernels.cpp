// Ops whose kernel for a backend is not written yet: calling them raises NotImplementedError that
// names the op and the backend. When a kernel lands, remove its op from the list below (a second
// registration for the same op and key fails at load time, so a stale entry cannot hide a kernel).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace {

template <const char* Backend>
[[maybe_unused]] void not_implemented(const c10::OperatorHandle& op, c10::DispatchKeySet, torch::jit::Stack*) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, op.schema().name(), " has no ", Backend,
                              " kernel yet (see the README's status table); "
                              "zaya_ops.reference has a pure-PyTorch version that runs anywhere");
}

constexpr char kGpu[] = "CUDA/HIP";

}  // namespace

#define ZAYA_MISSING(m, name, backend) \
  m.impl(name, torch::CppFunction::makeFromBoxedFunction<&not_implemented<backend>>())

// Every op has a CPU kernel (csrc/cpu/); the GPU list follows.

#if defined(ZAYA_WITH_CUDA) || defined(ZAYA_WITH_HIP)
TORCH_LIBRARY_IMPL(zaya, CUDA, m) {
  ZAYA_MISSING(m, "cca_qkv", kGpu);
  ZAYA_MISSING(m, "router", kGpu);
  ZAYA_MISSING(m, "moe_top1", kGpu);
}
#endif
