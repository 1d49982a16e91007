"""Runs cases through their providers and turns the timings into Rows and a terminal table."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import harness as H
from .cases import Case, OpBench, SkipProvider


def _first_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}"[:300]


def loadavg() -> list[float] | None:
    """The 1/5/15-minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def new_row(case_op: str, shape: str, params: dict[str, Any], dtype: str, provider: str, device: torch.device,
            info: dict[str, Any], cfg: H.TimerConfig, stamp: str, nbytes: int, flops: int) -> H.Row:
    """A Row with the run's provenance filled in (device, driver, torch, commit, timer, load)."""
    return H.Row(
        op=case_op, shape=shape, params=dict(params), dtype=dtype, provider=provider,
        status=H.STATUS_OK, device=info["device"], device_name=info["device_name"],
        driver=info.get("driver"), runtime=info.get("runtime"), torch=info["torch"],
        commit=info.get("commit"), timestamp=stamp, timer=H.timer_name(device),
        cache_flushed=cfg.flush_cache, threads=info.get("threads"), bytes=int(nbytes),
        flops=int(flops), loadavg=loadavg(),
    )


def select_providers(bench: OpBench, requested: Sequence[str] | None, device: torch.device,
                     quick: bool = False) -> list[str]:
    """The op's default providers on ``device`` (without ``compile`` in a quick run, whose first compile
    per shape costs seconds to tens of seconds on a small CPU), or the requested ones it knows (in the
    given order)."""
    if not requested:
        return [p for p in bench.providers_for(device) if not (quick and p == "compile")]
    known = set(bench.known_providers(device))
    return [p for p in requested if p in known]


def run_case(bench: OpBench, case: Case, providers: Sequence[str], *, info: dict[str, Any],
             roof: H.Roofline | None, cfg: H.TimerConfig, stamp: str,
             log: Callable[[str], None] = lambda s: None) -> list[H.Row]:
    """Time every provider on ``case``'s inputs; check each output against the eager reference."""
    dev = case.device
    expected = bench.expected(case)
    H.synchronize(dev)
    rows: list[H.Row] = []
    for prov in providers:
        nbytes, flops = bench.cost(prov, case)
        row = new_row(case.op, case.shape, case.params, case.dtype_name, prov, dev, info, cfg, stamp,
                      nbytes, flops)
        row.params.update(bench.row_params(prov))
        label = f"{case.op} {case.shape} {case.dtype_name} {prov}"
        fn = None
        try:
            t0 = time.perf_counter()
            fn = bench.make_provider(prov, case)
            out = fn()  # first call: compiles (torch.compile), or raises for a missing kernel
            H.synchronize(dev)
            first_s = time.perf_counter() - t0
            if first_s > 1.0:
                log(f"  {label}: first call (setup/compile) took {first_s:.1f} s")
        except NotImplementedError as exc:
            row.status, row.note = H.STATUS_NA, _first_line(exc)
        except SkipProvider as exc:
            row.status, row.note = H.STATUS_SKIPPED, str(exc)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not crash
            if prov == "compile":
                row.status, row.note = H.STATUS_SKIPPED, "torch.compile failed: " + _first_line(exc)
            else:
                row.status, row.note = H.STATUS_ERROR, _first_line(exc)
        if row.status != H.STATUS_OK:
            log(f"  {label}: {row.status} ({row.note})")
            rows.append(row)
            continue
        row.note = getattr(fn, "note", "") or ""
        try:
            row.max_abs_err, row.max_rel_err, ok, note = bench.check(prov, case, out, expected)
            if note:
                row.note = f"{row.note}; {note}" if row.note else note
        except Exception as exc:  # noqa: BLE001
            ok, row.note = False, "output check failed: " + _first_line(exc)
        del out
        if not ok:
            row.status = H.STATUS_MISMATCH
            msg = "output differs from the reference beyond tolerance"
            row.note = msg if not row.note else (row.note if "differ" in row.note else f"{msg}; {row.note}")
        try:
            stats = H.time_fn(fn, dev, cfg)
        except Exception as exc:  # noqa: BLE001
            row.status, row.note = H.STATUS_ERROR, "while timing: " + _first_line(exc)
            log(f"  {label}: error ({row.note})")
            rows.append(row)
            continue
        row.stats = dict(vars(stats))
        row.fill_derived(roof)
        extra = f", {row.gbps:,.1f} GB/s" if row.gbps is not None else ""
        log(f"  {label}: median {stats.median_us:,.2f} us over {stats.reps} reps{extra}"
            + ("" if ok else f"  MISMATCH (max rel err {row.max_rel_err:.3g})"))
        rows.append(row)
        del fn
    for base in dict.fromkeys(bench.baseline_for(r.provider) for r in rows):
        set_speedups([r for r in rows if bench.baseline_for(r.provider) == base], base)
    return rows


