"""cca_qkv_functional (the differentiable form of cca_qkv) and its backward (python/zaya_ops/_autograd.py,
csrc/cpu/cca_qkv_functional_backward.cpp).

* the forward op equals cca_qkv (same kernel) and the reference, on the CPU and the emulated GPU kernels;
* gradcheck in float64 of the CPU backward kernel (the forward op has no float64 kernel: the reference
  computes the forward, the backward op the gradient);
* fp32/bf16/fp16 gradients against autograd of the reference: error against float64 at most twice the
  reference's own (plus a tiny floor), at T = 1, 7, 257, varlen with empty sequences, nonzero initial
  histories, and qt/kt/vc/vd as column slices of one fused projection (the model's layout);
* parameter gradients independent of the thread count; unused outputs (None gradients);
* opcheck of the forward (inputs requiring grad) and of the backward op; argument errors name the argument.
"""

from __future__ import annotations

import pytest
import torch

import zaya_ops
from conftest import EMULATORS, V1_TARGETS, use_target
from zaya_ops import _autograd
from zaya_ops import reference as ref
from zaya_ops import samples, tolerances

PARAM_DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# Differentiable inputs, by name (the others: cos_sin, positions, cu_seqlens, qk_norm_eps).
GRAD_NAMES = ("qt", "kt", "vc", "vd", "conv_dw_weight", "conv_dw_bias", "conv_g_weight", "conv_g_bias", "qk_temp",
              "conv_state", "value_state")


def _case(lens, dtype, seed, nq=4, nkv=2, D=16, rot=8, fused=True, history=True):
    """Wrapper keyword arguments and upstream gradients (gq, gk, gv). ``fused``: qt, kt, vc, vd are column
    slices of one [T, (nq + 2 nkv) D] projection, as in the model."""
    g = torch.Generator().manual_seed(seed)
    T, B, C, hv = sum(lens), len(lens), (nq + nkv) * D, nkv * D // 2
    r = lambda *sh, sc=1.0, off=0.0: (torch.randn(*sh, generator=g) * sc + off).to(dtype)  # noqa: E731
    if fused:
        proj = r(T, (nq + 2 * nkv) * D)
        c1, c2, c3 = nq * D, nq * D + nkv * D, nq * D + nkv * D + hv
        qt, kt, vc, vd = proj[:, :c1], proj[:, c1:c2], proj[:, c2:c3], proj[:, c3:]
    else:
        qt, kt, vc, vd = r(T, nq * D), r(T, nkv * D), r(T, hv), r(T, hv)
    max_pos = max(lens, default=0) + 8
    inv = ref.rope_inv_freq(rot)
    cos_sin = ref.rope_cos_sin(inv, max_pos, dtype)
    positions = torch.cat([torch.arange(n) + (3 * b) % 7 for b, n in enumerate(lens)] + [torch.zeros(0)]).long()
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0).tolist()) if lens else [0], dtype=torch.int32)
    hist = (lambda *sh: r(*sh)) if history else (lambda *sh: torch.zeros(*sh, dtype=dtype))
    kw = dict(qt=qt, kt=kt, vc=vc, vd=vd, conv_dw_weight=r(C, 1, 2, sc=0.5), conv_dw_bias=r(C, sc=0.1),
              conv_g_weight=r(C, D, 2, sc=D ** -0.5), conv_g_bias=r(C, sc=0.1), qk_temp=r(nkv, sc=0.2, off=1.0),
              cos_sin=cos_sin, positions=positions, cu_seqlens=cu, conv_state=hist(B, C, 2), value_state=hist(B, hv),
              qk_norm_eps=None)
    gouts = [r(T, nq, D), r(T, nkv, D), r(T, nkv, D)]
    return kw, gouts


def _grads(fn, kw, gouts, dtype=None):
    """Gradients of fn(**kw) w.r.t. GRAD_NAMES (optionally with every float input cast to dtype)."""
    kw = dict(kw)
    if dtype is not None:
        kw = {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in kw.items()}
        gouts = [g.to(dtype) for g in gouts]
    leaves = []
    for name in GRAD_NAMES:
        kw[name] = kw[name].detach().clone().requires_grad_()
        leaves.append(kw[name])
    if kw["qk_norm_eps"] is None:
        kw["qk_norm_eps"] = torch.finfo(kw["qt"].dtype if dtype is None else gouts[0].dtype).eps
    outs = fn(**kw)
    pairs = [(o, g) for o, g in zip(outs, gouts) if g is not None]
    return torch.autograd.grad([o for o, _ in pairs], leaves, [g for _, g in pairs], allow_unused=True,
                               materialize_grads=True)


