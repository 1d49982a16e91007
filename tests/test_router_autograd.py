"""Autograd of zaya::router (python/zaya_ops/_autograd.py, backward op zaya::router_backward).

* gradcheck in float64 of the CPU backward kernel: a test-local autograd.Function whose forward is
  zaya_ops.reference.router in float64 (the router's forward kernels run bf16/fp16/fp32 only) and whose
  backward is torch.ops.zaya.router_backward, with and without prev_state, return_logits on and off,
  part of the tokens choosing the skip class;
* fp32/bf16/fp16 gradients of zaya_ops.router against autograd of the reference: the kernel's error
  against float64 (autograd of the reference in float64 on the same, already rounded, inputs, at the
  reference's own choice of expert) at most twice the reference's own error (the FlashAttention rule),
  T = 1, 7, 257 (the router is token-wise: several sequences packed are just more tokens), the skip
  class chosen, ties broken by balancing_biases, non-contiguous inputs, outputs left out of the loss;
* determinism (no dependence on the thread count), opcheck of the forward (inputs that require grad)
  and of the backward op, torch.compile(fullgraph) of forward plus backward, argument errors;
* the GPU kernels under the SIMT emulator (emu32, emu64), forward and backward (router_backward.cuh), by the
  same 2x rule: bf16/fp16, T = 1, 7, 257, first layer and later, the skip class picked and not, ties broken
  by balancing_biases, None upstream gradients, strided inputs, both tile configurations; run-to-run bits,
  opcheck of the backward op, errors, float32 (NotImplementedError: autograd runs the reference), T = 0.
"""

from __future__ import annotations

import importlib

import pytest
import torch

import zaya_ops
from conftest import EMULATORS, V1_TARGETS, use_target
from torch.testing._internal.optests import aot_autograd_check
from zaya_ops import reference as ref
from zaya_ops import samples

EPS = 1e-5
PARAM_DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# The differentiable tensor arguments, in the op's order (balancing_biases is not one of them).
DIFF = ("x", "prev_state", "down_weight", "down_bias", "states_scale", "norm_weight", "fc1_weight", "fc1_bias",
        "fc2_weight", "fc2_bias", "out_weight")


def _case(T, dtype, seed, first_layer=False, return_logits=True, H=40, R=16, E=5, skip_share=0.4):
    """router args; balancing_biases[E] set so that about ``skip_share`` of the tokens choose the skip
    class (placed halfway between two tokens' margins, so no token is near a tie)."""
    kw = samples.router_args(T=T, H=H, R=R, E=E, dtype=dtype, seed=seed, first_layer=first_layer)
    kw["return_logits"] = return_logits
    kw["x"] = kw["x"] * 3
    with torch.no_grad():
        _, logits = ref.router_mlp(*(kw[k] for k in DIFF), kw["eps"])
        p = torch.softmax(logits.double(), -1)
    bal = torch.zeros(E + 1)
    if T > 1:
        margin = (p[:, :E].max(-1).values - p[:, E]).sort().values
        k = min(T - 2, max(0, int(skip_share * T)))
        bal[E] = float(margin[k] + margin[k + 1]) / 2
    kw["balancing_biases"] = bal
    return kw


def _tensors(kw):
    return [kw[k] for k in DIFF if kw[k] is not None]


def _call(fn, kw, leaves, index=None, views=None):
    """fn(**kw) with the differentiable tensors replaced by ``leaves`` (through ``views[name]``, a
    function of the leaf, where given); returns (expert_index, the float outputs)."""
    it = iter(leaves)
    args = {k: (next(it) if kw[k] is not None else None) if k in DIFF else kw[k] for k in kw}
    for k, view in (views or {}).items():
        args[k] = view(args[k])
    if index is None:
        out = fn(**args)
        return out[0], (out[1], out[2], out[3]) if args["return_logits"] else (out[1], out[2])
    state, logits = ref.router_mlp(*(args[k] for k in DIFF), args["eps"])
    weight = ref.router_pick(torch.softmax(logits, -1), index.long()[:, None])
    return index, (weight, state, logits) if args["return_logits"] else (weight, state)


