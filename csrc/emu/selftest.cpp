// Self-tests of the SIMT emulator's models of hardware units (tests/test_emulator.py): small kernels
// that use wgmma.cuh and tma.cuh correctly (their results must match a host computation) or break one
// of their rules on purpose (the launch must fail with the matching message). They keep the emulator's
// checks from silently rotting: a checker that stopped firing would let kernel bugs through.
// Below them, the layout probes (tests/test_layouts.py): the fragment maps of mma.cuh's loaders and
// accumulators, wgmma.cuh's descriptors and the emulated instructions, lane by lane, for comparison
// with CUTLASS/CuTe's and composable_kernel's statements of the same layouts.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "kernels/mma.cuh"
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

// A box_rows x box_cols TMA box at (row0, col0) of a rows x cols matrix whose element (r, c) holds
// 1 + (r << 8) + c (zero fill: 0), into 1024-byte-aligned dynamic shared memory, with or without the
// 128-byte swizzle; returns the raw shared-memory image (16-bit halves) as the copy left it.
__global__ void tma_image_kernel(uint16_t* out, const __grid_constant__ tma::Map map, int row0, int col0, int halves) {
  uint16_t* box = vendor::dynamic_smem<uint16_t>();
  __shared__ uint64_t bar;
  if (threadIdx.x == 0) {
    tma::bar_init(&bar, 1);
    tma::bar_init_fence();
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    tma::bar_arrive_expect_tx(&bar, static_cast<uint32_t>(halves) * 2);
    tma::load_2d(box, &map, &bar, row0, col0);
  }
  __syncthreads();
  tma::bar_wait(&bar, 0);
  for (int i = static_cast<int>(threadIdx.x); i < halves; i += static_cast<int>(blockDim.x)) out[i] = box[i];
}

std::vector<int64_t> tma_box_image(int rows, int cols, int box_rows, int box_cols, int row0, int col0, bool swizzle) {
  if (rows <= 0 || rows > 255 || cols <= 0 || cols > 255 || cols % 8 != 0)
    throw std::invalid_argument("tma_box_image: rows, cols in 1..255, cols a multiple of 8");
  std::vector<uint16_t> m(static_cast<size_t>(rows) * cols);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) m[static_cast<size_t>(r) * cols + c] = static_cast<uint16_t>(1 + (r << 8) + c);
  tma::Map map;
  if (const char* e = tma::make_map_2d(&map, m.data(), rows, cols, cols, box_rows, box_cols,
                                       swizzle ? tma::Swizzle::k128B : tma::Swizzle::kNone))
    throw std::invalid_argument(e);
  const int halves = box_rows * box_cols;
  std::vector<uint16_t> out(static_cast<size_t>(halves), 0xFFFF);
  if (const char* e = vendor::launch(&tma_image_kernel, dim3(1), dim3(64), static_cast<size_t>(halves) * 2, nullptr,
                                     out.data(), map, row0, col0, halves))
    throw std::runtime_error(e);
  return {out.begin(), out.end()};
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

