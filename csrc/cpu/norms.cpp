// CPU kernels of zaya::rms_norm and zaya::residual_scale_rmsnorm (spec steps 1, 10-11, 14 and the
// final norm). Semantics and rounding points: python/zaya_ops/ops.py and zaya_ops.reference.
//
// One pass over memory per row: the row (a few KB) stays in L1/L2 between computing it (and its sum of
// squares, fp32) and normalising it. Rows are split over at::parallel_for. Two builds of the row
// kernels: portable loops that GCC vectorises for the baseline ISA (`omp simd`), and explicit AVX2+F16C
// code, picked at run time on x86-64 (ZAYA_CPU_ISA=default forces the portable one). No FMA is enabled
// anywhere in this file, so `a * b + c` is never contracted: fp32 results match PyTorch's separate
// kernels bit for bit, and bf16/fp16 rounding is round-to-nearest-even exactly as c10::BFloat16 /
// c10::Half (and F16C). Only the summation order of the mean square differs from PyTorch's.
//
// float64 (every float argument float64; portable loops only) computes in double throughout: it
// exists so that torch.autograd.gradcheck can hold the backward kernels to the forward ones.
//
// Backward kernels (zaya::rms_norm_backward, zaya::residual_scale_rmsnorm_backward) follow autograd of
// zaya_ops.reference: every cast in the forward is a cast of the gradient in the backward, and
// products of param-dtype tensors are rounded to the param dtype where autograd's would be. They save
// nothing from the forward but its inputs: the per-row rstd is recomputed from x (the row is read
// anyway and stays in cache). Row work is split over at::parallel_for; the [H] parameter gradients
// are reduced in fixed blocks of rows and then block by block in order, so they do not depend on the
// thread count (deterministic). Rows accumulate in fp32 (double for float64), the parameter gradients
// over rows in double (a sum over T rows: fp32's error would grow with T, past the reference's).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#endif

#if defined(__GNUC__) && !defined(__clang__) && !defined(__NVCC__)
#define ZAYA_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ZAYA_ALWAYS_INLINE inline
#endif

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__clang__)
#define ZAYA_X86_MULTIVERSION 1
#else
#define ZAYA_X86_MULTIVERSION 0
#endif

#include "norm_checks.h"

