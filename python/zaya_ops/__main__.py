"""Main job: ``python -m zaya_ops [--device cpu|cuda] [--dtype bf16|fp16|fp32]``.

Prints the build, then runs every op on a small seeded input with the compiled kernel and with the
pure-PyTorch reference, printing the largest difference and the time per call. Ops whose kernel is
not written yet for the device are listed as such.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

import zaya_ops
from zaya_ops import ops, reference, samples

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_call(fn, device, min_seconds=0.2, max_reps=1000) -> float:
    """Median seconds per call of ``fn`` (after one warm-up)."""
    fn()
    _sync(device)
    times = []
    total = 0.0
    while total < min_seconds and len(times) < max_reps:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        dt = time.perf_counter() - t0
        times.append(dt)
        total += dt
    times.sort()
    return times[len(times) // 2]


def _flatten(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _max_err(a, b) -> float:
    """Largest absolute difference over all floating outputs; index outputs must match exactly."""
    err = 0.0
    for x, y in zip(_flatten(a), _flatten(b)):
        if x.dtype.is_floating_point:
            if x.numel():
                err = max(err, (x.float() - y.float()).abs().max().item())
        elif not torch.equal(x.cpu(), y.cpu()):
            return float("inf")
    return err


def run_ops(device: torch.device, dtype: torch.dtype) -> list[dict]:
    """Run each op against the reference on the samples; returns one dict per op."""
    rows = []
    for name, build in samples.SAMPLES.items():
        kwargs = build(dtype=dtype, device=device)
        ref_fn, op_fn = getattr(reference, name), getattr(ops, name)
        ref_out = ref_fn(**samples.clone_args(kwargs))
        row = {"op": name}
        try:
            out = op_fn(**samples.clone_args(kwargs))
        except NotImplementedError as exc:
            row.update(status="not implemented", detail=str(exc).splitlines()[0])
        else:
            fresh = samples.clone_args(kwargs)
            row.update(
                status="ok",
                max_abs_err=_max_err(out, ref_out),
                kernel_us=_time_call(lambda: op_fn(**fresh), device) * 1e6,
                reference_us=_time_call(lambda: ref_fn(**fresh), device) * 1e6,
            )
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zaya_ops", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = p.parse_args(argv)
    device = torch.device(args.device)

    info = zaya_ops.build_info()
    print(f"zaya_ops {zaya_ops.__version__}: backends {', '.join(info['backends'])}; "
          f"CUDA archs {info['cuda_archs'] or '-'}; HIP archs {info['hip_archs'] or '-'}; "
          f"built against torch {info['torch_version']}, running torch {info['torch_runtime']}")
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'host CPU'}), "
          f"{torch.get_num_threads()} CPU threads, dtype {args.dtype}\n")

    rows = run_ops(device, DTYPES[args.dtype])
    print(f"{'op':<24}{'status':<18}{'max |err|':>12}{'kernel us':>12}{'reference us':>14}{'speedup':>9}")
    for r in rows:
        if r["status"] == "ok":
            print(f"{r['op']:<24}{'ok':<18}{r['max_abs_err']:>12.3g}{r['kernel_us']:>12.1f}"
                  f"{r['reference_us']:>14.1f}{r['reference_us'] / r['kernel_us']:>8.2f}x")
        else:
            print(f"{r['op']:<24}{r['status']:<18}  ({device.type} kernel not written yet)")
    if args.json:
        print(json.dumps(rows, indent=1))
    bad = [r["op"] for r in rows if r["status"] == "ok" and not r["max_abs_err"] < float("inf")]
    if bad:
        print(f"\nFAILED: index outputs differ from the reference for {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
