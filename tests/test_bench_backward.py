"""The backward benches (``python -m zaya_ops.bench --backward``) and the training-step bench (``--train``):
the CLI writes sane JSON rows for every op, differentiable or not, the checks catch a wrong gradient and
report an op without a backward as n/a, and the cost formulas hold at ZAYA1 shapes. CPU, tiny shapes, no
timing asserts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from zaya_ops.bench import backward_cases as BW
from zaya_ops.bench import cases as C
from zaya_ops.bench import harness as H
from zaya_ops.bench.__main__ import select_benches
from zaya_ops.bench.runner import format_table, run_case

from test_bench_cli import REQUIRED, STATS, _env  # noqa: E402  (the same row contract)

BWD_OPS = {f"{op}_backward" for op in ("rms_norm", "residual_scale_rmsnorm", "cca_qkv_functional",
                                       "cca_attention", "router", "moe_top1")}


def _differentiable(bench: BW.BackwardBench) -> bool:
    import zaya_ops.ops as ops
    from zaya_ops import _autograd

    return bench.op in _autograd.DIFFERENTIABLE and hasattr(ops, bench.op)


@pytest.fixture(scope="module")
def backward_run(tmp_path_factory):
    """One `--backward --quick` CLI run of every op (norms T = 9, H = 256; layer ops prefill T = 9)."""
    out = tmp_path_factory.mktemp("bench-bwd")
    cmd = [sys.executable, "-m", "zaya_ops.bench", "--backward", "--quick", "--device", "cpu", "--out", str(out),
           "--tokens", "9", "--budget", "0.01"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def test_backward_cli_rows(backward_run):
    out, proc = backward_run
    docs = {f.name.rsplit("-", 1)[0]: json.loads(f.read_text()) for f in sorted(out.glob("*.json"))}
    assert set(docs) == BWD_OPS, sorted(docs)
    from zaya_ops import _autograd

    for name, doc in docs.items():
        bench = BW.BACKWARD[name]
        assert doc["meta"]["differentiable"] == list(_autograd.DIFFERENTIABLE)
        assert set(doc["meta"]["backward_backends"]) >= set(_autograd.DIFFERENTIABLE)
        rows = {r["provider"]: r for r in doc["rows"]}
        assert set(rows) == {"zaya-bwd", "eager-bwd", "zaya", "eager"}  # --quick: no compile
        for prov, r in rows.items():
            assert REQUIRED <= set(r) and r["op"] == name and r["device"].startswith("cpu-")
            assert r["params"]["pass"] == ("bwd" if prov.endswith("-bwd") else "fwd+bwd")
            assert r["params"]["fn"] == bench.op
            assert r["bytes"] > 0 and r["flops"] > 0
        # backward alone costs less than forward plus backward
        assert rows["eager-bwd"]["bytes"] < rows["eager"]["bytes"]
        assert rows["eager-bwd"]["flops"] < rows["eager"]["flops"]
        for base in ("eager", "eager-bwd"):
            r = rows[base]
            assert r["status"] == H.STATUS_OK and r["speedup_vs_eager"] == 1.0 and r["baseline"] == base
            assert r["max_abs_err"] == 0.0 and STATS <= set(r["stats"]) and r["pct_roofline"] > 0
        for prov in ("zaya", "zaya-bwd"):
            r = rows[prov]
            if _differentiable(bench):
                assert r["status"] == H.STATUS_OK, r
                assert r["baseline"] == ("eager-bwd" if prov == "zaya-bwd" else "eager")
                assert r["max_rel_err"] <= 1.6e-2
            else:  # listed as such, not skipped
                assert r["status"] == H.STATUS_NA and "not differentiable yet" in r["note"], r
                assert r["stats"] is None and r["speedup_vs_eager"] is None
    assert "zaya-bwd" in proc.stdout and "%roof" in proc.stdout
    from zaya_ops.bench import report

    assert "| rms_norm_backward | T=9,H=256 | eager-bwd |" in report.latest_table(out)
    for name in BWD_OPS:
        assert name in proc.stdout
    for name, b in BW.BACKWARD.items():
        if not _differentiable(b):
            assert f"{b.op} is not differentiable yet" in proc.stderr


def test_select_benches_and_aliases():
    fwd, unknown = select_benches(["rms_norm", "moe_top1_backward", "rms_norm_fwd_bwd", "nope"], backward=False)
    assert [b.name for b in fwd] == ["rms_norm", "moe_top1_backward", "rms_norm_backward"] and unknown == ["nope"]
    bwd, unknown = select_benches(None, backward=True)
    assert [b.name for b in bwd] == list(BW.BACKWARD) and not unknown
    assert select_benches(["cca_qkv"], backward=True)[0][0].name == "cca_qkv_functional_backward"


def test_unknown_op_and_list(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "zaya_ops.bench", "--backward", "--ops", "nope", "--no-write"],
                         capture_output=True, text=True, env=_env(), timeout=120)
    assert bad.returncode == 2 and "unknown op" in bad.stderr
    ls = subprocess.run([sys.executable, "-m", "zaya_ops.bench", "--list"], capture_output=True, text=True,
                        env=_env(), timeout=120)
    assert ls.returncode == 0 and "zaya_ops._autograd.DIFFERENTIABLE" in ls.stdout
    assert "rms_norm_backward" in ls.stdout and "--train" in ls.stdout


def _run(bench, case, providers):
    cfg = H.TimerConfig(warmup_s=0.0, min_warmup=1, budget_s=0.01, min_reps=3, max_reps=20)
    roof = H.Roofline(copy_gbps=10.0, copy_bytes=0, gemm_tflops=0.1, gemm_dtype="fp32", gemm_n=0)
    return {r.provider: r for r in run_case(bench, case, providers, info=H.describe_device(case.device), roof=roof,
                                            cfg=cfg, stamp=H.utc_stamp())}


class _Scaled(torch.autograd.Function):
    """rms_norm whose backward is off by a factor (a wrong kernel), or raises torch's message for an op
    without a derivative."""

    @staticmethod
    def forward(ctx, x, w, eps, mode):
        from zaya_ops import reference

        ctx.save_for_backward(x, w)
        ctx.eps, ctx.mode = eps, mode
        return reference.rms_norm(x, w, eps)

    @staticmethod
    def backward(ctx, gy):
        if ctx.mode == "missing":
            raise RuntimeError("derivative for zaya::fake is not implemented")
        from zaya_ops import reference

        x, w = (t.detach().requires_grad_() for t in ctx.saved_tensors)
        with torch.enable_grad():
            gx, gw = torch.autograd.grad(reference.rms_norm(x, w, ctx.eps), (x, w), gy)
        return gx * 1.5, gw, None, None


class _FakeBackward(BW.BackwardBench):
    def __init__(self, mode):
        base = BW.BACKWARD["rms_norm_backward"]
        super().__init__(base.forward, base.spec)
        self.mode = mode

    def _zaya_fn(self):
        return lambda x, w, eps: _Scaled.apply(x, w, eps, self.mode)


def test_wrong_gradient_is_a_mismatch_and_missing_backward_is_na():
    wrong = _FakeBackward("wrong")
    case = wrong.make_case({"T": 5, "H": 64}, torch.float32, torch.device("cpu"))
    rows = _run(wrong, case, ["eager-bwd", "zaya-bwd", "eager", "zaya"])
    for prov in ("zaya-bwd", "zaya"):
        assert rows[prov].status == H.STATUS_MISMATCH and rows[prov].speedup_vs_eager is None, rows[prov]
    assert rows["eager"].status == H.STATUS_OK and rows["eager-bwd"].baseline == "eager-bwd"
    missing = _FakeBackward("missing")
    rows = _run(missing, case, ["eager", "zaya", "zaya-bwd"])
    for prov in ("zaya", "zaya-bwd"):
        assert rows[prov].status == H.STATUS_NA and "not differentiable yet" in rows[prov].note
    assert "n/a" in format_table(list(rows.values()))


def test_compile_providers():
    """torch.compile of the reference, forward plus backward and backward alone: ok within tolerance, or
    skipped with a note where this machine cannot compile."""
    bench = BW.BACKWARD["rms_norm_backward"]
    case = bench.make_case({"T": 7, "H": 64}, torch.float32, torch.device("cpu"))
    rows = _run(bench, case, ["eager-bwd", "eager", "compile", "compile-bwd"])
    for prov in ("compile", "compile-bwd"):
        r = rows[prov]
        assert r.status in (H.STATUS_OK, H.STATUS_SKIPPED), r
        if r.status == H.STATUS_OK:
            assert r.max_rel_err <= C.tolerance(torch.float32) and r.baseline == bench.baseline_for(prov)


def test_backward_costs_at_zaya1_shapes():
    """The backward's FLOPs against the forward's (2x for the matrix ops, 2.5x for attention) and the
    gradient bytes, from shapes on the meta device (nothing allocated)."""
    meta = torch.device("meta")
    T = 4096
    shapes = {
        "rms_norm_backward": {"T": T, "H": 2048},
        "cca_qkv_functional_backward": {"phase": "prefill", "T": T, "nq": 8, "nkv": 2, "D": 128},
        "cca_attention_backward": {"phase": "prefill", "T": T, "nq": 8, "nkv": 2, "D": 128},
        "router_backward": {"phase": "prefill", "T": T, "H": 2048, "R": 256, "E": 16},
        "moe_top1_backward": {"phase": "prefill", "T": T, "H": 2048, "E": 16, "I": 2048},
    }
    ratio = {"cca_qkv_functional_backward": 2.0, "cca_attention_backward": 2.5, "router_backward": 2.0,
             "moe_top1_backward": 2.0}
    for name, params in shapes.items():
        b = BW.BACKWARD[name]
        case = b.make_case(params, torch.bfloat16, meta)
        (fb, ff), (bb, bf) = case.extra["fwd_cost"], case.extra["bwd_cost"]
        assert case.bytes == fb + bb and case.flops == ff + bf
        assert b.cost("zaya-bwd", case) == (bb, bf) and b.cost("zaya", case) == (case.bytes, case.flops)
        if name in ratio:
            assert bf == ratio[name] * ff, name
    rn = BW.BACKWARD["rms_norm_backward"].make_case(shapes["rms_norm_backward"], torch.bfloat16, meta)
    assert rn.extra["bwd_cost"] == (3 * T * 2048 * 2 + 2 * 2048 * 2, 11 * T * 2048)
    moe = BW.BACKWARD["moe_top1_backward"].make_case(shapes["moe_top1_backward"], torch.bfloat16, meta)
    assert moe.extra["bwd_cost"][0] > 16 * 3 * 2048 * 2048 * 2  # the two weight gradients are written whole
    # training rows are prefill only
    assert all(s["phase"] == "prefill" for s in BW.BACKWARD["cca_attention_backward"].shapes(quick=True))


def test_train_cli(tmp_path):
    """One --train --quick run (tiny model, B = 2, T = 24): transformers' step timed, the patched model's
    (and zaya_ops.nn's, where present) timed or n/a with torch's reason, tokens/s and the ratio in the rows."""
    cmd = [sys.executable, "-m", "zaya_ops.bench", "--train", "--quick", "--device", "cpu", "--out", str(tmp_path),
           "--budget", "0.01", "--no-roofline"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = list(tmp_path.glob("train-tiny-*.json"))
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    rows = {r["provider"]: r for r in doc["rows"]}
    assert set(rows) == {"hf", "hf-zaya", "zaya-nn"}
    hf = rows["hf"]
    assert hf["status"] == H.STATUS_OK and hf["speedup_vs_eager"] == 1.0 and hf["baseline"] == "hf"
    assert hf["tokens"] == 48 and hf["tokens_per_s"] > 0 and hf["flops"] > 0 and "loss" in hf["note"]
    assert hf["params"]["optimizer"] == "AdamW" and hf["params"]["B"] == 2 and hf["params"]["T"] == 24
    z = rows["hf-zaya"]
    if z["status"] == H.STATUS_OK:
        assert z["tokens_per_s"] > 0 and z["speedup_vs_eager"] > 0 and z["max_rel_err"] is not None
        assert "grads max rel err" in z["note"]
    else:
        assert z["status"] == H.STATUS_NA and "not differentiable yet" in z["note"], z
    own = rows["zaya-nn"]  # zaya_ops' own trainable model, where this build has zaya_ops.nn
    try:
        import zaya_ops.nn  # noqa: F401
        assert own["status"] in (H.STATUS_OK, H.STATUS_NA), own
    except ImportError:
        assert own["status"] == H.STATUS_SKIPPED and "zaya_ops.nn is not in this build" in own["note"]
    assert "tok/s" in proc.stdout and "x hf" in proc.stdout
    from zaya_ops.bench import report

    table = report.latest_table(tmp_path)
    assert "| training step |" in table and "| train-tiny | B=2,T=24 | bf16 | hf |" in table