namespace {

using namespace zaya::checks;  // NOLINT: the shared argument checks

// ------------------------------------------------------------------------------------------------
// Element types: load to fp32, round fp32 to the type (returned as the fp32 value of the rounded
// number), store. Written branch-free so that the loops vectorise.
// ------------------------------------------------------------------------------------------------

struct F64 {
  using T = double;
  using C = double;  // compute type
  static ZAYA_ALWAYS_INLINE double load(T v) { return v; }
  static ZAYA_ALWAYS_INLINE double round(double f) { return f; }
  static ZAYA_ALWAYS_INLINE T store(double f) { return f; }
};

struct F32 {
  using T = float;
  using C = float;
  static ZAYA_ALWAYS_INLINE float load(T v) { return v; }
  static ZAYA_ALWAYS_INLINE float round(float f) { return f; }
  static ZAYA_ALWAYS_INLINE T store(float f) { return f; }
};

struct BF16 {
  using T = uint16_t;  // bits of a c10::BFloat16
  using C = float;
  static ZAYA_ALWAYS_INLINE float load(T v) { return std::bit_cast<float>(static_cast<uint32_t>(v) << 16); }
  // c10::detail::round_to_nearest_even, keeping the result in the high half of an fp32.
  static ZAYA_ALWAYS_INLINE uint32_t rne_bits(float f) {
    const uint32_t u = std::bit_cast<uint32_t>(f);
    const uint32_t r = (u + UINT32_C(0x7FFF) + ((u >> 16) & 1u)) & UINT32_C(0xFFFF0000);
    const uint32_t is_nan = 0u - static_cast<uint32_t>(f != f);  // a mask, not `?:` (see F16::load)
    return (UINT32_C(0x7FC00000) & is_nan) | (r & ~is_nan);
  }
  static ZAYA_ALWAYS_INLINE float round(float f) { return std::bit_cast<float>(rne_bits(f)); }
  static ZAYA_ALWAYS_INLINE T store(float f) { return static_cast<T>(rne_bits(f) >> 16); }
};

struct F16 {
  using T = uint16_t;  // bits of a c10::Half
  using C = float;
  // c10::detail::fp16_ieee_to_fp32_value / fp16_ieee_from_fp32_value (exact widening; IEEE
  // round-to-nearest-even with denormals, inf and NaN), restated with std::bit_cast, a max and masks in
  // place of memcpy, `if` and `?:`, so that GCC inlines and vectorises the loops.
  static ZAYA_ALWAYS_INLINE float load(T v) {
    const uint32_t w = static_cast<uint32_t>(v) << 16;
    const uint32_t sign = w & UINT32_C(0x80000000);
    const uint32_t two_w = w + w;
    const float exp_scale = std::bit_cast<float>(UINT32_C(15) << 23);  // 0x1.0p-112f
    const float normalized = std::bit_cast<float>((two_w >> 4) + (UINT32_C(0xE0) << 23)) * exp_scale;
    const float denormalized = std::bit_cast<float>((two_w >> 17) | (UINT32_C(126) << 23)) - 0.5f;
    // (With `?:`, GCC sinks each float op into its arm and, under -ftrapping-math, keeps the branch.)
    const uint32_t is_denorm = 0u - static_cast<uint32_t>(two_w < (UINT32_C(1) << 27));
    const uint32_t mag = (std::bit_cast<uint32_t>(denormalized) & is_denorm) |
                         (std::bit_cast<uint32_t>(normalized) & ~is_denorm);
    return std::bit_cast<float>(sign | mag);
  }
  static ZAYA_ALWAYS_INLINE T store(float f) {
    const float scale_to_inf = std::bit_cast<float>(UINT32_C(239) << 23);   // 0x1.0p+112f
    const float scale_to_zero = std::bit_cast<float>(UINT32_C(17) << 23);   // 0x1.0p-110f
    float base = (std::fabs(f) * scale_to_inf) * scale_to_zero;
    const uint32_t w = std::bit_cast<uint32_t>(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & UINT32_C(0x80000000);
    const uint32_t bias = std::max<uint32_t>(shl1_w & UINT32_C(0xFF000000), UINT32_C(0x71000000));
    base = std::bit_cast<float>((bias >> 1) + UINT32_C(0x07800000)) + base;
    const uint32_t bits = std::bit_cast<uint32_t>(base);
    const uint32_t exp_bits = (bits >> 13) & UINT32_C(0x00007C00);
    const uint32_t mantissa_bits = bits & UINT32_C(0x00000FFF);
    const uint32_t nonsign = exp_bits + mantissa_bits;
    const uint32_t is_nan = 0u - static_cast<uint32_t>(shl1_w > UINT32_C(0xFF000000));
    return static_cast<T>((sign >> 16) | (UINT32_C(0x7E00) & is_nan) | (nonsign & ~is_nan));
  }
  static ZAYA_ALWAYS_INLINE float round(float f) { return load(store(f)); }
};

// ------------------------------------------------------------------------------------------------
// Row kernels: rows [t0, t1) of one op. The portable ones first.
// ------------------------------------------------------------------------------------------------

struct RmsArgs {
  const void* x;        // [T, H] rows x_stride apart, unit stride within a row
  int64_t x_stride;
  const void* w;        // [H] compute-type copy of the weight (exact: param dtypes widen exactly)
  void* y;              // [T, H] contiguous, weight dtype
  int64_t H;
  float eps;
};

struct RsrArgs {
  const void* h;        // [T, H] param dtype, rows h_stride apart
  int64_t h_stride;
  const void* r;        // [T, H] fp32 (float64 with float64 params), rows r_stride apart
  int64_t r_stride;
  const void* vecs;     // [5, H] compute type: h_bias, h_scale, r_bias, r_scale, norm_weight
  void* new_r;          // [T, H] contiguous, r's dtype
  void* y;              // [T, H] contiguous, param dtype
  int64_t H;
  float eps;
};

// y = round_p(w * round_p(v * rsqrt(mean(v^2) + eps))), v = round_p(x)
template <class X, class P>
void rms_rows_base(const RmsArgs& a, int64_t t0, int64_t t1) {
  using XT = typename X::T;
  using PT = typename P::T;
  using C = typename P::C;
  const int64_t H = a.H;
  const C* __restrict w = static_cast<const C*>(a.w);
  for (int64_t t = t0; t < t1; ++t) {
    const XT* __restrict x = static_cast<const XT*>(a.x) + t * a.x_stride;
    PT* __restrict y = static_cast<PT*>(a.y) + t * H;
    C ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int64_t j = 0; j < H; ++j) {
      const C v = P::round(X::load(x[j]));
      ss += v * v;
    }
    const C inv = C(1) / std::sqrt(ss / static_cast<C>(H) + static_cast<C>(a.eps));
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const C v = P::round(X::load(x[j]));
      y[j] = P::store(w[j] * P::round(v * inv));
    }
  }
}

// new_r = fp32(round_p(round_p(h + hb) * hs)) + (r + rb) * rs;  y = rms_norm(new_r)
template <class P>
void rsr_rows_base(const RsrArgs& a, int64_t t0, int64_t t1) {
  using PT = typename P::T;
  using C = typename P::C;
  const int64_t H = a.H;
  const C* __restrict hb = static_cast<const C*>(a.vecs);
  const C* __restrict hs = hb + H;
  const C* __restrict rb = hb + 2 * H;
  const C* __restrict rs = hb + 3 * H;
  const C* __restrict w = hb + 4 * H;
  for (int64_t t = t0; t < t1; ++t) {
    const PT* __restrict h = static_cast<const PT*>(a.h) + t * a.h_stride;
    const C* __restrict r = static_cast<const C*>(a.r) + t * a.r_stride;
    C* __restrict o = static_cast<C*>(a.new_r) + t * H;
    PT* __restrict y = static_cast<PT*>(a.y) + t * H;
    C ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int64_t j = 0; j < H; ++j) {
      const C hv = P::round(P::round(P::load(h[j]) + hb[j]) * hs[j]);
      const C rv = (r[j] + rb[j]) * rs[j];
      const C nr = hv + rv;
      o[j] = nr;
      const C v = P::round(nr);
      ss += v * v;
    }
    const C inv = C(1) / std::sqrt(ss / static_cast<C>(H) + static_cast<C>(a.eps));
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const C v = P::round(o[j]);
      y[j] = P::store(w[j] * P::round(v * inv));
    }
  }
}

