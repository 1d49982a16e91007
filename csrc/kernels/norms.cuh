// Portable kernel bodies of zaya::rms_norm and zaya::residual_scale_rmsnorm, compiled by nvcc
// (cuda/norms.cu) and by hip-clang (hip/norms.hip); everything vendor-specific is in vendor.h.
// The launchers at the bottom implement the contract of norms_launch.h.
//
// Semantics (python/zaya_ops/ops.py, reference.py): per row, v = round_w(x), inv = 1/sqrt(mean(v^2)
// + eps) in fp32, y = round_w(w * round_w(v * inv)); the residual op first builds
// new_r = float(round_p(round_p(h + hb) * hs)) + (r + rb) * rs (every op rounded as PyTorch rounds
// it: fp32 ops via vendor::fadd/fmul, never contracted to FMAs) and normalises round_p(new_r).
// inv uses a correctly rounded sqrt and divide (the CPU reference's 1/sqrt), not the approximate
// hardware rsqrt, so that CUDA and HIP agree with each other and with the CPU kernel; only the
// fp32 summation order of mean(v^2) differs from the reference.
//
// Memory traffic, bytes per element of a row (each input read once, each output written once):
//   rms_norm:               x (2 or 4) + y (2)            = 4 B bf16->bf16, 6 B fp32->bf16
//   residual_scale_rmsnorm: h (2) + r (4) + new_r (4) + normed (2) = 12 B with bf16 params
// The [H] parameter vectors are shared by all rows and stay in L1/L2. Both ops are purely
// bandwidth-bound: at the ~3.0 TB/s copy rate measured on an H100, residual_scale_rmsnorm over
// T x H = 4096 x 2048 bf16 moves 100.7 MB, a floor of ~34 us; rms_norm bf16 4096 x 2048, ~11 us.
// FLOPs (a few per element) and the per-row reduction are negligible next to that.
//
// Design
//   * A chunk is 8 consecutive elements of a row: one 16-byte access for bf16/fp16, two for fp32.
//     Lane i of a row's thread group takes chunks i, i + tpr, i + 2 tpr, ... (coalesced).
//   * "Row" kernels (H <= 8 * 4 * kMaxBlock): a group of tpr threads (a power of two, from one
//     thread up to a whole block) owns a row and keeps its NPT <= 4 chunks in registers between the
//     reduction and the output, so global memory is touched exactly once. Several groups share a
//     block when tpr is small. The row sum of squares is a butterfly shuffle inside the warp
//     (bit-identical in every lane, since fp32 add is commutative), plus one shared-memory step
//     when the group spans several warps.
//   * "Looped" kernels (larger H, never in ZAYA1): one row per block, two passes over the row; the
//     second pass re-reads the inputs (from L2, normally), or the new residual just written.
//   * Shape choice (pick_shape): tpr = min(pow2 >= C, max(warp, pow2 >= C/4)) for C = H/8 chunks,
//     i.e. the smallest group that needs at most 4 chunks per thread, but at least a warp when the
//     row has that many chunks, and NPT = pow2 >= C / tpr. Examples on CUDA (warp 32):
//        H = 8:    tpr 1,   NPT 1      H = 264:  tpr 32,  NPT 2 (33 of 64 slots used)
//        H = 2048: tpr 64,  NPT 4      H = 8192: tpr 256, NPT 4    H = 16384: tpr 512, NPT 4
//     (wave64 AMD: H = 264 -> tpr 64, NPT 1; H = 2048 -> tpr 64, NPT 4, one wave per row, no LDS.)
//     Blocks hold 256 threads when there are rows enough to give every SM two blocks, down to 64
//     threads (always a multiple of the warp, so shuffles see full warps). These choices are not yet
//     tuned on hardware (written without a GPU): correctness does not depend on them.
#pragma once

#include <cstdint>

#include "norms_launch.h"
#include "vendor.h"

