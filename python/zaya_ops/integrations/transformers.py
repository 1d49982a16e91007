"""Run a loaded transformers ``ZayaForCausalLM`` on the zaya_ops ops, with its own weights and cache.

>>> from transformers import AutoModelForCausalLM
>>> from zaya_ops.integrations.transformers import patch
>>> model = AutoModelForCausalLM.from_pretrained("Zyphra/ZAYA1-8B", dtype="bfloat16")   # doctest: +SKIP
>>> patch(model)                    # every decoder layer and the final norm now call zaya_ops   # doctest: +SKIP
>>> model.generate(...)             # transformers' generate, DynamicCache, masks: unchanged     # doctest: +SKIP

``patch`` replaces the ``forward`` of each ``ZayaDecoderLayer`` (and of the final ``model.norm``) by one that
calls ``rms_norm``, ``cca_qkv``, ``cca_attention``, ``residual_scale_rmsnorm``, ``router`` and ``moe_top1``
(the dense projections stay torch matmuls on the module's own weights, read at every call, so weight
changes after patching are seen). The transformers cache stays the source of truth: the conv and
recurrent states are read from and written back to it, and the new keys/values go through
``past_key_values.update``; attention then reads the full keys as a paged cache of block size 1 whose block
table lists each row's unmasked key positions.

Training: in grad mode with parameters (or inputs) that require grad, attention calls
``cca_qkv_functional`` (k and v returned, not written) instead of ``cca_qkv``, so ``loss.backward()`` gives
transformers' gradients; under ``backend="auto"`` an op without a backward yet runs its reference there
(``zaya_ops.backward_backends()``). Packed sequences (transformers' packed format: one row, position ids
restarting at 0 per sequence, no attention mask) attend per sequence as transformers' block-diagonal mask
says; the CCA convolution runs over the row, as in transformers.

Masks: any 4-D mask is expressed exactly (queries in runs that see a growing causal prefix of the same keys
share one attention segment, others get one each; a query that sees no key, as a left-padding token,
gets the mean of its row's values and the gradient transformers' eager attention gives it).

Limits (a clear error otherwise):
no sliding-window layers; no beam-search cache reordering beyond what transformers does itself; router
logits are not recorded (``output_router_logits``), and no attention weights are returned.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from ..model.backend import OpBackend

__all__ = ["patch", "unpatch", "is_patched", "op_backends"]

_ATTR = "_zaya_ops_patch"


def _runner(model) -> OpBackend:
    state = getattr(model, _ATTR, None)
    if state is None:
        raise ValueError("this model is not patched by zaya_ops")
    return state["ops"]


def is_patched(model) -> bool:
    """Whether :func:`patch` was applied to ``model`` (and not undone)."""
    return getattr(model, _ATTR, None) is not None


def op_backends(model) -> dict[str, str]:
    """Which backend ran each op in a patched model (see ``ZayaForCausalLM.op_backends``)."""
    return _runner(model).report()


def _base(model):
    base = getattr(model, "model", model)
    if not hasattr(base, "layers") or not hasattr(base, "norm"):
        raise ValueError(f"patch expects a transformers ZayaForCausalLM or ZayaModel, got {type(model).__name__}")
    return base


def patch(model, backend: str = "auto"):
    """Make a transformers ``ZayaForCausalLM`` (or ``ZayaModel``) run its decoder layers on zaya_ops.

    Args:
        model: a loaded transformers ZAYA model (any dtype/device the ops support).
        backend: "auto", "ops" or "reference" (see ``zaya_ops.model.backend``). Under "auto" each kernel
            passes ``zaya_ops.selftest``'s check before its first use, else its op runs on the reference
            (one ``zaya_ops.SelfTestWarning``; :func:`op_backends` says why).
    Returns:
        the model (patched in place). :func:`unpatch` restores the original forwards.
    Raises:
        ValueError: not a ZAYA model, or a config the ops do not implement (sliding-window layers, top-k > 1).
    """
    base = _base(model)
    cfg = base.config
    if getattr(cfg, "model_type", None) != "zaya":
        raise ValueError(f"patch expects a ZAYA model (model_type 'zaya'), got {getattr(cfg, 'model_type', None)!r}")
    if any(t != "hybrid" for t in cfg.layer_types):
        raise ValueError("patch supports only 'hybrid' (full attention) layers, not sliding-window ones")
    if cfg.num_experts_per_tok != 1:
        raise ValueError(f"patch supports num_experts_per_tok=1 only, got {cfg.num_experts_per_tok}")
    if is_patched(model):
        unpatch(model)
    p = next(base.parameters())
    ops = OpBackend(backend, p.device, p.dtype, cfg.head_dim)
    originals = {}
    layers = list(base.layers)
    for i, layer in enumerate(layers):
        originals[layer] = layer.forward
        layer.forward = types.MethodType(_make_layer_forward(ops, cfg), layer)
    originals[base.norm] = base.norm.forward
    base.norm.forward = types.MethodType(_make_norm_forward(ops), base.norm)
    setattr(model, _ATTR, {"ops": ops, "originals": originals})
    return model


def unpatch(model):
    """Undo :func:`patch` (restores the transformers forwards); returns the model."""
    state = getattr(model, _ATTR, None)
    if state is None:
        return model
    for module, fwd in state["originals"].items():
        if "forward" in module.__dict__:
            del module.forward
    setattr(model, _ATTR, None)
    return model


def _make_norm_forward(ops: OpBackend):
    def forward(self, hidden_states):
        shape = hidden_states.shape
        x = hidden_states.reshape(-1, shape[-1])
        return ops("rms_norm", x, self.weight, self.variance_epsilon).reshape(shape)

    return forward


def _lin(x, mod):
    return F.linear(x, mod.weight, mod.bias)


def _key_validity(causal_mask, B: int, T: int, L: int, device) -> torch.Tensor | None:
    """[B, T, L] bool of which keys each query may see, from transformers' 4-D mask (None: plain causal)."""
    if causal_mask is None:
        return None
    if not isinstance(causal_mask, torch.Tensor) or causal_mask.dim() != 4:
        raise NotImplementedError("zaya_ops patch: only 4-D causal masks (or none) are supported")
    m = causal_mask[:, 0]
    if m.dtype != torch.bool:
        m = m == 0  # additive float mask: 0 where allowed
    m = m.expand(B, T, m.shape[-1])
    if m.shape[-1] < L:
        raise NotImplementedError(f"zaya_ops patch: mask covers {m.shape[-1]} keys, the cache holds {L}")
    return m[..., :L]