#if ZAYA_X86_MULTIVERSION
// ------------------------------------------------------------------------------------------------
// AVX2 + F16C row kernels: explicit 8-lane code (GCC cannot vectorise fp16 conversions into
// vcvtph2ps/vcvtps2ph by itself), the same arithmetic as the portable kernels above, elementwise
// bit-identical to them; only the order of the sum of squares differs. Tails use the scalar traits.
// ------------------------------------------------------------------------------------------------
#pragma GCC push_options
#pragma GCC target("avx2,f16c")

template <class E>
struct V8;

template <>
struct V8<F32> {
  static ZAYA_ALWAYS_INLINE __m256 load(const float* p) { return _mm256_loadu_ps(p); }
  static ZAYA_ALWAYS_INLINE __m256 round(__m256 v) { return v; }
  static ZAYA_ALWAYS_INLINE void store(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
};

template <>
struct V8<BF16> {
  static ZAYA_ALWAYS_INLINE __m256 load(const uint16_t* p) {
    const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
  }
  static ZAYA_ALWAYS_INLINE __m256i rne_bits(__m256 f) {  // BF16::rne_bits, 8 lanes
    const __m256i u = _mm256_castps_si256(f);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF)));
    r = _mm256_and_si256(r, _mm256_set1_epi32(static_cast<int>(0xFFFF0000u)));
    const __m256 nan = _mm256_cmp_ps(f, f, _CMP_UNORD_Q);
    return _mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(_mm256_set1_epi32(0x7FC00000)), nan));
  }
  static ZAYA_ALWAYS_INLINE __m256 round(__m256 f) { return _mm256_castsi256_ps(rne_bits(f)); }
  static ZAYA_ALWAYS_INLINE void store(uint16_t* p, __m256 f) {
    const __m256i b = _mm256_srli_epi32(rne_bits(f), 16);
    const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
  }
};

template <>
struct V8<F16> {
  static constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  static ZAYA_ALWAYS_INLINE __m256 load(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static ZAYA_ALWAYS_INLINE __m256 round(__m256 f) { return _mm256_cvtph_ps(_mm256_cvtps_ph(f, kRne)); }
  static ZAYA_ALWAYS_INLINE void store(uint16_t* p, __m256 f) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(f, kRne));
  }
};

ZAYA_ALWAYS_INLINE float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <class X, class P>
void rms_rows_avx2(const RmsArgs& a, int64_t t0, int64_t t1) {
  using XT = typename X::T;
  using PT = typename P::T;
  const int64_t H = a.H;
  const float* w = static_cast<const float*>(a.w);
  for (int64_t t = t0; t < t1; ++t) {
    const XT* x = static_cast<const XT*>(a.x) + t * a.x_stride;
    PT* y = static_cast<PT*>(a.y) + t * H;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= H; j += 16) {
      const __m256 v0 = V8<P>::round(V8<X>::load(x + j));
      const __m256 v1 = V8<P>::round(V8<X>::load(x + j + 8));
      acc0 = _mm256_add_ps(acc0, _mm256_mul_ps(v0, v0));
      acc1 = _mm256_add_ps(acc1, _mm256_mul_ps(v1, v1));
    }
    for (; j + 8 <= H; j += 8) {
      const __m256 v0 = V8<P>::round(V8<X>::load(x + j));
      acc0 = _mm256_add_ps(acc0, _mm256_mul_ps(v0, v0));
    }
    float ss = hsum8(_mm256_add_ps(acc0, acc1));
    for (; j < H; ++j) {
      const float v = P::round(X::load(x[j]));
      ss += v * v;
    }
    const float inv = 1.f / std::sqrt(ss / static_cast<float>(H) + a.eps);
    const __m256 vinv = _mm256_set1_ps(inv);
    j = 0;
    for (; j + 8 <= H; j += 8) {
      const __m256 v = V8<P>::round(V8<X>::load(x + j));
      V8<P>::store(y + j, _mm256_mul_ps(_mm256_loadu_ps(w + j), V8<P>::round(_mm256_mul_ps(v, vinv))));
    }
    for (; j < H; ++j) {
      const float v = P::round(X::load(x[j]));
      y[j] = P::store(w[j] * P::round(v * inv));
    }
  }
}

