// HIP entry of the zaya::router kernel: the body is in csrc/kernels/router.cuh (shared with
// cuda/router.cu); this file only instantiates the launch contract of router_launch.h. It needs no
// torch headers, so tools/check_hip.sh compiles it standalone with clang.
#include "../csrc/kernels/router.cuh"

namespace zaya::kernels {

const char* launch_router(const RouterArgs& args, void* stream) {
  return router::launch_router_impl(args, static_cast<vendor::stream_t>(stream));
}

}  // namespace zaya::kernels
