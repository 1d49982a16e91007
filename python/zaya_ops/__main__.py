"""Main job: ``python -m zaya_ops``: build, save, load and run a ZAYA1 model on the zaya_ops ops.

With no arguments it builds a small seeded random ZAYA1-shaped model (the ZAYA1-8B ratios at toy width:
4 layers, hidden 256, 8 query / 2 KV heads of 64 dims, partial RoPE, 16 experts + skip, tied vocab 4096),
saves it as a real safetensors checkpoint (in a temporary directory), loads it back with
``ZayaForCausalLM.from_pretrained``, generates from a prompt, and prints prefill and decode tokens per
second, which backend ran each op, and the largest difference from the reference backend.

    python -m zaya_ops [--device cpu|cuda] [--dtype bf16|fp16|fp32] [--prompt "1 2 3"] [--max-new-tokens N]
    python -m zaya_ops --checkpoint DIR [--prompt "text or ids"]   # a real checkpoint (tokenizer.json: text)
    python -m zaya_ops --check-ops [--device ...] [--dtype ...]   # zaya_ops.selftest's report, timed;
                                                                  # exit status 1 when a kernel fails it
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

import zaya_ops
from zaya_ops import ops, reference, samples
from zaya_ops._selftest import format_report

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------------
# --check-ops: every op against its reference on the shared samples
# --------------------------------------------------------------------------------------------------


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


def time_ops(device: torch.device, dtype: torch.dtype) -> dict[str, tuple[float, float]]:
    """Median seconds per call of each op's kernel and reference on the shared samples (ops without a
    kernel for ``dtype`` on ``device`` are left out)."""
    out = {}
    for name, build in samples.SAMPLES.items():
        fresh = samples.clone_args(build(dtype=dtype, device=device))
        ref_fn, op_fn = getattr(reference, name), getattr(ops, name)
        try:
            kernel_s = _time_call(lambda: op_fn(**fresh), device)
        except NotImplementedError:
            continue
        out[name] = (kernel_s, _time_call(lambda: ref_fn(**fresh), device))
    return out


def check_ops(device: torch.device, dtype_name: str | None, as_json: bool, timing: bool = True) -> int:
    """The op-by-op check (``--check-ops``): :func:`zaya_ops.selftest`'s report (every dtype, or
    ``dtype_name``'s), with the kernel and reference times per call on the shared samples (in
    ``dtype_name``, default bf16). Returns 1 when an op failed, else 0."""
    report = zaya_ops.selftest(device, dtypes=None if dtype_name is None else [DTYPES[dtype_name]])
    failed = [r for r in report if r.status == "failed"]
    timings = None
    if timing:  # a failed kernel is not timed: it may be what broke (and the numbers would mean nothing)
        timings = {k: v for k, v in time_ops(device, DTYPES[dtype_name or "bf16"]).items()
                   if k not in {r.op for r in failed}}
    print(format_report(report, timings))
    if as_json:
        rows = [{**r.as_dict(), **({} if not timings or r.op not in timings else
                                   dict(kernel_us=timings[r.op][0] * 1e6, reference_us=timings[r.op][1] * 1e6))}
                for r in report]
        print(json.dumps(rows, indent=1))
    if failed:
        print(f"\nFAILED: {', '.join(r.op for r in failed)} (see above)", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------------------
# The model run
# --------------------------------------------------------------------------------------------------

#: The default random model: ZAYA1-8B's structure and ratios (nq/nkv = 4, partial rotary 0.5, 16 experts,
#: R = H/8) at a width that runs in seconds on a CPU.
DEMO_CONFIG = dict(
    vocab_size=4096, hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
    head_dim=64, num_experts=16, moe_intermediate_size=256, router_hidden_size=32, max_position_embeddings=4096,
    rope_theta=5_000_000.0, partial_rotary_factor=0.5, bos_token_id=2, eos_token_id=None, pad_token_id=0,
)
DEFAULT_PROMPT = "2 1017 74 3571 1290 44 9 3020 615 2749 88 1733 451 12 3999 250"


def _load_tokenizer(directory: str):
    """A tokenizer for ``directory`` (tokenizer.json via `tokenizers`, else transformers' AutoTokenizer),
    as (encode, decode) functions, or None."""
    if not os.path.isfile(os.path.join(directory, "tokenizer.json")):
        return None
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
        return (lambda s: tok.encode(s).ids), (lambda ids: tok.decode(ids))
    except Exception:  # noqa: BLE001 - fall back to transformers
        pass
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(directory)
        return (lambda s: tok.encode(s)), (lambda ids: tok.decode(ids))
    except Exception:  # noqa: BLE001
        return None


def _parse_prompt(text: str, vocab: int, tokenizer) -> list[int]:
    parts = text.replace(",", " ").split()
    if parts and all(p.lstrip("-").isdigit() for p in parts):
        return [int(p) for p in parts]
    if tokenizer is None:
        raise SystemExit("the prompt is text but no tokenizer is available: give token ids, e.g. --prompt '2 17 9'")
    return tokenizer[0](text)


def run_model(args) -> int:
    """Build/save/load (or load ``--checkpoint``), generate, and compare with the reference backend."""
    from zaya_ops.model import ZayaConfig, ZayaForCausalLM, random_state_dict, save_checkpoint

    device = torch.device(args.device)
    dtype = DTYPES[args.dtype] if args.dtype else None
    tmp = None
    t0 = time.perf_counter()
    if args.checkpoint:
        path = args.checkpoint
        print(f"checkpoint {path}")
    else:
        tmp = tempfile.TemporaryDirectory(prefix="zaya_ops_demo_")
        path = tmp.name
        cfg = ZayaConfig(**DEMO_CONFIG, dtype="bfloat16")
        files = save_checkpoint(path, cfg, random_state_dict(cfg, seed=args.seed, dtype=torch.bfloat16))
        size = sum(os.path.getsize(f) for f in files)
        print(f"random ZAYA1-shaped model (seed {args.seed}) saved to {path}: "
              f"{', '.join(os.path.basename(f) for f in files)} ({size / 2**20:.1f} MiB)")
    try:
        model = ZayaForCausalLM.from_pretrained(path, device=device, dtype=dtype, backend=args.backend)
        load_s = time.perf_counter() - t0
        print(f"loaded {model} in {load_s:.2f} s: {model.num_parameters() / 1e6:.2f}M parameters")
        tokenizer = _load_tokenizer(path) if args.checkpoint else None
        prompt = _parse_prompt(args.prompt if args.prompt is not None else DEFAULT_PROMPT,
                               model.config.vocab_size, tokenizer)
        print(f"prompt: {len(prompt)} tokens {prompt if len(prompt) <= 32 else prompt[:32] + ['...']}")

        # Warm-up (first calls probe which kernels exist), then the timed run.
        model.generate([prompt], max_new_tokens=2, temperature=args.temperature, seed=args.seed)
        out = model.generate([prompt], max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                             top_k=args.top_k, top_p=args.top_p, seed=args.seed)
        toks = out.tokens[0]
        print(f"generated {len(toks)} tokens ({out.finish_reasons[0]}): {toks}")
        if tokenizer is not None:
            print(f"text: {tokenizer[1](toks)!r}")
        print(f"prefill: {out.prefill_tokens} tokens in {out.prefill_seconds * 1e3:.1f} ms = "
              f"{out.prefill_tokens_per_s:,.0f} tok/s")
        if out.decode_steps:
            print(f"decode:  {out.decode_steps} steps in {out.decode_seconds * 1e3:.1f} ms = "
                  f"{out.decode_tokens_per_s:,.1f} tok/s ({out.decode_seconds / out.decode_steps * 1e3:.2f} ms/token, "
                  f"sampling included)")
        print("\nop backends (what ran each op):")
        for name, how in model.op_backends().items():
            print(f"  {name:<24}{how}")

        # The same prompt through the reference backend: logits of the prefill and of each generated token
        # (teacher-forced on the tokens generated above), and the greedy continuation.
        seq = prompt + toks[:-1] if toks else prompt
        got = model.forward([seq], all_logits=True).logits.float()
        backend = model.backend
        model.set_backend("reference")
        try:
            want = model.forward([seq], all_logits=True).logits.float()
            ref_out = model.generate([prompt], max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                     top_k=args.top_k, top_p=args.top_p, seed=args.seed)
        finally:
            model.set_backend(backend)
        diff = (got - want).abs().max().item()
        scale = want.abs().max().item()
        same = ref_out.tokens[0] == toks
        print(f"\nvs reference backend: max |logit diff| {diff:.3g} (max |logit| {scale:.3g}) over {len(seq)} "
              f"positions; generated tokens {'identical' if same else 'DIFFER'}")
        if tmp is not None and model.dtype != torch.float32:
            # In bf16 the reference is not the truth either (transformers rounds attention probabilities
            # to bf16, the kernels keep them in fp32): measure both against the fp32 reference.
            truth_model = ZayaForCausalLM.from_pretrained(path, device=device, dtype=torch.float32,
                                                          backend="reference")
            truth = truth_model.forward([seq], all_logits=True).logits.float()
            print(f"vs the fp32 reference model: kernels' max |logit diff| {(got - truth).abs().max().item():.3g}, "
                  f"{str(model.dtype).replace('torch.', '')} reference's {(want - truth).abs().max().item():.3g}")
        return 0
    finally:
        if tmp is not None:
            tmp.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m zaya_ops`` (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m zaya_ops", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="parameter dtype (default: the checkpoint's; bf16 for the random model; "
                        "--check-ops: every dtype checked, bf16 timed)")
    p.add_argument("--check-ops", action="store_true",
                   help="run zaya_ops.selftest (each kernel against its reference) instead; exit 1 if one fails")
    p.add_argument("--json", action="store_true", help="--check-ops: print the rows as JSON too")
    p.add_argument("--no-timing", action="store_true", help="--check-ops: skip the kernel/reference timings")
    p.add_argument("--checkpoint", metavar="DIR", help="a transformers ZAYA1 checkpoint directory to run")
    p.add_argument("--prompt", help="token ids ('2 17 9') or, with a checkpoint's tokenizer, text")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=("auto", "ops", "reference"), default="auto")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: 1 for the small random model on a CPU, whose matrices are too "
                        "small to gain from more; torch's default otherwise)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    threads = args.threads
    if threads is None and device.type == "cpu" and not args.checkpoint and not args.check_ops:
        threads = 1
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _main(args, device)
    finally:
        torch.set_num_threads(old_threads)


def _main(args, device: torch.device) -> int:

    info = zaya_ops.build_info()
    print(f"zaya_ops {zaya_ops.__version__}: backends {', '.join(info['backends'])}; "
          f"CUDA archs {info['cuda_archs'] or '-'}; HIP archs {info['hip_archs'] or '-'}; "
          f"built against torch {info['torch_version']}, running torch {info['torch_runtime']}")
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'host CPU'}), "
          f"{torch.get_num_threads()} CPU threads, dtype {args.dtype or 'default'}\n")
    if args.check_ops:
        return check_ops(device, args.dtype, args.json, timing=not args.no_timing)
    return run_model(args)


if __name__ == "__main__":
    sys.exit(main())
