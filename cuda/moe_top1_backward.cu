// CUDA entry of the moe_top1 backward kernels: the bodies are in csrc/kernels/moe_top1_backward.cuh
// (shared with hip/moe_top1_backward.hip); this file only instantiates the launch contract of
// moe_top1_backward_launch.h.
#include "../csrc/kernels/moe_top1_backward.cuh"

namespace zaya::kernels {

const char* launch_moe_top1_backward(const MoeTop1BackwardArgs& args, void* stream) {
  return moe::launch_moe_top1_backward_impl(args, static_cast<vendor::stream_t>(stream));
}

}  // namespace zaya::kernels
