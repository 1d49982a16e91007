"""Fake (meta) kernels: output shapes and dtypes of each zaya op, so torch.compile can trace them.

They check only what the output shapes depend on, and that every tensor argument sits on one device;
the wrappers in ops.py check the rest. They also serve as the ops' Meta kernels, which the dispatcher
picks whenever any argument is a meta tensor: a direct ``torch.ops.zaya.<op>`` call with one meta
tensor among CPU or CUDA ones would otherwise return uninitialised memory instead of an error.
"""

from __future__ import annotations

import functools
import inspect

import torch

from . import _library  # noqa: F401  (the schemas must exist before register_fake)


def _check_one_device(op: str, arguments: dict) -> None:
    """A ValueError naming the first tensor argument whose device differs from the first tensor's."""
    first = None
    for name, a in arguments.items():
        if not isinstance(a, torch.Tensor):
            continue
        if first is None:
            first = (name, a.device)
        elif a.device != first[1]:
            raise ValueError(f"zaya::{op}: {name} is on {a.device} but {first[0]} on {first[1]}: every tensor "
                             f"argument must be on one device")


def _fake(op: str):
    """Registers the decorated function as ``zaya::<op>``'s fake kernel, behind the device check."""
    def register(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def checked(*args, **kwargs):
            _check_one_device(op, signature.bind(*args, **kwargs).arguments)
            return fn(*args, **kwargs)

        torch.library.register_fake(f"zaya::{op}")(checked)
        return checked

    return register


@_fake("rms_norm")
def _rms_norm_fake(x, weight, eps):
    torch._check(x.dim() == 2, lambda: "rms_norm: x must be 2-D")
    torch._check(weight.shape == (x.shape[1],), lambda: "rms_norm: weight must be [H]")
    return x.new_empty(x.shape, dtype=weight.dtype)


@_fake("residual_scale_rmsnorm")
def _residual_scale_rmsnorm_fake(h, residual, h_bias, h_scale, r_bias, r_scale, norm_weight, eps):
    torch._check(h.dim() == 2 and residual.shape == h.shape, lambda: "h and residual must be [T, H]")
    return (
        h.new_empty(h.shape, dtype=torch.float32),
        h.new_empty(h.shape, dtype=norm_weight.dtype),
    )


@_fake("rms_norm_backward")
def _rms_norm_backward_fake(grad_y, x, weight, eps):
    torch._check(grad_y.shape == x.shape, lambda: "rms_norm_backward: grad_y must be x's shape")
    return x.new_empty(x.shape), weight.new_empty(weight.shape)


@_fake("residual_scale_rmsnorm_backward")
def _residual_scale_rmsnorm_backward_fake(grad_new_residual, grad_normed, h, residual, h_bias, h_scale, r_bias,
                                          r_scale, norm_weight, eps):
    torch._check(grad_normed.shape == h.shape and grad_new_residual.shape == h.shape,
                 lambda: "residual_scale_rmsnorm_backward: the gradients must be h's shape")
    return (h.new_empty(h.shape), residual.new_empty(h.shape),
            *(h.new_empty((h.shape[1],)) for _ in range(5)))


@_fake("cca_qkv")
def _cca_qkv_fake(qt, kt, vc, vd, conv_dw_weight, conv_dw_bias, conv_g_weight, conv_g_bias, qk_temp,
                  cos_sin, positions, cu_seqlens, conv_state, value_state, state_indices, k_cache,
                  v_cache, slot_mapping, qk_norm_eps):
    D = k_cache.shape[3]
    torch._check_value(D > 0, lambda: "cca_qkv: k_cache head dim must be positive")
    torch._check(qt.shape[1] % D == 0, lambda: "qt width must be a multiple of the head dim")
    return qt.new_empty((qt.shape[0], qt.shape[1] // D, D))


@_fake("cca_qkv_functional")
def _cca_qkv_functional_fake(qt, kt, vc, vd, conv_dw_weight, conv_dw_bias, conv_g_weight, conv_g_bias, qk_temp,
                             cos_sin, positions, cu_seqlens, conv_state, value_state, qk_norm_eps):
    torch._check_value(conv_g_weight.dim() == 3 and conv_g_weight.shape[1] > 0,
                       lambda: "cca_qkv_functional: conv_g_weight must be [C, D, 2] with D > 0")
    D = conv_g_weight.shape[1]
    torch._check(qt.shape[1] % D == 0 and kt.shape[1] % D == 0,
                 lambda: "cca_qkv_functional: qt and kt widths must be multiples of the head dim")
    T = qt.shape[0]
    return (qt.new_empty((T, qt.shape[1] // D, D)), qt.new_empty((T, kt.shape[1] // D, D)),
            qt.new_empty((T, kt.shape[1] // D, D)))


def _cca_qkv_functional_backward_fake(grad_q, grad_k, grad_v, qt, kt, conv_dw_weight, conv_dw_bias, conv_g_weight,
                                      conv_g_bias, qk_temp, cos_sin, positions, cu_seqlens, conv_state,
                                      qk_norm_eps):
    torch._check(grad_q.dim() == 3 and grad_k.shape == grad_v.shape,
                 lambda: "cca_qkv_functional_backward: grad_q must be [T, nq, D], grad_k and grad_v [T, nkv, D]")
    T, hv = qt.shape[0], kt.shape[1] // 2
    B = conv_state.shape[0]
    return (qt.new_empty(qt.shape), kt.new_empty(kt.shape), qt.new_empty((T, hv)), qt.new_empty((T, hv)),
            *(t.new_empty(t.shape) for t in (conv_dw_weight, conv_dw_bias, conv_g_weight, conv_g_bias, qk_temp,
                                               conv_state)),
            qt.new_empty((B, hv)))


_cca_qkv_functional_backward_fake = _fake("cca_qkv_functional_backward")(_cca_qkv_functional_backward_fake)


@_fake("cca_attention")
def _cca_attention_fake(q, k_cache, v_cache, cu_seqlens_q, seqused_k, block_table, scale, max_seqlen_q,
                        max_seqlen_k):
    T, nq, D = q.shape
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return q.new_empty((T, nq * D)), q.new_empty((nq, T), dtype=lse_dtype)


@_fake("cca_attention_backward")
def _cca_attention_backward_fake(grad_out, grad_lse, q, k_cache, v_cache, lse, cu_seqlens_q, seqused_k,
                                 block_table, scale, max_seqlen_q, max_seqlen_k):
    T, nq, D = q.shape
    torch._check(grad_out.shape == (T, nq * D), lambda: "cca_attention_backward: grad_out must be out's shape")
    torch._check(grad_lse is None or grad_lse.shape == lse.shape,
                 lambda: "cca_attention_backward: grad_lse must be lse's shape")
    return (q.new_empty((T, nq, D)), k_cache.new_empty(k_cache.shape), v_cache.new_empty(v_cache.shape))


@_fake("router")
def _router_fake(x, prev_state, down_weight, down_bias, states_scale, norm_weight, fc1_weight, fc1_bias,
                 fc2_weight, fc2_bias, out_weight, balancing_biases, eps, return_logits=False):
    T = x.shape[0]
    R = down_weight.shape[0]
    E1 = out_weight.shape[0]
    return (
        x.new_empty((T,), dtype=torch.int32),
        x.new_empty((T,)),
        x.new_empty((T, R)),
        x.new_empty((T if return_logits else 0, E1)),
        x.new_empty((E1,), dtype=torch.int32),
    )


@_fake("moe_top1")
def _moe_top1_fake(x, expert_index, expert_weight, gate_up_proj, down_proj, expert_start=0, expert_end=-1):
    return torch.empty_like(x)


@_fake("router_backward")
def _router_backward_fake(grad_weight, grad_state, grad_logits, x, prev_state, down_weight, down_bias,
                          states_scale, norm_weight, fc1_weight, fc1_bias, fc2_weight, fc2_bias, out_weight,
                          expert_index, eps):
    torch._check(x.dim() == 2, lambda: "router_backward: x must be 2-D")
    torch._check(expert_index.shape == (x.shape[0],), lambda: "router_backward: expert_index must be [T]")
    torch._check((prev_state is None) == (states_scale is None),
                 lambda: "router_backward: prev_state and states_scale must be given together")
    T, R = x.shape[0], down_weight.shape[0]
    has_prev = prev_state is not None
    return (
        x.new_empty(x.shape),
        x.new_empty((T if has_prev else 0, R)),
        *(t.new_empty(t.shape) for t in (down_weight, down_bias)),
        x.new_empty((R if has_prev else 0,)),
        *(t.new_empty(t.shape) for t in (norm_weight, fc1_weight, fc1_bias, fc2_weight, fc2_bias, out_weight)),
    )


@_fake("moe_top1_backward")
def _moe_top1_backward_fake(grad_out, x, expert_index, expert_weight, gate_up_proj, down_proj, expert_start=0,
                            expert_end=-1):
    torch._check(grad_out.shape == x.shape, lambda: "moe_top1_backward: grad_out must be x's shape")
    return (x.new_empty(x.shape), expert_weight.new_empty(expert_weight.shape),
            gate_up_proj.new_empty(gate_up_proj.shape), down_proj.new_empty(down_proj.shape))
