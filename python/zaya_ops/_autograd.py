"""Autograd of the zaya ops (training, issue 16).

**Differentiable now**: ``cca_qkv_functional`` (below), ``rms_norm`` (w.r.t. ``x`` and ``weight``) and ``residual_scale_rmsnorm`` (w.r.t.
``h``, ``residual``, ``h_bias``, ``h_scale``, ``r_bias``, ``r_scale``, ``norm_weight``, through both outputs),
registered with ``torch.library.register_autograd``. Their gradient is defined as autograd of
``zaya_ops.reference`` defines it: every dtype cast of the forward is a cast of the gradient, and products
of param-dtype tensors (``weight * n``, ``(h + h_bias) * h_scale``) are rounded to the param dtype as
autograd's are; the [H] parameter gradients are summed over rows (in double on the CPU) and rounded once.

The backward passes are custom ops too, ``zaya::rms_norm_backward`` and
``zaya::residual_scale_rmsnorm_backward`` (schemas in csrc/schemas.h, fakes in ``_fake.py``):

* CPU: C++ kernels (csrc/cpu/norms.cpp: threaded over rows, fp32 row sums, parameter gradients summed in double and
  reduced in fixed row blocks in order, so the result does not depend on the thread count);
* CUDA/HIP, and the GPU kernels under the SIMT emulator (``zaya_emu32``/``zaya_emu64``): portable
  kernels (csrc/kernels/norms_backward.cuh: row statistics per warp, dX in one pass over the rows of a
  block, parameter gradients as fp32 per-block partials summed in block order: deterministic, no atomics).

**Saved for backward**: only references to the forward's inputs; no new tensor is kept. The per-row
rstd is recomputed in the backward pass (the backward reads each row of x anyway; it stays in cache for
the second pass), so ``rms_norm`` keeps x alive (H * x's element size bytes per token: 4H for the fp32
residual stream) and ``residual_scale_rmsnorm`` keeps h and residual alive (2H + 4H = 6H bytes per
token in bf16/fp16; new_residual and normed are recomputed, not saved), plus the [H] parameters.

**router** is differentiable w.r.t. ``x``, ``prev_state``, ``down_weight``, ``down_bias``, ``states_scale``,
``norm_weight``, ``fc1_weight``, ``fc1_bias``, ``fc2_weight``, ``fc2_bias`` and ``out_weight``, through
``expert_weight`` (the softmax probability at the chosen index; the skip class's weight is the constant 0),
``router_state`` (the next layer's ``prev_state``) and ``logits`` (``return_logits``, for aux losses). The
choice ``expert_index`` is not differentiable (as in transformers) and ``balancing_biases`` gets no gradient
(detached in the reference). Backward op ``zaya::router_backward``: CPU kernel csrc/cpu/router_backward.cpp
(ATen GEMMs, threaded elementwise parts, deterministic); on CUDA/HIP and the emulators the portable kernels
of csrc/kernels/router_backward.cuh (the forward's tiles recomputed on chip, the chain backwards on the matrix
units, weight gradients as fixed 1024-token chunk partials summed in order: deterministic, no atomics) for
bfloat16/float16 with max(R, E+1) <= 512, the forward kernel's coverage; anything else (the kernel raises
NotImplementedError) runs the reference by recompute. **Saved**: the forward's inputs and ``expert_index``; the MLP (rho, norm, two GELU layers,
logits, softmax) is recomputed in the backward. New memory: 4 bytes per token (the int32 index, an
output anyway); it keeps ``x`` (H * 2 bytes per token in bf16/fp16) and ``prev_state`` (2R) alive. Saving
the activations instead would cost about 7R + (E+1) param-dtype values per token (14R + 2(E+1) bytes in
bf16) to save three [R, R]-sized GEMMs of recompute, small next to the down projection's T*R*H.

**moe_top1** (w.r.t. ``x``, ``expert_weight``, ``gate_up_proj`` and ``down_proj``; ``expert_index`` is
an integer and gets none): backward op ``zaya::moe_top1_backward``. Its gradient is that of
``zaya_ops.reference.moe_top1`` with the intermediates kept in fp32 (double for float64): the CPU
kernel (csrc/cpu/moe_top1_backward.cpp) groups the tokens by expert as the forward does, recomputes
``[gate | up] = x @ gate_up_proj[e]^T``, and rounds once per output, so its error against float64 is at
most the reference autograd's (which rounds after every op). Skip-class tokens and tokens of experts
outside ``[expert_start, expert_end)`` get zero ``x`` and ``expert_weight`` gradients, and experts
outside the range zero weight gradients (the local experts' share: expert-parallel ranks sum ``x``'s
gradient as they sum the output). The weight gradients are summed over tokens in fixed chunks and row
blocks, independent of the thread count. **Saved**: references to the inputs only (x is kept alive:
H * element size bytes per token, plus the index and weight, 4 or 8 + element size bytes); the [T, 2I]
gate/up pre-activation is recomputed, not saved. Saving it (SiLU's backward needs gate and up, so the
[T, I] activation alone is not enough) would cost 2I * element size bytes per token (8 KiB in bf16 at
ZAYA1's I = 2048, twice x's 4 KiB at H = 2048) to spare one of the backward's five GEMMs (the gate/up
recompute: 2TIH of the 8TIH multiply-adds per step); the routing-weight gradient is
``rowsum(act * (grad_out @ down_proj[e]))``, so the forward's down GEMM is not recomputed either. On
CUDA/HIP and the emulators the backward op is a portable GPU kernel (csrc/kernels/moe_top1_backward.cuh:
the forward's token grouping and matrix tiles, gate/up recomputed on the matrix units, weight
gradients one block per output tile looping over the expert's tokens in order: deterministic, no
atomics), for what the forward's GPU kernels take (bf16/fp16, H and I multiples of 8; other inputs raise
NotImplementedError, as the forward does).

**cca_qkv_functional** (the differentiable twin of ``cca_qkv``, which mutates its states and the KV cache
and so cannot have a registered autograd): w.r.t. qt, kt, vc, vd, conv_dw_weight, conv_dw_bias,
conv_g_weight, conv_g_bias, qk_temp, conv_state and value_state (not cos_sin, a table, nor the index
tensors), through all three outputs (None gradients are zeros). Backward op
``zaya::cca_qkv_functional_backward``: on the CPU a C++ kernel (csrc/cpu/cca_qkv_functional_backward.cpp:
RoPE, QK norm with its clamp, key temperature, residual means, the two-stage causal conv with its left
history recomputed, the delayed value shift; fp32, double for float64; parameter gradients summed per
fixed 256-token chunk and then over chunks in order in double, independent of the thread count); on
CUDA/HIP and the emulators the portable kernels of csrc/kernels/cca_qkv_backward.cuh (bf16/fp16, head dim a
multiple of 16 up to 128: the grouped conv's recompute and its two gradient GEMMs on the matrix units, the
parameter gradients as fp32 partials per fixed 256-token range summed in order, no atomics), and the reference
by recompute for what that kernel does not cover (head dims 144-256, which the forward kernel takes). **Saved**: qt, kt, the conv parameters, qk_temp,
cos_sin, positions, cu_seqlens and conv_state: references, no new tensor. Per token that keeps qt and kt
alive, ``(nq + nkv) * D`` elements (2 bytes each in bf16/fp16) plus 8 bytes of positions; v is a copy of
vc, vd and value_state, so those are not saved. (In the model qt and kt are column slices of the fused
projection, which keeps the whole projection alive.)

**cca_attention** (w.r.t. ``q``, ``k_cache`` and ``v_cache``, through ``out`` and ``lse``): the backward op
``zaya::cca_attention_backward`` is FlashAttention-2's, P recomputed from the saved lse (with
``Delta = rowsum(P * dP) - dlse`` recomputed too instead of ``rowsum(dO * out)``: the forward kernel's fp32
out is a few ulps off, which dQ inherited; csrc/cpu/cca_attention_backward.cpp), dK/dV summed over each KV head's query group; the cache gradients are dense and shaped
like the caches (positions no sequence reads get 0, a block shared by several sequences sums their
gradients). CPU: csrc/cpu/cca_attention_backward.cpp (threaded, fp32 accumulation, race-free passes, so
independent of the thread count; float64 runs in double for gradcheck). CUDA/HIP and the emulators:
csrc/kernels/cca_attention_backward.cuh (the same passes as three kernels, matrix products on mma.sync /
MFMA, no atomics) for bf16/fp16 at head dim 64 or 128; other inputs (D = 256) recompute the reference. **Saved**: lse only, never probabilities nor out: ``4 * nq`` bytes per token
are a new tensor kept alive (32 bytes at nq = 8), plus references to q and the caches (inputs).

**Not differentiable**: ``cca_qkv``, which mutates its states and the KV cache (``register_autograd`` takes
functional ops only): train through ``cca_qkv_functional``. Its forward runs
with inputs that require grad, but a backward through their outputs raises ``RuntimeError: derivative
for zaya::<op> is not implemented`` (their Autograd kernel, csrc/schemas.h) instead of silently giving
no gradient. The same holds for a double backward through the differentiable ops (their backward ops).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from . import _fake, _library  # noqa: F401  (schemas and fakes first)
from . import reference

__all__ = ["DIFFERENTIABLE", "NOT_DIFFERENTIABLE", "backward_backends", "register_namespace"]

DIFFERENTIABLE = ("rms_norm", "residual_scale_rmsnorm", "cca_qkv_functional", "cca_attention", "router", "moe_top1")
NOT_DIFFERENTIABLE = ("cca_qkv",)

_REGISTERED: set[str] = set()
# Ops whose backward has a CUDA/HIP kernel (also what the emulator namespaces run).
_GPU_BACKWARD_KERNELS = ("rms_norm", "residual_scale_rmsnorm", "moe_top1", "cca_attention", "router",
                         "cca_qkv_functional")
# Where a GPU backward kernel covers only some inputs: what it covers (the rest recomputes the reference).
_GPU_BACKWARD_COVERS = {
    "cca_attention": "bfloat16/float16 with head dim 64 or 128; otherwise reference (recompute)",
    "router": "bfloat16/float16 with R and E+1 up to 512; float32 or larger: reference (recompute)",
    "cca_qkv_functional": "bfloat16/float16 with head dim up to 128; otherwise reference (recompute)",
}


def _vjp(fn: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]], inputs: Sequence[torch.Tensor],
         grads: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Gradients of ``fn`` at ``inputs`` against ``grads`` by autograd of a recompute (contiguous).

    A kernel may be called with autograd's dispatch keys excluded (inside a TorchDispatchMode, such as
    opcheck's schema check), so they are included again for the recompute, which also runs outside
    the active modes (its ops are PyTorch's own)."""
    K = torch._C.DispatchKey
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in (K.AutogradFunctionality, K.AutogradOther, K.AutogradCPU, K.AutogradCUDA, K.ADInplaceOrView):
        exclude = exclude.remove(key)
    leaves = [t.detach().requires_grad_() for t in inputs]
    with torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude), \
            torch.utils._python_dispatch._disable_current_modes(), torch.enable_grad():
        outs = fn(*leaves)
        outs = outs if isinstance(outs, tuple) else (outs,)
        # unused inputs (a call with no tokens) get zeros
        return tuple(g.contiguous() for g in torch.autograd.grad(outs, leaves, list(grads), allow_unused=True,
                                                                  materialize_grads=True))


