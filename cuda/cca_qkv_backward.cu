// CUDA entry of the cca_qkv_functional backward kernels: the bodies are in
// csrc/kernels/cca_qkv_backward.cuh (shared with hip/cca_qkv_backward.hip); this file only instantiates the
// launch contract of cca_qkv_backward_launch.h.
#include "../csrc/kernels/cca_qkv_backward.cuh"

namespace zaya::kernels {

const char* launch_cca_qkv_backward(const CcaQkvBackwardArgs& args, void* stream) {
  return cca_qkv_bwd::launch_cca_qkv_backward_impl(args, static_cast<vendor::stream_t>(stream));
}

}  // namespace zaya::kernels