template <class P>
void rsr_rows_avx2(const RsrArgs& a, int64_t t0, int64_t t1) {
  using PT = typename P::T;
  const int64_t H = a.H;
  const float* hb = static_cast<const float*>(a.vecs);
  const float* hs = hb + H;
  const float* rb = hb + 2 * H;
  const float* rs = hb + 3 * H;
  const float* w = hb + 4 * H;
  for (int64_t t = t0; t < t1; ++t) {
    const PT* h = static_cast<const PT*>(a.h) + t * a.h_stride;
    const float* r = static_cast<const float*>(a.r) + t * a.r_stride;
    float* o = static_cast<float*>(a.new_r) + t * H;
    PT* y = static_cast<PT*>(a.y) + t * H;
    __m256 acc = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= H; j += 8) {
      const __m256 hv0 = V8<P>::round(_mm256_add_ps(V8<P>::load(h + j), _mm256_loadu_ps(hb + j)));
      const __m256 hv = V8<P>::round(_mm256_mul_ps(hv0, _mm256_loadu_ps(hs + j)));
      const __m256 rv = _mm256_mul_ps(_mm256_add_ps(_mm256_loadu_ps(r + j), _mm256_loadu_ps(rb + j)),
                                      _mm256_loadu_ps(rs + j));
      const __m256 nr = _mm256_add_ps(hv, rv);
      _mm256_storeu_ps(o + j, nr);
      const __m256 v = V8<P>::round(nr);
      acc = _mm256_add_ps(acc, _mm256_mul_ps(v, v));
    }
    float ss = hsum8(acc);
    for (; j < H; ++j) {
      const float hv = P::round(P::round(P::load(h[j]) + hb[j]) * hs[j]);
      const float nr = hv + (r[j] + rb[j]) * rs[j];
      o[j] = nr;
      const float v = P::round(nr);
      ss += v * v;
    }
    const float inv = 1.f / std::sqrt(ss / static_cast<float>(H) + a.eps);
    const __m256 vinv = _mm256_set1_ps(inv);
    j = 0;
    for (; j + 8 <= H; j += 8) {
      const __m256 v = V8<P>::round(_mm256_loadu_ps(o + j));
      V8<P>::store(y + j, _mm256_mul_ps(_mm256_loadu_ps(w + j), V8<P>::round(_mm256_mul_ps(v, vinv))));
    }
    for (; j < H; ++j) {
      const float v = P::round(o[j]);
      y[j] = P::store(w[j] * P::round(v * inv));
    }
  }
}

#pragma GCC pop_options
#endif

bool use_avx2() {
#if ZAYA_X86_MULTIVERSION
  static const bool ok = [] {
    const char* env = std::getenv("ZAYA_CPU_ISA");
    if (env != nullptr && std::string(env) == "default") return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  }();
  return ok;
#else
  return false;
#endif
}

template <class X, class P>
void (*pick_rms())(const RmsArgs&, int64_t, int64_t) {
#if ZAYA_X86_MULTIVERSION
  if constexpr (!std::is_same_v<X, F64> && !std::is_same_v<P, F64>) {
    if (use_avx2()) return &rms_rows_avx2<X, P>;
  }
#endif
  return &rms_rows_base<X, P>;
}

template <class P>
void (*pick_rsr())(const RsrArgs&, int64_t, int64_t) {
#if ZAYA_X86_MULTIVERSION
  if constexpr (!std::is_same_v<P, F64>) {
    if (use_avx2()) return &rsr_rows_avx2<P>;
  }
#endif
  return &rsr_rows_base<P>;
}

// Rows per task: enough work (~32K elements) to be worth a thread.
int64_t grain_rows(int64_t H) {
  constexpr int64_t kElems = 32 * 1024;
  return std::max<int64_t>(1, kElems / std::max<int64_t>(H, 1));
}

// ------------------------------------------------------------------------------------------------
// Argument checks (messages name the argument, like python/zaya_ops/_checks.py)
// ------------------------------------------------------------------------------------------------

// Rows may have any stride; within a row elements must be adjacent (else copy).
at::Tensor unit_inner_stride(const at::Tensor& t) {
  if (t.size(1) <= 1 || t.stride(1) == 1) return t;
  return t.contiguous();
}

// A [H] parameter in the compute type C (exact widening), into dst.
template <class C>
void widen_vector(const at::Tensor& v, C* dst) {
  const int64_t H = v.size(0);
  const int64_t s = v.stride(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, v.scalar_type(), "zaya_widen_vector", [&] {
    const scalar_t* p = v.const_data_ptr<scalar_t>();
    for (int64_t j = 0; j < H; ++j) dst[j] = static_cast<C>(p[j * s]);
  });
}

template <class Fn>
void dispatch_param(at::ScalarType s, Fn&& fn) {
  switch (s) {
    case at::kFloat: fn(F32{}); break;
    case at::kBFloat16: fn(BF16{}); break;
    case at::kHalf: fn(F16{}); break;
    case at::kDouble: fn(F64{}); break;
    default: TORCH_CHECK_TYPE(false, "zaya norms: unsupported dtype ", dtype_name(s));
  }
}

// ------------------------------------------------------------------------------------------------
// Ops
// ------------------------------------------------------------------------------------------------

