// Argument rules of zaya::cca_qkv: shapes, dtypes and devices (cheap, metadata only), shared by the CPU
// kernel (csrc/cpu/cca_qkv.cpp) and the CUDA/HIP glue (csrc/gpu/cca_qkv.cpp); and the values of the
// index tensors, read on the host by the CPU kernel only (the GPU glue never reads them, see
// csrc/gpu/glue.h: the Python wrappers check them for direct GPU calls with the same messages, and the
// kernel ignores out-of-range indices instead of following them).
#pragma once

#include <cmath>
#include <cstdint>
#include <unordered_set>
#include <vector>

#include "arg_checks.h"

namespace zaya::checks {

struct CcaQkvDims {
  int64_t T, nq, nkv, D, rot, C, hv, S, B, P, num_blocks, block_size;
};

// Every tensor on qt's device (the caller checks qt's device against its backend).
inline CcaQkvDims check_cca_qkv_args(const at::Tensor& qt, const at::Tensor& kt, const at::Tensor& vc,
                                     const at::Tensor& vd, const at::Tensor& conv_dw_weight,
                                     const at::Tensor& conv_dw_bias, const at::Tensor& conv_g_weight,
                                     const at::Tensor& conv_g_bias, const at::Tensor& qk_temp,
                                     const at::Tensor& cos_sin, const at::Tensor& positions,
                                     const at::Tensor& cu_seqlens, const at::Tensor& conv_state,
                                     const at::Tensor& value_state, const at::Tensor& state_indices,
                                     const at::Tensor& k_cache, const at::Tensor& v_cache,
                                     const at::Tensor& slot_mapping, double qk_norm_eps) {
  constexpr const char* op = "zaya::cca_qkv";
  check_float(op, "qt", qt);
  check_matrix(op, "qt", qt);
  const auto dt = qt.scalar_type();
  auto like_qt = [&](const char* name, const at::Tensor& t) {
    check_dtype(op, name, t, dt, " (like qt)");
    check_same_device(op, name, t, qt, "qt");
  };
  auto index = [&](const char* name, const at::Tensor& t, at::ScalarType want) {
    check_dtype(op, name, t, want, "");
    check_same_device(op, name, t, qt, "qt");
  };
  CcaQkvDims d{};
  like_qt("k_cache", k_cache);
  TORCH_CHECK_VALUE(k_cache.dim() == 4, op, ": k_cache must be 4-D [num_blocks, block_size, nkv, D], got shape ",
                    shape_str(k_cache.sizes()));
  like_qt("v_cache", v_cache);
  check_shape(op, "v_cache", v_cache, k_cache.sizes());
  d.T = qt.size(0), d.num_blocks = k_cache.size(0), d.block_size = k_cache.size(1);
  d.nkv = k_cache.size(2), d.D = k_cache.size(3);
  TORCH_CHECK_VALUE(d.D > 0 && d.D % 2 == 0, op, ": k_cache head dim must be even and positive, got ", d.D);
  TORCH_CHECK_VALUE(d.nkv > 0, op, ": k_cache must have at least one KV head");
  TORCH_CHECK_VALUE(qt.size(1) > 0 && qt.size(1) % d.D == 0, op, ": qt width ", qt.size(1),
                    " must be a positive multiple of the head dim ", d.D);
  d.nq = qt.size(1) / d.D;
  TORCH_CHECK_VALUE(d.nq % d.nkv == 0, op, ": query heads (", d.nq, ") must be a multiple of KV heads (", d.nkv, ")");
  d.C = (d.nq + d.nkv) * d.D, d.hv = d.nkv * d.D / 2;
  const struct {
    const char* name;
    const at::Tensor& t;
    std::vector<int64_t> shape;
  } fixed[] = {{"kt", kt, {d.T, d.nkv * d.D}},       {"vc", vc, {d.T, d.hv}},
               {"vd", vd, {d.T, d.hv}},              {"conv_dw_weight", conv_dw_weight, {d.C, 1, 2}},
               {"conv_dw_bias", conv_dw_bias, {d.C}}, {"conv_g_weight", conv_g_weight, {d.C, d.D, 2}},
               {"conv_g_bias", conv_g_bias, {d.C}},   {"qk_temp", qk_temp, {d.nkv}}};
  for (const auto& f : fixed) {
    like_qt(f.name, f.t);
    check_shape(op, f.name, f.t, f.shape);
  }
  like_qt("cos_sin", cos_sin);
  TORCH_CHECK_VALUE(cos_sin.dim() == 2, op, ": cos_sin must be 2-D [P, rot], got shape ", shape_str(cos_sin.sizes()));
  d.P = cos_sin.size(0), d.rot = cos_sin.size(1);
  TORCH_CHECK_VALUE(d.rot % 2 == 0 && d.rot <= d.D, op, ": cos_sin width (rotary dims) must be even and <= head dim ",
                    d.D, ", got ", d.rot);
  index("positions", positions, at::kLong);
  check_shape(op, "positions", positions, {d.T});
  index("slot_mapping", slot_mapping, at::kLong);
  check_shape(op, "slot_mapping", slot_mapping, {d.T});
  index("cu_seqlens", cu_seqlens, at::kInt);
  TORCH_CHECK_VALUE(cu_seqlens.dim() == 1 && cu_seqlens.size(0) >= 2, op,
                    ": cu_seqlens must be 1-D and hold at least two entries (one sequence), got shape ",
                    shape_str(cu_seqlens.sizes()));
  d.B = cu_seqlens.size(0) - 1;
  index("state_indices", state_indices, at::kInt);
  TORCH_CHECK_VALUE(state_indices.dim() == 1 && state_indices.size(0) == d.B, op, ": state_indices must have shape [",
                    d.B, "] (one slot per sequence), got ", shape_str(state_indices.sizes()));
  like_qt("conv_state", conv_state);
  TORCH_CHECK_VALUE(conv_state.dim() == 3, op, ": conv_state must be 3-D [S, C, 2], got shape ",
                    shape_str(conv_state.sizes()));
  d.S = conv_state.size(0);
  check_shape(op, "conv_state", conv_state, {d.S, d.C, 2});
  like_qt("value_state", value_state);
  check_shape(op, "value_state", value_state, {d.S, d.hv});
  TORCH_CHECK_VALUE(std::isfinite(qk_norm_eps) && qk_norm_eps > 0, op,
                    ": qk_norm_eps must be a positive finite number, got ", qk_norm_eps);
  return d;
}

// The index values, on the host: returns cu_seqlens, state_indices, positions and slot_mapping.
struct CcaQkvIndices {
  std::vector<int64_t> cu, slots, positions, slot_mapping;
};

inline CcaQkvIndices check_cca_qkv_indices(const CcaQkvDims& d, const at::Tensor& cu_seqlens,
                                           const at::Tensor& state_indices, const at::Tensor& positions,
                                           const at::Tensor& slot_mapping) {
  constexpr const char* op = "zaya::cca_qkv";
  CcaQkvIndices ix{host_ints(cu_seqlens), host_ints(state_indices), host_ints(positions), host_ints(slot_mapping)};
  check_cu_seqlens_values("cu_seqlens", ix.cu, d.T);
  std::unordered_set<int64_t> seen;
  for (int64_t b = 0; b < d.B; ++b) {
    const int64_t s = ix.slots[b];
    TORCH_CHECK_VALUE(s >= 0 && s < d.S, op, ": state_indices[", b, "] = ", s, " is outside the ", d.S, " state slots");
    TORCH_CHECK_VALUE(ix.cu[b + 1] == ix.cu[b] || seen.insert(s).second, op, ": state_indices[", b, "] = ", s,
                      " is the slot of an earlier sequence of this call: each sequence needs its own slot");
  }
  const int64_t cache_slots = d.num_blocks * d.block_size;
  for (int64_t t = 0; t < d.T; ++t) {
    const int64_t p = ix.positions[t], m = ix.slot_mapping[t];
    TORCH_CHECK_VALUE(p >= 0 && p < d.P, op, ": positions[", t, "] = ", p, " is outside the ", d.P, " rows of cos_sin");
    TORCH_CHECK_VALUE(m >= -1 && m < cache_slots, op, ": slot_mapping[", t, "] = ", m, " is outside the cache (",
                      d.num_blocks, " blocks of ", d.block_size, " slots; -1 skips)");
  }
  return ix;
}


struct CcaQkvBackwardDims {
  int64_t T, nq, nkv, D, rot, C, hv, B, P;
};

// Metadata rules of zaya::cca_qkv_functional_backward (shapes, dtypes, devices), shared by the CPU kernel
// (csrc/cpu/cca_qkv_functional_backward.cpp) and the CUDA/HIP glue (csrc/gpu/cca_qkv_functional_backward.cpp);
// the caller checks qt's device against its backend. Index values are the CPU kernel's to check.
inline CcaQkvBackwardDims check_cca_qkv_functional_backward_args(
    const at::Tensor& grad_q, const at::Tensor& grad_k, const at::Tensor& grad_v, const at::Tensor& qt,
    const at::Tensor& kt, const at::Tensor& conv_dw_weight, const at::Tensor& conv_dw_bias,
    const at::Tensor& conv_g_weight, const at::Tensor& conv_g_bias, const at::Tensor& qk_temp,
    const at::Tensor& cos_sin, const at::Tensor& positions, const at::Tensor& cu_seqlens,
    const at::Tensor& conv_state, double qk_norm_eps) {
  constexpr const char* op = "zaya::cca_qkv_functional_backward";
  TORCH_CHECK_TYPE(is_float_dtype(qt.scalar_type()) || qt.scalar_type() == at::kDouble, op,
                   ": qt must have dtype in (float32, bfloat16, float16, float64), got ", dtype_name(qt.scalar_type()));
  check_matrix(op, "qt", qt);
  const auto dt = qt.scalar_type();
  auto like_qt = [&](const char* name, const at::Tensor& t) {
    check_dtype(op, name, t, dt, " (like qt)");
    check_same_device(op, name, t, qt, "qt");
  };
  like_qt("conv_g_weight", conv_g_weight);
  TORCH_CHECK_VALUE(conv_g_weight.dim() == 3 && conv_g_weight.size(1) > 0 && conv_g_weight.size(1) % 2 == 0, op,
                    ": conv_g_weight must be [C, D, 2] with an even head dim D > 0, got shape ",
                    shape_str(conv_g_weight.sizes()));
  const int64_t T = qt.size(0), D = conv_g_weight.size(1);
  TORCH_CHECK_VALUE(qt.size(1) > 0 && qt.size(1) % D == 0, op, ": qt width ", qt.size(1),
                    " must be a positive multiple of the head dim ", D);
  like_qt("kt", kt);
  check_matrix(op, "kt", kt);
  TORCH_CHECK_VALUE(kt.size(1) > 0 && kt.size(1) % D == 0, op, ": kt width ", kt.size(1),
                    " must be a positive multiple of the head dim ", D);
  const int64_t nq = qt.size(1) / D, nkv = kt.size(1) / D, C = (nq + nkv) * D, hv = nkv * D / 2;
  TORCH_CHECK_VALUE(nq % nkv == 0, op, ": query heads (", nq, ") must be a multiple of KV heads (", nkv, ")");
  const struct {
    const char* name;
    const at::Tensor& t;
    std::vector<int64_t> shape;
  } fixed[] = {{"grad_q", grad_q, {T, nq, D}},
               {"grad_k", grad_k, {T, nkv, D}},
               {"grad_v", grad_v, {T, nkv, D}},
               {"kt", kt, {T, nkv * D}},
               {"conv_dw_weight", conv_dw_weight, {C, 1, 2}},
               {"conv_dw_bias", conv_dw_bias, {C}},
               {"conv_g_weight", conv_g_weight, {C, D, 2}},
               {"conv_g_bias", conv_g_bias, {C}},
               {"qk_temp", qk_temp, {nkv}}};
  for (const auto& f : fixed) {
    like_qt(f.name, f.t);
    check_shape(op, f.name, f.t, f.shape);
  }
  like_qt("cos_sin", cos_sin);
  TORCH_CHECK_VALUE(cos_sin.dim() == 2, op, ": cos_sin must be 2-D [P, rot], got shape ", shape_str(cos_sin.sizes()));
  const int64_t P = cos_sin.size(0), rot = cos_sin.size(1);
  TORCH_CHECK_VALUE(rot % 2 == 0 && rot <= D, op, ": cos_sin width (rotary dims) must be even and <= head dim ", D,
                    ", got ", rot);
  check_dtype(op, "positions", positions, at::kLong, "");
  check_same_device(op, "positions", positions, qt, "qt");
  check_shape(op, "positions", positions, {T});
  check_dtype(op, "cu_seqlens", cu_seqlens, at::kInt, "");
  check_same_device(op, "cu_seqlens", cu_seqlens, qt, "qt");
  TORCH_CHECK_VALUE(cu_seqlens.dim() == 1 && cu_seqlens.size(0) >= 2, op,
                    ": cu_seqlens must be 1-D and hold at least two entries (one sequence), got shape ",
                    shape_str(cu_seqlens.sizes()));
  const int64_t B = cu_seqlens.size(0) - 1;
  like_qt("conv_state", conv_state);
  check_shape(op, "conv_state", conv_state, {B, C, 2});
  TORCH_CHECK_VALUE(std::isfinite(qk_norm_eps) && qk_norm_eps > 0, op,
                    ": qk_norm_eps must be a positive finite number, got ", qk_norm_eps);
  return {T, nq, nkv, D, rot, C, hv, B, P};
}

}  // namespace zaya::checks