def _grad_outputs(kw, seed):
    g = torch.Generator().manual_seed(seed)
    T, R, E1 = kw["x"].shape[0], kw["down_weight"].shape[0], kw["out_weight"].shape[0]
    dt = kw["x"].dtype
    gouts = [torch.randn(T, generator=g).to(dt), (torch.randn(T, R, generator=g) * 0.3).to(dt)]
    if kw["return_logits"]:
        gouts.append((torch.randn(T, E1, generator=g) * 0.1).to(dt))
    return gouts


def _grads(fn, kw, gouts, index=None, double=False, keep=None, views=None):
    leaves = [t.detach().clone() for t in _tensors(kw)]
    if double:
        leaves = [t.double() for t in leaves]
        gouts = [g.double() for g in gouts]
    leaves = [t.requires_grad_() for t in leaves]
    idx, outs = _call(fn, kw, leaves, index, views)
    keep = range(len(outs)) if keep is None else keep
    grads = torch.autograd.grad([outs[i] for i in keep], leaves, [gouts[i] for i in keep], allow_unused=True,
                                materialize_grads=True)  # router_state alone does not reach the MLP
    return idx, grads


def _check_2x(kw, gouts, name, keep=None, views=None):
    idx_k, got = _grads(zaya_ops.router, kw, gouts, keep=keep, views=views)
    idx_r, want = _grads(ref.router, kw, gouts, keep=keep)
    assert torch.equal(idx_k, idx_r), f"{name}: the kernel chose other experts than the reference"
    _, exact = _grads(None, kw, gouts, index=idx_r, double=True, keep=keep)
    names = [k for k in DIFF if kw[k] is not None]
    for n, a, b, e in zip(names, got, want, exact):
        assert a.dtype == b.dtype and a.shape == b.shape, (name, n)
        assert torch.isfinite(a).all(), (name, n)
        err_k = (a.double() - e).abs().max().item()
        err_r = (b.double() - e).abs().max().item()
        # floor: 2 fp32 ulps at the gradient's scale. In fp32, both errors are an ulp or two over a handful
        # of elements at small T, where the max of a few is noise (over 30 seeds the kernel/reference error
        # ratio has median <= 1 for every gradient and dtype).
        floor = 2 * torch.finfo(torch.float32).eps * e.abs().max().item()
        assert err_k <= 2 * err_r + floor, f"{name} d{n}: kernel error {err_k:.3g} > 2 x reference {err_r:.3g}"
    return idx_r


# --------------------------------------------------------------------------------------------------
# gradcheck (float64): reference forward, CPU backward kernel
# --------------------------------------------------------------------------------------------------


class _RefForwardKernelBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, bal, return_logits, x, prev, dw, db, sc, nw, w1, b1, w2, b2, wo):
        idx, weight, state, logits, _ = ref.router(x, prev, dw, db, sc, nw, w1, b1, w2, b2, wo, bal, EPS,
                                                   return_logits)
        ctx.save_for_backward(x, prev, dw, db, sc, nw, w1, b1, w2, b2, wo, idx)
        ctx.return_logits = return_logits
        return (weight, state, logits) if return_logits else (weight, state)

    @staticmethod
    def backward(ctx, g_weight, g_state, g_logits=None):
        *t, idx = ctx.saved_tensors
        g = torch.ops.zaya.router_backward(g_weight, g_state, g_logits, *t, idx, EPS)
        has_prev = t[1] is not None
        return (None, None, g[0], g[1] if has_prev else None, g[2], g[3], g[4] if has_prev else None, *g[5:])


