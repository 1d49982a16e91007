"""Benchmark harness for zaya_ops: ``python -m zaya_ops.bench --help`` (see bench/README.md).

* ``harness``     - timer (device events on CUDA/ROCm, perf_counter on CPU), roofline probe, device
  description, the ``Row`` dataclass and the JSON writer;
* ``cases``       - the ``OpBench`` base, the registry and the norm cases;
* ``layer_cases`` - cca_qkv, cca_attention, router, moe_top1 (prefill and decode) and their peers (torch
  SDPA, ``torch._grouped_mm``, a per-expert loop);
* ``runner``      - runs cases through providers, checks outputs, formats the table;
* ``model_bench`` - the end-to-end model (``--model``) against transformers' on the same weights;
* ``results``, ``plot``, ``report`` - read results back, draw PNGs (matplotlib, optional), print markdown
  tables and datasheet projections.
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
