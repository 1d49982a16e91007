// Portable backward kernels of zaya::rms_norm and zaya::residual_scale_rmsnorm (the ops
// zaya::rms_norm_backward and zaya::residual_scale_rmsnorm_backward), compiled by nvcc
// (cuda/norms_backward.cu), hip-clang (hip/norms_backward.hip) and the SIMT emulator. The maths is the
// CPU kernels' (csrc/cpu/norms.cpp, "Backward"): autograd of zaya_ops.reference, every cast of the
// forward a rounding of the gradient, fp32 in between (vendor::fadd/fmul: never contracted to FMAs).
//
// Design: a block of kBlock threads owns kNormBwdRowsPerBlock consecutive rows.
//   Phase A: each warp takes rows in turn and computes the row's two sums, mean(v^2) and sum(gn * v)
//     (butterfly shuffles, no shared memory), giving inv = 1/sqrt(mean + eps) and coef =
//     -(dot / H) * inv^3, kept in shared memory.
//   Phase B: each thread takes 8-element chunks of the columns (c = tid, tid + kBlock, ...; coalesced)
//     and walks the block's rows in order: writes dX (one pass over the rows: grad inputs read once
//     more, from L2) and sums the parameter gradients of its columns in registers (fp32), written
//     once per block as that block's partial to the workspace.
//   Reduce: one thread per parameter element sums the blocks' partials in block order (fp32) and
//     rounds once to the parameter dtype (ordered_sum.cuh).
// No atomics: the result is the same on every run and does not depend on the grid's schedule. The
// memory traffic is the inputs twice (phase A, phase B from L2) plus dX and 4 bytes per parameter
// element per block of rows. Not tuned on hardware (written without a GPU).
#pragma once

#include <cstdint>

#include "norms.cuh"
#include "norms_backward_launch.h"
#include "ordered_sum.cuh"
#include "vendor.h"

namespace zaya::kernels::norms_bwd {

using norms::elem;
using norms::kVec;
using norms::load8;
using norms::pack8;
using norms::Raw8;
using norms::store8;
using vendor::fadd;
using vendor::fmul;
using vendor::kWarpSize;

inline constexpr int kBlock = 256;  // threads per block: a multiple of 32 and 64
inline constexpr int kRows = static_cast<int>(kNormBwdRowsPerBlock);

// ---------------------------------------------------------------------------------------------
// Per-op chunk maths. load(): v (the normalised row's input, rounded as the forward rounds it) and
// gn = round_p(gy * w) of one chunk. finish(): the chunk's input gradients, written, and its
// parameter-gradient terms added into acc.
// ---------------------------------------------------------------------------------------------
template <class X, class W>
struct RmsOp {
  using Args = RmsNormBackwardArgs;
  static constexpr int kVecs = 1;

  static ZAYA_DEV void load(const Args& a, int64_t row, int o, float (&v)[kVec], float (&gn)[kVec]) {
    const auto x = load8<X>(static_cast<const typename X::storage*>(a.x) + row * a.x_row_stride + o);
    const auto w = load8<W>(static_cast<const typename W::storage*>(a.weight) + o);
    const auto gy = load8<W>(static_cast<const typename W::storage*>(a.grad_y) + row * a.hidden + o);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      v[j] = W::round(elem<X>(x, j));
      gn[j] = W::round(fmul(elem<W>(gy, j), elem<W>(w, j)));
    }
  }

  static ZAYA_DEV void finish(const Args& a, int64_t row, int o, float inv, float coef, float (&acc)[kVecs][kVec]) {
    const auto x = load8<X>(static_cast<const typename X::storage*>(a.x) + row * a.x_row_stride + o);
    const auto w = load8<W>(static_cast<const typename W::storage*>(a.weight) + o);
    const auto gy = load8<W>(static_cast<const typename W::storage*>(a.grad_y) + row * a.hidden + o);
    float gx[kVec];
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const float v = W::round(elem<X>(x, j));
      const float g = elem<W>(gy, j);
      const float gn = W::round(fmul(g, elem<W>(w, j)));
      gx[j] = W::round(fadd(fmul(gn, inv), fmul(v, coef)));
      acc[0][j] = fadd(acc[0][j], W::round(fmul(g, W::round(fmul(v, inv)))));
    }
    store8<X>(static_cast<typename X::storage*>(a.grad_x) + row * a.hidden + o, pack8<X>(gx));
  }
};

// residual_scale_rmsnorm: av = round_p(h + hb), hv = round_p(av * hs), bv = r + rb, v = round_p(hv +
// bv * rs); gnr = g_new_r + round_p(gn * inv + v * coef); ghv = round_p(gnr); grad_h = round_p(ghv *
// hs); grad_r = gnr * rs; vector terms: hb: grad_h, hs: round_p(ghv * av), rb: grad_r, rs: gnr * bv,
// norm_weight: round_p(gy * round_p(v * inv)).
template <class P>
struct RsrOp {
  using Args = ResidualScaleRmsNormBackwardArgs;
  using S = typename P::storage;
  static constexpr int kVecs = 5;