// ------------------------------------------------------------------------------------------------
// Layout probes (tests/test_layouts.py): what mma.cuh's loaders and accumulator maps, wgmma.cuh's
// descriptors and the emulated instructions do, lane by lane, for comparison with an independent
// source (CUTLASS/CuTe's MMA traits, composable_kernel's xdlops parameters).
// ------------------------------------------------------------------------------------------------
namespace probe {

constexpr int kHalvesA = static_cast<int>(sizeof(mma::FragA) / 2), kHalvesB = static_cast<int>(sizeof(mma::FragB) / 2);

// One warp: a 16 x 16 operand whose element (row, col) holds (row << 8) | col, stored as the loader
// expects (A[m][k] at s[m * ld + k]; B[k][n] at s[n * ld + k] for load_b_nk, s[k * ld + n] for
// load_b_kn; padding columns 0xFFFF), loaded by every lane; out[lane][half] = its registers' halves.
__global__ void loader_kernel(uint16_t* out, int kind, int ld) {
  uint16_t* s = vendor::dynamic_smem<uint16_t>();
  const int lane = static_cast<int>(threadIdx.x);
  for (int i = lane; i < 16 * ld; i += vendor::kWarpSize) {
    const int r = i / ld, c = i % ld;
    // storage (r, c) holds operand element (c, r) for the n-major B tile, (r, c) otherwise
    s[i] = c >= 16 ? 0xFFFF : kind % 3 == 1 ? static_cast<uint16_t>((c << 8) | r) : static_cast<uint16_t>((r << 8) | c);
  }
  __syncthreads();
  if (kind % 3 == 0) {
    const mma::FragA f = kind == 0 ? mma::load_a(s, ld, lane) : mma::load_a_v<true>(s, ld, lane);
    std::memcpy(out + lane * kHalvesA, &f, sizeof f);
  } else {
    const mma::FragB f = kind == 1   ? mma::load_b_nk(s, ld, lane)
                         : kind == 2 ? mma::load_b_kn(s, ld, lane)
                         : kind == 4 ? mma::load_b_nk_v<true>(s, ld, lane)
                                     : mma::load_b_kn_v<true>(s, ld, lane);
    std::memcpy(out + lane * kHalvesB, &f, sizeof f);
  }
}

std::vector<int64_t> loader_regs(const std::string& kind, int ld) {
  const int k = kind == "a" ? 0 : kind == "b_nk" ? 1 : kind == "b_kn" ? 2 : kind == "a_ldsm" ? 3 : kind == "b_nk_ldsm" ? 4
              : kind == "b_kn_ldsm" ? 5 : -1;
  if (k < 0)
    throw std::invalid_argument("mma_loader_regs: kind must be 'a', 'b_nk', 'b_kn' or one of them + '_ldsm', got '" +
                                kind + "'");
  if (ld < 16 || ld % 2 != 0) throw std::invalid_argument("mma_loader_regs: ld must be even and >= 16");
  if (k >= 3 && (vendor::kWarpSize != 32 || ld % 8 != 0))
    throw std::invalid_argument("mma_loader_regs: the ldmatrix loaders need the 32-lane emulator and ld % 8 == 0");
  std::vector<uint16_t> out(vendor::kWarpSize * std::max(kHalvesA, kHalvesB), 0xFFFF);
  if (const char* e = vendor::launch(&loader_kernel, dim3(1), dim3(vendor::kWarpSize), static_cast<size_t>(16 * ld * 2), nullptr,
                                     out.data(), k, ld))
    throw std::runtime_error(e);
  out.resize(vendor::kWarpSize * (k == 0 ? kHalvesA : kHalvesB));
  return {out.begin(), out.end()};
}

#if ZAYA_EMU_WARP_SIZE == 32
// One warp: a 32-row tile (ld elements per row) whose element (r, c) holds (r << 8) | c; lane l supplies
// the address of row rows[l] to one ldmatrix<N, trans>; out[lane][i] = its register i.
template <int N, bool kTrans>
__global__ void ldmatrix_kernel(uint32_t* out, const int* rows, int ld) {
  uint16_t* s = vendor::dynamic_smem<uint16_t>();
  const int lane = static_cast<int>(threadIdx.x);
  for (int i = lane; i < 32 * ld; i += vendor::kWarpSize) s[i] = static_cast<uint16_t>(((i / ld) << 8) | (i % ld));
  __syncthreads();
  uint32_t r[N];
  mma::ldmatrix<N, kTrans>(r, s + rows[lane] * ld);
  for (int i = 0; i < N; ++i) out[lane * N + i] = r[i];
}

std::vector<int64_t> ldmatrix_regs(int n, bool trans, const std::vector<int64_t>& rows, int ld) {
  if (rows.size() != 32) throw std::invalid_argument("ldmatrix_regs: rows must name one row (0..31) per lane");
  for (int64_t r : rows)
    if (r < 0 || r >= 32) throw std::invalid_argument("ldmatrix_regs: rows must be in 0..31");
  // ld % 8 != 0 puts rows off 16-byte boundaries: the emulated instruction must refuse them
  if (ld < 8 || ld % 4 != 0 || ld > 256) throw std::invalid_argument("ldmatrix_regs: ld must be a multiple of 4 in 8..256");
  std::vector<int> rv(rows.begin(), rows.end());
  std::vector<uint32_t> out(32 * n, 0);
  const size_t smem = static_cast<size_t>(32 * ld * 2);
  const char* e = nullptr;
  auto run = [&](auto kernel) { e = vendor::launch(kernel, dim3(1), dim3(32), smem, nullptr, out.data(), static_cast<const int*>(rv.data()), ld); };
  if (n == 1) trans ? run(&ldmatrix_kernel<1, true>) : run(&ldmatrix_kernel<1, false>);
  else if (n == 2) trans ? run(&ldmatrix_kernel<2, true>) : run(&ldmatrix_kernel<2, false>);
  else if (n == 4) trans ? run(&ldmatrix_kernel<4, true>) : run(&ldmatrix_kernel<4, false>);
  else throw std::invalid_argument("ldmatrix_regs: n must be 1, 2 or 4");
  if (e) throw std::runtime_error(e);
  return {out.begin(), out.end()};
}
#endif

// (row, col) of accumulator i of each lane, as the kernels store them (mma::c_row / c_col), and the
// row the row-reduction helpers assign it (slot_row(lane, c_slot(i))).
std::vector<std::array<int64_t, 3>> accumulator_map() {
  std::vector<std::array<int64_t, 3>> m;
  for (int l = 0; l < vendor::kWarpSize; ++l)
    for (int i = 0; i < mma::kAccum; ++i) m.push_back({mma::c_row(l, i), mma::c_col(l, i), mma::slot_row(l, mma::c_slot(i))});
  return m;
}

// The emulated instruction's own view (mma.cuh's emu_detail): (row, col) of A, B ((k, n)) and C
// element e of lane l.
std::vector<std::array<int64_t, 2>> instruction_map(const std::string& operand) {
  std::vector<std::array<int64_t, 2>> m;
  const int n = operand == "a" ? kHalvesA : operand == "b" ? kHalvesB : operand == "c" ? mma::kAccum : -1;
  if (n < 0) throw std::invalid_argument("mma_instruction_map: operand must be 'a', 'b' or 'c'");
  for (int l = 0; l < vendor::kWarpSize; ++l)
    for (int e = 0; e < n; ++e) {
      const auto p = operand == "a" ? mma::emu_detail::a_elem(l, e)
                     : operand == "b" ? mma::emu_detail::b_elem(l, e) : mma::emu_detail::c_elem(l, e);
      m.push_back({p.r, p.c});
    }
  return m;
}

// One emulated mma() from given per-lane registers: d = c + A B.
template <class D>
__global__ void mma_kernel(float* d, const uint16_t* a, const uint16_t* b, const float* c) {
  const int lane = static_cast<int>(threadIdx.x);
  mma::FragA fa;
  mma::FragB fb;
  mma::FragC fc;
  std::memcpy(&fa, a + lane * kHalvesA, sizeof fa);
  std::memcpy(&fb, b + lane * kHalvesB, sizeof fb);
  std::memcpy(&fc, c + lane * mma::kAccum, sizeof fc);
  mma::mma<D>(fc, fa, fb);
  std::memcpy(d + lane * mma::kAccum, &fc, sizeof fc);
}

std::vector<double> run_mma(bool bf16, const std::vector<int64_t>& a, const std::vector<int64_t>& b,
                            const std::vector<double>& c) {
  if (a.size() != static_cast<size_t>(vendor::kWarpSize * kHalvesA) || b.size() != static_cast<size_t>(vendor::kWarpSize * kHalvesB) ||
      c.size() != static_cast<size_t>(vendor::kWarpSize * mma::kAccum))
    throw std::invalid_argument("mma_instruction: a, b, c must hold warp x registers elements");
  std::vector<uint16_t> va(a.begin(), a.end()), vb(b.begin(), b.end());
  std::vector<float> vc(c.begin(), c.end()), vd(c.size());
  const char* e = bf16 ? vendor::launch(&mma_kernel<dtype::BF16>, dim3(1), dim3(vendor::kWarpSize), 0, nullptr, vd.data(),
                                        static_cast<const uint16_t*>(va.data()), static_cast<const uint16_t*>(vb.data()),
                                        static_cast<const float*>(vc.data()))
                       : vendor::launch(&mma_kernel<dtype::F16>, dim3(1), dim3(vendor::kWarpSize), 0, nullptr, vd.data(),
                                        static_cast<const uint16_t*>(va.data()), static_cast<const uint16_t*>(vb.data()),
                                        static_cast<const float*>(vc.data()));
  if (e) throw std::runtime_error(e);
  return {vd.begin(), vd.end()};
}

#if defined(ZAYA_HAVE_WGMMA_SOURCE)
std::vector<std::array<int64_t, 2>> wgmma_accumulator_map(int n) {
  if (n != 64 && n != 128) throw std::invalid_argument("wgmma_accumulator_map: n must be 64 or 128");
  std::vector<std::array<int64_t, 2>> m;
  for (int t = 0; t < wgmma::kThreads; ++t)
    for (int i = 0; i < n / 2; ++i) m.push_back({wgmma::acc_row(t, i), wgmma::acc_col(t, i)});
  return m;
}

std::vector<int64_t> kmajor_offsets(int rows, int cols) {
  if (rows <= 0 || rows % 8 != 0 || cols <= 0 || cols % 8 != 0 || rows * cols > (1 << 20))
    throw std::invalid_argument("wgmma_kmajor_offsets: rows and cols must be positive multiples of 8");
  std::vector<int64_t> out;
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) out.push_back(wgmma::kmajor_offset(r, c, cols));
  return out;
}

