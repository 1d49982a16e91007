"""zaya_ops.ZayaForCausalLM against transformers' ZayaForCausalLM (5.18), on CPU.

Small random transformers models (every parameter randomised: residual scales and biases, qk_norm.temp,
router_states_scale, balancing_biases; the skip class wins for part of the tokens) are saved with
``save_pretrained`` (safetensors) and loaded by our loader; transformers runs eager attention and eager
experts (the rounding points the spec and the reference ops follow). The in-memory transformers model is
the comparison (its from_pretrained would overwrite balancing_biases[-1], see the spec).

Tolerances (``zaya_ops.model.testing.tolerance``, on max |got - want| / (|want| + rms(want))):
our model replays transformers' operations in the same order and dtypes, so what can differ is only the
accumulation order inside GEMMs/convolutions/reductions whose shapes differ (the fused q/k/v matmul,
per-sequence packed calls vs transformers' [B, T] batch, paged keys vs concatenated keys).
* fp32: such differences are ~1e-7 relative per op; through a few layers and the LM head we allow 2e-5
  (measured: <= 1e-6).
* bf16: one ulp (2^-8 relative) in an intermediate moves a logit by about one ulp of the logits; we allow
  4 ulps of (|logit| + rms) (measured on this CPU: bit-identical). A flipped expert choice would be far
  larger (and greedy tokens are compared exactly).
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers.cache_utils import DynamicCache  # noqa: E402

from zaya_ops.model import ZayaForCausalLM  # noqa: E402
from zaya_ops.model.testing import make_hf_model, max_scaled_error, save_hf_model, tolerance  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CONFIGS = {
    # 2 layers, GQA 4/2, head dim 16 (the reference backend takes any even head dim)
    "d16": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                num_experts=4),
    # 3 layers (router state chained twice), MQA, biases on q/k/v/o, untied head with a bias
    "d32-bias-untied": dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
                            head_dim=32, num_experts=6, attention_bias=True, tie_word_embeddings=False,
                            lm_head_bias=True),
}
V = 96


# Tiny matrices: one thread is faster, and immune to a busy machine's oversubscription.
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


_PAIRS: dict = {}


def pair(cfg: str, dtype: torch.dtype, tmp_path_factory):
    """(transformers model in memory, our model loaded from its safetensors checkpoint), cached."""
    key = (cfg, dtype)
    if key not in _PAIRS:
        seed = list(CONFIGS).index(cfg) * 10 + (dtype == torch.bfloat16)
        hf = make_hf_model(dtype, seed=seed, vocab_size=V, **CONFIGS[cfg])
        d = save_hf_model(hf, tmp_path_factory.mktemp(f"ckpt-{cfg}-{dtype}".replace("torch.", "")))
        ours = ZayaForCausalLM.from_pretrained(d, dtype=dtype)
        _PAIRS[key] = (hf, ours)
    return _PAIRS[key]


def ids_of(lens, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, V, (n,), generator=g) for n in lens]


def hf_logits(hf, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(ids[None]).logits[0]


def check(got, want, dtype, what):
    err = max_scaled_error(got, want)
    assert err <= tolerance(dtype), f"{what}: scaled error {err:.3g} > {tolerance(dtype):.3g}"
    return err


params = pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
configs = pytest.mark.parametrize("cfg", list(CONFIGS))


@configs
@params
def test_prefill_packed_batch_matches_transformers(cfg, dtype, tmp_path_factory):
    """A batch of sequences of different lengths (1, 6, 19), packed in one call with no padding, against
    transformers on each sequence alone: every position's logits, and the last-token logits."""
    hf, ours = pair(cfg, dtype, tmp_path_factory)
    seqs = ids_of([1, 6, 19], seed=1)
    out = ours(seqs, all_logits=True)
    assert out.logits.dtype == dtype and out.logits.shape == (26, V)
    last = ours(seqs).logits
    for b, s in enumerate(seqs):
        want = hf_logits(hf, s)
        got = out.logits[out.cu_seqlens[b]:out.cu_seqlens[b + 1]]
        check(got, want, dtype, f"seq {b} prefill logits")
        check(last[b], want[-1], dtype, f"seq {b} last logits")


