"""Backward benchmarks: ``python -m zaya_ops.bench --backward [--ops ...]`` (see bench/README.md).

For each op, at the forward bench's shapes (prefill rows only for the layer ops: training runs whole
sequences), one case times five providers on the same inputs and the same seeded output gradients:

* ``zaya-bwd``  - backward alone of the zaya op (its registered autograd: ``torch.autograd.grad`` with
  ``retain_graph`` on a graph built once, outside the timed region); baseline ``eager-bwd``;
* ``eager-bwd`` - backward alone of autograd of ``zaya_ops.reference`` (the same way);
* ``zaya``      - forward plus backward of the zaya op; baseline ``eager``;
* ``eager``     - forward plus backward of the reference under autograd;
* ``compile``   - forward plus backward of ``torch.compile`` of the reference (its AOT-compiled backward);
* ``compile-bwd`` (not in the default list) - backward alone of the compiled reference (compiled with AOT
  autograd's donated buffers off, which a retained graph needs).

Which ops are differentiable is read at run time from ``zaya_ops._autograd.DIFFERENTIABLE`` (and what
``zaya_ops.ops`` has): nothing here names an op as done. An op that is not differentiable yet still gets
its ``eager``/``compile`` rows (the reference is always differentiable), and its ``zaya`` rows are
``n/a`` with the note "not differentiable yet"; so does a backward that raises torch's "derivative ...
is not implemented". ``cca_qkv``'s differentiable form is ``cca_qkv_functional`` (per-sequence initial
histories read, k and v returned, nothing written), so its backward bench is ``cca_qkv_functional``'s.

Each call returns the op's outputs (fwd+bwd providers) and the gradients of the inputs in ``wrt``; the
check compares them with eager autograd of the reference (gradients within twice the forward's tolerance;
the forward part with the forward bench's own check, e.g. the router's near-tie rule, after which the
gradients of a forward that chose other experts at near-ties are not compared). Costs (bytes: the minimum a pass must move, every tensor read
or written once; FLOPs: 2 per multiply-add of matrix work, elementwise work counted for the norms only)
are written out next to each ``*_backward_cost``; a fwd+bwd row's cost is the forward's plus the
backward's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import cases as C
from .cases import REGISTRY, Case, OpBench, SkipProvider, _randn, compare
from .layer_cases import _LayerOpBench, cca_inputs

FWD_BWD_PROVIDERS = ("zaya", "eager", "compile")
BWD_PROVIDERS = ("zaya-bwd", "eager-bwd", "compile-bwd")
DEFAULT_PROVIDERS = ("zaya-bwd", "eager-bwd", "zaya", "eager", "compile")


def differentiable_ops() -> tuple[str, ...]:
    """The op names ``zaya_ops._autograd`` lists as differentiable in this build (read at run time)."""
    from .. import _autograd

    return tuple(getattr(_autograd, "DIFFERENTIABLE", ()))


def _not_differentiable_message(exc: BaseException) -> bool:
    s = str(exc)
    return "derivative for" in s and "not implemented" in s


# --------------------------------------------------------------------------------------------------
# Backward costs: (bytes, FLOPs) of the backward pass alone
# --------------------------------------------------------------------------------------------------


def rms_norm_backward_cost(T: int, H: int, xsize: int, wsize: int) -> tuple[int, int]:
    """``rms_norm`` backward (grad of x and weight): read x, weight and dy, write dx and dweight.

    bytes = T*H*xsize (x) + H*wsize (weight) + T*H*xsize (dy) + T*H*xsize (dx) + H*wsize (dweight)
    FLOPs = 11 per element: the recomputed sum of squares (2), n = x*rstd (1), g = dy*w (1),
    dweight += dy*n (2), the row dot g.x (2), dx = rstd*g - x*c (3).
    """
    return 3 * T * H * xsize + 2 * H * wsize, 11 * T * H


def residual_scale_rmsnorm_backward_cost(T: int, H: int, esize: int) -> tuple[int, int]:
    """``residual_scale_rmsnorm`` backward through both outputs (grad of h, residual and the 5 [H] params).

    bytes = read h T*H*esize, residual T*H*4, the 5 params 5*H*esize, d_new_residual T*H*4, d_normed
    T*H*esize; write dh T*H*esize, dresidual T*H*4, the 5 parameter grads 5*H*esize
    FLOPs = 25 per element: the forward recomputed (the two scaled branches 4, their sum 1, squares 2,
    normalise 1), the norm's backward (g = d_normed*w 1, dw 2, the row dot 2, d_pre 3, plus d_new_residual
    1) and the branches' (dh, dresidual 2, the two bias sums 2, the two scale sums 4).
    """
    return T * H * (esize + 4 + 4 + esize + esize + 4) + 10 * H * esize, 25 * T * H


def cca_qkv_functional_cost(T: int, B: int, nq: int, nkv: int, D: int, rot: int,
                            esize: int = 2) -> tuple[int, int]:
    """(bytes, FLOPs) of one ``cca_qkv_functional`` forward: T tokens in B sequences.

    bytes: read qt, kt, vc, vd T*(nq*D + 2*nkv*D)*esize, the conv weights and biases and qk_temp
    (2C + C + 2C*D + C + nkv)*esize with C = (nq+nkv)*D, the RoPE rows T*rot*esize, positions T*8,
    cu_seqlens (B+1)*4, the initial histories B*(2C + nkv*D/2)*esize; write q, k, v T*(nq+2nkv)*D*esize.
    FLOPs: the grouped conv, 2 taps of a D x D matrix per group and token, 2 * T * (nq+nkv) * D * D * 2.
    """
    C = (nq + nkv) * D
    act = T * (nq + 2 * nkv) * D * esize
    weights = (2 * C + C + 2 * C * D + C + nkv) * esize
    meta = T * rot * esize + T * 8 + (B + 1) * 4 + B * (2 * C + nkv * D // 2) * esize
    return act + weights + meta + act, 2 * T * (nq + nkv) * D * D * 2


def cca_qkv_functional_backward_cost(T: int, B: int, nq: int, nkv: int, D: int, rot: int,
                                     esize: int = 2) -> tuple[int, int]:
    """``cca_qkv_functional`` backward (grad of qt, kt, vc, vd, the conv weights and biases, qk_temp).

    bytes: read every forward input again (as the forward's read bytes) and dq, dk, dv
    T*(nq+2nkv)*D*esize; write dqt, dkt, dvc, dvd T*(nq+2nkv)*D*esize and the weight grads
    (2C + C + 2C*D + C + nkv)*esize.
    FLOPs: the grouped conv's input and weight gradients, twice the forward's: 4 * T * (nq+nkv) * D * D * 2
    (the depthwise conv, means, QK-norm and RoPE are O(T*C) and left out, as in the forward).
    """
    C = (nq + nkv) * D
    fwd_bytes, fwd_flops = cca_qkv_functional_cost(T, B, nq, nkv, D, rot, esize)
    act = T * (nq + 2 * nkv) * D * esize
    weights = (2 * C + C + 2 * C * D + C + nkv) * esize
    reads = fwd_bytes - act  # the forward's reads
    return reads + act + act + weights, 2 * fwd_flops


def attention_backward_cost(seqs: Sequence[tuple[int, int]], nq: int, nkv: int, D: int, cache_tokens: int,
                            esize: int = 2) -> tuple[int, int]:
    """``cca_attention`` backward (grad of q, k_cache, v_cache) from the saved lse.

    bytes: read q, out and dout 3*T*nq*D*esize, lse nq*T*4, every key and value of each sequence once
    sum_b L_b*2*nkv*D*esize; write dq T*nq*D*esize and the two cache gradients whole (untouched slots are
    zeros) 2*cache_tokens*nkv*D*esize.
    FLOPs: flash-attention backward, five matrix products per (query, key) pair (S = QK^T recomputed,
    dP = dO V^T, dV += P^T dO, dQ += dS K, dK += dS^T Q): 10 * nq * D * pairs, 2.5x the forward's 4.
    """
    T = sum(n for n, _ in seqs)
    pairs = sum(n * (L - n) + n * (n + 1) // 2 for n, L in seqs)
    kv = sum(L for _, L in seqs) * 2 * nkv * D * esize
    nbytes = 3 * T * nq * D * esize + nq * T * 4 + kv + T * nq * D * esize + 2 * cache_tokens * nkv * D * esize
    return nbytes, 10 * nq * D * pairs


def router_backward_cost(T: int, H: int, R: int, E: int, esize: int = 2) -> tuple[int, int]:
    """``router`` backward (grad of x, prev_state and every weight and vector except the balancing biases,
    through the expert weight and the router state; the argmax choice is not differentiable).

    bytes: read x T*H*esize, prev T*R*esize, the weights (R*H + 2R^2 + (E+1)*R)*esize and five [R]
    vectors, d_weight T*esize, d_state T*R*esize; write dx T*H*esize, dprev T*R*esize and the weight and
    vector grads (as their reads). Activations the backward needs are recomputed or saved: not counted.
    FLOPs: each of the four linears' input and weight gradients, twice the forward's:
    4 * T * (H*R + 2*R*R + R*(E+1)).
    """
    wbytes = (R * H + 2 * R * R + (E + 1) * R) * esize + 5 * R * esize
    nbytes = (T * H + T * R) * esize + wbytes + T * esize + T * R * esize + (T * H + T * R) * esize + wbytes
    return nbytes, 4 * T * (H * R + 2 * R * R + R * (E + 1))


def moe_backward_cost(T: int, routed: int, hit: int, H: int, I: int, E: int, esize: int = 2) -> tuple[int, int]:
    """``moe_top1`` backward (grad of x, expert_weight, gate_up_proj, down_proj).

    bytes: read the hit experts' weights hit*3*I*H*esize, x and dout of the routed tokens
    2*routed*H*esize, index T*4 and weight T*esize; write dx T*H*esize (skipped tokens: zeros),
    d_weight T*esize and the two weight gradients whole, E*3*I*H*esize (experts not hit: zeros).
    FLOPs: dh = dout down, d_down = dout^T h, dx = dgu gate_up, d_gate_up = dgu^T x: twice the
    forward's, 4 * routed * H * 3I (the forward's gate/up recomputed, if it is, is not counted).
    """
    nbytes = hit * 3 * I * H * esize + 2 * routed * H * esize + T * 4 + T * esize + T * H * esize + T * esize \
        + E * 3 * I * H * esize
    return nbytes, 4 * routed * H * 3 * I


# --------------------------------------------------------------------------------------------------
# cca_qkv_functional's forward case (the differentiable form of cca_qkv)
# --------------------------------------------------------------------------------------------------


class CcaQkvFunctionalBench(_LayerOpBench):
    """``cca_qkv_functional``: one sequence of T new tokens from zero histories (prefill), qt/kt/vc/vd
    column slices of one [T, qkv] projection as in the model. Only the backward bench uses it."""

    name = "cca_qkv_functional"
    dim_keys = ("nq", "nkv", "D")

    def build(self, params, dtype, device, gen):
        nq, nkv, D = params["nq"], params["nkv"], params["D"]
        rot = D // 2
        C = (nq + nkv) * D
        T = self.tokens_of(params)
        (qt, kt, vc, vd, conv_dw_w, conv_dw_b, conv_g_w, conv_g_b, qk_temp), cos_sin = \
            cca_inputs(gen, T, T, nq, nkv, D, dtype, device)
        positions = torch.arange(T, dtype=torch.int64, device=device)
        cu = torch.tensor([0, T], dtype=torch.int32, device=device)
        conv_state = torch.zeros(1, C, 2, dtype=dtype, device=device)
        value_state = torch.zeros(1, nkv * D // 2, dtype=dtype, device=device)
        args = (qt, kt, vc, vd, conv_dw_w, conv_dw_b, conv_g_w, conv_g_b, qk_temp, cos_sin, positions, cu,
                conv_state, value_state)
        nbytes, flops = cca_qkv_functional_cost(T, 1, nq, nkv, D, rot, torch.finfo(dtype).bits // 8)
        return Case(self.name, params, dtype, device, args, {}, bytes=nbytes, flops=flops)


# --------------------------------------------------------------------------------------------------
# The backward bench
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class GradSpec:
    """What one op's backward bench differentiates.

    wrt: positions in the case's ``args`` of the inputs whose gradients are asked for;
    grad_outputs: positions in the op's outputs that get an output gradient (the others, e.g. attention's
    lse or the router's integer outputs, get none); cost: (case) -> (bytes, FLOPs) of the backward alone.
    """

    wrt: tuple[int, ...]
    grad_outputs: tuple[int, ...]
    cost: Callable[[Case], tuple[int, int]]


class BackwardBench(OpBench):
    """Backward and forward+backward of one op (``<op>_backward`` rows); see the module docstring."""

    providers = DEFAULT_PROVIDERS

    def __init__(self, forward: OpBench, spec: GradSpec, aliases: Sequence[str] = ()):
        self.forward = forward
        self.op = forward.name  # the differentiable op: zaya_ops.ops.<op> and zaya_ops.reference.<op>
        self.name = f"{forward.name}_backward"
        self.spec = spec
        self.aliases = tuple(aliases)  # other names that select this bench (the inference op, *_fwd_bwd)

    # -- shapes and cases -----------------------------------------------------------------------------

    def shapes(self, *, quick, tokens=None, hidden=None, **kw):
        if isinstance(self.forward, _LayerOpBench):  # training runs whole sequences: prefill rows only
            kw = {**kw, "phases": ("prefill",)}
        return self.forward.shapes(quick=quick, tokens=tokens, hidden=hidden, **kw)

    def known_providers(self, device):
        return (*DEFAULT_PROVIDERS, "compile-bwd")

    def differentiable(self) -> bool:
        """Whether ``zaya_ops`` lists this op as differentiable and has its wrapper."""
        from .. import ops

        return self.op in differentiable_ops() and hasattr(ops, self.op)

    def build(self, params, dtype, device, gen):
        case = self.forward.build(params, dtype, device, gen)
        fwd_bytes, fwd_flops = case.bytes, case.flops
        bwd_bytes, bwd_flops = self.spec.cost(case)
        extra = dict(case.extra, fwd_cost=(fwd_bytes, fwd_flops), bwd_cost=(bwd_bytes, bwd_flops))
        if torch.device(device).type != "meta":
            with torch.no_grad():
                outs = self._as_tuple(self.forward.reference()(*case.args, **case.kwargs))
            extra["n_outputs"] = len(outs)
            extra["grad_outputs"] = tuple(_randn(gen, *outs[i].shape, dtype=outs[i].dtype, device=device)
                                          for i in self.spec.grad_outputs)
            del outs
        return dataclasses.replace(case, op=self.name, bytes=fwd_bytes + bwd_bytes, flops=fwd_flops + bwd_flops,
                                   mutates=(), extra=extra)

    def cost(self, provider: str, case: Case) -> tuple[int, int]:
        if provider.endswith("-bwd"):
            return case.extra["bwd_cost"]
        return case.bytes, case.flops

    def baseline_for(self, provider: str) -> str:
        return "eager-bwd" if provider.endswith("-bwd") else "eager"

    def row_params(self, provider: str) -> dict[str, Any]:
        return {"pass": "bwd" if provider.endswith("-bwd") else "fwd+bwd", "fn": self.op}

    # -- providers ------------------------------------------------------------------------------------

    @staticmethod
    def _as_tuple(out: Any) -> tuple:
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    def _leaves(self, case: Case) -> list[Any]:
        wrt = self.spec.wrt
        return [a.detach().requires_grad_() if i in wrt else a for i, a in enumerate(case.args)]

    def _grad(self, outs: tuple, leaves: list, case: Case, retain: bool) -> tuple:
        sel = [outs[i] for i in self.spec.grad_outputs]
        try:
            return torch.autograd.grad(sel, [leaves[i] for i in self.spec.wrt], case.extra["grad_outputs"],
                                       retain_graph=retain, allow_unused=True)
        except RuntimeError as exc:
            if _not_differentiable_message(exc):
                raise NotImplementedError(f"not differentiable yet: {str(exc).splitlines()[0]}") from None
            raise

    def fwd_bwd(self, fn: Callable[..., Any], case: Case) -> Callable[[], Any]:
        """A call: fresh leaves, the forward, then the gradients; returns (*outputs, *gradients)."""

        def run():
            leaves = self._leaves(case)
            outs = self._as_tuple(fn(*leaves, **case.kwargs))
            grads = self._grad(outs, leaves, case, retain=False)
            return (*(o.detach() for o in outs), *grads)

        return run

    def bwd_only(self, fn: Callable[..., Any], case: Case, compiled: bool = False) -> Callable[[], Any]:
        """The forward once (here, untimed), then a call = the gradients through its retained graph.
        ``compiled``: AOT autograd's donated buffers are turned off (a retained graph cannot use them)."""
        import contextlib

        leaves = self._leaves(case)
        ctx = (lambda: torch._functorch.config.patch(donated_buffer=False)) if compiled else contextlib.nullcontext
        with torch.enable_grad(), ctx():
            outs = self._as_tuple(fn(*leaves, **case.kwargs))

        def run():
            with ctx():
                return self._grad(outs, leaves, case, retain=True)

        run.keep = outs  # the graph lives as long as the callable
        return run

    def _zaya_fn(self) -> Callable[..., Any]:
        from .. import ops

        fn = getattr(ops, self.op, None)
        if fn is None:
            raise NotImplementedError(f"not differentiable yet: zaya_ops.ops has no {self.op}")
        return fn

    def make_provider(self, provider, case):
        if provider not in (*DEFAULT_PROVIDERS, "compile-bwd"):
            raise SkipProvider(f"{provider!r} is not a backward provider")
        if provider.startswith("zaya"):
            fn = self._zaya_fn()
        elif provider.startswith("eager"):
            fn = self.forward.reference()
        else:
            torch._dynamo.reset()
            fn = torch.compile(self.forward.reference(), dynamic=False)
        if provider.endswith("-bwd"):
            call = self.bwd_only(fn, case, compiled=provider == "compile-bwd")
        else:
            call = self.fwd_bwd(fn, case)
        if provider.startswith("zaya") and self.op not in differentiable_ops():
            call.note = "not listed in zaya_ops._autograd.DIFFERENTIABLE"
        return call

    def expected(self, case):
        fwd_expected = self.forward.expected(case)  # the forward bench's oracle (and e.g. the router's logits)
        out = self.fwd_bwd(self.forward.reference(), case)()
        n = case.extra["n_outputs"]
        return {"forward": fwd_expected, "grads": out[n:]}

    def check(self, provider, case, out, expected):
        """Gradients within twice the forward's tolerance (they pass through about twice the roundings;
        the FlashAttention rule), same dtypes; fwd+bwd rows also pass the forward bench's check. Where the
        forward legitimately chose other experts at near-ties (the router), the gradients of those
        tokens differ by construction: they are then not compared, and the note says so."""
        n = case.extra["n_outputs"]
        grads = tuple(out if provider.endswith("-bwd") else out[n:])
        refs = tuple(expected["grads"])
        notes = []
        a, r, ok = compare(grads, refs, case.dtype)
        same_dtypes = all(not isinstance(e, torch.Tensor) or (isinstance(g, torch.Tensor) and g.dtype == e.dtype)
                          for g, e in zip(grads, refs))
        tol = max(C.tolerance(case.dtype), *(C.tolerance(e.dtype) for e in refs if isinstance(e, torch.Tensor)))
        ok = ok or (same_dtypes and r <= 2 * tol)
        if not provider.endswith("-bwd"):
            fa, fr, fok, fnote = self.forward.check(provider, case, tuple(out[:n]), expected["forward"])
            if fnote:
                notes.append(f"forward: {fnote}")
            if fok and "choices differ" in fnote:
                a, r, ok = fa, fr, True
                notes.append("gradients not compared (other expert choices at near-ties)")
            else:
                a, r, ok = max(a, fa), max(r, fr), ok and fok
        return a, r, ok, "; ".join(notes)


