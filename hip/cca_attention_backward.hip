// HIP entry of the cca_attention backward kernels: the bodies are in
// csrc/kernels/cca_attention_backward.cuh (shared with cuda/cca_attention_backward.cu); this file only
// instantiates the launch contract of cca_attention_backward_launch.h. It needs no torch headers, so
// tools/check_hip.sh compiles it standalone.
#include "../csrc/kernels/cca_attention_backward.cuh"

namespace zaya::kernels {

const char* launch_cca_attention_backward(const CcaAttentionBackwardArgs& args, void* stream) {
  return attn_bwd::launch_impl(args, static_cast<vendor::stream_t>(stream));
}

}  // namespace zaya::kernels
