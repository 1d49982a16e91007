"""What the pytest-benchmark modules share: the ZAYA_BENCH_* settings and one timed, checked case.

A provider with no kernel here (NotImplementedError), an unavailable peer or a torch.compile that cannot
run is skipped; a provider whose output differs from the reference fails before it is timed.
pytest-benchmark times with the host clock, so on a GPU each call is followed by a synchronize.
"""

from __future__ import annotations

import os

import pytest
import torch

from zaya_ops.bench import backward_cases as BW
from zaya_ops.bench import cases as C
from zaya_ops.bench import harness as H


def env_list(name: str) -> list[str]:
    return [p.strip() for p in os.environ.get(name, "").split(",") if p.strip()]


DEVICE = torch.device(os.environ.get("ZAYA_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
QUICK = os.environ.get("ZAYA_BENCH_QUICK", "") not in ("", "0")
TOKENS = [int(t) for t in env_list("ZAYA_BENCH_TOKENS")] or None
DTYPES = env_list("ZAYA_BENCH_DTYPE") or ["bf16"]


def case_id(op: str, shape: dict, dtype: str, provider: str) -> str:
    return f"{op}-{','.join(f'{k}={v}' for k, v in shape.items())}-{dtype}-{provider}"


def run_case(benchmark, op: str, shape: dict, dtype: str, provider: str) -> None:
    """Build the case, check the provider's output against the reference, then time it."""
    bench = C.REGISTRY[op] if op in C.REGISTRY else BW.resolve(op)
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
    max_abs, max_rel, ok, note = bench.check(provider, case, out, bench.expected(case))
    assert ok, f"{provider} output differs from the reference: max abs {max_abs:.3g}, rel {max_rel:.3g} {note}"

    if H.is_gpu(DEVICE):
        def run():
            fn()
            torch.cuda.synchronize(DEVICE)
    else:
        run = fn
    benchmark.group = f"{op} {case.shape} {dtype}"
    nbytes, flops = bench.cost(provider, case)
    benchmark.extra_info.update(op=op, shape=case.shape, dtype=dtype, provider=provider, device=str(DEVICE),
                                bytes=nbytes, flops=flops, max_abs_err=max_abs)
    benchmark(run)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        med = stats.stats.median
        benchmark.extra_info["gbps"] = nbytes / med / 1e9
        benchmark.extra_info["tflops"] = flops / med / 1e12
