"""zaya::moe_top1's GPU kernels (csrc/kernels/moe_top1.cuh) against zaya_ops.reference.

Runs on a CUDA/ROCm GPU when present and always under the SIMT emulator (emu32: the CUDA mma.sync
paths, emu64: the CDNA MFMA paths, emu32-wgmma: the Hopper wgmma matrix kernels), see tests/conftest.py. The CPU kernel has its own tests
(test_router_moe_cpu.py). Tolerance (zaya_ops.tolerances.moe_top1, shared with zaya_ops.selftest): 2 ulps
at row scale (eps * max |reference| of the row), and at least 99% of the elements bit-equal. The kernels accumulate in fp32 on the matrix units in another
order than the reference, so a few elements per thousand of gate/up or of the output land on the
neighbouring bf16/fp16 value; a row whose largest element sits just under a power of two measures
such a step as slightly more than 1 ulp at row scale (seen: 1.016).
"""

from __future__ import annotations

import pytest
import torch

from conftest import HOPPER_TARGETS, KERNEL_TARGETS, V1_TARGETS, use_target
from zaya_ops import ops, reference, samples
from zaya_ops import tolerances as tol
from zaya_ops.tolerances import require

# The GPU kernels, and their Hopper (wgmma) matrix kernels where they can run (conftest.HOPPER_TARGETS).
# The version-1 kernels (scalar fragment loads) too (conftest.V1_TARGETS).
GPU_TARGETS = [t for t in KERNEL_TARGETS if t != "cpu"] + HOPPER_TARGETS + V1_TARGETS
BF16, FP16 = torch.bfloat16, torch.float16
SIZES = [(264, 48, 4), (200, 136, 16), (72, 40, 1)]  # (H, I, E)


@pytest.fixture(params=GPU_TARGETS)
def device(request, monkeypatch) -> str:
    """The GPU kernels: a real GPU, or the emulators (tensors on the CPU)."""
    return use_target(request.param, monkeypatch)


def _args(device, T, H, I, E, dtype=BF16, seed=0):
    kw = samples.moe_top1_args(T=T, H=H, I=I, E=E, dtype=dtype, seed=seed)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}


def _check(kw):
    out = ops.moe_top1(**kw)
    ref = reference.moe_top1(**{k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in kw.items()})
    require(tol.moe_top1(out, ref, gpu_kernel=True))
    return out


@pytest.mark.parametrize("T", [1, 3, 8, 9, 64, 257, 1000])
@pytest.mark.parametrize("dtype", [BF16, FP16], ids=["bf16", "fp16"])
def test_matches_reference(device, T, dtype):
    """T <= 8 runs the weight-streaming decode kernels, larger T the matrix-tile kernels."""
    H, I, E = SIZES[T % len(SIZES)]
    _check(_args(device, T, H, I, E, dtype, seed=T))


# Shapes whose columns and rows end mid-tile and mid-chunk-row: H and I odd multiples of 8 (the last
# N-tile has 8 * odd columns), T = 7 (decode), 257 (prefill: one row past four full 64-row tiles).
ODD_SHAPES = [(7, 88, 56, 3), (257, 120, 200, 5), (257, 72, 24, 1), (130, 8, 40, 2)]


