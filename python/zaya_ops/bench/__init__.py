"""Benchmark harness for zaya_ops: ``python -m zaya_ops.bench --help`` (see bench/README.md).

* ``harness`` - timer (device events on CUDA/ROCm, perf_counter on CPU), roofline probe, device
  description, the ``Row`` dataclass and the JSON writer;
* ``cases``   - per-op ``OpBench`` classes: inputs, bytes and FLOPs of a call, providers;
* ``runner``  - runs cases through providers, checks outputs, formats the table.
"""

from __future__ import annotations

from .cases import REGISTRY, Case, OpBench, register
from .harness import Roofline, Row, Stats, TimerConfig, describe_device, measure_roofline, time_fn

__all__ = [
    "REGISTRY",
    "Case",
    "OpBench",
    "Roofline",
    "Row",
    "Stats",
    "TimerConfig",
    "describe_device",
    "measure_roofline",
    "register",
    "time_fn",
]