def set_speedups(rows: Sequence[H.Row], baseline: str) -> None:
    """speedup_vs_eager = baseline median / row median for the ok rows (baseline: "eager", or the
    transformers model for the end-to-end rows)."""
    base = next((r for r in rows if r.provider == baseline and r.status == H.STATUS_OK), None)
    if base is not None:
        for r in rows:
            if r.status == H.STATUS_OK and r.median_us:
                r.speedup_vs_eager = base.median_us / r.median_us
                r.baseline = baseline


def run_op(bench: OpBench, shapes: Sequence[dict[str, Any]], dtypes: Sequence[torch.dtype],
           providers: Sequence[str], device: torch.device, *, info: dict[str, Any],
           roof: H.Roofline | None, cfg: H.TimerConfig, stamp: str, seed: int = 0,
           log: Callable[[str], None] = lambda s: None) -> list[H.Row]:
    rows: list[H.Row] = []
    n = len(shapes) * len(dtypes)
    i = 0
    for dtype in dtypes:
        for params in shapes:
            i += 1
            case = bench.make_case(params, dtype, device, seed=seed)
            log(f"[{bench.name} {i}/{n}] {case.shape} {case.dtype_name}: "
                f"{case.bytes / 1e6:,.3f} MB, {case.flops / 1e6:,.3f} MFLOP per call")
            rows.extend(run_case(bench, case, providers, info=info, roof=roof, cfg=cfg, stamp=stamp,
                                 log=log))
            del case
            gc.collect()
            if H.is_gpu(device):
                torch.cuda.empty_cache()
    return rows


# --------------------------------------------------------------------------------------------------
# Terminal table
# --------------------------------------------------------------------------------------------------


def _fmt_us(v: float | None) -> str:
    if v is None:
        return "-"
    if v < 10:
        return f"{v:.2f}"
    if v < 1000:
        return f"{v:.1f}"
    return f"{v:,.0f}"


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _fmt_tflops(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v >= 0.01 else f"{v:.2e}"


COLUMNS = ("op", "shape", "dtype", "provider", "median us", "p10-p90 us", "GB/s", "%copyBW", "TFLOP/s",
           "%roof", "x eager", "max err", "status")


def table_rows(rows: Sequence[H.Row]) -> list[tuple[str, ...]]:
    out = []
    for r in rows:
        st = r.stats
        if st is None:
            med, spread = r.status, "-"
        else:
            med = _fmt_us(st["median_us"])
            spread = f"{_fmt_us(st['p10_us'])}-{_fmt_us(st['p90_us'])}"
        status = {"ok": "ok", "mismatch": "WRONG"}.get(r.status, r.status)
        out.append((
            r.op, r.shape, r.dtype, r.provider, med, spread, _fmt(r.gbps, ",.1f"), _fmt(r.pct_copy_bw, ".1f"),
            _fmt_tflops(r.tflops), _fmt(r.pct_roofline, ".1f"), _fmt(r.speedup_vs_eager, ".2f"),
            "-" if r.max_abs_err is None else f"{r.max_abs_err:.2g}", status,
        ))
    return out


def format_table(rows: Sequence[H.Row]) -> str:
    body = table_rows(rows)
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(COLUMNS)]
    left = {0, 1, 2, 3, 12}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(COLUMNS), "  ".join("-" * w for w in widths)]
    prev = None
    for r, b in zip(rows, body):
        key = (r.op, r.shape, r.dtype)
        if prev is not None and key != prev:
            out.append("")
        prev = key
        out.append(line(b))
    notes = {}
    for r in rows:
        if r.status != H.STATUS_OK and r.note:
            notes.setdefault((r.provider, r.status, r.note), []).append(f"{r.op} {r.shape}")
    if notes:
        out.append("")
        for (prov, status, note), where in notes.items():
            out.append(f"{prov} {status} ({len(where)} case{'s' if len(where) > 1 else ''}): {note}")
    return "\n".join(out)