// Calls fn(X{}, P{}) for x's and the param's dtypes (the arguments were checked: float64 only with
// float64).
template <class Fn>
void dispatch_x_param(at::ScalarType xs, at::ScalarType ps, Fn&& fn) {
  dispatch_param(xs, [&](auto xt) {
    using X = decltype(xt);
    dispatch_param(ps, [&](auto pt) {
      using P = decltype(pt);
      if constexpr (std::is_same_v<X, F64> == std::is_same_v<P, F64>) fn(xt, pt);
    });
  });
}

at::Tensor rms_norm_cpu(const at::Tensor& x_in, const at::Tensor& weight, double eps) {
  check_cpu("zaya::rms_norm", "x", x_in);
  check_rms_norm_args(x_in, weight, eps, /*allow_f64=*/true);
  const int64_t T = x_in.size(0);
  const int64_t H = x_in.size(1);

  at::Tensor y = at::empty({T, H}, x_in.options().dtype(weight.scalar_type()));
  if (T == 0 || H == 0) return y;
  const at::Tensor x = unit_inner_stride(x_in);

  dispatch_x_param(x.scalar_type(), weight.scalar_type(), [&](auto xt, auto pt) {
    using X = decltype(xt);
    using P = decltype(pt);
    using C = typename P::C;
    std::vector<C> w(H);
    widen_vector(weight, w.data());
    RmsArgs a{x.const_data_ptr(), x.stride(0), w.data(), y.mutable_data_ptr(), H, static_cast<float>(eps)};
    auto fn = pick_rms<X, P>();
    at::parallel_for(0, T, grain_rows(H), [&](int64_t t0, int64_t t1) { fn(a, t0, t1); });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> residual_scale_rmsnorm_cpu(
    const at::Tensor& h_in, const at::Tensor& residual_in, const at::Tensor& h_bias,
    const at::Tensor& h_scale, const at::Tensor& r_bias, const at::Tensor& r_scale,
    const at::Tensor& norm_weight, double eps) {
  check_cpu("zaya::residual_scale_rmsnorm", "h", h_in);
  check_residual_scale_rmsnorm_args(h_in, residual_in, h_bias, h_scale, r_bias, r_scale, norm_weight, eps,
                                    /*allow_f64=*/true);
  const int64_t T = h_in.size(0);
  const int64_t H = h_in.size(1);

  at::Tensor new_r = at::empty({T, H}, residual_in.options());
  at::Tensor y = at::empty({T, H}, h_in.options());
  if (T == 0 || H == 0) return {new_r, y};
  const at::Tensor h = unit_inner_stride(h_in);
  const at::Tensor residual = unit_inner_stride(residual_in);

  dispatch_param(h_in.scalar_type(), [&](auto pt) {
    using P = decltype(pt);
    using C = typename P::C;
    std::vector<C> vf(5 * H);
    const at::Tensor* vecs[5] = {&h_bias, &h_scale, &r_bias, &r_scale, &norm_weight};
    for (int i = 0; i < 5; ++i) widen_vector(*vecs[i], vf.data() + i * H);
    RsrArgs a{h.const_data_ptr(), h.stride(0), residual.const_data_ptr(), residual.stride(0), vf.data(),
              new_r.mutable_data_ptr(), y.mutable_data_ptr(), H, static_cast<float>(eps)};
    auto fn = pick_rsr<P>();
    at::parallel_for(0, T, grain_rows(H), [&](int64_t t0, int64_t t1) { fn(a, t0, t1); });
  });
  return {new_r, y};
}

// ------------------------------------------------------------------------------------------------
// Backward. Per row, with v = round_p(x) (in C), inv = rsqrt(mean(v^2) + eps), n = round_p(v * inv),
// gy the gradient of y = w * n (param dtype), autograd of the reference gives
//   gn = round_p(gy * w)                       (mul's backward in the param dtype; n's cast: identity)
//   gv = gn * inv - v * inv^3 * sum(gn * v) / H (fp32: the normalisation, rsqrt and mean of squares)
//   gx = round_x(round_p(gv))                  (the casts x -> param -> fp32, backwards)
//   gw = round_p(sum over rows of round_p(gy * n))
// ------------------------------------------------------------------------------------------------

// Fixed row blocks for the [H] parameter gradients: partial sums per block, then summed block by
// block in order, so the result does not depend on how many threads ran.
struct RowBlocks {
  int64_t rows;    // rows per block
  int64_t blocks;
};

RowBlocks row_blocks(int64_t T, int64_t H) {
  const int64_t rows = grain_rows(H);
  return {rows, (T + rows - 1) / rows};
}

// out[k] = round_p(sum over blocks b of partial[b][k]) for k < n, in block order; out is P's dtype.
template <class P>
void reduce_blocks(const double* partial, int64_t blocks, int64_t n, typename P::T* out) {
  using C = typename P::C;
  at::parallel_for(0, n, 4096, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      double acc = 0;
      for (int64_t b = 0; b < blocks; ++b) acc += partial[b * n + k];
      out[k] = P::store(static_cast<C>(acc));
    }
  });
}

// The norm's part of one row's backward, for v(j) (the row rounded to the param dtype) and gn(j) =
// round_p(gy * w): {inv, coef} with gv = gn * inv + v * coef (the gradient before the casts back).
template <class C, class VFn, class GFn>
ZAYA_ALWAYS_INLINE std::pair<C, C> norm_bwd_row_stats(int64_t H, float eps, VFn v_of, GFn gn_of) {
  C ss = 0, dot = 0;
#pragma omp simd reduction(+ : ss, dot)
  for (int64_t j = 0; j < H; ++j) {
    const C v = v_of(j);
    ss += v * v;
    dot += gn_of(j) * v;
  }
  const C inv = C(1) / std::sqrt(ss / static_cast<C>(H) + static_cast<C>(eps));
  return {inv, -(dot / static_cast<C>(H)) * (inv * inv * inv)};
}

struct RmsBwdArgs {
  const void* gy;     // [T, H] param dtype, contiguous
  const void* x;      // [T, H] x dtype, rows x_stride apart
  int64_t x_stride;
  const void* w;      // [H] compute type
  void* gx;           // [T, H] x dtype, contiguous
  int64_t H;
  float eps;
};

// Row t: writes gx, adds round_p(gy * n) into gw_acc [H] (A: the accumulator type, see accumulate_rows).
template <class X, class P, class A>
ZAYA_ALWAYS_INLINE void rms_bwd_row(const RmsBwdArgs& a, int64_t t, A* __restrict gw_acc) {
  using XT = typename X::T;
  using PT = typename P::T;
  using C = typename P::C;
  const int64_t H = a.H;
  const C* __restrict w = static_cast<const C*>(a.w);
  const XT* __restrict x = static_cast<const XT*>(a.x) + t * a.x_stride;
  const PT* __restrict gy = static_cast<const PT*>(a.gy) + t * H;
  XT* __restrict gx = static_cast<XT*>(a.gx) + t * H;
  const auto [inv, coef] = norm_bwd_row_stats<C>(
      H, a.eps, [&](int64_t j) -> C { return P::round(X::load(x[j])); },
      [&](int64_t j) -> C { return P::round(P::load(gy[j]) * w[j]); });
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const C v = P::round(X::load(x[j]));
    const C g = P::load(gy[j]);
    const C gn = P::round(g * w[j]);
    gx[j] = X::store(P::round(gn * inv + v * coef));
    gw_acc[j] += static_cast<A>(P::round(g * P::round(v * inv)));
  }
}

