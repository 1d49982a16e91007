// Skinny GEMM (a few rows against a large weight) in bf16/fp16 on CPUs where ATen has no fast
// reduced-precision GEMM (no AVX-512: ATen's bf16 GEMV runs at 1.3-2.7 GB/s of weights on the 2-core AMD
// EPYC VM of bench/results/cpu-amd-epyc, about a third of its copy bandwidth). Decode is weight-bandwidth
// bound, so this kernel streams each weight row once for all rows of x: widen 8 weights to fp32 (AVX2:
// bf16 is a 16-bit shift, fp16 F16C's vcvtph2ps), one FMA per x row, fp32 accumulation, the bias added in
// fp32 and one rounding to the param dtype: the contract of F.linear / at::mm in the param dtype (only the
// summation order inside a dot product differs, as in router_moe_common.h's "upcast" GEMMs).
//
//   y[r, n] = round(sum_k x[r, k] * w[n, k] + bias[n])   r < rows, n < N
//
// x: rows x K with row stride ldx; w: N x K with row stride ldw (unit stride along K); y: rows x N with
// row stride ldy; bias: N fp32 values or null. Threads split N (at::parallel_for). Without AVX2/FMA/F16C
// at run time (has_avx2) a scalar loop computes the same sums.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define ZAYA_GEMV_X86 1
#endif

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace zaya::cpu_gemv {

// Most rows the skinny kernel is used for: above, the weights' conversion to fp32 plus ATen's sgemm
// (each caller's "upcast" path) wins, since the kernel re-reads the weights for every 4 rows.
constexpr int64_t kMaxRows = 8;

template <typename T>
inline float widen(T v) {
  return static_cast<float>(v);
}

#ifdef ZAYA_GEMV_X86
template <typename T>
__attribute__((target("avx2,fma,f16c"))) inline __m256 load8(const T* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else {
    return _mm256_cvtph_ps(h);
  }
}

__attribute__((target("avx2,fma"))) inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// R rows of x (fp32, packed R x K) against NC consecutive weight rows n0 .. n0+NC-1: sums[r][c].
template <typename T, int R, int NC>
__attribute__((target("avx2,fma,f16c"))) inline void block_avx2(const float* xf, int64_t K, const T* w, int64_t ldw,
                                                               float (*sums)[NC]) {
  __m256 acc[R][NC];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NC; ++c) acc[r][c] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 wv[NC];
    for (int c = 0; c < NC; ++c) wv[c] = load8(w + c * ldw + k);
    for (int r = 0; r < R; ++r) {
      const __m256 xv = _mm256_loadu_ps(xf + r * K + k);
      for (int c = 0; c < NC; ++c) acc[r][c] = _mm256_fmadd_ps(wv[c], xv, acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NC; ++c) {
      float s = hsum(acc[r][c]);
      for (int64_t kk = k; kk < K; ++kk) s += xf[r * K + kk] * widen(w[c * ldw + kk]);
      sums[r][c] = s;
    }
}

// The CPU's own answer (CPUID through the compiler's runtime), not cpuinfo's: in this extension
// module cpuinfo_has_x86_avx2() read false on an AVX2 CPU (the AMD EPYC VM of bench/results/cpu-amd-epyc,
// where torch itself reports AVX2), so every GEMV ran the scalar loop below at ~2 GB/s of weights per
// CPU-second instead of the ~15 GB/s this kernel streams (ATen's own bf16 GEMV: ~9).
inline bool has_avx2() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }();
  return ok;
}
#endif

// Columns [n0, n1) of R rows: sums in fp32, then bias, rounding and the store.
template <typename T, int R>
inline void columns(const float* xf, int64_t K, const T* w, int64_t ldw, const float* bias, T* y, int64_t ldy,
                    int64_t n0, int64_t n1) {
  constexpr int NC = R <= 2 ? 4 : 2;
  float sums[R][NC];
  auto store = [&](int64_t n, int nc) {
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < nc; ++c) y[r * ldy + n + c] = static_cast<T>(sums[r][c] + (bias ? bias[n + c] : 0.0f));
  };
  int64_t n = n0;
#ifdef ZAYA_GEMV_X86
  if (has_avx2()) {
    for (; n + NC <= n1; n += NC) {
      block_avx2<T, R, NC>(xf, K, w + n * ldw, ldw, sums);
      store(n, NC);
    }
  }
#endif
  for (; n < n1; ++n) {  // the tail (and every column without AVX2)
    for (int r = 0; r < R; ++r) {
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k) s += xf[r * K + k] * widen(w[n * ldw + k]);
      sums[r][0] = s;
    }
    store(n, 1);
  }
}

// y = x @ w^T (+ bias) for rows <= kMaxRows (any rows work; callers use it for few).
template <typename T>
void gemv(const T* x, int64_t ldx, int64_t rows, const T* w, int64_t ldw, int64_t N, int64_t K, const float* bias,
          T* y, int64_t ldy) {
  if (rows <= 0 || N <= 0) return;
  std::vector<float> xf(static_cast<size_t>(rows * K));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < K; ++k) xf[r * K + k] = widen(x[r * ldx + k]);
  // ~64K weights per task: big enough to amortise the fork, small enough to balance 2-16 threads.
  const int64_t grain = std::max<int64_t>(8, (int64_t{1} << 16) / std::max<int64_t>(1, K));
  at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
    for (int64_t r0 = 0; r0 < rows;) {
      const int64_t left = rows - r0;
      const float* xr = xf.data() + r0 * K;
      T* yr = y + r0 * ldy;
      if (left >= 4) {
        columns<T, 4>(xr, K, w, ldw, bias, yr, ldy, n0, n1);
        r0 += 4;
      } else if (left >= 2) {
        columns<T, 2>(xr, K, w, ldw, bias, yr, ldy, n0, n1);
        r0 += 2;
      } else {
        columns<T, 1>(xr, K, w, ldw, bias, yr, ldy, n0, n1);
        r0 += 1;
      }
    }
  });
}

}  // namespace zaya::cpu_gemv