# --------------------------------------------------------------------------------------------------
# The six ops
# --------------------------------------------------------------------------------------------------


def _es(case: Case) -> int:
    return torch.finfo(case.dtype).bits // 8


def _rms_cost(case: Case) -> tuple[int, int]:
    x, w = case.args[0], case.args[1]
    return rms_norm_backward_cost(case.params["T"], case.params["H"], x.element_size(), w.element_size())


def _rsr_cost(case: Case) -> tuple[int, int]:
    return residual_scale_rmsnorm_backward_cost(case.params["T"], case.params["H"], _es(case))


def _qkv_cost(case: Case) -> tuple[int, int]:
    p = case.params
    return cca_qkv_functional_backward_cost(p["T"], 1, p["nq"], p["nkv"], p["D"], p["D"] // 2, _es(case))


def _attn_cost(case: Case) -> tuple[int, int]:
    p = case.params
    k_cache = case.args[1]
    return attention_backward_cost(case.extra["seqs"], p["nq"], p["nkv"], p["D"],
                                   k_cache.shape[0] * k_cache.shape[1], _es(case))


def _router_cost(case: Case) -> tuple[int, int]:
    p = case.params
    return router_backward_cost(p["T"], p["H"], p["R"], p["E"], _es(case))


def _moe_cost(case: Case) -> tuple[int, int]:
    p = case.params
    return moe_backward_cost(p["T"], case.extra["routed"], case.extra["experts_hit"], p["H"], p["I"], p["E"],
                             _es(case))


#: backward benches by row op name (``<op>_backward``)
BACKWARD: dict[str, BackwardBench] = {}


def register_backward(bench: BackwardBench) -> BackwardBench:
    BACKWARD[bench.name] = bench
    return bench


register_backward(BackwardBench(REGISTRY["rms_norm"], GradSpec((0, 1), (0,), _rms_cost),
                                aliases=("rms_norm", "rms_norm_fwd_bwd")))
register_backward(BackwardBench(REGISTRY["residual_scale_rmsnorm"], GradSpec(tuple(range(7)), (0, 1), _rsr_cost),
                                aliases=("residual_scale_rmsnorm", "residual_scale_rmsnorm_fwd_bwd")))
# q, k, v from qt, kt, vc, vd, the two convs' weights and biases and the key temperature (not cos_sin, the
# positions or the initial histories)
register_backward(BackwardBench(CcaQkvFunctionalBench(), GradSpec(tuple(range(9)), (0, 1, 2), _qkv_cost),
                                aliases=("cca_qkv", "cca_qkv_functional", "cca_qkv_fwd_bwd")))
# out -> q, k_cache, v_cache (the lse gets no gradient: the model does not use it)
register_backward(BackwardBench(REGISTRY["cca_attention"], GradSpec((0, 1, 2), (0,), _attn_cost),
                                aliases=("cca_attention", "cca_attention_fwd_bwd")))
# expert_weight and router_state -> x, prev_state, the weights and vectors (balancing biases: no gradient)
register_backward(BackwardBench(REGISTRY["router"], GradSpec(tuple(range(11)), (1, 2), _router_cost),
                                aliases=("router", "router_fwd_bwd")))
register_backward(BackwardBench(REGISTRY["moe_top1"], GradSpec((0, 2, 3, 4), (0,), _moe_cost),
                                aliases=("moe_top1", "moe_top1_fwd_bwd")))


def resolve(name: str) -> BackwardBench:
    """The backward bench selected by ``name``: ``<op>_backward``, the forward op's name, or ``<op>_fwd_bwd``."""
    if name in BACKWARD:
        return BACKWARD[name]
    for b in BACKWARD.values():
        if name in b.aliases:
            return b
    raise KeyError(f"no backward benchmark for {name!r}; known: {', '.join(BACKWARD)} "
                   f"(or the forward op names {', '.join(b.op for b in BACKWARD.values())})")


__all__ = [
    "BACKWARD", "BackwardBench", "CcaQkvFunctionalBench", "GradSpec", "attention_backward_cost",
    "cca_qkv_functional_backward_cost", "cca_qkv_functional_cost", "differentiable_ops", "moe_backward_cost",
    "register_backward", "resolve", "residual_scale_rmsnorm_backward_cost", "rms_norm_backward_cost",
    "router_backward_cost",
]
