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


NORM_OPS = {"rms_norm", "residual_scale_rmsnorm"}  # their backward benches: tests/test_bench_backward.py
ALL_OPS = NORM_OPS | {"cca_qkv", "cca_attention", "router", "moe_top1"}
LAYER_OPS = ALL_OPS - NORM_OPS
# every provider but torch.compile (its first compile per shape takes seconds to tens of seconds on a small
# CPU; test_compile_provider covers it in-process)
QUICK_PROVIDERS = "zaya,eager,sdpa,grouped_mm,dense-loop"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `--quick` CLI run of every op (prefill T in {1, 37}; decode B = 2)."""
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, "-m", "zaya_ops.bench", "--quick", "--device", "cpu", "--out", str(out),
           "--providers", QUICK_PROVIDERS, "--tokens", "1,37", "--batch", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def _docs(out):
    files = sorted(out.glob("*.json"))
    return {f.name.rsplit("-", 1)[0]: json.loads(f.read_text()) for f in files}


def test_quick_cli_writes_json_rows(quick_run):
    out, proc = quick_run
    docs = _docs(out)
    assert set(docs) == ALL_OPS, sorted(docs)
    for op, doc in docs.items():
        assert doc["schema"] == H.SCHEMA
        meta = doc["meta"]
        assert meta["device"]["device_type"] == "cpu" and meta["op"] == op
        roof = meta["roofline"]
        assert roof["copy_gbps"] > 0 and roof["gemm_tflops"] > 0 and roof["gemm_dtype"] in ("bf16", "fp32")
        rows = doc["rows"]
        for r in rows:
            assert REQUIRED <= set(r), REQUIRED - set(r)
            assert r["op"] == op and r["dtype"] == "bf16" and r["device"].startswith("cpu-")
            assert r["torch"] == torch.__version__
            assert r["status"] in STATUSES
            assert r["bytes"] > 0 and r["flops"] > 0
            assert r["loadavg"] is None or len(r["loadavg"]) == 3
            if r["status"] == H.STATUS_OK:
                st = r["stats"]
                assert STATS <= set(st)
                assert st["reps"] >= 5
                assert 0 < st["min_us"] <= st["p10_us"] <= st["median_us"] <= st["p90_us"] <= st["max_us"]
                assert math.isclose(r["gbps"], r["bytes"] / (st["median_us"] * 1e-6) / 1e9, rel_tol=1e-6)
                assert r["tflops"] > 0 and 0 < r["pct_copy_bw"] and 0 < r["pct_roofline"]
                assert r["max_abs_err"] is not None and r["max_rel_err"] <= 1.6e-2
                assert r["speedup_vs_eager"] > 0 and r["baseline"] == "eager"
            else:
                assert r["stats"] is None and r["gbps"] is None and r["speedup_vs_eager"] is None
                assert r["note"]
        eager = [r for r in rows if r["provider"] == "eager"]
        assert eager and all(r["status"] == H.STATUS_OK and r["speedup_vs_eager"] == 1.0 for r in eager)
        assert all(r["max_abs_err"] == 0.0 for r in eager)  # the reference against itself
        zaya = [r for r in rows if r["provider"] == "zaya"]
        assert zaya and all(r["status"] in (H.STATUS_OK, H.STATUS_NA) for r in zaya), zaya
        if op in LAYER_OPS:  # prefill T = 1, 37 and decode B = 2, at the tiny --quick dims
            shapes = {(r["params"]["phase"], r["params"].get("T", r["params"].get("B"))) for r in rows}
            assert shapes == {("prefill", 1), ("prefill", 37), ("decode", 2)}, shapes
        else:
            assert len(rows) == 2 * 2  # 2 shapes x (zaya, eager): the peers belong to other ops
            for r in rows:
                assert r["params"]["H"] == 256 and r["params"]["T"] in (1, 37)
                assert r["shape"] == f"T={r['params']['T']},H=256"
                assert r["bytes"] > r["params"]["T"] * 256 * 2
    # the peers ran on the same inputs and matched the reference
    att = docs["cca_attention"]["rows"]
    assert {r["provider"] for r in att} == {"zaya", "eager", "sdpa"}
    assert all(r["status"] == H.STATUS_OK for r in att if r["provider"] == "sdpa"), att
    moe = docs["moe_top1"]["rows"]
    assert {r["provider"] for r in moe} == {"zaya", "eager", "grouped_mm", "dense-loop"}
    assert all(r["status"] == H.STATUS_OK for r in moe if r["provider"] == "dense-loop")
    assert all(r["status"] in (H.STATUS_OK, H.STATUS_SKIPPED) for r in moe if r["provider"] == "grouped_mm")
    # the terminal table
    assert "median us" in proc.stdout and "GB/s" in proc.stdout and "%copyBW" in proc.stdout
    for op in ALL_OPS:
        assert op in proc.stdout


def test_plot_and_report(quick_run, tmp_path):
    """The plots (matplotlib optional) and the markdown report of the quick run's results."""
    out, _ = quick_run
    from zaya_ops.bench import report

    table = report.latest_table(out)
    assert "| cca_attention |" in table and "| sdpa |" in table and "commit" in table
    proj = report.projection_table("mi300x")
    assert "5.3 TB/s" in proj and "| moe_top1 |" in proj
    pytest.importorskip("matplotlib")
    import shutil

    from zaya_ops.bench import plot

    for f in out.glob("*.json"):
        shutil.copy(f, tmp_path / f.name)
    written = plot.plot_dir(tmp_path)
    names = {p.name for p in written}
    assert {f"{op}-time.png" for op in ALL_OPS} | {"roofline.png"} <= names, names
    assert all(p.stat().st_size > 10_000 for p in written)


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


