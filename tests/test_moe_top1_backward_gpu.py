"""zaya::moe_top1_backward's GPU kernels (csrc/kernels/moe_top1_backward.cuh) under the SIMT emulator.

emu32 runs the CUDA paths (mma.sync, ldmatrix fragments, two-stage cp.async pipeline), emu32-v1 the
same with scalar fragment loads, emu64 the CDNA paths (64-lane MFMA layouts, one stage); see
tests/conftest.py. The gradients are held to the 2x rule
of tests/test_moe_top1_autograd.py (error against float64 autograd of the reference at most twice the
reference's own same-dtype error), through autograd of the emulated forward (the backward op is the
GPU kernel there) and through the backward op directly: odd token counts, the skip class, experts
without tokens, an expert range, several column tiles of I and H (the routing-weight gradient's
partials), an expert with many k-steps of tokens (the weight gradients' token loop), strided inputs,
int32 and int64 indices, bit-identical reruns, opcheck, and the inputs the kernels do not take.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from conftest import EMULATORS, V1_TARGETS, use_target
from test_moe_top1_autograd import DIFF, _case, _check_2x, _op_args

GPU_DTYPES = [torch.bfloat16, torch.float16]  # the forward's GPU kernels take these only
# and the scalar fragment loads of the version-1 switch (ZAYA_KERNELS=v1) on the 32-lane emulator
GRAD_TARGETS = EMULATORS + V1_TARGETS

pytestmark = pytest.mark.skipif(not EMULATORS, reason="the SIMT emulator modules are not built")


def _ns(target):
    return getattr(torch.ops, "zaya_" + target)


def _zeros_outside(got, kw, E):
    """Zero gradients for skip-class tokens, tokens and experts outside the range."""
    start = kw["expert_start"]
    stop = E if kw["expert_end"] is None else kw["expert_end"]
    idx = kw["expert_index"].long()
    off = (idx < start) | (idx >= stop)
    assert (got[0][off] == 0).all() and (got[1][off] == 0).all()
    for e in range(E):
        if not (start <= e < stop) or not bool((idx == e).any()):
            assert (got[2][e] == 0).all() and (got[3][e] == 0).all(), e


@pytest.mark.parametrize("target", GRAD_TARGETS)
@pytest.mark.parametrize("pdt", GPU_DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("T", [1, 7, 257])
def test_grads_2x(target, pdt, T, monkeypatch):
    """All experts, then the range [1, 3) with an empty expert; skip-class tokens in both."""
    use_target(target, monkeypatch)
    kw, gy = _case(T, H=72, I=40, E=4, dtype=pdt, seed=100 + T)
    idx = kw["expert_index"].clone()
    idx[idx == 2] = 3  # expert 2 has no tokens
    idx[1::5] = 4      # the skip class
    idx[0] = 1         # a token inside the range (the reference has no graph without one)
    kw["expert_index"] = idx
    _zeros_outside(_check_2x(kw, gy, f"{target} T={T} all"), kw, 4)
    kw.update(expert_start=1, expert_end=3)
    _zeros_outside(_check_2x(kw, gy, f"{target} T={T} [1, 3)"), kw, 4)


@pytest.mark.parametrize("target", GRAD_TARGETS)
def test_tiles_and_token_loop(target, monkeypatch):
    """I = 72 and H = 136: two and three column tiles (two partials per routing weight); 230 of 257
    tokens on one expert: 8 k-steps in the weight gradients and four M-tiles of that expert."""
    use_target(target, monkeypatch)
    kw, gy = _case(257, H=136, I=72, E=3, dtype=torch.bfloat16, seed=7)
    idx = torch.ones(257, dtype=torch.int64)
    idx[::10] = 0
    idx[3::29] = 3  # skip
    kw["expert_index"] = idx
    _zeros_outside(_check_2x(kw, gy, f"{target} one heavy expert"), kw, 3)


@pytest.mark.parametrize("target", EMULATORS)
def test_strided_deterministic_opcheck(target, monkeypatch):
    use_target(target, monkeypatch)
    ns = _ns(target)
    g = torch.Generator().manual_seed(11)
    kw, gy = _case(9, H=40, I=24, E=4, dtype=torch.bfloat16, seed=11, start=0, end=3)
    x_rows = torch.randn(9, 2 * 40 + 8, generator=g).bfloat16()[:, 8:48]     # strided rows, aligned
    x_odd = torch.randn(9, 2 * 40, generator=g).bfloat16()[:, 3:43]         # misaligned rows: copied
    gy_rows = torch.randn(9, 3 * 40, generator=g).bfloat16()[:, 40:80]
    gu_t = kw["gate_up_proj"].transpose(1, 2).contiguous().transpose(1, 2)  # non-contiguous weights
    w_s = torch.rand(18, generator=g).bfloat16()[::2]
    for xx, gg in ((x_rows, gy_rows), (x_odd, gy.t().contiguous().t())):
        assert not xx.is_contiguous()
        _check_2x({**kw, "x": xx}, gg, f"{target} strided x")
    _check_2x({**kw, "expert_weight": w_s, "gate_up_proj": gu_t,
               "expert_index": kw["expert_index"].int()}, gy_rows, f"{target} strided params, int32")
    # five launches (grouping, gate/up, dx, two weight gradients): the kernels, not a fallback; the
    # same bits as the contiguous call, and on a rerun
    emu = importlib.import_module(f"zaya_ops._emu_w{target[3:]}")
    args = _op_args(kw, gy_rows)
    before = emu.launches()
    first = ns.moe_top1_backward(*args)
    assert emu.launches() - before == 5
    again = ns.moe_top1_backward(gy_rows.contiguous(), *args[1:])
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    torch.library.opcheck(ns.moe_top1_backward.default, args)


@pytest.mark.parametrize("target", EMULATORS)
def test_nothing_local_and_empty(target, monkeypatch):
    use_target(target, monkeypatch)
    ns = _ns(target)
    kw, gy = _case(7, H=40, I=24, E=4, dtype=torch.float16, seed=12, start=1, end=3)
    kw["expert_index"] = torch.tensor([0, 3, 4, 0, 4, 3, 3], dtype=torch.int32)  # no token on 1 or 2
    got = ns.moe_top1_backward(*_op_args(kw, gy))
    assert all(g.shape == kw[k].shape and (g == 0).all() for g, k in zip(got, DIFF))
    got = ns.moe_top1_backward(*_op_args({**kw, "expert_start": 2, "expert_end": 2}, gy))  # empty range
    assert all((g == 0).all() for g in got)
    kw0, gy0 = _case(0, H=40, I=24, E=4, dtype=torch.float16)
    got = ns.moe_top1_backward(*_op_args(kw0, gy0))
    assert got[0].shape == (0, 40) and (got[2] == 0).all()


@pytest.mark.parametrize("target", EMULATORS)
def test_uncovered_inputs_raise(target, monkeypatch):
    """What the forward's GPU kernels do not take (float32, H or I not a multiple of 8) the backward
    kernels refuse with NotImplementedError; bad arguments name themselves."""
    use_target(target, monkeypatch)
    ns = _ns(target)
    kw, gy = _case(5, H=40, I=24, E=4, dtype=torch.float32, seed=13)
    with pytest.raises(NotImplementedError, match="float32"):
        ns.moe_top1_backward(*_op_args(kw, gy))
    kw, gy = _case(5, H=36, I=24, E=4, dtype=torch.bfloat16, seed=13)
    with pytest.raises(NotImplementedError, match="multiples of 8"):
        ns.moe_top1_backward(*_op_args(kw, gy))
    kw, gy = _case(5, H=40, I=24, E=4, dtype=torch.bfloat16, seed=13)
    args = _op_args(kw, gy)
    with pytest.raises(TypeError, match="grad_out"):
        ns.moe_top1_backward(gy.half(), *args[1:])
    with pytest.raises(ValueError, match="grad_out"):
        ns.moe_top1_backward(gy[:4], *args[1:])

