// Launch contract of the zaya::router_backward GPU kernels (csrc/kernels/router_backward.cuh), shared by
// the CUDA (cuda/router_backward.cu) and HIP (hip/router_backward.hip) builds and called by the torch
// glue (csrc/gpu/router_backward.cpp). Plain C++, no torch/CUDA/HIP headers.
//
// Requirements the caller must meet (the launcher re-checks the cheap ones and returns an error):
//   * dtype BF16 or F16, every 16-bit tensor of that dtype; max(router_dim, classes) <= kRouterMaxWidth;
//   * x and prev_state: unit stride along the feature dimension, 16-byte aligned rows (any row stride);
//   * weights, biases, scale, norm weight, the upstream gradients and all outputs: contiguous;
//   * expert_index int32 [tokens]; an entry outside 0..classes-1 gets no expert_weight gradient (it is
//     never followed; the Python wrappers and the forward kernel make valid ones);
//   * act: router_backward_act_elems(...) 16-bit elements, wsum: router_backward_wsum_floats(...) fp32,
//     both 16-byte aligned and uninitialised (the kernels write every element they read);
//   * all pointers on the current device; `stream` a cudaStream_t/hipStream_t (nullptr = default).
// The launcher returns nullptr on success, else a static error message.
#pragma once

#include <cstdint>

#include "launch_common.h"
#include "router_launch.h"

namespace zaya::kernels {

// Tokens per chunk of the weight-gradient products: each chunk's fp32 partial dW is summed over its
// tokens on the matrix units, then the chunks' partials in chunk order (independent of the device).
inline constexpr int64_t kRouterBwdChunk = 1024;

// The token kernel's tokens per block (the [R] gradients are summed per block, then over blocks in
// order): 64 when max(R, E+1) <= 256, else 16. A function of the shape only, never of the device.
inline int64_t router_backward_block_tokens(int64_t router_dim, int64_t classes) {
  const int64_t w = ((router_dim > classes ? router_dim : classes) + 15) / 16 * 16;
  return w <= 256 ? 64 : 16;
}

// The per-token activations the token kernel writes for the weight-gradient products, in 16-bit
// elements: rho, a1, a2 (pre-GELU), nrm, g1, g2, da2, da1, drho ([T, R] each) and dl ([T, E+1]).
inline int64_t router_backward_act_elems(int64_t tokens, int64_t router_dim, int64_t classes) {
  const int64_t r8 = (router_dim + 7) / 8 * 8, e8 = (classes + 7) / 8 * 8;  // 16-byte aligned rows
  return tokens * (9 * r8 + e8);
}

// fp32 partials: the [R] gradients per token block (5 R each) and the four weight gradients per chunk.
inline int64_t router_backward_wsum_floats(int64_t tokens, int64_t hidden, int64_t router_dim, int64_t classes) {
  const int64_t bt = router_backward_block_tokens(router_dim, classes);
  const int64_t blocks = (tokens + bt - 1) / bt, chunks = (tokens + kRouterBwdChunk - 1) / kRouterBwdChunk;
  const int64_t R = router_dim;
  return blocks * 5 * R + chunks * (classes * R + 2 * R * R + R * hidden);
}

struct RouterBackwardArgs {
  const void* grad_weight = nullptr;  // [tokens], or nullptr (None)
  const void* grad_state = nullptr;   // [tokens, router_dim], or nullptr
  const void* grad_logits = nullptr;  // [tokens, classes], or nullptr
  const void* x = nullptr;            // [tokens, hidden]
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
  const void* out_weight = nullptr;       // [classes, router_dim]
  const int32_t* expert_index = nullptr;  // [tokens]
  DType dtype = DType::BF16;
  // outputs
  void* grad_x = nullptr;        // [tokens, hidden]
  void* grad_prev = nullptr;     // [tokens, router_dim], with prev_state
  void* grad_down_w = nullptr;   // [router_dim, hidden]
  void* grad_fc1_w = nullptr;    // [router_dim, router_dim]
  void* grad_fc2_w = nullptr;    // [router_dim, router_dim]
  void* grad_out_w = nullptr;    // [classes, router_dim]
  void* grad_vectors = nullptr;  // [5, router_dim]: down_bias, fc1_bias, fc2_bias, norm_weight, states_scale
  // workspaces
  void* act = nullptr;    // router_backward_act_elems 16-bit elements
  float* wsum = nullptr;  // router_backward_wsum_floats fp32
  int64_t tokens = 0;
  int64_t hidden = 0;
  int32_t router_dim = 0;  // R
  int32_t classes = 0;     // E + 1, the skip class last
  float eps = 1e-5f;
};

const char* launch_router_backward(const RouterBackwardArgs& args, void* stream);

}  // namespace zaya::kernels