// Rows [t0, t1) of the backward, adding the [H] parameter gradients into acc [n_acc * H] (double). A
// bf16/fp16 gradient keeps 8/11 significant bits, so its rows are first summed in fp32 in groups of 8
// (fp32's 24 bits lose nothing the result keeps) and each group is added into double once: the
// double conversions, which halve the vector width, then run once per 8 rows instead of every row.
// fp32 and fp64 add every row in double, as before.
template <class P, class RowFn>
ZAYA_ALWAYS_INLINE void accumulate_rows(int64_t t0, int64_t t1, int64_t n_acc, double* __restrict acc, RowFn row) {
  constexpr bool kGrouped = std::is_same_v<P, BF16> || std::is_same_v<P, F16>;
  if constexpr (kGrouped) {
    constexpr int64_t kGroupRows = 8;
    std::vector<float> group(static_cast<size_t>(n_acc));
    float* __restrict g = group.data();
    for (int64_t t = t0; t < t1; t += kGroupRows) {
      std::fill(group.begin(), group.end(), 0.0f);
      for (int64_t u = t; u < std::min(t1, t + kGroupRows); ++u) row(u, g);
#pragma omp simd
      for (int64_t k = 0; k < n_acc; ++k) acc[k] += static_cast<double>(g[k]);
    }
  } else {
    for (int64_t t = t0; t < t1; ++t) row(t, acc);
  }
}

// The row loops of the backward, built twice: for the baseline ISA and (x86 with GCC) for AVX2 + F16C,
// picked at run time like the forward's kernels. The bodies above (and the AVX2 wrappers' lambdas) are
// always inlined, so each wrapper compiles them, vectorised, for its own target.
template <class X, class P>
void rms_bwd_rows_base(const RmsBwdArgs& a, int64_t t0, int64_t t1, double* acc) {
  accumulate_rows<P>(t0, t1, a.H, acc, [&](int64_t t, auto* g) { rms_bwd_row<X, P>(a, t, g); });
}

#if ZAYA_X86_MULTIVERSION
template <class X, class P>
__attribute__((target("avx2,f16c"))) void rms_bwd_rows_avx2(const RmsBwdArgs& a, int64_t t0, int64_t t1,
                                                             double* acc) {
  accumulate_rows<P>(t0, t1, a.H, acc,
                     [&](int64_t t, auto* g) __attribute__((always_inline)) { rms_bwd_row<X, P>(a, t, g); });
}
#endif

template <class X, class P>
void (*pick_rms_bwd())(const RmsBwdArgs&, int64_t, int64_t, double*) {
#if ZAYA_X86_MULTIVERSION
  if constexpr (!std::is_same_v<X, F64> && !std::is_same_v<P, F64>) {
    if (use_avx2()) return &rms_bwd_rows_avx2<X, P>;
  }
#endif
  return &rms_bwd_rows_base<X, P>;
}

