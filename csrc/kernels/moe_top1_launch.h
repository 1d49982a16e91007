// Launch contract of the moe_top1 GPU kernels (csrc/kernels/moe_top1.cuh), shared by cuda/moe_top1.cu,
// hip/moe_top1.hip and the torch glue csrc/gpu/moe_top1.cpp. Plain C++: no torch, CUDA or HIP headers.
//
// The caller provides (the launcher re-checks the cheap parts and returns an error string):
//   * dtype BF16 or F16 for x, expert_weight, gate_up, down and out (the matrix units' input types);
//   * H % 8 == 0 and I % 8 == 0, every pointer 16-byte aligned, x's row stride * 2 a multiple of 16,
//     x's rows unit-stride; expert_weight, gate_up [E, 2I, H], down [E, H, I] contiguous;
//   * out [T, H] contiguous and zero-filled (rows of tokens no local expert computes stay zero);
//   * act: [T, I] scratch of dtype; workspace: moe_top1_workspace_ints(T, E) int32 scratch;
//   * 1 <= E <= kMoeMaxExperts, 0 <= expert_start <= expert_end <= E.
// Expert indices outside 0..E are treated as the skip class here; the glue rejects them beforehand
// (except during CUDA-graph capture, where it cannot look at the data).
#pragma once

#include <cstdint>

#include "launch_common.h"  // DType

namespace zaya::kernels {

inline constexpr int64_t kMoeMaxExperts = 1024;

struct MoeTop1Args {
  const void* x = nullptr;  // [T, H]
  int64_t x_row_stride = 0;
  const void* expert_index = nullptr;  // [T] int32 or int64, contiguous
  bool index_int64 = false;
  const void* expert_weight = nullptr;  // [T] contiguous, dtype
  const void* gate_up = nullptr;        // [E, 2I, H] contiguous
  const void* down = nullptr;           // [E, H, I] contiguous
  DType dtype = DType::BF16;
  void* out = nullptr;  // [T, H] contiguous, zero-filled
  void* act = nullptr;  // [T, I] scratch
  int32_t* workspace = nullptr;
  int64_t T = 0, H = 0, I = 0, E = 0;
  int64_t expert_start = 0, expert_end = 0;
};

// int32 elements of scratch the launch needs: per-class offsets and per-expert tile starts (E + 2
// each) and the token order (T).
inline int64_t moe_top1_workspace_ints(int64_t T, int64_t E) { return 2 * (E + 2) + T; }

const char* launch_moe_top1(const MoeTop1Args& args, void* stream);

}  // namespace zaya::kernels
