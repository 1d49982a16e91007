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

from _bench_common import DEVICE, DTYPES, QUICK, TOKENS, case_id, env_list, run_case
from zaya_ops.bench import cases as C

OPS = ("cca_qkv", "cca_attention", "router", "moe_top1")
BATCH = [int(t) for t in env_list("ZAYA_BENCH_BATCH")] or None
CONTEXT = int(os.environ["ZAYA_BENCH_CONTEXT"]) if os.environ.get("ZAYA_BENCH_CONTEXT") else None
PROVIDERS = env_list("ZAYA_BENCH_PROVIDERS") or None


def _params():
    out = []
    for op in OPS:
        bench = C.get(op)
        provs = [p for p in (PROVIDERS or bench.providers_for(DEVICE)) if p in bench.known_providers(DEVICE)]
        for shape in bench.shapes(quick=QUICK, tokens=TOKENS, batches=BATCH, context=CONTEXT):
            out += [pytest.param(op, shape, dt, prov, id=case_id(op, shape, dt, prov))
                    for dt in DTYPES for prov in provs]
    return out


@pytest.mark.parametrize(("op", "shape", "dtype", "provider"), _params())
def test_bench(benchmark, op, shape, dtype, provider):
    run_case(benchmark, op, shape, dtype, provider)