std::vector<int64_t> sw128_offsets(int rows) {
  if (rows <= 0 || rows % 8 != 0 || rows > 4096) throw std::invalid_argument("wgmma_sw128_offsets: rows: multiple of 8");
  std::vector<int64_t> out;
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < 64; ++c) out.push_back(wgmma::sw128_offset(r, c));
  return out;
}

// One thread: the descriptor wgmma.cuh builds for a tile at byte offset `offset` of shared memory.
__global__ void desc_kernel(uint64_t* out, int kind, int offset, int x, int y) {
  const uint16_t* p = vendor::dynamic_smem<uint16_t>() + offset / 2;
  *out = kind == 0   ? wgmma::make_desc(p, static_cast<uint32_t>(x), static_cast<uint32_t>(y))
         : kind == 1 ? wgmma::kmajor_desc(p, x, y)
         : kind == 2 ? wgmma::mn_major_desc(p, x, y)
                     : wgmma::make_desc_sw128(p + 16 * x, static_cast<uint32_t>(y));
}

// kind "raw": make_desc(offset, lbo = x, sbo = y); "kmajor" / "mn_major": kmajor_desc / mn_major_desc
// (tile at offset, ks = x, cols = y); "sw128": make_desc_sw128 of k-step ks = x (32 x bytes into the
// rows of a swizzled tile at offset), sbo = y, as moe_top1_sm90 builds them.
uint64_t wgmma_desc(const std::string& kind, int offset, int x, int y) {
  const int k = kind == "raw" ? 0 : kind == "kmajor" ? 1 : kind == "mn_major" ? 2 : kind == "sw128" ? 3 : -1;
  if (k < 0) throw std::invalid_argument("wgmma_desc: kind must be 'raw', 'kmajor', 'mn_major' or 'sw128'");
  if (offset < 0 || offset % 16 != 0) throw std::invalid_argument("wgmma_desc: offset must be a multiple of 16");
  uint64_t d = 0;
  // room for the tile's k-steps past `offset` (the helpers point into it)
  if (const char* e = vendor::launch(&desc_kernel, dim3(1), dim3(1), static_cast<size_t>(offset) + (1 << 16), nullptr,
                                     &d, k, offset, x, y))
    throw std::runtime_error(e);
  return d;
}