@pytest.mark.parametrize("first_layer", [False, True], ids=["prev", "first"])
@pytest.mark.parametrize("return_logits", [True, False], ids=["logits", "no-logits"])
def test_gradcheck(first_layer, return_logits):
    kw = _case(6, torch.float64, 1, first_layer, return_logits, H=7, R=5, E=3, skip_share=0.5)
    idx = ref.router(**kw)[0]
    assert (idx == 3).any() and (idx != 3).any()  # the skip class and experts both chosen
    args = [t.detach().clone().requires_grad_() if t is not None else None for t in (kw[k] for k in DIFF)]

    def fn(*a):
        return _RefForwardKernelBackward.apply(kw["balancing_biases"], return_logits, *a)

    assert torch.autograd.gradcheck(fn, tuple(args))


def test_float64_backward_matches_reference():
    kw = _case(9, torch.float64, 2, H=11, R=6, E=4)
    gouts = _grad_outputs(kw, 3)
    idx, want = _grads(ref.router, kw, gouts)
    got = torch.ops.zaya.router_backward(*gouts, *(kw[k] for k in DIFF), idx, EPS)
    got = [g for g, k in zip(got, DIFF) if kw[k] is not None]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# fp32 / bf16 / fp16 against the reference's autograd (2x rule)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", PARAM_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("first_layer", [False, True], ids=["prev", "first"])
@pytest.mark.parametrize("T", [1, 7, 257])
def test_grads(dtype, first_layer, T):
    kw = _case(T, dtype, 10 + T, first_layer)
    idx = _check_2x(kw, _grad_outputs(kw, 11 + T), f"router {dtype} T={T}")
    if T == 257:
        E = kw["out_weight"].shape[0] - 1
        assert 0.2 * T < (idx == E).sum() < 0.6 * T  # the skip class takes part of the tokens


@pytest.mark.parametrize("dtype", PARAM_DTYPES, ids=lambda d: str(d)[6:])
def test_grads_without_logits_and_partial_losses(dtype):
    kw = _case(33, dtype, 20, return_logits=False)
    gouts = _grad_outputs(kw, 21)
    _check_2x(kw, gouts, "no logits")
    _check_2x(kw, gouts, "weight only", keep=[0])   # router_state's gradient None
    _check_2x(kw, gouts, "state only", keep=[1])    # expert_weight's gradient None
    kw = _case(33, dtype, 22, return_logits=True)
    _check_2x(kw, _grad_outputs(kw, 23), "logits only (aux loss)", keep=[2])


def test_all_skip_gives_no_probability_gradient():
    kw = _case(8, torch.float32, 30)
    kw["balancing_biases"][-1] = 10.0  # every token chooses the skip class: weight is the constant 0
    gouts = _grad_outputs(kw, 31)
    idx, grads = _grads(zaya_ops.router, kw, gouts, keep=[0])
    assert (idx == kw["out_weight"].shape[0] - 1).all()
    assert all(torch.count_nonzero(g) == 0 for g in grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=lambda d: str(d)[6:])
def test_ties_broken_by_balancing_biases(dtype):
    kw = _case(7, dtype, 40)
    wo = kw["out_weight"].clone()
    wo[2] = wo[0]  # classes 0 and 2 have equal logits and probabilities for every token
    kw["out_weight"] = wo
    for favoured in (0, 2, None):  # None: an exact tie of the biased values too (torch.topk's pick)
        bal = torch.zeros(wo.shape[0])
        bal[[0, 2]] = 1.0  # the choice is between 0 and 2 for every token ...
        if favoured is not None:
            bal[favoured] += 1e-3  # ... and the bias decides
        kw["balancing_biases"] = bal
        idx = _check_2x(kw, _grad_outputs(kw, 41), f"tie -> {favoured}")
        if favoured is None:
            assert ((idx == 0) | (idx == 2)).all()
            continue
        assert (idx == favoured).all()


