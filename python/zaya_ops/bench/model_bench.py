"""End-to-end model benchmark: ``python -m zaya_ops.bench --model [--preset zaya1-8b|tiny] ...``.

Builds a random model of a preset (``zaya1-8b``: the real ZAYA1-8B shapes, 40 layers, vocab 262272,
about 17 GB of bf16 weights, for a GPU with memory; ``tiny``: the ZAYA1 structure at toy width for CPUs
and CI), gives transformers' ``ZayaForCausalLM`` the same weights (its parameters become views of ours:
no second copy), and measures

* prefill: tokens/s of one sequence of T tokens (logits of the last token only, for both models);
* decode: tokens/s of one step of B sequences after ``ctx`` tokens each (B tokens per step). Our model
  replays a CUDA graph of :meth:`ZayaForCausalLM.decode_step` on a GPU when every op ran a compiled
  kernel in the warm-up; otherwise (CPU, a missing kernel, a failed capture) it runs eagerly, and the
  row's ``params["mode"]`` and note say which. Host bookkeeping of the cache (``reserve``/``advance``)
  is inside the timed step in both modes; sampling is not (the same token is fed every step).

Providers: ``zaya`` (our model, backend "auto", CUDA graphs where possible), ``hf-eager`` (transformers
with eager attention and eager experts: the baseline of the speedup column), and optionally
``hf-sdpa`` (transformers with SDPA attention), ``zaya-nograph`` (ours without graphs) and
``zaya-reference`` (ours on the pure-PyTorch reference ops).

Costs per timed call (bf16 sizes; counts from the routing our model actually chose in the case):

* weight bytes = every dense parameter of every layer (q/k/v/o projections, CCA convs, router, norms
  and residual scales) + the experts hit in each layer (3 * I * H each) + the LM head (V * H) + the
  embedding rows read (tokens * H);
* bytes = weight bytes + KV cache read (decode: B * ctx * 2 * nkv * D per layer) and written (new tokens
  * 2 * nkv * D per layer) + logits written; activations between ops are not counted;
* FLOPs = 2 per MAC of the q/k/v/o projections, the CCA grouped conv (2 * (nq+nkv) * D * D * 2 per
  token), router (2 * (H*R + 2*R*R + R*(E+1)) per token), experts (2 * 3 * I * H per routed token),
  attention (4 * nq * D per causal query-key pair) and the LM head (2 * H * V per logit row);
* decode floor: tokens/s if a step took only its weight bytes / measured copy bandwidth (the
  weight-bandwidth floor: ``floor_tokens_per_s``; ``pct_floor`` = achieved / floor).
  On a CPU the same ratio in CPU time, ``pct_floor_cpu``: weight bytes per CPU-second of the step over
  the copy probe's bytes per CPU-second (``harness.Stats.cpu_median_us``), which other processes on
  the cores do not move the way they move wall time (both are measured in one run either way).

Correctness: each provider's logits of its first call are compared with transformers eager's
(``max_rel_err`` = max |diff| / max |logit|, and the note says on how many rows they agree within 5e-2
(bf16/fp16) or 1e-3 (fp32) and have the same argmax). Informational (see ``check_logits``): only
non-finite logits make a model row a mismatch; the op rows are the correctness gate.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from . import harness as H
from .runner import _first_line, new_row, set_speedups

#: Model presets. "zaya1-8b": transformers' ZayaConfig defaults (the real ZAYA1-8B). "tiny": the
#: structure and ratios of ZAYA1 (nq/nkv = 4, D = 64 for the kernels, partial rotary, 16 experts + skip)
#: at toy width, as ``python -m zaya_ops``'s demo model.
PRESETS: dict[str, dict[str, Any]] = {
    "zaya1-8b": {},
    # ZAYA1-8B's shapes (H, heads, experts, vocab 262272) with 2 of its 40 layers: ~1.9 GB of bf16 weights,
    # the CPU-sized stand-in for per-layer and LM-head speed at the real widths
    "zaya1-8b-2l": dict(num_hidden_layers=2),
    "tiny": dict(vocab_size=4096, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                 num_key_value_heads=2, head_dim=64, num_experts=16, moe_intermediate_size=256,
                 router_hidden_size=32, max_position_embeddings=8192, bos_token_id=2, eos_token_id=None,
                 pad_token_id=0),
}

DEFAULTS = {  # (prefill tokens, decode batches, decode context, max decode steps per measurement)
    "zaya1-8b": ((1024, 4096, 16384, 32768), (1, 8, 64, 256), 1024, 200),
    "zaya1-8b-2l": ((512,), (1,), 256, 24),
    "tiny": ((128, 512), (1, 8), 256, 48),
}
QUICK = ((24,), (1, 3), 16, 10)

DEFAULT_PROVIDERS = ("zaya", "hf-eager")
ALL_PROVIDERS = ("zaya", "zaya-nograph", "zaya-reference", "hf-eager", "hf-sdpa")
BASELINE = "hf-eager"


def model_tolerance(dtype: torch.dtype) -> float:
    return 1e-3 if dtype == torch.float32 else 5e-2


def check_logits(row: H.Row, got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    """Fill the row's error columns from its first call's logits against transformers' ([rows, V]).

    Informational, except for non-finite or mis-shaped logits (status "mismatch"): with random weights,
    a one-ulp difference anywhere (a reordered fp32 sum in a norm) can flip a near-tie expert choice,
    after which that sequence's logits differ by O(1) although every op is right (seen on CPU: the
    rms_norm kernel's one-ulp difference in a prefill flipped one token's expert and moved one of three
    decode rows' logits by 8). The op rows' checks are the correctness gate; here the note says on how
    many rows the logits and their argmax agree with transformers'."""
    if got.shape != want.shape or not bool(torch.isfinite(got).all()):
        row.status = H.STATUS_MISMATCH
        row.note += f"; logits {tuple(got.shape)} non-finite or not the shape of {BASELINE}'s {tuple(want.shape)}"
        return
    diff = (got - want).abs()
    scale = float(want.abs().max()) or 1.0
    row.max_abs_err = float(diff.max())
    row.max_rel_err = row.max_abs_err / scale
    rows_ok = int((diff.amax(-1) <= model_tolerance(dtype) * scale).sum())
    agree = int((got.argmax(-1) == want.argmax(-1)).sum())
    n = got.shape[0]
    row.note += (f"; vs {BASELINE}: logits within {model_tolerance(dtype):g} of max|logit| on {rows_ok}/{n} rows, "
                 f"argmax equal on {agree}/{n}")


