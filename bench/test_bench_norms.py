"""pytest-benchmark view of the norm benchmarks: the same cases and providers as
``python -m zaya_ops.bench --ops rms_norm,residual_scale_rmsnorm``.

    pytest bench/ --benchmark-only                                  # default shapes, GPU if present
    ZAYA_BENCH_QUICK=1 pytest bench/ --benchmark-only               # tiny shapes
    ZAYA_BENCH_DEVICE=cpu ZAYA_BENCH_TOKENS=1,4096 ZAYA_BENCH_HIDDEN=2048 ZAYA_BENCH_DTYPE=bf16 \
        pytest bench/test_bench_norms.py --benchmark-only --benchmark-json=out.json

Not collected by the default ``pytest`` run (testpaths = ["tests"]). pytest-benchmark times with the
host clock, so on a GPU each call is followed by a synchronize: figures include launch and sync overhead.
The CLI (device events, roofline columns, JSON rows with device/driver/commit) is the reference
measurement; this module is for pytest-benchmark's comparison and history tooling.
A provider with no kernel here (NotImplementedError) or a torch.compile that cannot run is skipped; a
provider whose output differs from the reference fails before it is timed.
"""

from __future__ import annotations

import os

import pytest
import torch

from zaya_ops.bench import cases as C
from zaya_ops.bench import harness as H

OPS = ("rms_norm", "residual_scale_rmsnorm")


def _env_list(name: str) -> list[str]:
    return [p.strip() for p in os.environ.get(name, "").split(",") if p.strip()]


DEVICE = torch.device(os.environ.get("ZAYA_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
QUICK = os.environ.get("ZAYA_BENCH_QUICK", "") not in ("", "0")
TOKENS = [int(t) for t in _env_list("ZAYA_BENCH_TOKENS")] or None
HIDDEN = int(os.environ["ZAYA_BENCH_HIDDEN"]) if os.environ.get("ZAYA_BENCH_HIDDEN") else None
DTYPES = _env_list("ZAYA_BENCH_DTYPE") or ["bf16"]
PROVIDERS = _env_list("ZAYA_BENCH_PROVIDERS") or list(C.DEFAULT_PROVIDERS)


def _params():
    out = []
    for op in OPS:
        for shape in C.get(op).shapes(quick=QUICK, tokens=TOKENS, hidden=HIDDEN):
            sid = ",".join(f"{k}={v}" for k, v in shape.items())
            for dt in DTYPES:
                for prov in PROVIDERS:
                    out.append(pytest.param(op, shape, dt, prov, id=f"{op}-{sid}-{dt}-{prov}"))
    return out


@pytest.mark.parametrize(("op", "shape", "dtype", "provider"), _params())
def test_bench(benchmark, op, shape, dtype, provider):
    bench = C.get(op)
    case = bench.make_case(shape, C.DTYPES[dtype], DEVICE)
    try:
        fn = bench.make_provider(provider, case)
        out = fn()  # compiles (torch.compile) outside the timed region
        H.synchronize(DEVICE)
    except NotImplementedError as exc:
        pytest.skip(f"n/a: {str(exc).splitlines()[0]}")
    except C.SkipProvider as exc:
        pytest.skip(str(exc))
    except Exception as exc:  # noqa: BLE001
        if provider == "compile":
            pytest.skip(f"torch.compile failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        raise
    max_abs, max_rel, ok = C.compare(out, bench.expected(case), case.dtype)
    assert ok, f"{provider} output differs from the reference: max abs {max_abs:.3g}, rel {max_rel:.3g}"

    if H.is_gpu(DEVICE):
        def run():
            fn()
            torch.cuda.synchronize(DEVICE)
    else:
        run = fn
    benchmark.group = f"{op} {case.shape} {dtype}"
    benchmark.extra_info.update(op=op, shape=case.shape, dtype=dtype, provider=provider, device=str(DEVICE),
                                bytes=case.bytes, flops=case.flops, max_abs_err=max_abs)
    benchmark(run)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        med = stats.stats.median
        benchmark.extra_info["gbps"] = case.bytes / med / 1e9
        benchmark.extra_info["tflops"] = case.flops / med / 1e12