def test_non_contiguous():
    dtype = torch.bfloat16
    kw = _case(9, dtype, 50)
    H = kw["x"].shape[1]
    views = {"x": lambda t: torch.cat([t, t], 1)[:, H:],                      # strided rows
             "prev_state": lambda t: t.t().contiguous().t(),                   # column-major
             "fc1_weight": lambda t: t.t().contiguous().t(),
             "down_bias": lambda t: torch.stack([t, t], 1)[:, 1]}               # stride 2
    assert not views["x"](kw["x"]).is_contiguous() and not views["down_bias"](kw["down_bias"]).is_contiguous()
    gouts = [g.t().contiguous().t() if g.dim() == 2 else g for g in _grad_outputs(kw, 51)]
    _check_2x(kw, gouts, "strided", views=views)
    # expanded (stride 0) gradients from a sum
    leaves = [t.detach().clone().requires_grad_() for t in _tensors(kw)]
    _, outs = _call(zaya_ops.router, kw, leaves, views=views)
    (outs[0].float().sum() + outs[1].float().sum()).backward()
    leaves_r = [t.detach().clone().requires_grad_() for t in _tensors(kw)]
    _, outs_r = _call(ref.router, kw, leaves_r)
    (outs_r[0].float().sum() + outs_r[1].float().sum()).backward()
    for a, b in zip(leaves, leaves_r):
        torch.testing.assert_close(a.grad, b.grad, rtol=0.05, atol=0.05)


def test_empty():
    kw = _case(0, torch.bfloat16, 60)
    leaves = [t.detach().clone().requires_grad_() for t in _tensors(kw)]
    _, outs = _call(zaya_ops.router, kw, leaves)
    (outs[0].float().sum() + outs[1].float().sum()).backward()
    assert leaves[0].grad.shape == kw["x"].shape
    assert all(torch.count_nonzero(t.grad) == 0 for t in leaves)


def test_grads_do_not_depend_on_threads():
    kw = _case(700, torch.bfloat16, 70)  # more than one block of tokens
    gouts = _grad_outputs(kw, 71)
    old = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            runs.append(_grads(zaya_ops.router, kw, gouts)[1])
    finally:
        torch.set_num_threads(old)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------------
# The backward op: errors, opcheck, torch.compile
# --------------------------------------------------------------------------------------------------


def _bwd_args(kw, gouts, idx):
    gl = gouts[2] if len(gouts) > 2 else None
    return [gouts[0], gouts[1], gl, *(kw[k] for k in DIFF), idx, EPS]


def test_backward_op_errors():
    kw = _case(5, torch.bfloat16, 80)
    gouts = _grad_outputs(kw, 81)
    idx = ref.router(**kw)[0]
    op = torch.ops.zaya.router_backward
    a = _bwd_args(kw, gouts, idx)
    bad = [(0, gouts[0].float(), TypeError, "grad_weight"), (1, gouts[1][:, :-1], ValueError, "grad_state"),
           (2, gouts[2][:-1], ValueError, "grad_logits"), (14, idx.long(), TypeError, "expert_index"),
           (14, idx[:-1], ValueError, "expert_index"), (14, torch.full_like(idx, 6), ValueError, "expert_index"),
           (14, torch.full_like(idx, -1), ValueError, "expert_index"),
           (3, kw["x"].half(), TypeError, "down_weight"), (11, kw["fc2_weight"][:, :-1], ValueError, "fc2_weight"),
           (4, None, ValueError, "prev_state and states_scale")]
    for pos, value, exc, match in bad:
        args = list(a)
        args[pos] = value
        with pytest.raises(exc, match=match):
            op(*args)


_OPCHECK_BUT_AOT = ("test_schema", "test_autograd_registration", "test_faketensor")


def _float_outputs_first(out):
    index, weight, state, logits, counts = out
    return weight, state, logits, index, counts


