// CUDA entry of the moe_top1 kernels: the bodies are in csrc/kernels/moe_top1.cuh (shared with
// hip/moe_top1.hip); this file only instantiates the launch contract of moe_top1_launch.h.
#include "../csrc/kernels/moe_top1.cuh"

namespace zaya::kernels {

const char* launch_moe_top1(const MoeTop1Args& args, void* stream) {
  return moe::launch_moe_top1_impl(args, static_cast<vendor::stream_t>(stream));
}

}  // namespace zaya::kernels
