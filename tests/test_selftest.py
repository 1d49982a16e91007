"""zaya_ops.selftest and the self-check gate of backend="auto", on the CPU kernels and on the emulated GPU
kernels (emu32: CUDA paths, emu64: CDNA paths; a real GPU too when present).

* The report: every op ok on every target, with the dtypes each kernel takes (GPU kernels: no fp32 for
  the matrix ops), its worst measure within its tolerance; timings printed (``-s``).
* ZAYA_SELFTEST_FAULT makes every op's rule fail (each rule catches a wrong value); a kernel that raises
  fails its op.
* The model (ZayaForCausalLM) and the transformers integration route a failing op to the reference with
  exactly one SelfTestWarning naming op, device and error, ``op_backends()`` says
  ``reference (self-check failed: ...)``, and a second model in the process neither re-runs the check nor
  warns again. ZAYA_SELFTEST=0 skips the check.
* ``python -m zaya_ops --check-ops`` prints the report and exits 1 when an op fails.
"""

from __future__ import annotations

import time
import types
import warnings

import pytest
import torch

import zaya_ops
from conftest import KERNEL_TARGETS, use_target
from zaya_ops import _selftest, samples
from zaya_ops import ops as zops
from zaya_ops._selftest import FAULT_ENV, OP_NAMES, SKIP_ENV, SelfTestWarning

#: The ops the inference model calls (training's cca_qkv_functional replaces cca_qkv in the trainable model).
MODEL_OPS = tuple(op for op in OP_NAMES if op != "cca_qkv_functional")
from zaya_ops.model import ZayaConfig, ZayaForCausalLM
from zaya_ops.model.backend import OpBackend

BF16 = torch.bfloat16
# the GPU kernels take bf16/fp16 only
MATRIX_OPS = ("cca_qkv", "cca_qkv_functional", "cca_attention", "router", "moe_top1")
# Head dim 64: every op has a kernel on every target (the attention kernels' range is 64/128/256).
CONFIG = dict(vocab_size=64, hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              head_dim=64, num_experts=4, moe_intermediate_size=64, router_hidden_size=32,
              max_position_embeddings=128, partial_rotary_factor=0.5, bos_token_id=None, eos_token_id=None)
PROMPTS = [[1, 17, 9, 33, 5, 2, 8], [3]]

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(autouse=True)
def fresh_gate(monkeypatch):
    """No inherited self-check results or environment: each test starts with an empty gate cache."""
    monkeypatch.delenv(SKIP_ENV, raising=False)
    monkeypatch.delenv(FAULT_ENV, raising=False)
    _selftest.clear_cache()
    yield
    _selftest.clear_cache()


@pytest.fixture(params=KERNEL_TARGETS)
def target(request, monkeypatch) -> tuple[str, str]:
    """(target name, device of its tensors), the wrappers routed to the target's kernels."""
    return request.param, use_target(request.param, monkeypatch)


def _namespace(name: str) -> str:
    return "zaya_" + name if name.startswith("emu") else "zaya"


