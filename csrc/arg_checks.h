// Argument checks shared by every kernel's torch glue (CPU and GPU): each failure is a Python
// TypeError (dtype) or ValueError (shape, device, value) whose message names the op and the argument,
// like the wrappers' checks in python/zaya_ops/_checks.py.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <string>
#include <vector>

#include "kernels/runtime_state.h"

namespace zaya::checks {

inline std::string dtype_name(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    default: return c10::toString(s);
  }
}

inline std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

inline bool is_float_dtype(at::ScalarType s) {
  return s == at::kFloat || s == at::kBFloat16 || s == at::kHalf;
}

// fp32, bf16 or fp16.
inline void check_float(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_TYPE(is_float_dtype(t.scalar_type()), op, ": ", name,
                   " must have dtype in (float32, bfloat16, float16), got ", dtype_name(t.scalar_type()));
}

// Exactly `want`; `like` says why (e.g. " (like h)"), or "".
inline void check_dtype(const char* op, const char* name, const at::Tensor& t, at::ScalarType want,
                        const char* like) {
  TORCH_CHECK_TYPE(t.scalar_type() == want, op, ": ", name, " must have dtype ", dtype_name(want), like,
                   ", got ", dtype_name(t.scalar_type()));
}

// One of `dts`.
inline void check_dtype(const char* op, const char* name, const at::Tensor& t,
                        std::initializer_list<at::ScalarType> dts) {
  if (std::find(dts.begin(), dts.end(), t.scalar_type()) != dts.end()) return;
  std::string want;
  for (const at::ScalarType d : dts) want += (want.empty() ? "" : " or ") + dtype_name(d);
  TORCH_CHECK_TYPE(false, op, ": ", name, " must have dtype ", want, ", got ", dtype_name(t.scalar_type()));
}

inline void check_shape(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef shape) {
  TORCH_CHECK_VALUE(t.sizes() == shape, op, ": ", name, " must have shape ", shape_str(shape), ", got ",
                    shape_str(t.sizes()));
}

inline void check_matrix(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.dim() == 2, op, ": ", name, " must be 2-D [T, H], got shape ", shape_str(t.sizes()));
}

inline void check_vector(const char* op, const char* name, const at::Tensor& t, int64_t H) {
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == H, op, ": ", name, " must have shape [", H, "], got ",
                    shape_str(t.sizes()));
}

inline void check_cpu(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": ", name, " must be on cpu (like the first input), got ",
                    t.device());
}

inline void check_gpu(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.is_cuda(), op, ": ", name, " must be on a CUDA/HIP device, got ", t.device());
}

inline void check_same_device(const char* op, const char* name, const at::Tensor& t, const at::Tensor& first,
                              const char* first_name) {
  TORCH_CHECK_VALUE(t.device() == first.device(), op, ": ", name, " must be on ", first.device(), " (like ",
                    first_name, "), got ", t.device());
}

inline void check_eps(const char* op, double eps) {
  TORCH_CHECK_VALUE(eps > 0.0 && std::isfinite(eps), op, ": eps must be a positive finite number, got ", eps);
}

// The values of a small int32/int64 index tensor, row-major, as int64 (a device tensor would be copied
// to the host first: a synchronising read, which is why only the CPU kernels call it; the GPU glue
// never does, see csrc/gpu/glue.h). Every C++ host read of tensor values goes through here and is
// counted (runtime::counters().host_reads, exposed by the modules for tests).
inline std::vector<int64_t> host_ints(const at::Tensor& t) {
  runtime::count(runtime::counters().host_reads);
  auto c = t.cpu().contiguous();
  std::vector<int64_t> out(c.numel());
  if (c.scalar_type() == at::kInt) {
    const int32_t* p = c.const_data_ptr<int32_t>();
    for (size_t i = 0; i < out.size(); ++i) out[i] = p[i];
  } else {
    const int64_t* p = c.const_data_ptr<int64_t>();
    for (size_t i = 0; i < out.size(); ++i) out[i] = p[i];
  }
  return out;
}

// Values of a cumulative-offsets vector (cu_seqlens): cu[0] = 0, non-decreasing, cu[B] = T.
inline void check_cu_seqlens_values(const char* name, const std::vector<int64_t>& cu, int64_t T) {
  TORCH_CHECK_VALUE(cu.size() >= 2, name, " must hold at least two entries (one sequence)");
  TORCH_CHECK_VALUE(cu[0] == 0, name, "[0] must be 0, got ", cu[0]);
  for (size_t b = 1; b < cu.size(); ++b) {
    TORCH_CHECK_VALUE(cu[b] >= cu[b - 1], name, " must be non-decreasing, but ", name, "[", b, "] = ", cu[b],
                      " < ", name, "[", b - 1, "] = ", cu[b - 1]);
  }
  TORCH_CHECK_VALUE(cu.back() == T, name, "[-1] must equal the number of tokens ", T, ", got ", cu.back());
}

}  // namespace zaya::checks
