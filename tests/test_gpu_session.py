"""tools/gpu_session.sh, the script of the first GPU call (issue 14, section 6), checked without a GPU.

The first device call is short and costly, so its script must not die on a typo: these tests check its
bash syntax and argument parsing, and run ``first-light --dry-run``, which prints the plan and runs every
step that needs no GPU (the CPU check-ops, the self-check where present, collection of each pytest
selection, memcheck's on the emulator's ids, the benchmark's argument parsing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "gpu_session.sh"


def _run(args, tmp_path, timeout=600, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("ZAYA_GPU_")}
    full.update(PYTHON=sys.executable, OUT=str(tmp_path), **env)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=full, capture_output=True, text=True,
                          timeout=timeout)


def test_bash_syntax():
    out = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("args", [[], ["no-such-stage"], ["--bogus", "first-light"], ["test", "bench"],
                                  ["build", "--dry-run"]])
def test_bad_arguments_are_refused_before_anything_runs(args, tmp_path):
    out = _run(args, tmp_path, timeout=30)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "usage" in out.stderr or "dry-run" in out.stderr
    assert not any(tmp_path.iterdir())  # refused before it made its output folder


def test_bad_capability_stops_the_dry_run(tmp_path):
    out = _run(["first-light", "--dry-run"], tmp_path, timeout=60, ZAYA_GPU_CAPABILITY="nine")
    assert out.returncode != 0
    assert "bad compute capability" in out.stderr


def test_first_light_dry_run(tmp_path):
    out = _run(["first-light"], tmp_path, ZAYA_GPU_DRY_RUN="1")
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "TORCH_CUDA_ARCH_LIST=9.0a" in log  # an H100/H200's capability 9.0 builds sm_90a
    fl = tmp_path / "first-light"
    # What the device tool brings back: at most 8 files, two folders down.
    files = [p for p in fl.rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == ["first-light.tar.gz", "summary.json", "summary.txt"]
    summary = json.loads((fl / "summary.json").read_text())
    assert summary["dry_run"] is True
    status = {r["step"]: r["status"] for r in summary["steps"]}
    for gpu_only in ("build", "tests-compile"):
        assert status[gpu_only] == "planned (GPU only)"
    for cpu_step in ("machine", "check-ops", "selftest", "tests", "memcheck", "bench"):
        assert status[cpu_step] == "ok", (cpu_step, status, log[-4000:])
    assert status["wgmma-tiles"] in ("ok", "absent (no tests/test_wgmma_tiles.py)")
    with tarfile.open(fl / "first-light.tar.gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"plan.txt", "check-ops.log", "memcheck.log", "bench.log"} <= names
    with tarfile.open(fl / "first-light.tar.gz") as tar:
        bench_log = tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith("bench.log"))).read().decode()
    assert "rms_norm_backward" in bench_log and "eager-bwd" in bench_log  # the --backward quick bench ran
    # Every step appears in the printed plan with its GPU command and time box.
    for step in ("build", "check-ops", "selftest", "tests", "memcheck", "bench"):
        assert f"  {step} " in log
    assert "compute-sanitizer --tool memcheck" in log
    assert "memcheck would run" in log
    assert "--backward" in log  # the bench step's plan has the backward benches
