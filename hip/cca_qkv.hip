// HIP entry of the cca_qkv kernels: the bodies are in csrc/kernels/cca_qkv.cuh (shared with
// cuda/cca_qkv.cu); this file only instantiates the launch contract of cca_qkv_launch.h. It needs
// no torch headers, so tools/check_hip.sh compiles it standalone with clang.
#include "../csrc/kernels/cca_qkv.cuh"

namespace zaya::kernels {

const char* launch_cca_qkv(const CcaQkvArgs& args, void* stream) {
  return cca_qkv::launch_cca_qkv_impl(args, static_cast<vendor::stream_t>(stream));
}

}  // namespace zaya::kernels
