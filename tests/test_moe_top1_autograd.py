"""Autograd of zaya::moe_top1 (python/zaya_ops/_autograd.py, CPU kernel csrc/cpu/moe_top1_backward.cpp).

* gradcheck in float64 (the CPU kernels run float64 in double) w.r.t. x, expert_weight, gate_up_proj and
  down_proj, with the skip class and an expert range;
* fp32/bf16/fp16 gradients against autograd of zaya_ops.reference: the kernel's error against a float64
  computation (autograd of the reference in float64 on the same, already rounded, inputs) is at most
  twice the reference's own error (the FlashAttention rule), at T = 1, 7, 257 (several chunks at 257 with
  one expert), with the skip class, an expert range, experts without tokens and strided inputs;
* expert parallelism: gradients for local experts only, and two gloo ranks holding half the experts each
  sum to the single-process gradients exactly;
* the weight gradients do not depend on the thread count; opcheck of the forward (inputs that require
  grad) and of the backward op; torch.compile(fullgraph=True) of forward plus backward; errors naming the
  argument; the GPU kernels under the SIMT emulator (forward and backward kernels; the backward kernels'
  own tests are in test_moe_top1_backward_gpu.py).
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

import zaya_ops
from conftest import EMULATORS, use_target
from zaya_ops import reference as ref
from zaya_ops import samples

PARAM_DTYPES = [torch.float32, torch.bfloat16, torch.float16]
DIFF = ("x", "expert_weight", "gate_up_proj", "down_proj")  # the differentiable arguments, in order


def _case(T, H=40, I=24, E=4, dtype=torch.bfloat16, seed=0, start=0, end=None):
    kw = samples.moe_top1_args(T=T, H=H, I=I, E=E, dtype=dtype, seed=seed)
    kw.update(expert_start=start, expert_end=end)
    g = torch.Generator().manual_seed(seed + 1000)
    grad_out = torch.randn(T, H, generator=g).to(dtype)
    return kw, grad_out


def _fn(op, kw):
    """op(x, expert_weight, gate_up_proj, down_proj) with the rest of kw fixed."""
    rest = {k: v for k, v in kw.items() if k not in DIFF}
    return lambda x, w, gu, dn: op(x=x, expert_weight=w, gate_up_proj=gu, down_proj=dn, **rest)


def _grads(fn, inputs, grad_out):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    return torch.autograd.grad(fn(*leaves), leaves, grad_out)


def _kernel_and_ref_grads(kw, grad_out):
    inputs = [kw[k] for k in DIFF]
    return _grads(_fn(zaya_ops.moe_top1, kw), inputs, grad_out), _grads(_fn(ref.moe_top1, kw), inputs, grad_out)


def _check_2x(kw, grad_out, name=""):
    """Kernel gradients within twice the reference's error against float64 (per gradient, max abs)."""
    inputs = [kw[k] for k in DIFF]
    got, want = _kernel_and_ref_grads(kw, grad_out)
    exact = _grads(_fn(ref.moe_top1, kw), [t.double() for t in inputs], grad_out.double())
    for arg, a, b, e in zip(DIFF, got, want, exact):
        assert a.dtype == b.dtype and a.shape == b.shape, (name, arg)
        assert torch.isfinite(a).all(), (name, arg)
        err_k = (a.double() - e).abs().max().item() if e.numel() else 0.0
        err_r = (b.double() - e).abs().max().item() if e.numel() else 0.0
        floor = 1e-12 * max(e.abs().max().item() if e.numel() else 0.0, 1.0)  # for an exact reference
        assert err_k <= 2 * err_r + floor, f"{name} grad {arg}: kernel error {err_k:.3g} > 2 x reference {err_r:.3g}"
    return got


# --------------------------------------------------------------------------------------------------
# gradcheck (float64, CPU kernel)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T,start,end", [(1, 0, None), (6, 0, None), (9, 1, 3)])
def test_gradcheck(T, start, end):
    kw, _ = _case(T, H=6, I=4, E=3, dtype=torch.float64, seed=T, start=start, end=end)
    inputs = tuple(kw[k].detach().clone().requires_grad_() for k in DIFF)
    assert torch.autograd.gradcheck(_fn(zaya_ops.moe_top1, kw), inputs)


def test_float64_matches_reference():
    kw, gy = _case(11, H=10, I=6, E=3, dtype=torch.float64, seed=3)
    fn = _fn(zaya_ops.moe_top1, kw)
    torch.testing.assert_close(fn(*[kw[k] for k in DIFF]), _fn(ref.moe_top1, kw)(*[kw[k] for k in DIFF]),
                               rtol=1e-13, atol=1e-13)
    got, want = _kernel_and_ref_grads(kw, gy)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_float64_must_be_all_or_none():
    kw, _ = _case(3, dtype=torch.float64)
    kw["expert_weight"] = kw["expert_weight"].float()
    with pytest.raises(TypeError, match="expert_weight"):
        zaya_ops.moe_top1(**kw)


