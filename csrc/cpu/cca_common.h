// Helpers shared by the CPU CCA kernels (cca_qkv.cpp, cca_attention.cpp): an fp32 GEMM, 8-wide
// float vectors with a fast exp2, dtype conversion and host-side reads of small index tensors.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cca_checks.h"

// torch's CPU build exports its BLAS's Fortran sgemm_ (MKL, or OpenBLAS through its dependency).
// Declared weak so that a torch without it still loads us; gemm_f32 then falls back to at::mm.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc) __attribute__((weak));

// Hot loops are compiled twice, for AVX2+FMA (x86-64-v3) and for the baseline, and picked at load
// time: the build itself targets the baseline ISA.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ZAYA_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define ZAYA_CLONES
#endif
#define ZAYA_INLINE inline __attribute__((always_inline))

namespace zaya::cpu {

// Row-major C[M, N] = A[M, K] * op(B) + beta * C, with op(B) = B[K, N], or B[N, K]^T if trans_b.
// Single-threaded when called inside a parallel region (BLAS does not nest), so callers split the
// work. Integer arguments go through zero-extended int64 slots: an LP64 BLAS reads the low 32 bits,
// an ILP64 one all 64, and both see the same non-negative value.
inline void gemm_f32(bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                     const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (sgemm_ != nullptr) {
    // Column-major view: C^T[N, M] = op(B)^T A^T.
    int64_t m = N, n = M, k = K, la = ldb, lb = lda, lc = ldc;
    const float one = 1.f;
    sgemm_(trans_b ? "T" : "N", "N", reinterpret_cast<int*>(&m), reinterpret_cast<int*>(&n),
           reinterpret_cast<int*>(&k), &one, B, reinterpret_cast<int*>(&la), A, reinterpret_cast<int*>(&lb),
           &beta, C, reinterpret_cast<int*>(&lc));
    return;
  }
  auto opt = at::TensorOptions().dtype(at::kFloat);
  auto a = at::from_blob(const_cast<float*>(A), {M, K}, {lda, 1}, opt);
  auto b = trans_b ? at::from_blob(const_cast<float*>(B), {N, K}, {ldb, 1}, opt).t()
                   : at::from_blob(const_cast<float*>(B), {K, N}, {ldb, 1}, opt);
  auto c = at::from_blob(C, {M, N}, {ldc, 1}, opt);
  if (beta == 0.f) {
    c.copy_(at::mm(a, b));
  } else {
    c.mul_(beta).add_(at::mm(a, b));
  }
}

// fp32 -> bf16 bits, round to nearest even, NaN -> the canonical 0x7FC0 as in c10. Branch-free (a
// mask instead of c10's NaN test) so that loops over it vectorise.
ZAYA_INLINE uint32_t bf16_round_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  const uint32_t nan = 0u - static_cast<uint32_t>((u & 0x7FFFFFFFu) > 0x7F800000u);  // all ones for NaN
  return (r & ~nan) | (0x7FC00000u & nan);
}

// fp32 -> T (round to nearest even).
template <typename T>
ZAYA_INLINE T from_f(float x) {
  return static_cast<T>(x);
}
template <>
ZAYA_INLINE c10::BFloat16 from_f<c10::BFloat16>(float x) {
  return c10::BFloat16(static_cast<uint16_t>(bf16_round_bits(x) >> 16), c10::BFloat16::from_bits());
}

// Round-trip through the storage dtype: the reference's rounding points (identity for fp32).
template <typename T>
ZAYA_INLINE float rnd(float x) {
  return static_cast<float>(static_cast<T>(x));
}
template <>
ZAYA_INLINE float rnd<float>(float x) {
  return x;
}
template <>
ZAYA_INLINE float rnd<c10::BFloat16>(float x) {
  const uint32_t u = bf16_round_bits(x);
  std::memcpy(&x, &u, 4);
  return x;
}

