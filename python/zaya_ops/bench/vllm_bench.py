"""Offline throughput of ZAYA1 in vLLM (the zaya_ops plugin) against zaya_ops' own ``generate``:
``python -m zaya_ops.bench --vllm [--preset tiny|zaya1-8b] [--dtype bf16] [--batch 8] [--tokens 96] [--steps 64]``.

One random model of the preset (``model_bench``'s presets and weights) is saved as a transformers
checkpoint in a temporary directory; the same prompts (``--batch`` prompts of lengths spread around
``--tokens``) get ``--steps`` greedy tokens each from

* ``zaya``: zaya_ops' ``ZayaForCausalLM.generate`` (one packed prefill, then static-shape decode steps;
  backend "auto", eager), timed end to end after a short warm-up;
* ``vllm``: ``vllm.LLM`` on that checkpoint through the plugin (vLLM's defaults: torch.compile, prefix
  caching), and ``vllm-eager`` (``enforce_eager=True``): engine start-up and a warm-up generate are not
  timed, one ``generate`` of all prompts is.

Each row's time is that one run (``reps`` = 1), ``tok/s`` the generated tokens per second, and the note
gives the prompt tokens per second of the whole run and on how many prompts the greedy tokens equal
zaya_ops' (informational: bf16 near-ties may differ). Needs vLLM (the environment ``tools/vllm_ci.sh``
builds).
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import harness as H
from .model_bench import build_ours
from .runner import new_row, set_speedups

DEFAULT_PROVIDERS = ("zaya", "vllm")
ALL_PROVIDERS = ("zaya", "vllm", "vllm-eager")
BASELINE = "zaya"
#: (prompts, mean prompt length, new tokens) per preset
DEFAULTS = {"tiny": (8, 96, 64), "zaya1-8b": (64, 1024, 256)}
QUICK = (3, 24, 8)


def _prompts(n: int, mean_len: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lens = [max(1, int(mean_len * f)) for f in torch.linspace(0.5, 1.5, n).tolist()]
    return [torch.randint(3, vocab, (t,), generator=g).tolist() for t in lens]


def _timed_zaya(model, prompts: list[list[int]], new: int, device: torch.device) -> tuple[float, list[list[int]]]:
    model.generate([p[:8] for p in prompts], max_new_tokens=2, stop_tokens=())  # warm-up
    H.synchronize(device)
    t0 = time.perf_counter()
    out = model.generate(prompts, max_new_tokens=new, stop_tokens=())
    H.synchronize(device)
    return time.perf_counter() - t0, out.tokens


def _timed_vllm(ckpt: str, prompts: list[list[int]], new: int, dtype: str, eager: bool,
                log: Callable[[str], None]) -> tuple[float, list[list[int]], str]:
    from vllm import LLM, SamplingParams

    t0 = time.perf_counter()
    longest = max(len(p) for p in prompts) + new
    llm = LLM(model=ckpt, dtype=dtype, skip_tokenizer_init=True, enforce_eager=eager, seed=0,
              max_model_len=max(256, -(-longest // 256) * 256), max_num_seqs=len(prompts))
    log(f"  vLLM engine ({'eager' if eager else 'compiled'}) up in {time.perf_counter() - t0:.1f} s")
    try:
        sp = SamplingParams(max_tokens=new, temperature=0.0, ignore_eos=True)
        warm = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)
        llm.generate([{"prompt_token_ids": [5, 6, 7]}], warm, use_tqdm=False)
        t0 = time.perf_counter()
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], sp, use_tqdm=False)
        dt = time.perf_counter() - t0
        from zaya_ops.integrations.vllm.model import describe

        try:
            info = llm.apply_model(describe)[0]
            note = "all ops on kernels" if all(v.startswith("kernel") for v in info["op_backends"].values()) \
                else f"op backends {info['op_backends']}"
        except Exception as exc:  # noqa: BLE001 - apply_model needs VLLM_ALLOW_INSECURE_SERIALIZATION=1
            note = f"op backends not reported ({type(exc).__name__})"
        return dt, [list(o.outputs[0].token_ids) for o in outs], note
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()


def run_vllm(preset: str, providers: Sequence[str], device: torch.device, dtype: torch.dtype, *, prompts_n: int,
             mean_len: int, new: int, info: dict[str, Any], cfg: H.TimerConfig, stamp: str, seed: int = 0,
             log: Callable[[str], None] = lambda s: None) -> list[H.Row]:
    """One row per provider: the same model and prompts, generated once each (see the module docstring)."""
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("--vllm needs vLLM (0.32.x) and zaya_ops built against its torch: run it in the "
                           "environment tools/vllm_ci.sh builds (.venv-vllm)") from exc
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # LLM.apply_model(describe)
    if device.type == "cpu":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB: plenty for these prompts
    dname = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]
    model = build_ours(preset, device, dtype, seed)
    prompts = _prompts(prompts_n, mean_len, model.config.vocab_size, seed)
    n_prompt = sum(len(p) for p in prompts)
    params = {"preset": preset, "prompts": prompts_n, "prompt_tokens": n_prompt, "new_tokens": new}
    shape = f"B={prompts_n},prompt={n_prompt},new={new}"
    rows, tokens = [], {}
    with tempfile.TemporaryDirectory(prefix="zaya-vllm-bench-") as ckpt:
        from ..model.weights import save_checkpoint

        save_checkpoint(ckpt, model.config.replace(dtype=str(dtype).replace("torch.", "")), model.hf_state_dict())
        for prov in providers:
            row = new_row(f"vllm-{preset}", shape, params, dname, prov, device, info, cfg, stamp, 0, 0)
            try:
                if prov == "zaya":
                    sec, toks = _timed_zaya(model, prompts, new, device)
                    note = "zaya_ops generate (eager, backend auto)"
                    row.params["mode"] = "eager"
                else:
                    eager = prov == "vllm-eager"
                    sec, toks, note = _timed_vllm(ckpt, prompts, new, str(dtype).replace("torch.", ""), eager, log)
                    row.params["mode"] = "eager" if eager else "compiled"
                tokens[prov] = toks
                gen = sum(len(t) for t in toks)
                row.stats = dict(vars(H.Stats.from_samples([sec * 1e6])))
                row.tokens = gen
                row.tokens_per_s = gen / sec
                row.note = f"{note}; {n_prompt / sec:,.1f} prompt tok/s over the run"
                log(f"  {prov}: {sec:.2f} s, {gen / sec:,.1f} generated tok/s")
            except Exception as exc:  # noqa: BLE001 - a failed provider is a row, not a crash
                row.status, row.note = H.STATUS_ERROR, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                log(f"  {prov}: error ({row.note})")
            rows.append(row)
    ref = tokens.get(BASELINE)
    for row in rows:
        if ref is not None and row.provider != BASELINE and row.provider in tokens:
            same = sum(a == b for a, b in zip(tokens[row.provider], ref))
            row.note += f"; greedy tokens equal to zaya's on {same}/{len(ref)} prompts"
    set_speedups(rows, BASELINE)
    return rows


COLUMNS = ("op", "shape", "dtype", "provider", "mode", "seconds", "gen tok/s", "x zaya", "status")


def format_table(rows: Sequence[H.Row]) -> str:
    """The rows as a text table, then each row's note."""
    body = [(r.op, r.shape, r.dtype, r.provider, str(r.params.get("mode", "-")),
             "-" if r.median_us is None else f"{r.median_us / 1e6:.2f}",
             "-" if r.tokens_per_s is None else f"{r.tokens_per_s:,.1f}",
             "-" if r.speedup_vs_eager is None else f"{r.speedup_vs_eager:.2f}", r.status) for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(COLUMNS)]
    line = lambda cells: "  ".join(c.ljust(w) if i < 5 or i == 8 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(COLUMNS), "  ".join("-" * w for w in widths), *(line(b) for b in body), ""]
    out += [f"{r.provider}: {r.note}" for r in rows if r.note]
    return "\n".join(out)
