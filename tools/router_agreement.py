"""How often zaya::router picks the reference's expert, over many random tokens (issue: report the
agreement rate over 1M tokens). Random router weights and inputs as zaya_ops.samples.router_args (first
and later layers alternate), in calls of --chunk tokens, each against zaya_ops.reference.router. A
disagreement is allowed only at a near-tie (top two biased probabilities of the reference within
--tie); any other is counted and fails the run.

    PYTHONPATH=python python tools/router_agreement.py --target cpu --tokens 1048576
    PYTHONPATH=python python tools/router_agreement.py --target emu32 --tokens 1048576 --hidden 256

--target: cpu (the C++ kernel), cuda (a GPU), emu32 / emu64 (the GPU kernel under the SIMT emulator:
slow, so a smaller --hidden keeps it to minutes; the decision statistics come from the softmax of the
MLP's logits, whose width R and E do not change).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from zaya_ops import ops, reference, samples


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="cpu", choices=["cpu", "cuda", "emu32", "emu64"])
    p.add_argument("--tokens", type=int, default=1 << 20)
    p.add_argument("--chunk", type=int, default=8192)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--router-dim", type=int, default=256)
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--tie", type=float, default=1e-3)
    args = p.parse_args()

    device = "cuda" if args.target == "cuda" else "cpu"
    if args.target.startswith("emu"):
        import zaya_ops.ops as ops_module

        __import__(f"zaya_ops._emu_w{args.target[3:]}")
        ops_module._OPS = getattr(torch.ops, "zaya_" + args.target)
    done = agree = near_ties = bad = 0
    start = time.time()
    seed = 0
    while done < args.tokens:
        T = min(args.chunk, args.tokens - done)
        kw = samples.router_args(T=T, H=args.hidden, R=args.router_dim, E=args.experts, seed=1000 + seed,
                                 first_layer=seed % 2 == 0)
        ref = reference.router(**samples.clone_args(kw))
        kw = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
        idx = ops.router(**kw)[0].cpu()
        ridx, rlogits = ref[0], ref[3]
        biased = torch.softmax(rlogits, dim=-1).float() + kw["balancing_biases"].cpu()
        top2 = biased.topk(2, dim=-1).values
        tie = (top2[:, 0] - top2[:, 1]) <= args.tie
        same = idx == ridx
        agree += int(same.sum())
        near_ties += int(tie.sum())
        bad += int((~same & ~tie).sum())
        done += T
        seed += 1
        print(f"\r{done}/{args.tokens} tokens, agreement {agree / done:.6f}, {time.time() - start:.0f} s",
              end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"router ({args.target}, H={args.hidden}, R={args.router_dim}, E={args.experts}, bf16): "
          f"{agree}/{done} tokens agree ({agree / done:.6f}); {done - agree} differ, all at near-ties "
          f"(top-2 biased gap <= {args.tie}: {near_ties} tokens) " if bad == 0 else
          f"router ({args.target}): {bad} tokens differ outside near-ties", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
