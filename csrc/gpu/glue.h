// What every CUDA/HIP torch glue file (csrc/gpu/*.cpp) shares: the dispatch target, device guard,
// current stream, dtype mapping, the layout fix-ups the kernels need, and launch-error reporting.
//
// Three builds use the glue:
//   * CUDA (ZAYA_WITH_CUDA) and ROCm (USE_ROCM; ROCm torch registers its GPUs under the CUDA key too):
//     TORCH_LIBRARY_IMPL(zaya, CUDA);
//   * the SIMT emulator (ZAYA_SIMT_EMU, csrc/emu/): the same glue and kernel bodies on CPU tensors,
//     registered as torch.ops.zaya_emu32 / zaya_emu64 on the CPU key, so CI tests the GPU code.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>

#if defined(ZAYA_SIMT_EMU)
#define ZAYA_GPU_LIB ZAYA_EMU_LIB
#define ZAYA_GPU_KEY CPU
#elif defined(USE_ROCM)
#include <ATen/hip/impl/HIPGuardImplMasqueradingAsCUDA.h>
#include <ATen/hip/impl/HIPStreamMasqueradingAsCUDA.h>
#define ZAYA_GPU_LIB zaya
#define ZAYA_GPU_KEY CUDA
#else
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: it needs cusparse.h
#define ZAYA_GPU_LIB zaya
#define ZAYA_GPU_KEY CUDA
#endif

#include "kernels/launch_common.h"  // zaya::kernels::DType

namespace zaya::gpu {

#if defined(ZAYA_SIMT_EMU)
struct DeviceGuard {
  explicit DeviceGuard(c10::Device) {}
};
inline void* current_stream() { return nullptr; }
#elif defined(USE_ROCM)
using DeviceGuard = c10::hip::HIPGuardMasqueradingAsCUDA;
inline void* current_stream() { return c10::hip::getCurrentHIPStreamMasqueradingAsCUDA().stream(); }
#else
using DeviceGuard = c10::cuda::CUDAGuard;
inline void* current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
#endif

// Index values (cu_seqlens, block tables, slots, state and expert indices) are never read here: a host
// read would synchronise with the device at every call. They are validated where they are made (the
// model's cache and batch metadata, once per change of batch) or by the Python wrappers of direct op
// calls (python/zaya_ops/_index_checks.py, opt-out ZAYA_CHECK_INDICES=0, skipped during CUDA-graph
// capture), and the kernels guard themselves: an out-of-range index is never followed (see each
// kernel and tests/test_unchecked_indices_gpu.py). The glue checks metadata only (dtypes, shapes,
// devices); the one helper that reads tensor values on the host, checks::host_ints, counts its reads
// (runtime::counters().host_reads), and tests hold a model decode step on the emulator to zero.

// The device rule of the GPU ops (a CPU tensor in the emulator build).
inline void check_device(const char* op, const char* name, const at::Tensor& t) {
#if defined(ZAYA_SIMT_EMU)
  TORCH_CHECK_VALUE(t.device().is_cpu(), op, " (SIMT emulator): ", name, " must be a CPU tensor, got ",
                    t.device());
#else
  TORCH_CHECK_VALUE(t.is_cuda(), op, ": ", name, " must be on a CUDA/HIP device, got ", t.device());
#endif
}

inline kernels::DType to_dtype(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return kernels::DType::F32;
    case at::kBFloat16: return kernels::DType::BF16;
    case at::kHalf: return kernels::DType::F16;
    default: TORCH_CHECK_TYPE(false, "zaya: unsupported dtype ", s);
  }
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Kernels read 16 bytes at a time, so they need 16-byte aligned base pointers and row strides and
// unit stride within a row. Anything else (a column slice, a view at an odd offset) is copied into a
// fresh, aligned contiguous tensor first; `contiguous()` alone would not do: it returns a contiguous
// but misaligned view unchanged.
inline at::Tensor kernel_rows(const at::Tensor& t) {  // [T, H]
  const int64_t es = static_cast<int64_t>(t.element_size());
  const bool ok = (t.size(1) <= 1 || t.stride(1) == 1) &&
                  (t.size(0) <= 1 || (t.stride(0) * es) % 16 == 0) && aligned16(t.data_ptr());
  return ok ? t : t.clone(at::MemoryFormat::Contiguous);
}

// A tensor the kernel reads as one dense block (weights): contiguous and 16-byte aligned.
inline at::Tensor kernel_dense(const at::Tensor& t) {
  return t.is_contiguous() && aligned16(t.data_ptr()) ? t : t.clone(at::MemoryFormat::Contiguous);
}

inline void check_launch(const char* op, const char* err) {
  TORCH_CHECK(err == nullptr, op, ": kernel launch failed: ", err);
}

}  // namespace zaya::gpu
