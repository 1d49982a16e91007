// CUDA entry of the zaya::router_backward kernels: the bodies are in csrc/kernels/router_backward.cuh
// (shared with hip/router_backward.hip); this file only instantiates the launch contract of
// router_backward_launch.h.
#include "../csrc/kernels/router_backward.cuh"

namespace zaya::kernels {

const char* launch_router_backward(const RouterBackwardArgs& args, void* stream) {
  return router_bwd::launch_router_backward_impl(args, static_cast<vendor::stream_t>(stream));
}

}  // namespace zaya::kernels
