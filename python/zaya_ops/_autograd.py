"""Autograd of the zaya ops (training, issue 16; in progress).

**Differentiable now**: ``rms_norm`` (w.r.t. ``x`` and ``weight``) and ``residual_scale_rmsnorm`` (w.r.t.
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

**cca_attention** (w.r.t. ``q``, ``k_cache`` and ``v_cache``, through ``out`` and ``lse``): the backward op
``zaya::cca_attention_backward`` is FlashAttention-2's, P recomputed from the saved lse (with
``Delta = rowsum(P * dP) - dlse`` recomputed too instead of ``rowsum(dO * out)``: the forward kernel's fp32
out is a few ulps off, which dQ inherited; csrc/cpu/cca_attention_backward.cpp), dK/dV summed over each KV head's query group; the cache gradients are dense and shaped
like the caches (positions no sequence reads get 0, a block shared by several sequences sums their
gradients). CPU: csrc/cpu/cca_attention_backward.cpp (threaded, fp32 accumulation, race-free passes, so
independent of the thread count; float64 runs in double for gradcheck). CUDA/HIP and the emulators: the
reference by recompute. **Saved**: lse only, never probabilities nor out: ``4 * nq`` bytes per token
are a new tensor kept alive (32 bytes at nq = 8), plus references to q and the caches (inputs).

**Not differentiable yet**: ``cca_qkv``, ``router``, ``moe_top1``. Their forward runs
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

DIFFERENTIABLE = ("rms_norm", "residual_scale_rmsnorm", "cca_attention")
NOT_DIFFERENTIABLE = ("cca_qkv", "router", "moe_top1")

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
        # materialize_grads: an input the outputs do not depend on gets zeros (a cache no query reads)
        return tuple(g.contiguous() for g in torch.autograd.grad(outs, leaves, list(grads), materialize_grads=True))


def _rms_norm_backward_by_reference(grad_y, x, weight, eps):
    return _vjp(lambda a, w: reference.rms_norm(a, w, eps), (x, weight), (grad_y,))


def _residual_scale_rmsnorm_backward_by_reference(grad_new_residual, grad_normed, h, residual, h_bias, h_scale,
                                                  r_bias, r_scale, norm_weight, eps):
    return _vjp(lambda *a: reference.residual_scale_rmsnorm(*a, eps),
                (h, residual, h_bias, h_scale, r_bias, r_scale, norm_weight), (grad_new_residual, grad_normed))


def _cca_attention_backward_by_reference(grad_out, grad_lse, q, k_cache, v_cache, lse, cu_seqlens_q, seqused_k,
                                         block_table, scale, max_seqlen_q, max_seqlen_k):
    if grad_lse is None:
        grad_lse = torch.zeros_like(lse)
    return _vjp(lambda a, k, v: reference.cca_attention(a, k, v, cu_seqlens_q, seqused_k, block_table, scale),
                (q, k_cache, v_cache), (grad_out, grad_lse))


def register_namespace(ns: str) -> None:
    """Registers the differentiable ops' autograd on ``torch.ops.<ns>`` (``"zaya"``, done at import, or an emulator
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
        torch.library.register_fake(f"{ns}::cca_attention_backward", _fake._cca_attention_backward_fake)
    torch.library.register_kernel(f"{ns}::rms_norm_backward", fallback_device, _rms_norm_backward_by_reference)
    torch.library.register_kernel(f"{ns}::residual_scale_rmsnorm_backward", fallback_device,
                                  _residual_scale_rmsnorm_backward_by_reference)
    torch.library.register_kernel(f"{ns}::cca_attention_backward", fallback_device,
                                  _cca_attention_backward_by_reference)

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

    def attn_setup(ctx, inputs, output):
        q, k_cache, v_cache, cu_seqlens_q, seqused_k, block_table, scale, max_seqlen_q, max_seqlen_k = inputs
        ctx.save_for_backward(q, k_cache, v_cache, output[1], cu_seqlens_q, seqused_k, block_table)
        ctx.args = (scale, max_seqlen_q, max_seqlen_k)

    def attn_backward(ctx, grad_out, grad_lse):
        q, k_cache, v_cache, lse, *index = ctx.saved_tensors
        if grad_out is None:
            grad_out = q.new_zeros(q.shape[0], q.shape[1] * q.shape[2])
        grads = ops.cca_attention_backward(grad_out, grad_lse, q, k_cache, v_cache, lse, *index, *ctx.args)
        return (*grads, None, None, None, None, None, None)

    torch.library.register_autograd(f"{ns}::rms_norm", rms_backward, setup_context=rms_setup)
    torch.library.register_autograd(f"{ns}::cca_attention", attn_backward, setup_context=attn_setup)
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
