// Self-tests of the SIMT emulator's models of hardware units (tests/test_emulator.py): small kernels
// that use wgmma.cuh and tma.cuh correctly (their results must match a host computation) or break one
// of their rules on purpose (the launch must fail with the matching message). They keep the emulator's
// checks from silently rotting: a checker that stopped firing would let kernel bugs through.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/tma.cuh"
#include "kernels/vendor.h"
#include "kernels/wgmma.cuh"

namespace zaya::emu_selftest {

#if defined(ZAYA_HAVE_WGMMA_SOURCE)

enum class Bug { kNone, kOverwrite, kDescriptors };

// C[64][N] = A[64][32] x B^T with A K-major in shared memory (or in registers, kRS) and B [N][32]
// K-major, or stored [32][N] MN-major (kTrans); both k16 steps in one commit group.
template <int N, bool kTrans, bool kRS>
__global__ void gemm_kernel(float* out, const uint16_t* A, const uint16_t* B, Bug bug) {
  uint16_t* sa = vendor::dynamic_smem<uint16_t>();
  uint16_t* sb = sa + 64 * 32;
  const int t = static_cast<int>(threadIdx.x);
  for (int i = t; i < 64 * 32; i += 128) sa[wgmma::kmajor_offset(i / 32, i % 32, 32)] = A[i];
  for (int i = t; i < N * 32; i += 128) {
    const int n = i / 32, k = i % 32;
    if (kTrans) {
      sb[((k >> 3) * (N >> 3) + (n >> 3)) * 64 + (k & 7) * 8 + (n & 7)] = B[i];  // core: 8 k-rows x 8 n
    } else {
      sb[wgmma::kmajor_offset(n, k, 32)] = B[i];
    }
  }
  __syncthreads();
  wgmma::Acc<N> acc;
  wgmma::fence();
  for (int ks = 0; ks < 32; ks += 16) {
    const uint64_t db = kTrans ? wgmma::make_desc(sb + (ks / 8) * (N / 8) * 64, (N / 8) * 128, 128)
                               : wgmma::make_desc(sb + (ks / 8) * 64, 128, 4 * 128);
    if constexpr (kRS) {
      const int w = t / 32, l = t % 32, g = l / 4, q = l % 4;
      auto pair = [&](int r, int c) { return uint32_t{A[r * 32 + c]} | (uint32_t{A[r * 32 + c + 1]} << 16); };
      wgmma::FragA fa{{pair(16 * w + g, ks + 2 * q), pair(16 * w + g + 8, ks + 2 * q), pair(16 * w + g, ks + 2 * q + 8),
                       pair(16 * w + g + 8, ks + 2 * q + 8)}};
      wgmma::mma_rs<dtype::BF16, kTrans>(acc, fa, db, ks > 0);
    } else {
      const uint32_t sbo = bug == Bug::kDescriptors ? 4 * 128 + 16 * (t / 32) : 4 * 128;
      wgmma::mma_ss<dtype::BF16, kTrans>(acc, wgmma::make_desc(sa + (ks / 8) * 64, 128, sbo), db, ks > 0);
    }
  }
  wgmma::commit();
  if (bug == Bug::kOverwrite && t == 77) sb[5] ^= 0x4000;  // while the group may still read it
  wgmma::wait<0>();
  wgmma::fence_acc(acc);
  for (int i = 0; i < N / 2; ++i) out[wgmma::acc_row(t, i) * N + wgmma::acc_col(t, i)] = acc.x[i];
}

template <int N, bool kTrans, bool kRS>
std::string run_gemm(Bug bug) {
  std::vector<uint16_t> A(64 * 32), B(N * 32);
  std::vector<float> out(64 * N, NAN);
  unsigned s = 12345;
  auto next = [&] { return vendor::float_to_bf16(static_cast<float>(static_cast<int>((s = s * 1103515245u + 12345u) >> 16) % 17 - 8) / 4.f); };
  for (auto& v : A) v = next();
  for (auto& v : B) v = next();
  const size_t smem = (64 + N) * 32 * 2;
  if (const char* e = vendor::launch(&gemm_kernel<N, kTrans, kRS>, dim3(1), dim3(128), smem, nullptr, out.data(),
                                     static_cast<const uint16_t*>(A.data()), static_cast<const uint16_t*>(B.data()), bug))
    return e;
  for (int r = 0; r < 64; ++r)
    for (int n = 0; n < N; ++n) {
      float want = 0.f;
      for (int k = 0; k < 32; ++k) want += vendor::bf16_to_float(A[r * 32 + k]) * vendor::bf16_to_float(B[n * 32 + k]);
      if (std::fabs(want - out[r * N + n]) > 1e-3f) {
        return "wrong product at (" + std::to_string(r) + ", " + std::to_string(n) + "): " +
               std::to_string(out[r * N + n]) + " instead of " + std::to_string(want);
      }
    }
  return "";
}

// TMA: a 5 x 8 box at (row0, col0) of a 6 x 12 matrix (zeros outside), completing on an mbarrier;
// kEarly waits before the copy is issued.
template <bool kEarly>
__global__ void tma_kernel(uint16_t* out, const __grid_constant__ tma::Map map, int row0, int col0) {
  uint16_t* box = vendor::dynamic_smem<uint16_t>();
  __shared__ uint64_t bar;
  const int t = static_cast<int>(threadIdx.x);
  if (t == 0) {
    tma::bar_init(&bar, 1);
    tma::bar_init_fence();
  }
  __syncthreads();
  if (kEarly) tma::bar_wait(&bar, 0);
  if (t == 0) {
    tma::bar_arrive_expect_tx(&bar, 5 * 8 * 2);
    tma::load_2d(box, &map, &bar, row0, col0);
  }
  __syncthreads();
  tma::bar_wait(&bar, 0);
  for (int i = t; i < 5 * 8; i += static_cast<int>(blockDim.x)) out[i] = box[i];
}

template <bool kEarly>
std::string run_tma() {
  std::vector<uint16_t> m(6 * 16);  // row stride 16, 12 columns used
  for (int i = 0; i < 6 * 16; ++i) m[i] = static_cast<uint16_t>(1000 + i);
  tma::Map map;
  if (const char* e = tma::make_map_2d(&map, m.data(), 6, 12, 16, 5, 8)) return e;
  std::vector<uint16_t> out(5 * 8, 0xFFFF);
  const int row0 = 3, col0 = 8;  // rows 3..7 (6, 7 outside), columns 8..15 (12.. outside)
  if (const char* e = vendor::launch(&tma_kernel<kEarly>, dim3(1), dim3(64), 5 * 8 * 2, nullptr, out.data(), map, row0, col0))
    return e;
  for (int r = 0; r < 5; ++r)
    for (int c = 0; c < 8; ++c) {
      const int gr = row0 + r, gc = col0 + c;
      const uint16_t want = gr < 6 && gc < 12 ? m[gr * 16 + gc] : 0;
      if (out[r * 8 + c] != want) return "wrong box element (" + std::to_string(r) + ", " + std::to_string(c) + ")";
    }
  return "";
}

#endif

// A shuffle that only the last 16 threads reach, while the rest of the block waits at a barrier: a hang
// on a GPU, a deadlock report here.
__global__ void divergent_shuffle_kernel(float* out) {
  float v = 1.f;
  if (threadIdx.x >= 48) v = vendor::shfl_xor(v, 1);
  __syncthreads();
  out[threadIdx.x] = v;
}

std::string run(const std::string& name) {
  if (name == "divergent_shuffle") {
    std::vector<float> out(64);
    const char* e = vendor::launch(&divergent_shuffle_kernel, dim3(1), dim3(64), 0, nullptr, out.data());
    return e ? e : "";
  }
#if defined(ZAYA_HAVE_WGMMA_SOURCE)
  if (name == "wgmma_layouts") {
    for (const std::string& r : {run_gemm<64, false, false>(Bug::kNone), run_gemm<128, false, false>(Bug::kNone),
                                 run_gemm<64, true, false>(Bug::kNone), run_gemm<128, true, false>(Bug::kNone),
                                 run_gemm<64, false, true>(Bug::kNone), run_gemm<128, true, true>(Bug::kNone)})
      if (!r.empty()) return r;
    return "";
  }
  if (name == "wgmma_overwrite") return run_gemm<64, false, false>(Bug::kOverwrite);
  if (name == "wgmma_descriptors_differ") return run_gemm<64, false, false>(Bug::kDescriptors);
  if (name == "tma_box") return run_tma<false>();
  if (name == "mbarrier_early_wait") return run_tma<true>();
#endif
  return "unknown self-test " + name;
}

}  // namespace zaya::emu_selftest

std::string zaya_emu_selftest(const std::string& name) { return zaya::emu_selftest::run(name); }
int64_t zaya_emu_launches() { return zaya::emu::launch_count().load(); }
int64_t zaya_emu_attribute_queries() { return zaya::emu::attribute_queries().load(); }
void zaya_emu_set_device_warp_size(int n) {
  zaya::emu::device_warp_attribute().store(n > 0 ? n : ZAYA_EMU_WARP_SIZE);
  zaya::vendor::forget_device_facts();
}
