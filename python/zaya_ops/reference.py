"""Pure-PyTorch reference of every ``zaya_ops`` op: the test oracle.

Each function has exactly the signature and return values of its wrapper in ``zaya_ops.ops`` (see the
docstrings there for shapes and argument meanings), and computes with the same PyTorch calls, in the same
order and at the same rounding points as transformers' ``models/zaya/modeling_zaya.py`` (5.18), so that a
decoder layer composed of these functions reproduces ``ZayaDecoderLayer`` in every parameter dtype
(bf16, fp16, fp32; the residual stream is fp32). Only two things differ from transformers, both on purpose:

* the router keeps the skip class as index E (with weight 0) instead of masking it to expert 0;
* attention and the CCA prologue work on packed varlen sequences with a paged KV cache and per-slot
  conv/value states instead of a padded batch and a ``DynamicCache``.

The functions check nothing beyond what they need to run; ``zaya_ops.ops`` validates arguments. They run
on any device (a few small index tensors are read on the host).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "rms_norm",
    "residual_scale_rmsnorm",
    "cca_qkv",
    "cca_qkv_functional",
    "cca_attention",
    "router",
    "moe_top1",
    "rope_inv_freq",
    "rope_cos_sin",
]


# --------------------------------------------------------------------------------------------------
# Norms and residual scaling
# --------------------------------------------------------------------------------------------------


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """RMSNorm of each row, as ``ZayaRMSNorm`` applied to ``x.to(weight.dtype)``.

    x is rounded to the weight dtype, normalised in fp32, rounded again and multiplied by ``weight``.
    Returns [T, H] in ``weight``'s dtype. (float64 weights, for gradcheck, normalise in float64.)
    """
    x = x.to(weight.dtype)
    h = x.to(torch.promote_types(weight.dtype, torch.float32))
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return weight * h.to(weight.dtype)


def residual_scale_rmsnorm(
    h: torch.Tensor,
    residual: torch.Tensor,
    h_bias: torch.Tensor,
    h_scale: torch.Tensor,
    r_bias: torch.Tensor,
    r_scale: torch.Tensor,
    norm_weight: torch.Tensor,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``ZayaResidualScaling`` followed by the next ``ZayaRMSNorm``.

    ``new_residual = (h + h_bias) * h_scale + (residual + r_bias) * r_scale``: the h-branch in the param
    dtype, the residual branch and the sum in fp32 (PyTorch type promotion, as transformers).
    Returns (new_residual [T, H] fp32, rms_norm(new_residual, norm_weight, eps)). (All float64, for
    gradcheck: float64 throughout.)
    """
    hs = (h + h_bias) * h_scale
    rs = (residual + r_bias) * r_scale
    new_residual = (hs + rs).to(torch.promote_types(residual.dtype, torch.float32))
    return new_residual, rms_norm(new_residual, norm_weight, eps)


# --------------------------------------------------------------------------------------------------
# Rotary tables
# --------------------------------------------------------------------------------------------------


def rope_inv_freq(head_dim: int, partial_rotary_factor: float = 1.0, theta: float = 10000.0) -> torch.Tensor:
    """Inverse frequencies of ``ZayaRotaryEmbedding.compute_default_rope_parameters``: fp32 [rot/2],
    ``rot = int(head_dim * partial_rotary_factor)``."""
    dim = int(head_dim * partial_rotary_factor)
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))


def rope_cos_sin(inv_freq: torch.Tensor, max_positions: int, dtype: torch.dtype) -> torch.Tensor:
    """The ``cos_sin`` table of ``cca_qkv``: [max_positions, rot] in ``dtype``, row p = position p,
    columns ``:rot/2`` cos and ``rot/2:`` sin of ``p * inv_freq``.

    Computed like ``ZayaRotaryEmbedding.forward`` (fp32 outer product as a matmul, cos/sin of the
    duplicated frequencies in fp32, then cast); transformers' cos/sin for dims d and d + rot/2 are equal,
    so keeping the first half of each is lossless.
    """
    half = inv_freq.shape[0]
    inv = inv_freq.to(torch.float32)[None, :, None]
    pos = torch.arange(max_positions, device=inv_freq.device, dtype=torch.int64)[None, None, :].float()
    freqs = (inv @ pos).transpose(1, 2)[0]  # [P, rot/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos = emb.cos()[:, :half]
    sin = emb.sin()[:, :half]
    return torch.cat((cos, sin), dim=-1).to(dtype)


