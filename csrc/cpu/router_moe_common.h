// Shared by the router and moe_top1 CPU kernels: how they run GEMMs, and fp32 elementwise maths.
//
// The reference's linears (F.linear in the param dtype) accumulate in fp32, add the bias in fp32 and
// round once to the param dtype. These kernels keep exactly that contract, in one of two ways:
//   native: at::addmm / at::mm in the param dtype, the reference's own call (bit-equal GEMM outputs);
//   upcast: operands converted to fp32, then ATen's fp32 GEMM (MKL sgemm), rounded by the kernel's
//           epilogue. Only the summation order inside a dot product differs from native, so an output
//           differs by at most one rounding step of the param dtype, and rarely (~1e-4 of the elements).
// Why upcast: on CPUs without AVX-512, ATen runs bf16/fp16 GEMMs in a scalar fallback (oneDNN needs
// AVX-512), 5-10x slower than sgemm; the per-call weight conversion pays for itself from a few rows
// on (each kernel sets its threshold).
// Where ATen has the fast oneDNN path (AVX-512 BW/VL/DQ for bf16, AVX512-FP16/AMX-FP16 for fp16), the
// kernels stay native. ZAYA_CPU_GEMM=native|upcast overrides the choice (tests, benchmarks).
#pragma once

#include "arg_checks.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <c10/util/bit_cast.h>
#include <cpuinfo.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