def _check_2x(kw, gouts, what, ref_dtype_eps=None):
    got = _grads(zaya_ops.cca_qkv_functional, kw, gouts)
    want = _grads(ref.cca_qkv_functional, kw, gouts)
    # float64 truth on the same (rounded) inputs, with the eps of the low dtype
    kw64 = dict(kw, qk_norm_eps=torch.finfo(kw["qt"].dtype).eps)
    exact = _grads(ref.cca_qkv_functional, kw64, gouts, dtype=torch.float64)
    for name, a, b, e in zip(GRAD_NAMES, got, want, exact):
        assert a.dtype == b.dtype and a.shape == b.shape, (what, name)
        assert torch.isfinite(a).all(), (what, name)
        err_k = (a.double() - e).abs().max().item() if a.numel() else 0.0
        err_r = (b.double() - e).abs().max().item() if b.numel() else 0.0
        floor = 1e-12 * max(e.abs().max().item() if e.numel() else 0.0, 1.0)
        assert err_k <= 2 * err_r + floor, f"{what} d{name}: kernel error {err_k:.3g} > 2 x reference {err_r:.3g}"


# --------------------------------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", PARAM_DTYPES, ids=lambda d: str(d)[6:])
def test_forward_equals_cca_qkv_and_reference(dtype):
    shape = samples.SampleShape(nq=4, nkv=2, head_dim=16, rot_dim=8, block_size=4, seq_lens=(7, 0, 1, 5))
    kw = samples.cca_qkv_args(shape, dtype=dtype, seed=3)
    fkw = samples.cca_qkv_functional_args(shape, dtype=dtype, seed=3)
    before = {k: v.clone() for k, v in fkw.items() if isinstance(v, torch.Tensor)}
    q, k, v = zaya_ops.cca_qkv_functional(**fkw)
    for name, t in before.items():
        assert torch.equal(t, fkw[name]), f"{name} was written"
    q_op = zaya_ops.cca_qkv(**kw)
    assert torch.equal(q, q_op)
    flat = kw["slot_mapping"]
    bs = kw["k_cache"].shape[1]
    assert torch.equal(k, kw["k_cache"][flat // bs, flat % bs])
    assert torch.equal(v, kw["v_cache"][flat // bs, flat % bs])
    rq, rk, rv = ref.cca_qkv_functional(**fkw)
    tolerances.require(tolerances.cca_qkv_functional((q, k, v), (rq, rk, rv), dtype))


def test_forward_no_tokens():
    kw, _ = _case([0, 0], torch.bfloat16, 1)
    q, k, v = zaya_ops.cca_qkv_functional(**kw)
    assert q.shape == (0, 4, 16) and k.shape == (0, 2, 16) and v.shape == (0, 2, 16)


# The forward is the cca_qkv kernel: its version-1 form (scalar fragment loads, conftest.V1_TARGETS) too.
@pytest.mark.parametrize("target", EMULATORS + [t for t in V1_TARGETS if t.startswith("emu")])
def test_forward_on_emulator(target, monkeypatch):
    use_target(target, monkeypatch)
    shape = samples.SampleShape(nq=4, nkv=2, head_dim=64, rot_dim=32, block_size=8, seq_lens=(7, 0, 1, 5))
    kw = samples.cca_qkv_functional_args(shape, dtype=torch.bfloat16, seed=5)
    out = zaya_ops.cca_qkv_functional(**kw)
    want = ref.cca_qkv_functional(**kw)
    tolerances.require(tolerances.cca_qkv_functional(out, want, torch.bfloat16))


# --------------------------------------------------------------------------------------------------
# gradcheck (float64, CPU kernel)
# --------------------------------------------------------------------------------------------------


class _RefForwardKernelBackward(torch.autograd.Function):
    """The reference's forward (float64) with the backward op as its gradient: gradcheck of the kernel."""

    @staticmethod
    def forward(ctx, cos_sin, positions, cu, eps, *tensors):
        ctx.save_for_backward(*tensors)
        ctx.extra = (cos_sin, positions, cu, eps)
        qt, kt, vc, vd, dw_w, dw_b, g_w, g_b, temp, conv_state, value_state = tensors
        return ref.cca_qkv_functional(qt, kt, vc, vd, dw_w, dw_b, g_w, g_b, temp, cos_sin, positions, cu,
                                      conv_state, value_state, eps)

    @staticmethod
    def backward(ctx, gq, gk, gv):
        qt, kt, vc, vd, dw_w, dw_b, g_w, g_b, temp, conv_state, value_state = ctx.saved_tensors
        cos_sin, positions, cu, eps = ctx.extra
        grads = torch.ops.zaya.cca_qkv_functional_backward(gq, gk, gv, qt, kt, dw_w, dw_b, g_w, g_b, temp, cos_sin,
                                                           positions, cu, conv_state, eps)
        return (None, None, None, None, *grads)


@pytest.mark.parametrize("lens", [(1,), (3,), (4, 0, 2, 1)], ids=str)
@pytest.mark.parametrize("eps", [1e-6, 1e3], ids=["eps-small", "eps-clamps"])
def test_gradcheck(lens, eps):
    kw, _ = _case(list(lens), torch.float64, 11, nq=2, nkv=1, D=4, rot=2)
    tensors = [kw[n].detach().clone().requires_grad_() for n in GRAD_NAMES]
    fn = lambda *t: _RefForwardKernelBackward.apply(kw["cos_sin"], kw["positions"], kw["cu_seqlens"], eps, *t)  # noqa: E731
    assert torch.autograd.gradcheck(fn, tuple(tensors))


def test_float64_backward_matches_reference():
    kw, gouts = _case([5, 0, 3], torch.float64, 12, D=8, rot=4)
    kw["qk_norm_eps"] = 1e-6
    a = torch.ops.zaya.cca_qkv_functional_backward(*gouts, kw["qt"], kw["kt"], kw["conv_dw_weight"],
                                                   kw["conv_dw_bias"], kw["conv_g_weight"], kw["conv_g_bias"],
                                                   kw["qk_temp"], kw["cos_sin"], kw["positions"], kw["cu_seqlens"],
                                                   kw["conv_state"], 1e-6)
    b = _grads(ref.cca_qkv_functional, kw, gouts)
    for name, x, y in zip(GRAD_NAMES, a, b):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10, msg=name)


# --------------------------------------------------------------------------------------------------
# fp32 / bf16 / fp16 against the reference's autograd (2x rule)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", PARAM_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("lens", [(1,), (7,), (257,), (5, 0, 9, 1, 3, 0)], ids=str)
def test_grads_2x(dtype, lens):
    kw, gouts = _case(list(lens), dtype, 20 + sum(lens))
    _check_2x(kw, gouts, f"{dtype} {lens}")


@pytest.mark.parametrize("dtype", [torch.bfloat16], ids=["bfloat16"])
def test_grads_2x_head_dim_64_separate_tensors_zero_history(dtype):
    kw, gouts = _case([9, 1, 4], dtype, 30, nq=8, nkv=2, D=64, rot=32, fused=False, history=False)
    _check_2x(kw, gouts, "D=64")


def test_unused_outputs_and_expanded_grads():
    kw, _ = _case([6, 2], torch.bfloat16, 31)
    for keep in range(3):  # only one output in the loss: the others' gradients are None
        leaves = {n: kw[n].detach().clone().requires_grad_() for n in GRAD_NAMES}
        out = zaya_ops.cca_qkv_functional(**{**kw, **leaves})
        out[keep].float().sum().backward()  # an expanded (stride 0) upstream gradient
        want_leaves = {n: kw[n].detach().clone().requires_grad_() for n in GRAD_NAMES}
        ref.cca_qkv_functional(**{**kw, **want_leaves, "qk_norm_eps": torch.finfo(torch.bfloat16).eps})[keep] \
            .float().sum().backward()
        for n in GRAD_NAMES:
            a, b = leaves[n].grad, want_leaves[n].grad
            b = torch.zeros_like(leaves[n]) if b is None else b
            assert a is not None and a.shape == b.shape, n
            torch.testing.assert_close(a.float(), b.float(), rtol=0.05, atol=0.05 * max(b.abs().max().item(), 1.0),
                                       msg=f"output {keep} d{n}")


def test_weight_grads_do_not_depend_on_threads():
    kw, gouts = _case([300, 5, 40], torch.bfloat16, 40)
    old = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            runs.append(_grads(zaya_ops.cca_qkv_functional, kw, gouts))
    finally:
        torch.set_num_threads(old)
    for other in runs[1:]:
        for name, a, b in zip(GRAD_NAMES, runs[0], other):
            assert torch.equal(a, b), name


# --------------------------------------------------------------------------------------------------
# opcheck, errors
# --------------------------------------------------------------------------------------------------


def _op_args(kw):
    return samples.to_op_args("cca_qkv_functional", kw)


def test_opcheck_forward_with_grad():
    kw, _ = _case([5, 0, 3], torch.float32, 50)
    for n in GRAD_NAMES:
        kw[n] = kw[n].detach().clone().requires_grad_()
    torch.library.opcheck(torch.ops.zaya.cca_qkv_functional.default, _op_args(kw))


def _backward_args(kw, gouts):
    return (*gouts, kw["qt"], kw["kt"], kw["conv_dw_weight"], kw["conv_dw_bias"], kw["conv_g_weight"],
            kw["conv_g_bias"], kw["qk_temp"], kw["cos_sin"], kw["positions"], kw["cu_seqlens"], kw["conv_state"],
            1e-6)


def test_opcheck_backward():
    kw, gouts = _case([4, 0, 2], torch.bfloat16, 51)
    torch.library.opcheck(torch.ops.zaya.cca_qkv_functional_backward.default, _backward_args(kw, gouts))


def test_double_backward_raises():
    kw, gouts = _case([3], torch.float32, 52)
    qt = kw["qt"].detach().clone().requires_grad_()
    q, _, _ = zaya_ops.cca_qkv_functional(**{**kw, "qt": qt})
    (g,) = torch.autograd.grad(q, qt, gouts[0], create_graph=True)
    with pytest.raises(RuntimeError, match="derivative for zaya::cca_qkv_functional_backward is not implemented"):
        g.sum().backward()


BAD_BACKWARD = [
    (0, lambda a: a.float(), TypeError, "grad_q"),
    (1, lambda a: a[:, :1], ValueError, "grad_k"),
    (2, lambda a: a[:-1], ValueError, "grad_v"),
    (4, lambda a: a.float(), TypeError, "kt"),
    (7, lambda a: a[:-1], ValueError, "conv_g_weight"),
    (11, lambda a: a + 100, ValueError, r"positions\[0\] = 100"),
    (12, lambda a: a.flip(0), ValueError, "cu_seqlens"),
    (13, lambda a: a[:1], ValueError, "conv_state"),
    (14, lambda a: -1.0, ValueError, "qk_norm_eps"),
]


@pytest.mark.parametrize("i,change,exc,match", BAD_BACKWARD, ids=[b[3] for b in BAD_BACKWARD])
def test_backward_bad_input_names_argument(i, change, exc, match):
    kw, gouts = _case([4, 2], torch.bfloat16, 53)
    args = list(_backward_args(kw, gouts))
    args[i] = change(args[i])
    with pytest.raises(exc, match=match):
        torch.ops.zaya.cca_qkv_functional_backward(*args)


BAD_FORWARD = [
    (lambda k: {"conv_state": k["conv_state"][:1]}, ValueError, "conv_state must have shape"),
    (lambda k: {"value_state": k["value_state"].float()}, TypeError, "value_state must have dtype"),
    (lambda k: {"positions": k["positions"] + 1000}, ValueError, r"positions\[0\] = 1000"),
    (lambda k: {"cu_seqlens": k["cu_seqlens"].flip(0)}, ValueError, "cu_seqlens"),
]


@pytest.mark.parametrize("change,exc,match", BAD_FORWARD, ids=[b[2] for b in BAD_FORWARD])
def test_forward_bad_input_names_argument(change, exc, match):
    kw, _ = _case([4, 2], torch.bfloat16, 54)
    kw.update(change(kw))
    with pytest.raises(exc, match=match):
        zaya_ops.cca_qkv_functional(**kw)


def test_backward_backends():
    assert zaya_ops.backward_backends("cpu")["cca_qkv_functional"] == "kernel (cpu)"
    assert zaya_ops.backward_backends("cuda")["cca_qkv_functional"].startswith("kernel (cuda: bfloat16/float16 with head dim")


# --------------------------------------------------------------------------------------------------
# The GPU backward kernels under the emulator (csrc/kernels/cca_qkv_backward.cuh): bf16/fp16, as the
# forward kernel; the 2x rule against float64 autograd of the reference, as the CPU kernel.
# --------------------------------------------------------------------------------------------------

GPU_DTYPES = [torch.bfloat16, torch.float16]
# (lens, _case options): T = 1, 7, 257 (two 256-token partial ranges, a 2-token halo across conv blocks),
# varlen with an empty sequence, histories (default) or none, separate tensors, the largest head dim.
EMU_CASES = [([1], {}), ([7], {}), ([257], {}), ([5, 0, 3, 40], {}),
             ([2, 9], dict(D=64, rot=32, fused=False, history=False)), ([17, 4], dict(D=128, rot=64, nq=2, nkv=1))]


@pytest.mark.parametrize("target", EMULATORS)
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("lens,extra", EMU_CASES, ids=lambda c: str(c).replace(" ", ""))
def test_emulated_gpu_backward(target, dtype, lens, extra, monkeypatch):
    use_target(target, monkeypatch)
    kw, gouts = _case(lens, dtype, 60 + sum(lens), **extra)
    _check_2x(kw, gouts, f"{target} {lens} {extra}")


@pytest.mark.parametrize("target", EMULATORS)
def test_emulated_gpu_backward_strided_deterministic_opcheck(target):
    ns = getattr(torch.ops, "zaya_" + target)
    kw, gouts = _case([6, 0, 9], torch.bfloat16, 61)
    args = list(_backward_args(kw, gouts))
    first = ns.cca_qkv_functional_backward(*args)
    assert all(torch.equal(a, b) for a, b in zip(first, ns.cca_qkv_functional_backward(*args)))  # run to run
    # non-contiguous upstream gradients, conv_state, cos_sin and weights: the same bits
    strided = list(args)
    for i in (0, 1, 2, 5, 6, 7, 8, 13):
        t = args[i]
        strided[i] = torch.stack([t, torch.zeros_like(t)], dim=-1)[..., 0]
    strided[10] = torch.cat([args[10], args[10]], dim=1)[:, : args[10].shape[1]]
    assert not strided[0].is_contiguous() and not strided[13].is_contiguous()
    for name, a, b in zip(GRAD_NAMES, first, ns.cca_qkv_functional_backward(*strided)):
        assert torch.equal(a, b), name
    torch.library.opcheck(ns.cca_qkv_functional_backward.default, args, test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("target", EMULATORS)
@pytest.mark.parametrize("i,change,exc,match", [b for b in BAD_BACKWARD if b[0] not in (11, 12)],
                         ids=[b[3] for b in BAD_BACKWARD if b[0] not in (11, 12)])
def test_emulated_gpu_backward_bad_input_names_argument(target, i, change, exc, match):
    """The GPU glue's checks are the CPU kernel's (csrc/cca_qkv_checks.h); index values are not read there."""
    kw, gouts = _case([4, 2], torch.bfloat16, 53)
    args = list(_backward_args(kw, gouts))
    args[i] = change(args[i])
    with pytest.raises(exc, match=match):
        getattr(torch.ops, "zaya_" + target).cca_qkv_functional_backward(*args)


@pytest.mark.parametrize("target", EMULATORS)
def test_emulated_gpu_backward_outside_coverage(target, monkeypatch):
    """float32 and head dims over 128 (which the forward kernel takes): NotImplementedError from the
    backward op; under autograd the reference by recompute runs instead."""
    ns = getattr(torch.ops, "zaya_" + target)
    kw, gouts = _case([3], torch.float32, 62)
    with pytest.raises(NotImplementedError, match="bfloat16 or float16"):
        ns.cca_qkv_functional_backward(*_backward_args(kw, gouts))
    kw, gouts = _case([2], torch.bfloat16, 63, nq=1, nkv=1, D=144, rot=16)
    with pytest.raises(NotImplementedError, match="at most 128"):
        ns.cca_qkv_functional_backward(*_backward_args(kw, gouts))
    use_target(target, monkeypatch)
    got = _grads(zaya_ops.cca_qkv_functional, kw, gouts)
    args = (*_backward_args(kw, gouts)[:-1], torch.finfo(torch.bfloat16).eps)  # _grads' eps
    want = _autograd._cca_qkv_functional_backward_by_reference(*args)
    for name, a, i in zip(GRAD_NAMES, got, range(11)):
        assert torch.equal(a, want[i]), name