def _router_backward_by_reference(grad_weight, grad_state, grad_logits, x, prev_state, down_weight, down_bias,
                                  states_scale, norm_weight, fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                                  out_weight, expert_index, eps):
    has_prev = prev_state is not None
    index = expert_index.long()[:, None]

    def fn(x, dw, db, nw, w1, b1, w2, b2, wo, *prev):
        p, s = prev if prev else (None, None)
        state, logits = reference.router_mlp(x, p, dw, db, s, nw, w1, b1, w2, b2, wo, eps)
        return reference.router_pick(torch.softmax(logits, dim=-1), index), state, logits

    T, R, E1 = x.shape[0], down_weight.shape[0], out_weight.shape[0]
    grads = [g if g is not None else x.new_zeros(shape)
             for g, shape in ((grad_weight, (T,)), (grad_state, (T, R)), (grad_logits, (T, E1)))]
    tensors = (x, down_weight, down_bias, norm_weight, fc1_weight, fc1_bias, fc2_weight, fc2_bias, out_weight)
    gx, gdw, gdb, gnw, g1w, g1b, g2w, g2b, gwo, *gprev = _vjp(
        fn, tensors + ((prev_state, states_scale) if has_prev else ()), grads)
    gp, gs = gprev if has_prev else (x.new_empty(0, R), x.new_empty(0))
    return gx, gp, gdw, gdb, gs, gnw, g1w, g1b, g2w, g2b, gwo


