"""The reference ops, composed into ZAYA1 decoder layers, against transformers' ZayaDecoderLayer (CPU).

A small random ZayaForCausalLM (2 layers, so layer 1 consumes layer 0's router state) is run by
transformers (eager attention and eager experts) and by a composition of ``zaya_ops.reference`` ops
with a paged KV cache and per-slot conv/value states, the way the serving model will call the kernels.
Every parameter is randomised (init leaves residual scales at 1, biases and the QK temperature at 0,
which would hide mistakes), and the router is biased so that both the skip class and real experts
are chosen.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zaya_ops import reference as ref
from zaya_ops.model.testing import randomise_hf_model

transformers = pytest.importorskip("transformers")
from transformers import ZayaConfig  # noqa: E402
from transformers.cache_utils import DynamicCache  # noqa: E402
from transformers.models.zaya.modeling_zaya import ZayaForCausalLM  # noqa: E402

# (hidden, nq, nkv, head_dim, experts)
SHAPES = {
    "h64-q4kv2-d16-e4": (64, 4, 2, 16, 4),
    "h128-q8kv2-d32-e8": (128, 8, 2, 32, 8),
    "h256-q2kv1-d64-e16": (256, 2, 1, 64, 16),
}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
BLOCK = 16


# --------------------------------------------------------------------------------------------------
# Model construction
# --------------------------------------------------------------------------------------------------


def make_model(shape: str, dtype: torch.dtype, seed: int = 0, attention_bias: bool = False):
    H, nq, nkv, D, E = SHAPES[shape]
    config = ZayaConfig(
        vocab_size=32, hidden_size=H, num_hidden_layers=2, num_attention_heads=nq, num_key_value_heads=nkv,
        head_dim=D, num_experts=E, moe_intermediate_size=64, router_hidden_size=32,
        max_position_embeddings=256, attention_bias=attention_bias, bos_token_id=None, eos_token_id=None,
        attn_implementation="eager", experts_implementation="eager",
    )
    # Built like from_pretrained(dtype=...) does: under that default dtype, so that the buffers created
    # explicitly in fp32 (rotary inv_freq, balancing_biases) stay fp32. (model.to(bf16) would round
    # inv_freq to bf16 too, and transformers' rotary tables would then use the rounded frequencies.)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = ZayaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(default)
    randomise_hf_model(model, seed)
    return model


def random_embeds(model, B: int, T: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1000 + seed)
    H = model.config.hidden_size
    return torch.randn(B, T, H, generator=gen).to(model.dtype)


# --------------------------------------------------------------------------------------------------
# transformers side: run ZayaModel and capture each decoder layer's outputs
# --------------------------------------------------------------------------------------------------


def hf_forward(model, embeds: torch.Tensor, cache: DynamicCache | None = None):
    """Returns (per-layer fp32 residual outputs [B, T, H], per-layer router states, per-layer
    router indices (skip masked to 0, as transformers does), final normed output)."""
    outs, states, indices = [], [], []

    def on_layer(module, args, out):  # a hook returning None leaves the output alone
        outs.append(out[0])
        states.append(out[1])

    def on_gate(module, args, out):
        indices.append(out[2])

    hooks = []
    for layer in model.model.layers:
        hooks.append(layer.register_forward_hook(on_layer))
        hooks.append(layer.mlp.gate.register_forward_hook(on_gate))
    try:
        with torch.no_grad():
            res = model.model(inputs_embeds=embeds, past_key_values=cache, use_cache=cache is not None)
    finally:
        for h in hooks:
            h.remove()
    return outs, states, indices, res.last_hidden_state


# --------------------------------------------------------------------------------------------------
# Reference side: paged cache + the op composition
# --------------------------------------------------------------------------------------------------


class RefCache:
    """Paged KV cache (blocks handed out in a scrambled order) and per-slot conv/value states, for
    every layer of ``model``, for ``num_seqs`` sequences of up to ``max_len`` tokens."""

    def __init__(self, model, num_seqs: int, max_len: int, seed: int = 0):
        cfg = model.config
        dt = model.dtype
        nkv, D = cfg.num_key_value_heads, cfg.head_dim
        C = (cfg.num_attention_heads + nkv) * D
        per_seq = -(-max_len // BLOCK)
        num_blocks = num_seqs * per_seq + 1
        perm = torch.randperm(num_blocks, generator=torch.Generator().manual_seed(seed))
        self.block_table = perm[: num_seqs * per_seq].view(num_seqs, per_seq).to(torch.int32)
        self.lens = [0] * num_seqs
        self.k = [torch.zeros(num_blocks, BLOCK, nkv, D, dtype=dt) for _ in model.model.layers]
        self.v = [torch.zeros(num_blocks, BLOCK, nkv, D, dtype=dt) for _ in model.model.layers]
        self.conv = [torch.zeros(num_seqs, C, 2, dtype=dt) for _ in model.model.layers]
        self.value = []
        for layer in model.model.layers:
            vs = torch.zeros(num_seqs, nkv * D // 2, dtype=dt)
            bias = layer.self_attn.qkv_proj.v_proj_delayed.bias
            if bias is not None:  # a new slot holds the delayed projection of a zero input
                vs[:] = bias.detach()
            self.value.append(vs)


def _lin(x, mod):
    return F.linear(x, mod.weight, mod.bias)


@torch.no_grad()
def ref_forward(model, embeds: torch.Tensor, new_lens: list[int], cache: RefCache, seqs: list[int] | None = None):
    """One packed step through the whole model with the reference ops.

    ``embeds`` [T, H] holds ``new_lens[i]`` new tokens of sequence ``seqs[i]`` (default i), packed.
    Returns (per-layer fp32 residuals [T, H], per-layer router states, per-layer expert indices,
    final normed output [T, H]); advances ``cache``.
    """
    cfg = model.config
    eps = cfg.rms_norm_eps
    seqs = list(range(len(new_lens))) if seqs is None else seqs
    dev = embeds.device
    mm = model.model
    layers = mm.layers
    rope = model.model.rotary_emb
    cos_sin = ref.rope_cos_sin(rope.hybrid_inv_freq, cfg.max_position_embeddings, model.dtype)

    cu = [0]
    positions, slot_mapping = [], []
    for s, n in zip(seqs, new_lens):
        cu.append(cu[-1] + n)
        pos = torch.arange(cache.lens[s], cache.lens[s] + n)
        positions.append(pos)
        slot_mapping.append(cache.block_table[s].long()[pos // BLOCK] * BLOCK + pos % BLOCK)
    cu_seqlens = torch.tensor(cu, dtype=torch.int32, device=dev)
    positions = torch.cat(positions)
    slot_mapping = torch.cat(slot_mapping)
    state_indices = torch.tensor(seqs, dtype=torch.int32)
    seqused_k = torch.tensor([cache.lens[s] + n for s, n in zip(seqs, new_lens)], dtype=torch.int32)
    block_table = cache.block_table[seqs]

    r = ((embeds + mm.input_hidden_states_bias) * mm.input_hidden_states_scale).to(torch.float32)
    x = ref.rms_norm(r, layers[0].input_layernorm.weight, eps)
    prev = None
    outs, states, indices = [], [], []
    for i, layer in enumerate(layers):
        attn = layer.self_attn
        p = attn.qkv_proj
        q = ref.cca_qkv(
            _lin(x, p.q_proj), _lin(x, p.k_proj), _lin(x, p.v_proj_current), _lin(x, p.v_proj_delayed),
            p.conv_qk_depthwise.weight, p.conv_qk_depthwise.bias, p.conv_qk_grouped.weight,
            p.conv_qk_grouped.bias, attn.qk_norm.temp, cos_sin, positions, cu_seqlens,
            cache.conv[i], cache.value[i], state_indices, cache.k[i], cache.v[i], slot_mapping,
        )
        o, _ = ref.cca_attention(q, cache.k[i], cache.v[i], cu_seqlens, seqused_k, block_table)
        a = _lin(o, attn.o_proj)
        s1 = layer.post_attention_residual_scale
        r, x2 = ref.residual_scale_rmsnorm(
            a, r, s1.hidden_states_bias, s1.hidden_states_scale, s1.residual_bias, s1.residual_scale,
            layer.post_attention_layernorm.weight, eps,
        )
        g = layer.mlp.gate
        gm = g.router_mlp
        idx, w, prev, _, _ = ref.router(
            x2, prev, g.down_proj.weight, g.down_proj.bias, g.router_states_scale if prev is not None else None,
            gm.norm.weight, gm.fc1.weight, gm.fc1.bias, gm.fc2.weight, gm.fc2.bias, gm.out_proj.weight,
            g.balancing_biases, eps,
        )
        m = ref.moe_top1(x2, idx, w, layer.mlp.experts.gate_up_proj, layer.mlp.experts.down_proj)
        next_norm = layers[i + 1].input_layernorm.weight if i + 1 < len(layers) else mm.norm.weight
        s2 = layer.post_mlp_residual_scale
        r, x = ref.residual_scale_rmsnorm(
            m, r, s2.hidden_states_bias, s2.hidden_states_scale, s2.residual_bias, s2.residual_scale,
            next_norm, eps,
        )
        outs.append(r)
        states.append(prev)
        indices.append(idx)
    for s, n in zip(seqs, new_lens):
        cache.lens[s] += n
    return outs, states, indices, x


# --------------------------------------------------------------------------------------------------
# Tolerances
# --------------------------------------------------------------------------------------------------

# The reference replays transformers' ops in the same order and dtypes, so on one device most results
# are bit-identical (on this CPU: all bf16 results; max fp32 error 1.4e-6 relative). What can differ is
# the accumulation order inside GEMMs/convs/reductions whose shapes differ (per-sequence [n, ...] calls
# vs transformers' padded [B, T, ...] batch, gathered paged keys vs DynamicCache's concatenated keys),
# i.e. an occasional last-bit difference in an intermediate.
# fp32: such differences are ~1e-7 relative; after two layers we allow 1e-5 of the value's magnitude.
# bf16/fp16: one ulp (2^-8 / 2^-11 relative) in an intermediate (e.g. the attention output) moves the
# fp32 residual by about one ulp of the branch it feeds, and a final-norm element by one ulp of itself,
# so we allow 2 ulps of (|value| + rms of the output), elementwise. A flipped expert choice (a near tie
# of the biased router probabilities) would give an error of the order of the expert output itself,
# far above this (and the expert indices are compared exactly).
TOL = {torch.float32: 1e-5, torch.bfloat16: 2 * 2.0**-8, torch.float16: 2 * 2.0**-11}


def assert_close_scaled(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, what: str) -> float:
    got, want = got.float(), want.float()
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    rms = want.pow(2).mean().sqrt().item()
    rel = ((got - want).abs() / (want.abs() + rms + 1e-30)).max().item()
    assert rel <= TOL[dtype], f"{what}: max err {rel:.3g} of (|value| + rms {rms:.3g}) > {TOL[dtype]:.3g}"
    return rel


def _hf_index(idx: torch.Tensor, E: int) -> torch.Tensor:
    """Our expert index with the skip class mapped to 0, as transformers reports it."""
    return torch.where(idx == E, torch.zeros_like(idx), idx).long()


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("B,T", [(1, 1), (1, 7), (2, 33)])
def test_layers_match_transformers(shape, dtype, B, T):
    model = make_model(shape, dtype, seed=10 * list(SHAPES).index(shape) + B + T)
    E = model.config.num_experts
    embeds = random_embeds(model, B, T, seed=T)
    hf_outs, hf_states, hf_idx, hf_final = hf_forward(model, embeds)

    cache = RefCache(model, B, T)
    outs, states, idx, final = ref_forward(model, embeds.reshape(B * T, -1), [T] * B, cache)
    H = model.config.hidden_size
    for i in range(len(outs)):
        assert torch.equal(_hf_index(idx[i], E), hf_idx[i].reshape(-1)), f"layer {i} expert choice"
        assert_close_scaled(outs[i], hf_outs[i].reshape(B * T, H), dtype, f"layer {i} residual")
        assert_close_scaled(states[i], hf_states[i].reshape(B * T, -1), dtype, f"layer {i} router state")
    assert_close_scaled(final, hf_final.reshape(B * T, H), dtype, "final norm")
    if B * T >= 66:  # the routing must exercise both the skip class and real experts
        all_idx = torch.cat(idx)
        assert (all_idx == E).any() and (all_idx < E).any()


@pytest.mark.parametrize("dtype", [*DTYPES.values(), torch.float16], ids=[*DTYPES, "fp16"])
@pytest.mark.parametrize("shape", ["h64-q4kv2-d16-e4", "h256-q2kv1-d64-e16"])
def test_prefill_then_decode_matches_transformers_cache(shape, dtype):
    """transformers with a DynamicCache (prefill T-1, then two single-token decode steps) against the
    reference ops on the paged cache and slot states."""
    B, T = 2, 21
    model = make_model(shape, dtype, seed=7, attention_bias=True)
    embeds = random_embeds(model, B, T + 1, seed=3)
    hf_cache = DynamicCache(config=model.config)
    cache = RefCache(model, B, T + 1)
    for lo, hi in ((0, T - 1), (T - 1, T), (T, T + 1)):
        chunk = embeds[:, lo:hi]
        hf_outs, _, _, hf_final = hf_forward(model, chunk, hf_cache)
        outs, _, _, final = ref_forward(model, chunk.reshape(B * (hi - lo), -1), [hi - lo] * B, cache)
        for i in range(len(outs)):
            assert_close_scaled(outs[i], hf_outs[i].reshape(outs[i].shape), dtype, f"[{lo}:{hi}] layer {i}")
        assert_close_scaled(final, hf_final.reshape(final.shape), dtype, f"[{lo}:{hi}] final norm")


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
def test_decode_equals_prefill(dtype):
    """Prefill T-1 tokens then decode 1 through the same cache/states == prefill of all T tokens."""
    T = 19
    model = make_model("h128-q8kv2-d32-e8", dtype, seed=3)
    embeds = random_embeds(model, 1, T, seed=5)[0]
    full = ref_forward(model, embeds, [T], RefCache(model, 1, T))
    cache = RefCache(model, 1, T)
    ref_forward(model, embeds[: T - 1], [T - 1], cache)
    step = ref_forward(model, embeds[T - 1 :], [1], cache)
    for i in range(len(step[0])):
        assert_close_scaled(step[0][i], full[0][i][-1:], dtype, f"layer {i} residual")
    assert_close_scaled(step[3], full[3][-1:], dtype, "final norm")


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
def test_packed_varlen_equals_separate(dtype):
    """Sequences of different lengths (one of them empty in a step, one decoding while another
    prefills) packed into one call == each sequence run alone; and each alone == transformers."""
    model = make_model("h64-q4kv2-d16-e4", dtype, seed=11)
    lens = [(6, 1), (0, 9), (3, 5)]  # tokens of seq 0, 1, 2 in step 1 and step 2
    totals = [a + b for a, b in lens]
    embeds = [random_embeds(model, 1, t, seed=20 + s)[0] for s, t in enumerate(totals)]

    packed = RefCache(model, 3, max(totals), seed=1)
    packed_out = [[], [], []]
    for step in range(2):
        n = [lens[s][step] for s in range(3)]
        start = [0 if step == 0 else lens[s][0] for s in range(3)]
        chunk = torch.cat([embeds[s][start[s] : start[s] + n[s]] for s in range(3)])
        outs, _, _, final = ref_forward(model, chunk, n, packed)
        offs = [0]
        for k in n:
            offs.append(offs[-1] + k)
        for s in range(3):
            packed_out[s].append(final[offs[s] : offs[s + 1]])
    for s in range(3):
        alone = RefCache(model, 1, totals[s], seed=2 + s)
        _, _, _, final = ref_forward(model, embeds[s], [totals[s]], alone)
        got = torch.cat(packed_out[s])
        assert_close_scaled(got, final, dtype, f"seq {s} packed vs alone")
        _, _, _, hf_final = hf_forward(model, embeds[s][None])
        assert_close_scaled(final, hf_final[0], dtype, f"seq {s} alone vs transformers")
        # The slot states carry on identically.
        sl = [packed.conv[0][s], packed.value[0][s]]
        assert_close_scaled(sl[0], alone.conv[0][0], dtype, f"seq {s} conv state")
        assert_close_scaled(sl[1], alone.value[0][0], dtype, f"seq {s} value state")


def test_rope_table_matches_transformers():
    for shape in SHAPES:
        for dtype in (torch.bfloat16, torch.float32):
            model = make_model(shape, dtype)
            cfg = model.config
            rp = cfg.rope_parameters["hybrid"]
            inv = ref.rope_inv_freq(cfg.head_dim, rp["partial_rotary_factor"], rp["rope_theta"])
            assert torch.equal(inv, model.model.rotary_emb.hybrid_inv_freq)
            P = 64
            table = ref.rope_cos_sin(inv, P, dtype)
            x = torch.zeros(1, 1, dtype=dtype)
            cos, sin = model.model.rotary_emb(x, torch.arange(P)[None], "hybrid")
            half = table.shape[1] // 2
            assert table.shape == (P, cos.shape[-1])
            torch.testing.assert_close(table[:, :half], cos[0, :, :half], atol=2e-7, rtol=0)
            torch.testing.assert_close(table[:, half:], sin[0, :, :half], atol=2e-7, rtol=0)
            assert torch.equal(cos[0, :, :half], cos[0, :, half:])


def test_op_details():
    """Argument conventions the layer tests do not reach."""
    gen = torch.Generator().manual_seed(0)
    T, H, R, E, I = 9, 32, 16, 3, 8
    x = torch.randn(T, H, generator=gen)
    w = lambda *s: torch.randn(*s, generator=gen) / s[-1] ** 0.5  # noqa: E731
    args = (w(R, H), w(R), None, 1 + w(R), w(R, R), w(R), w(R, R), w(R), 4 * w(E + 1, R))
    bb = torch.zeros(E + 1)
    bb[-1] = 10.0  # everything to the skip class
    idx, wt, state, logits, counts = ref.router(x, None, *args, bb)
    assert idx.dtype == torch.int32 and counts.dtype == torch.int32 and logits.shape == (0, E + 1)
    assert (idx == E).all() and (wt == 0).all() and counts.tolist() == [0] * E + [T]
    bb[-1] = -10.0
    idx, wt, _, logits, counts = ref.router(x, state, *args[:2], 1 + w(R), *args[3:], bb, return_logits=True)
    assert logits.shape == (T, E + 1) and (idx < E).all() and (wt > 0).all() and int(counts.sum()) == T

    gu, dp = w(E, 2 * I, H), w(E, H, I)
    idx = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 1], dtype=torch.int32)
    full = ref.moe_top1(x, idx, torch.ones(T), gu, dp)
    assert (full[idx == E] == 0).all() and (full[idx < E] != 0).any(dim=1).all()
    part = ref.moe_top1(x, idx, torch.ones(T), gu, dp, 1, 2) + ref.moe_top1(x, idx, torch.ones(T), gu, dp, 0, 1) \
        + ref.moe_top1(x, idx, torch.ones(T), gu, dp, 2, -1)
    torch.testing.assert_close(part, full, atol=0, rtol=0)
    for bad in (-1, E + 1):
        with pytest.raises(ValueError, match="expert_index"):
            ref.moe_top1(x, torch.full((T,), bad), torch.ones(T), gu, dp)


def test_cca_qkv_state_rules():
    """Zero-length sequences keep their slot state; slot_mapping -1 writes nothing."""
    nq, nkv, D, T = 2, 1, 8, 4
    C = (nq + nkv) * D
    gen = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    conv_state, value_state = r(3, C, 2), r(3, nkv * D // 2)
    conv0, value0 = conv_state.clone(), value_state.clone()
    kc, vc_ = torch.zeros(2, 4, nkv, D), torch.zeros(2, 4, nkv, D)
    cos_sin = ref.rope_cos_sin(ref.rope_inv_freq(D, 0.5, 10000.0), 16, torch.float32)
    q = ref.cca_qkv(
        r(T, nq * D), r(T, nkv * D), r(T, nkv * D // 2), r(T, nkv * D // 2), r(C, 1, 2), r(C), r(C, D, 2),
        r(C), 1 + r(nkv).abs(), cos_sin, torch.arange(T), torch.tensor([0, 0, T], dtype=torch.int32),
        conv_state, value_state, torch.tensor([2, 1], dtype=torch.int32), kc, vc_,
        torch.tensor([0, -1, 5, 6]),
    )
    assert q.shape == (T, nq, D)
    assert torch.equal(conv_state[2], conv0[2]) and torch.equal(value_state[2], value0[2])
    assert torch.equal(conv_state[0], conv0[0]) and not torch.equal(conv_state[1], conv0[1])
    assert not torch.equal(value_state[1], value0[1])
    written = kc.reshape(8, nkv, D).abs().sum((1, 2)) != 0
    assert written.tolist() == [True, False, False, False, False, True, True, False]
    # the norm: every q head has L2 norm sqrt(D) (rotation preserves it)
    torch.testing.assert_close(q.norm(dim=-1), torch.full((T, nq), D**0.5))


def test_attention_paged_offsets_lse():
    """cca_attention against SDPA with explicit masks: GQA, paged blocks, query offsets (decode and
    chunked prefill), an empty sequence, and lse = logsumexp of the scaled scores."""
    gen = torch.Generator().manual_seed(5)
    nq, nkv, D, bs = 4, 2, 16, 4
    n_q = [3, 0, 1, 5]
    n_k = [3, 2, 9, 11]  # sequence b's queries are its last n_q[b] keys
    blocks_per = 3
    k_cache = torch.randn(20, bs, nkv, D, generator=gen)
    v_cache = torch.randn(20, bs, nkv, D, generator=gen)
    block_table = torch.randperm(20, generator=gen)[: 4 * blocks_per].view(4, blocks_per).to(torch.int32)
    q = torch.randn(sum(n_q), nq, D, generator=gen)
    cu = torch.tensor([0, 3, 3, 4, 9], dtype=torch.int32)
    out, lse = ref.cca_attention(q, k_cache, v_cache, cu, torch.tensor(n_k, dtype=torch.int32), block_table)
    assert out.shape == (sum(n_q), nq * D) and lse.shape == (nq, sum(n_q)) and lse.dtype == torch.float32
    for b in range(4):
        s, e = int(cu[b]), int(cu[b + 1])
        if e == s:
            continue
        j = torch.arange(n_k[b])
        blk = block_table[b].long()[j // bs]
        k = k_cache[blk, j % bs].transpose(0, 1).repeat_interleave(nq // nkv, 0)
        v = v_cache[blk, j % bs].transpose(0, 1).repeat_interleave(nq // nkv, 0)
        qb = q[s:e].transpose(0, 1)
        allowed = j[None, :] <= (n_k[b] - (e - s) + torch.arange(e - s))[:, None]
        want = F.scaled_dot_product_attention(qb, k, v, attn_mask=allowed)
        torch.testing.assert_close(out[s:e], want.transpose(0, 1).reshape(e - s, -1), atol=1e-5, rtol=1e-5)
        scores = (qb @ k.transpose(1, 2)) * D**-0.5
        want_lse = torch.logsumexp(scores.masked_fill(~allowed, float("-inf")), -1)
        torch.testing.assert_close(lse[:, s:e], want_lse, atol=1e-5, rtol=1e-5)