  struct Chunk {
    float av[kVec], bv[kVec], v[kVec], g[kVec], gn[kVec];
    Raw8<P> hs, rs;
  };

  static ZAYA_DEV void chunk(const Args& a, int64_t row, int o, Chunk& k) {
    const auto h = load8<P>(static_cast<const S*>(a.h) + row * a.h_row_stride + o);
    const auto r = load8<dtype::F32>(a.residual + row * a.residual_row_stride + o);
    const auto hb = load8<P>(static_cast<const S*>(a.h_bias) + o);
    const auto rb = load8<P>(static_cast<const S*>(a.r_bias) + o);
    const auto w = load8<P>(static_cast<const S*>(a.norm_weight) + o);
    const auto gy = load8<P>(static_cast<const S*>(a.grad_normed) + row * a.hidden + o);
    k.hs = load8<P>(static_cast<const S*>(a.h_scale) + o);
    k.rs = load8<P>(static_cast<const S*>(a.r_scale) + o);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      k.av[j] = P::round(fadd(elem<P>(h, j), elem<P>(hb, j)));
      const float hv = P::round(fmul(k.av[j], elem<P>(k.hs, j)));
      k.bv[j] = fadd(elem<dtype::F32>(r, j), elem<P>(rb, j));
      k.v[j] = P::round(fadd(hv, fmul(k.bv[j], elem<P>(k.rs, j))));
      k.g[j] = elem<P>(gy, j);
      k.gn[j] = P::round(fmul(k.g[j], elem<P>(w, j)));
    }
  }

  static ZAYA_DEV void load(const Args& a, int64_t row, int o, float (&v)[kVec], float (&gn)[kVec]) {
    Chunk k;
    chunk(a, row, o, k);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      v[j] = k.v[j];
      gn[j] = k.gn[j];
    }
  }

  static ZAYA_DEV void finish(const Args& a, int64_t row, int o, float inv, float coef, float (&acc)[kVecs][kVec]) {
    Chunk k;
    chunk(a, row, o, k);
    const auto gnr_in = load8<dtype::F32>(a.grad_new_residual + row * a.hidden + o);
    float gh[kVec], gr[kVec];
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const float gnr = fadd(elem<dtype::F32>(gnr_in, j), P::round(fadd(fmul(k.gn[j], inv), fmul(k.v[j], coef))));
      const float ghv = P::round(gnr);
      gh[j] = P::round(fmul(ghv, elem<P>(k.hs, j)));
      gr[j] = fmul(gnr, elem<P>(k.rs, j));
      acc[0][j] = fadd(acc[0][j], gh[j]);
      acc[1][j] = fadd(acc[1][j], P::round(fmul(ghv, k.av[j])));
      acc[2][j] = fadd(acc[2][j], gr[j]);
      acc[3][j] = fadd(acc[3][j], fmul(gnr, k.bv[j]));
      acc[4][j] = fadd(acc[4][j], P::round(fmul(k.g[j], P::round(fmul(k.v[j], inv)))));
    }
    store8<P>(static_cast<S*>(a.grad_h) + row * a.hidden + o, pack8<P>(gh));
    store8<dtype::F32>(a.grad_residual + row * a.hidden + o, pack8<dtype::F32>(gr));
  }
};

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------
template <class Op>
__global__ void __launch_bounds__(kBlock) norm_backward_rows(typename Op::Args a) {
  __shared__ float stats[kRows][2];  // inv, coef per row of the block
  const int tid = static_cast<int>(threadIdx.x);
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int nrows = static_cast<int>(a.rows - row0 < kRows ? a.rows - row0 : kRows);
  const int chunks = static_cast<int>(a.hidden / kVec);

  // Phase A: row statistics, one warp per row (every lane of the warp joins each shuffle).
  const int warp = tid / kWarpSize, lane = tid % kWarpSize, warps = kBlock / kWarpSize;
  for (int i = warp; i < kRows; i += warps) {
    float ss = 0.f, dot = 0.f;
    if (i < nrows) {
      for (int c = lane; c < chunks; c += kWarpSize) {
        float v[kVec], gn[kVec];
        Op::load(a, row0 + i, c * kVec, v, gn);
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          ss = fadd(ss, fmul(v[j], v[j]));
          dot = fadd(dot, fmul(gn[j], v[j]));
        }
      }
    }
    ss = norms::row_sum(ss, kWarpSize, nullptr);
    dot = norms::row_sum(dot, kWarpSize, nullptr);
    if (lane == 0 && i < nrows) {
      const float inv = norms::inv_rms(ss, a.hidden, a.eps);
      stats[i][0] = inv;
      stats[i][1] = -fmul(vendor::fdiv(dot, static_cast<float>(a.hidden)), fmul(fmul(inv, inv), inv));
    }
  }
  __syncthreads();

  // Phase B: input gradients and this block's parameter-gradient partials, column chunks per thread.
  const int64_t n = Op::kVecs * a.hidden;
  float* partial = a.workspace + static_cast<int64_t>(blockIdx.x) * n;
  for (int c = tid; c < chunks; c += kBlock) {
    float acc[Op::kVecs][kVec];
#pragma unroll
    for (int k = 0; k < Op::kVecs; ++k) {
#pragma unroll
      for (int j = 0; j < kVec; ++j) acc[k][j] = 0.f;
    }
    for (int i = 0; i < nrows; ++i) Op::finish(a, row0 + i, c * kVec, stats[i][0], stats[i][1], acc);
#pragma unroll
    for (int k = 0; k < Op::kVecs; ++k) store8<dtype::F32>(partial + k * a.hidden + c * kVec, pack8<dtype::F32>(acc[k]));
  }
}

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------
inline const char* prepare(const char* op, int64_t rows, int64_t hidden, int64_t* blocks) {
  if (rows < 0 || hidden < 0) return "zaya norms backward: negative size";
  if (hidden % kVec != 0) return "zaya norms backward: hidden size must be a multiple of 8";
  if (hidden / kVec > int64_t{0x7fffffff}) return "zaya norms backward: hidden size too large";
  int dev = 0, warp = 0;
  if (const char* err = vendor::current_device(op, &dev, &warp)) return err;
  *blocks = (rows + kRows - 1) / kRows;
  if (*blocks > int64_t{0x7fffffff}) return "zaya norms backward: too many rows for one launch";
  return nullptr;
}