@pytest.mark.parametrize("T,H,I,E", ODD_SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", [BF16, FP16], ids=["bf16", "fp16"])
def test_odd_shapes(device, T, H, I, E, dtype):
    """The 16-byte chunked epilogues (version 2: staged tile, whole chunks per row) at row and column
    counts that are not multiples of the tiles."""
    _check(_args(device, T, H, I, E, dtype, seed=T + H))


def _emu_run(target, kw, monkeypatch):
    use_target(target, monkeypatch)
    return ops.moe_top1(**kw)


@pytest.mark.skipif("emu32" not in GPU_TARGETS, reason="needs the 32-lane emulator")
@pytest.mark.parametrize("T,H,I,E", ODD_SHAPES[1:] + [(1000, 264, 48, 4)], ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", [BF16, FP16], ids=["bf16", "fp16"])
def test_versions_are_bit_identical(T, H, I, E, dtype, monkeypatch):
    """The version-2 kernels (ldmatrix fragments, staged 16-byte epilogue; Hopper: 128-byte-swizzled
    TMA and descriptors) give the version-1 kernels' bits (ZAYA_KERNELS=v1: scalar fragments and
    2-byte stores; Hopper: no-swizzle 16-byte boxes): same products in the same order, same rounding."""
    from zaya_ops._library import hopper_paths, kernels_v1

    kw = _args("cpu", T, H, I, E, dtype, seed=3 * T + E)
    v2 = _emu_run("emu32", kw, monkeypatch)
    v1 = _emu_run("emu32-v1", kw, monkeypatch)
    assert torch.equal(v2, v1), (v2.float() - v1.float()).abs().max()
    sw = _emu_run("emu32-wgmma", kw, monkeypatch)
    monkeypatch.setattr(hopper_paths, "state", True)  # the Hopper kernels, version 1 (no swizzle)
    monkeypatch.setattr(kernels_v1, "state", True)
    plain = ops.moe_top1(**kw)
    assert torch.equal(sw, plain), (sw.float() - plain.float()).abs().max()
    _check(kw)  # (the reference check of the last selection, the no-swizzle Hopper kernels)


@pytest.mark.parametrize("target", [t for t in GPU_TARGETS if t.startswith("emu") and "-" not in t])
@pytest.mark.parametrize("T", [5, 9], ids=["decode", "prefill"])
def test_launches_per_call(target, T, monkeypatch):
    """Decode (T <= 8) on CUDA takes two launches (the weight-streaming kernels find their tokens
    themselves); CDNA decode and every prefill add the grouping launch: three."""
    import importlib

    use_target(target, monkeypatch)
    emu = importlib.import_module(f"zaya_ops._emu_w{target[3:]}")
    kw = _args("cpu", T, 72, 40, 4, seed=5)
    before = emu.launches()
    _check(kw)
    assert emu.launches() - before == (2 if target == "emu32" and T <= 8 else 3)


def test_long_prefill(device):
    """T = 4096 (64+ M-tiles per expert) at small H, I to keep the emulated run short."""
    _check(_args(device, 4096, 72, 40, 4, seed=41))


def test_many_k_steps(device):
    """H = 520, I = 200: 9 and 4 k-steps of 64 with partial last steps, so the Hopper kernel's 4-stage
    pipeline reuses every stage (the emulator checks no wgmma operand is overwritten while in flight)."""
    _check(_args(device, 300, 520, 200, 3, seed=8))


@pytest.mark.parametrize("case", ["all_skip", "one_expert", "empty_experts", "no_tokens", "uneven"])
def test_routing_edge_cases(device, case):
    E = 4
    T = {"all_skip": 50, "one_expert": 300, "empty_experts": 150, "no_tokens": 0, "uneven": 260}[case]
    kw = _args(device, T, 72, 40, E, seed=2)
    g = torch.Generator().manual_seed(3)
    idx = kw["expert_index"].cpu()
    if case == "all_skip":
        idx.fill_(E)
    elif case == "one_expert":  # several M-tiles of one expert
        idx.fill_(2)
    elif case == "empty_experts":
        idx = torch.tensor([0, 3, E], dtype=torch.int32)[torch.randint(0, 3, (T,), generator=g)]
    elif case == "uneven":  # 1, 64, 65 and 130 tokens: tile edges
        idx = torch.tensor([0] * 1 + [1] * 64 + [2] * 65 + [3] * 130, dtype=torch.int32)[torch.randperm(T, generator=g)]
    kw["expert_index"] = idx.to(device)
    out = _check(kw)
    if case == "all_skip":
        assert bool((out == 0).all())


@pytest.mark.parametrize("T", [5, 90], ids=["decode", "prefill"])
@pytest.mark.parametrize("start,end", [(0, None), (1, 3), (2, 2), (3, 4)])
def test_expert_range_and_int64_index(device, start, end, T):
    kw = _args(device, T, 72, 40, 4, seed=11)
    kw.update(expert_index=kw["expert_index"].long(), expert_start=start, expert_end=end)
    out = _check(kw)
    stop = 4 if end is None else end
    outside = (kw["expert_index"] < start) | (kw["expert_index"] >= stop)
    assert bool((out[outside] == 0).all())


@pytest.mark.parametrize("layout", ["row_strided", "offset_slice", "transposed", "strided_weight"])
def test_non_contiguous_inputs(device, layout):
    kw = _args(device, 120, 72, 40, 4, seed=4)
    x = kw["x"]
    if layout == "transposed":
        kw["x"] = x.t().contiguous().t()
    elif layout == "strided_weight":
        kw["expert_weight"] = torch.stack([kw["expert_weight"]] * 2, dim=1)[:, 1]
    else:  # rows 2H + 8 apart (16-byte aligned, read in place) or at an odd offset (copied)
        off = 0 if layout == "row_strided" else 3
        wide = torch.zeros(120, 2 * 72 + 8, dtype=x.dtype, device=device)
        wide[:, off : off + 72] = x
        kw["x"] = wide[:, off : off + 72]
    _check(kw)


@pytest.mark.parametrize("bad", [-1, 5])
def test_bad_expert_index(device, bad):
    """The wrapper names a bad expert index (the GPU glue never reads index values on the host)."""
    kw = _args(device, 9, 72, 40, 4)
    kw["expert_index"][6] = bad
    with pytest.raises(ValueError, match=rf"expert_index entries must lie in 0..4 \(4 = skip class\), got {bad} "
                                         rf"at position 6"):
        ops.moe_top1(**kw)


def test_inputs_outside_the_kernels_coverage(device):
    """Valid inputs the GPU kernels do not cover raise NotImplementedError (the model falls back)."""
    kw = _args(device, 9, 72, 40, 4, dtype=torch.float32)
    with pytest.raises(NotImplementedError, match="x is float32; the GPU kernels take bfloat16 or float16"):
        ops._OPS.moe_top1(*samples.to_op_args("moe_top1", kw))
    kw = _args(device, 9, 68, 40, 4)
    with pytest.raises(NotImplementedError, match="multiples of 8"):
        ops._OPS.moe_top1(*samples.to_op_args("moe_top1", kw))
