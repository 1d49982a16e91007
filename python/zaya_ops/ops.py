"""Typed Python entry points of the ``torch.ops.zaya`` custom ops.

Every function checks its arguments (raising TypeError/ValueError that name the argument), then calls
the compiled op, which runs the kernel of the inputs' device. The exact maths of each op is in
``zaya_ops.reference`` (the test oracle) and in the ZAYA1 spec; shapes use these names:

=========  ===========================================================
T          tokens in the call (packed over all sequences)
B          sequences in the call
H          hidden size
nq, nkv    query heads, key/value heads (nq % nkv == 0), D = head dim
C          conv channels, (nq + nkv) * D
R          router hidden size; E experts (E + 1 router classes, E = skip)
I          expert intermediate size
=========  ===========================================================

Parameters have the model's dtype ("param dtype": bf16 for ZAYA1, fp16 or fp32 also accepted);
the residual stream is fp32.

Index values (cu_seqlens, block tables, state slots, positions, cache slots, expert indices) are
validated here, not in the GPU glue (which never reads them on the host): ``_index_checks`` evaluates
every rule on the tensors' device and reads one small result (one sync per call on a GPU). Opt out
with ``ZAYA_CHECK_INDICES=0``; skipped while a CUDA graph is captured or torch.compile traces. The
keyword-only ``_prevalidated=True`` (internal) skips it for callers that validated the values where
they made them: the model (``ZayaCache.validate_batch``, once per change of batch), whose decode step
thus reads nothing on the host. The kernels guard themselves either way: an out-of-range index is
never followed (README, "GPU kernels take ...").
"""

from __future__ import annotations

import torch

from . import _index_checks
from . import _library  # noqa: F401  (loads torch.ops.zaya)
from ._checks import FLOAT_DTYPES, INDEX_DTYPES, check_positive_finite, check_same_dtype, check_tensor

# The op namespace the wrappers call. Tests point it at a SIMT-emulator namespace (torch.ops.zaya_emu32,
# zaya_emu64: the GPU kernels run on the CPU, see csrc/emu/) to run the same checks on the GPU code.
_OPS = torch.ops.zaya

__all__ = [
    "rms_norm",
    "residual_scale_rmsnorm",
    "cca_qkv",
    "cca_qkv_functional",
    "cca_attention",
    "router",
    "moe_top1",
]


# The norms and moe_top1 also take float64 (every float argument float64), on the CPU: the gradcheck mode
# of training.
_NORM_DTYPES = FLOAT_DTYPES + (torch.float64,)


def _check_f64_all(tensors: dict[str, torch.Tensor]) -> None:
    f64 = [n for n, t in tensors.items() if t.dtype == torch.float64]
    if f64 and len(f64) != len(tensors):
        got = ", ".join(f"{n} {str(t.dtype).replace('torch.', '')}" for n, t in tensors.items())
        raise TypeError(f"float64 is accepted only when {' and '.join(tensors)} are all float64 (got {got})")