# --------------------------------------------------------------------------------------------------
# Building the two models
# --------------------------------------------------------------------------------------------------


def make_config(preset: str):
    from ..model import ZayaConfig

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    return ZayaConfig(**PRESETS[preset])


@torch.no_grad()
def randomise(model, seed: int = 0) -> None:
    """Random weights in place on the model's device, at the scales of ``weights.random_state_dict``
    (norms and branch scales near 1, residual scales near 0.5, small biases, fan-in scaled matrices, a
    router peaked enough that experts and the skip class are chosen). Drawn on the device: the 8B model's
    17 GB take seconds on a GPU instead of minutes on the host."""
    dev = model.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    for name, t in model.hf_state_dict().items():
        leaf = name.rsplit(".", 1)[-1]
        shape = tuple(t.shape)
        r = torch.randn(shape, generator=gen, device=dev, dtype=torch.float32)
        if name.endswith("balancing_biases"):
            r.mul_(0.05)
            r[-1] = 0.1
        elif leaf == "residual_scale":
            r.mul_(0.05).add_(0.5)
        elif leaf in ("hidden_states_scale", "input_hidden_states_scale", "router_states_scale") \
                or (len(shape) == 1 and "norm" in name):
            r.mul_(0.1).add_(1.0)
        elif leaf == "temp":
            r = torch.rand(shape, generator=gen, device=dev).mul_(0.5).add_(0.75)
        elif len(shape) == 1:
            r.mul_(0.05)
        elif "embed_tokens" in name or name == "lm_head.weight":
            pass
        elif "out_proj" in name:
            r.mul_(3.0 / shape[-1] ** 0.5)
        elif "conv_qk_depthwise" in name:
            r.mul_(0.7)
        else:
            fan_in = shape[-1] * (shape[-2] if len(shape) == 3 and "conv" in name else 1)
            r.mul_(fan_in ** -0.5)
        t.copy_(r)
        del r


def build_ours(preset: str, device: torch.device, dtype: torch.dtype, seed: int, backend: str = "auto"):
    from ..model import ZayaForCausalLM

    model = ZayaForCausalLM(make_config(preset), device=device, dtype=dtype, backend=backend)
    randomise(model, seed)
    return model