std::tuple<at::Tensor, at::Tensor> rms_norm_backward_cpu(const at::Tensor& grad_y_in, const at::Tensor& x_in,
                                                         const at::Tensor& weight, double eps) {
  constexpr const char* op = "zaya::rms_norm_backward";
  check_cpu(op, "x", x_in);
  check_rms_norm_backward_args(grad_y_in, x_in, weight, eps, /*allow_f64=*/true);
  const int64_t T = x_in.size(0);
  const int64_t H = x_in.size(1);

  at::Tensor gx = at::empty({T, H}, x_in.options());
  at::Tensor gw = at::zeros({H}, weight.options());
  if (T == 0 || H == 0) return {gx, gw};
  const at::Tensor x = unit_inner_stride(x_in);
  const at::Tensor gy = grad_y_in.contiguous();

  dispatch_x_param(x.scalar_type(), weight.scalar_type(), [&](auto xt, auto pt) {
    using X = decltype(xt);
    using P = decltype(pt);
    using C = typename P::C;
    std::vector<C> w(H);
    widen_vector(weight, w.data());
    RmsBwdArgs a{gy.const_data_ptr(), x.const_data_ptr(), x.stride(0), w.data(), gx.mutable_data_ptr(), H,
                 static_cast<float>(eps)};
    const RowBlocks rb = row_blocks(T, H);
    std::vector<double> partial(rb.blocks * H, 0.0);
    auto fn = pick_rms_bwd<X, P>();
    at::parallel_for(0, rb.blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) fn(a, b * rb.rows, std::min(T, (b + 1) * rb.rows), partial.data() + b * H);
    });
    reduce_blocks<P>(partial.data(), rb.blocks, H, static_cast<typename P::T*>(gw.mutable_data_ptr()));
  });
  return {gx, gw};
}

// residual_scale_rmsnorm: with a = round_p(h + hb), hv = round_p(a * hs), b = r + rb and
// nr = hv + b * rs (fp32), the norm's gradient gnr = g_new_residual + round_p(gv) (x = nr, as above);
// then ghv = round_p(gnr) (the promotion of hv, backwards), ga = round_p(ghv * hs) = gh,
// ghs = round_p(sum round_p(ghv * a)), ghb = round_p(sum ga); gr = gnr * rs (fp32),
// grs = round_p(sum gnr * b), grb = round_p(sum gr).
struct RsrBwdArgs {
  const void* g_new_r;  // [T, H] r's dtype, contiguous
  const void* gy;       // [T, H] param dtype, contiguous
  const void* h;        // [T, H] param dtype, rows h_stride apart
  int64_t h_stride;
  const void* r;        // [T, H] r's dtype, rows r_stride apart
  int64_t r_stride;
  const void* vecs;     // [5, H] compute type: h_bias, h_scale, r_bias, r_scale, norm_weight
  void* gh;             // [T, H] param dtype, contiguous
  void* gr;             // [T, H] r's dtype, contiguous
  int64_t H;
  float eps;
};

// Row t: writes gh, gr; adds into acc [5, H]: g norm_weight, h_bias, h_scale, r_bias, r_scale.
template <class P, class A>
ZAYA_ALWAYS_INLINE void rsr_bwd_row(const RsrBwdArgs& a, int64_t t, A* __restrict acc) {
  using PT = typename P::T;
  using C = typename P::C;
  const int64_t H = a.H;
  const C* __restrict hb = static_cast<const C*>(a.vecs);
  const C* __restrict hs = hb + H;
  const C* __restrict rb = hb + 2 * H;
  const C* __restrict rs = hb + 3 * H;
  const C* __restrict w = hb + 4 * H;
  A* __restrict acc_w = acc;
  A* __restrict acc_hb = acc + H;
  A* __restrict acc_hs = acc + 2 * H;
  A* __restrict acc_rb = acc + 3 * H;
  A* __restrict acc_rs = acc + 4 * H;
  const PT* __restrict h = static_cast<const PT*>(a.h) + t * a.h_stride;
  const C* __restrict r = static_cast<const C*>(a.r) + t * a.r_stride;
  const C* __restrict gnr_in = static_cast<const C*>(a.g_new_r) + t * H;
  const PT* __restrict gy = static_cast<const PT*>(a.gy) + t * H;
  PT* __restrict gh = static_cast<PT*>(a.gh) + t * H;
  C* __restrict gr = static_cast<C*>(a.gr) + t * H;
  const auto [inv, coef] = norm_bwd_row_stats<C>(
      H, a.eps, [&](int64_t j) -> C { return P::round(P::round(P::round(P::load(h[j]) + hb[j]) * hs[j]) +
                                                      (r[j] + rb[j]) * rs[j]); },
      [&](int64_t j) -> C { return P::round(P::load(gy[j]) * w[j]); });
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const C av = P::round(P::load(h[j]) + hb[j]);
    const C hv = P::round(av * hs[j]);
    const C bv = r[j] + rb[j];
    const C v = P::round(hv + bv * rs[j]);
    const C g = P::load(gy[j]);
    const C gn = P::round(g * w[j]);
    acc_w[j] += static_cast<A>(P::round(g * P::round(v * inv)));
    const C gnr = gnr_in[j] + P::round(gn * inv + v * coef);
    const C ghv = P::round(gnr);
    const C ga = P::round(ghv * hs[j]);
    gh[j] = P::store(ga);
    acc_hb[j] += static_cast<A>(ga);
    acc_hs[j] += static_cast<A>(P::round(ghv * av));
    const C grv = gnr * rs[j];
    gr[j] = grv;
    acc_rb[j] += static_cast<A>(grv);
    acc_rs[j] += static_cast<A>(gnr * bv);
  }
}

