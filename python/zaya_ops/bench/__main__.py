"""Command line: ``python -m zaya_ops.bench [--ops ...] [--device cpu|cuda] [--quick] ...``,
``python -m zaya_ops.bench --model [--preset zaya1-8b|tiny] ...``, ``python -m zaya_ops.bench --vllm ...``
(ZAYA1 in vLLM through the zaya_ops plugin against zaya_ops' own generate; needs vLLM),
``python -m zaya_ops.bench --backward [--ops ...]`` (each op's backward, and forward plus backward, against
eager autograd of the reference and torch.compile) and ``python -m zaya_ops.bench --train [--preset ...]``
(a training step: forward, backward and AdamW of transformers' model, unpatched and patched by zaya_ops).

Measures the device's copy bandwidth and GEMM rate, times every (op, shape, dtype, provider) on the same
inputs (or the end-to-end model against transformers'), prints a table and writes one JSON file of rows
per op (``model-<preset>-<stamp>.json`` for the model). See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from . import backward_cases as BW
from . import cases as C
from . import harness as H
from .runner import format_table, loadavg, run_op, select_providers


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
                   help=f"comma-separated ops (default: all of {','.join(C.REGISTRY)}); <op>_backward (or the "
                        "older <op>_fwd_bwd) names an op's backward bench")
    p.add_argument("--backward", action="store_true",
                   help="the backward benches of --ops (default all): backward alone (zaya-bwd, eager-bwd) and "
                        "forward plus backward (zaya, eager, compile) of every op zaya_ops lists as "
                        "differentiable; the others get eager/compile rows and zaya rows n/a (prefill shapes)")
    p.add_argument("--train", action="store_true",
                   help="a training step (forward, backward, AdamW) of transformers' ZayaForCausalLM, unpatched "
                        "(hf) and patched by zaya_ops (hf-zaya): --preset tiny or zaya1-8b-layer (one ZAYA1-8B "
                        "layer, small vocabulary), --tokens T per sequence, --batch sequences")
    p.add_argument("--device", default=None,
                   help="cpu or cuda (cuda also means ROCm GPUs); default cuda if available, else cpu")
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes and few reps, no torch.compile unless --providers names it (a CI smoke "
                        "run, well under a minute on a CPU)")
    p.add_argument("--tokens", type=_ints, default=None,
                   help="token counts T: the norms' T, the other ops' and the model's prefill lengths")
    p.add_argument("--batch", type=_ints, default=None,
                   help="decode batch sizes B (sequences x 1 new token) of cca_qkv, cca_attention, router, "
                        "moe_top1 and the model")
    p.add_argument("--context", type=int, default=None,
                   help="tokens already cached per sequence in decode rows (ops default 4096, --quick 40; "
                        "model: see --model)")
    p.add_argument("--phases", type=_csv, default=None, help="prefill,decode (default both)")
    p.add_argument("--hidden", type=int, default=None,
                   help="hidden size H of the norms, router and experts (default 2048; --quick 256)")
    p.add_argument("--dtype", type=_csv, default=["bf16"], help="bf16, fp16, fp32 (comma-separated)")
    p.add_argument("--providers", type=_csv, default=None,
                   help="comma-separated (default: each op's own list): zaya, eager, compile, zaya-raw (the "
                        "norms without the wrapper's checks), zaya-wgmma (the opt-in Hopper kernels of moe_top1 and "
                        "cca_attention, on an H100/H200), zaya-wgmma-v1 (moe_top1's first Hopper version: no-swizzle TMA), v1 (the version-1 mma.sync kernels of cca_attention, cca_qkv, router "
                        "and moe_top1: scalar fragment loads, no ldmatrix; NVIDIA GPUs), sdpa / sdpa-flash / sdpa-efficient / sdpa-cudnn / "
                        "sdpa-math (attention), grouped_mm, dense-loop (experts); each op runs those it knows. "
                        "--model: zaya, hf-eager (default), hf-sdpa, zaya-nograph, zaya-reference; --backward: "
                        "zaya-bwd, eager-bwd, zaya, eager, compile (default), compile-bwd; --train: hf, hf-zaya "
                        "(default), hf-sdpa")
    p.add_argument("--model", action="store_true",
                   help="end-to-end model: prefill tokens/s at --tokens, decode tokens/s at --batch after "
                        "--context tokens, ours against transformers' ZayaForCausalLM on the same weights")
    p.add_argument("--vllm", action="store_true",
                   help="offline throughput of ZAYA1 in vLLM through the zaya_ops plugin against zaya_ops' own "
                        "generate, same model and prompts, one run each (--batch prompts of about --tokens tokens, "
                        "--steps new tokens; providers zaya, vllm (compiled), vllm-eager). Needs vLLM 0.32 (the "
                        "environment tools/vllm_ci.sh builds)")
    p.add_argument("--preset", default=None,
                   help="--model: zaya1-8b (the real shapes, ~17 GB bf16: a GPU with memory), zaya1-8b-2l (its shapes, "
                        "2 layers: ~1.9 GB) or tiny (default on CPUs and with --quick; zaya1-8b on GPUs); --train: tiny "
                        "or zaya1-8b-layer (default: both)")
    p.add_argument("--steps", type=int, default=None,
                   help="--model: decode steps per measurement at most (warm-up included); --vllm: new tokens "
                        "per prompt")
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
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads on CPU (default torch's; 1 for --model on a CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-reps", type=int, default=None,
                   help="fewest measured reps per (case, provider) (default 10, --quick 5; warm-up calls at least "
                        "max(1, N // 2)): for slow baselines on a CPU, e.g. transformers' bf16 model at ZAYA1-8B widths")
    p.add_argument("--max-measure-s", type=float, default=None,
                   help="cap each measurement's timed reps at about this many seconds (at least one rep, below "
                        "--min-reps if need be): transformers' bf16 prefill at ZAYA1-8B widths takes minutes per call "
                        "on a CPU; the rows' stats.reps say how many ran")
    p.add_argument("--notes", default=None,
                   help="free text kept in the JSON's meta.notes and the report's footnote (e.g. 'loaded: a shared "
                        "machine')")
    p.add_argument("--list", action="store_true", help="list the ops and exit")
    p.add_argument("--static", action="store_true",
                   help="no timing: a static report per GPU kernel (registers, spills, shared memory/LDS, "
                        "occupancy, inner-loop instruction mix; CUDA from cuobjdump of the built library, HIP from "
                        "tools/check_hip.sh) and a bytes/FLOPs model against H100 and MI300X peaks, written to "
                        "bench/results/static/ (see zaya_ops.bench.static)")
    p.add_argument("--so", type=Path, default=None,
                   help="--static: the library to read (default: zaya_ops' own _C*.so)")
    p.add_argument("--no-hip", action="store_true", help="--static: skip the HIP part (tools/check_hip.sh)")
    p.add_argument("--hip-rows", type=Path, default=None,
                   help="--static: take the HIP rows from this JSON (zaya_ops.bench.static.run_hip's output, saved by an "
                        "earlier run of the same tree) instead of running tools/check_hip.sh again")
    p.add_argument("--label", default=None, help="--static: a label for the report (its file name and header)")
    return p


_loadavg = loadavg


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.static:
        from . import static as S

        return S.main(args.so, args.out, hip=not args.no_hip, write=not args.no_write, log=log, hip_rows=args.hip_rows,
                      label=args.label)
    if args.list:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        for name, b in C.REGISTRY.items():
            print(f"{name}: providers {','.join(b.providers_for(dev))} (on {dev.type})")
        diff = BW.differentiable_ops()
        for name, b in BW.BACKWARD.items():
            state = "differentiable" if b.differentiable() else "not differentiable yet (zaya rows n/a)"
            print(f"{name} (--backward; of {b.op}): providers {','.join(b.providers_for(dev))}; {state}")
        print(f"zaya_ops._autograd.DIFFERENTIABLE: {', '.join(diff) or '(none)'}")
        from . import train_bench as TB

        print(f"--train (presets {','.join(TB.PRESETS)}): providers {','.join(TB.ALL_PROVIDERS)} "
              f"(default {','.join(TB.DEFAULT_PROVIDERS)})")
        from . import model_bench as M

        print(f"--model (presets {','.join(M.PRESETS)}): providers {','.join(M.ALL_PROVIDERS)} "
              f"(default {','.join(M.DEFAULT_PROVIDERS)})")
        return 0

    benches, unknown = select_benches(args.ops, args.backward)
    if unknown and not (args.model or args.vllm or args.train):
        log(f"error: unknown op(s) {', '.join(unknown)}; known: {', '.join(C.REGISTRY)}, "
            f"{', '.join(BW.BACKWARD)}")
        return 2
    bad_phases = [p for p in (args.phases or []) if p not in ("prefill", "decode")]
    if bad_phases:
        log(f"error: unknown phase(s) {', '.join(bad_phases)}; use prefill, decode")
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
    threads = args.threads
    if threads is None and (args.model or args.vllm or args.train) and device.type == "cpu":
        threads = 1  # as `python -m zaya_ops`: the small model's matrices gain nothing from more, and on a
        # busy machine every OpenMP barrier of a many-op step stalls on the other processes
    if threads:
        torch.set_num_threads(threads)

    started = time.perf_counter()
    stamp = H.utc_stamp()
    load0 = _loadavg()
    info = H.describe_device(device)
    log(f"device: {info['device_name']} ({info['device']}), {info.get('runtime')}, driver {info.get('driver')}, "
        f"torch {info['torch']}, commit {info.get('commit')}"
        + (f", {info['threads']} threads" if "threads" in info else ""))

    roof = None if args.no_roofline else H.measure_roofline(device, quick=args.quick, log=log)
    cfg = H.TimerConfig.for_run(device, args.quick, args.budget, args.flush_cache)
    if args.min_reps is not None:
        if args.min_reps < 1:
            log(f"error: --min-reps must be >= 1, got {args.min_reps}")
            return 2
        cfg.min_reps = args.min_reps
        cfg.min_warmup = min(cfg.min_warmup, max(1, args.min_reps // 2))
    if args.max_measure_s is not None:
        if args.max_measure_s <= 0:
            log(f"error: --max-measure-s must be > 0, got {args.max_measure_s}")
            return 2
        cfg.max_measure_s = args.max_measure_s
    log(f"timer: {H.timer_name(device)}, budget {cfg.budget_s} s per measurement, reps in "
        f"[{cfg.min_reps}, {cfg.max_reps}], cache flush {'on' if cfg.flush_cache else 'off'}")

    out_dir = args.out or (H.default_results_dir(info["device"]) / ("quick" if args.quick else ""))
    meta = {
        "started": stamp,
        "argv": sys.argv[1:] if argv is None else list(argv),
        "quick": args.quick,
        "notes": args.notes,
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
    if any(isinstance(b, BW.BackwardBench) for b in benches) and not (args.model or args.vllm or args.train):
        from .. import _autograd

        meta["differentiable"] = list(BW.differentiable_ops())
        meta["backward_backends"] = _autograd.backward_backends(device)
        log("differentiable (zaya_ops._autograd.DIFFERENTIABLE): " + (", ".join(meta["differentiable"]) or "none"))
        for b in benches:
            if isinstance(b, BW.BackwardBench) and not b.differentiable():
                log(f"{b.name}: {b.op} is not differentiable yet: its zaya rows are n/a, eager/compile still run")
    if args.train:
        from . import train_bench as TB

        presets = [args.preset] if args.preset else list(TB.default_presets(device, args.quick))
        bad = [p for p in presets if p not in TB.PRESETS]
        if bad:
            log(f"error: unknown --train preset(s) {', '.join(bad)}; known: {', '.join(TB.PRESETS)}")
            return 2
        providers = args.providers or list(TB.DEFAULT_PROVIDERS)
        bad = [p for p in providers if p not in TB.ALL_PROVIDERS]
        if bad:
            log(f"error: unknown --train provider(s) {', '.join(bad)}; known: {', '.join(TB.ALL_PROVIDERS)}")
            return 2
        rows = []
        for preset in presets:
            toks, batches = TB.QUICK if args.quick else TB.DEFAULTS[preset]
            prow = TB.run_train(preset, providers, device, dtypes[0], tokens=args.tokens or toks,
                                batches=args.batch or batches, info=info, roof=roof, cfg=cfg, stamp=stamp,
                                seed=args.seed, log=log)
            rows.extend(prow)
            if not args.no_write:
                written.append(H.write_json(Path(out_dir) / f"train-{preset}-{stamp}.json", prow,
                                            meta | {"op": f"train-{preset}", "loadavg_end": _loadavg()}))
        print()
        _print_header(info, roof, device)
        print(TB.format_table(rows))
        for p in written:
            print(f"wrote {p}")
        log(f"done in {time.perf_counter() - started:.1f} s")
        return 0
    if args.vllm or args.model:
        from . import model_bench as M
        from . import vllm_bench as VB

        kind, mod = ("vllm", VB) if args.vllm else ("model", M)
        preset = args.preset or ("zaya1-8b" if H.is_gpu(device) and not args.quick else "tiny")
        if preset not in M.PRESETS:
            log(f"error: unknown preset {preset!r}; known: {', '.join(M.PRESETS)}")
            return 2
        providers = args.providers or list(mod.DEFAULT_PROVIDERS)
        bad = [p for p in providers if p not in mod.ALL_PROVIDERS]
        if bad:
            log(f"error: unknown --{kind} provider(s) {', '.join(bad)}; known: {', '.join(mod.ALL_PROVIDERS)}")
            return 2
        if args.vllm:
            n, mean_len, new = VB.QUICK if args.quick else VB.DEFAULTS[preset]
            rows = VB.run_vllm(preset, providers, device, dtypes[0], prompts_n=(args.batch or [n])[0],
                               mean_len=(args.tokens or [mean_len])[0], new=args.steps or new, info=info, cfg=cfg,
                               stamp=stamp, seed=args.seed, log=log)
        else:
            toks, batches, ctx, steps = M.QUICK if args.quick else M.DEFAULTS[preset]
            phases = args.phases or ("prefill", "decode")
            toks = args.tokens or toks
            batches = args.batch or batches
            rows = M.run_model(preset, providers, device, dtypes[0],
                               prefill_tokens=toks if "prefill" in phases else (),
                               batches=batches if "decode" in phases else (),
                               context=args.context or ctx, steps=args.steps or steps, info=info, roof=roof,
                               cfg=cfg, stamp=stamp, seed=args.seed, log=log)
        if not args.no_write:
            written.append(H.write_json(Path(out_dir) / f"{kind}-{preset}-{stamp}.json", rows,
                                        meta | {"op": f"{kind}-{preset}", "loadavg_end": _loadavg()}))
        print()
        _print_header(info, roof, device)
        print(mod.format_table(rows))
        for p in written:
            print(f"wrote {p}")
        log(f"done in {time.perf_counter() - started:.1f} s")
        # a vLLM provider that failed is an error of this run (model rows record theirs in the JSON)
        return 1 if args.vllm and any(r.status != H.STATUS_OK for r in rows) else 0
    for bench in benches:
        op = bench.name
        shapes = bench.shapes(quick=args.quick, tokens=args.tokens, hidden=args.hidden, batches=args.batch,
                              context=args.context, phases=args.phases)
        providers = select_providers(bench, args.providers, device, quick=args.quick)
        if not providers:
            log(f"{op}: none of the providers {','.join(args.providers)} applies, skipped")
            continue
        if not shapes:
            log(f"{op}: no shapes (--phases {','.join(args.phases or [])}: backward benches run prefill only)")
            continue
        rows = run_op(bench, shapes, dtypes, providers, device, info=info, roof=roof, cfg=cfg,
                      stamp=stamp, seed=args.seed, log=log)
        all_rows.extend(rows)
        if not args.no_write:
            path = H.write_json(Path(out_dir) / f"{op}-{stamp}.json", rows,
                                meta | {"op": op, "loadavg_end": _loadavg()})
            written.append(path)

    print()
    _print_header(info, roof, device)
    print(format_table(all_rows))
    for p in written:
        print(f"wrote {p}")
    log(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def select_benches(names: list[str] | None, backward: bool) -> tuple[list[C.OpBench], list[str]]:
    """The benches ``--ops`` names (default: every forward op), each op's backward bench instead with
    ``--backward``; ``<op>_backward`` and ``<op>_fwd_bwd`` name a backward bench in either mode. Returns
    (benches in order without repeats, unknown names)."""
    names = names or list(C.REGISTRY)
    out: list[C.OpBench] = []
    unknown: list[str] = []
    for n in names:
        try:
            if backward or n not in C.REGISTRY:
                b = BW.resolve(n)
            else:
                b = C.REGISTRY[n]
        except KeyError:
            unknown.append(n)
            continue
        if b not in out:
            out.append(b)
    return out, unknown


def _print_header(info, roof, device) -> None:
    print(f"{info['device_name']} | {info.get('runtime')} | driver {info.get('driver')} | torch {info['torch']} "
          f"| commit {info.get('commit')}")
    if roof is not None:
        print(f"measured ceilings: copy {roof.copy_gbps:,.1f} GB/s, {roof.gemm_dtype} GEMM "
              f"{roof.gemm_tflops:.4g} TFLOP/s" + (f" ({roof.note})" if roof.note else ""))
    print(f"timer: {H.timer_name(device)}; times are per call; GB/s = bytes moved / median; "
          f"%copyBW = GB/s / measured copy GB/s; %roof = roofline bound / median; x eager: against eager "
          f"(*-bwd rows: against eager-bwd)")
    print()


if __name__ == "__main__":
    sys.exit(main())