namespace zaya::kernels::norms {

using vendor::fadd;
using vendor::fmul;
using vendor::kWarpSize;

inline constexpr int kVec = 8;          // elements per chunk
inline constexpr int kMaxNpt = 4;       // chunks per thread kept in registers
inline constexpr int kMaxBlock = 512;   // threads per block (a power of two)

// --------------------------------------------------------------------------------------------
// 16-byte vector access to one chunk
// --------------------------------------------------------------------------------------------
struct alignas(16) Vec16 {
  uint32_t w[4];
};

template <class D>
struct Raw8 {  // the raw bits of one chunk of dtype D
  static constexpr int kAccesses = static_cast<int>(sizeof(typename D::storage)) * kVec / 16;
  Vec16 v[kAccesses];
};

template <class D>
ZAYA_DEV Raw8<D> load8(const typename D::storage* p) {
  Raw8<D> r;
  const Vec16* q = reinterpret_cast<const Vec16*>(p);
#pragma unroll
  for (int i = 0; i < Raw8<D>::kAccesses; ++i) r.v[i] = q[i];
  return r;
}

// Element j of a chunk, as fp32.
template <class D>
ZAYA_DEV float elem(const Raw8<D>& r, int j) {
  if constexpr (sizeof(typename D::storage) == 4) {
    return vendor::u2f(r.v[j >> 2].w[j & 3]);
  } else {
    const uint32_t w = r.v[0].w[j >> 1];  // little endian: element 2i in the low half
    return D::to_float(static_cast<uint16_t>((j & 1) ? (w >> 16) : (w & 0xffffu)));
  }
}

// Rounds 8 fp32 values to D and packs them as one chunk.
template <class D>
ZAYA_DEV Raw8<D> pack8(const float (&y)[kVec]) {
  Raw8<D> r;
  if constexpr (sizeof(typename D::storage) == 4) {
#pragma unroll
    for (int j = 0; j < kVec; ++j) r.v[j >> 2].w[j & 3] = vendor::f2u(y[j]);
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i)
      r.v[0].w[i] = static_cast<uint32_t>(D::from_float(y[2 * i])) |
                    (static_cast<uint32_t>(D::from_float(y[2 * i + 1])) << 16);
  }
  return r;
}

template <class D>
ZAYA_DEV void store8(typename D::storage* p, const Raw8<D>& r) {
  Vec16* q = reinterpret_cast<Vec16*>(p);
#pragma unroll
  for (int i = 0; i < Raw8<D>::kAccesses; ++i) q[i] = r.v[i];
}

// --------------------------------------------------------------------------------------------
// Row reduction: sum of `s` over the tpr threads of each row group (tpr a power of two, uniform in
// the block, groups aligned to tpr). Every thread of the block must call it (it may hold a barrier).
// Returns the same bits in every thread of a group: butterfly partners add the same two values,
// and the cross-warp step sums the partials in one fixed order.
// --------------------------------------------------------------------------------------------
ZAYA_DEV float row_sum(float s, int tpr, float* smem) {
  const int width = tpr < kWarpSize ? tpr : kWarpSize;
  for (int off = width >> 1; off > 0; off >>= 1) s = fadd(s, vendor::shfl_xor(s, off));
  if (tpr <= kWarpSize) return s;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  if (static_cast<int>(threadIdx.x) % kWarpSize == 0) smem[warp] = s;
  __syncthreads();
  const int warps_per_row = tpr / kWarpSize;
  const int first = warp - warp % warps_per_row;
  float t = 0.f;
  for (int i = 0; i < warps_per_row; ++i) t = fadd(t, smem[first + i]);
  return t;
}

// 1 / sqrt(mean + eps), correctly rounded at each step (see the header comment).
ZAYA_DEV float inv_rms(float sum_sq, int64_t hidden, float eps) {
  return vendor::fdiv(1.0f, vendor::sqrt_rn(fadd(vendor::fdiv(sum_sq, static_cast<float>(hidden)), eps)));
}

// The normalised output chunk: round_w(w * round_w(v * inv)), v already rounded to W.
template <class W>
ZAYA_DEV Raw8<W> norm_chunk(const float (&v)[kVec], const Raw8<W>& w, float inv) {
  float y[kVec];
#pragma unroll
  for (int j = 0; j < kVec; ++j) y[j] = fmul(elem<W>(w, j), W::round(fmul(v[j], inv)));
  return pack8<W>(y);
}

// Position of a thread in the "row" kernels: row group of tpr = 1 << tpr_log2 threads.
struct RowPos {
  int lane;     // index in the row group
  int64_t row;  // row of the group
  bool valid;   // row < rows (invalid groups still join the reduction's barrier)
};

