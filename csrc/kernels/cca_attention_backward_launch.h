// Launch contract of the cca_attention backward kernels (csrc/kernels/cca_attention_backward.cuh),
// shared by the CUDA (cuda/cca_attention_backward.cu) and HIP (hip/cca_attention_backward.hip) builds
// and called by the torch glue (csrc/gpu/cca_attention_backward.cpp). Plain C++: no torch, CUDA or
// HIP headers.
//
// Requirements the caller must meet (the launcher re-checks the cheap ones and returns an error):
//   * `fwd` as for launch_cca_attention (cca_attention_launch.h: dtype BF16 or F16, 16-byte layouts,
//     int32 index tensors on the device), except that D must be 64 or 128 and out/lse/splits/part_*
//     are unused;
//   * grad_out [T, nq * D] contiguous (dtype), lse [nq, T] contiguous fp32, grad_lse [nq, T]
//     contiguous fp32 or null (no gradient into lse);
//   * grad_q [T, nq, D] contiguous (dtype); grad_k, grad_v [num_blocks, block_size, nkv, D]
//     contiguous (dtype), 16-byte aligned;
//   * scratch, fp32, contiguous, sized from shapes only (cca_attention_backward_part_elems): delta and
//     rnorm [nq, T] each, part_k and part_v [B * max_seqlen_k, nkv, D] each (the per-sequence dK/dV
//     rows: row b * max_seqlen_k + position).
// Keys at positions >= max_seqlen_k of a sequence are not differentiated (max_seqlen_k must bound
// seqused_k, as for the forward). Index values are never followed outside the tensors.
// Launchers return nullptr on success, else a static error message.
#pragma once

#include <cstdint>

#include "cca_attention_launch.h"

namespace zaya::kernels {

struct CcaAttentionBackwardArgs {
  CcaAttentionArgs fwd;               // the forward's inputs (q, caches, indices, shapes, scale, bounds)
  const void* grad_out = nullptr;     // [T, nq * D], dtype
  const float* lse = nullptr;         // [nq, T]
  const float* grad_lse = nullptr;    // [nq, T] or null
  void* grad_q = nullptr;             // [T, nq, D], dtype
  void* grad_k = nullptr;             // [num_blocks, block_size, nkv, D], dtype
  void* grad_v = nullptr;
  float* delta = nullptr;             // [nq, T] scratch: rowsum(P * dP) - dlse
  float* rnorm = nullptr;             // [nq, T] scratch: 1 / rowsum(exp(S - lse))
  float* part_k = nullptr;            // [B * max_seqlen_k, nkv, D] scratch
  float* part_v = nullptr;
};

// fp32 elements of each of part_k and part_v.
inline int64_t cca_attention_backward_part_elems(const CcaAttentionArgs& a) {
  return a.B * a.max_seqlen_k * a.nkv * a.D;
}

const char* launch_cca_attention_backward(const CcaAttentionBackwardArgs& args, void* stream);

}  // namespace zaya::kernels