template <class P, class Op>
const char* run(const typename Op::Args& a, int64_t blocks, void* grads, vendor::stream_t stream) {
  const int64_t n = Op::kVecs * a.hidden;
  if (blocks > 0) {
    if (const char* err = vendor::launch(&norm_backward_rows<Op>, dim3(static_cast<unsigned>(blocks)), dim3(kBlock),
                                         0, stream, a))
      return err;
  }
  return ordered_sum::launch_sum_partials<P>(static_cast<const float*>(a.workspace), blocks, n, grads, stream);
}

inline const char* launch_rms_norm_backward_impl(const RmsNormBackwardArgs& a, vendor::stream_t stream) {
  if (a.hidden == 0) return nullptr;
  int64_t blocks = 0;
  if (const char* err = prepare("rms_norm_backward", a.rows, a.hidden, &blocks)) return err;
  if (!norms::aligned16(a.x) || !norms::aligned16(a.weight) || !norms::aligned16(a.grad_y) ||
      !norms::aligned16(a.grad_x) || !norms::aligned16(a.workspace) ||
      (a.rows > 1 && (a.x_row_stride * norms::elem_size(a.x_dtype)) % 16 != 0))
    return "zaya rms_norm_backward: pointers and row strides must be 16-byte aligned";
  return norms::with_dtype(a.x_dtype, [&](auto xt) {
    return norms::with_dtype(a.w_dtype, [&](auto wt) -> const char* {
      using X = decltype(xt);
      using W = decltype(wt);
      return run<W, RmsOp<X, W>>(a, blocks, a.grad_weight, stream);
    });
  });
}

inline const char* launch_residual_scale_rmsnorm_backward_impl(const ResidualScaleRmsNormBackwardArgs& a,
                                                               vendor::stream_t stream) {
  if (a.hidden == 0) return nullptr;
  int64_t blocks = 0;
  if (const char* err = prepare("residual_scale_rmsnorm_backward", a.rows, a.hidden, &blocks)) return err;
  const int64_t es = norms::elem_size(a.dtype);
  if (!norms::aligned16(a.h) || !norms::aligned16(a.residual) || !norms::aligned16(a.h_bias) ||
      !norms::aligned16(a.h_scale) || !norms::aligned16(a.r_bias) || !norms::aligned16(a.r_scale) ||
      !norms::aligned16(a.norm_weight) || !norms::aligned16(a.grad_new_residual) ||
      !norms::aligned16(a.grad_normed) || !norms::aligned16(a.grad_h) || !norms::aligned16(a.grad_residual) ||
      !norms::aligned16(a.workspace) ||
      (a.rows > 1 && ((a.h_row_stride * es) % 16 != 0 || (a.residual_row_stride * 4) % 16 != 0)))
    return "zaya residual_scale_rmsnorm_backward: pointers and row strides must be 16-byte aligned";
  return norms::with_dtype(a.dtype, [&](auto pt) -> const char* {
    using P = decltype(pt);
    return run<P, RsrOp<P>>(a, blocks, a.grad_vectors, stream);
  });
}

}  // namespace zaya::kernels::norms_bwd
