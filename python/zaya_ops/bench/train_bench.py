"""Training-step benchmark: ``python -m zaya_ops.bench --train [--preset tiny|zaya1-8b-layer] ...``.

One timed call is a whole training step of transformers' ``ZayaForCausalLM`` in train mode on B random
sequences of T tokens (labels = inputs): ``zero_grad``, forward with the loss, ``loss.backward()`` and one
``torch.optim.AdamW`` step over every parameter. Providers, all on the same model object and the same
initial weights (restored before each provider; a fresh optimizer each):

* ``hf``      - transformers unpatched (eager attention, eager experts): the baseline of the ratio column;
* ``hf-zaya`` - the same model patched by ``zaya_ops.integrations.transformers.patch`` (decoder layers and
  final norm on the zaya_ops ops, with their autograd), unpatched afterwards;
* ``zaya-nn`` - zaya_ops' own trainable model, ``zaya_ops.nn.ZayaForCausalLM.from_transformers`` (a copy with
  the same weights and parameter names; ``skipped`` where this build has no ``zaya_ops.nn``);
* ``hf-sdpa`` (optional) - transformers with SDPA attention.

A provider whose backward reaches an op that is not differentiable yet is reported ``n/a`` with torch's
message, not timed. Presets: ``tiny`` (the ``--model`` tiny preset: 4 layers at toy width) and
``zaya1-8b-layer`` (one decoder layer of ZAYA1-8B's shapes, H = 2048, 16 experts of I = 2048, with a
2048-token vocabulary so that the layer, not the LM head, is what is timed).

Correctness (informational, as ``--model``'s logits): each provider's first step, from the same initial
weights and batch, is compared with ``hf``'s: the loss's relative difference and the largest gradient
error over all parameters (max |diff| / max |hf's grad| per parameter) are in the note and in
``max_rel_err``; a non-finite loss or a parameter left without a gradient that ``hf`` gives one makes the
row a mismatch.

Costs (estimates, with the routing at its expectation under uniform choices over E experts + skip):
FLOPs = 3x the forward's matrix work (projections, CCA conv, router, routed experts, LM head on every
token: forward, then input and weight gradients) + 3.5x its attention (the backward recomputes the
scores: 2.5x the forward); bytes = the parameters read in the forward and in the backward, their
gradients written, and AdamW reading parameter, gradient and both moments and writing parameter and
moments: 10 * parameter bytes (activations are not counted).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import harness as H
from .runner import _first_line, new_row, set_speedups

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(vocab_size=4096, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                 num_key_value_heads=2, head_dim=64, num_experts=16, moe_intermediate_size=256,
                 router_hidden_size=32, max_position_embeddings=8192, bos_token_id=2, eos_token_id=None,
                 pad_token_id=0),
    # ZAYA1-8B's layer (ZayaConfig's defaults) once, with a small vocabulary
    "zaya1-8b-layer": dict(num_hidden_layers=1, vocab_size=2048, bos_token_id=2, eos_token_id=None, pad_token_id=0),
}
DEFAULTS = {  # (tokens per sequence, sequences per step)
    "tiny": ((128, 512), (2,)),
    "zaya1-8b-layer": ((1024, 4096), (1,)),
}
QUICK = ((24,), (2,))
DEFAULT_PROVIDERS = ("hf", "hf-zaya", "zaya-nn")
ALL_PROVIDERS = ("hf", "hf-zaya", "zaya-nn", "hf-sdpa")
BASELINE = "hf"
LR = 1e-5


def default_presets(device: torch.device, quick: bool) -> tuple[str, ...]:
    """``tiny`` alone with --quick, else both presets."""
    return ("tiny",) if quick else tuple(PRESETS)


def build_model(preset: str, device: torch.device, dtype: torch.dtype, seed: int):
    """(zaya_ops' ZayaForCausalLM with random weights, transformers' on the same tensors, trainable)."""
    from ..model import ZayaConfig, ZayaForCausalLM
    from .model_bench import build_hf, randomise

    ours = ZayaForCausalLM(ZayaConfig(**PRESETS[preset]), device=device, dtype=dtype, backend="auto")
    randomise(ours, seed)
    hf = build_hf(ours)
    for p in hf.parameters():
        p.requires_grad_(True)
    hf.train()
    return ours, hf


def step_costs(cfg, n_params: int, B: int, T: int, dtype: torch.dtype) -> tuple[int, int]:
    """(bytes, FLOPs) of one training step (see the module docstring)."""
    from .model_bench import model_costs

    c = model_costs(cfg, dtype)
    ntok = B * T
    E = cfg.num_experts
    routed = ntok * E / (E + 1)
    pairs = B * T * (T + 1) // 2
    fwd = c.layers * (ntok * c.flops_dense_token + routed * c.flops_expert_token) + ntok * c.head_flops_row
    flops = 3 * fwd + 3.5 * c.layers * pairs * c.attn_flops_pair
    return int(10 * n_params * c.esize), int(flops)


def _grad_errors(model, ref: dict[str, torch.Tensor]) -> tuple[float, int, list[str]]:
    """(max over parameters of max |grad - ref| / max |ref|, parameters compared, parameters with a
    reference gradient but none here)."""
    worst, n, missing = 0.0, 0, []
    for name, p in model.named_parameters():
        r = ref.get(name)
        if r is None:
            continue
        if p.grad is None:
            missing.append(name)
            continue
        scale = float(r.float().abs().max()) or 1.0
        worst = max(worst, float((p.grad.float() - r.float()).abs().max()) / scale)
        n += 1
    return worst, n, missing


def run_train(preset: str, providers: Sequence[str], device: torch.device, dtype: torch.dtype, *,
              tokens: Sequence[int], batches: Sequence[int], info: dict[str, Any], roof: H.Roofline | None,
              cfg: H.TimerConfig, stamp: str, seed: int = 0,
              log: Callable[[str], None] = lambda s: None) -> list[H.Row]:
    """Every (T, B) case of ``preset`` for ``providers``; one Row per (case, provider)."""
    from ..integrations.transformers import patch, unpatch
    from .model_bench import _set_hf_attn

    t0 = time.perf_counter()
    ours, hf = build_model(preset, device, dtype, seed)
    n_params = sum(p.numel() for p in hf.parameters())
    log(f"train {preset}: {n_params / 1e6:.1f}M parameters, built in {time.perf_counter() - t0:.1f} s")
    initial = {k: v.detach().clone() for k, v in hf.named_parameters()}
    own, own_error = None, ""
    op = f"train-{preset}"
    dname = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]
    gen = torch.Generator().manual_seed(seed)
    order = sorted(providers, key=lambda p: p != BASELINE)
    rows: list[H.Row] = []
    for T in tokens:
        for B in batches:
            params = {"B": int(B), "T": int(T)}
            shape = f"B={B},T={T}"
            ids = torch.randint(3, hf.config.vocab_size, (B, T), generator=gen).to(device)
            nbytes, flops = step_costs(ours.config, n_params, B, T, dtype)
            log(f"[{op}] {shape}: {B * T} tokens per step, ~{flops / 1e9:,.1f} GFLOP")
            ref_loss, ref_grads = None, None
            case_rows: dict[str, H.Row] = {}
            for prov in order:
                row = new_row(op, shape, params, dname, prov, device, info, cfg, stamp, nbytes, flops)
                row.params = {**params, "preset": preset, "optimizer": "AdamW", "lr": LR}
                row.tokens = B * T
                case_rows[prov] = row
                if prov == "zaya-nn":
                    if own is None:
                        own, own_error = _build_own(hf)
                    if own is None:
                        row.status, row.note = H.STATUS_SKIPPED, own_error
                        log(f"  {prov}: skipped ({own_error})")
                        continue
                    m = own
                else:
                    m = hf
                    _set_hf_attn(hf, "sdpa" if prov == "hf-sdpa" else "eager")
                with torch.no_grad():
                    for k, p in m.named_parameters():
                        p.copy_(initial[k])
                m.zero_grad(set_to_none=True)
                opt = torch.optim.AdamW(m.parameters(), lr=LR)
                if prov == "hf-zaya":
                    patch(hf)

                def step(first: bool = False):
                    opt.zero_grad(set_to_none=True)
                    if m is own:
                        loss = own(ids, labels=ids).loss
                    else:
                        loss = hf(input_ids=ids, labels=ids, use_cache=False).loss
                    try:
                        loss.backward()
                    except RuntimeError as exc:
                        if "derivative for" in str(exc) and "not implemented" in str(exc):
                            raise NotImplementedError(f"not differentiable yet: {str(exc).splitlines()[0]}") \
                                from None
                        raise
                    if first:
                        first_results.append(loss.detach().float().item())
                        if prov == BASELINE:
                            first_results.append({k: p.grad.detach().clone() for k, p in hf.named_parameters()
                                                  if p.grad is not None})
                        else:
                            first_results.append(_grad_errors(m, ref_grads or {}))
                    opt.step()

                first_results: list[Any] = []
                try:
                    step(first=True)
                    H.synchronize(device)
                    loss = first_results[0]
                    if prov == BASELINE:
                        ref_loss, ref_grads = loss, first_results[1]
                        row.note = f"loss {loss:.6g}"
                    else:
                        worst, n, missing = first_results[1]
                        row.note = f"loss {loss:.6g}"
                        if ref_loss is not None:
                            row.max_rel_err = worst
                            row.max_abs_err = abs(loss - ref_loss)
                            row.note += (f"; vs {BASELINE}: loss rel diff {abs(loss - ref_loss) / abs(ref_loss):.2g}, "
                                         f"grads max rel err {worst:.2g} over {n} parameters")
                        if missing:
                            row.status = H.STATUS_MISMATCH
                            row.note += f"; no gradient for {len(missing)} parameters ({missing[0]}, ...)"
                    if not torch.isfinite(torch.tensor(loss)):
                        row.status = H.STATUS_MISMATCH
                        row.note += "; loss not finite"
                    if prov in ("hf-zaya", "zaya-nn"):
                        from ..integrations.transformers import op_backends

                        rep = op_backends(hf) if prov == "hf-zaya" else own.op_backends()
                        ref_ops = sorted(k for k, v in rep.items() if v.startswith("reference"))
                        row.note += f"; reference ops: {','.join(ref_ops)}" if ref_ops else "; all ops on kernels"
                    st = H.time_fn(step, device, cfg)
                    row.stats = dict(vars(st))
                    row.fill_derived(roof)
                    row.tokens_per_s = B * T / (st.median_us * 1e-6)
                    log(f"  {prov}: median {st.median_us / 1e3:,.2f} ms over {st.reps} reps, "
                        f"{row.tokens_per_s:,.1f} tokens/s")
                except NotImplementedError as exc:
                    row.status, row.note = H.STATUS_NA, _first_line(exc)
                    log(f"  {prov}: n/a ({row.note})")
                except torch.OutOfMemoryError as exc:
                    row.status, row.note = H.STATUS_SKIPPED, "out of memory: " + _first_line(exc)
                    log(f"  {prov}: {row.note}")
                except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not crash
                    row.status, row.note = H.STATUS_ERROR, _first_line(exc)
                    log(f"  {prov}: error ({row.note})")
                finally:
                    if prov == "hf-zaya":
                        unpatch(hf)
                    del opt
                    m.zero_grad(set_to_none=True)
                    gc.collect()
                    if H.is_gpu(device):
                        torch.cuda.empty_cache()
            set_speedups([case_rows[p] for p in providers], BASELINE)
            rows.extend(case_rows[p] for p in providers)
    del hf, ours, own, initial
    gc.collect()
    return rows


def _build_own(hf) -> tuple[Any, str]:
    """(zaya_ops.nn.ZayaForCausalLM copied from ``hf``, in train mode, or None, why not)."""
    try:
        from .. import nn as znn
    except ImportError as exc:
        return None, f"zaya_ops.nn is not in this build ({_first_line(exc)})"
    try:
        own = znn.ZayaForCausalLM.from_transformers(hf)
    except Exception as exc:  # noqa: BLE001
        return None, f"zaya_ops.nn.ZayaForCausalLM.from_transformers failed: {_first_line(exc)}"
    own.train()
    return own, ""


COLUMNS = ("op", "shape", "dtype", "provider", "median ms", "tok/s", "TFLOP/s", "%roof", "x hf", "grad rel err",
           "status")


def format_table(rows: Sequence[H.Row]) -> str:
    """The terminal table of training-step rows (notes below it)."""
    def f(v, spec):
        return "-" if v is None else format(v, spec)

    body = []
    for r in rows:
        med = r.status if r.stats is None else f"{r.stats['median_us'] / 1e3:,.2f}"
        status = {"ok": "ok", "mismatch": "WRONG"}.get(r.status, r.status)
        body.append((r.op, r.shape, r.dtype, r.provider, med, f(r.tokens_per_s, ",.1f"), f(r.tflops, ".4f"),
                     f(r.pct_roofline, ".1f"), f(r.speedup_vs_eager, ".2f"), f(r.max_rel_err, ".2g"), status))
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(COLUMNS)]
    left = {0, 1, 2, 3, 10}

    def line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(COLUMNS), "  ".join("-" * w for w in widths)]
    prev = None
    for r, b in zip(rows, body):
        if prev is not None and (r.op, r.shape) != prev:
            out.append("")
        prev = (r.op, r.shape)
        out.append(line(b))
    out.append("")
    for r in rows:
        if r.note:
            out.append(f"{r.op} {r.shape} {r.provider}: {r.note}")
    return "\n".join(out)
