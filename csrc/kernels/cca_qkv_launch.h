// Launch contract of the CCA prologue kernel (zaya::cca_qkv), shared by the CUDA (cuda/cca_qkv.cu)
// and HIP (hip/cca_qkv.hip) builds and called by the torch glue (csrc/gpu/cca_qkv.cpp). Plain C++:
// no torch, CUDA or HIP headers.
//
// Requirements the caller meets (the launcher re-checks the cheap ones and returns an error):
//   * dtype bf16 or fp16 (every float tensor; fp32 runs on the CPU kernel);
//   * D a multiple of 16, 16 <= D <= 256 (16x16 mma tiles, static shared memory); rot = 2 * half <= D;
//   * qt, kt: 16-byte aligned base, row stride * 2 a multiple of 16 bytes, unit column stride;
//     vc, vd, cos_sin: unit column stride; conv_g_weight [C, 2D], conv_g_bias, conv_dw_* and qk_temp
//     contiguous and 16-byte aligned; q_out [T, nq, D] contiguous and 16-byte aligned;
//   * index tensors contiguous; conv_state, value_state, k_cache, v_cache: any strides (mutated in place);
//   * all pointers on the current device; `stream` a cudaStream_t/hipStream_t (nullptr = default).
// Index values need not be valid (graph capture skips the host checks): a token whose sequence,
// position or state slot is out of range gets NaN in q and no cache write, and a sequence with an
// out-of-range slot keeps its state; memory outside the tensors is never touched.
#pragma once

#include <cstdint>

#include "cca_qkv_inputs.h"  // CcaQkvInputs (shared with the backward), DType

namespace zaya::kernels {

struct CcaQkvArgs {
  CcaQkvInputs in;  // shapes, qt/kt, parameters, cos_sin, positions, cu_seqlens, conv_state [S, C, 2]
  int64_t S = 0, cache_slots = 0, block_size = 1;
  const void *vc = nullptr, *vd = nullptr;
  int64_t vc_rs = 0, vd_rs = 0;           // row strides, elements
  const int64_t* slot_mapping = nullptr;  // [T]
  const int32_t* state_indices = nullptr; // [B]
  void* value_state = nullptr;            // [S, hv]
  int64_t vs0 = 0, vs1 = 0;
  void* k_cache = nullptr;                // [num_blocks, block_size, nkv, D]
  int64_t kc0 = 0, kc1 = 0, kc2 = 0, kc3 = 0;
  void* v_cache = nullptr;
  int64_t vc0 = 0, vc1 = 0, vc2 = 0, vc3 = 0;
  void* q_out = nullptr;                  // [T, nq, D] contiguous
};

const char* launch_cca_qkv(const CcaQkvArgs& args, void* stream);

}  // namespace zaya::kernels
