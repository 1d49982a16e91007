// HIP entry of the norm kernels: the bodies are in csrc/kernels/norms.cuh (shared with
// cuda/norms.cu); this file only instantiates the launch contract of norms_launch.h. It needs no
// torch headers, so tools/check_hip.sh compiles it standalone with clang.
#include "../csrc/kernels/norms.cuh"

namespace zaya::kernels {

const char* launch_rms_norm(const RmsNormArgs& args, void* stream) {
  return norms::launch_rms_norm_impl(args, static_cast<vendor::stream_t>(stream));
}

const char* launch_residual_scale_rmsnorm(const ResidualScaleRmsNormArgs& args, void* stream) {
  return norms::launch_residual_scale_rmsnorm_impl(args, static_cast<vendor::stream_t>(stream));
}

}  // namespace zaya::kernels