def build_hf(ours, attn_implementation: str = "eager"):
    """transformers' ZayaForCausalLM (eager experts) whose parameters are views of ``ours``' tensors."""
    from transformers import ZayaConfig as HFZayaConfig
    from transformers.models.zaya.modeling_zaya import ZayaForCausalLM as HFZayaForCausalLM

    d = ours.config.to_dict()
    d.pop("dtype", None)
    d.update(attn_implementation=attn_implementation, experts_implementation="eager")
    hcfg = HFZayaConfig.from_dict(d)
    default = torch.get_default_dtype()
    torch.set_default_dtype(ours.dtype)
    try:
        # Every parameter is replaced by a view of ours below: skip transformers' random init of its own
        # copy (at ZAYA1-8B widths on a CPU, minutes of normal_() on ~1.9 GB per 2 layers).
        with torch.device(ours.device), _no_init_weights():
            hf = HFZayaForCausalLM(hcfg).eval()
    finally:
        torch.set_default_dtype(default)
    sd = ours.hf_state_dict()
    missing, unexpected = hf.load_state_dict(sd, strict=False, assign=True)
    missing = [m for m in missing if m != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"transformers model does not match ours: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    if ours.config.tie_word_embeddings:
        hf.lm_head.weight = hf.model.embed_tokens.weight
    for p in hf.parameters():
        p.requires_grad_(False)
    impl = (hf.config._attn_implementation, getattr(hf.config, "_experts_implementation", "eager"))
    if impl != (attn_implementation, "eager"):
        raise RuntimeError(f"transformers model built with attention/experts {impl}, wanted "
                           f"({attn_implementation!r}, 'eager')")
    _empty_cache(ours.device)
    return hf


def _no_init_weights():
    """transformers' ``no_init_weights`` context (its from_pretrained's: parameters left uninitialised,
    buffers such as the rotary frequencies still computed in the constructors), or a no-op context on
    versions without it."""
    import contextlib

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            return contextlib.nullcontext()
    return no_init_weights()


def _hf_note(hf) -> str:
    c = hf.config
    return (f"transformers attention {c._attn_implementation}, experts "
            f"{getattr(c, '_experts_implementation', 'eager')}")


def _set_hf_attn(hf, impl: str) -> None:
    if hasattr(hf, "set_attn_implementation"):
        hf.set_attn_implementation(impl)
    else:  # pragma: no cover - older transformers
        hf.config._attn_implementation = impl


def _empty_cache(device: torch.device) -> None:
    gc.collect()
    if H.is_gpu(device):
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------------
# Cost model
# --------------------------------------------------------------------------------------------------


@dataclass
class ModelCosts:
    """Sizes of the model relevant to the cost of a step (bytes in the model dtype)."""

    layers: int
    dense_layer_bytes: list[int]
    expert_bytes: int
    head_bytes: int
    embed_row_bytes: int
    other_bytes: int  # final norm, input bias/scale
    kv_token_bytes: int  # per layer per token: 2 * nkv * D * esize
    esize: int
    flops_dense_token: int  # per layer per token, everything but experts and attention
    flops_expert_token: int  # per routed token
    attn_flops_pair: int  # per layer per causal query-key pair
    head_flops_row: int  # per logit row
    vocab: int
    active_params_token: int = 0


def model_costs(cfg, dtype: torch.dtype = torch.bfloat16) -> ModelCosts:
    """Cost-model sizes of a ZayaConfig (from ``weights.parameter_shapes``: nothing is allocated)."""
    from ..model.weights import parameter_shapes

    es = torch.finfo(dtype).bits // 8
    L, Hd, V = cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size
    E, I, R = cfg.num_experts, cfg.moe_intermediate_size, cfg.router_hidden_size
    nq, nkv, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    dense = [0] * L
    other = 0
    for name, shape in parameter_shapes(cfg).items():
        nb = math.prod(shape) * (4 if name.endswith("balancing_biases") else es)
        if name.startswith("model.layers."):
            if ".mlp.experts." not in name:
                dense[int(name.split(".")[2])] += nb
        elif name not in ("model.embed_tokens.weight", "lm_head.weight", "lm_head.bias"):
            other += nb
    head = V * Hd * es + (V * es if cfg.lm_head_bias else 0)
    flops_dense = 2 * (Hd * cfg.qkv_dim + cfg.q_dim * Hd) + 2 * (nq + nkv) * D * D * 2 \
        + 2 * (Hd * R + 2 * R * R + R * (E + 1))
    return ModelCosts(
        layers=L, dense_layer_bytes=dense, expert_bytes=3 * I * Hd * es, head_bytes=head, embed_row_bytes=Hd * es,
        other_bytes=other, kv_token_bytes=2 * nkv * D * es, esize=es, flops_dense_token=flops_dense,
        flops_expert_token=2 * 3 * I * Hd, attn_flops_pair=4 * nq * D, head_flops_row=2 * Hd * V, vocab=V,
        active_params_token=(sum(dense) + L * 3 * I * Hd * es + head) // es,
    )


def step_cost(c: ModelCosts, *, new_tokens: int, pairs: int, kv_read_tokens: int, logit_rows: int,
              routed: Sequence[int], hit: Sequence[int]) -> tuple[int, int, int]:
    """(bytes, FLOPs, weight bytes) of one model call; ``routed[l]``/``hit[l]``: tokens routed to an
    expert and distinct experts chosen in layer l."""
    weights = sum(c.dense_layer_bytes) + sum(hit) * c.expert_bytes + c.head_bytes + c.other_bytes \
        + new_tokens * c.embed_row_bytes
    kv = c.layers * (kv_read_tokens + new_tokens) * c.kv_token_bytes
    nbytes = weights + kv + logit_rows * c.vocab * c.esize
    flops = c.layers * new_tokens * c.flops_dense_token + sum(routed) * c.flops_expert_token \
        + c.layers * pairs * c.attn_flops_pair + logit_rows * c.head_flops_row
    return nbytes, flops, weights


class _RoutingRecorder:
    """Wraps a model's op backend for one call and records, per layer, tokens routed and experts hit."""

    def __init__(self, model) -> None:
        self.model = model
        self.inner = model._backend
        self.E = model.config.num_experts
        self.routed: list[int] = []
        self.hit: list[int] = []

    def __call__(self, name, *args, **kwargs):
        if name == "moe_top1":
            idx = args[1].to(torch.int64)
            counts = torch.bincount(idx, minlength=self.E + 1)[: self.E].cpu()
            self.routed.append(int(counts.sum()))
            self.hit.append(int((counts > 0).sum()))
        return self.inner(name, *args, **kwargs)

    def __getattr__(self, item):
        return getattr(self.inner, item)

    def __enter__(self):
        self.model._backend = self
        return self

    def __exit__(self, *exc):
        self.model._backend = self.inner
        return False


# --------------------------------------------------------------------------------------------------
# Timed callables per provider
# --------------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """A provider ready to time: ``fn`` (one prefill / one decode step), optional ``setup``/``after``
    outside the timed region, the logits of its first call, how it runs, and what to release after."""

    fn: Callable[[], Any]
    first_logits: torch.Tensor
    mode: str
    note: str = ""
    setup: Callable[[], Any] | None = None
    after: Callable[[], Any] | None = None
    max_calls: int | None = None
    keep: list[Any] = field(default_factory=list)
    first_s: float | None = None  # how long the first call took (the harness's warm-up estimate)


def _ours_for(provider: str, model):
    """Our model switched to the provider's backend (the same weights)."""
    want = "reference" if provider == "zaya-reference" else "auto"
    if model.backend != want:
        model.set_backend(want)
    return model


def _backend_note(model) -> str:
    ref = sorted(k for k, v in model.op_backends().items() if v.startswith("reference"))
    return f"reference ops: {','.join(ref)}" if ref else "all ops on kernels"


def prepare_prefill(provider: str, model, hf, ids: torch.Tensor, rec: list) -> Prepared:
    dev = model.device
    if provider.startswith("zaya"):
        m = _ours_for(provider, model)
        cache = m.new_cache(1, ids.numel())
        slot: list[int] = []

        def setup():
            cache.reset()
            slot[:] = cache.admit(1)

        setup()
        t0 = time.perf_counter()
        if not rec:
            with _RoutingRecorder(m) as r:
                logits = m.forward([ids], cache, list(slot)).logits
            rec.append(r)
        else:
            logits = m.forward([ids], cache, list(slot)).logits
        H.synchronize(dev)
        return Prepared(fn=lambda: m.forward([ids], cache, list(slot)), first_logits=logits.float(),
                        mode="eager", note=_backend_note(m), setup=setup, keep=[cache],
                        first_s=time.perf_counter() - t0)
    if hf is None:
        raise RuntimeError("transformers is not available")
    _set_hf_attn(hf, "sdpa" if provider == "hf-sdpa" else "eager")
    x = ids[None]

    def run():
        with torch.no_grad():
            return hf(input_ids=x, use_cache=True, logits_to_keep=1).logits

    t0 = time.perf_counter()
    logits = run()[:, -1]
    H.synchronize(dev)
    return Prepared(fn=run, first_logits=logits.float(), mode="eager", note=_hf_note(hf),
                    first_s=time.perf_counter() - t0)


def prepare_decode(provider: str, model, hf, prompts: torch.Tensor, steps: int, rec: list,
                   allow_graph: bool) -> Prepared:
    """prompts [B, ctx]: prefill them, then time decode steps of one token per sequence."""
    dev = model.device
    B, ctx = prompts.shape
    tok = torch.full((B,), 7, dtype=torch.int64, device=dev)
    if provider.startswith("zaya"):
        m = _ours_for(provider, model)
        cache = m.new_cache(B, ctx + steps + 8)
        slots = cache.admit(B)
        chunk = max(1, 16384 // ctx)  # bound the prefill's activation memory at large B * ctx
        for i in range(0, B, chunk):
            m.forward(list(prompts[i:i + chunk]), cache, slots[i:i + chunk])
        ones = [1] * B
        slots_t = torch.tensor(slots, dtype=torch.int32, device=dev)

        def eager_step():
            cache.reserve(slots, ones)
            out = m.decode_step(tok, slots_t, cache)
            cache.advance(slots, ones)
            return out

        t0 = time.perf_counter()
        with _RoutingRecorder(m) as r:
            logits = eager_step()
        if not rec:
            rec.append(r)
        H.synchronize(dev)
        first_s = time.perf_counter() - t0
        first = logits.float()
        note = _backend_note(m)
        all_kernels = note == "all ops on kernels"
        if not (allow_graph and H.is_gpu(dev)):
            why = "CPU" if not H.is_gpu(dev) else "graphs off for this provider"
            return Prepared(fn=eager_step, first_logits=first, mode="eager", note=f"eager ({why}); {note}",
                            max_calls=steps, keep=[cache], first_s=first_s)
        if not all_kernels:
            return Prepared(fn=eager_step, first_logits=first, mode="eager",
                            note=f"eager (no CUDA graph: {note})", max_calls=steps, keep=[cache])
        try:
            s = torch.cuda.Stream(device=dev)
            s.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(s):
                for _ in range(2):
                    eager_step()
            torch.cuda.current_stream(dev).wait_stream(s)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_logits = m.decode_step(tok, slots_t, cache)
        except Exception as exc:  # noqa: BLE001 - fall back to eager and say why
            torch.cuda.synchronize(dev)
            return Prepared(fn=eager_step, first_logits=first, mode="eager",
                            note=f"eager (CUDA graph capture failed: {_first_line(exc)})", max_calls=steps - 2,
                            keep=[cache])

        def graph_step():
            cache.reserve(slots, ones)
            graph.replay()
            cache.advance(slots, ones)
            return static_logits

        return Prepared(fn=graph_step, first_logits=first, mode="cuda-graph", note=f"CUDA graph; {note}",
                        max_calls=steps - 2, keep=[cache, graph])
    if hf is None:
        raise RuntimeError("transformers is not available")
    _set_hf_attn(hf, "sdpa" if provider == "hf-sdpa" else "eager")
    with torch.no_grad():
        out = hf(input_ids=prompts, use_cache=True, logits_to_keep=1)
    state = {"cache": out.past_key_values}
    x = tok[:, None]

    def step():
        with torch.no_grad():
            o = hf(input_ids=x, past_key_values=state["cache"], use_cache=True)
        state["cache"] = o.past_key_values
        return o.logits

    t0 = time.perf_counter()
    logits = step()[:, -1]
    H.synchronize(dev)
    return Prepared(fn=step, first_logits=logits.float(), mode="eager", max_calls=steps,
                    note=_hf_note(hf) + ", DynamicCache", keep=[state], first_s=time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


def _order(providers: Sequence[str]) -> list[str]:
    """Baseline first (its logits are the reference of the others), then the rest in the given order."""
    return sorted(providers, key=lambda p: p != BASELINE)


def run_model(preset: str, providers: Sequence[str], device: torch.device, dtype: torch.dtype, *,
              prefill_tokens: Sequence[int], batches: Sequence[int], context: int, steps: int,
              info: dict[str, Any], roof: H.Roofline | None, cfg: H.TimerConfig, stamp: str, seed: int = 0,
              log: Callable[[str], None] = lambda s: None) -> list[H.Row]:
    """All prefill and decode cases of the model for ``providers``; one Row per (case, provider)."""
    t0 = time.perf_counter()
    model = build_ours(preset, device, dtype, seed)
    mcfg = model.config
    log(f"model {preset}: {model.num_parameters() / 1e9:.3f}B parameters, built in {time.perf_counter() - t0:.1f} s")
    hf, hf_error = None, ""
    if any(p.startswith("hf") for p in providers):
        try:
            t0 = time.perf_counter()
            hf = build_hf(model)
            log(f"transformers model sharing the weights built in {time.perf_counter() - t0:.1f} s")
        except Exception as exc:  # noqa: BLE001
            hf_error = _first_line(exc)
            log(f"transformers model unavailable: {hf_error}")
    costs = model_costs(mcfg, dtype)
    op = f"model-{preset}"
    dname = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]
    gen = torch.Generator().manual_seed(seed)
    rows: list[H.Row] = []
    cases: list[dict[str, Any]] = [{"phase": "prefill", "T": int(T)} for T in prefill_tokens]
    cases += [{"phase": "decode", "B": int(B), "ctx": int(context)} for B in batches]
    for n, params in enumerate(cases, 1):
        prefill = params["phase"] == "prefill"
        if prefill:
            T = params["T"]
            if T > mcfg.max_position_embeddings:
                log(f"[{op} {n}/{len(cases)}] T={T} exceeds max_position_embeddings, skipped")
                continue
            ids = torch.randint(3, mcfg.vocab_size, (T,), generator=gen).to(device)
            label = f"prefill T={T}"
        else:
            B, ctx = params["B"], params["ctx"]
            prompts = torch.randint(3, mcfg.vocab_size, (B, ctx), generator=gen).to(device)
            label = f"decode B={B} ctx={ctx}"
        shape = ",".join(f"{k}={v}" for k, v in params.items())
        log(f"[{op} {n}/{len(cases)}] {label}")
        rec: list[_RoutingRecorder] = []
        ref_logits = None
        case_rows: dict[str, H.Row] = {}
        for prov in _order(providers):
            row = new_row(op, shape, params, dname, prov, device, info, cfg, stamp, 0, 0)
            row.params = {**params, "preset": preset}
            case_rows[prov] = row
            if prov.startswith("hf") and hf is None:
                row.status, row.note = H.STATUS_SKIPPED, f"transformers model unavailable: {hf_error}"
                continue
            prep = None
            try:
                if prefill:
                    prep = prepare_prefill(prov, model, hf, ids, rec)
                else:
                    prep = prepare_decode(prov, model, hf, prompts, steps, rec, allow_graph=(prov == "zaya"))
                row.note, row.params["mode"] = prep.note, prep.mode
                if prov == BASELINE:
                    ref_logits = prep.first_logits
                elif ref_logits is not None:
                    check_logits(row, prep.first_logits, ref_logits, dtype)
                first_s = prep.first_s if not H.is_gpu(device) else None
                if first_s is not None and cfg.max_measure_s is not None and first_s > cfg.max_measure_s:
                    # A call longer than the whole cap (transformers' bf16 prefill at ZAYA1-8B widths on a
                    # CPU): its first call is the one sample; the note says so (it includes any first-call
                    # overhead, which only makes this provider look slower).
                    st = H.Stats.from_samples([first_s * 1e6])
                    row.note += f"; timed once: its first call ({first_s:,.0f} s, over --max-measure-s)"
                else:
                    st = H.time_fn(prep.fn, device, cfg, setup=prep.setup, after=prep.after,
                                   max_calls=prep.max_calls, first_s=first_s)
                row.stats = dict(vars(st))
                log(f"  {prov}: median {st.median_us / 1e3:,.2f} ms over {st.reps} reps ({prep.mode})")
            except torch.OutOfMemoryError as exc:
                row.status, row.note = H.STATUS_SKIPPED, "out of memory: " + _first_line(exc)
                log(f"  {prov}: {row.note}")
            except Exception as exc:  # noqa: BLE001
                row.status, row.note = H.STATUS_ERROR, _first_line(exc)
                log(f"  {prov}: error ({row.note})")
            finally:
                del prep
                _empty_cache(device)
        # costs, from the routing our model chose (uniform expectation when our model did not run)
        if rec:
            routed, hit = rec[0].routed, rec[0].hit
        else:
            from .layer_cases import expected_experts_hit

            ntok = params.get("T", params.get("B"))
            E = mcfg.num_experts
            routed = [round(ntok * E / (E + 1))] * mcfg.num_hidden_layers
            hit = [round(expected_experts_hit(ntok, E))] * mcfg.num_hidden_layers
        if prefill:
            T = params["T"]
            nbytes, flops, wbytes = step_cost(costs, new_tokens=T, pairs=T * (T + 1) // 2, kv_read_tokens=0,
                                              logit_rows=1, routed=routed, hit=hit)
            ntok = T
        else:
            B, ctx = params["B"], params["ctx"]
            nbytes, flops, wbytes = step_cost(costs, new_tokens=B, pairs=B * (ctx + 1), kv_read_tokens=B * ctx,
                                              logit_rows=B, routed=routed, hit=hit)
            ntok = B
        for prov in providers:
            row = case_rows[prov]
            row.bytes, row.flops, row.tokens = int(nbytes), int(flops), ntok
            row.params["weight_bytes"] = int(wbytes)
            row.params["experts_hit_per_layer"] = round(sum(hit) / max(1, len(hit)), 2)
            row.params["routed_tokens"] = int(sum(routed))
            row.fill_derived(roof)
            if row.median_us:
                row.tokens_per_s = ntok / (row.median_us * 1e-6)
                if not prefill and roof is not None and roof.copy_gbps > 0:
                    row.floor_tokens_per_s = ntok / (wbytes / (roof.copy_gbps * 1e9))
                    row.pct_floor = 100.0 * row.tokens_per_s / row.floor_tokens_per_s
                    cpu_us = row.stats.get("cpu_median_us")
                    if cpu_us and roof.copy_gbps_cpu:
                        row.pct_floor_cpu = 100.0 * (wbytes / (cpu_us * 1e-6) / 1e9) / roof.copy_gbps_cpu
            rows.append(row)
        set_speedups([case_rows[p] for p in providers], BASELINE)
    del hf, model
    _empty_cache(device)
    return rows


# --------------------------------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------------------------------

COLUMNS = ("op", "shape", "dtype", "provider", "mode", "median ms", "tok/s", "floor tok/s", "%floor", "%floor cpu",
           "GB/s", "TFLOP/s", "%roofline", "x hf", "max rel err", "status")


def format_table(rows: Sequence[H.Row]) -> str:
    def f(v, spec):
        return "-" if v is None else format(v, spec)

    body = []
    for r in rows:
        med = r.status if r.stats is None else f"{r.stats['median_us'] / 1e3:,.3f}"
        status = {"ok": "ok", "mismatch": "WRONG"}.get(r.status, r.status)
        body.append((r.op, r.shape, r.dtype, r.provider, str(r.params.get("mode", "-")), med,
                     f(r.tokens_per_s, ",.1f"), f(r.floor_tokens_per_s, ",.1f"), f(r.pct_floor, ".1f"),
                     f(r.pct_floor_cpu, ".1f"),
                     f(r.gbps, ",.2f"), f(r.tflops, ".4f"), f(r.pct_roofline, ".1f"), f(r.speedup_vs_eager, ".2f"),
                     f(r.max_rel_err, ".2g"), status))
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(COLUMNS)]
    left = {0, 1, 2, 3, 4, 15}

    def line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(COLUMNS), "  ".join("-" * w for w in widths)]
    prev = None
    for r, b in zip(rows, body):
        if prev is not None and r.shape != prev:
            out.append("")
        prev = r.shape
        out.append(line(b))
    notes = {}
    for r in rows:
        if r.note:
            notes.setdefault((r.provider, r.note), []).append(r.shape)
    if notes:
        out.append("")
        for (prov, note), where in notes.items():
            out.append(f"{prov} ({', '.join(where) if len(where) <= 3 else f'{len(where)} cases'}): {note}")
    return "\n".join(out)
