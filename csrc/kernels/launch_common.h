// What every plain-C++ launch contract (csrc/kernels/*_launch.h) shares: the element types the
// kernels take. No torch, CUDA or HIP headers, so glue and HIP entry files include it freely.
#pragma once

#include <cstdint>

namespace zaya::kernels {

enum class DType : int32_t { F32 = 0, BF16 = 1, F16 = 2 };

}  // namespace zaya::kernels
