"""Autograd of the zaya ops (training, issue 16; in progress).

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
* CUDA/HIP, and the GPU kernels under the SIMT emulator (``zaya_emu32``/``zaya_emu64``): no backward
  kernel yet, so the backward op runs the reference by recompute (autograd of ``zaya_ops.reference`` on
  the saved inputs), registered here; :func:`backward_backends` says so.

**Saved for backward**: only references to the forward's inputs; no new tensor is kept. The per-row
rstd is recomputed in the backward pass (the backward reads each row of x anyway; it stays in cache for
the second pass), so ``rms_norm`` keeps x alive (H * x's element size bytes per token: 4H for the fp32
residual stream) and ``residual_scale_rmsnorm`` keeps h and residual alive (2H + 4H = 6H bytes per
token in bf16/fp16; new_residual and normed are recomputed, not saved), plus the [H] parameters.

**cca_qkv_functional** (the differentiable twin of ``cca_qkv``, which mutates its states and the KV cache
and so cannot have a registered autograd): w.r.t. qt, kt, vc, vd, conv_dw_weight, conv_dw_bias,
conv_g_weight, conv_g_bias, qk_temp, conv_state and value_state (not cos_sin, a table, nor the index
tensors), through all three outputs (None gradients are zeros). Backward op
``zaya::cca_qkv_functional_backward``: on the CPU a C++ kernel (csrc/cpu/cca_qkv_functional_backward.cpp:
RoPE, QK norm with its clamp, key temperature, residual means, the two-stage causal conv with its left
history recomputed, the delayed value shift; fp32, double for float64; parameter gradients summed per
fixed 256-token chunk and then over chunks in order in double, independent of the thread count); on
CUDA/HIP and the emulators the reference by recompute. **Saved**: qt, kt, the conv parameters, qk_temp,
cos_sin, positions, cu_seqlens and conv_state: references, no new tensor. Per token that keeps qt and kt
alive, ``(nq + nkv) * D`` elements (2 bytes each in bf16/fp16) plus 8 bytes of positions; v is a copy of
vc, vd and value_state, so those are not saved. (In the model qt and kt are column slices of the fused
projection, which keeps the whole projection alive.)

**Not differentiable yet**: ``cca_qkv``, ``cca_attention``, ``router``, ``moe_top1``. Their forward runs
with inputs that require grad, but a backward through their outputs raises ``RuntimeError: derivative
for zaya::<op> is not implemented`` (their Autograd kernel, csrc/schemas.h) instead of silently giving
no gradient. The same holds for a double backward through the norms (their backward ops).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from . import _fake, _library  # noqa: F401  (schemas and fakes first)
from . import reference

__all__ = ["DIFFERENTIABLE", "NOT_DIFFERENTIABLE", "backward_backends", "register_namespace"]

DIFFERENTIABLE = ("rms_norm", "residual_scale_rmsnorm", "cca_qkv_functional")
NOT_DIFFERENTIABLE = ("cca_qkv", "cca_attention", "router", "moe_top1")

_REGISTERED: set[str] = set()


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


def _rms_norm_backward_by_reference(grad_y, x, weight, eps):
    return _vjp(lambda a, w: reference.rms_norm(a, w, eps), (x, weight), (grad_y,))


def _residual_scale_rmsnorm_backward_by_reference(grad_new_residual, grad_normed, h, residual, h_bias, h_scale,
                                                  r_bias, r_scale, norm_weight, eps):
    return _vjp(lambda *a: reference.residual_scale_rmsnorm(*a, eps),
                (h, residual, h_bias, h_scale, r_bias, r_scale, norm_weight), (grad_new_residual, grad_normed))


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


def register_namespace(ns: str) -> None:
    """Registers the norms' autograd on ``torch.ops.<ns>`` (``"zaya"``, done at import, or an emulator
    namespace such as ``"zaya_emu32"``, which tests route the wrappers to) and the backward ops'
    reference-by-recompute kernels where that namespace has no backward kernel: CUDA for ``zaya``, the
    CPU key for the emulators (whose ops are the GPU kernels on CPU tensors)."""
    if ns in _REGISTERED:
        return
    ops = getattr(torch.ops, ns)
    if ns == "zaya":
        fallback_device = "cuda"
    else:
        fallback_device = "cpu"
        torch.library.register_fake(f"{ns}::rms_norm_backward", _fake._rms_norm_backward_fake)
        torch.library.register_fake(f"{ns}::residual_scale_rmsnorm_backward",
                                    _fake._residual_scale_rmsnorm_backward_fake)
        torch.library.register_fake(f"{ns}::cca_qkv_functional_backward", _fake._cca_qkv_functional_backward_fake)
    torch.library.register_kernel(f"{ns}::rms_norm_backward", fallback_device, _rms_norm_backward_by_reference)
    torch.library.register_kernel(f"{ns}::residual_scale_rmsnorm_backward", fallback_device,
                                  _residual_scale_rmsnorm_backward_by_reference)

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

    torch.library.register_kernel(f"{ns}::cca_qkv_functional_backward", fallback_device,
                                  _cca_qkv_functional_backward_by_reference)

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
        grads = ops.cca_qkv_functional_backward(grad_q, grad_k, grad_v, *saved, ctx.eps)
        out = [None] * 15
        for i, g in zip(_QKV_GRAD_INPUTS, grads):
            out[i] = g
        return tuple(out)

    torch.library.register_autograd(f"{ns}::cca_qkv_functional", qkv_backward, setup_context=qkv_setup)
    torch.library.register_autograd(f"{ns}::rms_norm", rms_backward, setup_context=rms_setup)
    torch.library.register_autograd(f"{ns}::residual_scale_rmsnorm", rsr_backward, setup_context=rsr_setup)
    _REGISTERED.add(ns)


def backward_backends(device: torch.device | str = "cpu") -> dict[str, str]:
    """What runs each op's backward on ``device``: ``"kernel (cpu)"``, ``"reference (recompute: ...)"``
    for a device without a backward kernel yet, or ``"not differentiable yet"``."""
    dev = torch.device(device)
    out = {}
    for name in DIFFERENTIABLE:
        out[name] = ("kernel (cpu)" if dev.type == "cpu"
                     else f"reference (recompute: no {dev.type} backward kernel yet)")
    for name in NOT_DIFFERENTIABLE:
        out[name] = "not differentiable yet"
    return out


register_namespace("zaya")
