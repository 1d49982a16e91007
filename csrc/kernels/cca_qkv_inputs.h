// The arguments the cca_qkv forward (cca_qkv_launch.h) and the cca_qkv_functional backward
// (cca_qkv_backward_launch.h) share: shapes, the read-only projections, the conv parameters, the RoPE
// table, the sequence layout and the conv history. Both argument structs hold one as their member `in`,
// and the device code both use (cca_qkv_conv.cuh: the depthwise taps and the grouped-conv GEMM) takes
// only this struct. Plain C++: no torch, CUDA or HIP headers.
#pragma once

#include <cstdint>

#include "launch_common.h"  // DType

namespace zaya::kernels {

struct CcaQkvInputs {
  DType dtype = DType::BF16;
  int64_t T = 0, nq = 0, nkv = 0, D = 0, half = 0;  // half = rotary dims / 2
  int64_t B = 0, P = 0;                             // sequences; cos_sin rows (valid positions)
  const void *qt = nullptr, *kt = nullptr;
  int64_t qt_rs = 0, kt_rs = 0;  // row strides, elements
  const void* dw_w = nullptr;    // [C, 2]
  const void* dw_b = nullptr;    // [C]
  const void* gw = nullptr;      // [C, 2D], taps interleaved (conv_g_weight [C, D, 2])
  const void* gb = nullptr;      // [C]
  const void* temp = nullptr;    // [nkv]
  const void* cos_sin = nullptr;
  int64_t cs_rs = 0;
  const int64_t* positions = nullptr;   // [T]
  const int32_t* cu_seqlens = nullptr;  // [B + 1]
  // The left conv history [rows, C, 2] (rows: the forward's state slots, the backward's sequences), any
  // strides. Read through this pointer by both; the forward's state kernel also rewrites it (its glue
  // passes the tensor's mutable pointer).
  const void* conv_state = nullptr;
  int64_t st0 = 0, st1 = 0, st2 = 0;
  float eps = 0.f, sqrt_d = 0.f;
};

}  // namespace zaya::kernels