# --------------------------------------------------------------------------------------------------
# fp32 / bf16 / fp16 against the reference's autograd (2x rule)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pdt", PARAM_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("start,end", [(0, None), (1, 3)], ids=["all", "ep1-3"])
@pytest.mark.parametrize("T", [1, 7, 257])
def test_grads(pdt, start, end, T):
    kw, gy = _case(T, H=72, I=40, E=4, dtype=pdt, seed=10 + T, start=start, end=end)
    got = _check_2x(kw, gy, f"T={T} [{start}, {end})")
    idx = kw["expert_index"].long()
    stop = 4 if end is None else end
    off = (idx < start) | (idx >= stop)  # skip class (4) and experts outside the range
    assert (got[0][off] == 0).all() and (got[1][off] == 0).all()
    for e in range(4):
        if not start <= e < stop:
            assert (got[2][e] == 0).all() and (got[3][e] == 0).all()


def test_one_expert_many_chunks():
    # 600 tokens, 590 on expert 2: the kernel's 256-token chunks, summed into the weight gradients
    kw, gy = _case(600, H=48, I=32, E=4, dtype=torch.bfloat16, seed=5)
    idx = torch.full((600,), 2, dtype=torch.int32)
    idx[::60] = 4
    kw["expert_index"] = idx
    got = _check_2x(kw, gy, "one expert")
    assert (got[2][[0, 1, 3]] == 0).all() and (got[3][[0, 1, 3]] == 0).all()  # experts without tokens


def test_experts_without_tokens_and_all_skip():
    kw, gy = _case(7, dtype=torch.float32, seed=6)
    kw["expert_index"] = torch.tensor([0, 3, 3, 0, 4, 3, 0], dtype=torch.int64)  # 1, 2 empty
    got = _check_2x(kw, gy, "empty experts")
    assert (got[2][1:3] == 0).all() and (got[3][1:3] == 0).all() and got[1][4] == 0
    kw["expert_index"] = torch.full((7,), 4, dtype=torch.int32)  # every token skipped: zeros (the
    got = _grads(_fn(zaya_ops.moe_top1, kw), [kw[k] for k in DIFF], gy)  # reference's output has no graph)
    assert all(g.shape == kw[k].shape and (g == 0).all() for g, k in zip(got, DIFF))


def test_non_contiguous():
    g = torch.Generator().manual_seed(7)
    kw, gy = _case(9, H=40, I=24, E=4, dtype=torch.bfloat16, seed=7)
    x = kw["x"]
    x_rows = torch.randn(9, 2 * 40, generator=g).bfloat16()[:, 3:43]          # strided rows
    x_t = torch.randn(40, 9, generator=g).bfloat16().t()                      # stride(1) != 1
    gy_t = gy.t().contiguous().t()
    w_s = torch.rand(18, generator=g).bfloat16()[::2]
    gu_t = kw["gate_up_proj"].transpose(1, 2).contiguous().transpose(1, 2)   # non-contiguous weights
    for xx in (x_rows, x_t):
        assert not xx.is_contiguous()
        _check_2x({**kw, "x": xx}, gy_t, "strided x")
    _check_2x({**kw, "x": x, "expert_weight": w_s, "gate_up_proj": gu_t,
               "expert_index": torch.stack([kw["expert_index"]] * 2, 1)[:, 0]}, gy, "strided params")
    # the gradient of a sum is expanded (stride 0)
    leaves = [kw[k].detach().clone().requires_grad_() for k in DIFF]
    _fn(zaya_ops.moe_top1, kw)(*leaves).float().sum().backward()
    rleaves = [kw[k].detach().clone().requires_grad_() for k in DIFF]
    _fn(ref.moe_top1, kw)(*rleaves).float().sum().backward()
    for a, b in zip(leaves, rleaves):
        torch.testing.assert_close(a.grad, b.grad, rtol=0.05, atol=0.05)


def test_empty():
    kw, gy = _case(0, dtype=torch.float32)
    got = _grads(_fn(zaya_ops.moe_top1, kw), [kw[k] for k in DIFF], gy)
    assert all(g.shape == kw[k].shape and (g == 0).all() for g, k in zip(got, DIFF))


def test_weight_grads_do_not_depend_on_threads():
    kw, gy = _case(700, H=136, I=72, E=3, dtype=torch.bfloat16, seed=8)
    kw["expert_index"] = torch.where(torch.arange(700) % 7 == 0, 1, 0).int()  # 600 tokens on expert 0
    old = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            runs.append(_kernel_and_ref_grads(kw, gy)[0])
    finally:
        torch.set_num_threads(old)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------------
# expert parallelism
# --------------------------------------------------------------------------------------------------


def test_expert_ranges_sum_to_full():
    kw, gy = _case(257, H=48, I=24, E=6, dtype=torch.float32, seed=9)
    full, _ = _kernel_and_ref_grads(kw, gy)
    parts = [_kernel_and_ref_grads({**kw, "expert_start": s, "expert_end": e}, gy)[0] for s, e in ((0, 3), (3, 6))]
    for i, f in enumerate(full):
        assert torch.equal(parts[0][i] + parts[1][i], f)


