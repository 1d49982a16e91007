"""CPU kernels of zaya::router and zaya::moe_top1 against zaya_ops.reference.

Tolerances ("ulp at row scale" = finfo(dtype).eps * max |reference| over the row, so one ulp of the
row's largest element; a one-step rounding difference of any element fits in it):

* bf16/fp16 GEMMs run upcast to fp32 from a few rows on (router: 2 tokens, moe: 16 tokens of an expert;
  csrc/cpu/router_moe_common.h): the reference's fp32 accumulation and rounding points, another
  summation order, so a few 1e-4 of the elements round the other way. moe_top1 with up to 8 rows of an
  expert (T = 1, 3, 5 below) runs csrc/cpu/gemv.h's AVX2 GEMV on such CPUs: fp32 accumulation, another
  summation order, the same bound. Native GEMMs (fewer rows elsewhere, or ZAYA_CPU_GEMM=native) are the
  reference's own ATen calls.
* router: expert indices equal wherever the reference's top-2 biased probabilities differ by > 1e-3
  (in practice ~1e-4 of the tokens or fewer differ, all near-ties); router_state within 1 ulp at row
  scale for bf16 (bit-equal with native GEMMs) and 8 for fp32 (MKL's sums depend on the row count);
  logits within 4 (bf16) / 32 (fp32) ulps at row scale; weights, where the indices agree, within
  4 (bf16) / 16 (fp32) ulps of themselves.
* moe_top1: within 1 ulp at row scale for bf16 (bit-equal with native GEMMs), 4 for fp32.
* fp16: as bf16.

The rules live in zaya_ops.tolerances (shared with zaya_ops.selftest).
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

from zaya_ops import ops, reference, samples
from zaya_ops import tolerances as tol
from zaya_ops.tolerances import require

BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32
TOKENS = [1, 3, 5, 64, 1000, 4097]
ROUTER_SIZES = [(264, 32, 4), (200, 256, 16)]  # (H, R, E), alternating over TOKENS
MOE_SIZES = [(264, 48, 4), (200, 136, 16)]  # (H, I, E)


def _router_kwargs(T, H, R, E, dtype, first_layer, seed=0, skip_bias=None):
    kw = samples.router_args(T=T, H=H, R=R, E=E, dtype=dtype, first_layer=first_layer, seed=seed)
    if skip_bias is not None:
        kw["balancing_biases"][-1] = skip_bias
    return kw


def check_router(kw: dict, out=None) -> dict:
    """Run the kernel (unless given its outputs) and the reference on kw; assert the tolerances above
    (zaya_ops.tolerances.router, the rule zaya_ops.selftest applies). Returns statistics."""
    out = ops.router(**kw) if out is None else out
    ref = reference.router(**samples.clone_args({**kw, "return_logits": True}))
    require(tol.router(out, ref, kw))
    idx, counts = out[0], out[4]
    same = idx == ref[0]
    T = kw["x"].shape[0]
    return dict(agree=float(same.float().mean()) if T else 1.0, skip=int(counts[-1]))


def check_moe(kw: dict, out=None) -> None:
    out = ops.moe_top1(**kw) if out is None else out
    require(tol.moe_top1(out, reference.moe_top1(**samples.clone_args(kw)), gpu_kernel=False))


# --- router --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [BF16, FP32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("first_layer", [True, False], ids=["first", "later"])
@pytest.mark.parametrize("T", TOKENS)
def test_router_matches_reference(T, first_layer, dtype):
    H, R, E = ROUTER_SIZES[TOKENS.index(T) % 2]
    check_router(_router_kwargs(T, H, R, E, dtype, first_layer, seed=T))


@pytest.mark.parametrize("dtype", [BF16, FP32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("skip", ["some", "never", "always"])
@pytest.mark.parametrize("E", [4, 16])
def test_router_skip_class(E, skip, dtype):
    """The skip class (index E, weight 0, counted last) chosen for some, no or all tokens."""
    T = 300
    bias = {"some": 0.02, "never": -2.0, "always": 2.0}[skip]
    kw = _router_kwargs(T, 136, 32, E, dtype, first_layer=False, seed=E, skip_bias=bias)
    stats = check_router(kw)
    if skip == "some":
        assert 0 < stats["skip"] < T
    else:
        assert stats["skip"] == (T if skip == "always" else 0)


@pytest.mark.parametrize("mode", ["native", "upcast"])
@pytest.mark.parametrize("T", [1, 64])
def test_router_gemm_modes(T, mode, monkeypatch):
    """Both GEMM paths forced at small and larger T; native GEMMs make router_state bit-equal."""
    monkeypatch.setenv("ZAYA_CPU_GEMM", mode)
    kw = _router_kwargs(T, 200, 256, 16, BF16, first_layer=False, seed=7)
    out = ops.router(**kw)
    check_router(kw, out)
    if mode == "native":
        assert torch.equal(out[2], reference.router(**kw)[2])


@pytest.mark.parametrize("T", [1, 300])
def test_fp16(T):
    """fp16 parameters (native GEMMs at T=1, upcast at T=300)."""
    check_router(_router_kwargs(T, 200, 256, 16, FP16, first_layer=False, seed=T))
    check_moe(samples.moe_top1_args(T=T, H=200, I=136, E=16, dtype=FP16, seed=T))


def test_router_agreement_rate():
    """Routing agreement with the reference over many random tokens (bf16, ZAYA1's R and E)."""
    agree, T = [], 8192
    for seed in range(2):
        kw = _router_kwargs(T, 264, 256, 16, BF16, first_layer=bool(seed), seed=100 + seed)
        agree.append(check_router(kw)["agree"])
    rate = sum(agree) / len(agree)
    print(f"router expert-index agreement with the reference: {rate:.5f} over {T * len(agree)} tokens")
    assert rate >= 0.999


def test_router_no_logits_and_empty():
    kw = _router_kwargs(37, 264, 32, 4, BF16, first_layer=False)
    kw["return_logits"] = False
    check_router(kw)
    kw = _router_kwargs(0, 264, 32, 4, BF16, first_layer=False)
    idx, w, state, logits, counts = ops.router(**kw)
    assert idx.shape == (0,) and w.shape == (0,) and state.shape == (0, 32) and logits.shape == (0, 5)
    assert counts.tolist() == [0] * 5


def test_router_strided_inputs():
    """x as a row-strided view and as a transposed (column-major) tensor; prev_state strided too."""
    kw = _router_kwargs(70, 200, 32, 4, BF16, first_layer=False, seed=3)
    wide = torch.zeros(70, 208, dtype=BF16)
    wide[:, 3:203] = kw["x"]
    check_router({**kw, "x": wide[:, 3:203]})
    check_router({**kw, "x": kw["x"].t().contiguous().t()})
    prev = torch.zeros(70, 40, dtype=BF16)
    prev[:, :32] = kw["prev_state"]
    check_router({**kw, "prev_state": prev[:, :32]})


# --- moe_top1 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [BF16, FP32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("T", TOKENS)
def test_moe_matches_reference(T, dtype):
    H, I, E = MOE_SIZES[TOKENS.index(T) % 2]
    check_moe(samples.moe_top1_args(T=T, H=H, I=I, E=E, dtype=dtype, seed=T))


@pytest.mark.parametrize("mode", ["native", "upcast"])
def test_moe_gemm_modes(mode, monkeypatch):
    monkeypatch.setenv("ZAYA_CPU_GEMM", mode)
    kw = samples.moe_top1_args(T=200, H=200, I=136, E=4, dtype=BF16, seed=5)
    out = ops.moe_top1(**kw)
    check_moe(kw, out)
    if mode == "native":
        assert torch.equal(out, reference.moe_top1(**kw))


@pytest.mark.parametrize("start,end", [(0, None), (1, 3), (2, 2), (3, 4), (0, 1)])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_moe_expert_range(start, end, index_dtype):
    kw = samples.moe_top1_args(T=90, H=72, I=40, E=4, seed=11)
    kw.update(expert_index=kw["expert_index"].to(index_dtype), expert_start=start, expert_end=end)
    out = ops.moe_top1(**kw)
    check_moe(kw, out)
    stop = 4 if end is None else end
    outside = (kw["expert_index"] < start) | (kw["expert_index"] >= stop)
    assert bool((out[outside] == 0).all())


@pytest.mark.parametrize("case", ["all_skip", "one_expert", "empty_experts", "no_tokens"])
def test_moe_routing_edge_cases(case):
    E = 4
    T = {"all_skip": 50, "one_expert": 1100, "empty_experts": 300, "no_tokens": 0}[case]
    kw = samples.moe_top1_args(T=T, H=72, I=40, E=E, seed=2)
    g = torch.Generator().manual_seed(3)
    if case == "all_skip":
        kw["expert_index"].fill_(E)
    elif case == "one_expert":  # more tokens than one GEMM chunk (512 rows): several chunks
        kw["expert_index"].fill_(2)
    elif case == "empty_experts":
        kw["expert_index"] = torch.tensor([0, 3, E], dtype=torch.int32)[torch.randint(0, 3, (T,), generator=g)]
    out = ops.moe_top1(**kw)
    check_moe(kw, out)
    if case == "all_skip":
        assert bool((out == 0).all())


def test_moe_strided_x():
    kw = samples.moe_top1_args(T=120, H=72, I=40, E=4, seed=4)
    wide = torch.zeros(120, 80, dtype=BF16)
    wide[:, 5:77] = kw["x"]
    check_moe({**kw, "x": wide[:, 5:77]})
    check_moe({**kw, "x": kw["x"].t().contiguous().t()})
    check_moe({**kw, "expert_weight": torch.stack([kw["expert_weight"]] * 2, dim=1)[:, 1]})


@pytest.mark.parametrize("bad", [-1, 5, 1000])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_moe_bad_expert_index(bad, index_dtype):
    kw = samples.moe_top1_args(T=9, H=72, I=40, E=4)
    kw["expert_index"] = kw["expert_index"].to(index_dtype)
    kw["expert_index"][6] = bad
    with pytest.raises(ValueError, match=r"expert_index entries must lie in 0\.\.4"):
        ops.moe_top1(**kw)
    with pytest.raises(ValueError, match=rf"expert_index.*got {bad} at position 6"):
        torch.ops.zaya.moe_top1(*samples.to_op_args("moe_top1", kw))


# --- argument checks of the C++ kernels themselves (torch.ops.zaya, bypassing the wrappers) ---------

CXX_BAD = [
    ("router", lambda k: {"fc2_bias": k["fc2_bias"][:-1]}, ValueError, "fc2_bias must have shape"),
    ("router", lambda k: {"norm_weight": k["norm_weight"].float()}, TypeError, "norm_weight must have dtype"),
    ("router", lambda k: {"balancing_biases": k["balancing_biases"].bfloat16()}, TypeError, "balancing_biases"),
    ("router", lambda k: {"states_scale": None}, ValueError, "prev_state and states_scale"),
    ("router", lambda k: {"prev_state": k["prev_state"][1:]}, ValueError, "prev_state must have shape"),
    ("router", lambda k: {"x": k["x"].int()}, TypeError, "x must have dtype"),
    ("router", lambda k: {"out_weight": k["out_weight"][:1]}, ValueError, "out_weight"),
    ("router", lambda k: {"eps": 0.0}, ValueError, "eps"),
    ("moe_top1", lambda k: {"expert_index": k["expert_index"].float()}, TypeError, "expert_index must have dtype"),
    ("moe_top1", lambda k: {"expert_weight": k["expert_weight"][1:]}, ValueError, "expert_weight must have shape"),
    ("moe_top1", lambda k: {"gate_up_proj": k["gate_up_proj"][:, :-1]}, ValueError, "gate_up_proj"),
    ("moe_top1", lambda k: {"down_proj": k["down_proj"].float()}, TypeError, "down_proj must have dtype"),
    ("moe_top1", lambda k: {"expert_start": 3, "expert_end": 2}, ValueError, "expert range"),
    ("moe_top1", lambda k: {"expert_end": 9}, ValueError, "expert range"),
]


@pytest.mark.parametrize("name,change,exc,match", CXX_BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(CXX_BAD)])
def test_kernel_checks_name_the_argument(name, change, exc, match):
    kw = samples.SAMPLES[name]()
    kw.update(change(kw))
    with pytest.raises(exc, match=match):
        getattr(torch.ops.zaya, name)(*samples.to_op_args(name, kw))