// One thread: the byte offsets the emulated wgmma reads element (mn, k) of an operand from.
__global__ void offsets_kernel(int64_t* out, uint64_t desc, int rows, bool mn_major) {
  const wgmma::emu_detail::Operand o = wgmma::emu_detail::decode(desc);
  for (int mn = 0; mn < rows; ++mn)
    for (int k = 0; k < 16; ++k) out[mn * 16 + k] = wgmma::emu_detail::at(o, mn, k, mn_major);
}

std::vector<int64_t> wgmma_operand_offsets(uint64_t desc, int rows, bool mn_major) {
  if (rows <= 0 || rows > 256) throw std::invalid_argument("wgmma_operand_offsets: rows must be 1..256");
  std::vector<int64_t> out(static_cast<size_t>(rows) * 16);
  if (const char* e = vendor::launch(&offsets_kernel, dim3(1), dim3(1), 16, nullptr, out.data(), desc, rows, mn_major))
    throw std::runtime_error(e);
  return out;
}

// One warpgroup, one emulated k16 wgmma with the caller's shared-memory image and descriptors
// (a_desc empty: A from the caller's per-thread registers, the "rs" form); d starts at zero.
// out[thread][i] = accumulator i.
template <class D, int N>
__global__ void wgmma_kernel(float* out, const uint16_t* image, int halves, const uint16_t* regs, int a_off,
                             int a_lbo, int a_sbo, int b_off, int b_lbo, int b_sbo, bool b_mn_major) {
  uint16_t* s = vendor::dynamic_smem<uint16_t>();
  const int t = static_cast<int>(threadIdx.x);
  for (int i = t; i < halves; i += wgmma::kThreads) s[i] = image[i];
  wgmma::fence_async_proxy();
  __syncthreads();
  wgmma::Acc<N> acc;
  for (int i = 0; i < N / 2; ++i) acc.x[i] = 0.f;
  const uint64_t db = wgmma::make_desc(s + b_off / 2, static_cast<uint32_t>(b_lbo), static_cast<uint32_t>(b_sbo));
  wgmma::fence();
  auto issue = [&](auto trans) {
    if (regs != nullptr) {
      wgmma::FragA fa;
      std::memcpy(&fa, regs + t * 8, sizeof fa);
      wgmma::mma_rs<D, decltype(trans)::value>(acc, fa, db, false);
    } else {
      const uint64_t da = wgmma::make_desc(s + a_off / 2, static_cast<uint32_t>(a_lbo), static_cast<uint32_t>(a_sbo));
      wgmma::mma_ss<D, decltype(trans)::value>(acc, da, db, false);
    }
  };
  if (b_mn_major) {
    issue(std::true_type{});
  } else {
    issue(std::false_type{});
  }
  wgmma::commit();
  wgmma::wait<0>();
  for (int i = 0; i < N / 2; ++i) out[t * (N / 2) + i] = acc.x[i];
}

