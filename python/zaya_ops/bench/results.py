"""Reading benchmark JSON back: the latest row of every (op, shape, dtype, provider) in a results
directory, with the file, commit, device and torch it came from. Shared by ``plot`` and ``report``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import SCHEMA


@dataclass(eq=False)  # hashed by identity (sets of sources)
class Source:
    """One results file: its path, meta (device, measured ceilings, argv, load) and rows."""

    path: Path
    meta: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def stamp(self) -> str:
        return self.meta.get("started", "")

    @property
    def roofline(self) -> dict[str, Any] | None:
        return self.meta.get("roofline")


def load_dir(directory: str | Path, recursive: bool = False) -> list[Source]:
    """Every ``zaya_ops.bench`` JSON file in ``directory`` (``quick/`` runs only with ``recursive``),
    oldest first."""
    d = Path(directory)
    files = sorted(d.rglob("*.json") if recursive else d.glob("*.json"))
    out = []
    for f in files:
        try:
            doc = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            continue
        out.append(Source(f, doc.get("meta", {}), doc.get("rows", [])))
    out.sort(key=lambda s: (s.stamp, s.path.name))
    return out


def latest_rows(sources: list[Source], merge: bool = False) -> list[tuple[dict[str, Any], Source]]:
    """The rows of the newest file of each op (``merge``: the newest row of each (op, shape, dtype,
    provider) over all files), with their sources, in first-seen order."""
    if not merge:
        newest: dict[str, Source] = {}
        for src in sources:  # oldest first
            for op in {r.get("op") for r in src.rows}:
                newest[op] = src
        sources = [s for s in sources if s in newest.values()]
    best: dict[tuple, tuple[dict[str, Any], Source]] = {}
    for src in sources:  # oldest first: later files overwrite
        for r in src.rows:
            key = (r.get("op"), r.get("shape"), r.get("dtype"), r.get("provider"))
            best[key] = (r, src)
    return list(best.values())


def tokens_of(row: dict[str, Any]) -> int | None:
    """New tokens of a row's call: T (prefill and norms) or B (decode)."""
    p = row.get("params", {})
    if p.get("phase") == "decode":
        return p.get("B")
    return p.get("T")


def phase_of(row: dict[str, Any]) -> str:
    return row.get("params", {}).get("phase", "prefill")