def test_layer_op_costs_at_zaya1_shapes():
    """Bytes and FLOPs from shapes, against the spec's per-token figures (ZAYA1-8B, bf16)."""
    from zaya_ops.bench import layer_cases as L

    meta = torch.device("meta")
    T = 4096
    q = C.get("cca_qkv").make_case({"phase": "prefill", "T": T, "nq": 8, "nkv": 2, "D": 128}, torch.bfloat16, meta)
    assert q.flops == 2 * T * (8 + 2) * 128 * 128 * 2  # grouped conv, ~0.66 MFLOP per token
    assert math.isclose(q.flops / T, 0.655e6, rel_tol=0.01)
    acts = T * (1024 + 256 + 128 + 128) * 2 + T * 1024 * 2 + 2 * T * 256 * 2
    assert acts < q.bytes < acts + T * 200 + 2_000_000  # plus RoPE rows, positions, slots, 0.66 MB weights
    a = C.get("cca_attention").make_case({"phase": "prefill", "T": T, "nq": 8, "nkv": 2, "D": 128},
                                         torch.bfloat16, meta)
    assert a.flops == 4 * 8 * 128 * (T * (T + 1) // 2)
    d = C.get("cca_attention").make_case({"phase": "decode", "B": 8, "ctx": 1000, "nq": 8, "nkv": 2, "D": 128},
                                         torch.bfloat16, meta)
    assert d.flops == 4 * 8 * 128 * 8 * 1000
    kv = 8 * 1000 * 1024  # 1 KiB of K and V per cached token
    q_out_lse = 8 * (2 * 1024 * 2 + 8 * 4)
    meta_bytes = 9 * 4 + 8 * 4 + 8 * 63 * 4  # cu_seqlens, seqused_k, block table rows (63 blocks of 16)
    assert d.bytes == kv + q_out_lse + meta_bytes
    rt = C.get("router").make_case({"phase": "prefill", "T": T, "H": 2048, "R": 256, "E": 16}, torch.bfloat16, meta)
    assert rt.flops == 2 * T * (2048 * 256 + 2 * 256 * 256 + 256 * 17)  # 1.3 MFLOP per token
    assert math.isclose(rt.flops / T, 1.32e6, rel_tol=0.01)
    m = C.get("moe_top1").make_case({"phase": "decode", "B": 8, "H": 2048, "E": 16, "I": 2048}, torch.bfloat16, meta)
    routed, hit = m.extra["routed"], m.extra["experts_hit"]
    assert 1 <= hit <= routed <= 8
    assert m.flops == 2 * routed * 2048 * 3 * 2048  # 25 MFLOP per routed token
    assert m.bytes >= hit * 3 * 2048 * 2048 * 2  # the weights of the experts hit, 25 MB each
    assert L.projected_cost("moe_top1", {"phase": "decode", "B": 1, "H": 2048, "E": 16, "I": 2048})[0] > 25e6


def test_stateful_case_gives_each_provider_fresh_state():
    """cca_qkv writes its states and the KV cache: every bind starts from the case's pristine copies, and
    the written state is part of the checked output."""
    bench = C.get("cca_qkv")
    case = bench.make_case({"phase": "decode", "B": 2, "ctx": 20, "nq": 4, "nkv": 2, "D": 64}, torch.bfloat16,
                           torch.device("cpu"))
    before = [case.args[i].clone() for i in case.mutates]
    ref = bench.expected(case)
    assert len(ref) == 1 + len(case.mutates)
    for i, b in zip(case.mutates, before):
        assert torch.equal(case.args[i], b)  # the case's own tensors are never written
    fn = case.bind(bench.reference())
    a, r, ok, _ = bench.check("eager", case, fn(), ref)
    assert ok and a == 0.0
    assert not torch.equal(fn()[-1], before[-1])  # the bound copy's v cache was written


def test_router_near_tie_is_not_a_mismatch():
    bench = C.get("router")
    case = bench.make_case({"phase": "prefill", "T": 40, "H": 64, "R": 16, "E": 4}, torch.bfloat16,
                           torch.device("cpu"))
    ref = bench.expected(case)
    idx, w, st, lg, cnt = (t.clone() for t in ref)
    a, r, ok, note = bench.check("x", case, (idx, w, st, lg, cnt), ref)
    assert ok and not note
    # pick each token's second-best class: only a near-tie may differ
    biased = torch.softmax(case.extra["ref_logits"].float(), -1) + case.args[-1]
    top2 = biased.topk(2, dim=-1)
    t = int((top2.values[:, 0] - top2.values[:, 1]).argmin())
    gap = float(top2.values[t, 0] - top2.values[t, 1])
    idx2 = idx.clone()
    idx2[t] = top2.indices[t, 1].to(idx.dtype)
    cnt2 = torch.bincount(idx2.long(), minlength=cnt.numel()).to(cnt.dtype)
    _, _, ok2, note2 = bench.check("x", case, (idx2, w, st, lg, cnt2), ref)
    assert ok2 == (gap <= 1e-2) and "1 of 40 expert choices differ" in note2
    far = int((top2.values[:, 0] - top2.values[:, 1]).argmax())
    idx3 = idx.clone()
    idx3[far] = top2.indices[far, 1].to(idx.dtype)
    cnt3 = torch.bincount(idx3.long(), minlength=cnt.numel()).to(cnt.dtype)
    assert not bench.check("x", case, (idx3, w, st, lg, cnt3), ref)[2]
    assert not bench.check("x", case, (idx, w, st, lg, cnt3), ref)[2]  # counts of other choices


def test_with_hopper_paths_sets_and_restores(monkeypatch):
    """The zaya-wgmma provider's wrapper: the Hopper switch is on during each call only."""
    from zaya_ops._library import hopper_paths
    from zaya_ops.bench.cases import hopper_gpu, with_hopper_paths

    monkeypatch.setattr(hopper_paths, "state", None)
    seen = []
    fn = with_hopper_paths(lambda: seen.append(hopper_paths.state))
    fn()
    assert seen == [True] and hopper_paths.state is None
    hopper_paths.state = False
    fn()
    assert seen == [True, True] and hopper_paths.state is False
    assert not hopper_gpu(torch.device("cpu"))


def test_wgmma_v1_provider_sets_both_switches(monkeypatch):
    """zaya-wgmma-v1 (moe_top1's no-swizzle Hopper kernel): the Hopper and v1 switches are on during each
    call only, so the first Hopper run times the swizzled kernel against it."""
    from zaya_ops._library import hopper_paths, kernels_v1
    from zaya_ops.bench.layer_cases import MoeTop1Bench

    monkeypatch.setattr(hopper_paths, "state", None)
    monkeypatch.setattr(kernels_v1, "state", None)
    seen = []

    class FakeCase:
        def bind(self, fn):
            return lambda: seen.append((hopper_paths.state, kernels_v1.state))

    MoeTop1Bench().make_provider("zaya-wgmma-v1", FakeCase())()
    assert seen == [(True, True)] and hopper_paths.state is None and kernels_v1.state is None


def test_time_fn_slow_first_call_and_cap():
    """A caller's first call slower than the budget is the warm-up (no untimed call is added), and
    max_measure_s caps the reps below min_reps, at one rep at least."""
    calls = []
    cfg = H.TimerConfig(warmup_s=0.0, min_warmup=2, budget_s=0.01, min_reps=5, max_reps=20)
    st = H.time_fn(lambda: calls.append(1), torch.device("cpu"), cfg, first_s=1.0)
    assert st.reps == 5 and len(calls) == 5  # no warm-up call, min_reps kept
    calls.clear()
    st = H.time_fn(lambda: calls.append(1), torch.device("cpu"), cfg, first_s=0.001)
    assert st.reps == 20 and len(calls) == 20 + 2  # a fast first call: the usual warm-up and estimate
    calls.clear()
    cfg.max_measure_s = 2.5
    st = H.time_fn(lambda: calls.append(1), torch.device("cpu"), cfg, first_s=1.0)
    assert st.reps == 2 and len(calls) == 2  # 2.5 s of 1 s calls
    calls.clear()
    cfg.max_measure_s = 0.5
    st = H.time_fn(lambda: calls.append(1), torch.device("cpu"), cfg, first_s=1.0)
    assert st.reps == 1 and len(calls) == 1