std::vector<double> run_wgmma(bool bf16, int n, const std::vector<int64_t>& image, const std::vector<int64_t>& regs,
                              const std::vector<int64_t>& a_desc, const std::vector<int64_t>& b_desc, bool b_mn_major) {
  if (n != 64 && n != 128) throw std::invalid_argument("wgmma_instruction: n must be 64 or 128");
  if (!regs.empty() && regs.size() != static_cast<size_t>(wgmma::kThreads * 8))
    throw std::invalid_argument("wgmma_instruction: regs must hold 128 x 8 halves (or be empty)");
  if ((regs.empty() && a_desc.size() != 3) || b_desc.size() != 3)
    throw std::invalid_argument("wgmma_instruction: a_desc and b_desc are (offset, lbo, sbo) in bytes");
  std::vector<uint16_t> img(image.begin(), image.end()), r(regs.begin(), regs.end());
  std::vector<float> out(static_cast<size_t>(wgmma::kThreads) * (n / 2));
  const int ao = regs.empty() ? static_cast<int>(a_desc[0]) : 0, al = regs.empty() ? static_cast<int>(a_desc[1]) : 0,
            as = regs.empty() ? static_cast<int>(a_desc[2]) : 0;
  const uint16_t* rp = regs.empty() ? nullptr : r.data();
  auto go = [&](auto kernel) {
    return vendor::launch(kernel, dim3(1), dim3(wgmma::kThreads), img.size() * 2, nullptr, out.data(),
                          static_cast<const uint16_t*>(img.data()), static_cast<int>(img.size()), rp, ao, al, as,
                          static_cast<int>(b_desc[0]), static_cast<int>(b_desc[1]), static_cast<int>(b_desc[2]),
                          b_mn_major);
  };
  const char* e = n == 64 ? (bf16 ? go(&wgmma_kernel<dtype::BF16, 64>) : go(&wgmma_kernel<dtype::F16, 64>))
                          : (bf16 ? go(&wgmma_kernel<dtype::BF16, 128>) : go(&wgmma_kernel<dtype::F16, 128>));
  if (e) throw std::runtime_error(e);
  return {out.begin(), out.end()};
}
#endif

}  // namespace probe