def _check_vector(name: str, t: torch.Tensor, size: int, like: torch.Tensor) -> None:
    check_tensor(name, t, dtypes=(like.dtype,), shape=(size,), device=like.device)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """RMSNorm of each row of ``x`` (spec step 1, and the final norm).

    ``x`` is first rounded to ``weight``'s dtype, then normalised in fp32, rounded to that dtype again
    and multiplied by ``weight`` (the transformers ZayaRMSNorm rounding points).

    Differentiable w.r.t. ``x`` and ``weight`` (``zaya_ops._autograd``: autograd of the reference;
    the CPU backward is a C++ kernel, other devices recompute the reference).

    Args:
        x: [T, H] fp32, bf16 or fp16; rows may be strided (the last dim must have stride 1).
        weight: [H] param dtype. (x and weight both float64 is accepted on the CPU, for gradcheck.)
        eps: added to the mean square.
    Returns:
        [T, H] in ``weight``'s dtype.
    """
    check_tensor("x", x, dtypes=_NORM_DTYPES, ndim=2)
    check_tensor("weight", weight, dtypes=_NORM_DTYPES, shape=(x.shape[1],), device=x.device)
    _check_f64_all({"x": x, "weight": weight})
    return _OPS.rms_norm(x, weight, check_positive_finite("eps", eps))


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
    """Learned residual scaling fused with the next RMSNorm (spec steps 10-11 and 14).

    ``new_residual = fp32((h + h_bias) * h_scale) + (residual + r_bias) * r_scale``, where the h-branch
    is computed in the param dtype (rounded after the add and after the multiply) and the residual
    branch in fp32; then ``normed = rms_norm(new_residual, norm_weight, eps)``.

    Differentiable w.r.t. every tensor argument, through both outputs (``zaya_ops._autograd``).

    Args:
        h: [T, H] param dtype, the attention (o_proj) or expert output.
        residual: [T, H] fp32 residual stream (float64 when h is: the CPU's gradcheck mode).
        h_bias, h_scale, r_bias, r_scale, norm_weight: [H] param dtype.
        eps: RMSNorm epsilon.
    Returns:
        (new_residual [T, H] fp32, normed [T, H] param dtype).
    """
    check_tensor("h", h, dtypes=_NORM_DTYPES, ndim=2)
    T, H = h.shape
    r_dtype = torch.float64 if h.dtype == torch.float64 else torch.float32
    check_tensor("residual", residual, dtypes=(r_dtype,), shape=(T, H), device=h.device)
    for name, t in (("h_bias", h_bias), ("h_scale", h_scale), ("r_bias", r_bias), ("r_scale", r_scale),
                    ("norm_weight", norm_weight)):
        _check_vector(name, t, H, h)
    return _OPS.residual_scale_rmsnorm(
        h, residual, h_bias, h_scale, r_bias, r_scale, norm_weight, check_positive_finite("eps", eps)
    )