@pytest.mark.parametrize("first_layer", [False, True], ids=["prev", "first"])
@pytest.mark.parametrize("dtype", PARAM_DTYPES, ids=lambda d: str(d)[6:])
def test_opcheck(dtype, first_layer):
    for return_logits in (True, False):
        kw = _case(7, dtype, 90, first_layer, return_logits)
        args = tuple(kw[k].clone().requires_grad_() if kw[k] is not None and k in DIFF else kw[k] for k in kw)
        torch.library.opcheck(torch.ops.zaya.router.default, args, test_utils=_OPCHECK_BUT_AOT)
        # opcheck's AOT tests sum the outputs into a scalar that starts as the first output's sum: an
        # int64 for router (expert_index), which then cannot take the float ones. The same check, with
        # the outputs reordered so that a float one comes first:
        for dynamic in (False, True):
            aot_autograd_check(lambda *a: _float_outputs_first(torch.ops.zaya.router.default(*a)), args, {},
                               dynamic, check_gradients="auto", copy_inputs=True)
    kw = _case(7, dtype, 91, first_layer)
    gouts = _grad_outputs(kw, 92)
    idx = ref.router(**kw)[0]
    torch.library.opcheck(torch.ops.zaya.router_backward.default, tuple(_bwd_args(kw, gouts, idx)))
    no_grads = _bwd_args(kw, gouts, idx)
    no_grads[0] = no_grads[2] = None
    torch.library.opcheck(torch.ops.zaya.router_backward.default, tuple(no_grads))


def test_torch_compile_forward_backward():
    kw = _case(9, torch.bfloat16, 100)

    def loss(*t):
        _, outs = _call(zaya_ops.router, kw, t)
        return (outs[0].float() ** 2).sum() + outs[1].float().square().mean() + outs[2].float().logsumexp(-1).mean()

    def run(fn):
        leaves = [t.detach().clone().requires_grad_() for t in _tensors(kw)]
        out = fn(*leaves)
        out.backward()
        return out, [t.grad for t in leaves]

    torch._dynamo.reset()
    out_c, grads_c = run(torch.compile(loss, fullgraph=True, backend="aot_eager"))
    out_e, grads_e = run(loss)
    torch.testing.assert_close(out_c, out_e)
    for a, b in zip(grads_c, grads_e):
        assert torch.equal(a, b)


def test_double_backward_raises():
    kw = _case(3, torch.float32, 110)
    x = kw["x"].clone().requires_grad_()
    kw["x"] = x
    (gx,) = torch.autograd.grad(zaya_ops.router(**kw)[1].sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="derivative for zaya::router_backward is not implemented"):
        gx.sum().backward()


def test_backward_backends():
    assert zaya_ops.backward_backends("cpu")["router"] == "kernel (cpu)"
    assert zaya_ops.backward_backends("cuda")["router"].startswith("kernel (cuda: bfloat16/float16")
    assert "float32" in zaya_ops.backward_backends("cuda")["router"]  # what still runs the reference


# --------------------------------------------------------------------------------------------------
# The GPU kernels under the emulator: forward kernel and backward kernels (csrc/kernels/router_backward.cuh)
# --------------------------------------------------------------------------------------------------

GPU_DTYPES = [torch.bfloat16, torch.float16]  # the forward kernel's (float32 runs on the CPU)


@pytest.mark.parametrize("target", EMULATORS + [t for t in V1_TARGETS if t.startswith("emu")])
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("T,first_layer", [(1, True), (7, False), (257, False), (257, True)],
                         ids=["T1-first", "T7-prev", "T257-prev", "T257-first"])
def test_emulated_gpu_backward(target, dtype, T, first_layer, monkeypatch):
    use_target(target, monkeypatch)
    emu = importlib.import_module(f"zaya_ops._emu_w{target[3:5]}")
    kw = _case(T, dtype, 120 + T, first_layer)
    before = emu.launches()
    idx = _check_2x(kw, _grad_outputs(kw, 121 + T), f"router on {target} {dtype} T={T}")
    # the forward, then the backward kernels (recompute, 3 MLP steps, norm, [R] sums, grad_x, 4 x (weight
    # gradient, its sum)), not the reference by recompute
    assert emu.launches() - before == 1 + 15
    if T == 257:
        E = kw["out_weight"].shape[0] - 1
        assert 0.2 * T < (idx == E).sum() < 0.6 * T  # the skip class picked by part of the tokens, not by all


