// CUDA entry of the cca_attention kernels: the bodies are in csrc/kernels/cca_attention.cuh (shared
// with hip/cca_attention.hip); this file only instantiates the launch contract of
// cca_attention_launch.h.
#include "../csrc/kernels/cca_attention.cuh"

namespace zaya::kernels {

int64_t cca_attention_splits(const CcaAttentionArgs& args) { return attn::num_splits_impl(args); }

const char* launch_cca_attention(const CcaAttentionArgs& args, void* stream) {
  return attn::launch_impl(args, static_cast<vendor::stream_t>(stream));
}

}  // namespace zaya::kernels