#if defined(ZAYA_SMEM_OPT_IN)
// Touches all of a 64 KiB dynamic shared-memory block.
__global__ void big_smem_kernel(int* out) {
  unsigned char* smem = vendor::dynamic_smem<unsigned char>();
  for (int i = static_cast<int>(threadIdx.x); i < 64 * 1024; i += 64) smem[i] = 1;
  __syncthreads();
  if (threadIdx.x == 0) out[0] = smem[64 * 1024 - 1];
}

// Above 48 KiB the emulated driver demands the kernel's opt-in, as CUDA does: a launch that bypasses
// vendor::launch's opt-in fails, one through it runs.
std::string run_smem_opt_in() {
  int out = 0;
  auto call = [&] { big_smem_kernel(&out); };
  using Call = decltype(call);
  const void* id = reinterpret_cast<const void*>(&big_smem_kernel);
  emu::reset_driver_state();
  vendor::reset_launch_caches();
  const char* e = emu::launch(dim3(1), dim3(64), 64 * 1024, [](void* c) { (*static_cast<Call*>(c))(); }, &call, id);
  if (e == nullptr || std::strstr(e, "opt-in") == nullptr) return "a 64 KiB launch without the opt-in was not refused";
  if (const char* err = vendor::launch(&big_smem_kernel, dim3(1), dim3(64), 64 * 1024, nullptr, &out)) return err;
  return out == 1 ? "" : "the 64 KiB kernel did not run";
}
#endif

