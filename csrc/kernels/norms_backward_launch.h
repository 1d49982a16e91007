// Launch contract of the norm backward kernels (csrc/kernels/norms_backward.cuh), shared by the CUDA
// (cuda/norms_backward.cu) and HIP (hip/norms_backward.hip) builds and called by the torch glue
// (csrc/gpu/norms_backward.cpp). Plain C++, no torch/CUDA/HIP headers. Same layout rules as
// norms_launch.h: hidden % 8 == 0, 16-byte aligned pointers and row strides, unit inner stride,
// outputs and upstream gradients contiguous. Launchers return nullptr on success, else a static message.
#pragma once

#include <cstdint>

#include "launch_common.h"

namespace zaya::kernels {

// Rows per block of the backward kernels: the parameter gradients are summed over these fixed row
// blocks first (one fp32 partial per block in `workspace`), then over the blocks in order.
inline constexpr int64_t kNormBwdRowsPerBlock = 64;

// fp32 elements of the workspace for `rows` x `hidden` and `vectors` parameter vectors.
inline int64_t norm_backward_workspace(int64_t rows, int64_t hidden, int64_t vectors) {
  return (rows + kNormBwdRowsPerBlock - 1) / kNormBwdRowsPerBlock * vectors * hidden;
}

// Gradients of y = rms_norm(x, weight): grad_x (x's dtype) and grad_weight (weight's dtype).
struct RmsNormBackwardArgs {
  const void* grad_y = nullptr;  // [rows, hidden] contiguous, w_dtype
  const void* x = nullptr;       // [rows, hidden], row stride x_row_stride elements
  int64_t x_row_stride = 0;
  DType x_dtype = DType::F32;
  const void* weight = nullptr;  // [hidden]
  DType w_dtype = DType::F32;
  void* grad_x = nullptr;        // [rows, hidden] contiguous, x_dtype
  void* grad_weight = nullptr;   // [hidden], w_dtype
  float* workspace = nullptr;    // norm_backward_workspace(rows, hidden, 1) floats
  int64_t rows = 0;
  int64_t hidden = 0;
  float eps = 1e-5f;
};

// Gradients of residual_scale_rmsnorm: grad_h (dtype), grad_residual (fp32) and the five [hidden]
// vectors' gradients, written to grad_vectors [5, hidden] (dtype) in the order h_bias, h_scale,
// r_bias, r_scale, norm_weight.
struct ResidualScaleRmsNormBackwardArgs {
  const float* grad_new_residual = nullptr;  // [rows, hidden] contiguous fp32
  const void* grad_normed = nullptr;         // [rows, hidden] contiguous, dtype
  const void* h = nullptr;                   // [rows, hidden], dtype
  int64_t h_row_stride = 0;
  const float* residual = nullptr;           // [rows, hidden] fp32
  int64_t residual_row_stride = 0;
  const void* h_bias = nullptr;              // [hidden] each, dtype
  const void* h_scale = nullptr;
  const void* r_bias = nullptr;
  const void* r_scale = nullptr;
  const void* norm_weight = nullptr;
  DType dtype = DType::BF16;
  void* grad_h = nullptr;                    // [rows, hidden] contiguous, dtype
  float* grad_residual = nullptr;            // [rows, hidden] contiguous fp32
  void* grad_vectors = nullptr;              // [5, hidden] contiguous, dtype
  float* workspace = nullptr;                // norm_backward_workspace(rows, hidden, 5) floats
  int64_t rows = 0;
  int64_t hidden = 0;
  float eps = 1e-5f;
};

const char* launch_rms_norm_backward(const RmsNormBackwardArgs& args, void* stream);
const char* launch_residual_scale_rmsnorm_backward(const ResidualScaleRmsNormBackwardArgs& args, void* stream);

}  // namespace zaya::kernels
