"""zaya::router on every kernel target (CPU, CUDA/HIP when present, and the GPU kernel under the SIMT
emulator with 32- and 64-lane warps) against zaya_ops.reference.

The comparison and its tolerances are test_router_moe_cpu.check_router's (router_state within 1 ulp
at row scale, logits within 4, weights within 4 ulps where the indices agree, indices equal wherever
the reference's top two biased probabilities differ by more than 1e-3, counts = bincount(indices)).
The GPU kernel sums its dot products in MMA order, so like the CPU kernel's upcast GEMMs it may round
an element the other way; exact ties follow the CPU kernel's rule (torch.topk's nth_element), checked
here on rows built to tie. fp32 is CPU-only: the GPU glue raises NotImplementedError naming x (callers fall back).
"""

from __future__ import annotations

import pytest
import torch

from conftest import KERNEL_TARGETS, V1_TARGETS, use_target
from test_router_moe_cpu import CXX_BAD, _router_kwargs, check_router
from zaya_ops import ops, samples

BF16, FP16 = torch.bfloat16, torch.float16
TOKENS = [1, 5, 64, 257, 1000]
SIZES = [(264, 32, 4), (200, 256, 16)]  # (H, R, E), alternating over TOKENS


def _on(kw: dict, device: str) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}


def _kwargs(device, T, H, R, E, dtype=BF16, first_layer=False, seed=0, skip_bias=None) -> dict:
    return _on(_router_kwargs(T, H, R, E, dtype, first_layer, seed=seed, skip_bias=skip_bias), device)


@pytest.fixture(params=KERNEL_TARGETS + V1_TARGETS)
def kernel_device(request, monkeypatch) -> str:
    """conftest's kernel targets plus the version-1 kernels (conftest.V1_TARGETS)."""
    return use_target(request.param, monkeypatch)


def _gpu_target(request) -> bool:
    return request.node.callspec.params["kernel_device"] != "cpu"


