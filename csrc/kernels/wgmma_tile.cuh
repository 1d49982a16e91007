// Test-only kernel: one Hopper warpgroup MMA tile, out[64][N] = A[64][K] B[N][K]^T, through exactly
// the operand layouts, descriptor helpers and fragment loaders the Hopper kernels use (wgmma.cuh,
// mma.cuh). tests/test_wgmma_tiles.py runs it against torch.matmul for the three operand forms the
// kernels issue:
//   * "ss", B K-major: A and B in shared memory in the kmajor_offset core layout, both read through
//     kmajor_desc (moe_top1_sm90's and cca_attention_sm90's S = Q K^T);
//   * "rs": A in registers, loaded from a row-major shared tile by mma::load_a (warp w of the
//     warpgroup holds rows 16w .. 16w + 15), B as above;
//   * MN-major B: B^T (k x n) stored by kmajor_offset(k, n, N), read through mn_major_desc, exactly
//     as cca_attention_sm90 reads V in O += P V (LBO = 16 N B along k, SBO = 128 B along n);
//   * K-major 128-byte swizzle (swizzle128; A too in the ss form): each 64-column block of k a
//     [rows][64] tile at wgmma::sw128_offset, 1024-byte aligned, read through make_desc_sw128 (SBO 1024
//     B, k-step kk 32 kk bytes into the rows), as moe_top1_sm90 places and reads its tiles.
// Under the 32-lane SIMT emulator this checks the kernels against the emulator's model of wgmma; on a
// Hopper GPU it checks them, and the descriptor reading, against the silicon. The k-step loop has a
// run-time trip count, so ptxas serialises the wgmmas (info C7520): no matter for a correctness test.
#pragma once

#include <cstdint>

#include "mma.cuh"
#include "vendor.h"
#include "wgmma.cuh"
#include "wgmma_tile_launch.h"

#if defined(ZAYA_HAVE_WGMMA_SOURCE)

