"""pytest configuration of the benchmark folder (``pytest bench/ --benchmark-only``).

Lets the source tree's ``python/`` be imported without an install (like ``PYTHONPATH=python``), when
zaya_ops is not importable otherwise.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("zaya_ops") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