# --- opcheck on more than the shared sample ----------------------------------------------------------

OPCHECK = [
    ("router", dict(first_layer=True)),
    ("router", dict(dtype=FP32, T=20)),
    ("moe_top1", dict(dtype=FP32)),
    ("moe_top1", dict(T=40, E=3)),
]


@pytest.mark.parametrize("name,options", OPCHECK, ids=[f"{n}-{i}" for i, (n, _) in enumerate(OPCHECK)])
def test_opcheck_variants(name, options):
    kw = samples.SAMPLES[name](**options)
    if name == "router":
        kw["return_logits"] = False
    else:
        kw.update(expert_start=1, expert_end=3)
    torch.library.opcheck(getattr(torch.ops.zaya, name).default, samples.to_op_args(name, kw))


# --- expert parallelism: two gloo ranks, each its half of the experts ---------------------------------


def _ep_worker(rank: int, init_file: str, kw: dict, full: torch.Tensor) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        E = kw["gate_up_proj"].shape[0]
        part = ops.moe_top1(**{**kw, "expert_start": rank * E // 2, "expert_end": (rank + 1) * E // 2})
        dist.all_reduce(part)
        assert torch.equal(part, full), f"rank {rank}: sum over ranks differs from the full result"
    finally:
        dist.destroy_process_group()


def test_moe_expert_parallel_gloo():
    import torch.multiprocessing as mp

    kw = samples.moe_top1_args(T=300, H=72, I=40, E=6, seed=9)
    full = ops.moe_top1(**kw)
    check_moe(kw, full)
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_ep_worker, args=(os.path.join(d, "init"), kw, full), nprocs=2, join=True)