template <typename T>
ZAYA_INLINE float to_f(T x) {
  return static_cast<float>(x);
}
// bf16 -> fp32 is a shift; written on the bits so that loops over it vectorise.
template <>
ZAYA_INLINE float to_f<c10::BFloat16>(c10::BFloat16 x) {
  uint32_t u = static_cast<uint32_t>(x.x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// n values of a strided row (stride in elements) to fp32, times `mul`.
template <typename T>
ZAYA_CLONES void row_to_f32(const T* src, int64_t stride, int64_t n, float mul, float* dst) {
  if (stride == 1) {
    for (int64_t d = 0; d < n; ++d) dst[d] = to_f(src[d]) * mul;
  } else {
    for (int64_t d = 0; d < n; ++d) dst[d] = to_f(src[d * stride]) * mul;
  }
}

// --- 8-wide fp32 vectors (GCC/Clang vector extensions: AVX2 in the x86-64-v3 clones) ---------------
namespace vec {

// Only always-inlined helpers pass these by value, so the ABI note about AVX vectors is moot.
#pragma GCC diagnostic ignored "-Wpsabi"

typedef float f8 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(32)));

ZAYA_INLINE f8 load(const float* p) {
  f8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
ZAYA_INLINE void store(float* p, f8 v) { std::memcpy(p, &v, sizeof v); }
ZAYA_INLINE f8 splat(float x) { return f8{x, x, x, x, x, x, x, x}; }
// Maxima that propagate NaN (NaN when either operand is), so that a NaN score reaches its softmax row.
ZAYA_INLINE float max_nan(float a, float b) { return a > b || a != a ? a : b; }
ZAYA_INLINE f8 vmax(f8 a, f8 b) { return (a > b) | (a != a) ? a : b; }
ZAYA_INLINE float hmax(f8 v) {
  float r = v[0];
  for (int i = 1; i < 8; ++i) r = max_nan(r, v[i]);
  return r;
}
ZAYA_INLINE float hsum(f8 v) {
  float r = 0.f;
  for (int i = 0; i < 8; ++i) r += v[i];
  return r;
}

// 2^x, relative error ~2e-7 (Cephes exp2f polynomial on [-0.5, 0.5]); 0 for x <= -127 and -inf.
ZAYA_INLINE f8 exp2(f8 x) {
  const f8 lo = splat(-127.f);
  x = x < lo ? lo : x;
  x = x > splat(127.f) ? splat(127.f) : x;
  // Adding 1.5 * 2^23 rounds x to an integer n held in the low mantissa bits of t.
  const f8 magic = splat(12582912.f);
  const f8 t = x + magic;
  const f8 f = x - (t - magic);  // in [-0.5, 0.5]
  f8 p = splat(1.535336188319500e-4f);
  p = p * f + splat(1.339887440266574e-3f);
  p = p * f + splat(9.618437357674640e-3f);
  p = p * f + splat(5.550332471162809e-2f);
  p = p * f + splat(2.402264791363012e-1f);
  p = p * f + splat(6.931472028550421e-1f);
  p = p * f + splat(1.f);
  const i8 e = (((i8)t - 0x4B400000) + 127) << 23;  // 2^n (0 for n = -127); vector casts keep the bits
  return p * (f8)e;
}

}  // namespace vec

// f.template operator()<T>() for the param dtype T (fp32, bf16 or fp16; checked by the caller).
template <typename F>
void dispatch_float(at::ScalarType dt, F&& f) {
  switch (dt) {
    case at::kFloat:
      f.template operator()<float>();
      break;
    case at::kBFloat16:
      f.template operator()<c10::BFloat16>();
      break;
    case at::kHalf:
      f.template operator()<c10::Half>();
      break;
    default:
      TORCH_CHECK_TYPE(false, "unsupported dtype ", dt);
  }
}

// --- host-side index tensors ---------------------------------------------------------------------

using zaya::checks::host_ints;

inline void check_cpu(const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), name, " must be a CPU tensor, got ", t.device());
}

inline void check_index(const char* name, const at::Tensor& t, at::ScalarType dt, int64_t ndim) {
  check_cpu(name, t);
  checks::check_index_tensor(name, t, dt, ndim);
}

inline void check_float(const char* name, const at::Tensor& t, at::ScalarType dt, at::IntArrayRef shape) {
  check_cpu(name, t);
  TORCH_CHECK_TYPE(t.scalar_type() == dt, name, " must have dtype ", dt, " (like the first input), got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.sizes() == shape, name, " must have shape ", shape, ", got ", t.sizes());
}

// Validated cu_seqlens values of a CPU tensor.
inline std::vector<int64_t> checked_cu_seqlens(const char* name, const at::Tensor& cu_t, int64_t T) {
  check_cpu(name, cu_t);
  return checks::checked_cu_seqlens(name, cu_t, T);
}

}  // namespace zaya::cpu
