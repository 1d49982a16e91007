// HIP entry of the norm backward kernels: the bodies are in csrc/kernels/norms_backward.cuh
// (shared with cuda/norms_backward.cu); this file only instantiates the launch contract of
// norms_backward_launch.h.
#include "../csrc/kernels/norms_backward.cuh"

namespace zaya::kernels {

const char* launch_rms_norm_backward(const RmsNormBackwardArgs& args, void* stream) {
  return norms_bwd::launch_rms_norm_backward_impl(args, static_cast<vendor::stream_t>(stream));
}

const char* launch_residual_scale_rmsnorm_backward(const ResidualScaleRmsNormBackwardArgs& args, void* stream) {
  return norms_bwd::launch_residual_scale_rmsnorm_backward_impl(args, static_cast<vendor::stream_t>(stream));
}

}  // namespace zaya::kernels
