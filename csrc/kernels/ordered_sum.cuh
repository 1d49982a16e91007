// The last step of the deterministic parameter-gradient reductions of the backward kernels
// (norms_backward.cuh, cca_qkv_backward.cuh): a thread per element sums fixed fp32 partials in order
// and rounds once. Portable (nvcc, hip-clang, the SIMT emulator).
#pragma once

#include <cstdint>

#include "vendor.h"

namespace zaya::kernels::ordered_sum {

inline constexpr int kThreads = 256;  // a multiple of 32 and 64

// out[e] = round_p(sum over parts b, in order, of ws[b * n + e]), e < n.
template <class P>
__global__ void __launch_bounds__(kThreads) sum_partials(const float* ws, int64_t parts, int64_t n, void* out) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (e >= n) return;
  float s = 0.f;
  for (int64_t b = 0; b < parts; ++b) s = vendor::fadd(s, ws[b * n + e]);
  static_cast<typename P::storage*>(out)[e] = P::from_float(s);
}

// Launches sum_partials over n elements; nullptr or the launch error.
template <class P>
const char* launch_sum_partials(const float* ws, int64_t parts, int64_t n, void* out, vendor::stream_t stream) {
  const int64_t grid = (n + kThreads - 1) / kThreads;
  if (grid > int64_t{0x7fffffff}) return "zaya backward: too many parameters for one launch";
  if (grid == 0) return nullptr;
  return vendor::launch(&sum_partials<P>, dim3(static_cast<unsigned>(grid)), dim3(kThreads), 0, stream, ws, parts, n,
                        out);
}

}  // namespace zaya::kernels::ordered_sum