std::string run(const std::string& name) {
#if defined(ZAYA_SMEM_OPT_IN)
  if (name == "smem_opt_in") return run_smem_opt_in();
#endif
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

// The layout probes, bound by module.cpp.
void zaya_emu_bind_probes(pybind11::module_& m) {
  namespace p = zaya::emu_selftest::probe;
  using pybind11::arg;
  m.def("mma_loader_regs", &p::loader_regs, arg("kind"), arg("ld") = 16,
        "Each lane's mma.cuh fragment registers (16-bit halves in register order, lane-major) after loading a 16x16 "
        "operand whose element (row, col) holds (row << 8) | col: kind 'a' (load_a), 'b_nk' or 'b_kn', or with '_ldsm' "
        "the ldmatrix forms (load_a_v<true> & co., 32-lane emulator).");
#if ZAYA_EMU_WARP_SIZE == 32
  m.def("ldmatrix_regs", &p::ldmatrix_regs, arg("n"), arg("trans"), arg("rows"), arg("ld") = 8,
        "One emulated ldmatrix.x<n>[.trans] (mma.cuh) on a 32-row tile whose element (r, c) holds (r << 8) | c; "
        "lane l supplies the address of row rows[l]. Returns each lane's n 32-bit registers, lane-major.");
#endif
  m.attr("mma_row_lanes") = zaya::mma::kRowLanes;  // lanes sharing an accumulator row (shfl_xor butterfly)
  m.def("mma_accumulator_map", &p::accumulator_map,
        "(c_row, c_col, slot_row(lane, c_slot(i))) of accumulator i of each lane, lane-major (mma.cuh).");
  m.def("mma_instruction_map", &p::instruction_map, arg("operand"),
        "The emulated mma instruction's (row, col) of operand 'a', 'b' ((k, n)) or 'c' element e of each lane.");
  m.def("mma_instruction", &p::run_mma, arg("bf16"), arg("a"), arg("b"), arg("c"),
        "Runs one emulated mma.cuh mma() on the given per-lane registers (16-bit halves for a and b, floats for "
        "c, lane-major); returns the per-lane accumulators.");
#if defined(ZAYA_HAVE_WGMMA_SOURCE)
  m.def("wgmma_accumulator_map", &p::wgmma_accumulator_map, arg("n"),
        "(acc_row, acc_col) of accumulator i of each warpgroup thread, thread-major (wgmma.cuh).");
  m.def("wgmma_kmajor_offsets", &p::kmajor_offsets, arg("rows"), arg("cols"),
        "wgmma::kmajor_offset(r, c, cols) for every element of a rows x cols tile, row-major list.");
  m.def("wgmma_sw128_offsets", &p::sw128_offsets, arg("rows"),
        "wgmma::sw128_offset(r, c) for every element of a rows x 64 tile (128-byte swizzle), row-major list.");
  m.def("tma_box_image", &zaya::emu_selftest::tma_box_image, arg("rows"), arg("cols"), arg("box_rows"),
        arg("box_cols"), arg("row0"), arg("col0"), arg("swizzle"),
        "The shared-memory image (16-bit halves) one emulated TMA box copy leaves, from a rows x cols matrix whose "
        "element (r, c) holds 1 + (r << 8) + c (0: outside), with or without the 128-byte swizzle.");
  m.def("wgmma_desc", &p::wgmma_desc, arg("kind"), arg("offset"), arg("x"), arg("y"),
        "The 64-bit descriptor wgmma.cuh builds: 'raw' make_desc(smem + offset, lbo=x, sbo=y), 'kmajor' / "
        "'mn_major' kmajor_desc / mn_major_desc(smem + offset, ks=x, cols=y), 'sw128' make_desc_sw128(smem + "
        "offset + 32 x bytes, sbo=y).");
  m.def("wgmma_operand_offsets", &p::wgmma_operand_offsets, arg("desc"), arg("rows"), arg("mn_major"),
        "Byte offsets the emulated wgmma reads operand element (mn, k) from, for mn < rows, k < 16 (mn-major list).");
  m.def("wgmma_instruction", &p::run_wgmma, arg("bf16"), arg("n"), arg("image"), arg("regs"), arg("a_desc"),
        arg("b_desc"), arg("b_mn_major"),
        "One emulated k16 wgmma on a shared-memory image (16-bit halves): A from registers (regs, 128 x 8 halves) "
        "or, with regs empty, from a_desc = (offset, lbo, sbo) bytes; B from b_desc. Returns 128 x n/2 accumulators.");
#endif
}

void zaya_emu_reset_runtime_caches() {
  zaya::vendor::reset_launch_caches();
  zaya::emu::reset_driver_state();
#if defined(ZAYA_HAVE_TMA_SOURCE)
  zaya::tma::reset_map_cache();
#endif
}

int64_t zaya_emu_attribute_queries() { return zaya::emu::attribute_queries().load(); }
void zaya_emu_set_device_warp_size(int n) {
  zaya::emu::device_warp_attribute().store(n > 0 ? n : ZAYA_EMU_WARP_SIZE);
  zaya::vendor::reset_launch_caches();  // the launchers ask the device again
}