template <class P>
void rsr_bwd_rows_base(const RsrBwdArgs& a, int64_t t0, int64_t t1, double* acc) {
  accumulate_rows<P>(t0, t1, 5 * a.H, acc, [&](int64_t t, auto* g) { rsr_bwd_row<P>(a, t, g); });
}

#if ZAYA_X86_MULTIVERSION
template <class P>
__attribute__((target("avx2,f16c"))) void rsr_bwd_rows_avx2(const RsrBwdArgs& a, int64_t t0, int64_t t1,
                                                             double* acc) {
  accumulate_rows<P>(t0, t1, 5 * a.H, acc,
                     [&](int64_t t, auto* g) __attribute__((always_inline)) { rsr_bwd_row<P>(a, t, g); });
}
#endif

template <class P>
void (*pick_rsr_bwd())(const RsrBwdArgs&, int64_t, int64_t, double*) {
#if ZAYA_X86_MULTIVERSION
  if constexpr (!std::is_same_v<P, F64>) {
    if (use_avx2()) return &rsr_bwd_rows_avx2<P>;
  }
#endif
  return &rsr_bwd_rows_base<P>;
}

using Grads7 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Grads7 residual_scale_rmsnorm_backward_cpu(
    const at::Tensor& grad_new_residual_in, const at::Tensor& grad_normed_in, const at::Tensor& h_in,
    const at::Tensor& residual_in, const at::Tensor& h_bias, const at::Tensor& h_scale, const at::Tensor& r_bias,
    const at::Tensor& r_scale, const at::Tensor& norm_weight, double eps) {
  constexpr const char* op = "zaya::residual_scale_rmsnorm_backward";
  check_cpu(op, "h", h_in);
  check_residual_scale_rmsnorm_backward_args(grad_new_residual_in, grad_normed_in, h_in, residual_in, h_bias,
                                             h_scale, r_bias, r_scale, norm_weight, eps, /*allow_f64=*/true);
  const int64_t T = h_in.size(0);
  const int64_t H = h_in.size(1);

  at::Tensor gh = at::empty({T, H}, h_in.options());
  at::Tensor gr = at::empty({T, H}, residual_in.options());
  at::Tensor gvec = at::zeros({5, H}, h_in.options());  // norm_weight, h_bias, h_scale, r_bias, r_scale
  if (T > 0 && H > 0) {
    const at::Tensor h = unit_inner_stride(h_in);
    const at::Tensor residual = unit_inner_stride(residual_in);
    const at::Tensor g_new_r = grad_new_residual_in.contiguous();
    const at::Tensor gy = grad_normed_in.contiguous();
    dispatch_param(h_in.scalar_type(), [&](auto pt) {
      using P = decltype(pt);
      using C = typename P::C;
      std::vector<C> vf(5 * H);
      const at::Tensor* vecs[5] = {&h_bias, &h_scale, &r_bias, &r_scale, &norm_weight};
      for (int i = 0; i < 5; ++i) widen_vector(*vecs[i], vf.data() + i * H);
      RsrBwdArgs a{g_new_r.const_data_ptr(), gy.const_data_ptr(), h.const_data_ptr(), h.stride(0),
                   residual.const_data_ptr(), residual.stride(0), vf.data(), gh.mutable_data_ptr(),
                   gr.mutable_data_ptr(), H, static_cast<float>(eps)};
      const RowBlocks rb = row_blocks(T, H);
      std::vector<double> partial(rb.blocks * 5 * H, 0.0);
      auto fn = pick_rsr_bwd<P>();
      at::parallel_for(0, rb.blocks, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b)
          fn(a, b * rb.rows, std::min(T, (b + 1) * rb.rows), partial.data() + b * 5 * H);
      });
      reduce_blocks<P>(partial.data(), rb.blocks, 5 * H, static_cast<typename P::T*>(gvec.mutable_data_ptr()));
    });
  }
  // separate [H] tensors (outputs must not share storage)
  return {gh, gr, gvec[1].clone(), gvec[2].clone(), gvec[3].clone(), gvec[4].clone(), gvec[0].clone()};
}

}  // namespace

TORCH_LIBRARY_IMPL(zaya, CPU, m) {
  m.impl("rms_norm", &rms_norm_cpu);
  m.impl("residual_scale_rmsnorm", &residual_scale_rmsnorm_cpu);
  m.impl("rms_norm_backward", &rms_norm_backward_cpu);
  m.impl("residual_scale_rmsnorm_backward", &residual_scale_rmsnorm_backward_cpu);
}
