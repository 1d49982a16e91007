// Launch contract of the cca_qkv_functional backward kernels (csrc/kernels/cca_qkv_backward.cuh),
// shared by the CUDA (cuda/cca_qkv_backward.cu) and HIP (hip/cca_qkv_backward.hip) builds and called by
// the torch glue (csrc/gpu/cca_qkv_functional_backward.cpp). Plain C++: no torch, CUDA or HIP headers.
//
// Requirements the caller meets (the launcher re-checks the cheap ones and returns an error):
//   * dtype bf16 or fp16 (every float tensor, as the forward kernel); D a multiple of 16, 16 <= D <= 128
//     (static shared memory; larger head dims run the reference by recompute); rot = 2 * half <= D;
//   * qt, kt: 16-byte aligned base, row stride * 2 a multiple of 16 bytes, unit column stride;
//     cos_sin: unit column stride; the parameters (conv_g_weight [C, 2D], the rest [C, 2], [C], [nkv])
//     contiguous and 16-byte aligned; grad_q [T, nq, D], grad_k, grad_v [T, nkv, D] contiguous;
//   * conv_state [B, C, 2]: any strides; index tensors contiguous;
//   * outputs contiguous: g_qt [T, nq D], g_kt [T, nkv D], g_vd [T, hv] and g_vs [B, hv] zeroed,
//     g_state [B, C, 2] zeroed, the parameter gradients shaped like the parameters;
//   * workspace: cca_qkv_backward_workspace(...) floats, 16-byte aligned (no initial value needed).
// Index values need not be valid (nothing reads them on the host): a token in no sequence gets zero
// gradients, one whose position is outside cos_sin NaN gradients; memory outside the tensors is never
// touched.
#pragma once

#include <cstdint>

#include "cca_qkv_inputs.h"  // CcaQkvInputs (shared with the forward), DType

namespace zaya::kernels {

// Tokens per parameter-gradient partial: the conv weights' and biases' gradients are summed over these
// fixed token ranges first (one fp32 partial each, per CTA), then over the ranges in order.
inline constexpr int64_t kCcaQkvBwdSuperTokens = 256;

// fp32 elements of the workspace: GY [T, C] (the gradient of the grouped conv's output), the key
// temperature's per-token terms [T, nkv], and the partials [S][C * 2D] + [S][C] + [S][2C] + [S][C],
// S = ceil(T / kCcaQkvBwdSuperTokens).
inline int64_t cca_qkv_backward_workspace(int64_t T, int64_t nq, int64_t nkv, int64_t D) {
  const int64_t C = (nq + nkv) * D, S = (T + kCcaQkvBwdSuperTokens - 1) / kCcaQkvBwdSuperTokens;
  return T * C + T * nkv + S * (C * 2 * D + 4 * C);
}

struct CcaQkvBackwardArgs {
  CcaQkvInputs in;  // shapes, qt/kt, parameters, cos_sin, positions, cu_seqlens, conv_state [B, C, 2]
  const void *grad_q = nullptr, *grad_k = nullptr, *grad_v = nullptr;
  void *g_qt = nullptr, *g_kt = nullptr, *g_vd = nullptr, *g_vs = nullptr, *g_state = nullptr;
  void *g_dw_w = nullptr, *g_dw_b = nullptr, *g_gw = nullptr, *g_gb = nullptr, *g_temp = nullptr;
  float* workspace = nullptr;
};

const char* launch_cca_qkv_backward(const CcaQkvBackwardArgs& args, void* stream);

}  // namespace zaya::kernels