def _recording(fn, *args):
    """(fn(*args), the messages of the SelfTestWarnings it raised)."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = fn(*args)
    return out, [str(w.message) for w in record if issubclass(w.category, SelfTestWarning)]


# --- the report ------------------------------------------------------------------------------------


def test_report_on_every_target(target):
    name, dev = target
    t0 = time.perf_counter()
    report = zaya_ops.selftest(dev)
    total = time.perf_counter() - t0
    t0 = time.perf_counter()
    zaya_ops.selftest(dev, dtypes=[BF16])
    bf16 = time.perf_counter() - t0
    print(f"\nselftest on {name}: {total:.2f} s for fp32+bf16+fp16, {bf16:.2f} s for bf16 alone; per op: "
          + ", ".join(f"{r.op} {r.seconds:.3f}" for r in report))
    assert [r.op for r in report] == list(OP_NAMES)
    gpu = name != "cpu"
    for r in report:
        assert r.status == "ok" and r.ok and r.error == "", r
        assert r.device == str(_selftest._device(dev)) and r.kernels == _namespace(name)
        assert {"bfloat16", "float16"} <= set(r.dtypes), r
        assert r.max_error is not None and r.max_error <= r.tolerance and r.measure, r
        assert r.seconds > 0
        if not gpu:
            assert r.dtypes == ("float32", "bfloat16", "float16") and r.not_implemented == ()
        elif r.op in MATRIX_OPS:
            assert r.not_implemented == ("float32",), r
        assert set(r.as_dict()) >= {"op", "device", "kernels", "dtypes", "status", "max_error", "tolerance",
                                    "error", "seconds"}


def test_fault_fails_every_op(target, monkeypatch):
    """ZAYA_SELFTEST_FAULT perturbs each kernel's output inside the check: every op's rule must catch it."""
    name, dev = target
    monkeypatch.setenv(FAULT_ENV, ",".join(OP_NAMES))
    report = zaya_ops.selftest(dev, dtypes=[BF16])
    for r in report:
        assert r.status == "failed" and not r.ok, r
        assert FAULT_ENV in r.error and r.max_error > r.tolerance, r
    # The kernels themselves were not touched: without the variable the same check passes.
    monkeypatch.delenv(FAULT_ENV)
    assert all(r.status == "ok" for r in zaya_ops.selftest(dev, dtypes=[BF16]))


def test_selected_ops_and_dtypes():
    report = zaya_ops.selftest("cpu", ops="router", dtypes=[BF16])
    assert [(r.op, r.dtypes, r.status) for r in report] == [("router", ("bfloat16",), "ok")]
    with pytest.raises(ValueError, match=r"ops: unknown op\(s\) \['nope'\]"):
        zaya_ops.selftest("cpu", ops=["rms_norm", "nope"])


def test_bad_fault_variable_is_named(monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "router,mo_top1")
    with pytest.raises(ValueError, match=rf"{FAULT_ENV} names unknown ops \['mo_top1'\]"):
        zaya_ops.selftest("cpu", ops="router")


def test_a_kernel_that_raises_fails_its_op(monkeypatch):
    """Any exception but NotImplementedError is a failure (a GPU's "no kernel image" among them); an op
    whose kernel does not exist for a dtype is "not-implemented", not failed."""
    def broken(*args):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    def missing(*args):
        raise NotImplementedError("zaya::router: no kernel for this backend")

    fake = types.SimpleNamespace(name="zaya_broken", rms_norm=broken, router=missing)
    monkeypatch.setattr(zops, "_OPS", fake)
    rms, rt = zaya_ops.selftest("cpu", ops=["rms_norm", "router"], dtypes=[BF16])
    assert rms.status == "failed" and rms.kernels == "zaya_broken"
    assert "RuntimeError: CUDA error: no kernel image" in rms.error and "decode T=1" in rms.error
    assert rt.status == "not-implemented" and rt.ok and rt.not_implemented == ("bfloat16",) and rt.dtypes == ()


# --- the gate of backend="auto" ----------------------------------------------------------------------


def _model(dtype=BF16, backend="auto"):
    return ZayaForCausalLM.random(ZayaConfig(**CONFIG), seed=1, dtype=dtype, backend=backend)


def test_model_routes_a_failing_op_to_the_reference_once(target, monkeypatch):
    name, dev = target
    monkeypatch.setenv(FAULT_ENV, "moe_top1")
    calls = {"reference": 0}
    moe_reference = zaya_ops.reference.moe_top1

    def counted(*args, **kwargs):
        calls["reference"] += 1
        return moe_reference(*args, **kwargs)

    monkeypatch.setattr(zaya_ops.reference, "moe_top1", counted)  # what OpBackend picks for the fallback
    runs = _selftest.runs
    model = _model()
    out, msgs = _recording(model, PROMPTS)
    got = out.logits
    assert len(msgs) == 1, msgs
    msg = msgs[0]
    assert "the moe_top1 kernel failed its self-check on cpu" in msg and "bfloat16" in msg
    assert FAULT_ENV in msg and "zaya_ops.reference.moe_top1" in msg
    assert (f"({_namespace(name)} kernels)" in msg) == name.startswith("emu")
    rep = model.op_backends()
    assert rep["moe_top1"].startswith("reference (self-check failed: bfloat16 "), rep
    assert FAULT_ENV in rep["moe_top1"]
    assert all(rep[op] == "kernel (cpu)" for op in MODEL_OPS if op != "moe_top1"), rep
    assert _selftest.runs - runs == len(MODEL_OPS)  # each op checked once, before its kernel's first use
    gate_s = sum(r.seconds for r in _selftest._CACHE.values())
    print(f"\n{name}: the gate's checks of the six ops in bf16 took {gate_s:.3f} s")

    # moe_top1's reference ran: in each layer, and in the check's cases (as the oracle)
    assert torch.isfinite(got).all()
    assert calls["reference"] == CONFIG["num_hidden_layers"] + len(samples.CHECK_CASES["moe_top1"])

    # A second model in the process: the cached verdict, no second check, no second warning.
    runs = _selftest.runs
    again = _model()
    assert _recording(again, PROMPTS)[1] == [] and _selftest.runs == runs
    assert again.op_backends()["moe_top1"] == rep["moe_top1"]


def test_gate_runs_once_per_process_and_key(monkeypatch):
    """Cached per (op, dtype, device, kernel namespace, fault): a new dtype is checked, a repeat is not."""
    runs = _selftest.runs
    for _ in range(2):
        _model()(PROMPTS)
    assert _selftest.runs - runs == len(MODEL_OPS)
    _model(dtype=torch.float32)(PROMPTS)
    assert _selftest.runs - runs == 2 * len(MODEL_OPS)
    assert _selftest.gate("router", "cpu", BF16) is None and _selftest.runs - runs == 2 * len(MODEL_OPS)


def test_selftest_0_skips_the_check(monkeypatch):
    monkeypatch.setenv(SKIP_ENV, "0")
    monkeypatch.setenv(FAULT_ENV, "router")
    runs = _selftest.runs
    model = _model()
    assert _recording(model, PROMPTS)[1] == [] and _selftest.runs == runs
    assert model.op_backends()["router"] == "kernel (cpu)"
    # selftest() itself still runs when asked
    assert zaya_ops.selftest("cpu", ops="router", dtypes=[BF16])[0].status == "failed"


def test_backend_self_check_settles_ops_before_their_first_call(monkeypatch):
    """OpBackend.self_check (for callers that capture a CUDA graph or compile): the failing op is routed
    at once; the others have not run yet."""
    monkeypatch.setenv(FAULT_ENV, "cca_attention")
    backend = OpBackend("auto", torch.device("cpu"), BF16, head_dim=64)
    rep, msgs = _recording(backend.self_check)
    assert len(msgs) == 1, msgs
    assert rep["cca_attention"].startswith("reference (self-check failed: ")
    assert all(rep[op] == "not run yet" for op in MODEL_OPS if op != "cca_attention"), rep
    out, lse = backend("cca_attention", **samples.cca_attention_args(samples.SampleShape(head_dim=64, rot_dim=16)))
    assert backend.report()["cca_attention"] == rep["cca_attention"]
    # backend="ops" insists on the kernels and is not gated
    assert OpBackend("ops", torch.device("cpu"), BF16, head_dim=64).self_check()["cca_attention"] == "not run yet"


def test_transformers_integration_routes_a_failing_op(monkeypatch):
    pytest.importorskip("transformers")
    from zaya_ops.integrations.transformers import op_backends, patch, unpatch
    from zaya_ops.model.testing import make_hf_model, max_scaled_error, tolerance

    monkeypatch.setenv(FAULT_ENV, "router")
    hf = make_hf_model(torch.float32, seed=3, vocab_size=64)
    ids = torch.randint(1, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = hf(ids).logits
    patch(hf)
    try:
        with torch.no_grad():
            out, msgs = _recording(hf, ids)
            msgs += _recording(hf, ids)[1]
        rep = op_backends(hf)
    finally:
        unpatch(hf)
    got = out.logits
    assert len(msgs) == 1 and "the router kernel failed its self-check on cpu in float32" in msgs[0], msgs
    assert rep["router"].startswith("reference (self-check failed: float32 "), rep
    assert rep["moe_top1"] == "kernel (cpu)" and rep["rms_norm"] == "kernel (cpu)", rep
    assert max_scaled_error(got, want) <= tolerance(torch.float32)


# --- python -m zaya_ops --check-ops ------------------------------------------------------------------


def test_check_ops_cli(target, monkeypatch, capsys):
    from zaya_ops.__main__ import main

    name, _ = target
    assert main(["--device", "cpu", "--check-ops", "--dtype", "bf16", "--no-timing"]) == 0
    out = capsys.readouterr().out
    for op in OP_NAMES:
        assert f"\n{op:<24}ok " in out, out
    assert "FAILED" not in out
    monkeypatch.setenv(FAULT_ENV, "cca_qkv")
    assert main(["--device", "cpu", "--check-ops", "--dtype", "bf16", "--no-timing", "--json"]) == 1
    captured = capsys.readouterr()
    assert f"FAILED cca_qkv on cpu ({_namespace(name)} kernels): bfloat16 " in captured.out
    assert '"status": "failed"' in captured.out and "FAILED: cca_qkv" in captured.err


def test_check_ops_cli_timing_columns(capsys):
    from zaya_ops.__main__ import main

    assert main(["--device", "cpu", "--check-ops", "--dtype", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "kernel us" in out and "reference us" in out and "speedup" in out
