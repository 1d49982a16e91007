// Launch contract of the moe_top1 backward kernels (csrc/kernels/moe_top1_backward.cuh), shared by
// cuda/moe_top1_backward.cu, hip/moe_top1_backward.hip and the torch glue csrc/gpu/moe_top1_backward.cpp.
// Plain C++: no torch, CUDA or HIP headers.
//
// The caller provides what the forward's launch contract (moe_top1_launch.h) asks of fwd's inputs
// (bf16 or fp16, H % 8 == 0, I % 8 == 0, 16-byte aligned pointers and row strides, weights and
// expert_weight contiguous; fwd.out and fwd.act are not used), and:
//   * grad_out [T, H] of dtype, unit-stride rows, row stride grad_out_row_stride (16-byte multiple);
//   * grad_x [T, H], grad_expert_weight [T], grad_gate_up [E, 2I, H], grad_down [E, H, I]: contiguous,
//     dtype, zero-filled (what no local expert writes stays zero: skip-class tokens, other ranks'
//     tokens and experts, local experts without tokens);
//   * scratch: act_w [T, I] and d_gate_up [T, 2I] of dtype, dw_partial moe_top1_backward_partials(T, I)
//     floats, fwd.workspace moe_top1_workspace_ints(T, E) int32.
#pragma once

#include <cstdint>

#include "moe_top1_launch.h"

namespace zaya::kernels {

// Columns of I per partial of the routing-weight gradient (the gate/up kernel's tile width).
inline constexpr int64_t kMoeBwdPartialCols = 64;

struct MoeTop1BackwardArgs {
  MoeTop1Args fwd;  // the forward's inputs, sizes, expert range and grouping workspace
  const void* grad_out = nullptr;  // [T, H]
  int64_t grad_out_row_stride = 0;
  void* grad_x = nullptr;              // [T, H]
  void* grad_expert_weight = nullptr;  // [T]
  void* grad_gate_up = nullptr;        // [E, 2I, H]
  void* grad_down = nullptr;           // [E, H, I]
  void* act_w = nullptr;               // [T, I] scratch: w * SiLU(gate) * up per grouped row
  void* d_gate_up = nullptr;           // [T, 2I] scratch: [d_gate | d_up] per grouped row
  float* dw_partial = nullptr;         // [ceil(I / 64), T] scratch: per-tile sums of act * u
};

// fp32 elements of dw_partial.
inline int64_t moe_top1_backward_partials(int64_t T, int64_t I) {
  return (I + kMoeBwdPartialCols - 1) / kMoeBwdPartialCols * T;
}

const char* launch_moe_top1_backward(const MoeTop1BackwardArgs& args, void* stream);

}  // namespace zaya::kernels