def _check_cca_prologue(qt, kt, vc, vd, conv_dw_weight, conv_dw_bias, conv_g_weight, conv_g_bias, qk_temp, cos_sin,
                        positions, cu_seqlens, D: int, nkv: int, source: str, nkv_source: str) -> tuple[int, int]:
    """The argument rules that ``cca_qkv`` and ``cca_qkv_functional`` share (qt checked first; head dim D
    read from ``source``, nkv from ``nkv_source``). Returns (C, B)."""
    dev, dt, T = qt.device, qt.dtype, qt.shape[0]
    if D % 2 or D <= 0:
        raise ValueError(f"{source} head dim must be even and positive, got {D}")
    if qt.shape[1] % D or qt.shape[1] == 0:
        raise ValueError(f"qt width {qt.shape[1]} must be a positive multiple of the head dim {D}")
    nq = qt.shape[1] // D
    if nkv == 0 or nq % nkv:
        raise ValueError(f"query heads ({nq}) must be a multiple of KV heads ({nkv}, {nkv_source})")
    C = (nq + nkv) * D
    check_tensor("kt", kt, dtypes=(dt,), shape=(T, nkv * D), device=dev)
    check_tensor("vc", vc, dtypes=(dt,), shape=(T, nkv * D // 2), device=dev)
    check_tensor("vd", vd, dtypes=(dt,), shape=(T, nkv * D // 2), device=dev)
    check_tensor("conv_dw_weight", conv_dw_weight, dtypes=(dt,), shape=(C, 1, 2), device=dev)
    check_tensor("conv_dw_bias", conv_dw_bias, dtypes=(dt,), shape=(C,), device=dev)
    check_tensor("conv_g_weight", conv_g_weight, dtypes=(dt,), shape=(C, D, 2), device=dev)
    check_tensor("conv_g_bias", conv_g_bias, dtypes=(dt,), shape=(C,), device=dev)
    check_tensor("qk_temp", qk_temp, dtypes=(dt,), shape=(nkv,), device=dev)
    check_tensor("cos_sin", cos_sin, dtypes=(dt,), ndim=2, device=dev)
    rot = cos_sin.shape[1]
    if rot % 2 or rot > D:
        raise ValueError(f"cos_sin width (rotary dims) must be even and <= head dim {D}, got {rot}")
    check_tensor("positions", positions, dtypes=(torch.int64,), shape=(T,), device=dev)
    check_tensor("cu_seqlens", cu_seqlens, dtypes=(torch.int32,), ndim=1, device=dev)
    B = cu_seqlens.shape[0] - 1
    if B < 1:
        raise ValueError("cu_seqlens must hold at least two entries (one sequence)")
    return C, B


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
    *,
    _prevalidated: bool = False,
) -> torch.Tensor:
    """CCA prologue (spec steps 3-7) and the KV-cache writes of step 8, for packed varlen sequences.

    Sequence b owns tokens ``cu_seqlens[b]:cu_seqlens[b+1]`` and state slot ``state_indices[b]``. The
    slot's ``conv_state`` (the last two raw z = [qt; kt] steps) and ``value_state`` (the last delayed
    value projection) are read as the history before the first token, and overwritten with the new
    history after the last. A new sequence's slot must hold zeros (and the delayed-value bias, zero for
    ZAYA1, in ``value_state``): the model's cache does that when it admits a sequence. Chunked prefill
    and decode are the same call with the slot carrying on.

    Args:
        qt: [T, nq*D] projected queries; kt: [T, nkv*D]; vc, vd: [T, nkv*D/2] (param dtype, rows may be
            strided).
        conv_dw_weight: [C, 1, 2], conv_dw_bias: [C] (``conv_qk_depthwise``).
        conv_g_weight: [C, D, 2], conv_g_bias: [C] (``conv_qk_grouped``, nq+nkv groups of D).
        qk_temp: [nkv] per-KV-head key temperature (``qk_norm.temp``).
        cos_sin: [P, rot] rotary table in the param dtype: columns ``:rot/2`` hold cos, ``rot/2:`` sin
            (NeoX rotate-half over the first ``rot`` dims of each head), row p for position p.
        positions: [T] int64 position of each token (< P).
        cu_seqlens: [B+1] int32, cu_seqlens[0] = 0, non-decreasing, cu_seqlens[B] = T.
        conv_state: [S, C, 2] param dtype, mutated; value_state: [S, nkv*D/2] param dtype, mutated.
        state_indices: [B] int32 slot of each sequence (< S).
        k_cache, v_cache: [num_blocks, block_size, nkv, D] param dtype, the paged KV cache, mutated.
        slot_mapping: [T] int64 flat cache slot (block * block_size + offset) of each token; -1 skips.
        qk_norm_eps: QK-norm clamp, default ``torch.finfo(dtype).eps`` (as transformers).
        _prevalidated: internal, see the module docstring (skips the index-value check).
    Returns:
        q [T, nq, D] (QK-normed and rotated), ready for ``cca_attention``.
    """
    check_tensor("qt", qt, dtypes=FLOAT_DTYPES, ndim=2)
    dev, dt = qt.device, qt.dtype
    T = qt.shape[0]
    check_tensor("k_cache", k_cache, dtypes=(dt,), ndim=4, device=dev)
    _, _, nkv, D = k_cache.shape
    check_tensor("v_cache", v_cache, dtypes=(dt,), shape=tuple(k_cache.shape), device=dev)
    C, B = _check_cca_prologue(qt, kt, vc, vd, conv_dw_weight, conv_dw_bias, conv_g_weight, conv_g_bias, qk_temp,
                               cos_sin, positions, cu_seqlens, D, nkv, "k_cache", "k_cache.shape[2]")
    check_tensor("conv_state", conv_state, dtypes=(dt,), shape=(None, C, 2), device=dev)
    check_tensor("value_state", value_state, dtypes=(dt,), shape=(conv_state.shape[0], nkv * D // 2),
                 device=dev)
    check_tensor("state_indices", state_indices, dtypes=(torch.int32,), shape=(B,), device=dev)
    check_tensor("slot_mapping", slot_mapping, dtypes=(torch.int64,), shape=(T,), device=dev)
    eps = torch.finfo(dt).eps if qk_norm_eps is None else check_positive_finite("qk_norm_eps", qk_norm_eps)
    if not _prevalidated and _index_checks.enabled(qt):
        _index_checks.cca_qkv(T, cos_sin.shape[0], conv_state.shape[0], k_cache.shape[0] * k_cache.shape[1],
                              k_cache.shape[1], cu_seqlens, state_indices, positions, slot_mapping)
    return _OPS.cca_qkv(
        qt, kt, vc, vd, conv_dw_weight, conv_dw_bias, conv_g_weight, conv_g_bias, qk_temp, cos_sin,
        positions, cu_seqlens, conv_state, value_state, state_indices, k_cache, v_cache, slot_mapping, eps,
    )


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
    *,
    _prevalidated: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The differentiable form of :func:`cca_qkv` (training): the same maths, nothing written.

    Sequence b owns tokens ``cu_seqlens[b]:cu_seqlens[b+1]``; its history before the first token is
    row b of ``conv_state`` (the last two raw z = [qt; kt] steps, zeros for a sequence that starts
    at position 0) and of ``value_state`` (the previous delayed value). Rows are per sequence, not
    state slots, and neither tensor is written. k and v are returned instead of written to a cache.
    Differentiable (``torch.library.register_autograd``, ``zaya_ops._autograd``) with respect to qt, kt,
    vc, vd, the four conv tensors, qk_temp, conv_state and value_state; not cos_sin (a table) nor the
    index tensors. The forward runs the ``cca_qkv`` kernel of the device (on scratch states and a cache
    of one-token blocks), so its dtype and head-dim limits are ``cca_qkv``'s.

    Args:
        qt, kt, vc, vd, conv_dw_weight, conv_dw_bias, conv_g_weight, conv_g_bias, qk_temp, cos_sin,
            positions, cu_seqlens, qk_norm_eps: as for :func:`cca_qkv` (the head dim D is
            ``conv_g_weight.shape[1]``; qt, kt, vc, vd may be column slices of one fused projection).
        conv_state: [B, C, 2] param dtype, read only.
        value_state: [B, nkv*D/2] param dtype, read only.
        _prevalidated: internal, see the module docstring (skips the index-value check).
    Returns:
        (q [T, nq, D], k [T, nkv, D], v [T, nkv, D]), q and k QK-normed and rotated, as :func:`cca_qkv`
        returns q and writes k and v.
    """
    check_tensor("qt", qt, dtypes=FLOAT_DTYPES, ndim=2)
    dev, dt = qt.device, qt.dtype
    T = qt.shape[0]
    check_tensor("conv_g_weight", conv_g_weight, dtypes=(dt,), ndim=3, device=dev)
    check_tensor("kt", kt, dtypes=(dt,), ndim=2, device=dev)
    D = conv_g_weight.shape[1]
    nkv = kt.shape[1] // D if D else 0
    C, B = _check_cca_prologue(qt, kt, vc, vd, conv_dw_weight, conv_dw_bias, conv_g_weight, conv_g_bias, qk_temp,
                               cos_sin, positions, cu_seqlens, D, nkv, "conv_g_weight",
                               "kt.shape[1] / head dim")
    check_tensor("conv_state", conv_state, dtypes=(dt,), shape=(B, C, 2), device=dev)
    check_tensor("value_state", value_state, dtypes=(dt,), shape=(B, nkv * D // 2), device=dev)
    eps = torch.finfo(dt).eps if qk_norm_eps is None else check_positive_finite("qk_norm_eps", qk_norm_eps)
    if not _prevalidated and _index_checks.enabled(qt):
        _index_checks.cca_qkv_functional(T, cos_sin.shape[0], cu_seqlens, positions)
    return _OPS.cca_qkv_functional(
        qt, kt, vc, vd, conv_dw_weight, conv_dw_bias, conv_g_weight, conv_g_bias, qk_temp, cos_sin,
        positions, cu_seqlens, conv_state, value_state, eps,
    )


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
    *,
    _prevalidated: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal GQA attention over the paged KV cache (spec step 8), prefill and decode alike.

    Sequence b has ``n_b = cu_seqlens_q[b+1] - cu_seqlens_q[b]`` new queries and ``seqused_k[b]``
    cached keys (the new ones included, so ``seqused_k[b] >= n_b``). Its query i sits at position
    ``seqused_k[b] - n_b + i`` and attends to keys 0..that position; key j of sequence b lives in
    block ``block_table[b, j // block_size]`` at offset ``j % block_size``. Query head h uses KV head
    ``h // (nq // nkv)``. Softmax in fp32.

    Args:
        q: [T, nq, D] param dtype.
        k_cache, v_cache: [num_blocks, block_size, nkv, D] param dtype.
        cu_seqlens_q: [B+1] int32; seqused_k: [B] int32; block_table: [B, max_blocks] int32.
        scale: softmax scale, default D ** -0.5; a NaN or infinite scale (or one beyond float32's range)
            is a ValueError.
        max_seqlen_q, max_seqlen_k: upper bounds of n_b and seqused_k (kernels size their grids from
            them, so decode keeps static shapes). Default: the exact values, found by the index check;
            when it does not run, the bounds T and ``block_table.shape[1] * block_size`` (no host read).
        _prevalidated: internal, see the module docstring (skips the index-value check).
    Returns:
        (out [T, nq*D] param dtype, lse [nq, T] fp32 natural-log sum of exp of the scaled scores).
        Differentiable w.r.t. q, k_cache and v_cache through both outputs (``zaya_ops._autograd``);
        float64 q, k_cache and v_cache run on the CPU (exactly, for gradcheck) and give a float64 lse.
    """
    check_tensor("q", q, dtypes=FLOAT_DTYPES + ((torch.float64,) if q.device.type == "cpu" else ()), ndim=3)
    dev, dt = q.device, q.dtype
    T, nq, D = q.shape
    check_tensor("k_cache", k_cache, dtypes=(dt,), ndim=4, device=dev)
    nkv = k_cache.shape[2]
    if k_cache.shape[3] != D:
        raise ValueError(f"k_cache head dim {k_cache.shape[3]} must equal q's head dim {D}")
    if nkv == 0 or nq % nkv:
        raise ValueError(f"q heads ({nq}) must be a multiple of k_cache heads ({nkv})")
    check_tensor("v_cache", v_cache, dtypes=(dt,), shape=tuple(k_cache.shape), device=dev)
    check_tensor("cu_seqlens_q", cu_seqlens_q, dtypes=(torch.int32,), ndim=1, device=dev)
    B = cu_seqlens_q.shape[0] - 1
    if B < 1:
        raise ValueError("cu_seqlens_q must hold at least two entries (one sequence)")
    check_tensor("seqused_k", seqused_k, dtypes=(torch.int32,), shape=(B,), device=dev)
    check_tensor("block_table", block_table, dtypes=(torch.int32,), shape=(B, None), device=dev)
    if scale is None:
        scale = D ** -0.5
    elif not abs(float(scale)) <= torch.finfo(torch.float32).max:  # the kernels take it as a float32
        raise ValueError(f"scale must be a finite number (in float32's range), got {scale!r}")
    num_blocks, block_size = k_cache.shape[0], k_cache.shape[1]
    if not _prevalidated and _index_checks.enabled(q):
        longest_q, longest_k = _index_checks.cca_attention(T, num_blocks, block_size, cu_seqlens_q, seqused_k,
                                                           block_table, max_seqlen_q, max_seqlen_k)
        max_seqlen_q = longest_q if max_seqlen_q is None else max_seqlen_q
        max_seqlen_k = longest_k if max_seqlen_k is None else max_seqlen_k
    if max_seqlen_q is None:
        max_seqlen_q = T
    if max_seqlen_k is None:
        max_seqlen_k = block_table.shape[1] * block_size
    return _OPS.cca_attention(
        q, k_cache, v_cache, cu_seqlens_q, seqused_k, block_table, float(scale), int(max_seqlen_q),
        int(max_seqlen_k),
    )


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
    """ZAYA1 MLP router with the skip class (spec step 12).

    ``rho = x @ down_weight.T + down_bias`` (+ ``prev_state * states_scale`` after the first layer),
    ``logits = out(GELU(fc2(GELU(fc1(rms_norm(rho))))))``, ``p = softmax(logits)``,
    ``e = argmax(fp32(p) + balancing_biases)``, ``w = p[e]`` (0 when e == E, the skip class).

    Args:
        x: [T, H] param dtype (the post-attention RMSNorm output).
        prev_state: [T, R] previous layer's router state, or None in the first layer.
        down_weight: [R, H]; down_bias: [R]; states_scale: [R] or None (with prev_state);
        norm_weight: [R]; fc1_weight, fc2_weight: [R, R]; fc1_bias, fc2_bias: [R];
        out_weight: [E+1, R] (no bias); balancing_biases: [E+1] fp32.
        eps: RMSNorm epsilon of the router norm.
        return_logits: also return the [T, E+1] logits (else an empty [0, E+1] tensor).
    Returns:
        (expert_index int32 [T] in 0..E, expert_weight [T] param dtype, router_state [T, R] (the
        next layer's prev_state), logits, counts int32 [E+1] tokens per class, skip last).
    """
    check_tensor("x", x, dtypes=FLOAT_DTYPES, ndim=2)
    dev, dt = x.device, x.dtype
    T, H = x.shape
    check_tensor("down_weight", down_weight, dtypes=(dt,), ndim=2, device=dev)
    R = down_weight.shape[0]
    check_tensor("down_weight", down_weight, shape=(R, H))
    check_tensor("out_weight", out_weight, dtypes=(dt,), ndim=2, device=dev)
    E1 = out_weight.shape[0]
    if E1 < 2:
        raise ValueError(f"out_weight must have at least 2 rows (one expert and the skip class), got {E1}")
    check_tensor("out_weight", out_weight, shape=(E1, R))
    if (prev_state is None) != (states_scale is None):
        raise ValueError("prev_state and states_scale must be given together (layers after the first) "
                         "or both be None (first layer)")
    if prev_state is not None:
        check_tensor("prev_state", prev_state, dtypes=(dt,), shape=(T, R), device=dev)
        _check_vector("states_scale", states_scale, R, x)
    for name, t in (("down_bias", down_bias), ("norm_weight", norm_weight), ("fc1_bias", fc1_bias),
                    ("fc2_bias", fc2_bias)):
        _check_vector(name, t, R, x)
    check_tensor("fc1_weight", fc1_weight, dtypes=(dt,), shape=(R, R), device=dev)
    check_tensor("fc2_weight", fc2_weight, dtypes=(dt,), shape=(R, R), device=dev)
    check_tensor("balancing_biases", balancing_biases, dtypes=(torch.float32,), shape=(E1,), device=dev)
    return _OPS.router(
        x, prev_state, down_weight, down_bias, states_scale, norm_weight, fc1_weight, fc1_bias,
        fc2_weight, fc2_bias, out_weight, balancing_biases, check_positive_finite("eps", eps),
        bool(return_logits),
    )


def moe_top1(
    x: torch.Tensor,
    expert_index: torch.Tensor,
    expert_weight: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    expert_start: int = 0,
    expert_end: int | None = None,
    *,
    _prevalidated: bool = False,
) -> torch.Tensor:
    """Top-1 SiLU-gated experts (spec step 13), skip tokens never computed.

    ``out[t] = w[t] * (SiLU(x[t] @ Wg_e.T) * (x[t] @ Wu_e.T)) @ Wd_e.T`` for ``e = expert_index[t]``
    in ``[expert_start, expert_end)``; zero for e == E (skip) and for experts outside the range (so
    ranks of an expert-parallel model sum their outputs).

    Args:
        x: [T, H] param dtype (float64, with every float argument float64, on the CPU: for gradcheck).
        expert_index: [T] int32 or int64 in 0..E (E = skip); anything else is an error.
        expert_weight: [T] param dtype.
        gate_up_proj: [E, 2I, H] (rows :I gate, I: up); down_proj: [E, H, I], checkpoint layout.
        expert_start, expert_end: the local expert range, default all experts.
        _prevalidated: internal, see the module docstring (skips the index-value check).
    Returns:
        [T, H] param dtype.
    """
    check_tensor("x", x, dtypes=_NORM_DTYPES, ndim=2)
    dev, dt = x.device, x.dtype
    T, H = x.shape
    check_tensor("expert_index", expert_index, dtypes=INDEX_DTYPES, shape=(T,), device=dev)
    check_tensor("expert_weight", expert_weight, dtypes=(dt,), shape=(T,), device=dev)
    check_tensor("gate_up_proj", gate_up_proj, dtypes=(dt,), ndim=3, device=dev)
    E, I2 = gate_up_proj.shape[0], gate_up_proj.shape[1]
    if I2 % 2 or gate_up_proj.shape[2] != H:
        raise ValueError(f"gate_up_proj must have shape [E, 2I, {H}], got {list(gate_up_proj.shape)}")
    check_tensor("down_proj", down_proj, dtypes=(dt,), shape=(E, H, I2 // 2), device=dev)
    end = E if expert_end is None or expert_end < 0 else int(expert_end)
    if not 0 <= int(expert_start) <= end <= E:
        raise ValueError(f"expert range [{expert_start}, {expert_end}) must lie within [0, {E}]")
    if not _prevalidated and _index_checks.enabled(x):
        _index_checks.moe_top1(expert_index, E)
    return _OPS.moe_top1(x, expert_index, expert_weight, gate_up_proj, down_proj, int(expert_start), end)
