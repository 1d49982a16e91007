// Launch contract of the zaya::router GPU kernel, shared by the CUDA (cuda/router.cu) and HIP
// (hip/router.hip) builds and called by the torch glue (csrc/gpu/router.cpp). Plain C++: no torch,
// CUDA or HIP headers, so the glue compiles with the host compiler and the HIP file without torch.
//
// Requirements the caller must meet (the launcher re-checks the cheap ones and returns an error):
//   * dtype BF16 or F16 (fp32 runs on the CPU kernel); every 16-bit tensor of that dtype;
//   * x and prev_state: unit stride along the feature dimension, any row stride;
//   * weights, biases, scales, norm weight, balancing_biases and all outputs: contiguous;
//   * 1 <= router_dim and 2 <= classes, max(router_dim, classes) <= kRouterMaxWidth;
//   * counts zeroed (the kernel adds each block's histogram into it);
//   * all pointers on the current device; `stream` a cudaStream_t/hipStream_t (nullptr = default).
// The launcher returns nullptr on success, else a static error message.
#pragma once

#include <cstdint>

#include "launch_common.h"

namespace zaya::kernels {

// The widest R or E+1 the kernel keeps on chip (its shared-memory tiles are sized for it).
inline constexpr int64_t kRouterMaxWidth = 512;

struct RouterArgs {
  const void* x = nullptr;  // [tokens, hidden]
  int64_t x_row_stride = 0;
  const void* prev_state = nullptr;  // [tokens, router_dim], or nullptr in the first layer
  int64_t prev_row_stride = 0;
  const void* states_scale = nullptr;  // [router_dim], with prev_state
  const void* down_weight = nullptr;   // [router_dim, hidden]
  const void* down_bias = nullptr;     // [router_dim]
  const void* norm_weight = nullptr;   // [router_dim]
  const void* fc1_weight = nullptr;    // [router_dim, router_dim]
  const void* fc1_bias = nullptr;
  const void* fc2_weight = nullptr;
  const void* fc2_bias = nullptr;
  const void* out_weight = nullptr;         // [classes, router_dim], no bias
  const float* balancing_biases = nullptr;  // [classes] fp32
  DType dtype = DType::BF16;
  int32_t* expert_index = nullptr;  // [tokens]
  void* expert_weight = nullptr;    // [tokens]
  void* router_state = nullptr;     // [tokens, router_dim]
  void* logits = nullptr;           // [tokens, classes], or nullptr (return_logits false)
  int32_t* counts = nullptr;        // [classes], zeroed by the caller
  int64_t tokens = 0;
  int64_t hidden = 0;
  int32_t router_dim = 0;  // R
  int32_t classes = 0;     // E + 1, the skip class last
  float eps = 1e-5f;
};

const char* launch_router(const RouterArgs& args, void* stream);

}  // namespace zaya::kernels