@configs
@params
def test_decode_token_by_token_matches_transformers(cfg, dtype, tmp_path_factory):
    """Prefill two prompts of different lengths (3 and 8), then decode 7 given tokens one at a time (a
    static-shape decode step for the batch); against transformers' own cached decoding (DynamicCache) of
    each sequence, step by step, and its full-sequence forward."""
    hf, ours = pair(cfg, dtype, tmp_path_factory)
    prompts = ids_of([3, 8], seed=2)
    follow = ids_of([7, 7], seed=3)
    cache = ours.new_cache(2, 15, block_size=4)
    got = [[ours(prompts, cache).logits]]
    for t in range(7):
        got.append([ours.decode(torch.stack([follow[0][t], follow[1][t]]), cache)])
    for b in range(2):
        hf_cache = DynamicCache(config=hf.config)
        with torch.no_grad():
            steps = [hf(prompts[b][None], past_key_values=hf_cache, use_cache=True).logits[0, -1]]
            for t in range(7):
                steps.append(hf(follow[b][t].view(1, 1), past_key_values=hf_cache, use_cache=True).logits[0, -1])
        full = hf_logits(hf, torch.cat([prompts[b], follow[b]]))
        for t, want in enumerate(steps):
            check(got[t][0][b], want, dtype, f"seq {b} step {t} vs transformers cached decode")
            check(got[t][0][b], full[len(prompts[b]) - 1 + t], dtype, f"seq {b} step {t} vs full forward")


@configs
@params
def test_greedy_generation_matches_transformers(cfg, dtype, tmp_path_factory):
    """Our batched greedy generate (prompts of 4, 9 and 1 tokens together) gives transformers'
    generate tokens for each prompt alone."""
    hf, ours = pair(cfg, dtype, tmp_path_factory)
    prompts = ids_of([4, 9, 1], seed=4)
    out = ours.generate(prompts, max_new_tokens=12, stop_tokens=())
    assert out.finish_reasons == ["length"] * 3 and out.decode_steps == 11
    for b, p in enumerate(prompts):
        with torch.no_grad():
            want = hf.generate(p[None], max_new_tokens=12, do_sample=False, attention_mask=torch.ones(1, len(p)))
        assert out.tokens[b] == want[0, len(p):].tolist(), f"prompt {b}"


@params
def test_left_padded_transformers_batch_matches_packed(dtype, tmp_path_factory):
    """transformers on a left-padded batch (attention_mask, position_ids from it, as generate makes them)
    against our packed batch: the real tokens' logits, and greedy generation of the whole batch."""
    hf, ours = pair("d16", dtype, tmp_path_factory)  # no q/k/v biases: left padding is then exact (spec)
    seqs = ids_of([5, 11, 2], seed=5)
    T = max(len(s) for s in seqs)
    ids = torch.zeros(3, T, dtype=torch.long)
    mask = torch.zeros(3, T, dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, T - len(s):] = s
        mask[b, T - len(s):] = 1
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        want = hf(ids, attention_mask=mask, position_ids=pos).logits
    got = ours(seqs, all_logits=True)
    for b, s in enumerate(seqs):
        check(got.logits[got.cu_seqlens[b]:got.cu_seqlens[b + 1]], want[b, T - len(s):], dtype, f"seq {b}")
    with torch.no_grad():
        hf_gen = hf.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    ours_gen = ours.generate(seqs, max_new_tokens=8, stop_tokens=())
    assert ours_gen.tokens == hf_gen[:, T:].tolist()


def test_balancing_biases_loaded_as_stored(tmp_path_factory):
    """All E+1 stored balancing biases are loaded (transformers' from_pretrained would reset the last)."""
    hf, ours = pair("d16", torch.float32, tmp_path_factory)
    for i, layer in enumerate(hf.model.layers):
        stored = layer.mlp.gate.balancing_biases
        assert stored[-1].item() != -1.0
        assert ours.layers[i].balancing_biases.dtype == torch.float32
        assert torch.equal(ours.layers[i].balancing_biases, stored)


@params
def test_reference_and_auto_backends_agree(dtype, tmp_path_factory):
    """backend="auto" (compiled kernels where they exist for the CPU, reference elsewhere) and
    backend="reference" give the same logits within the tolerance, and report what ran."""
    _, ours = pair("d32-bias-untied", dtype, tmp_path_factory)
    seqs = ids_of([7, 3], seed=6)
    ours.set_backend("reference")
    try:
        want = ours(seqs, all_logits=True).logits
        rep = ours.op_backends()
        assert all(v == "reference (backend='reference')" for v in rep.values()), rep
    finally:
        ours.set_backend("auto")
    got = ours(seqs, all_logits=True).logits
    check(got, want, dtype, "auto vs reference")
    rep = ours.op_backends()
    assert set(rep) == {"rms_norm", "residual_scale_rmsnorm", "cca_qkv", "cca_attention", "router", "moe_top1"}
    assert all(v.startswith(("kernel (cpu)", "reference (")) for v in rep.values()), rep
    # head dim 32 is outside the compiled attention kernels' limits: auto says so
    assert "head_dim 32" in rep["cca_qkv"] and "head_dim 32" in rep["cca_attention"]