ZAYA_DEV RowPos row_pos(int tpr_log2, int64_t rows) {
  RowPos p;
  p.lane = static_cast<int>(threadIdx.x) & ((1 << tpr_log2) - 1);
  p.row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> tpr_log2) + (threadIdx.x >> tpr_log2);
  p.valid = p.row < rows;
  return p;
}

// --------------------------------------------------------------------------------------------
// rms_norm
// --------------------------------------------------------------------------------------------

// The row stays in registers as raw x and w chunks (at most 16 words per chunk): all loads are
// issued before any arithmetic, and v = round_w(x) is recomputed for the output instead of kept.
template <class X, class W, int NPT>
__global__ void __launch_bounds__(kMaxBlock) rms_norm_rows(RmsNormArgs a, int tpr_log2) {
  __shared__ float smem[kMaxBlock / kWarpSize];
  const int tpr = 1 << tpr_log2;
  const RowPos p = row_pos(tpr_log2, a.rows);
  const int chunks = static_cast<int>(a.hidden / kVec);
  const auto* x = static_cast<const typename X::storage*>(a.x) + (p.valid ? p.row * a.x_row_stride : 0);
  const auto* w = static_cast<const typename W::storage*>(a.weight);

  Raw8<X> xr[NPT];
  Raw8<W> wr[NPT];
#pragma unroll
  for (int k = 0; k < NPT; ++k) {
    const int c = p.lane + k * tpr;
    if (p.valid && c < chunks) {
      xr[k] = load8<X>(x + c * kVec);
      wr[k] = load8<W>(w + c * kVec);
    }
  }
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < NPT; ++k) {
    if (p.valid && p.lane + k * tpr < chunks) {
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        const float v = W::round(elem<X>(xr[k], j));
        ss = fadd(ss, fmul(v, v));
      }
    }
  }
  const float inv = inv_rms(row_sum(ss, tpr, smem), a.hidden, a.eps);
  if (!p.valid) return;
  auto* out = static_cast<typename W::storage*>(a.out) + p.row * a.hidden;
#pragma unroll
  for (int k = 0; k < NPT; ++k) {
    const int c = p.lane + k * tpr;
    if (c < chunks) {
      float v[kVec];
#pragma unroll
      for (int j = 0; j < kVec; ++j) v[j] = W::round(elem<X>(xr[k], j));
      store8<W>(out + c * kVec, norm_chunk<W>(v, wr[k], inv));
    }
  }
}

// Any H: one row per block of kMaxBlock threads, x read twice.
template <class X, class W>
__global__ void __launch_bounds__(kMaxBlock) rms_norm_looped(RmsNormArgs a) {
  __shared__ float smem[kMaxBlock / kWarpSize];
  const int64_t row = blockIdx.x;
  const int chunks = static_cast<int>(a.hidden / kVec);
  const int step = static_cast<int>(blockDim.x);
  const auto* x = static_cast<const typename X::storage*>(a.x) + row * a.x_row_stride;
  const auto* w = static_cast<const typename W::storage*>(a.weight);
  float ss = 0.f;
  for (int c = threadIdx.x; c < chunks; c += step) {
    const Raw8<X> xr = load8<X>(x + c * kVec);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const float v = W::round(elem<X>(xr, j));
      ss = fadd(ss, fmul(v, v));
    }
  }
  const float inv = inv_rms(row_sum(ss, step, smem), a.hidden, a.eps);
  auto* out = static_cast<typename W::storage*>(a.out) + row * a.hidden;
  for (int c = threadIdx.x; c < chunks; c += step) {
    const Raw8<X> xr = load8<X>(x + c * kVec);
    float v[kVec];
#pragma unroll
    for (int j = 0; j < kVec; ++j) v[j] = W::round(elem<X>(xr, j));
    store8<W>(out + c * kVec, norm_chunk<W>(v, load8<W>(w + c * kVec), inv));
  }
}

// --------------------------------------------------------------------------------------------
// residual_scale_rmsnorm
// --------------------------------------------------------------------------------------------