namespace zaya::kernels::wgmma_tile {

// Columns of a swizzled tile's storage: K rounded up to whole 64-column blocks.
ZAYA_HD constexpr int sw128_cols(int K) { return (K + 63) / 64 * 64; }
// Element offset of (r, k) in a [rows][K] operand stored swizzled: k-block k / 64 of [rows][64], then
// sw128_offset within it.
ZAYA_HD int sw128_tile_offset(int r, int k, int rows) { return (k >> 6) * rows * 64 + wgmma::sw128_offset(r, k & 63); }

template <class T, int N, bool kRS, bool kMnMajorB, bool kSw128>
__global__ void __launch_bounds__(wgmma::kThreads) tile_kernel(const uint16_t* a, const uint16_t* b, float* out, int K) {
  static_assert(!kSw128 || !kMnMajorB, "the 128-byte swizzle is K-major only here");
  unsigned char* const raw = vendor::dynamic_smem<unsigned char>();
  // [64][K]: core layout or swizzled (ss), row-major (rs); 1024-byte aligned for the swizzle
  uint16_t* sa = reinterpret_cast<uint16_t*>(raw + (kSw128 ? (1024 - vendor::smem_u32(raw) % 1024) % 1024 : 0));
  const int kc = kSw128 ? sw128_cols(K) : K;  // storage columns
  uint16_t* sb = sa + 64 * kc;  // [N][K] K-major core layout or swizzled, or [K][N] for MN-major
  const int t = static_cast<int>(threadIdx.x);
  for (int i = t; i < 64 * K; i += wgmma::kThreads) {
    const int r = i / K, k = i % K;
    sa[kRS ? i : kSw128 ? sw128_tile_offset(r, k, 64) : wgmma::kmajor_offset(r, k, K)] = a[i];
  }
  for (int i = t; i < N * K; i += wgmma::kThreads) {
    const int n = i / K, k = i % K;
    sb[kMnMajorB ? wgmma::kmajor_offset(k, n, N) : kSw128 ? sw128_tile_offset(n, k, N) : wgmma::kmajor_offset(n, k, K)] =
        b[i];
  }
  wgmma::fence_async_proxy();
  __syncthreads();

  wgmma::Acc<N> acc;
#pragma unroll
  for (int i = 0; i < N / 2; ++i) acc.x[i] = 0.f;
  const int warp = t / 32, lane = t % 32;
  wgmma::fence();
  for (int ks = 0; ks < K / 16; ++ks) {
    // swizzled: k-block ks / 4, then 16 elements (32 bytes) per k-step inside the 128-byte rows
    const uint64_t db = kSw128      ? wgmma::make_desc_sw128(sb + sw128_tile_offset(0, 16 * ks, N), 1024)
                        : kMnMajorB ? wgmma::mn_major_desc(sb, ks, N)
                                    : wgmma::kmajor_desc(sb, ks, K);
    if constexpr (kRS) {
      const wgmma::FragA fa = mma::load_a(sa + 16 * warp * K + 16 * ks, K, lane);
      wgmma::mma_rs<T, kMnMajorB>(acc, fa, db, ks > 0);
    } else {
      const uint64_t da = kSw128 ? wgmma::make_desc_sw128(sa + sw128_tile_offset(0, 16 * ks, 64), 1024)
                                 : wgmma::kmajor_desc(sa, ks, K);
      wgmma::mma_ss<T, kMnMajorB>(acc, da, db, ks > 0);
    }
  }
  wgmma::commit();
  wgmma::wait<0>();
  wgmma::fence_acc(acc);
#pragma unroll
  for (int i = 0; i < N / 2; ++i) out[wgmma::acc_row(t, i) * N + wgmma::acc_col(t, i)] = acc.x[i];
}

template <class T, int N>
const char* launch_n(const WgmmaTileArgs& g, vendor::stream_t stream) {
  auto pick = [&]() -> void (*)(const uint16_t*, const uint16_t*, float*, int) {
    if (g.swizzle128)
      return g.a_from_registers ? &tile_kernel<T, N, true, false, true> : &tile_kernel<T, N, false, false, true>;
    if (g.a_from_registers)
      return g.b_mn_major ? &tile_kernel<T, N, true, true, false> : &tile_kernel<T, N, true, false, false>;
    return g.b_mn_major ? &tile_kernel<T, N, false, true, false> : &tile_kernel<T, N, false, false, false>;
  };
  const size_t cols = static_cast<size_t>(g.swizzle128 ? sw128_cols(static_cast<int>(g.K)) : static_cast<int>(g.K));
  const size_t smem = (g.swizzle128 ? 1024 : 0) + static_cast<size_t>(64 + N) * cols * 2;
  return vendor::launch(pick(), dim3(1), dim3(wgmma::kThreads), smem, stream, static_cast<const uint16_t*>(g.a),
                        static_cast<const uint16_t*>(g.b), g.out, static_cast<int>(g.K));
}

inline const char* launch_impl(const WgmmaTileArgs& g, vendor::stream_t stream) {
  if (g.N != 64 && g.N != 128) return "wgmma tile: N must be 64 or 128";
  if (g.K <= 0 || g.K % 16 != 0 || g.K > kWgmmaTileMaxK) return "wgmma tile: K must be a multiple of 16 up to 128";
  if (!vendor::aligned16(g.a) || !vendor::aligned16(g.b)) return "wgmma tile: a and b must be 16-byte aligned";
  if (g.swizzle128 && g.b_mn_major) return "wgmma tile: the 128-byte swizzle is modelled for K-major B only";
#if !defined(ZAYA_EMU)
  int dev = 0, major = 0;
  if (vendor::get_device(&dev) != vendor::kSuccess ||
      vendor::cc_major(&major, dev) != vendor::kSuccess || major != 9)  // cached per device
    return "wgmma tile: needs a compute capability 9.x (Hopper) GPU";
#endif
  const bool bf = g.dtype == DType::BF16;
  if (!bf && g.dtype != DType::F16) return "wgmma tile: dtype must be bfloat16 or float16";
  if (g.N == 64) return bf ? launch_n<dtype::BF16, 64>(g, stream) : launch_n<dtype::F16, 64>(g, stream);
  return bf ? launch_n<dtype::BF16, 128>(g, stream) : launch_n<dtype::F16, 128>(g, stream);
}

}  // namespace zaya::kernels::wgmma_tile

#endif  // ZAYA_HAVE_WGMMA_SOURCE
