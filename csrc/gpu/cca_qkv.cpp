// CUDA/HIP torch glue of zaya::cca_qkv: the shared argument rules (csrc/cca_qkv_checks.h), the
// GPU kernel's own limits (bf16/fp16, head dim a multiple of 16 up to 256), layout fix-ups of the
// read-only inputs, output allocation and the launch through csrc/kernels/cca_qkv_launch.h. The
// mutated tensors (states, caches) are passed with their own strides, never copied.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>

#include "cca_qkv_checks.h"
#include "glue.h"
#include "kernels/cca_qkv_launch.h"

namespace {

using namespace zaya::gpu;  // NOLINT: the shared GPU glue

// Rows the kernel reads with 16-byte vectors (qt, kt): see glue.h's kernel_rows. The others need only
// unit column stride.
at::Tensor unit_columns(const at::Tensor& t) { return t.size(1) <= 1 || t.stride(1) == 1 ? t : t.contiguous(); }

at::Tensor cca_qkv_gpu(const at::Tensor& qt_in, const at::Tensor& kt_in, const at::Tensor& vc_in,
                       const at::Tensor& vd_in, const at::Tensor& conv_dw_weight, const at::Tensor& conv_dw_bias,
                       const at::Tensor& conv_g_weight, const at::Tensor& conv_g_bias, const at::Tensor& qk_temp,
                       const at::Tensor& cos_sin_in, const at::Tensor& positions, const at::Tensor& cu_seqlens,
                       const at::Tensor& conv_state, const at::Tensor& value_state, const at::Tensor& state_indices,
                       const at::Tensor& k_cache, const at::Tensor& v_cache, const at::Tensor& slot_mapping,
                       double qk_norm_eps) {
  constexpr const char* op = "zaya::cca_qkv";
  check_device(op, "qt", qt_in);
  const auto d = zaya::checks::check_cca_qkv_args(qt_in, kt_in, vc_in, vd_in, conv_dw_weight, conv_dw_bias,
                                                  conv_g_weight, conv_g_bias, qk_temp, cos_sin_in, positions,
                                                  cu_seqlens, conv_state, value_state, state_indices, k_cache,
                                                  v_cache, slot_mapping, qk_norm_eps);
  // Valid inputs outside the kernel's coverage: NotImplementedError, so callers can fall back.
  TORCH_CHECK_NOT_IMPLEMENTED(qt_in.scalar_type() != at::kFloat, op,
                              ": qt has dtype float32; the CUDA/HIP kernel takes bfloat16 or float16 "
                              "(float32 runs on the CPU kernel or in zaya_ops.reference)");
  TORCH_CHECK_NOT_IMPLEMENTED(d.D % 16 == 0 && d.D <= 256, op,
                              ": the CUDA/HIP kernel needs a head dim that is a multiple of 16 "
                              "and at most 256 (k_cache.shape[3]), got ", d.D);
  // Index values are not read here (glue.h): the kernel never follows an out-of-range index.

  const DeviceGuard guard(qt_in.device());
  at::Tensor q_out = at::empty({d.T, d.nq, d.D}, qt_in.options());
  if (d.T == 0) return q_out;
  const at::Tensor qt = kernel_rows(qt_in), kt = kernel_rows(kt_in);
  const at::Tensor vc = unit_columns(vc_in), vd = unit_columns(vd_in), cos_sin = unit_columns(cos_sin_in);
  const at::Tensor dw_w = kernel_dense(conv_dw_weight), dw_b = kernel_dense(conv_dw_bias);
  const at::Tensor gw = kernel_dense(conv_g_weight), gb = kernel_dense(conv_g_bias), temp = kernel_dense(qk_temp);
  const at::Tensor pos = positions.contiguous(), sm = slot_mapping.contiguous();
  const at::Tensor cu = cu_seqlens.contiguous(), slots = state_indices.contiguous();

  zaya::kernels::CcaQkvArgs a;
  a.in.dtype = to_dtype(qt.scalar_type());
  a.in.T = d.T, a.in.nq = d.nq, a.in.nkv = d.nkv, a.in.D = d.D, a.in.half = d.rot / 2;
  a.in.B = d.B, a.S = d.S, a.in.P = d.P, a.cache_slots = d.num_blocks * d.block_size, a.block_size = d.block_size;
  a.in.qt = qt.const_data_ptr(), a.in.kt = kt.const_data_ptr(), a.vc = vc.const_data_ptr(), a.vd = vd.const_data_ptr();
  a.in.qt_rs = qt.stride(0), a.in.kt_rs = kt.stride(0), a.vc_rs = vc.stride(0), a.vd_rs = vd.stride(0);
  a.in.dw_w = dw_w.const_data_ptr(), a.in.dw_b = dw_b.const_data_ptr(), a.in.gw = gw.const_data_ptr();
  a.in.gb = gb.const_data_ptr(), a.in.temp = temp.const_data_ptr();
  a.in.cos_sin = cos_sin.const_data_ptr(), a.in.cs_rs = cos_sin.stride(0);
  a.in.positions = pos.const_data_ptr<int64_t>(), a.slot_mapping = sm.const_data_ptr<int64_t>();
  a.in.cu_seqlens = cu.const_data_ptr<int32_t>(), a.state_indices = slots.const_data_ptr<int32_t>();
  a.in.conv_state = conv_state.mutable_data_ptr();
  a.in.st0 = conv_state.stride(0), a.in.st1 = conv_state.stride(1), a.in.st2 = conv_state.stride(2);
  a.value_state = value_state.mutable_data_ptr(), a.vs0 = value_state.stride(0), a.vs1 = value_state.stride(1);
  a.k_cache = k_cache.mutable_data_ptr();
  a.kc0 = k_cache.stride(0), a.kc1 = k_cache.stride(1), a.kc2 = k_cache.stride(2), a.kc3 = k_cache.stride(3);
  a.v_cache = v_cache.mutable_data_ptr();
  a.vc0 = v_cache.stride(0), a.vc1 = v_cache.stride(1), a.vc2 = v_cache.stride(2), a.vc3 = v_cache.stride(3);
  a.q_out = q_out.mutable_data_ptr();
  a.in.eps = static_cast<float>(qk_norm_eps);
  a.in.sqrt_d = static_cast<float>(std::sqrt(static_cast<double>(d.D)));
  check_launch(op, zaya::kernels::launch_cca_qkv(a, current_stream()));
  return q_out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ZAYA_GPU_LIB, ZAYA_GPU_KEY, m) { m.impl("cca_qkv", &cca_qkv_gpu); }