# cca_qkv_functional's differentiable inputs (positions in its schema) and the backward op's outputs, in order.
_QKV_GRAD_INPUTS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 13)


def _cca_qkv_functional_backward_by_reference(grad_q, grad_k, grad_v, qt, kt, conv_dw_weight, conv_dw_bias,
                                              conv_g_weight, conv_g_bias, qk_temp, cos_sin, positions, cu_seqlens,
                                              conv_state, eps):
    T, hv, B = qt.shape[0], kt.shape[1] // 2, conv_state.shape[0]
    vc = qt.new_zeros((T, hv))  # v is a copy of vc, vd and value_state: their values do not matter
    value_state = qt.new_zeros((B, hv))

    def fn(qt, kt, vc, vd, dw_w, dw_b, g_w, g_b, temp, conv_state, value_state):
        return reference.cca_qkv_functional(qt, kt, vc, vd, dw_w, dw_b, g_w, g_b, temp, cos_sin, positions,
                                            cu_seqlens, conv_state, value_state, eps)

    return _vjp(fn, (qt, kt, vc, vc.clone(), conv_dw_weight, conv_dw_bias, conv_g_weight, conv_g_bias, qk_temp,
                     conv_state, value_state), (grad_q, grad_k, grad_v))


def _cca_attention_backward_by_reference(grad_out, grad_lse, q, k_cache, v_cache, lse, cu_seqlens_q, seqused_k,
                                         block_table, scale, max_seqlen_q, max_seqlen_k):
    if grad_lse is None:
        grad_lse = torch.zeros_like(lse)
    return _vjp(lambda a, k, v: reference.cca_attention(a, k, v, cu_seqlens_q, seqused_k, block_table, scale),
                (q, k_cache, v_cache), (grad_out, grad_lse))


