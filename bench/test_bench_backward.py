"""pytest-benchmark view of the backward benches: the same cases and providers as
``python -m zaya_ops.bench --backward`` (backward alone: zaya-bwd, eager-bwd; forward plus backward: zaya,
eager, compile), for every op; the zaya providers of an op that is not differentiable yet are skipped (n/a).

    pytest bench/test_bench_backward.py --benchmark-only                     # default shapes, GPU if present
    ZAYA_BENCH_QUICK=1 ZAYA_BENCH_DEVICE=cpu pytest bench/test_bench_backward.py --benchmark-only
    ZAYA_BENCH_TOKENS=512 ZAYA_BENCH_PROVIDERS=zaya,eager pytest bench/test_bench_backward.py --benchmark-only

Same rules as test_bench_norms.py (host-clock timing, a synchronize after each call on a GPU).
"""

from __future__ import annotations

import pytest

from _bench_common import DEVICE, DTYPES, QUICK, TOKENS, case_id, env_list, run_case
from zaya_ops.bench import backward_cases as BW

PROVIDERS = env_list("ZAYA_BENCH_PROVIDERS") or None


def _params():
    out = []
    for name, bench in BW.BACKWARD.items():
        provs = [p for p in (PROVIDERS or bench.providers_for(DEVICE)) if p in bench.known_providers(DEVICE)]
        for shape in bench.shapes(quick=QUICK, tokens=TOKENS):
            out += [pytest.param(name, shape, dt, prov, id=case_id(name, shape, dt, prov))
                    for dt in DTYPES for prov in provs]
    return out


@pytest.mark.parametrize(("op", "shape", "dtype", "provider"), _params())
def test_bench(benchmark, op, shape, dtype, provider):
    run_case(benchmark, op, shape, dtype, provider)