def _ep_worker(rank: int, init_file: str, kw: dict, gy: torch.Tensor, full: list) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        E = kw["gate_up_proj"].shape[0]
        local = {**kw, "expert_start": rank * E // 2, "expert_end": (rank + 1) * E // 2}
        leaves = [kw[k].detach().clone().requires_grad_() for k in DIFF]
        _fn(zaya_ops.moe_top1, local)(*leaves).backward(gy)
        for name, leaf, want in zip(DIFF, leaves, full):
            g = leaf.grad.clone()
            if name in ("gate_up_proj", "down_proj"):  # local experts only, zeros elsewhere
                others = [e for e in range(E) if not local["expert_start"] <= e < local["expert_end"]]
                assert (g[others] == 0).all(), f"rank {rank}: {name} has gradient for a remote expert"
            dist.all_reduce(g)
            assert torch.equal(g, want), f"rank {rank}: the sum over ranks of grad {name} differs"
    finally:
        dist.destroy_process_group()


def test_expert_parallel_gloo():
    import torch.multiprocessing as mp

    kw, gy = _case(300, H=72, I=40, E=6, dtype=torch.bfloat16, seed=11)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        full = list(_kernel_and_ref_grads(kw, gy)[0])
    finally:
        torch.set_num_threads(old)
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_ep_worker, args=(os.path.join(d, "init"), kw, gy, full), nprocs=2, join=True)


# --------------------------------------------------------------------------------------------------
# errors, opcheck, torch.compile
# --------------------------------------------------------------------------------------------------


def _op_args(kw, gy):
    return (gy, kw["x"], kw["expert_index"], kw["expert_weight"], kw["gate_up_proj"], kw["down_proj"],
            kw["expert_start"], -1 if kw["expert_end"] is None else kw["expert_end"])


def test_backward_op_errors():
    kw, gy = _case(5, dtype=torch.bfloat16)
    op = torch.ops.zaya.moe_top1_backward
    args = _op_args(kw, gy)
    with pytest.raises(TypeError, match="grad_out"):
        op(gy.float(), *args[1:])
    with pytest.raises(ValueError, match="grad_out"):
        op(gy[:4], *args[1:])
    with pytest.raises(ValueError, match="expert_index"):
        op(*args[:2], torch.full((5,), 9, dtype=torch.int32), *args[3:])
    with pytest.raises(TypeError, match="down_proj"):
        op(*args[:5], kw["down_proj"].half(), *args[6:])
    with pytest.raises(ValueError, match="expert range"):
        op(*args[:6], 3, 9)


@pytest.mark.parametrize("pdt", PARAM_DTYPES, ids=lambda d: str(d)[6:])
def test_opcheck(pdt):
    kw, gy = _case(7, H=40, I=24, E=4, dtype=pdt, seed=30, start=1, end=3)
    args = _op_args(kw, gy)
    fwd = (args[1], args[2], *[a.clone().requires_grad_() for a in args[3:6]], *args[6:])
    fwd = (fwd[0].clone().requires_grad_(), *fwd[1:])
    torch.library.opcheck(torch.ops.zaya.moe_top1.default, fwd)
    torch.library.opcheck(torch.ops.zaya.moe_top1_backward.default, args)


def test_torch_compile_forward_backward():
    kw, gy = _case(9, H=40, I=24, E=4, dtype=torch.bfloat16, seed=40)

    def loss(x, w, gu, dn):
        return (zaya_ops.moe_top1(x, kw["expert_index"], w, gu, dn).float() * gy.float()).sum()

    def run(fn):
        leaves = [kw[k].detach().clone().requires_grad_() for k in DIFF]
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
    kw, gy = _case(5, dtype=torch.float32, seed=50)
    kw["expert_index"] = torch.zeros(5, dtype=torch.int32)
    x = kw["x"].clone().requires_grad_()
    (gx,) = torch.autograd.grad(zaya_ops.moe_top1(**{**kw, "x": x}), x, gy, create_graph=True)
    with pytest.raises(RuntimeError, match="derivative for zaya::moe_top1_backward is not implemented"):
        gx.sum().backward()


def test_backward_backends():
    assert zaya_ops.backward_backends("cpu")["moe_top1"] == "kernel (cpu)"
    assert zaya_ops.backward_backends("cuda")["moe_top1"] == "kernel (cuda)"


# --------------------------------------------------------------------------------------------------
# The GPU kernels under the emulator: forward and backward kernels (more in test_moe_top1_backward_gpu.py)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", EMULATORS)
def test_emulated_gpu_backward(target, monkeypatch):
    use_target(target, monkeypatch)
    kw, gy = _case(7, H=64, I=32, E=4, dtype=torch.bfloat16, seed=60, start=1, end=4)
    got, want = _kernel_and_ref_grads(kw, gy)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0.02, atol=2e-2)
    kw["expert_index"] = torch.full((7,), 4, dtype=torch.int32)  # nothing local: zeros, no error
    got = _grads(_fn(zaya_ops.moe_top1, kw), [kw[k] for k in DIFF], gy)
    assert all((g == 0).all() for g in got)
    ns = getattr(torch.ops, "zaya_" + target)
    torch.library.opcheck(ns.moe_top1_backward.default, _op_args(kw, gy))