def register_namespace(ns: str) -> None:
    """Registers the differentiable ops' autograd on ``torch.ops.<ns>`` (``"zaya"``, done at import, or an emulator
    namespace such as ``"zaya_emu32"``, which tests route the wrappers to), and the backward ops' fakes on the
    emulator namespaces. Every backward op has a kernel on every backend now; where a GPU kernel does not
    cover an input (``_GPU_BACKWARD_COVERS``), the op's autograd backward recomputes the reference instead."""
    if ns in _REGISTERED:
        return
    ops = getattr(torch.ops, ns)
    if ns != "zaya":
        torch.library.register_fake(f"{ns}::rms_norm_backward", _fake._rms_norm_backward_fake)
        torch.library.register_fake(f"{ns}::residual_scale_rmsnorm_backward",
                                    _fake._residual_scale_rmsnorm_backward_fake)
        torch.library.register_fake(f"{ns}::router_backward", _fake._router_backward_fake)
        torch.library.register_fake(f"{ns}::moe_top1_backward", _fake._moe_top1_backward_fake)
        torch.library.register_fake(f"{ns}::cca_qkv_functional_backward", _fake._cca_qkv_functional_backward_fake)
        torch.library.register_fake(f"{ns}::cca_attention_backward", _fake._cca_attention_backward_fake)

    def rms_setup(ctx, inputs, output):
        x, weight, eps = inputs
        ctx.save_for_backward(x, weight)
        ctx.eps = eps

    def rms_backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        grad_x, grad_weight = ops.rms_norm_backward(grad_y, x, weight, ctx.eps)
        return grad_x, grad_weight, None

    def rsr_setup(ctx, inputs, output):
        *tensors, eps = inputs
        ctx.save_for_backward(*tensors)
        ctx.eps = eps

    def rsr_backward(ctx, grad_new_residual, grad_normed):
        saved = ctx.saved_tensors
        h, residual = saved[0], saved[1]
        if grad_new_residual is None:
            grad_new_residual = torch.zeros_like(residual)
        if grad_normed is None:
            grad_normed = torch.zeros_like(h)
        grads = ops.residual_scale_rmsnorm_backward(grad_new_residual, grad_normed, *saved, ctx.eps)
        return (*grads, None)

    def router_setup(ctx, inputs, output):
        *tensors, _balancing_biases, eps, return_logits = inputs
        ctx.save_for_backward(*tensors, output[0])
        ctx.eps = eps
        ctx.return_logits = return_logits

    def router_backward(ctx, _g_index, g_weight, g_state, g_logits, _g_counts):
        *tensors, index = ctx.saved_tensors
        if not ctx.return_logits:
            g_logits = None
        try:
            g = ops.router_backward(g_weight, g_state, g_logits, *tensors, index, ctx.eps)
        except NotImplementedError:  # outside the GPU kernel's coverage (float32, R or E+1 > 512), or no kernel
            g = _router_backward_by_reference(g_weight, g_state, g_logits, *tensors, index, ctx.eps)
        has_prev = tensors[1] is not None
        return (g[0], g[1] if has_prev else None, g[2], g[3], g[4] if has_prev else None, *g[5:], None, None, None)

    torch.library.register_autograd(f"{ns}::router", router_backward, setup_context=router_setup)

    def moe_setup(ctx, inputs, output):
        *tensors, expert_start, expert_end = inputs
        ctx.save_for_backward(*tensors)  # x, expert_index, expert_weight, gate_up_proj, down_proj
        ctx.expert_range = (expert_start, expert_end)

    def moe_backward(ctx, grad_out):
        saved = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(saved[0])
        grad_x, grad_w, grad_gate_up, grad_down = ops.moe_top1_backward(grad_out, *saved, *ctx.expert_range)
        return grad_x, None, grad_w, grad_gate_up, grad_down, None, None

    torch.library.register_autograd(f"{ns}::moe_top1", moe_backward, setup_context=moe_setup)

    def qkv_setup(ctx, inputs, output):
        (qt, kt, _, _, dw_w, dw_b, g_w, g_b, temp, cos_sin, positions, cu_seqlens, conv_state, _, eps) = inputs
        ctx.save_for_backward(qt, kt, dw_w, dw_b, g_w, g_b, temp, cos_sin, positions, cu_seqlens, conv_state)
        ctx.eps = eps

    def qkv_backward(ctx, grad_q, grad_k, grad_v):
        saved = ctx.saved_tensors
        qt, kt = saved[0], saved[1]
        T, D = qt.shape[0], saved[4].shape[1]
        if grad_q is None:
            grad_q = qt.new_zeros((T, qt.shape[1] // D, D))
        if grad_k is None:
            grad_k = kt.new_zeros((T, kt.shape[1] // D, D))
        if grad_v is None:
            grad_v = kt.new_zeros((T, kt.shape[1] // D, D))
        try:
            grads = ops.cca_qkv_functional_backward(grad_q, grad_k, grad_v, *saved, ctx.eps)
        except NotImplementedError:
            # outside the GPU kernel's coverage (head dim over 128, float32): the reference by recompute
            if ns == "zaya" and qt.device.type == "cpu":
                raise
            grads = _cca_qkv_functional_backward_by_reference(grad_q, grad_k, grad_v, *saved, ctx.eps)
        out = [None] * 15
        for i, g in zip(_QKV_GRAD_INPUTS, grads):
            out[i] = g
        return tuple(out)

    torch.library.register_autograd(f"{ns}::cca_qkv_functional", qkv_backward, setup_context=qkv_setup)

    def attn_setup(ctx, inputs, output):
        q, k_cache, v_cache, cu_seqlens_q, seqused_k, block_table, scale, max_seqlen_q, max_seqlen_k = inputs
        ctx.save_for_backward(q, k_cache, v_cache, output[1], cu_seqlens_q, seqused_k, block_table)
        ctx.args = (scale, max_seqlen_q, max_seqlen_k)

    def attn_backward(ctx, grad_out, grad_lse):
        q, k_cache, v_cache, lse, *index = ctx.saved_tensors
        if grad_out is None:
            grad_out = q.new_zeros(q.shape[0], q.shape[1] * q.shape[2])
        # The GPU kernels (csrc/kernels/cca_attention_backward.cuh; the emulators' too) take bf16/fp16 at
        # D = 64 or 128; other inputs off the CPU recompute the reference.
        covered = (ns == "zaya" and q.device.type == "cpu") or (
            q.dtype in (torch.bfloat16, torch.float16) and q.shape[2] in (64, 128))
        backward = ops.cca_attention_backward if covered else _cca_attention_backward_by_reference
        grads = backward(grad_out, grad_lse, q, k_cache, v_cache, lse, *index, *ctx.args)
        return (*grads, None, None, None, None, None, None)

    torch.library.register_autograd(f"{ns}::rms_norm", rms_backward, setup_context=rms_setup)
    torch.library.register_autograd(f"{ns}::cca_attention", attn_backward, setup_context=attn_setup)
    torch.library.register_autograd(f"{ns}::residual_scale_rmsnorm", rsr_backward, setup_context=rsr_setup)
    _REGISTERED.add(ns)


def backward_backends(device: torch.device | str = "cpu") -> dict[str, str]:
    """What runs each op's backward on ``device``: ``"kernel (cpu)"``, ``"kernel (cuda)"`` (the portable
    CUDA/HIP kernel; ``"kernel (cuda: <what it covers>; otherwise reference (recompute))"`` where the kernel
    leaves some valid inputs to the reference), ``"reference (recompute: ...)"`` for a device without a
    backward kernel, or ``"not differentiable yet"``."""
    dev = torch.device(device)
    out = {}
    for name in DIFFERENTIABLE:
        if dev.type == "cpu":
            out[name] = "kernel (cpu)"
        elif name in _GPU_BACKWARD_KERNELS:
            covers = _GPU_BACKWARD_COVERS.get(name)
            out[name] = f"kernel ({dev.type}: {covers})" if covers else f"kernel ({dev.type})"
        else:
            out[name] = f"reference (recompute: no {dev.type} backward kernel yet)"
    for name in NOT_DIFFERENTIABLE:
        out[name] = "not differentiable yet"
    if "cca_qkv" in out:  # a mutating op cannot have a registered autograd: its functional twin has it
        out["cca_qkv"] = "not differentiable (it mutates its states and the KV cache): use cca_qkv_functional"
    return out


register_namespace("zaya")


def _linear_setup(ctx, inputs, output):
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _linear_backward(ctx, grad_y):
    """F.linear's gradient (``grad_x = grad_y @ weight``, ``grad_weight = grad_y^T @ x``, ``grad_bias`` the
    row sum), each product through ``zaya.linear`` itself: fp32 accumulation and one rounding, as ATen's
    bf16/fp16 matmuls give, but on the CPU's fast path rather than ATen's slow reduced-precision GEMM."""
    x, weight = ctx.saved_tensors
    grad_x = grad_weight = grad_bias = None
    g2 = grad_y.reshape(-1, grad_y.shape[-1])
    if ctx.needs_input_grad[0]:
        grad_x = torch.ops.zaya.linear(grad_y, weight.t(), None)
    if ctx.needs_input_grad[1]:
        grad_weight = torch.ops.zaya.linear(g2.t(), x.reshape(-1, x.shape[-1]).t(), None)
    if ctx.has_bias and ctx.needs_input_grad[2]:
        grad_bias = g2.sum(0, dtype=torch.float32).to(grad_y.dtype)
    return grad_x, grad_weight, grad_bias


# zaya.linear (the model's projections and LM head, csrc/cpu/linear.cpp): differentiable like F.linear, so
# training runs its fast CPU path too. Saved: references to x and weight (no new tensor).
torch.library.register_autograd("zaya::linear", _linear_backward, setup_context=_linear_setup)
