"""CPU timings of zaya::router and zaya::moe_top1 against their reference compositions.

    PYTHONPATH=python python tools/bench_router_moe_cpu.py [--op router|moe|all] [--reps 3]
        [--threads N] [--tokens 4096] [--hidden 2048] [--inter 2048] [--router-hidden 256] [--experts 16]

Kernel and reference calls alternate and the best of --reps is kept for each, so load from other
processes on a shared machine hits both about equally. Prints ms per call and the speedup.
"""

from __future__ import annotations

import argparse
import time

import torch

from zaya_ops import ops, reference, samples


def best_of(fn, reps: int) -> float:
    return min(_timed(fn) for _ in range(reps))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def compare(name: str, kernel, ref, reps: int) -> None:
    kernel(), ref()  # warm-up
    tk, tr = [], []
    for _ in range(reps):
        tk.append(_timed(kernel))
        tr.append(_timed(ref))
    k, r = min(tk), min(tr)
    print(f"{name}: kernel {k * 1e3:9.1f} ms   reference {r * 1e3:9.1f} ms   speedup {r / k:5.2f}x", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--op", choices=("router", "moe", "all"), default="all")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--inter", type=int, default=2048)
    p.add_argument("--router-hidden", type=int, default=256)
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16")
    if a.op in ("router", "all"):
        for first in (True, False):
            kw = samples.router_args(T=a.tokens, H=a.hidden, R=a.router_hidden, E=a.experts, first_layer=first)
            kw["return_logits"] = False
            compare(f"router T={a.tokens} H={a.hidden} R={a.router_hidden} E={a.experts} "
                    f"{'first layer' if first else 'later layer'}",
                    lambda: ops.router(**kw), lambda: reference.router(**kw), a.reps)
    if a.op in ("moe", "all"):
        kw = samples.moe_top1_args(T=a.tokens, H=a.hidden, I=a.inter, E=a.experts)
        compare(f"moe_top1 T={a.tokens} H={a.hidden} I={a.inter} E={a.experts} "
                f"({int((kw['expert_index'] < a.experts).sum())} routed tokens)",
                lambda: ops.moe_top1(**kw), lambda: reference.moe_top1(**kw), a.reps)


if __name__ == "__main__":
    main()
