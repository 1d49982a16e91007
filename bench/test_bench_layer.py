"""pytest-benchmark view of the decoder layer's other ops: the same cases and providers as
``python -m zaya_ops.bench --ops cca_qkv,cca_attention,router,moe_top1`` (peers included: torch SDPA,
torch._grouped_mm, the per-expert loop).

    pytest bench/test_bench_layer.py --benchmark-only                       # ZAYA1 shapes, GPU if present
    ZAYA_BENCH_QUICK=1 pytest bench/test_bench_layer.py --benchmark-only    # tiny shapes
    ZAYA_BENCH_DEVICE=cpu ZAYA_BENCH_TOKENS=512 ZAYA_BENCH_BATCH=1,8 ZAYA_BENCH_CONTEXT=512 \
        pytest bench/test_bench_layer.py --benchmark-only

Same rules as test_bench_norms.py: host-clock timing (a synchronize after each call on a GPU), missing
kernels and unavailable peers skipped, a provider whose output differs from the reference fails.
"""

from __future__ import annotations

import os

import pytest
import torch

from zaya_ops.bench import cases as C
from zaya_ops.bench import harness as H

OPS = ("cca_qkv", "cca_attention", "router", "moe_top1")


def _env_list(name: str) -> list[str]:
    return [p.strip() for p in os.environ.get(name, "").split(",") if p.strip()]


DEVICE = torch.device(os.environ.get("ZAYA_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
QUICK = os.environ.get("ZAYA_BENCH_QUICK", "") not in ("", "0")
TOKENS = [int(t) for t in _env_list("ZAYA_BENCH_TOKENS")] or None
BATCH = [int(t) for t in _env_list("ZAYA_BENCH_BATCH")] or None
CONTEXT = int(os.environ["ZAYA_BENCH_CONTEXT"]) if os.environ.get("ZAYA_BENCH_CONTEXT") else None
DTYPES = _env_list("ZAYA_BENCH_DTYPE") or ["bf16"]
PROVIDERS = _env_list("ZAYA_BENCH_PROVIDERS") or None


def _params():
    out = []
    for op in OPS:
        bench = C.get(op)
        provs = PROVIDERS or list(bench.providers_for(DEVICE))
        provs = [p for p in provs if p in bench.known_providers(DEVICE)]
        for shape in bench.shapes(quick=QUICK, tokens=TOKENS, batches=BATCH, context=CONTEXT):
            sid = ",".join(f"{k}={v}" for k, v in shape.items())
            for dt in DTYPES:
                for prov in provs:
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
    max_abs, max_rel, ok, note = bench.check(provider, case, out, bench.expected(case))
    assert ok, f"{provider} output differs from the reference: max abs {max_abs:.3g}, rel {max_rel:.3g} {note}"

    if H.is_gpu(DEVICE):
        def run():
            fn()
            torch.cuda.synchronize(DEVICE)
    else:
        run = fn
    benchmark.group = f"{op} {case.shape} {dtype}"
    benchmark.extra_info.update(op=op, shape=case.shape, dtype=dtype, provider=provider, device=str(DEVICE),
                                bytes=case.bytes, flops=case.flops, max_abs_err=max_abs)