def _segments(allowed: torch.Tensor, L: int):
    """Attention segments of a 4-D mask, for ``cca_attention`` over block-size-1 key blocks: runs of a row's
    queries that see a causal prefix, one key longer per query, of the same keys (one per row under left
    padding, one per packed sequence with reset position ids); a query that fits no run is a segment of
    its own (one query sees all its segment's keys), so any set of visible keys is expressed exactly.

    ``allowed`` [B, T, L] bool. Returns (the flat indices of the queries that see some key, cu_q int32
    [G+1], seqused_k int32 [G], block table int32 [G, max_k] of key rows ``b * L + j``, max_q, max_k), on
    the host."""
    allowed = allowed.cpu()
    B, T = allowed.shape[:2]
    qsel, cu, used, rows = [], [0], [], []

    def add(A, keys_row, n, base):
        cu.append(cu[-1] + n)
        used.append(keys_row.numel())
        rows.append(base + keys_row)

    for b in range(B):
        qs = allowed[b].any(-1).nonzero()[:, 0]
        if qs.numel() == 0:
            continue
        qsel.append(b * T + qs)
        A = allowed[b, qs]  # [n_b, L]
        cnt = A.sum(-1)
        first = A.to(torch.uint8).argmax(-1)
        new = torch.ones(qs.numel(), dtype=torch.bool)
        new[1:] = (first[1:] != first[:-1]) | (cnt[1:] != cnt[:-1] + 1)
        bounds = [*new.nonzero()[:, 0].tolist(), qs.numel()]
        for s, e in zip(bounds, bounds[1:]):
            keys = A[e - 1].nonzero()[:, 0]
            n, m = e - s, keys.numel()
            want = torch.zeros(n, L, dtype=torch.bool)
            want[:, keys] = torch.arange(m)[None, :] < torch.arange(m - n + 1, m + 1)[:, None]
            if m >= n and torch.equal(A[s:e], want):
                add(A, keys, n, b * L)
            else:  # not a causal run: one segment per query
                for t in range(s, e):
                    add(A, A[t].nonzero()[:, 0], 1, b * L)
    max_k = max(used) if used else 1
    table = torch.zeros(len(rows), max_k, dtype=torch.int32)
    for g, r in enumerate(rows):
        table[g, : r.numel()] = r.to(torch.int32)
    max_q = max((y - x for x, y in zip(cu, cu[1:])), default=1)
    qsel = torch.cat(qsel) if qsel else torch.zeros(0, dtype=torch.int64)
    return (qsel, torch.tensor(cu, dtype=torch.int32), torch.tensor(used, dtype=torch.int32), table, max_q, max_k)


