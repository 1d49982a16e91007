"""Command line: ``python -m zaya_ops.bench [--ops ...] [--device cpu|cuda] [--quick] ...``.

Measures the device's copy bandwidth and GEMM rate, times every (op, shape, dtype, provider) on the same
inputs, prints a table and writes one JSON file of rows per op. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from . import cases as C
from . import harness as H
from .runner import format_table, run_op


def _csv(s: str) -> list[str]:
    return [p.strip() for p in s.split(",") if p.strip()]


def _ints(s: str) -> list[int]:
    try:
        vals = [int(p) for p in _csv(s)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {s!r}")
    return vals


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zaya_ops.bench",
        description="Benchmark zaya_ops kernels against the eager and torch.compile'd references.",
    )
    p.add_argument("--ops", type=_csv, default=None,
                   help=f"comma-separated ops (default: all of {','.join(C.REGISTRY)})")
    p.add_argument("--device", default=None,
                   help="cpu or cuda (cuda also means ROCm GPUs); default cuda if available, else cpu")
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes and few reps (a CI smoke run, well under a minute on a CPU)")
    p.add_argument("--tokens", type=_ints, default=None, help="token counts T, e.g. 1,64,4096")
    p.add_argument("--hidden", type=int, default=None, help="hidden size H (default 2048; --quick 256)")
    p.add_argument("--dtype", type=_csv, default=["bf16"], help="bf16, fp16, fp32 (comma-separated)")
    p.add_argument("--providers", type=_csv, default=list(C.DEFAULT_PROVIDERS),
                   help="comma-separated: zaya, eager, compile (and zaya-raw: the op without the "
                        "wrapper's argument checks)")
    p.add_argument("--out", type=Path, default=None,
                   help="directory for the JSON files (default bench/results/<device>/, "
                        "--quick: bench/results/<device>/quick/)")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of measured reps per (case, provider) (default 1.0; --quick 0.05)")
    p.add_argument("--flush-cache", choices=("auto", "on", "off"), default="auto",
                   help="overwrite a buffer larger than the last-level cache before each rep "
                        "(auto: on for GPUs, off for CPUs)")
    p.add_argument("--no-roofline", action="store_true", help="skip the copy/GEMM probe (no %% columns)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list", action="store_true", help="list the ops and exit")
    return p


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for name, b in C.REGISTRY.items():
            print(f"{name}: providers {','.join(b.providers)}")
        return 0

    ops = args.ops or list(C.REGISTRY)
    unknown = [o for o in ops if o not in C.REGISTRY]
    if unknown:
        log(f"error: unknown op(s) {', '.join(unknown)}; known: {', '.join(C.REGISTRY)}")
        return 2
    bad = [d for d in args.dtype if d not in C.DTYPES]
    if bad:
        log(f"error: unknown dtype(s) {', '.join(bad)}; use {', '.join(C.DTYPES)}")
        return 2
    dtypes = [C.DTYPES[d] for d in args.dtype]

    dev_name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(dev_name)
    if device.type not in ("cpu", "cuda"):
        log(f"error: --device must be cpu or cuda (ROCm GPUs are 'cuda' in torch), got {dev_name}")
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        log("error: --device cuda but torch sees no GPU (torch.cuda.is_available() is False)")
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    stamp = H.utc_stamp()
    load0 = _loadavg()
    info = H.describe_device(device)
    log(f"device: {info['device_name']} ({info['device']}), {info.get('runtime')}, driver {info.get('driver')}, "
        f"torch {info['torch']}, commit {info.get('commit')}"
        + (f", {info['threads']} threads" if "threads" in info else ""))

    roof = None if args.no_roofline else H.measure_roofline(device, quick=args.quick, log=log)
    cfg = H.TimerConfig.for_run(device, args.quick, args.budget, args.flush_cache)
    log(f"timer: {H.timer_name(device)}, budget {cfg.budget_s} s per measurement, reps in "
        f"[{cfg.min_reps}, {cfg.max_reps}], cache flush {'on' if cfg.flush_cache else 'off'}")

    out_dir = args.out or (H.default_results_dir(info["device"]) / ("quick" if args.quick else ""))
    meta = {
        "started": stamp,
        "argv": sys.argv[1:] if argv is None else list(argv),
        "quick": args.quick,
        "loadavg_start": load0,
        "device": info,
        "roofline": None if roof is None else vars(roof),
        "timer": vars(cfg) | {"kind": H.timer_name(device)},
    }
    la, ncpu = meta["loadavg_start"], os.cpu_count() or 1
    busy = la is not None and la[0] > 0.5 * ncpu
    log(f"load average at start: {la} ({ncpu} CPUs)"
        + (": other processes are busy, expect noisy timings" if busy else ""))
    all_rows = []
    written = []
    for op in ops:
        bench = C.get(op)
        shapes = bench.shapes(quick=args.quick, tokens=args.tokens, hidden=args.hidden)
        rows = run_op(bench, shapes, dtypes, args.providers, device, info=info, roof=roof, cfg=cfg,
                      stamp=stamp, seed=args.seed, log=log)
        all_rows.extend(rows)
        if not args.no_write:
            path = H.write_json(Path(out_dir) / f"{op}-{stamp}.json", rows,
                                meta | {"op": op, "loadavg_end": _loadavg()})
            written.append(path)

    print()
    print(f"{info['device_name']} | {info.get('runtime')} | driver {info.get('driver')} | torch {info['torch']} "
          f"| commit {info.get('commit')}")
    if roof is not None:
        print(f"measured ceilings: copy {roof.copy_gbps:,.1f} GB/s, {roof.gemm_dtype} GEMM "
              f"{roof.gemm_tflops:.4g} TFLOP/s" + (f" ({roof.note})" if roof.note else ""))
    print(f"timer: {H.timer_name(device)}; times are per call; GB/s = bytes moved / median; "
          f"%copyBW = GB/s / measured copy GB/s")
    print()
    print(format_table(all_rows))
    for p in written:
        print(f"wrote {p}")
    log(f"done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
