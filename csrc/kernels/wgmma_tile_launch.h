// Launch contract of the test-only one-tile wgmma kernel (csrc/kernels/wgmma_tile.cuh), shared by
// cuda/wgmma_tile.cu and the torch glue csrc/gpu/wgmma_tile.cpp (op zaya::_wgmma_tile, registered
// by CUDA builds with sm_90a and by the 32-lane emulator only). Plain C++: no torch or CUDA headers.
//
// out[64][N] (fp32, contiguous) = a[64][K] b[N][K]^T, a and b contiguous, dtype BF16 or F16,
// N 64 or 128, K a multiple of 16 up to kWgmmaTileMaxK; the launcher re-checks and returns an error.
#pragma once

#include <cstdint>

#include "launch_common.h"  // DType

namespace zaya::kernels {

inline constexpr int64_t kWgmmaTileMaxK = 128;

struct WgmmaTileArgs {
  const void* a = nullptr;  // [64, K]
  const void* b = nullptr;  // [N, K]
  float* out = nullptr;     // [64, N]
  DType dtype = DType::BF16;
  int64_t N = 64, K = 16;
  bool a_from_registers = false;  // "rs" form: A through mma.cuh's load_a into registers
  bool b_mn_major = false;        // B stored k x n (as cca_attention's V) and read MN-major
  bool swizzle128 = false;        // K-major 128-byte swizzle for B (and A in the ss form), as moe_top1_sm90's
};

const char* launch_wgmma_tile(const WgmmaTileArgs& args, void* stream);

}  // namespace zaya::kernels