@pytest.mark.parametrize("dtype", [BF16, FP16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("first_layer", [True, False], ids=["first", "later"])
@pytest.mark.parametrize("T", TOKENS)
def test_router_matches_reference(kernel_device, T, first_layer, dtype):
    if dtype == FP16 and T not in (5, 257):
        pytest.skip("fp16 at two token counts is enough: the kernel differs from bf16 only in conversions")
    H, R, E = SIZES[TOKENS.index(T) % 2]
    check_router(_kwargs(kernel_device, T, H, R, E, dtype, first_layer, seed=T))


@pytest.mark.parametrize("T,H,R,E,first_layer", [
    (33, 72, 40, 7, True),       # R and E+1 not multiples of 16: zero-padded tiles
    (33, 72, 40, 7, False),
    (200, 2048, 256, 16, False),  # ZAYA1 sizes, 64-token tiles (4 blocks fill the emulator's 4 "SMs")
    (40, 136, 300, 20, True),     # R > 256: 16-token tiles
    (20, 64, 16, 300, False),     # E+1 > 256 (and >= 64: lowest-index ties), R a single tile
    (9, 5, 8, 1, False),          # one expert; H and R below one 8-element vector
    # the version-2 chunk pipeline's boundaries (down chunks of 32 columns, MLP chunks of 16):
    (1, 40, 24, 3, True),         # T = 1; one whole and one partial chunk of H, of R
    (7, 100, 40, 5, False),       # T = 7; H = 3 chunks + 4 columns (an odd count: ends in buffer 0)
    (257, 96, 64, 8, False),      # T = 257: the Big tiles (emu32 64 tokens, emu64 32); H = 3 whole chunks
])
def test_router_other_sizes(kernel_device, T, H, R, E, first_layer):
    check_router(_kwargs(kernel_device, T, H, R, E, first_layer=first_layer, seed=R + E))


@pytest.mark.parametrize("skip", ["some", "never", "always"])
@pytest.mark.parametrize("E", [4, 16])
def test_router_skip_class(kernel_device, E, skip):
    """The skip class (index E, weight 0, counted last) chosen for some, no or all tokens."""
    T = 300
    bias = {"some": 0.02, "never": -2.0, "always": 2.0}[skip]
    stats = check_router(_kwargs(kernel_device, T, 136, 32, E, seed=E, skip_bias=bias))
    if skip == "some":
        assert 0 < stats["skip"] < T
    else:
        assert stats["skip"] == (T if skip == "always" else 0)


def test_router_agreement_rate(kernel_device, request):
    """Routing agreement over a few thousand random tokens at ZAYA1's R and E; every disagreement must
    be a near-tie of the reference (check_router asserts it)."""
    target = request.node.callspec.params["kernel_device"]
    if target == "cpu":
        pytest.skip("the CPU kernel's agreement is measured by test_router_moe_cpu")
    if target == "emu64":
        pytest.skip("statistics, not layouts: emu32 measures the emulated kernel (emu64 is 2.5x slower)")
    agree, T = [], 1536
    for first_layer in (True, False):
        kw = _kwargs(kernel_device, T, 64, 256, 16, first_layer=first_layer, seed=100 + first_layer)
        agree.append(check_router(kw)["agree"])
    rate = sum(agree) / len(agree)
    print(f"router expert-index agreement with the reference ({target}): {rate:.5f} over {2 * T} tokens")
    assert rate >= 0.995


@pytest.mark.parametrize("E", [6, 70])
def test_router_exact_ties_follow_the_cpu_rule(kernel_device, E):
    """Classes with identical out_weight rows and balancing biases tie exactly; the chosen index must be
    the CPU kernel's (torch.topk's nth_element below 64 classes, the lowest index from 64 on)."""
    kw = _router_kwargs(200, 72, 32, E, BF16, first_layer=False, seed=E)
    tied = [0, 1, 2] if E < 64 else [5, 40, 66]
    kw["out_weight"][tied] = kw["out_weight"][tied[0]].clone()
    kw["balancing_biases"][tied] = 1.0  # p + 1 beats every other class's p + 0 (skip: -0.05)
    cpu = torch.ops.zaya.router(*samples.to_op_args("router", kw))
    assert bool(torch.isin(cpu[0], torch.tensor(tied, dtype=torch.int32)).all())
    out = ops.router(**_on(kw, kernel_device))
    stats = check_router(_on(kw, kernel_device), out)
    idx = out[0].cpu()
    if E < 64:  # nth_element picks 1 or 2 here, by the row's other values, never the lowest index 0
        assert set(idx.tolist()) == {1, 2}
    else:
        assert set(idx.tolist()) == {5}
    assert torch.equal(idx, cpu[0]), f"{int((idx != cpu[0]).sum())} tied tokens resolved differently"
    assert stats["agree"] == 1.0


def test_router_no_logits_and_empty(kernel_device):
    kw = _kwargs(kernel_device, 37, 264, 32, 4)
    kw["return_logits"] = False
    check_router(kw)
    idx, w, state, logits, counts = ops.router(**_kwargs(kernel_device, 0, 264, 32, 4))
    assert idx.shape == (0,) and w.shape == (0,) and state.shape == (0, 32) and logits.shape == (0, 5)
    assert counts.tolist() == [0] * 5


def test_router_strided_inputs(kernel_device):
    """x as a misaligned row-strided view and as a column-major tensor; prev_state row-strided."""
    kw = _kwargs(kernel_device, 70, 200, 32, 4, seed=3)
    wide = torch.zeros(70, 208, dtype=BF16, device=kernel_device)
    wide[:, 3:203] = kw["x"]
    check_router({**kw, "x": wide[:, 3:203]})
    check_router({**kw, "x": kw["x"].t().contiguous().t()})
    prev = torch.zeros(70, 40, dtype=BF16, device=kernel_device)
    prev[:, :32] = kw["prev_state"]
    check_router({**kw, "prev_state": prev[:, :32]})


def test_router_gpu_rejects_fp32_and_wide(kernel_device, request):
    if not _gpu_target(request):
        pytest.skip("the CPU kernel takes fp32 and any width")
    kw = _router_kwargs(4, 64, 16, 4, torch.float32, first_layer=False)
    with pytest.raises(NotImplementedError, match=r"x has dtype float32.*CPU kernel or in zaya_ops\.reference"):
        ops.router(**_on(kw, kernel_device))
    kw = _router_kwargs(4, 16, 520, 4, BF16, first_layer=True)
    with pytest.raises(NotImplementedError, match=r"up to 512, got R = 520"):
        ops.router(**_on(kw, kernel_device))


@pytest.mark.parametrize("change,exc,match", [b[1:] for b in CXX_BAD if b[0] == "router"])
def test_router_kernel_checks_name_the_argument(kernel_device, change, exc, match):
    """The C++ checks themselves (bypassing the Python wrapper), on this target's kernel."""
    kw = _on(samples.router_args(), kernel_device)
    kw.update(change(kw))
    with pytest.raises(exc, match=match):
        ops._OPS.router(*samples.to_op_args("router", kw))


def test_router_large_batch_on_gpu(kernel_device, request):
    """On a real GPU the 64-token tiles start where ceil(T / 64) reaches the SM count (the emulator
    reports 4 SMs, so the tests above cover both tile sizes there)."""
    if request.node.callspec.params["kernel_device"] != "cuda":
        pytest.skip("only a real GPU needs this many tokens to reach the 64-token tiles")
    T = 64 * torch.cuda.get_device_properties(0).multi_processor_count + 5
    stats = check_router(_kwargs(kernel_device, T, 2048, 256, 16, seed=11))
    assert stats["agree"] >= 0.995
