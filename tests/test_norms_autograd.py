"""Autograd of zaya::rms_norm and zaya::residual_scale_rmsnorm (python/zaya_ops/_autograd.py).

* gradcheck in float64 (the CPU kernels run float64 in double throughout) for both ops and both outputs;
* fp32/bf16/fp16 gradients against autograd of zaya_ops.reference: the kernels' error against a float64
  computation (autograd of the reference in float64 on the same, already rounded, inputs) is at most
  twice the reference's own error (the FlashAttention rule), at odd shapes and with strided inputs;
* the parameter gradients do not depend on the thread count; opcheck of the forward ops (with inputs
  that require grad: test_autograd_registration, test_aot_dispatch_dynamic) and of the backward ops;
  torch.compile(fullgraph=True) of forward plus backward;
* the GPU kernels under the SIMT emulator (forward and backward kernels) by the same 2x rule, strided, opcheck;
* the ops not differentiable yet raise on backward instead of giving no gradient.
"""

from __future__ import annotations

import pytest
import torch

import zaya_ops
from conftest import EMULATORS, use_target
from zaya_ops import reference as ref
from zaya_ops import samples

EPS = 1e-5
PARAM_DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _vectors(H: int, dtype: torch.dtype, g: torch.Generator) -> list[torch.Tensor]:
    """h_bias, h_scale, r_bias, r_scale, norm_weight: biases near 0, scales and weight near 1."""
    return [(torch.randn(H, generator=g) * s + o).to(dtype) for s, o in
            ((0.1, 0.0), (0.2, 1.0), (0.1, 0.0), (0.2, 1.0), (0.3, 1.0))]


def _grads(fn, inputs, grad_outputs):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    outs = fn(*leaves)
    outs = outs if isinstance(outs, tuple) else (outs,)
    return torch.autograd.grad(outs, leaves, grad_outputs)


def _rms_case(T, H, xdt, pdt, seed):
    g = _gen(seed)
    x = (torch.randn(T, H, generator=g) * 3).to(xdt)
    w = (torch.randn(H, generator=g) * 0.3 + 1).to(pdt)
    gy = torch.randn(T, H, generator=g).to(pdt)
    return [x, w], [gy]


def _rsr_case(T, H, pdt, seed):
    g = _gen(seed)
    h = torch.randn(T, H, generator=g).to(pdt)
    r = torch.randn(T, H, generator=g) * 4
    g_new_r = torch.randn(T, H, generator=g) * 0.1
    g_normed = torch.randn(T, H, generator=g).to(pdt)
    return [h, r, *_vectors(H, pdt, g)], [g_new_r, g_normed]


def _rms_kernel(x, w):
    return zaya_ops.rms_norm(x, w, EPS)


def _rms_ref(x, w):
    return ref.rms_norm(x, w, EPS)


def _rsr_kernel(*a):
    return zaya_ops.residual_scale_rmsnorm(*a, EPS)


def _rsr_ref(*a):
    return ref.residual_scale_rmsnorm(*a, EPS)


def _check_2x(name, kernel_fn, ref_fn, inputs, grad_outputs):
    """Kernel gradients within twice the reference's error against float64 (per gradient, max abs)."""
    got = _grads(kernel_fn, inputs, grad_outputs)
    want = _grads(ref_fn, inputs, grad_outputs)
    exact = _grads(ref_fn, [t.double() for t in inputs], [t.double() for t in grad_outputs])
    for i, (a, b, e) in enumerate(zip(got, want, exact)):
        assert a.dtype == b.dtype and a.shape == b.shape, (name, i)
        assert torch.isfinite(a).all(), (name, i)
        err_k = (a.double() - e).abs().max().item()
        err_r = (b.double() - e).abs().max().item()
        floor = 1e-12 * max(e.abs().max().item(), 1.0)  # for a reference that happens to be exact
        assert err_k <= 2 * err_r + floor, f"{name} grad {i}: kernel error {err_k:.3g} > 2 x reference {err_r:.3g}"


# --------------------------------------------------------------------------------------------------
# gradcheck (float64, CPU kernels)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T,H", [(1, 5), (3, 7), (4, 16)])
def test_gradcheck_rms_norm(T, H):
    (x, w), _ = _rms_case(T, H, torch.float64, torch.float64, 1)
    x.requires_grad_()
    w.requires_grad_()
    assert torch.autograd.gradcheck(_rms_kernel, (x, w))


