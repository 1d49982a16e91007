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

[[maybe_unused]] constexpr char kGpu[] = "CUDA/HIP";

}  // namespace

#define ZAYA_MISSING(m, name, backend) \
  m.impl(name, torch::CppFunction::makeFromBoxedFunction<&not_implemented<backend>>())

// Every op has a CPU kernel (csrc/cpu/) and a CUDA/HIP kernel (csrc/gpu/ + csrc/kernels/) today. A new
// op without a kernel for some backend gets its line here, e.g. for the GPUs:
//   TORCH_LIBRARY_IMPL(zaya, CUDA, m) { ZAYA_MISSING(m, "new_op", kGpu); }