// One chunk of new_r: the h-branch in the param dtype P (each op in fp32, rounded to P, as PyTorch
// computes P tensors), the residual branch and the sum in fp32. The [H] vectors are read here, per
// chunk (L1/L2 hits: every row reads the same ones).
template <class P>
ZAYA_DEV void new_residual_chunk(const Raw8<P>& h, const Raw8<dtype::F32>& r, const ResidualScaleRmsNormArgs& a,
                                 int o, float (&nr)[kVec]) {
  using S = typename P::storage;
  const Raw8<P> hb = load8<P>(static_cast<const S*>(a.h_bias) + o);
  const Raw8<P> hs = load8<P>(static_cast<const S*>(a.h_scale) + o);
  const Raw8<P> rb = load8<P>(static_cast<const S*>(a.r_bias) + o);
  const Raw8<P> rs = load8<P>(static_cast<const S*>(a.r_scale) + o);
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    const float hp = P::round(fmul(P::round(fadd(elem<P>(h, j), elem<P>(hb, j))), elem<P>(hs, j)));
    nr[j] = fadd(hp, fmul(fadd(elem<dtype::F32>(r, j), elem<P>(rb, j)), elem<P>(rs, j)));
  }
}

// The streamed inputs (h, residual) of all NPT chunks are loaded first; then per chunk new_r is
// built and stored, and kept as round_p(new_r) packed in P (4 words per chunk for 16-bit P) with
// the norm weight chunk until the row's sum of squares is known.
template <class P, int NPT>
__global__ void __launch_bounds__(kMaxBlock) residual_scale_rmsnorm_rows(ResidualScaleRmsNormArgs a, int tpr_log2) {
  __shared__ float smem[kMaxBlock / kWarpSize];
  using S = typename P::storage;
  const int tpr = 1 << tpr_log2;
  const RowPos p = row_pos(tpr_log2, a.rows);
  const int chunks = static_cast<int>(a.hidden / kVec);
  const S* h = static_cast<const S*>(a.h) + (p.valid ? p.row * a.h_row_stride : 0);
  const float* r = a.residual + (p.valid ? p.row * a.residual_row_stride : 0);
  float* new_r = a.new_residual + (p.valid ? p.row * a.hidden : 0);
  const S* nw = static_cast<const S*>(a.norm_weight);

  Raw8<P> hr[NPT];
  Raw8<dtype::F32> rr[NPT];
#pragma unroll
  for (int k = 0; k < NPT; ++k) {
    const int c = p.lane + k * tpr;
    if (p.valid && c < chunks) {
      hr[k] = load8<P>(h + c * kVec);
      rr[k] = load8<dtype::F32>(r + c * kVec);
    }
  }
  Raw8<P> vr[NPT];  // round_p(new_r)
  Raw8<P> wr[NPT];
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < NPT; ++k) {
    const int c = p.lane + k * tpr;
    if (p.valid && c < chunks) {
      wr[k] = load8<P>(nw + c * kVec);
      float nr[kVec];
      new_residual_chunk<P>(hr[k], rr[k], a, c * kVec, nr);
      store8<dtype::F32>(new_r + c * kVec, pack8<dtype::F32>(nr));
      vr[k] = pack8<P>(nr);
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        const float v = elem<P>(vr[k], j);
        ss = fadd(ss, fmul(v, v));
      }
    }
  }
  const float inv = inv_rms(row_sum(ss, tpr, smem), a.hidden, a.eps);
  if (!p.valid) return;
  S* out = static_cast<S*>(a.normed) + p.row * a.hidden;
#pragma unroll
  for (int k = 0; k < NPT; ++k) {
    const int c = p.lane + k * tpr;
    if (c < chunks) {
      float v[kVec];
#pragma unroll
      for (int j = 0; j < kVec; ++j) v[j] = elem<P>(vr[k], j);
      store8<P>(out + c * kVec, norm_chunk<P>(v, wr[k], inv));
    }
  }
}

