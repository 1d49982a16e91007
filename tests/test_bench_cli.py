"""The benchmark harness (zaya_ops.bench): the --quick CLI run writes sane JSON rows, and the runner
reports missing kernels, failing torch.compile and wrong outputs instead of crashing or timing them as
wins. CPU only, well under a minute."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zaya_ops
from zaya_ops.bench import cases as C
from zaya_ops.bench import harness as H
from zaya_ops.bench.runner import format_table, run_case

REQUIRED = {"op", "shape", "params", "dtype", "provider", "status", "device", "device_name", "driver",
            "runtime", "torch", "commit", "timestamp", "timer", "bytes", "flops", "stats", "gbps", "tflops",
            "pct_copy_bw", "pct_roofline", "speedup_vs_eager", "max_abs_err"}
STATS = {"median_us", "p10_us", "p90_us", "mean_us", "min_us", "max_us", "reps"}
STATUSES = {H.STATUS_OK, H.STATUS_NA, H.STATUS_SKIPPED, H.STATUS_ERROR, H.STATUS_MISMATCH}


def _env() -> dict[str, str]:
    """The subprocess imports the same zaya_ops as this test (installed, or the tree via PYTHONPATH)."""
    env = dict(os.environ)
    pkg_parent = str(Path(zaya_ops.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `--quick` CLI run. torch.compile is left out here (its first compile in a fresh process can
    take ~20 s on a small CPU); test_compile_provider covers it in-process."""
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, "-m", "zaya_ops.bench", "--quick", "--device", "cpu", "--out", str(out),
           "--providers", "zaya,eager", "--tokens", "1,37"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def test_quick_cli_writes_json_rows(quick_run):
    out, proc = quick_run
    files = sorted(out.glob("*.json"))
    assert {f.name.split("-")[0] for f in files} == {"rms_norm", "residual_scale_rmsnorm"}, files
    for f in files:
        doc = json.loads(f.read_text())
        assert doc["schema"] == H.SCHEMA
        meta = doc["meta"]
        assert meta["device"]["device_type"] == "cpu"
        roof = meta["roofline"]
        assert roof["copy_gbps"] > 0 and roof["gemm_tflops"] > 0 and roof["gemm_dtype"] in ("bf16", "fp32")
        rows = doc["rows"]
        assert len(rows) == 2 * 2  # 2 shapes x 2 providers
        for r in rows:
            assert REQUIRED <= set(r), REQUIRED - set(r)
            assert r["op"] == meta["op"] and r["dtype"] == "bf16" and r["device"].startswith("cpu-")
            assert r["torch"] == torch.__version__
            assert r["status"] in STATUSES
            assert r["params"]["H"] == 256 and r["params"]["T"] in (1, 37)
            assert r["shape"] == f"T={r['params']['T']},H=256"
            assert r["bytes"] > r["params"]["T"] * 256 * 2 and r["flops"] > 0
            if r["status"] == H.STATUS_OK:
                st = r["stats"]
                assert STATS <= set(st)
                assert st["reps"] >= 5
                assert 0 < st["min_us"] <= st["p10_us"] <= st["median_us"] <= st["p90_us"] <= st["max_us"]
                assert math.isclose(r["gbps"], r["bytes"] / (st["median_us"] * 1e-6) / 1e9, rel_tol=1e-6)
                assert r["tflops"] > 0 and 0 < r["pct_copy_bw"] and 0 < r["pct_roofline"]
                assert r["max_abs_err"] is not None and r["max_rel_err"] <= 1.6e-2
                assert r["speedup_vs_eager"] > 0
            else:
                assert r["stats"] is None and r["gbps"] is None and r["speedup_vs_eager"] is None
                assert r["note"]
        eager = [r for r in rows if r["provider"] == "eager"]
        assert eager and all(r["status"] == H.STATUS_OK and r["speedup_vs_eager"] == 1.0 for r in eager)
        assert all(r["max_abs_err"] == 0.0 for r in eager)  # the reference against itself
        zaya = [r for r in rows if r["provider"] == "zaya"]
        assert all(r["status"] in (H.STATUS_OK, H.STATUS_NA) for r in zaya), zaya
    # the terminal table
    assert "median us" in proc.stdout and "GB/s" in proc.stdout and "%copyBW" in proc.stdout
    assert "rms_norm" in proc.stdout and "residual_scale_rmsnorm" in proc.stdout


