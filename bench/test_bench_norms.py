"""pytest-benchmark view of the norm benchmarks: the same cases and providers as
``python -m zaya_ops.bench --ops rms_norm,residual_scale_rmsnorm``; their backward benches (``--backward``) are in
bench/test_bench_backward.py.

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

from _bench_common import DTYPES, QUICK, TOKENS, case_id, env_list, run_case
from zaya_ops.bench import cases as C

OPS = ("rms_norm", "residual_scale_rmsnorm")
HIDDEN = int(os.environ["ZAYA_BENCH_HIDDEN"]) if os.environ.get("ZAYA_BENCH_HIDDEN") else None
PROVIDERS = env_list("ZAYA_BENCH_PROVIDERS") or list(C.DEFAULT_PROVIDERS)


def _params():
    return [pytest.param(op, shape, dt, prov, id=case_id(op, shape, dt, prov))
            for op in OPS
            for shape in C.get(op).shapes(quick=QUICK, tokens=TOKENS, hidden=HIDDEN)
            for dt in DTYPES for prov in PROVIDERS]


@pytest.mark.parametrize(("op", "shape", "dtype", "provider"), _params())
def test_bench(benchmark, op, shape, dtype, provider):
    run_case(benchmark, op, shape, dtype, provider)
