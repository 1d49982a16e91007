"""A model decode step makes no device-to-host sync and no repeated driver-attribute, environment or
tensor-map call (issue 14, section 3).

* Python: the decode steps call no ``.item()/.tolist()/bool()/int()/float()/.cpu()/.numpy()`` on a
  tensor (a TorchFunctionMode counts them), on the CPU kernels and on the emulated GPU kernels; a direct
  wrapper call, which validates its index values, is the control that the counter sees such reads.
* C++ (the emulator modules, csrc/kernels/runtime_state.h): the glue reads no tensor value on the host
  (``host_reads``: the one host-read helper counts, proven by ``host_read_probe``; a source scan keeps
  the glue from reading any other way), and after a cold start the first step's device-attribute
  queries, shared-memory opt-ins, TMA encodes and environment reads are not repeated by later steps. On
  the 32-lane emulator a launch above 48 KiB of dynamic shared memory fails without the opt-in
  (test_emulator.py: smem_opt_in), so a cache that skipped a needed one fails here too.
* On a GPU (skipped without one): decode steps under ``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import importlib
import pathlib
import re

import pytest
import torch
from torch.overrides import TorchFunctionMode

from conftest import EMULATORS, HOPPER_TARGETS, use_target
from zaya_ops import ops, reference, samples
from zaya_ops._library import hopper_paths
from zaya_ops.model import ZayaConfig, ZayaForCausalLM

CONFIG = dict(vocab_size=128, hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              head_dim=64, num_experts=4, moe_intermediate_size=64, router_hidden_size=32,
              max_position_embeddings=256, partial_rotary_factor=0.5, bos_token_id=1, eos_token_id=None,
              pad_token_id=0)
PROMPTS = [[1, 17, 99, 4, 56, 23, 8, 77, 31], [1, 5, 64, 12]]  # 13 tokens: moe_top1's prefill kernels
STEPS = 6  # with blocks of 4 tokens, decode crosses block boundaries (new blocks, revalidated batch)
EMU_TARGETS = EMULATORS + [t for t in HOPPER_TARGETS if t.startswith("emu")]
COUNTED = ("device_attribute_queries", "func_attribute_sets", "tensor_map_encodes", "env_reads")
ROOT = pathlib.Path(__file__).resolve().parents[1]


class HostReads(TorchFunctionMode):
    """Counts the tensor methods that read values on the host."""

    NAMES = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy"}

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.NAMES:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def _emu_module(target: str):
    return importlib.import_module("zaya_ops._emu_w" + ("64" if target.startswith("emu64") else "32"))


def _model(device: str) -> ZayaForCausalLM:
    return ZayaForCausalLM.random(ZayaConfig(**CONFIG, dtype="bfloat16"), seed=3, device=device,
                                  dtype=torch.bfloat16, backend="ops")


def _prefill(model: ZayaForCausalLM):
    cache = model.new_cache(len(PROMPTS), 64, block_size=4)
    out = model.forward(PROMPTS, cache)
    return cache, out.slots, out.logits


def _decode(model, cache, slots, logits, steps: int) -> torch.Tensor:
    for _ in range(steps):
        logits = model.decode(logits.argmax(-1), cache, slots, check_ids=False)
    return logits


@pytest.mark.parametrize("target", ["cpu"] + EMU_TARGETS)
def test_decode_steps_read_nothing_in_python(target, monkeypatch):
    device = use_target(target, monkeypatch)
    model = _model(device)
    cache, slots, logits = _prefill(model)
    with HostReads() as mode:
        logits = _decode(model, cache, slots, logits, 3)
    assert mode.calls == [], mode.calls
    assert all(how.startswith("kernel") for how in model.op_backends().values()), model.op_backends()
    assert bool(torch.isfinite(logits.float()).all())
    # Control: a direct wrapper call validates its indices, and the counter sees that read.
    kw = samples.moe_top1_args(T=9, H=72, I=40, E=4)
    with HostReads() as mode:
        ops.moe_top1(**kw)
    assert mode.calls, "the counter saw no host read in a validating wrapper call"


@pytest.mark.skipif(not EMULATORS, reason="built without the SIMT emulator (ZAYA_BACKENDS=...,emu)")
def test_host_read_counter_counts():
    for target in EMULATORS:
        emu = _emu_module(target)
        before = emu.runtime_counters()["host_reads"]
        assert emu.host_read_probe(torch.tensor([3, 1, 4], dtype=torch.int32)) == [3, 1, 4]
        assert emu.runtime_counters()["host_reads"] == before + 1


@pytest.mark.skipif(not EMULATORS, reason="built without the SIMT emulator (ZAYA_BACKENDS=...,emu)")
@pytest.mark.parametrize("target", EMU_TARGETS)
def test_model_steady_state_on_emulated_gpu(target, monkeypatch):
    """Prefill and decode on the emulated GPU kernels: no host read of a device value at all; after a
    cold start, nothing the first decode step asked of the runtime is asked again by later steps."""
    device = use_target(target, monkeypatch)
    emu = _emu_module(target)
    # Let the launchers read ZAYA_WGMMA themselves (once), as a process that never touches the switch.
    monkeypatch.setattr(hopper_paths, "state", None)
    monkeypatch.setenv("ZAYA_WGMMA", "1" if target.endswith("-wgmma") else "0")
    model = _model(device)
    emu.reset_runtime_caches()
    c0 = emu.runtime_counters()
    launches0 = emu.launches()
    cache, slots, logits = _prefill(model)
    logits = _decode(model, cache, slots, logits, 1)
    c1 = emu.runtime_counters()
    with HostReads() as mode:
        logits = _decode(model, cache, slots, logits, STEPS - 1)
    c2 = emu.runtime_counters()
    assert mode.calls == [], mode.calls
    assert emu.launches() > launches0
    assert c2["host_reads"] == c0["host_reads"], "the GPU glue read index values on the host"
    for name in COUNTED:
        assert c2[name] == c1[name], (name, c0[name], c1[name], c2[name])
    # The cold start did ask (the counters are live): the SM count, and ZAYA_WGMMA once, on the emulator
    # with the Hopper kernels' source; with them on, the moe_top1 prefill kernels' TMA maps (two per
    # layer) and four shared-memory opt-ins: moe_top1's two matrix kernels (128 KiB), the attention
    # kernel (72 KiB at head dim 64), which every decode step launches, and the router's cp.async
    # kernel (84,480 B for its 16-token tiles).
    assert c1["device_attribute_queries"] > c0["device_attribute_queries"]
    assert c1["env_reads"] - c0["env_reads"] == (0 if target == "emu64" else 1)
    if target.endswith("-wgmma"):
        assert c1["tensor_map_encodes"] - c0["tensor_map_encodes"] == 2 * CONFIG["num_hidden_layers"]
        assert c1["func_attribute_sets"] - c0["func_attribute_sets"] == 4
    assert bool(torch.isfinite(logits.float()).all())


@pytest.mark.skipif("emu32-wgmma" not in HOPPER_TARGETS, reason="no 32-lane emulator module")
def test_tensor_maps_cached_per_weight_tensor(monkeypatch):
    """moe_top1's Hopper kernels encode a weight tensor's TMA map once; a tensor at a new address gets
    its own, and values changed in place are read through the cached map (it holds no data)."""
    use_target("emu32-wgmma", monkeypatch)
    emu = _emu_module("emu32")
    emu.reset_runtime_caches()
    kw = samples.moe_top1_args(T=40, H=72, I=40, E=4, seed=1)

    def run_and_check(kw):
        got = ops.moe_top1(**kw)
        torch.testing.assert_close(got.float(), reference.moe_top1(**kw).float(), atol=0.05, rtol=0.02)

    c0 = emu.runtime_counters()
    run_and_check(kw)
    c1 = emu.runtime_counters()
    assert c1["tensor_map_encodes"] - c0["tensor_map_encodes"] == 2  # gate_up and down
    assert c1["func_attribute_sets"] - c0["func_attribute_sets"] == 2  # both kernels' shared-memory opt-in
    run_and_check(kw)
    with torch.no_grad():
        kw["gate_up_proj"].mul_(-1)  # same tensor, new values
    run_and_check(kw)
    assert emu.runtime_counters() == c1
    kw = {**kw, "down_proj": kw["down_proj"].clone() * 0.5}  # a new tensor: its own map
    run_and_check(kw)
    c2 = emu.runtime_counters()
    assert c2["tensor_map_encodes"] - c1["tensor_map_encodes"] == 1
    assert c2["func_attribute_sets"] == c1["func_attribute_sets"]


def test_cache_validates_batch_metadata_once():
    """The model's index metadata is validated where it is made (ZayaCache.validate_batch, host mirrors),
    once per change of batch or allocation, and a broken entry is named."""
    cfg = ZayaConfig(**CONFIG)
    cache = ZayaForCausalLM(cfg, dtype=torch.float32, backend="reference").new_cache(2, 16, block_size=4)
    slots = cache.admit(2)
    cache.reserve(slots, [5, 3])
    checks = []
    real = cache._check_slots
    cache._check_slots = lambda s: (checks.append(tuple(s)), real(s))
    cache.validate_batch(slots)  # the blocks reserve handed out: checked once
    cache.validate_batch(slots)
    cache.reserve(slots, [3, 1])  # no new block: still the same batch
    assert checks == [tuple(slots)]
    cache.advance(slots, [5, 3])
    cache.reserve(slots, [4, 1])  # slot 0 needs a third block
    cache.validate_batch(slots)
    assert checks == [tuple(slots)] * 2
    cache._host_table[slots[0]][1] = 10**6  # a bookkeeping bug, as the kernels would see it
    cache._version += 1
    with pytest.raises(ValueError, match=rf"slot {slots[0]}: block table .* does not fit the cache"):
        cache.validate_batch(slots)
    cache.release([slots[1]])
    with pytest.raises(ValueError, match=rf"slot {slots[1]} holds no sequence"):
        cache.validate_batch(slots)


def test_glue_reads_no_index_values():
    """The GPU glue and the checks it includes never read tensor values on the host except through the
    counted helper (arg_checks.h host_ints), which it does not call; the launchers read the environment
    and the driver only through the cached, counted helpers."""
    glue = [*sorted((ROOT / "csrc/gpu").glob("*.cpp")), ROOT / "csrc/gpu/glue.h"]
    forbidden = re.compile(r"\.item\b|\.cpu\(|\.tolist|_local_scalar_dense|host_ints|aminmax|nonzero|"
                           r"check_cca_attention_indices|check_cca_qkv_indices|\bgetenv\b|kCPU")
    for path in glue:
        code = "\n".join(line.split("//")[0] for line in path.read_text().splitlines())
        assert not forbidden.search(code), (path.name, forbidden.search(code).group(0))
    launchers = [p for p in sorted((ROOT / "csrc/kernels").glob("*")) if p.suffix in (".cuh", ".h")]
    allowed = {"getenv": {"runtime_state.h", "simt_emu.h"},  # env(); the emulator's own ZAYA_EMU_ORDER
               "cudaFuncSetAttribute": {"vendor.h", "simt_emu.h"},  # the emulated driver names it
               "DeviceGetAttribute": {"vendor.h"},
               "cuTensorMapEncodeTiled": {"tma.cuh"}}
    for path in launchers:
        code = "\n".join(line.split("//")[0] for line in path.read_text().splitlines())
        for word, where in allowed.items():
            assert path.name in where or word not in code, (path.name, word)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("target", ["cuda"] + [t for t in HOPPER_TARGETS if t.startswith("cuda")])
def test_decode_steps_never_sync_on_gpu(target, monkeypatch):
    """Decode steps under torch.cuda.set_sync_debug_mode("error"): any synchronising call raises."""
    device = use_target(target, monkeypatch)
    import zaya_ops._C as C

    model = _model(device)
    cache, slots, logits = _prefill(model)
    logits = _decode(model, cache, slots, logits, 1)
    c1 = C._runtime_counters()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        logits = _decode(model, cache, slots, logits, STEPS - 1)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert C._runtime_counters() == c1
    assert bool(torch.isfinite(logits.float()).all())
