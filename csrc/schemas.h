// The schemas of every zaya op, in one place: csrc/ops.cpp defines them for torch.ops.zaya, and the
// SIMT-emulator modules (csrc/emu/) define the same schemas under their own namespaces. Backend files
// add only their own TORCH_LIBRARY_IMPL blocks; the meta (fake) kernels live in
// python/zaya_ops/_fake.py. Shapes and semantics are documented once, in the Python wrappers
// (python/zaya_ops/ops.py).
#pragma once

#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

namespace zaya {

// The ops without a backward yet: an Autograd kernel that lets the forward run and makes a backward
// through its outputs raise "derivative for <ns>::<op> is not implemented" (instead of torch's default
// for custom ops: a warning and no gradient). The two norms and moe_top1 get theirs in
// python/zaya_ops/_autograd.py; their backward ops are listed here too, so a double backward raises as well.
inline void register_not_differentiable(torch::Library& m) {
  for (const char* name : {"cca_qkv", "rms_norm_backward", "residual_scale_rmsnorm_backward", "router_backward",
                           "moe_top1_backward", "cca_qkv_functional_backward", "cca_attention_backward"})
    m.impl(name, torch::autograd::autogradNotImplementedFallback());
}

inline void define_schemas(torch::Library& m) {
  // y = w * round_w(round_w(x) * rsqrt(mean(round_w(x)^2) + eps)), round_w = cast to w's dtype.
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");

  // Spec steps 10/14 then the next RMSNorm: returns (new fp32 residual, its RMSNorm in w's dtype).
  m.def(
      "residual_scale_rmsnorm(Tensor h, Tensor residual, Tensor h_bias, Tensor h_scale, "
      "Tensor r_bias, Tensor r_scale, Tensor norm_weight, float eps) -> (Tensor, Tensor)");

  // Backward of the two norms (autograd of zaya_ops.reference, python/zaya_ops/_autograd.py). They take
  // the forward's inputs (nothing else is saved; the per-row rstd is recomputed).
  // rms_norm_backward returns (grad_x [T, H] x's dtype, grad_weight [H] weight's dtype).
  m.def("rms_norm_backward(Tensor grad_y, Tensor x, Tensor weight, float eps) -> (Tensor, Tensor)");
  // Returns the gradients of (h, residual, h_bias, h_scale, r_bias, r_scale, norm_weight).
  m.def(
      "residual_scale_rmsnorm_backward(Tensor grad_new_residual, Tensor grad_normed, Tensor h, "
      "Tensor residual, Tensor h_bias, Tensor h_scale, Tensor r_bias, Tensor r_scale, Tensor norm_weight, "
      "float eps) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");

  // CCA prologue, spec steps 3-7 and the KV-cache writes of step 8. Mutates the conv and value
  // states of the sequences' slots and writes k, v into the paged cache; returns q [T, nq, D].
  m.def(
      "cca_qkv(Tensor qt, Tensor kt, Tensor vc, Tensor vd, "
      "Tensor conv_dw_weight, Tensor conv_dw_bias, Tensor conv_g_weight, Tensor conv_g_bias, "
      "Tensor qk_temp, Tensor cos_sin, Tensor positions, Tensor cu_seqlens, "
      "Tensor(a!) conv_state, Tensor(b!) value_state, Tensor state_indices, "
      "Tensor(c!) k_cache, Tensor(d!) v_cache, Tensor slot_mapping, float qk_norm_eps) -> Tensor");

  // The differentiable form of cca_qkv (training): per sequence b the initial histories are read from
  // conv_state[b] [C, 2] and value_state[b] [nkv*D/2] (rows per sequence, not slots; nothing is
  // written). Returns (q [T, nq, D], k [T, nkv, D], v [T, nkv, D]). Kernel: csrc/cca_qkv_functional.h
  // (cca_qkv's kernel on scratch states and a one-token-block cache).
  m.def(
      "cca_qkv_functional(Tensor qt, Tensor kt, Tensor vc, Tensor vd, "
      "Tensor conv_dw_weight, Tensor conv_dw_bias, Tensor conv_g_weight, Tensor conv_g_bias, "
      "Tensor qk_temp, Tensor cos_sin, Tensor positions, Tensor cu_seqlens, "
      "Tensor conv_state, Tensor value_state, float qk_norm_eps) -> (Tensor, Tensor, Tensor)");
  // Its backward. Saved from the forward: qt, kt (the conv's input, recomputed through), the parameters,
  // cos_sin, positions, cu_seqlens and conv_state; v is a copy of vc/vd/value_state, so they are not
  // needed. Returns the gradients of (qt, kt, vc, vd, conv_dw_weight, conv_dw_bias, conv_g_weight,
  // conv_g_bias, qk_temp, conv_state, value_state), each in its input's dtype.
  m.def(
      "cca_qkv_functional_backward(Tensor grad_q, Tensor grad_k, Tensor grad_v, Tensor qt, Tensor kt, "
      "Tensor conv_dw_weight, Tensor conv_dw_bias, Tensor conv_g_weight, Tensor conv_g_bias, "
      "Tensor qk_temp, Tensor cos_sin, Tensor positions, Tensor cu_seqlens, Tensor conv_state, "
      "float qk_norm_eps) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, "
      "Tensor)");

  // Causal GQA attention over the paged KV cache, varlen prefill and decode alike.
  // Returns (out [T, nq*D], lse [nq, T] fp32).
  m.def(
      "cca_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor cu_seqlens_q, "
      "Tensor seqused_k, Tensor block_table, float scale, int max_seqlen_q, int max_seqlen_k) "
      "-> (Tensor, Tensor)");
  // Its backward (FlashAttention-2 from the saved lse; P is recomputed, never saved): takes the
  // gradients of out and lse (grad_lse None: zero), the forward's inputs and lse; returns
  // (grad_q [T, nq, D], grad_k_cache, grad_v_cache shaped like the caches, contiguous: positions no
  // sequence reads get 0, a block read by several sequences sums their gradients).
  m.def(
      "cca_attention_backward(Tensor grad_out, Tensor? grad_lse, Tensor q, Tensor k_cache, Tensor v_cache, "
      "Tensor lse, Tensor cu_seqlens_q, Tensor seqused_k, Tensor block_table, float scale, "
      "int max_seqlen_q, int max_seqlen_k) -> (Tensor, Tensor, Tensor)");

  // MLP router, spec step 12. Returns (expert_index int32 [T] (E = skip), expert_weight [T],
  // router_state [T, R], logits [T, E+1] or [0, E+1], counts int32 [E+1]).
  m.def(
      "router(Tensor x, Tensor? prev_state, Tensor down_weight, Tensor down_bias, "
      "Tensor? states_scale, Tensor norm_weight, Tensor fc1_weight, Tensor fc1_bias, "
      "Tensor fc2_weight, Tensor fc2_bias, Tensor out_weight, Tensor balancing_biases, "
      "float eps, bool return_logits=False) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Backward of router (autograd of zaya_ops.reference.router through expert_weight, router_state and
  // logits; the choice expert_index is not differentiable). Saved: the forward's inputs and expert_index
  // (the MLP is recomputed). A None gradient is a zero one. Returns the gradients of (x, prev_state,
  // down_weight, down_bias, states_scale, norm_weight, fc1_weight, fc1_bias, fc2_weight, fc2_bias,
  // out_weight); those of prev_state and states_scale are empty ([0, R], [0]) when they are None.
  m.def(
      "router_backward(Tensor? grad_weight, Tensor? grad_state, Tensor? grad_logits, Tensor x, "
      "Tensor? prev_state, Tensor down_weight, Tensor down_bias, Tensor? states_scale, Tensor norm_weight, "
      "Tensor fc1_weight, Tensor fc1_bias, Tensor fc2_weight, Tensor fc2_bias, Tensor out_weight, "
      "Tensor expert_index, float eps) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, "
      "Tensor, Tensor, Tensor)");

  // Top-1 experts, spec step 13, restricted to experts [expert_start, expert_end).
  m.def(
      "moe_top1(Tensor x, Tensor expert_index, Tensor expert_weight, Tensor gate_up_proj, "
      "Tensor down_proj, int expert_start=0, int expert_end=-1) -> Tensor");

  // Backward of moe_top1 (python/zaya_ops/_autograd.py): takes grad_out [T, H] and the forward's inputs
  // (nothing else is saved: the gate/up GEMM is recomputed) and returns the gradients of (x [T, H],
  // expert_weight [T], gate_up_proj [E, 2I, H], down_proj [E, H, I]). Skip-class tokens and tokens of
  // experts outside [expert_start, expert_end) get zero rows; non-local experts zero weight gradients.
  m.def(
      "moe_top1_backward(Tensor grad_out, Tensor x, Tensor expert_index, Tensor expert_weight, "
      "Tensor gate_up_proj, Tensor down_proj, int expert_start=0, int expert_end=-1) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
}

// Test-only ops, not part of the API and not defined by define_schemas: each is defined by the glue
// of the builds that can run it. _wgmma_tile (csrc/gpu/wgmma_tile.cpp, tests/test_wgmma_tiles.py):
// one Hopper warpgroup MMA tile, a [64, K] @ b[N, K]^T in fp32, A from shared memory or registers, B
// read K-major or MN-major; CUDA builds with sm_90a and the 32-lane emulator only.
inline void define_wgmma_tile_schema(torch::Library& m) {
  m.def("_wgmma_tile(Tensor a, Tensor b, bool a_from_registers, bool b_mn_major) -> Tensor");
}

}  // namespace zaya