@pytest.mark.parametrize("T,H", [(1, 5), (3, 7), (4, 16)])
def test_gradcheck_residual_scale_rmsnorm(T, H):
    inputs, _ = _rsr_case(T, H, torch.float64, 2)
    inputs = [t.double().requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(_rsr_kernel, tuple(inputs))
    # each output alone (the other's gradient is then zero)
    assert torch.autograd.gradcheck(lambda *a: _rsr_kernel(*a)[0], tuple(inputs))
    assert torch.autograd.gradcheck(lambda *a: _rsr_kernel(*a)[1], tuple(inputs))


def test_float64_matches_reference():
    (x, w), (gy,) = _rms_case(5, 9, torch.float64, torch.float64, 3)
    torch.testing.assert_close(_rms_kernel(x, w), _rms_ref(x, w), rtol=1e-13, atol=1e-13)
    for a, b in zip(_grads(_rms_kernel, [x, w], [gy]), _grads(_rms_ref, [x, w], [gy])):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_float64_must_be_all_or_none():
    x = torch.randn(3, 8, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"\bx\b.*\bweight\b"):
        zaya_ops.rms_norm(x, torch.ones(8, dtype=torch.bfloat16))
    h = torch.randn(3, 8, dtype=torch.float64)
    vecs = [torch.ones(8, dtype=torch.float64)] * 5
    with pytest.raises(TypeError, match="residual"):
        zaya_ops.residual_scale_rmsnorm(h, torch.zeros(3, 8), *vecs)


# --------------------------------------------------------------------------------------------------
# fp32 / bf16 / fp16 against the reference's autograd (2x rule), odd shapes
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pdt", PARAM_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("x_is_param", [False, True], ids=["x-fp32", "x-param"])
@pytest.mark.parametrize("T,H", [(1, 7), (7, 264), (257, 40)])
def test_rms_norm_grads(pdt, x_is_param, T, H):
    inputs, gouts = _rms_case(T, H, pdt if x_is_param else torch.float32, pdt, 10 + T)
    _check_2x("rms_norm", _rms_kernel, _rms_ref, inputs, gouts)


@pytest.mark.parametrize("pdt", PARAM_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("T,H", [(1, 7), (7, 264), (257, 40)])
def test_residual_scale_rmsnorm_grads(pdt, T, H):
    inputs, gouts = _rsr_case(T, H, pdt, 20 + T)
    _check_2x("residual_scale_rmsnorm", _rsr_kernel, _rsr_ref, inputs, gouts)
    # one output only: the other's gradient is None in autograd and zeros in the backward op
    got = _grads(lambda *a: _rsr_kernel(*a)[1], inputs, gouts[1:])
    want = _grads(lambda *a: _rsr_ref(*a)[1], inputs, gouts[1:])
    exact = _grads(lambda *a: _rsr_ref(*a)[1], [t.double() for t in inputs], [gouts[1].double()])
    for a, b, e in zip(got, want, exact):
        assert (a.double() - e).abs().max() <= 2 * (b.double() - e).abs().max() + 1e-12


def test_non_contiguous():
    g = _gen(7)
    T, H = 9, 40
    pdt = torch.bfloat16
    big = torch.randn(T, 2 * H, generator=g) * 3
    x = big[:, 5:5 + H]                                           # strided rows
    xt = (torch.randn(H, T, generator=g) * 3).t()                 # stride(1) != 1
    w = torch.randn(2 * H, generator=g).to(pdt)[::2]              # strided weight
    gy = torch.randn(T, 3 * H, generator=g).to(pdt)[:, ::3]       # strided upstream gradient
    for xx in (x, xt):
        assert not xx.is_contiguous()
        _check_2x("rms_norm strided", _rms_kernel, _rms_ref, [xx, w], [gy])
    # the gradient of a sum is expanded (stride 0)
    xl = x.detach().requires_grad_()
    zaya_ops.rms_norm(xl, w, EPS).float().sum().backward()
    xr = x.detach().requires_grad_()
    ref.rms_norm(xr, w, EPS).float().sum().backward()
    assert torch.isfinite(xl.grad).all() and xl.grad.shape == x.shape
    torch.testing.assert_close(xl.grad, xr.grad, rtol=0.02, atol=1e-3)

    h = torch.randn(T, 2 * H, generator=g).to(pdt)[:, H:]
    r = torch.randn(H, T, generator=g).t() * 4
    vecs = [v[::2] for v in _vectors(2 * H, pdt, g)]
    gouts = [torch.randn(T, H, generator=g).t().contiguous().t() * 0.1, gy]
    _check_2x("residual_scale_rmsnorm strided", _rsr_kernel, _rsr_ref, [h, r, *vecs], gouts)


def test_empty():
    x = torch.zeros(0, 8, requires_grad=True)
    w = torch.ones(8, dtype=torch.bfloat16, requires_grad=True)
    zaya_ops.rms_norm(x, w).float().sum().backward()
    assert x.grad.shape == (0, 8) and torch.equal(w.grad, torch.zeros(8, dtype=torch.bfloat16))


def test_weight_grads_do_not_depend_on_threads():
    inputs, gouts = _rsr_case(300, 264, torch.bfloat16, 5)
    (x, w), (gy,) = _rms_case(300, 264, torch.float32, torch.bfloat16, 6)
    old = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            runs.append((_grads(_rsr_kernel, inputs, gouts), _grads(_rms_kernel, [x, w], [gy])))
    finally:
        torch.set_num_threads(old)
    for other in runs[1:]:
        for a, b in zip(runs[0][0] + runs[0][1], other[0] + other[1]):
            assert torch.equal(a, b)


def test_backward_op_errors():
    x = torch.randn(3, 8)
    w = torch.ones(8, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="grad_y"):
        torch.ops.zaya.rms_norm_backward(torch.ones(3, 8), x, w, EPS)  # fp32, not weight's dtype
    with pytest.raises(ValueError, match="grad_y"):
        torch.ops.zaya.rms_norm_backward(torch.ones(3, 9, dtype=torch.bfloat16), x, w, EPS)
    inputs, (gnr, gy) = _rsr_case(3, 8, torch.bfloat16, 1)
    with pytest.raises(TypeError, match="grad_new_residual"):
        torch.ops.zaya.residual_scale_rmsnorm_backward(gnr.bfloat16(), gy, *inputs, EPS)
    with pytest.raises(ValueError, match="grad_normed"):
        torch.ops.zaya.residual_scale_rmsnorm_backward(gnr, gy[:2], *inputs, EPS)


# --------------------------------------------------------------------------------------------------
# opcheck and torch.compile
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pdt", PARAM_DTYPES, ids=lambda d: str(d)[6:])
def test_opcheck(pdt):
    (x, w), (gy,) = _rms_case(7, 40, torch.float32, pdt, 30)
    inputs, (gnr, gn) = _rsr_case(5, 24, pdt, 31)
    torch.library.opcheck(torch.ops.zaya.rms_norm.default,
                          (x.clone().requires_grad_(), w.clone().requires_grad_(), EPS))
    torch.library.opcheck(torch.ops.zaya.residual_scale_rmsnorm.default,
                          (*[t.clone().requires_grad_() for t in inputs], EPS))
    torch.library.opcheck(torch.ops.zaya.rms_norm_backward.default, (gy, x, w, EPS))
    torch.library.opcheck(torch.ops.zaya.residual_scale_rmsnorm_backward.default, (gnr, gn, *inputs, EPS))


def test_torch_compile_forward_backward():
    inputs, _ = _rsr_case(9, 264, torch.bfloat16, 40)
    final_w = (torch.randn(264, generator=_gen(41)) * 0.3 + 1).bfloat16()

    def loss(h, r, hb, hs, rb, rs, w, fw):
        new_r, normed = zaya_ops.residual_scale_rmsnorm(h, r, hb, hs, rb, rs, w, EPS)
        y = zaya_ops.rms_norm(new_r, fw, EPS)
        return (normed.float() * y.float()).sum() + new_r.square().mean()

    def run(fn):
        leaves = [t.detach().clone().requires_grad_() for t in (*inputs, final_w)]
        out = fn(*leaves)
        out.backward()
        return out, [t.grad for t in leaves]

    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")  # AOT autograd: fwd + bwd graphs
    out_c, grads_c = run(compiled)
    out_e, grads_e = run(loss)
    torch.testing.assert_close(out_c, out_e)
    for a, b in zip(grads_c, grads_e):
        assert torch.equal(a, b)  # the same kernels run, compiled or not


# --------------------------------------------------------------------------------------------------
# The GPU kernels under the emulator: forward and backward kernels (csrc/kernels/norms_backward.cuh)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", EMULATORS)
@pytest.mark.parametrize("pdt", PARAM_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("T,H", [(1, 8), (7, 264), (257, 40)])  # GPU kernels: H % 8 == 0
def test_emulated_gpu_backward(target, pdt, T, H, monkeypatch):
    use_target(target, monkeypatch)
    for x_is_param in (False, True):
        inputs, gouts = _rms_case(T, H, pdt if x_is_param else torch.float32, pdt, 50 + T)
        _check_2x(f"rms_norm on {target}", _rms_kernel, _rms_ref, inputs, gouts)
    inputs, gouts = _rsr_case(T, H, pdt, 51 + T)
    _check_2x(f"residual_scale_rmsnorm on {target}", _rsr_kernel, _rsr_ref, inputs, gouts)


@pytest.mark.parametrize("target", EMULATORS)
def test_emulated_gpu_backward_strided_and_opcheck(target, monkeypatch):
    use_target(target, monkeypatch)
    g = _gen(52)
    T, H, pdt = 70, 72, torch.bfloat16  # two row blocks of the backward kernels
    x = (torch.randn(T, 2 * H, generator=g) * 3)[:, H:]
    w = torch.randn(2 * H, generator=g).to(pdt)[::2]
    gy = torch.randn(T, 3 * H, generator=g).to(pdt)[:, ::3]
    _check_2x(f"rms_norm strided on {target}", _rms_kernel, _rms_ref, [x, w], [gy])
    h = torch.randn(T, 2 * H, generator=g).to(pdt)[:, H:]
    r = torch.randn(H, T, generator=g).t() * 4
    vecs = [v[::2] for v in _vectors(2 * H, pdt, g)]
    gouts = [torch.randn(T, H, generator=g).t().contiguous().t() * 0.1, gy]
    _check_2x(f"residual_scale_rmsnorm strided on {target}", _rsr_kernel, _rsr_ref, [h, r, *vecs], gouts)
    # the same bits as the CPU kernels' within the 2x rule, and the same bits run to run
    ns = getattr(torch.ops, "zaya_" + target)
    (x, w), (gy,) = _rms_case(T, H, torch.float32, pdt, 53)
    first = ns.rms_norm_backward(gy, x, w, EPS)
    assert all(torch.equal(a, b) for a, b in zip(first, ns.rms_norm_backward(gy, x, w, EPS)))
    inputs, (gnr, gn) = _rsr_case(T, H, pdt, 54)
    torch.library.opcheck(ns.rms_norm_backward.default, (gy, x, w, EPS))
    torch.library.opcheck(ns.residual_scale_rmsnorm_backward.default, (gnr, gn, *inputs, EPS))
    torch.library.opcheck(ns.rms_norm.default, (x.clone().requires_grad_(), w.clone().requires_grad_(), EPS))
    with pytest.raises(TypeError, match="grad_y"):
        ns.rms_norm_backward(gy.float(), x, w, EPS)
    with pytest.raises(ValueError, match="grad_normed"):
        ns.residual_scale_rmsnorm_backward(gnr, gn[:2], *inputs, EPS)
    empty = ns.rms_norm_backward(gy[:0], x[:0], w, EPS)
    assert empty[0].shape == (0, H) and torch.equal(empty[1], torch.zeros_like(w))


def test_backward_backends():
    cpu = zaya_ops.backward_backends("cpu")
    assert cpu["rms_norm"] == cpu["residual_scale_rmsnorm"] == "kernel (cpu)"
    assert zaya_ops.backward_backends("cuda")["rms_norm"] == "kernel (cuda)"
    assert cpu["moe_top1"] == cpu["router"] == cpu["cca_qkv_functional"] == "kernel (cpu)"
    assert cpu["cca_qkv"].startswith("not differentiable (it mutates")


# --------------------------------------------------------------------------------------------------
# The other ops (and double backward): a clear error, not a silent missing gradient
# --------------------------------------------------------------------------------------------------


def test_double_backward_raises():
    (x, w), (gy,) = _rms_case(3, 8, torch.float32, torch.bfloat16, 60)
    x.requires_grad_()
    (gx,) = torch.autograd.grad(zaya_ops.rms_norm(x, w), x, gy, create_graph=True)
    with pytest.raises(RuntimeError, match="derivative for zaya::rms_norm_backward is not implemented"):
        gx.sum().backward()

_GRAD_ARG = {"cca_qkv": "qt"}


@pytest.mark.parametrize("op", sorted(_GRAD_ARG))
def test_other_ops_raise_on_backward(op):
    kwargs = samples.SAMPLES[op]()
    name = _GRAD_ARG[op]
    kwargs[name] = kwargs[name].detach().clone().requires_grad_()
    out = getattr(zaya_ops, op)(**kwargs)
    out = out[0] if isinstance(out, tuple) else out
    assert out.requires_grad
    with pytest.raises(RuntimeError, match=f"derivative for zaya::{op} is not implemented"):
        out.float().sum().backward()
