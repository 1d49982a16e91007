"""Plots of a results directory: ``python -m zaya_ops.bench.plot bench/results/<device>/``.

Writes PNGs into that directory:

* ``<op>-time.png``: median time per call against tokens in the call (prefill / norms: T; decode: B)
  for every provider, one panel per phase (log-log);
* ``model-<preset>.png``: end-to-end prefill and decode tokens/s per provider, with the decode
  weight-bandwidth floor;
* ``roofline.png``: achieved TFLOP/s and GB/s of every ok row against its arithmetic intensity
  (FLOPs / byte), under the ceilings measured at the start of the newest run.

Each figure uses the rows of the newest file of each op in the directory (``--merge``: the newest row of
every (op, shape, dtype, provider) over all its files; ``--recursive`` also reads ``quick/``). matplotlib is only needed here (``pip install matplotlib``); the
harness itself never imports it.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from .results import Source, latest_rows, load_dir, phase_of, tokens_of

_MARKERS = "os^Dv<>pPX*h"


def _mpl():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("plotting needs matplotlib: pip install matplotlib (the benchmarks themselves do not)") \
            from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style(providers: list[str]) -> dict[str, dict[str, Any]]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    order = ["zaya", "zaya-wgmma", "zaya-wgmma-v1", "zaya-raw", "eager", "compile", "sdpa", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn",
             "sdpa-math", "grouped_mm", "dense-loop", "hf-eager", "hf-sdpa", "zaya-nograph", "zaya-reference"]
    provs = sorted(set(providers), key=lambda p: (order.index(p) if p in order else len(order), p))
    return {p: {"color": cmap(i % 10), "marker": _MARKERS[i % len(_MARKERS)]} for i, p in enumerate(provs)}


def _xticks(ax, xs) -> None:
    """Ticks at the measured x values, as plain numbers (a log axis spanning a few values otherwise
    shows labels like 2x10^0)."""
    from matplotlib.ticker import FixedLocator, NullLocator

    xs = sorted({x for x in xs if x})
    if xs:
        ax.xaxis.set_major_locator(FixedLocator(xs))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{x:g}" for x in xs])
        if len(xs) == 1:
            ax.set_xlim(xs[0] / 2, xs[0] * 2)


def _footer(fig, sources: set[Source]) -> None:
    srcs = sorted(sources, key=lambda s: s.stamp)
    dev = srcs[-1].meta.get("device", {}) if srcs else {}
    commits = sorted({str(s.meta.get("device", {}).get("commit", "?"))[:12] for s in srcs})
    txt = (f"{dev.get('device_name', '?')} | torch {dev.get('torch', '?')} | commit {', '.join(commits)} | "
           f"files: {', '.join(s.path.name for s in srcs)[:180]}")
    fig.text(0.01, 0.005, txt, fontsize=6, color="0.35", ha="left", va="bottom")


def _save(fig, sources: set[Source], path: Path) -> Path:
    """Footer with the sources, layout, PNG at `path`, figure closed."""
    _footer(fig, sources)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    _mpl().close(fig)
    return path


def plot_op_times(op: str, rows: list[tuple[dict, Source]], out_dir: Path) -> Path:
    plt = _mpl()
    phases = sorted({phase_of(r) for r, _ in rows}, key=lambda p: p != "prefill")
    style = _style([r["provider"] for r, _ in rows])
    fig, axes = plt.subplots(1, len(phases), figsize=(6.2 * len(phases), 4.6), squeeze=False)
    used = set()
    for ax, phase in zip(axes[0], phases):
        by_prov: dict[str, list[tuple[int, float, float, float, str]]] = defaultdict(list)
        extra = ""
        for r, src in rows:
            if phase_of(r) != phase or r.get("stats") is None or r["status"] not in ("ok", "mismatch"):
                continue
            st = r["stats"]
            by_prov[r["provider"]].append((tokens_of(r), st["median_us"], st["p10_us"], st["p90_us"], r["status"]))
            used.add(src)
            if phase == "decode" and "ctx" in r["params"]:
                extra = f", ctx={r['params']['ctx']}"
        for prov, pts in sorted(by_prov.items(), key=lambda kv: list(style).index(kv[0])):
            pts.sort()
            x = [p[0] for p in pts]
            y = [p[1] for p in pts]
            lo = [p[1] - p[2] for p in pts]
            hi = [p[3] - p[1] for p in pts]
            label = prov + (" (WRONG output)" if any(p[4] == "mismatch" for p in pts) else "")
            ax.errorbar(x, y, yerr=[lo, hi], label=label, capsize=2, lw=1.4, ms=5, **style[prov])
        ax.set_xscale("log")
        ax.set_yscale("log")
        _xticks(ax, [p[0] for pts in by_prov.values() for p in pts])
        xlabel = "tokens T" if phase == "prefill" else "batch B (one new token per sequence)"
        ax.set_xlabel(xlabel)
        ax.set_ylabel("median time per call (us), p10-p90 bars")
        dims = ""
        if rows:
            p = rows[0][0]["params"]
            dims = ", ".join(f"{k}={v}" for k, v in p.items() if k not in ("phase", "T", "B", "ctx"))
        has_phase = any("phase" in r["params"] for r, _ in rows)
        ax.set_title(f"{op}{' ' + phase if has_phase else ''}{extra}\n{dims}, {rows[0][0].get('dtype', '')}",
                     fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if by_prov:
            ax.legend(fontsize=8)
    return _save(fig, used, out_dir / f"{op}-time.png")


def plot_model(op: str, rows: list[tuple[dict, Source]], out_dir: Path) -> Path:
    plt = _mpl()
    style = _style([r["provider"] for r, _ in rows])
    fig, axes = plt.subplots(1, 2, figsize=(12.4, 4.6), squeeze=False)
    used = set()
    for ax, phase in zip(axes[0], ("prefill", "decode")):
        by_prov: dict[str, list[tuple[int, float, str]]] = defaultdict(list)
        floor: dict[int, float] = {}
        ctx = ""
        for r, src in rows:
            if phase_of(r) != phase or not r.get("tokens_per_s"):
                continue
            by_prov[r["provider"]].append((tokens_of(r), r["tokens_per_s"], r["params"].get("mode", "")))
            used.add(src)
            if r.get("floor_tokens_per_s"):
                floor[tokens_of(r)] = r["floor_tokens_per_s"]
            if "ctx" in r["params"]:
                ctx = f" after {r['params']['ctx']} tokens"
        for prov, pts in sorted(by_prov.items(), key=lambda kv: list(style).index(kv[0])):
            pts.sort()
            modes = sorted({p[2] for p in pts if p[2]})
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=f"{prov} ({'/'.join(modes)})", lw=1.4, ms=5,
                    **style[prov])
        if floor:
            xs = sorted(floor)
            ax.plot(xs, [floor[x] for x in xs], "k--", lw=1, label="weight-bandwidth floor (measured copy BW)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _xticks(ax, [p[0] for pts in by_prov.values() for p in pts])
        ax.set_xlabel("prompt tokens T" if phase == "prefill" else "batch B")
        ax.set_ylabel("tokens / s")
        ax.set_title(f"{op} {phase}{ctx}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if by_prov:
            ax.legend(fontsize=8)
    return _save(fig, used, out_dir / f"{op}.png")


def plot_roofline(rows: list[tuple[dict, Source]], out_dir: Path) -> Path | None:
    plt = _mpl()
    import matplotlib

    pts = [(r, s) for r, s in rows if r.get("status") == "ok" and r.get("tflops") and r.get("bytes") and r.get("flops")]
    if not pts:
        return None
    # every distinct measured ceiling of the runs plotted (each row's % of roofline uses its own run's)
    roofs: list[tuple[dict, Source]] = []
    for src in sorted({s for _, s in pts if s.roofline}, key=lambda s: s.stamp):
        r = src.roofline
        if not any(abs(r["copy_gbps"] - o["copy_gbps"]) < 0.05 * o["copy_gbps"]
                   and abs(r["gemm_tflops"] - o["gemm_tflops"]) < 0.05 * o["gemm_tflops"] for o, _ in roofs):
            roofs.append((r, src))
    ops = sorted({r["op"] for r, _ in pts})
    cmap = matplotlib.colormaps["tab10"]
    op_color = {op: cmap(i % 10) for i, op in enumerate(ops)}
    style = _style([r["provider"] for r, _ in pts])
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.2))
    ai = [r["flops"] / r["bytes"] for r, _ in pts]
    lo, hi = min(ai) / 2, max(ai) * 2
    roof_handles = []
    import numpy as np

    xs = np.logspace(np.log10(lo), np.log10(hi), 200)
    for ax, what in zip(axes, ("tflops", "gbps")):
        for (r, _), x in zip(pts, ai):
            y = r["tflops"] if what == "tflops" else r["gbps"]
            ax.scatter(x, y, color=op_color[r["op"]], marker=style[r["provider"]]["marker"], s=30, alpha=0.85,
                       edgecolors="none")
        for i, (roof, src) in enumerate(roofs):
            bw, peak = roof["copy_gbps"], roof["gemm_tflops"]
            ys = np.minimum(peak, xs * bw / 1e3) if what == "tflops" else np.minimum(bw, peak * 1e3 / xs)
            (line,) = ax.plot(xs, ys, color="black", ls=("-", "--", ":", "-.")[i % 4], lw=1.1,
                              label=f"roof of {src.path.name}: copy {bw:,.1f} GB/s, {roof['gemm_dtype']} GEMM "
                                    f"{peak * 1e3:,.1f} GFLOP/s")
            if what == "tflops":
                roof_handles.append(line)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (FLOPs / byte of the call's minimum traffic)")
        ax.set_ylabel("achieved TFLOP/s" if what == "tflops" else "achieved GB/s")
        ax.grid(True, which="both", alpha=0.3)
    from matplotlib.lines import Line2D

    h_ops = [Line2D([], [], color=op_color[o], marker="o", ls="", label=o) for o in ops]
    h_prov = [Line2D([], [], color="0.3", marker=style[p]["marker"], ls="", label=p) for p in style]
    fig.legend(handles=h_ops + h_prov, loc="lower center", ncol=min(8, len(h_ops) + len(h_prov)), fontsize=7,
               bbox_to_anchor=(0.5, 0.075), title="colour: op, marker: provider", title_fontsize=7)
    if roof_handles:
        fig.legend(handles=roof_handles, loc="lower center", ncol=1, fontsize=7, bbox_to_anchor=(0.5, 0.02))
    dev = pts[0][1].meta.get("device", {})
    fig.suptitle(f"Roofline, {dev.get('device_name', '')}: every ok row under the ceilings measured at the start "
                 f"of its run", fontsize=10)
    _footer(fig, {s for _, s in pts})
    fig.tight_layout(rect=(0, 0.2 + 0.02 * max(0, len(roofs) - 1), 1, 0.95))
    path = out_dir / "roofline.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_dir(directory: str | Path, recursive: bool = False, merge: bool = False) -> list[Path]:
    d = Path(directory)
    sources = load_dir(d, recursive)
    if not sources:
        raise SystemExit(f"no zaya_ops.bench JSON files in {d}")
    rows = latest_rows(sources, merge)
    by_op: dict[str, list] = defaultdict(list)
    for r, s in rows:
        by_op[r["op"]].append((r, s))
    written = []
    for op, rs in by_op.items():
        if op.startswith("model-"):
            written.append(plot_model(op, rs, d))
        elif op.startswith("vllm-"):
            continue  # one run per provider: report.py's table says it all
        else:
            written.append(plot_op_times(op, rs, d))
    roof = plot_roofline(rows, d)
    if roof:
        written.append(roof)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zaya_ops.bench.plot", description=__doc__.splitlines()[0])
    p.add_argument("directory", type=Path, help="a results directory, e.g. bench/results/cpu-amd-epyc")
    p.add_argument("--recursive", action="store_true", help="also read subdirectories (quick/)")
    p.add_argument("--merge", action="store_true",
                   help="newest row of every (op, shape, dtype, provider) over all files, not just each op's "
                        "newest file")
    args = p.parse_args(argv)
    for path in plot_dir(args.directory, args.recursive, args.merge):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
