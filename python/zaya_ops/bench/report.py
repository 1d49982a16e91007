"""Markdown tables from results: ``python -m zaya_ops.bench.report bench/results/<device>/`` prints the
rows of each op's newest results file with the file, commit, device and torch they came from
(for bench/README.md's "Latest results"); ``--projection mi300x`` prints roofline bounds of every op
case and of the 8B model's decode at a datasheet's peaks instead (a projection, not a measurement).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .results import latest_rows, load_dir

#: Datasheet peaks (dense bf16, no sparsity). Projections only: a real run measures its own ceilings.
DATASHEETS = {
    "mi300x": {"name": "AMD Instinct MI300X (datasheet)", "hbm_tbps": 5.3, "bf16_tflops": 1307.4},
    "h100-sxm": {"name": "NVIDIA H100 SXM (datasheet)", "hbm_tbps": 3.35, "bf16_tflops": 989.4},
}


def _f(v, spec):
    return "-" if v is None else format(v, spec)


def latest_table(directory: Path, recursive: bool = False, merge: bool = False) -> str:
    sources = load_dir(directory, recursive)
    if not sources:
        return f"(no results in {directory})"
    rows = latest_rows(sources, merge)
    from . import cases as C

    order = {op: i for i, op in enumerate(C.REGISTRY)}
    rows.sort(key=lambda rs: order.get(rs[0]["op"], len(order)))  # stable: shapes/providers keep their order
    # one footnote per run (files written by one command share its start stamp and argv)
    runs: dict[tuple, list] = {}
    for _, s in rows:
        k = (s.stamp, tuple(s.meta.get("argv", [])))
        if s not in runs.setdefault(k, []):
            runs[k].append(s)
    key = {s: f"[{i + 1}]" for i, files in enumerate(runs.values()) for s in files}
    out = []
    model = [(r, s) for r, s in rows if r["op"].startswith("model-")]
    served = [(r, s) for r, s in rows if r["op"].startswith("vllm-")]
    trained = [(r, s) for r, s in rows if r["op"].startswith("train-")]
    ops = [(r, s) for r, s in rows if not r["op"].startswith(("model-", "vllm-", "train-"))]
    if ops:
        out.append("| op | shape | provider | median us | GB/s | TFLOP/s | % roofline | x eager | status | run |")
        out.append("|---|---|---|---:|---:|---:|---:|---:|---|---|")
        for r, s in ops:
            st = r.get("stats") or {}
            out.append(f"| {r['op']} | {r['shape']} | {r['provider']} | {_f(st.get('median_us'), ',.1f')} | "
                       f"{_f(r.get('gbps'), ',.3f')} | {_f(r.get('tflops'), '.2e')} | {_f(r.get('pct_roofline'), '.2f')} | "
                       f"{_f(r.get('speedup_vs_eager'), '.2f')} | {r['status']} | {key[s]} |")
    if model:
        out.append("")
        out.append("| model | shape | provider | mode | median ms | tokens/s | floor tok/s | % floor | x hf-eager | "
                   "status | run |")
        out.append("|---|---|---|---|---:|---:|---:|---:|---:|---|---|")
        for r, s in model:
            st = r.get("stats") or {}
            med = st.get("median_us")
            out.append(f"| {r['op']} | {r['shape']} | {r['provider']} | {r['params'].get('mode', '-')} | "
                       f"{_f(med / 1e3 if med else None, ',.2f')} | {_f(r.get('tokens_per_s'), ',.1f')} | "
                       f"{_f(r.get('floor_tokens_per_s'), ',.0f')} | {_f(r.get('pct_floor'), '.2f')} | "
                       f"{_f(r.get('speedup_vs_eager'), '.2f')} | {r['status']} | {key[s]} |")
    if trained:
        out.append("")
        out.append("| training step | shape | dtype | provider | median ms | tokens/s | x hf | status | run |")
        out.append("|---|---|---|---|---:|---:|---:|---|---|")
        for r, s in trained:
            med = (r.get("stats") or {}).get("median_us")
            out.append(f"| {r['op']} | {r['shape']} | {r['dtype']} | {r['provider']} | "
                       f"{_f(med / 1e3 if med else None, ',.2f')} | {_f(r.get('tokens_per_s'), ',.1f')} | "
                       f"{_f(r.get('speedup_vs_eager'), '.2f')} | {r['status']} | {key[s]} |")
    if served:
        out.append("")
        out.append("| vLLM case | shape | provider | mode | seconds | generated tok/s | x zaya | status | run |")
        out.append("|---|---|---|---|---:|---:|---:|---|---|")
        for r, s in served:
            med = (r.get("stats") or {}).get("median_us")
            out.append(f"| {r['op']} | {r['shape']} | {r['provider']} | {r['params'].get('mode', '-')} | "
                       f"{_f(med / 1e6 if med else None, ',.2f')} | {_f(r.get('tokens_per_s'), ',.1f')} | "
                       f"{_f(r.get('speedup_vs_eager'), '.2f')} | {r['status']} | {key[s]} |")
    out.append("")
    for files in runs.values():
        s = files[0]
        m = s.meta
        d = m.get("device", {})
        roof = m.get("roofline") or {}
        la = m.get("loadavg_start")
        names = ", ".join(f"`{f.path.name}`" for f in files)
        out.append(f"{key[s]} {names}: commit {d.get('commit')}, {d.get('device_name')} "
                   f"({d.get('runtime')}, {d.get('threads', '-')} threads), torch {d.get('torch')}, "
                   f"measured copy {_f(roof.get('copy_gbps'), ',.1f')} GB/s and {roof.get('gemm_dtype', '-')} GEMM "
                   f"{_f(roof.get('gemm_tflops') and roof['gemm_tflops'] * 1e3, ',.1f')} GFLOP/s, load average "
                   f"{la[0] if la else '-'} at start; `python -m zaya_ops.bench {' '.join(m.get('argv', []))}`"
                   + (f"; notes: {m['notes']}" if m.get("notes") else ""))
        out.append("")
    return "\n".join(out)


def projection_table(device: str) -> str:
    """Roofline lower bounds (max(bytes / peak BW, FLOPs / peak rate)) of every op case at ZAYA1 shapes and
    of the 8B model's decode, at a datasheet's peaks."""
    from . import cases as C
    from . import model_bench as M
    from .layer_cases import expected_experts_hit, projected_cost

    ds = DATASHEETS[device]
    bw, peak = ds["hbm_tbps"] * 1e12, ds["bf16_tflops"] * 1e12
    out = [f"Projection for {ds['name']}: {ds['hbm_tbps']} TB/s HBM, {ds['bf16_tflops']} dense bf16 TFLOP/s "
           f"(peaks, not measurements); ZAYA1-8B layer shapes, bf16.", "",
           "| op | shape | bytes | FLOPs | bound | bound us |", "|---|---|---:|---:|---|---:|"]
    for name in ("rms_norm", "residual_scale_rmsnorm", "cca_qkv", "cca_attention", "router", "moe_top1"):
        b = C.get(name)
        for params in b.shapes(quick=False):
            if name in ("rms_norm", "residual_scale_rmsnorm"):
                case = b.make_case(params, torch.bfloat16, torch.device("meta"))
                nb, fl = case.bytes, case.flops
            else:
                nb, fl = projected_cost(name, params)
            tb, tf = nb / bw, fl / peak
            shape = ",".join(f"{k}={v}" for k, v in params.items() if k in ("phase", "T", "B", "ctx"))
            out.append(f"| {name} | {shape} | {nb / 1e6:,.3f} MB | {fl / 1e9:,.3f} G | "
                       f"{'memory' if tb >= tf else 'compute'} | {max(tb, tf) * 1e6:,.2f} |")
    cfg = M.make_config("zaya1-8b")
    costs = M.model_costs(cfg)
    L, E = cfg.num_hidden_layers, cfg.num_experts
    out += ["", "ZAYA1-8B decode (weights + KV of 1024 cached tokens per sequence; experts hit per layer: every "
            "token routed at batch 1, the expectation under uniform routing over 16 experts + skip above):", "",
            "| batch | weight GB/step | bytes GB/step | weight floor tok/s | roofline bound tok/s |",
            "|---:|---:|---:|---:|---:|"]
    for B in (1, 8, 64, 256):
        hit = 1 if B == 1 else expected_experts_hit(B, E)
        routed = B if B == 1 else B * E / (E + 1)
        nb, fl, wb = M.step_cost(costs, new_tokens=B, pairs=B * 1025, kv_read_tokens=B * 1024, logit_rows=B,
                                 routed=[routed] * L, hit=[hit] * L)
        bound = max(nb / bw, fl / peak)
        out.append(f"| {B} | {wb / 1e9:.3f} | {nb / 1e9:.3f} | {B / (wb / bw):,.0f} | {B / bound:,.0f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zaya_ops.bench.report", description=__doc__.splitlines()[0])
    p.add_argument("directory", type=Path, nargs="?", help="a results directory")
    p.add_argument("--recursive", action="store_true", help="also read subdirectories (quick/)")
    p.add_argument("--merge", action="store_true",
                   help="newest row of every (op, shape, dtype, provider) over all files, not each op's newest file")
    p.add_argument("--projection", choices=sorted(DATASHEETS), help="print a datasheet-roofline projection")
    args = p.parse_args(argv)
    if args.projection:
        print(projection_table(args.projection))
        return 0
    if args.directory is None:
        p.error("give a results directory or --projection")
    print(latest_table(args.directory, args.recursive, args.merge))
    return 0


if __name__ == "__main__":
    sys.exit(main())