// Any H: one row per block; the second pass reads back the new residual this thread wrote.
template <class P>
__global__ void __launch_bounds__(kMaxBlock) residual_scale_rmsnorm_looped(ResidualScaleRmsNormArgs a) {
  __shared__ float smem[kMaxBlock / kWarpSize];
  using S = typename P::storage;
  const int64_t row = blockIdx.x;
  const int chunks = static_cast<int>(a.hidden / kVec);
  const int step = static_cast<int>(blockDim.x);
  const S* h = static_cast<const S*>(a.h) + row * a.h_row_stride;
  const float* r = a.residual + row * a.residual_row_stride;
  float* new_r = a.new_residual + row * a.hidden;
  float ss = 0.f;
  for (int c = threadIdx.x; c < chunks; c += step) {
    const int o = c * kVec;
    float nr[kVec];
    new_residual_chunk<P>(load8<P>(h + o), load8<dtype::F32>(r + o), a, o, nr);
    store8<dtype::F32>(new_r + o, pack8<dtype::F32>(nr));
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const float v = P::round(nr[j]);
      ss = fadd(ss, fmul(v, v));
    }
  }
  const float inv = inv_rms(row_sum(ss, step, smem), a.hidden, a.eps);
  S* out = static_cast<S*>(a.normed) + row * a.hidden;
  for (int c = threadIdx.x; c < chunks; c += step) {
    const int o = c * kVec;
    const Raw8<dtype::F32> nr = load8<dtype::F32>(new_r + o);  // this thread wrote it: visible
    float v[kVec];
#pragma unroll
    for (int j = 0; j < kVec; ++j) v[j] = P::round(elem<dtype::F32>(nr, j));
    store8<P>(out + o, norm_chunk<P>(v, load8<P>(static_cast<const S*>(a.norm_weight) + o), inv));
  }
}

// --------------------------------------------------------------------------------------------
// Host side: shape choice and launch (no torch; shared by the CUDA and HIP entry files)
// --------------------------------------------------------------------------------------------
struct Shape {
  bool looped = false;
  int tpr_log2 = 0;  // threads per row group = 1 << tpr_log2
  int npt = 1;       // chunks per thread (1, 2 or 4)
  int block = 0;     // threads per block
  int64_t grid = 0;  // blocks
};

inline int ceil_log2(int64_t n) {
  int l = 0;
  while ((int64_t{1} << l) < n) ++l;
  return l;
}

// warp: the device's warp size (runtime); sms: its multiprocessor count. See the header comment.
inline Shape pick_shape(int64_t rows, int64_t hidden, int warp, int sms) {
  Shape s;
  const int64_t chunks = hidden / kVec;
  if (chunks > int64_t{kMaxNpt} * kMaxBlock) {
    s.looped = true;
    s.block = kMaxBlock;
    s.tpr_log2 = ceil_log2(kMaxBlock);
    s.grid = rows;
    return s;
  }
  const int warp_log2 = ceil_log2(warp);
  const int by_npt = ceil_log2((chunks + kMaxNpt - 1) / kMaxNpt);
  int t = ceil_log2(chunks);
  if (t > (by_npt > warp_log2 ? by_npt : warp_log2)) t = by_npt > warp_log2 ? by_npt : warp_log2;
  s.tpr_log2 = t;
  const int64_t tpr = int64_t{1} << t;
  s.npt = 1 << ceil_log2((chunks + tpr - 1) / tpr);  // <= kMaxNpt by construction
  // Rows per block: 256 threads' worth, halved (down to 64 threads) while that leaves fewer than
  // two blocks per SM, so that small batches still spread over the GPU.
  int64_t rpb = tpr >= 256 ? 1 : 256 / tpr;
  const int64_t rpb_min = tpr >= 64 ? 1 : 64 / tpr;
  while (rpb > rpb_min && (rows + rpb - 1) / rpb < 2 * int64_t{sms}) rpb /= 2;
  s.block = static_cast<int>(rpb * tpr);
  s.grid = (rows + rpb - 1) / rpb;
  return s;
}

template <class F>
const char* with_dtype(DType d, F&& f) {
  switch (d) {
    case DType::F32: return f(dtype::F32{});
    case DType::BF16: return f(dtype::BF16{});
    case DType::F16: return f(dtype::F16{});
  }
  return "zaya norms: unknown dtype";
}

inline int64_t elem_size(DType d) { return d == DType::F32 ? 4 : 2; }
using vendor::aligned16;