namespace zaya::router_moe {

using zaya::checks::check_dtype;
using zaya::checks::check_shape;
using zaya::checks::shape_str;

// An fp32 value rounded to T and widened again: the reference's rounding point after each torch op.
template <typename T>
inline float round_to(float v) {
  return static_cast<float>(static_cast<T>(v));
}
// The same for float64 arithmetic (the moe_top1 kernels' float64 gradcheck mode).
template <typename T>
inline double round_to(double v) {
  return static_cast<double>(static_cast<T>(v));
}

// exp(x) in fp32 without libm calls, so the GELU/SiLU loops vectorise (calls to glibc's expf/erff do
// not, and erff alone cost more than the router's three small GEMMs): Cephes' expf polynomial (about 1 ulp, like the Sleef u10 exp of ATen's vectorised
// kernels), 2^k applied in two halves so k = 128 and -126 stay normal; inf above ln(FLT_MAX), 0 below
// ln(FLT_MIN), NaN kept.
inline float exp_f32(float x) {
  const float xc = std::min(std::max(x, -87.33654f), 88.72283f);
  const float k = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const float r = (xc - k * 0.693359375f) - k * -2.12194440e-4f;          // x - k ln2, Cody-Waite
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * (r * r) + r + 1.0f;
  const int32_t ki = static_cast<int32_t>(k), k1 = ki >> 1, k2 = ki - k1;
  const float res = y * c10::bit_cast<float>((k1 + 127) << 23) * c10::bit_cast<float>((k2 + 127) << 23);
  return x != x ? x : x > 88.72283f ? INFINITY : x < -87.33654f ? 0.0f : res;
}

// GELU with ATen's vectorised erf (Abramowitz-Stegun 7.1.26, abs error 1.5e-7, the formula of its AVX2
// and AVX-512 kernels) and ATen's operation order: x * 0.5 * (1 + erf(x / sqrt(2))).
inline float gelu_erf(float x) {
  const float z = x * static_cast<float>(M_SQRT1_2);
  const float t = 1.0f / (0.3275911f * std::fabs(z) + 1.0f);
  const float r =
      (((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f;
  const float e = 1.0f - exp_f32(-z * z) * t * r;
  return x * 0.5f * (1.0f + std::copysign(e, z));
}

// SiLU as ATen computes it: x / (1 + exp(-x)).
inline float silu(float x) { return x / (1.0f + exp_f32(-x)); }
inline double silu(double x) { return x / (1.0 + std::exp(-x)); }
// The logistic sigmoid, SiLU's derivative being sigmoid(x) * (1 + x * (1 - sigmoid(x))).
inline float sigmoid(float x) { return 1.0f / (1.0f + exp_f32(-x)); }
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Whether ATen itself has a fast (oneDNN) GEMM for this reduced-precision dtype on this CPU: the CPU
// checks of ATen's mkldnn_bf16_device_check (exactly) and mkldnn_fp16_device_check (approximately).
inline bool aten_has_fast_gemm(at::ScalarType dt) {
  static const bool bf16 =
      cpuinfo_initialize() &&
      ((cpuinfo_has_x86_avx512bw() && cpuinfo_has_x86_avx512vl() && cpuinfo_has_x86_avx512dq()) ||
       cpuinfo_has_arm_bf16());
  static const bool fp16 =
      cpuinfo_initialize() && (cpuinfo_has_x86_avx512fp16() || cpuinfo_has_x86_amx_fp16());
  if (!at::globalContext().userEnabledMkldnn()) return false;
  return dt == at::kBFloat16 ? bf16 : dt == at::kHalf ? fp16 : true;
}

// Whether GEMMs with `rows` rows of param dtype `dt` run upcast to fp32 (see the top of this file);
// `min_rows`: from how many rows converting the weights beats ATen's reduced-precision fallback.
inline bool upcast_gemm(at::ScalarType dt, int64_t rows, int64_t min_rows) {
  if (dt == at::kFloat) return false;
  if (const char* mode = std::getenv("ZAYA_CPU_GEMM")) {
    if (std::strcmp(mode, "native") == 0) return false;
    if (std::strcmp(mode, "upcast") == 0) return true;
  }
  return rows >= min_rows && !aten_has_fast_gemm(dt);
}

// A weight (or bias) in the GEMM dtype `gt`: a view when it already is, else an fp32 copy.
inline at::Tensor as_gemm_dtype(const at::Tensor& t, at::ScalarType gt) {
  return t.scalar_type() == gt ? t : t.to(gt);
}

// Rows of a parallel_for chunk for rows of `row_elems` elements (about 32K elements per chunk).
inline int64_t row_grain(int64_t row_elems) {
  return std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, row_elems));
}

// moe_top1's tokens grouped by class (0..E-1 experts, E skip), shared by the forward and backward CPU
// kernels: class c owns order[offset[c] .. offset[c+1]), tokens ascending within a class (a counting
// sort). `op` names the op in the error for an entry outside 0..E.
struct Grouping {
  std::vector<int64_t> order, offset;
};

template <typename index_t>
Grouping group_tokens(const at::Tensor& expert_index, int64_t E, const char* op) {
  const int64_t T = expert_index.size(0);
  const index_t* idx = expert_index.data_ptr<index_t>();
  Grouping g{std::vector<int64_t>(T), std::vector<int64_t>(E + 2, 0)};
  for (int64_t t = 0; t < T; ++t) {
    const int64_t e = static_cast<int64_t>(idx[t]);
    TORCH_CHECK_VALUE(e >= 0 && e <= E, op, ": expert_index entries must lie in 0..", E, " (", E,
                      " = skip class), got ", e, " at position ", t);
    ++g.offset[e + 1];
  }
  for (int64_t c = 0; c <= E; ++c) g.offset[c + 1] += g.offset[c];
  std::vector<int64_t> next(g.offset.begin(), g.offset.end() - 1);
  for (int64_t t = 0; t < T; ++t) g.order[next[static_cast<int64_t>(idx[t])]++] = t;
  return g;
}

// A contiguous int32/int64 expert_index grouped (see group_tokens).
inline Grouping group_tokens(const at::Tensor& expert_index, int64_t E, const char* op) {
  return AT_DISPATCH_INDEX_TYPES(expert_index.scalar_type(), "zaya_moe_group",
                                 [&] { return group_tokens<index_t>(expert_index, E, op); });
}

}  // namespace zaya::router_moe
