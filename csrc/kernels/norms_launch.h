// Launch contract of the norm kernels, shared by the CUDA (cuda/norms.cu) and HIP (hip/norms.hip)
// builds and called by the torch glue (csrc/gpu/norms.cpp). Plain C++: no torch, CUDA or HIP
// headers, so the glue compiles with the host compiler and the HIP file compiles without torch.
//
// Requirements the caller must meet (the launchers re-check the cheap ones and return an error):
//   * hidden % 8 == 0 (kernels move 8 elements per 16-byte access);
//   * every pointer 16-byte aligned, every row stride * element size a multiple of 16 bytes;
//   * the last dimension of every [rows, hidden] tensor contiguous; outputs fully contiguous;
//   * all pointers on the current device of the calling thread; `stream` a cudaStream_t/hipStream_t
//     of that device (nullptr = default stream).
// Launchers return nullptr on success, else a static error message (never owned by the caller).
#pragma once

#include <cstdint>

#include "launch_common.h"

namespace zaya::kernels {

// y[t, :] = w * round_w(v * rsqrt(mean(v^2) + eps)), v = round_w(x[t, :]) (see python/zaya_ops/ops.py).
struct RmsNormArgs {
  const void* x = nullptr;   // [rows, hidden], row stride x_row_stride elements
  int64_t x_row_stride = 0;  // elements
  DType x_dtype = DType::F32;
  const void* weight = nullptr;  // [hidden], contiguous
  DType w_dtype = DType::F32;    // also the output dtype
  void* out = nullptr;           // [rows, hidden] contiguous, w_dtype
  int64_t rows = 0;
  int64_t hidden = 0;
  float eps = 1e-5f;
};

// new_residual = float(round_p(round_p(h + h_bias) * h_scale)) + (residual + r_bias) * r_scale,
// normed = rms_norm(new_residual, norm_weight, eps). All [hidden] vectors and h share `dtype`.
struct ResidualScaleRmsNormArgs {
  const void* h = nullptr;  // [rows, hidden], dtype
  int64_t h_row_stride = 0;
  const float* residual = nullptr;  // [rows, hidden] fp32
  int64_t residual_row_stride = 0;
  const void* h_bias = nullptr;  // [hidden] each, contiguous, dtype
  const void* h_scale = nullptr;
  const void* r_bias = nullptr;
  const void* r_scale = nullptr;
  const void* norm_weight = nullptr;
  DType dtype = DType::BF16;
  float* new_residual = nullptr;  // [rows, hidden] contiguous fp32
  void* normed = nullptr;         // [rows, hidden] contiguous, dtype
  int64_t rows = 0;
  int64_t hidden = 0;
  float eps = 1e-5f;
};

const char* launch_rms_norm(const RmsNormArgs& args, void* stream);
const char* launch_residual_scale_rmsnorm(const ResidualScaleRmsNormArgs& args, void* stream);

}  // namespace zaya::kernels