def _run(bench, case, providers):
    cfg = H.TimerConfig(warmup_s=0.0, min_warmup=1, budget_s=0.01, min_reps=3, max_reps=20)
    info = H.describe_device(case.device)
    roof = H.Roofline(copy_gbps=10.0, copy_bytes=0, gemm_tflops=0.1, gemm_dtype="fp32", gemm_n=0)
    return {r.provider: r for r in run_case(bench, case, providers, info=info, roof=roof, cfg=cfg,
                                            stamp=H.utc_stamp())}


class _FakeProviders(C.RmsNormBench):
    """rms_norm with extra providers: a wrong "kernel", a missing one and a crashing one."""

    def make_provider(self, provider, case):
        ref = self.reference()
        if provider == "wrong":
            return case.bind(lambda x, w, eps: ref(x, w, eps) * 1.5)
        if provider == "missing":
            def missing(*a, **k):
                raise NotImplementedError("no kernel for this device")
            return case.bind(missing)
        if provider == "crash":
            def crash(*a, **k):
                raise RuntimeError("boom")
            return case.bind(crash)
        return super().make_provider(provider, case)


def test_runner_statuses():
    bench = _FakeProviders()
    case = bench.make_case({"T": 5, "H": 64}, torch.bfloat16, torch.device("cpu"))
    rows = _run(bench, case, ["eager", "wrong", "missing", "crash", "nonsense"])
    assert rows["eager"].status == H.STATUS_OK and rows["eager"].speedup_vs_eager == 1.0
    wrong = rows["wrong"]
    assert wrong.status == H.STATUS_MISMATCH and wrong.speedup_vs_eager is None and wrong.max_rel_err > 0.1
    assert rows["missing"].status == H.STATUS_NA and "no kernel" in rows["missing"].note
    assert rows["crash"].status == H.STATUS_ERROR and "boom" in rows["crash"].note
    assert rows["nonsense"].status == H.STATUS_SKIPPED
    table = format_table(list(rows.values()))
    assert "WRONG" in table and "n/a" in table


def test_compile_failure_is_skipped(monkeypatch):
    def broken_compile(fn, **kwargs):
        def run(*a, **k):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    bench = C.get("residual_scale_rmsnorm")
    case = bench.make_case({"T": 3, "H": 32}, torch.bfloat16, torch.device("cpu"))
    rows = _run(bench, case, ["eager", "compile"])
    assert rows["eager"].status == H.STATUS_OK
    assert rows["compile"].status == H.STATUS_SKIPPED and "C++ compiler" in rows["compile"].note


def test_compile_provider():
    """The real torch.compile peer: it runs and matches the reference within tolerance (or, where this
    machine cannot compile, it is skipped with a note)."""
    bench = C.get("rms_norm")
    case = bench.make_case({"T": 7, "H": 64}, torch.bfloat16, torch.device("cpu"))
    row = _run(bench, case, ["compile"])["compile"]
    assert row.status in (H.STATUS_OK, H.STATUS_SKIPPED), row
    if row.status == H.STATUS_OK:
        assert row.max_rel_err <= C.tolerance(torch.bfloat16) and row.stats["reps"] >= 3
    else:
        assert row.note.startswith("torch.compile failed")


def test_stats_and_bytes():
    st = H.Stats.from_samples([5, 1, 4, 2, 3, 6, 7, 8, 9, 10])
    assert st.median_us == 5.5 and st.min_us == 1 and st.max_us == 10 and st.reps == 10
    assert math.isclose(st.p10_us, 1.9) and math.isclose(st.p90_us, 9.1)
    T, Hd = 4096, 2048
    rn = C.get("rms_norm").make_case({"T": T, "H": Hd}, torch.bfloat16, torch.device("meta"))
    assert rn.bytes == T * Hd * 2 + Hd * 2 + T * Hd * 2
    rs = C.get("residual_scale_rmsnorm").make_case({"T": T, "H": Hd}, torch.bfloat16, torch.device("meta"))
    assert rs.bytes == T * Hd * (2 + 4) + 5 * Hd * 2 + T * Hd * (4 + 2)
    row = H.Row(op="x", shape="s", params={}, dtype="bf16", provider="p", status="ok", bytes=10**9,
                flops=10**9, stats={"median_us": 1e6})
    row.fill_derived(H.Roofline(copy_gbps=2.0, copy_bytes=0, gemm_tflops=1.0, gemm_dtype="bf16", gemm_n=0))
    assert row.gbps == 1.0 and row.pct_copy_bw == 50.0 and math.isclose(row.pct_roofline, 50.0)