@pytest.mark.parametrize("target", EMULATORS)
def test_emulated_gpu_backward_cases(target, monkeypatch):
    """Ties broken by balancing_biases, every token on the skip class, outputs left out of the loss."""
    use_target(target, monkeypatch)
    dtype = torch.bfloat16
    kw = _case(7, dtype, 130)
    wo = kw["out_weight"].clone()
    wo[2] = wo[0]  # classes 0 and 2 tie for every token ...
    kw["out_weight"] = wo
    for favoured in (0, 2):
        bal = torch.zeros(wo.shape[0])
        bal[[0, 2]] = 1.0
        bal[favoured] += 1e-3  # ... and the bias decides
        kw["balancing_biases"] = bal
        assert (_check_2x(kw, _grad_outputs(kw, 131), f"tie -> {favoured} on {target}") == favoured).all()
    kw = _case(9, dtype, 132)
    kw["balancing_biases"][-1] = 10.0  # every token on the skip class: expert_weight is the constant 0
    idx, grads = _grads(zaya_ops.router, kw, _grad_outputs(kw, 133), keep=[0])
    assert (idx == kw["out_weight"].shape[0] - 1).all() and all(torch.count_nonzero(g) == 0 for g in grads)
    kw = _case(33, torch.float16, 134)
    gouts = _grad_outputs(kw, 135)
    for keep in ([0], [1], [2]):  # the other upstream gradients None
        _check_2x(kw, gouts, f"outputs {keep} on {target}", keep=keep)


@pytest.mark.parametrize("target", EMULATORS)
def test_emulated_gpu_backward_strided_and_op(target, monkeypatch):
    """Non-contiguous inputs and gradients, run-to-run bits, opcheck, errors, float32 and T = 0."""
    use_target(target, monkeypatch)
    dtype = torch.bfloat16
    kw = _case(70, dtype, 136)  # two token blocks
    H = kw["x"].shape[1]
    views = {"x": lambda t: torch.cat([t, t], 1)[:, H:], "prev_state": lambda t: t.t().contiguous().t(),
             "fc1_weight": lambda t: t.t().contiguous().t(), "down_bias": lambda t: torch.stack([t, t], 1)[:, 1]}
    gouts = [g.t().contiguous().t() if g.dim() == 2 else g for g in _grad_outputs(kw, 137)]
    _check_2x(kw, gouts, f"strided on {target}", views=views)

    ns = getattr(torch.ops, "zaya_" + target)
    idx = ref.router(**kw)[0]
    args = _bwd_args(kw, _grad_outputs(kw, 138), idx)
    first = ns.router_backward(*args)
    assert all(torch.equal(a, b) for a, b in zip(first, ns.router_backward(*args)))  # deterministic
    torch.library.opcheck(ns.router_backward.default, tuple(args))
    no_grads = list(args)
    no_grads[0] = no_grads[2] = None
    torch.library.opcheck(ns.router_backward.default, tuple(no_grads))
    bad = list(args)
    bad[1] = args[1][:, :-1]
    with pytest.raises(ValueError, match="grad_state"):
        ns.router_backward(*bad)
    bad = list(args)
    bad[14] = idx.long()
    with pytest.raises(TypeError, match="expert_index"):
        ns.router_backward(*bad)
    f32 = [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    with pytest.raises(NotImplementedError, match="float32"):
        ns.router_backward(*f32)
    empty = [a[:0] if isinstance(a, torch.Tensor) and a.shape[:1] == (70,) else a for a in args]
    out = ns.router_backward(*empty)
    assert out[0].shape == (0, H) and all(torch.count_nonzero(g) == 0 for g in out[2:])


@pytest.mark.parametrize("target", EMULATORS)
def test_emulated_gpu_backward_wide(target, monkeypatch):
    """max(R, E+1) > 256: the 16-token blocks (Small tiles) of the backward kernel."""
    use_target(target, monkeypatch)
    kw = _case(20, torch.bfloat16, 140, H=24, R=16, E=271)
    _check_2x(kw, _grad_outputs(kw, 141), f"router E+1 = 272 on {target}")