// Common checks of the contract; fills `shape`.
inline const char* prepare(const char* op, int64_t rows, int64_t hidden, Shape* shape) {
  if (rows < 0 || hidden < 0) return "zaya norms: negative size";
  if (hidden % kVec != 0) return "zaya norms: hidden size must be a multiple of 8";
  if (hidden / kVec > int64_t{0x7fffffff}) return "zaya norms: hidden size too large";
  int dev = 0, warp = 0;
  if (const char* err = vendor::current_device(op, &dev, &warp)) return err;
  const int sms = vendor::device_sm_count(dev);
  if (sms <= 0) return "zaya norms: cannot query the device's multiprocessor count";
  *shape = pick_shape(rows, hidden, warp, sms);
  if (shape->grid > int64_t{0x7fffffff}) return "zaya norms: too many rows for one launch";
  return nullptr;
}

inline const char* launch_rms_norm_impl(const RmsNormArgs& a, vendor::stream_t stream) {
  if (a.rows == 0 || a.hidden == 0) return nullptr;
  Shape s;
  if (const char* err = prepare("rms_norm", a.rows, a.hidden, &s)) return err;
  if (!aligned16(a.x) || !aligned16(a.weight) || !aligned16(a.out) ||
      (a.rows > 1 && (a.x_row_stride * elem_size(a.x_dtype)) % 16 != 0))
    return "zaya rms_norm: pointers and row strides must be 16-byte aligned";
  const dim3 grid(static_cast<unsigned>(s.grid)), block(static_cast<unsigned>(s.block));
  return with_dtype(a.x_dtype, [&](auto xt) {
    return with_dtype(a.w_dtype, [&](auto wt) -> const char* {
      using X = decltype(xt);
      using W = decltype(wt);
      const char* err = nullptr;
      if (s.looped) {
        err = vendor::launch(&rms_norm_looped<X, W>, grid, block, 0, stream, a);
      } else if (s.npt == 1) {
        err = vendor::launch(&rms_norm_rows<X, W, 1>, grid, block, 0, stream, a, s.tpr_log2);
      } else if (s.npt == 2) {
        err = vendor::launch(&rms_norm_rows<X, W, 2>, grid, block, 0, stream, a, s.tpr_log2);
      } else {
        err = vendor::launch(&rms_norm_rows<X, W, 4>, grid, block, 0, stream, a, s.tpr_log2);
      }
      return err;
    });
  });
}

inline const char* launch_residual_scale_rmsnorm_impl(const ResidualScaleRmsNormArgs& a,
                                                      vendor::stream_t stream) {
  if (a.rows == 0 || a.hidden == 0) return nullptr;
  Shape s;
  if (const char* err = prepare("residual_scale_rmsnorm", a.rows, a.hidden, &s)) return err;
  const int64_t es = elem_size(a.dtype);
  if (!aligned16(a.h) || !aligned16(a.residual) || !aligned16(a.h_bias) || !aligned16(a.h_scale) ||
      !aligned16(a.r_bias) || !aligned16(a.r_scale) || !aligned16(a.norm_weight) ||
      !aligned16(a.new_residual) || !aligned16(a.normed) ||
      (a.rows > 1 && ((a.h_row_stride * es) % 16 != 0 || (a.residual_row_stride * 4) % 16 != 0)))
    return "zaya residual_scale_rmsnorm: pointers and row strides must be 16-byte aligned";
  const dim3 grid(static_cast<unsigned>(s.grid)), block(static_cast<unsigned>(s.block));
  return with_dtype(a.dtype, [&](auto pt) -> const char* {
    using P = decltype(pt);
    const char* err = nullptr;
    if (s.looped) {
      err = vendor::launch(&residual_scale_rmsnorm_looped<P>, grid, block, 0, stream, a);
    } else if (s.npt == 1) {
      err = vendor::launch(&residual_scale_rmsnorm_rows<P, 1>, grid, block, 0, stream, a, s.tpr_log2);
    } else if (s.npt == 2) {
      err = vendor::launch(&residual_scale_rmsnorm_rows<P, 2>, grid, block, 0, stream, a, s.tpr_log2);
    } else {
      err = vendor::launch(&residual_scale_rmsnorm_rows<P, 4>, grid, block, 0, stream, a, s.tpr_log2);
    }
    return err;
  });
}

}  // namespace zaya::kernels::norms