def _attention(ops: OpBackend, attn, x: torch.Tensor, B: int, T: int, masks: dict, cache, position_embeddings):
    """ZayaAttention on the ops; x is the normed [B*T, H]. Returns o_proj output [B*T, H]."""
    cfg = attn.config
    p = attn.qkv_proj
    nq, nkv, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    i = attn.layer_idx
    dev, dt = x.device, x.dtype
    conv_mask = masks.get("conv")
    if conv_mask is not None:  # zero padded tokens before the CCA projections, as transformers
        x = x * conv_mask.reshape(B * T, 1).to(dt)
    qt, kt, vc, vd = _lin(x, p.q_proj), _lin(x, p.k_proj), _lin(x, p.v_proj_current), _lin(x, p.v_proj_delayed)

    cos, sin = position_embeddings  # [B or 1, T, rot]
    half = cos.shape[-1] // 2
    cos_sin = torch.cat([cos[..., :half], sin[..., :half]], dim=-1).expand(B, T, 2 * half).reshape(B * T, 2 * half)
    positions = torch.arange(B * T, device=dev)  # one table row per token
    cu = torch.arange(B + 1, device=dev, dtype=torch.int32) * T
    state_idx = torch.arange(B, device=dev, dtype=torch.int32)

    use_prev = cache is not None and cache.has_previous_state(i)
    C = (nq + nkv) * D
    if use_prev:
        conv_state = cache.layers[i].conv_states[0].to(dt).clone()
        value_state = cache.layers[i].recurrent_states[0].to(dt).clone()
    else:
        conv_state = torch.zeros(B, C, 2, device=dev, dtype=dt)
        value_state = torch.zeros(B, nkv * D // 2, device=dev, dtype=dt)
        if p.v_proj_delayed.bias is not None:
            value_state = value_state + p.v_proj_delayed.bias  # v_proj_delayed(0), differentiable as transformers'
    if torch.is_grad_enabled() and (x.requires_grad or p.q_proj.weight.requires_grad):
        # Training: the functional op returns k and v (nothing written), so autograd sees every path.
        q, k_new, v_new = ops("cca_qkv_functional", qt, kt, vc, vd, p.conv_qk_depthwise.weight,
                              p.conv_qk_depthwise.bias, p.conv_qk_grouped.weight, p.conv_qk_grouped.bias,
                              attn.qk_norm.temp, cos_sin, positions, cu, conv_state, value_state)
        if cache is not None:  # the states cca_qkv would have written: the last two raw z steps, the last vd
            z = torch.cat([qt, kt], dim=-1).view(B, T, C).transpose(1, 2)
            conv_state = torch.cat([conv_state, z], dim=-1)[..., -2:]
            value_state = vd.view(B, T, -1)[:, -1]
    else:
        k_new = torch.empty(B * T, 1, nkv, D, device=dev, dtype=dt)
        v_new = torch.empty_like(k_new)
        q = ops("cca_qkv", qt, kt, vc, vd, p.conv_qk_depthwise.weight, p.conv_qk_depthwise.bias,
                p.conv_qk_grouped.weight, p.conv_qk_grouped.bias, attn.qk_norm.temp, cos_sin, positions, cu,
                conv_state, value_state, state_idx, k_new, v_new, torch.arange(B * T, device=dev))
    k_new = k_new.view(B, T, nkv, D).transpose(1, 2)
    v_new = v_new.view(B, T, nkv, D).transpose(1, 2)
    if cache is not None:
        cache.update_conv_state(conv_state, i)
        cache.update_recurrent_state(value_state, i)
        k_all, v_all = cache.update(k_new, v_new, i)
    else:
        k_all, v_all = k_new, v_new
    L = k_all.shape[2]

    # Keys as a paged cache with one token per block: a block table row lists the keys its queries see.
    kc = k_all.transpose(1, 2).reshape(B * L, 1, nkv, D)
    vcache = v_all.transpose(1, 2).reshape(B * L, 1, nkv, D)
    allowed = _key_validity(masks.get("causal"), B, T, L, dev)
    if allowed is None:  # plain causal, every row's queries are its last T keys
        table = (torch.arange(B, device=dev)[:, None] * L + torch.arange(L, device=dev)).to(torch.int32)
        out, _ = ops("cca_attention", q, kc, vcache, cu, torch.full((B,), L, dtype=torch.int32, device=dev), table,
                     attn.scaling, T, L)
    else:
        qsel, cu_q, seqused, table, max_q, max_k = _segments(allowed, L)
        qsel = qsel.to(dev)
        o, _ = ops("cca_attention", q[qsel], kc, vcache, cu_q.to(dev), seqused.to(dev), table.to(dev),
                   attn.scaling, max_q, max_k)
        out = torch.zeros(B * T, nq * D, device=dev, dtype=o.dtype).index_put((qsel,), o)
        blind = ~allowed.any(-1)  # [B, T]: queries that see no key (left padding)
        if bool(blind.any()):
            # transformers' eager attention adds the mask's finfo.min to every score of such a query: a uniform
            # softmax over all L keys (the mean of the row's values), whose backward is softmax's at uniform
            # probabilities (a gradient into q and k that transformers gives too): s - s.detach() is both.
            idx = blind.reshape(-1).nonzero()[:, 0]
            rb = idx // T
            qb = q[idx].view(-1, nkv, nq // nkv, D)
            s = torch.matmul(qb, k_all[rb].transpose(-1, -2)) * attn.scaling  # [P, nkv, g, L]
            probs = torch.softmax(s - s.detach(), dim=-1, dtype=torch.float32).to(s.dtype)
            out = out.index_put((idx,), torch.matmul(probs, v_all[rb]).reshape(-1, nq * D))
    return _lin(out, attn.o_proj)


def _make_layer_forward(ops: OpBackend, cfg):
    eps = cfg.rms_norm_eps

    def forward(self, hidden_states, prev_router_hidden_states=None, attention_mask=None, past_key_values=None,
                position_embeddings=None, **kwargs):
        B, T, H = hidden_states.shape
        r = hidden_states.reshape(B * T, H).to(torch.float32)
        x = ops("rms_norm", r, self.input_layernorm.weight, eps)
        a = _attention(ops, self.self_attn, x, B, T, attention_mask or {}, past_key_values, position_embeddings)
        s1 = self.post_attention_residual_scale
        r, x2 = ops("residual_scale_rmsnorm", a, r, s1.hidden_states_bias, s1.hidden_states_scale, s1.residual_bias,
                    s1.residual_scale, self.post_attention_layernorm.weight, eps)
        g = self.mlp.gate
        gm = g.router_mlp
        prev = None if prev_router_hidden_states is None else prev_router_hidden_states.reshape(B * T, -1)
        idx, w, state, _, _ = ops("router", x2, prev, g.down_proj.weight, g.down_proj.bias,
                                  g.router_states_scale if prev is not None else None, gm.norm.weight, gm.fc1.weight,
                                  gm.fc1.bias, gm.fc2.weight, gm.fc2.bias, gm.out_proj.weight, g.balancing_biases,
                                  gm.norm.variance_epsilon)
        m = ops("moe_top1", x2, idx, w, self.mlp.experts.gate_up_proj, self.mlp.experts.down_proj)
        s2 = self.post_mlp_residual_scale
        # The fused op also normalises (with this layer's input norm weight, unused): the next layer norms
        # its own input, since a layer cannot see its successor here.
        r, _ = ops("residual_scale_rmsnorm", m, r, s2.hidden_states_bias, s2.hidden_states_scale, s2.residual_bias,
                   s2.residual_scale, self.input_layernorm.weight, eps)
        return r.reshape(B, T, H), state.reshape(B, T, -1)

    return forward
