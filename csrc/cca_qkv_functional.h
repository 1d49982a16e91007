// zaya::cca_qkv_functional (training): cca_qkv's maths without its writes, built on the cca_qkv kernel
// of the same namespace and device (no second copy of the forward maths). Sequence b's initial
// histories are rows conv_state[b] [C, 2] and value_state[b] [nkv*D/2] (one row per sequence, not
// slots; never written): they are copied into scratch states used as slots 0..B-1 (identity state
// indices), and k, v are written into a scratch cache of blocks of one token ([T, 1, nkv, D]) at
// slot_mapping = arange(T), which then is k [T, nkv, D] and v [T, nkv, D] as they are. Registered as
// the op's CompositeExplicitAutograd kernel in csrc/ops.cpp (zaya) and csrc/emu/module.cpp (the
// emulators), so it runs wherever that namespace's cca_qkv has a kernel (CPU, CUDA/HIP, emulator);
// its dtype and head-dim limits are cca_qkv's. Autograd: python/zaya_ops/_autograd.py.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <tuple>

#include "arg_checks.h"

namespace zaya {

// The shapes and dtypes that cca_qkv's own checks cannot name in the functional's terms (its conv and
// value states are [B, ...]); the rest is checked by cca_qkv.
inline void check_cca_qkv_functional_args(const at::Tensor& qt, const at::Tensor& kt, const at::Tensor& conv_g_weight,
                                          const at::Tensor& cu_seqlens, const at::Tensor& conv_state,
                                          const at::Tensor& value_state) {
  using namespace zaya::checks;
  constexpr const char* op = "zaya::cca_qkv_functional";
  check_float(op, "qt", qt);
  check_matrix(op, "qt", qt);
  check_matrix(op, "kt", kt);
  TORCH_CHECK_VALUE(conv_g_weight.dim() == 3 && conv_g_weight.size(1) > 0 && conv_g_weight.size(1) % 2 == 0, op,
                    ": conv_g_weight must be [C, D, 2] with an even head dim D > 0, got shape ",
                    shape_str(conv_g_weight.sizes()));
  const int64_t D = conv_g_weight.size(1);
  TORCH_CHECK_VALUE(kt.size(1) > 0 && kt.size(1) % D == 0, op, ": kt width ", kt.size(1),
                    " must be a positive multiple of the head dim ", D, " (conv_g_weight.shape[1])");
  TORCH_CHECK_VALUE(qt.size(1) > 0 && qt.size(1) % D == 0, op, ": qt width ", qt.size(1),
                    " must be a positive multiple of the head dim ", D, " (conv_g_weight.shape[1])");
  check_dtype(op, "cu_seqlens", cu_seqlens, at::kInt, "");
  TORCH_CHECK_VALUE(cu_seqlens.dim() == 1 && cu_seqlens.size(0) >= 2, op,
                    ": cu_seqlens must be 1-D and hold at least two entries (one sequence), got shape ",
                    shape_str(cu_seqlens.sizes()));
  const int64_t B = cu_seqlens.size(0) - 1, C = qt.size(1) + kt.size(1), hv = kt.size(1) / 2;
  check_dtype(op, "conv_state", conv_state, qt.scalar_type(), " (like qt)");
  check_shape(op, "conv_state", conv_state, {B, C, 2});
  check_dtype(op, "value_state", value_state, qt.scalar_type(), " (like qt)");
  check_shape(op, "value_state", value_state, {B, hv});
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> cca_qkv_functional_via(
    const c10::OperatorHandle& cca_qkv, const at::Tensor& qt, const at::Tensor& kt, const at::Tensor& vc,
    const at::Tensor& vd, const at::Tensor& conv_dw_weight, const at::Tensor& conv_dw_bias,
    const at::Tensor& conv_g_weight, const at::Tensor& conv_g_bias, const at::Tensor& qk_temp,
    const at::Tensor& cos_sin, const at::Tensor& positions, const at::Tensor& cu_seqlens,
    const at::Tensor& conv_state, const at::Tensor& value_state, double qk_norm_eps) {
  check_cca_qkv_functional_args(qt, kt, conv_g_weight, cu_seqlens, conv_state, value_state);
  const int64_t T = qt.size(0), D = conv_g_weight.size(1), nkv = kt.size(1) / D, B = cu_seqlens.size(0) - 1;
  at::Tensor conv_scratch = conv_state.clone(at::MemoryFormat::Contiguous);
  at::Tensor value_scratch = value_state.clone(at::MemoryFormat::Contiguous);
  const at::Tensor state_indices = at::arange(B, cu_seqlens.options());
  const at::Tensor slot_mapping = at::arange(T, positions.options());
  at::Tensor k = at::empty({T, 1, nkv, D}, qt.options());
  at::Tensor v = at::empty({T, 1, nkv, D}, qt.options());
  at::Tensor q = cca_qkv.typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                          const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                          const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                          const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                          const at::Tensor&, const at::Tensor&, double)>()
                     .call(qt, kt, vc, vd, conv_dw_weight, conv_dw_bias, conv_g_weight, conv_g_bias, qk_temp, cos_sin,
                           positions, cu_seqlens, conv_scratch, value_scratch, state_indices, k, v, slot_mapping,
                           qk_norm_eps);
  return {q, k.view({T, nkv, D}), v.view({T, nkv, D})};
}

}  // namespace zaya

// Defines `fn_name`, the functional kernel of namespace `ns` (a string literal), for m.impl.
#define ZAYA_DEFINE_CCA_QKV_FUNCTIONAL(fn_name, ns)                                                                 \
  std::tuple<at::Tensor, at::Tensor, at::Tensor> fn_name(                                                            \
      const at::Tensor& qt, const at::Tensor& kt, const at::Tensor& vc, const at::Tensor& vd,                        \
      const at::Tensor& dw_w, const at::Tensor& dw_b, const at::Tensor& gw, const at::Tensor& gb,                   \
      const at::Tensor& temp, const at::Tensor& cos_sin, const at::Tensor& positions, const at::Tensor& cu,          \
      const at::Tensor& conv_state, const at::Tensor& value_state, double eps) {                                     \
    static const c10::OperatorHandle op = c10::Dispatcher::singleton().findSchemaOrThrow(ns "::cca_qkv", "");       \
    return zaya::cca_qkv_functional_via(op, qt, kt, vc, vd, dw_w, dw_b, gw, gb, temp, cos_sin, positions, cu,       \
                                        conv_state, value_state, eps);                                                \
  }