# --------------------------------------------------------------------------------------------------
# CCA prologue
# --------------------------------------------------------------------------------------------------


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def _cca_sequence(
    qt: torch.Tensor,
    kt: torch.Tensor,
    vc: torch.Tensor,
    vd: torch.Tensor,
    conv_dw_weight: torch.Tensor,
    conv_dw_bias: torch.Tensor,
    conv_g_weight: torch.Tensor,
    conv_g_bias: torch.Tensor,
    qk_temp: torch.Tensor,
    cos_sin: torch.Tensor,
    conv_hist: torch.Tensor,
    value_hist: torch.Tensor,
    nkv: int,
    head_dim: int,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One sequence of n >= 1 tokens: ``ZayaCCAProjection`` + ``ZayaQKNorm`` + ``apply_rotary_pos_emb``.

    ``cos_sin`` holds the n rows of the tokens' positions, ``conv_hist`` [C, 2] the raw z history and
    ``value_hist`` [nkv*D/2] the previous delayed value. Returns (q [n, nq, D], k [n, nkv, D],
    v [n, nkv, D], new conv history [C, 2], new value history [nkv*D/2]).
    """
    n = qt.shape[0]
    D = head_dim
    nq = qt.shape[1] // D
    g = nq // nkv

    # q/k residual paths (bf16 arithmetic in transformers: add, * 0.5, mean over the group).
    query_residual = qt.reshape(n, nq, D)
    key_rep = kt.reshape(n, nkv, D).repeat_interleave(g, dim=1)
    query_residual = (query_residual + key_rep) * 0.5
    key_residual = query_residual.view(n, nkv, g, D).mean(dim=-2)

    # Causal two-stage convolution over z = [qt; kt], left context from the slot's raw history.
    z = torch.cat([qt, kt], dim=-1).transpose(0, 1)  # [C, n]
    z = torch.cat([conv_hist.to(z.dtype), z], dim=-1)  # [C, n + 2]
    new_conv_hist = z[:, -conv_hist.shape[-1] :]
    u = F.conv1d(z[None], conv_dw_weight, conv_dw_bias, groups=conv_dw_weight.shape[0])  # [1, C, n + 1]
    y = F.conv1d(u, conv_g_weight, conv_g_bias, groups=nq + nkv)[0].transpose(0, 1)  # [n, C]
    q = y[:, : nq * D].reshape(n, nq, D) + query_residual
    k = y[:, nq * D :].reshape(n, nkv, D) + key_residual

    # Values: current half of token t, delayed half of token t - 1.
    value_delayed = torch.cat([value_hist[None].to(vd.dtype), vd[:-1]], dim=0)
    v = torch.cat([vc, value_delayed], dim=-1).view(n, nkv, D)
    new_value_hist = vd[-1]

    # QK norm (same op order as ZayaQKNorm), then the learned key temperature.
    head_dim_scale = D**0.5
    q = q * (head_dim_scale / q.norm(p=2, dim=-1, keepdim=True).clamp_min(eps))
    k = k * (head_dim_scale / k.norm(p=2, dim=-1, keepdim=True).clamp_min(eps))
    k = k * qk_temp[None, :, None]

    # Partial NeoX rotary on the first `rot` dims.
    half = cos_sin.shape[1] // 2
    rot = 2 * half
    cos = torch.cat([cos_sin[:, :half], cos_sin[:, :half]], dim=-1)[:, None, :]
    sin = torch.cat([cos_sin[:, half:], cos_sin[:, half:]], dim=-1)[:, None, :]
    q_rot, q_pass = q[..., :rot], q[..., rot:]
    k_rot, k_pass = k[..., :rot], k[..., rot:]
    q = torch.cat([(q_rot * cos) + (_rotate_half(q_rot) * sin), q_pass], dim=-1)
    k = torch.cat([(k_rot * cos) + (_rotate_half(k_rot) * sin), k_pass], dim=-1)
    return q, k, v, new_conv_hist, new_value_hist


def cca_qkv(
    qt: torch.Tensor,
    kt: torch.Tensor,
    vc: torch.Tensor,
    vd: torch.Tensor,
    conv_dw_weight: torch.Tensor,
    conv_dw_bias: torch.Tensor,
    conv_g_weight: torch.Tensor,
    conv_g_bias: torch.Tensor,
    qk_temp: torch.Tensor,
    cos_sin: torch.Tensor,
    positions: torch.Tensor,
    cu_seqlens: torch.Tensor,
    conv_state: torch.Tensor,
    value_state: torch.Tensor,
    state_indices: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    qk_norm_eps: float | None = None,
) -> torch.Tensor:
    """CCA prologue for packed varlen sequences (see ``zaya_ops.ops.cca_qkv``).

    Per sequence b (tokens ``cu_seqlens[b]:cu_seqlens[b+1]``, state slot ``state_indices[b]``) it runs
    the transformers CCA projection, QK norm and partial rotary with the slot's history; it overwrites
    ``conv_state[slot]`` with the last two raw z steps and ``value_state[slot]`` with the last token's
    delayed value (sequences with no tokens leave their slot alone), and writes every token's k and v into
    ``k_cache``/``v_cache`` at ``slot_mapping`` (-1: not written). Returns q [T, nq, D].
    """
    T = qt.shape[0]
    _, block_size, nkv, D = k_cache.shape
    nq = qt.shape[1] // D
    eps = torch.finfo(qt.dtype).eps if qk_norm_eps is None else float(qk_norm_eps)
    q_out = qt.new_zeros(T, nq, D)
    k_out = qt.new_zeros(T, nkv, D)
    v_out = qt.new_zeros(T, nkv, D)
    cu = [int(c) for c in cu_seqlens.tolist()]
    slots = [int(s) for s in state_indices.tolist()]
    for b, slot in enumerate(slots):
        s, e = cu[b], cu[b + 1]
        if e <= s:
            continue
        q, k, v, conv_hist, value_hist = _cca_sequence(
            qt[s:e], kt[s:e], vc[s:e], vd[s:e], conv_dw_weight, conv_dw_bias, conv_g_weight, conv_g_bias,
            qk_temp, cos_sin[positions[s:e]], conv_state[slot], value_state[slot], nkv, D, eps,
        )
        q_out[s:e], k_out[s:e], v_out[s:e] = q, k, v
        conv_state[slot].copy_(conv_hist)
        value_state[slot].copy_(value_hist)
    keep = (slot_mapping >= 0).nonzero(as_tuple=True)[0]
    if keep.numel():
        flat = slot_mapping[keep]
        blocks, offsets = flat // block_size, flat % block_size
        k_cache[blocks, offsets] = k_out[keep].to(k_cache.dtype)
        v_cache[blocks, offsets] = v_out[keep].to(v_cache.dtype)
    return q_out


def cca_qkv_functional(
    qt: torch.Tensor,
    kt: torch.Tensor,
    vc: torch.Tensor,
    vd: torch.Tensor,
    conv_dw_weight: torch.Tensor,
    conv_dw_bias: torch.Tensor,
    conv_g_weight: torch.Tensor,
    conv_g_bias: torch.Tensor,
    qk_temp: torch.Tensor,
    cos_sin: torch.Tensor,
    positions: torch.Tensor,
    cu_seqlens: torch.Tensor,
    conv_state: torch.Tensor,
    value_state: torch.Tensor,
    qk_norm_eps: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The differentiable form of :func:`cca_qkv` (training; see ``zaya_ops.ops.cca_qkv_functional``).

    The same maths per sequence b (tokens ``cu_seqlens[b]:cu_seqlens[b+1]``), with the history before its
    first token read from ``conv_state[b]`` [C, 2] and ``value_state[b]`` [nkv*D/2] (one row per sequence,
    not slots; nothing is written), and k, v returned instead of written to a cache. Sequences with no
    tokens contribute nothing. Returns (q [T, nq, D], k [T, nkv, D], v [T, nkv, D]).
    """
    T = qt.shape[0]
    D = conv_g_weight.shape[1]
    nq, nkv = qt.shape[1] // D, kt.shape[1] // D
    eps = torch.finfo(qt.dtype).eps if qk_norm_eps is None else float(qk_norm_eps)
    cu = [int(c) for c in cu_seqlens.tolist()]
    qs, ks, vs = [qt.new_zeros(0, nq, D)], [qt.new_zeros(0, nkv, D)], [qt.new_zeros(0, nkv, D)]
    for b in range(len(cu) - 1):
        s, e = cu[b], cu[b + 1]
        if e <= s:
            continue
        q, k, v, _, _ = _cca_sequence(
            qt[s:e], kt[s:e], vc[s:e], vd[s:e], conv_dw_weight, conv_dw_bias, conv_g_weight, conv_g_bias,
            qk_temp, cos_sin[positions[s:e]], conv_state[b], value_state[b], nkv, D, eps,
        )
        qs.append(q)
        ks.append(k)
        vs.append(v)
    q, k, v = torch.cat(qs), torch.cat(ks), torch.cat(vs)
    if q.shape[0] != T:
        raise ValueError(f"cu_seqlens must cover all {T} tokens, it covers {q.shape[0]}")
    return q, k, v


# --------------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------------


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, q_offset: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal GQA attention of one sequence, as transformers' ``eager_attention_forward``.

    q [n, nq, D] at positions ``q_offset + i``; k, v [L, nkv, D] at positions 0..L-1. Returns
    (out [n, nq*D] in q's dtype, lse [nq, n] fp32).
    """
    n, nq, D = q.shape
    L, nkv = k.shape[0], k.shape[1]
    g = nq // nkv
    qh = q.transpose(0, 1)  # [nq, n, D]
    kh = k.transpose(0, 1).repeat_interleave(g, dim=0)  # [nq, L, D]
    vh = v.transpose(0, 1).repeat_interleave(g, dim=0)
    scores = torch.matmul(qh, kh.transpose(1, 2)) * scale  # [nq, n, L], q dtype
    q_pos = torch.arange(n, device=q.device) + q_offset
    masked = torch.arange(L, device=q.device)[None, :] > q_pos[:, None]
    scores = scores.masked_fill(masked, float("-inf"))
    acc = torch.promote_types(q.dtype, torch.float32)  # fp32; float64 in the gradcheck mode
    probs = torch.softmax(scores, dim=-1, dtype=acc).to(q.dtype)
    out = torch.matmul(probs, vh)  # [nq, n, D]
    lse = torch.logsumexp(scores.to(acc), dim=-1)  # [nq, n]
    return out.transpose(0, 1).reshape(n, nq * D), lse


def cca_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    seqused_k: torch.Tensor,
    block_table: torch.Tensor,
    scale: float | None = None,
    max_seqlen_q: int | None = None,
    max_seqlen_k: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal GQA attention over the paged KV cache (see ``zaya_ops.ops.cca_attention``).

    Sequence b's n_b queries sit at positions ``seqused_k[b] - n_b + i``; its keys are gathered from the
    cache through ``block_table[b]``. Scores ``q @ k^T`` in q's dtype times ``scale``, softmax in fp32,
    rounded to q's dtype, times v. ``max_seqlen_q``/``max_seqlen_k`` are ignored. Returns
    (out [T, nq*D] in q's dtype, lse [nq, T] fp32 of the scaled scores; float64 when q is float64).
    """
    T, nq, D = q.shape
    block_size = k_cache.shape[1]
    if scale is None:
        scale = D**-0.5
    out = q.new_zeros(T, nq * D)
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32  # float64: gradcheck mode
    lse = torch.zeros(nq, T, dtype=lse_dtype, device=q.device)
    cu = [int(c) for c in cu_seqlens_q.tolist()]
    used = [int(u) for u in seqused_k.tolist()]
    for b, L in enumerate(used):
        s, e = cu[b], cu[b + 1]
        if e <= s:
            continue
        j = torch.arange(L, device=q.device)
        blocks = block_table[b].to(torch.int64)[j // block_size]
        offsets = j % block_size
        out[s:e], lse[:, s:e] = _attend(
            q[s:e], k_cache[blocks, offsets], v_cache[blocks, offsets], float(scale), L - (e - s)
        )
    return out, lse


# --------------------------------------------------------------------------------------------------
# Router and experts
# --------------------------------------------------------------------------------------------------


def router(
    x: torch.Tensor,
    prev_state: torch.Tensor | None,
    down_weight: torch.Tensor,
    down_bias: torch.Tensor,
    states_scale: torch.Tensor | None,
    norm_weight: torch.Tensor,
    fc1_weight: torch.Tensor,
    fc1_bias: torch.Tensor,
    fc2_weight: torch.Tensor,
    fc2_bias: torch.Tensor,
    out_weight: torch.Tensor,
    balancing_biases: torch.Tensor,
    eps: float = 1e-5,
    return_logits: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``ZayaRouter`` + ``ZayaRouterMLP`` with the skip class kept (see ``zaya_ops.ops.router``).

    The choice is ``topk(fp32(softmax(logits)) + balancing_biases, 1)`` (transformers' tie-breaking);
    the weight is the chosen probability, 0 for the skip class E, whose index stays E. Returns
    (expert_index int32 [T], expert_weight [T], router_state [T, R], logits [T, E+1] or [0, E+1],
    counts int32 [E+1]).
    """
    E1 = out_weight.shape[0]
    router_state, logits = router_mlp(x, prev_state, down_weight, down_bias, states_scale, norm_weight,
                                      fc1_weight, fc1_bias, fc2_weight, fc2_bias, out_weight, eps)
    probs = torch.softmax(logits, dim=-1)
    biased = probs.detach().to(torch.float32) + balancing_biases
    _, index = torch.topk(biased, 1, dim=-1)
    weight = router_pick(probs, index)
    index = index[:, 0]
    counts = torch.bincount(index, minlength=E1).to(torch.int32)
    if not return_logits:
        logits = logits.new_empty(0, E1)
    return index.to(torch.int32), weight, router_state, logits, counts


def router_mlp(
    x: torch.Tensor,
    prev_state: torch.Tensor | None,
    down_weight: torch.Tensor,
    down_bias: torch.Tensor,
    states_scale: torch.Tensor | None,
    norm_weight: torch.Tensor,
    fc1_weight: torch.Tensor,
    fc1_bias: torch.Tensor,
    fc2_weight: torch.Tensor,
    fc2_bias: torch.Tensor,
    out_weight: torch.Tensor,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The differentiable part of :func:`router` before the softmax: (router_state [T, R], logits [T, E+1])."""
    rho = F.linear(x, down_weight, down_bias)
    if prev_state is not None:
        rho = rho + prev_state * states_scale
    router_state = rho.clone()
    h = rms_norm(rho, norm_weight, eps)
    h = F.gelu(F.linear(h, fc1_weight, fc1_bias))
    h = F.gelu(F.linear(h, fc2_weight, fc2_bias))
    return router_state, F.linear(h, out_weight)


def router_pick(probs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The weight of :func:`router`: ``probs`` [T, E+1] at ``index`` [T, 1] (int64), 0 for the skip class E; [T]."""
    weight = torch.gather(probs, dim=-1, index=index)
    return weight.masked_fill(index == probs.shape[-1] - 1, 0)[:, 0]


def moe_top1(
    x: torch.Tensor,
    expert_index: torch.Tensor,
    expert_weight: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    expert_start: int = 0,
    expert_end: int | None = None,
) -> torch.Tensor:
    """Top-1 SiLU-gated experts as ``ZayaExperts`` (eager), see ``zaya_ops.ops.moe_top1``.

    Per expert e in ``[expert_start, expert_end)``: ``linear(x, gate_up_proj[e]).chunk(2)``,
    ``silu(gate) * up``, ``linear(., down_proj[e])``, times the token's weight, scattered with
    ``index_add_`` into zeros. Tokens of the skip class E or of experts outside the range get 0.
    Raises ValueError if an ``expert_index`` entry is outside 0..E.
    """
    E = gate_up_proj.shape[0]
    end = E if expert_end is None or expert_end < 0 else int(expert_end)
    index = expert_index.to(torch.int64)
    if index.numel() and bool(((index < 0) | (index > E)).any()):
        raise ValueError(f"expert_index entries must lie in 0..{E} (E = skip class)")
    out = torch.zeros_like(x)
    for e in range(int(expert_start), end):
        tokens = (index == e).nonzero(as_tuple=True)[0]
        if tokens.numel() == 0:
            continue
        gate, up = F.linear(x[tokens], gate_up_proj[e]).chunk(2, dim=-1)
        h = F.silu(gate) * up
        h = F.linear(h, down_proj[e])
        h = h * expert_weight[tokens, None]
        out.index_add_(0, tokens, h.to(out.dtype))
    return out

