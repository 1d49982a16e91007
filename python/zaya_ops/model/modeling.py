"""``ZayaForCausalLM``: the ZAYA1 model run through the zaya_ops op layer.

Every step of a decoder layer is one op call (``rms_norm``, ``cca_qkv``, ``cca_attention``,
``residual_scale_rmsnorm`` fused with the next norm, ``router``, ``moe_top1``); the dense projections
(fused q/k/v-current/v-delayed, o_proj, LM head) are F.linear (on CPUs :func:`dense`'s
``torch.ops.zaya.linear``). Sequences are packed without padding
(``cu_seqlens``) and keep their decode state in a :class:`~zaya_ops.model.cache.ZayaCache`.

Two entry points run the network:

* :meth:`ZayaForCausalLM.forward` (prefill and chunked prefill): any number of new tokens per sequence;
  the packing metadata is built on the host from the (host-known) lengths.
* :meth:`ZayaForCausalLM.decode`: one token per sequence with static shapes; positions, slot mapping and
  key lengths are computed on the device from the cache's ``seq_lens``/``block_table``, and
  ``max_seqlen_q``/``max_seqlen_k`` are constants, so the device part (:meth:`decode_step`) makes no
  data-dependent host syncs (capturable in a CUDA graph once every op runs a compiled kernel; the
  reference ops read small index tensors on the host). The index metadata is validated where it is
  made, by the cache (``ZayaCache.validate_batch``, once per change of batch), so the ops run without
  their per-call index check: a decode step on the kernels reads nothing back from the device
  (tests/test_no_host_sync.py).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import reference as _reference
from .backend import OpBackend
from .cache import ZayaCache
from .config import ZayaConfig
from .weights import load_tensors_into, parameter_shapes

__all__ = ["ZayaForCausalLM", "ZayaOutput", "StepMeta", "PackedMeta", "cca_block", "cca_block_functional",
           "decoder_layer", "delayed_value_bias", "dense", "embed_tokens", "hf_tensor_map", "lm_logits",
           "packed_meta", "rope_table"]

_owner_ids = itertools.count(1)


@dataclass
class _Layer:
    """One decoder layer's tensors (our layout; ``qkv_weight`` rows are Wq, Wk, Wvc, Wvd)."""

    input_norm: torch.Tensor
    qkv_weight: torch.Tensor
    qkv_bias: torch.Tensor | None
    conv_dw_weight: torch.Tensor
    conv_dw_bias: torch.Tensor
    conv_g_weight: torch.Tensor
    conv_g_bias: torch.Tensor
    qk_temp: torch.Tensor
    o_weight: torch.Tensor
    o_bias: torch.Tensor | None
    attn_scale: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # hb, hs, rb, rs
    post_attn_norm: torch.Tensor
    router_down_weight: torch.Tensor
    router_down_bias: torch.Tensor
    router_states_scale: torch.Tensor | None
    router_norm: torch.Tensor
    router_fc1_weight: torch.Tensor
    router_fc1_bias: torch.Tensor
    router_fc2_weight: torch.Tensor
    router_fc2_bias: torch.Tensor
    router_out_weight: torch.Tensor
    balancing_biases: torch.Tensor
    gate_up_proj: torch.Tensor
    down_proj: torch.Tensor
    mlp_scale: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class StepMeta:
    """Packing metadata of one model step (all on the model's device).

    ``positions`` int64 [T], ``cu_seqlens`` int32 [B+1], ``slot_mapping`` int64 [T], ``state_indices``
    int32 [B], ``seqused_k`` int32 [B] (cached tokens after the step), ``block_table`` int32
    [B, max_blocks], ``max_seqlen_q``/``max_seqlen_k`` host ints (upper bounds).
    """

    positions: torch.Tensor
    cu_seqlens: torch.Tensor
    slot_mapping: torch.Tensor
    state_indices: torch.Tensor
    seqused_k: torch.Tensor
    block_table: torch.Tensor
    max_seqlen_q: int
    max_seqlen_k: int


@dataclass
class ZayaOutput:
    """Result of :meth:`ZayaForCausalLM.forward`.

    ``logits``: [B, V] of each sequence's last new token, or, with ``all_logits=True``, [T, V] of every
    new token packed in order (sequence b's rows ``cu_seqlens[b]:cu_seqlens[b+1]``), in the model dtype.
    ``cache``/``slots``: where the sequences' state lives (pass them to the next call).
    """

    logits: torch.Tensor
    cu_seqlens: list[int]
    cache: ZayaCache
    slots: list[int]


def _as_sequences(input_ids, vocab_size: int, device: torch.device) -> list[torch.Tensor]:
    """Normalise the accepted input forms to a list of 1-D int64 tensors on ``device``, checking that none
    is empty and every id is in the vocabulary (ValueError naming the sequence otherwise)."""
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dtype in (torch.bool,) or input_ids.dtype.is_floating_point or input_ids.dtype.is_complex:
            raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
        if input_ids.dim() == 1:
            seqs = [input_ids]
        elif input_ids.dim() == 2:
            seqs = list(input_ids.unbind(0))
        else:
            raise ValueError(f"input_ids must be 1-D (one sequence) or 2-D [B, T], got shape {tuple(input_ids.shape)}")
    elif isinstance(input_ids, (list, tuple)):
        if len(input_ids) == 0:
            raise ValueError("input_ids is empty: give at least one sequence")
        if all(isinstance(t, int) and not isinstance(t, bool) for t in input_ids):
            input_ids = [input_ids]  # a flat list of ids is one sequence
        seqs = []
        for b, s in enumerate(input_ids):
            if isinstance(s, torch.Tensor):
                if s.dim() != 1 or s.dtype.is_floating_point or s.dtype == torch.bool:
                    raise ValueError(f"sequence {b} must be a 1-D integer tensor, got {s.dtype} shape {tuple(s.shape)}")
                seqs.append(s)
            elif isinstance(s, (list, tuple)):
                if not all(isinstance(t, int) and not isinstance(t, bool) for t in s):
                    raise ValueError(f"sequence {b} must hold Python ints (token ids)")
                seqs.append(torch.tensor(list(s), dtype=torch.int64))
            else:
                raise ValueError(f"sequence {b} must be a list of ints or a 1-D tensor, got {type(s).__name__}")
    else:
        raise ValueError(f"input_ids must be a tensor or a list of sequences, got {type(input_ids).__name__}")
    for b, s in enumerate(seqs):
        if s.numel() == 0:
            raise ValueError(f"sequence {b} is empty: every sequence needs at least one token")
    seqs = [s.to(device=device, dtype=torch.int64) for s in seqs]
    flat = torch.cat(seqs)
    lo_hi = torch.stack([flat.min(), flat.max()]).tolist()  # one host read for the batch (prefill only)
    if lo_hi[0] < 0 or lo_hi[1] >= vocab_size:
        for b, s in enumerate(seqs):
            lo, hi = int(s.min()), int(s.max())
            if lo < 0 or hi >= vocab_size:
                raise ValueError(f"sequence {b} holds token id {lo if lo < 0 else hi}, outside the vocabulary "
                                 f"[0, {vocab_size})")
    return seqs


def rope_table(cfg: ZayaConfig, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """The ``cos_sin`` table of ``cca_qkv`` for every position up to ``max_position_embeddings``."""
    inv_freq = _reference.rope_inv_freq(cfg.head_dim, cfg.partial_rotary_factor, cfg.rope_theta)
    return _reference.rope_cos_sin(inv_freq.to(device), cfg.max_position_embeddings, dtype)


def embed_tokens(model, ids: torch.Tensor) -> torch.Tensor:
    """Spec "Embedding": fp32 residual [T, H] of token ids [T] (``model.embed``, ``model.input_bias``,
    ``model.input_scale``; bf16 arithmetic, then fp32)."""
    e = F.embedding(ids, model.embed, getattr(model, "padding_idx", None))  # padding_idx: no gradient to that row
    return ((e + model.input_bias) * model.input_scale).to(torch.float32)


def dense(op, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` of the model's projections and LM head. On a CPU under a kernel backend
    (``op.backend`` "auto" or "ops"): ``torch.ops.zaya.linear`` (csrc/cpu/linear.cpp), F.linear's contract
    (fp32 accumulation, one rounding) but fast in bf16/fp16 where ATen is not (CPUs without AVX-512: a
    streaming AVX2 kernel for decode's few rows, fp32 sgemm for prefill), in inference and training alike
    (its autograd is F.linear's, each product through zaya.linear). Elsewhere, and under "reference",
    F.linear itself."""
    if x.device.type == "cpu" and getattr(op, "backend", "reference") != "reference":
        return torch.ops.zaya.linear(x, weight, bias)
    return F.linear(x, weight, bias)


def lm_logits(model, x: torch.Tensor, op=None) -> torch.Tensor:
    """Spec "Head": logits [T, V] of the final-normed hidden states ``x`` (``model.lm_head``,
    ``model.lm_head_bias``), through :func:`dense` with the op backend ``op`` (None: F.linear)."""
    return dense(op, x, model.lm_head, model.lm_head_bias)


def hf_tensor_map(cfg: ZayaConfig, model) -> dict[str, torch.Tensor]:
    """Each tensor of a ZAYA1 model by its transformers (checkpoint) name: the one weight-name mapping of
    zaya_ops, used by :meth:`ZayaForCausalLM.hf_state_dict` and the vLLM integration's ``load_weights``.

    ``model`` has ``embed``, ``input_bias``, ``input_scale``, ``final_norm``, ``lm_head`` (ignored when the
    embedding is tied), ``lm_head_bias`` (or None) and ``layers``, each with the attributes of
    :class:`_Layer`. The q/k/v projections map to row slices (views) of the fused ``qkv_weight``, so copying
    a checkpoint tensor into the mapped view fills the fused matrix.
    """
    qd, kvd = cfg.q_dim, cfg.kv_dim
    cuts = [(0, qd, "q_proj"), (qd, qd + kvd, "k_proj"), (qd + kvd, qd + kvd + kvd // 2, "v_proj_current"),
            (qd + kvd + kvd // 2, cfg.qkv_dim, "v_proj_delayed")]
    s = {
        "model.embed_tokens.weight": model.embed,
        "model.input_hidden_states_bias": model.input_bias,
        "model.input_hidden_states_scale": model.input_scale,
        "model.norm.weight": model.final_norm,
    }
    if not cfg.tie_word_embeddings:
        s["lm_head.weight"] = model.lm_head
    if model.lm_head_bias is not None:
        s["lm_head.bias"] = model.lm_head_bias
    for i, L in enumerate(model.layers):
        p = f"model.layers.{i}."
        qkv = p + "self_attn.qkv_proj."
        for lo, hi, n in cuts:
            s[f"{qkv}{n}.weight"] = L.qkv_weight[lo:hi]
            if L.qkv_bias is not None:
                s[f"{qkv}{n}.bias"] = L.qkv_bias[lo:hi]
        s.update({
            p + "input_layernorm.weight": L.input_norm,
            p + "post_attention_layernorm.weight": L.post_attn_norm,
            qkv + "conv_qk_depthwise.weight": L.conv_dw_weight, qkv + "conv_qk_depthwise.bias": L.conv_dw_bias,
            qkv + "conv_qk_grouped.weight": L.conv_g_weight, qkv + "conv_qk_grouped.bias": L.conv_g_bias,
            p + "self_attn.qk_norm.temp": L.qk_temp,
            p + "self_attn.o_proj.weight": L.o_weight,
            p + "mlp.gate.down_proj.weight": L.router_down_weight,
            p + "mlp.gate.down_proj.bias": L.router_down_bias,
            p + "mlp.gate.router_mlp.norm.weight": L.router_norm,
            p + "mlp.gate.router_mlp.fc1.weight": L.router_fc1_weight,
            p + "mlp.gate.router_mlp.fc1.bias": L.router_fc1_bias,
            p + "mlp.gate.router_mlp.fc2.weight": L.router_fc2_weight,
            p + "mlp.gate.router_mlp.fc2.bias": L.router_fc2_bias,
            p + "mlp.gate.router_mlp.out_proj.weight": L.router_out_weight,
            p + "mlp.gate.balancing_biases": L.balancing_biases,
            p + "mlp.experts.gate_up_proj": L.gate_up_proj,
            p + "mlp.experts.down_proj": L.down_proj,
        })
        if L.o_bias is not None:
            s[p + "self_attn.o_proj.bias"] = L.o_bias
        if L.router_states_scale is not None:
            s[p + "mlp.gate.router_states_scale"] = L.router_states_scale
        leaves = ("hidden_states_bias", "hidden_states_scale", "residual_bias", "residual_scale")
        scales = (("post_attention_residual_scale", L.attn_scale), ("post_mlp_residual_scale", L.mlp_scale))
        for scale, ts in scales:
            for leaf, t in zip(leaves, ts):
                s[f"{p}{scale}.{leaf}"] = t
    return s


def delayed_value_bias(cfg: ZayaConfig, L) -> torch.Tensor | None:
    """The value state a new sequence starts from in layer ``L``: the delayed-value projection's bias
    (the value of ``vd`` for a zero input, spec step 5), or None when the layer has no q/k/v biases (zero,
    as in ZAYA1-8B)."""
    return None if L.qkv_bias is None else L.qkv_bias[cfg.qkv_dim - cfg.kv_dim // 2:]


def cca_block(op: OpBackend, cfg: ZayaConfig, L, proj: torch.Tensor, cos_sin: torch.Tensor, meta: StepMeta,
              k_cache: torch.Tensor, v_cache: torch.Tensor, conv_state: torch.Tensor,
              value_state: torch.Tensor) -> torch.Tensor:
    """Spec steps 3-8 of one layer: ``cca_qkv`` on the fused projection ``proj`` [T, qkv_dim] (writing the
    new keys and values into the paged cache through ``meta.slot_mapping`` and carrying each sequence's
    conv/value state in its ``meta.state_indices`` slot), then ``cca_attention`` over the cache.

    ``L`` holds the layer's tensors by the names of :class:`_Layer` (``conv_dw_weight``, ...,
    ``qk_temp``); ``k_cache``/``v_cache`` are [num_blocks, block_size, nkv, D] with any strides. Shared by
    :class:`ZayaForCausalLM` and the vLLM integration (``zaya_ops.integrations.vllm``). Returns the
    attention output [T, nq*D] (before o_proj).
    """
    qd, kvd = cfg.q_dim, cfg.kv_dim
    c1, c2, c3 = qd, qd + kvd, qd + kvd + kvd // 2
    q = op("cca_qkv", proj[:, :c1], proj[:, c1:c2], proj[:, c2:c3], proj[:, c3:],
           L.conv_dw_weight, L.conv_dw_bias, L.conv_g_weight, L.conv_g_bias, L.qk_temp, cos_sin,
           meta.positions, meta.cu_seqlens, conv_state, value_state, meta.state_indices,
           k_cache, v_cache, meta.slot_mapping)
    o, _ = op("cca_attention", q, k_cache, v_cache, meta.cu_seqlens, meta.seqused_k, meta.block_table,
              cfg.head_dim ** -0.5, meta.max_seqlen_q, meta.max_seqlen_k)
    return o


@dataclass
class PackedMeta:
    """Packing metadata of a training step over B whole sequences packed into T tokens (no cache).

    ``cu_seqlens`` int32 [B+1], ``positions`` int64 [T] (each token's rotary position), ``block_table``
    int32 [B, max_seqlen] (row b lists sequence b's token rows: the new keys and values themselves serve
    as a paged cache of block size 1), ``seqused_k`` int32 [B] (the lengths), ``max_seqlen`` a host int.
    """

    cu_seqlens: torch.Tensor
    positions: torch.Tensor
    block_table: torch.Tensor
    seqused_k: torch.Tensor
    max_seqlen: int


def packed_meta(lengths: Sequence[int], device: torch.device | str, starts: Sequence[int] | None = None) -> PackedMeta:
    """:class:`PackedMeta` of sequences of ``lengths`` (host ints >= 0) packed in order; sequence b's
    positions run from ``starts[b]`` (default 0)."""
    lengths = [int(n) for n in lengths]
    if not lengths or min(lengths) < 0:
        raise ValueError(f"lengths must be a non-empty list of ints >= 0, got {lengths}")
    starts = [0] * len(lengths) if starts is None else [int(s) for s in starts]
    cu = [0, *itertools.accumulate(lengths)]
    width = max(1, max(lengths))
    table = torch.zeros(len(lengths), width, dtype=torch.int32)
    for b, n in enumerate(lengths):
        table[b, :n] = torch.arange(cu[b], cu[b] + n, dtype=torch.int32)
    positions = torch.cat([torch.arange(st, st + n) for st, n in zip(starts, lengths)])
    return PackedMeta(cu_seqlens=torch.tensor(cu, dtype=torch.int32, device=device),
                      positions=positions.to(device), block_table=table.to(device),
                      seqused_k=torch.tensor(lengths, dtype=torch.int32, device=device), max_seqlen=width)


def cca_block_functional(op: OpBackend, cfg: ZayaConfig, L, proj: torch.Tensor, cos_sin: torch.Tensor,
                         meta: PackedMeta, conv_state: torch.Tensor | None = None,
                         value_state: torch.Tensor | None = None) -> torch.Tensor:
    """Spec steps 3-8 of one layer for training (differentiable, no cache): ``cca_qkv_functional`` on the
    fused projection ``proj`` [T, qkv_dim] of whole packed sequences, then ``cca_attention`` with the
    returned k and v as a paged cache of block size 1 (``meta.block_table``).

    ``conv_state`` [B, C, 2] / ``value_state`` [B, nkv*D/2]: each sequence's history before its first
    token; default zeros and the delayed-value bias (:func:`delayed_value_bias`, through which its
    gradient flows), as a fresh sequence. Returns the attention output [T, nq*D] (before o_proj).
    """
    qd, kvd = cfg.q_dim, cfg.kv_dim
    c1, c2, c3 = qd, qd + kvd, qd + kvd + kvd // 2
    B = meta.cu_seqlens.shape[0] - 1
    if conv_state is None:
        conv_state = proj.new_zeros(B, cfg.conv_channels, 2)
    if value_state is None:
        bias = delayed_value_bias(cfg, L)
        value_state = proj.new_zeros(B, kvd // 2) if bias is None else bias.expand(B, kvd // 2)
    q, k, v = op("cca_qkv_functional", proj[:, :c1], proj[:, c1:c2], proj[:, c2:c3], proj[:, c3:],
                 L.conv_dw_weight, L.conv_dw_bias, L.conv_g_weight, L.conv_g_bias, L.qk_temp, cos_sin,
                 meta.positions, meta.cu_seqlens, conv_state, value_state)
    o, _ = op("cca_attention", q, k.unsqueeze(1), v.unsqueeze(1), meta.cu_seqlens, meta.seqused_k,
              meta.block_table, cfg.head_dim ** -0.5, meta.max_seqlen, meta.max_seqlen)
    return o


def decoder_layer(op: OpBackend, cfg: ZayaConfig, L, r: torch.Tensor, x: torch.Tensor, prev: torch.Tensor | None,
                  next_norm: torch.Tensor, attention) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One ZAYA1 decoder layer after its input norm (spec steps 2-14), on the ops through ``op``.

    Args:
        L: the layer's tensors by the names of :class:`_Layer`.
        r: fp32 residual [T, H]; x: its input-normed [T, H] (param dtype).
        prev: the previous layer's router state [T, R] (None in the first layer).
        next_norm: the weight of the norm that follows (the next layer's input norm or the final norm).
        attention: maps the fused q/k/v projection [T, qkv_dim] to the attention output [T, nq*D]
            (:func:`cca_block` over some cache, or :func:`cca_block_functional` for training).
    Returns:
        (new residual, its normed copy for the next layer, this layer's router state).
    """
    eps = cfg.rms_norm_eps
    proj = dense(op, x, L.qkv_weight, L.qkv_bias)
    a = dense(op, attention(proj), L.o_weight, L.o_bias)
    r, x2 = op("residual_scale_rmsnorm", a, r, *L.attn_scale, L.post_attn_norm, eps)
    idx, w, prev, _, _ = op("router", x2, prev, L.router_down_weight, L.router_down_bias, L.router_states_scale,
                            L.router_norm, L.router_fc1_weight, L.router_fc1_bias, L.router_fc2_weight,
                            L.router_fc2_bias, L.router_out_weight, L.balancing_biases, eps)
    m = op("moe_top1", x2, idx, w, L.gate_up_proj, L.down_proj)
    r, x = op("residual_scale_rmsnorm", m, r, *L.mlp_scale, next_norm, eps)
    return r, x, prev


class ZayaForCausalLM:
    """ZAYA1 causal LM on the zaya_ops op layer (inference only).

    Build it with :meth:`from_pretrained` (a transformers checkpoint directory) or :meth:`random` (random
    weights). Weights live on ``device`` in ``dtype`` (``balancing_biases`` stay fp32); Wq, Wk, Wvc and Wvd
    of each layer are fused into one [nq*D + 2*nkv*D, H] matrix at load time.

    Args:
        config: the model config.
        device: where weights, cache and compute live (default CPU).
        dtype: parameter dtype (default: the config's ``dtype``, else bf16); the residual stream is fp32.
        backend: "auto" (default; per op the compiled kernel when it exists for the device, else the
            reference), "ops" (compiled kernels only) or "reference" (``zaya_ops.reference``). See
            :meth:`op_backends` for what ran.

    The weights are allocated uninitialised; :meth:`from_pretrained`/:meth:`random` fill them.
    """

    def __init__(self, config: ZayaConfig, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, backend: str = "auto") -> None:
        if not isinstance(config, ZayaConfig):
            raise TypeError(f"config must be a zaya_ops ZayaConfig, got {type(config).__name__}")
        self.config = config
        self.device = torch.device(device if device is not None else "cpu")
        self.dtype = dtype or config.torch_dtype or torch.bfloat16
        if self.dtype not in (torch.bfloat16, torch.float16, torch.float32):
            raise ValueError(f"dtype must be bfloat16, float16 or float32, got {self.dtype}")
        self._owner = next(_owner_ids)
        self._backend = OpBackend(backend, self.device, self.dtype, config.head_dim)
        self._decode_slots: dict[tuple[int, ...], torch.Tensor] = {}
        self._alloc()
        self.cos_sin = rope_table(config, self.device, self.dtype)

    # ------------------------------------------------------------------------------------------
    # Weights
    def _alloc(self) -> None:
        cfg, dev, dt = self.config, self.device, self.dtype
        H, V, R = cfg.hidden_size, cfg.vocab_size, cfg.router_hidden_size
        E, I = cfg.num_experts, cfg.moe_intermediate_size
        C, D = cfg.conv_channels, cfg.head_dim

        def e(*shape, dtype=dt):
            return torch.empty(*shape, device=dev, dtype=dtype)

        self.embed = e(V, H)
        self.input_bias, self.input_scale = e(H), e(H)
        self.final_norm = e(H)
        self.lm_head = self.embed if cfg.tie_word_embeddings else e(V, H)
        self.lm_head_bias = e(V) if cfg.lm_head_bias else None
        self.layers: list[_Layer] = []
        for i in range(cfg.num_hidden_layers):
            self.layers.append(_Layer(
                input_norm=e(H), qkv_weight=e(cfg.qkv_dim, H), qkv_bias=e(cfg.qkv_dim) if cfg.attention_bias else None,
                conv_dw_weight=e(C, 1, 2), conv_dw_bias=e(C), conv_g_weight=e(C, D, 2), conv_g_bias=e(C),
                qk_temp=e(cfg.num_key_value_heads), o_weight=e(H, cfg.q_dim),
                o_bias=e(H) if cfg.attention_bias else None,
                attn_scale=(e(H), e(H), e(H), e(H)), post_attn_norm=e(H),
                router_down_weight=e(R, H), router_down_bias=e(R), router_states_scale=e(R) if i > 0 else None,
                router_norm=e(R), router_fc1_weight=e(R, R), router_fc1_bias=e(R), router_fc2_weight=e(R, R),
                router_fc2_bias=e(R), router_out_weight=e(E + 1, R), balancing_biases=e(E + 1, dtype=torch.float32),
                gate_up_proj=e(E, 2 * I, H), down_proj=e(E, H, I), mlp_scale=(e(H), e(H), e(H), e(H)),
            ))

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The model's tensors by their transformers names (views into our storage: the q/k/v
        projections are row slices of the fused matrix). Writing into them changes the model."""
        return hf_tensor_map(self.config, self)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, device: torch.device | str | None = None,
                        dtype: torch.dtype | str | None = None, backend: str = "auto",
                        progress: bool | None = None) -> "ZayaForCausalLM":
        """Load a transformers ZAYA1 checkpoint directory (``config.json`` + ``model.safetensors`` or a
        sharded checkpoint with ``model.safetensors.index.json``).

        Tensors are matched by their transformers names, checked (a ``CheckpointError``, a ValueError,
        names every missing, unexpected or mis-shaped tensor before anything is read), then copied one by
        one from the memory-mapped files into the model's storage on ``device`` in ``dtype`` (default:
        the config's dtype, else bf16), with a tqdm bar for large checkpoints (``progress``). The LM
        head is tied to the embedding when the config says so (a stored ``lm_head.weight`` is then
        ignored, as transformers does). ``balancing_biases`` are loaded as stored, all E+1 fp32 values.
        """
        config = ZayaConfig.from_pretrained(path)
        if isinstance(dtype, str):
            from .config import DTYPE_NAMES

            if dtype not in DTYPE_NAMES:
                raise ValueError(f"dtype {dtype!r} is not one of {sorted(DTYPE_NAMES)}")
            dtype = DTYPE_NAMES[dtype]
        model = cls(config, device=device, dtype=dtype, backend=backend)
        targets = model.hf_state_dict()
        expected = parameter_shapes(config)
        assert set(targets) == set(expected), "internal: parameter tables disagree"
        ignore = ["lm_head.weight"] if config.tie_word_embeddings else []
        load_tensors_into(path, targets, ignore=ignore, progress=progress)
        return model

    @classmethod
    def random(cls, config: ZayaConfig, *, seed: int = 0, device: torch.device | str | None = None,
               dtype: torch.dtype | None = None, backend: str = "auto") -> "ZayaForCausalLM":
        """A model with random weights (``weights.random_state_dict``), for tests and demos."""
        from .weights import random_state_dict

        model = cls(config, device=device, dtype=dtype, backend=backend)
        with torch.no_grad():
            targets = model.hf_state_dict()
            for name, t in random_state_dict(config, seed, model.dtype).items():
                targets[name].copy_(t)
        return model

    # ------------------------------------------------------------------------------------------
    # Backend
    @property
    def backend(self) -> str:
        """The backend switch: "auto", "ops" or "reference"."""
        return self._backend.backend

    def set_backend(self, backend: str) -> None:
        """Switch the backend ("auto", "ops", "reference"); the weights are unchanged."""
        self._backend = OpBackend(backend, self.device, self.dtype, self.config.head_dim)

    def op_backends(self) -> dict[str, str]:
        """Which backend ran each op so far: op name -> ``"kernel (cpu)"``, ``"reference (<why>)"`` or
        ``"not run yet"``."""
        return self._backend.report()

    # ------------------------------------------------------------------------------------------
    # Cache
    def new_cache(self, max_seqs: int, max_seq_len: int, *, block_size: int = 16,
                  num_blocks: int | None = None) -> ZayaCache:
        """A cache for up to ``max_seqs`` sequences of up to ``max_seq_len`` tokens each, on the model's
        device and dtype (see :class:`ZayaCache`); new slots' value state starts at the delayed-value bias."""
        init = [delayed_value_bias(self.config, L) for L in self.layers]
        return ZayaCache(self.config, max_seqs, max_seq_len, block_size=block_size, num_blocks=num_blocks,
                         device=self.device, dtype=self.dtype, value_state_init=init, owner=self._owner)

    def _check_cache(self, cache: ZayaCache) -> None:
        if not isinstance(cache, ZayaCache):
            raise ValueError(f"cache must be a ZayaCache, got {type(cache).__name__}")
        if cache.owner != self._owner:
            raise ValueError("this cache belongs to another model (make one with this model's new_cache())")
        if cache.device != self.device or cache.dtype != self.dtype:
            raise ValueError(f"cache is {cache.dtype} on {cache.device}, the model {self.dtype} on {self.device}")

    # ------------------------------------------------------------------------------------------
    # The network
    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return embed_tokens(self, ids)

    def _layers(self, r: torch.Tensor, meta: StepMeta, cache: ZayaCache) -> torch.Tensor:
        """All decoder layers on the fp32 residual ``r`` [T, H]; returns the final-normed [T, H]."""
        cfg, op = self.config, self._backend
        x = op("rms_norm", r, self.layers[0].input_norm, cfg.rms_norm_eps)
        prev = None
        n = len(self.layers)
        for i, L in enumerate(self.layers):
            nxt = self.layers[i + 1].input_norm if i + 1 < n else self.final_norm

            def attention(proj, i=i, L=L):
                return cca_block(op, cfg, L, proj, self.cos_sin, meta, cache.k[i], cache.v[i],
                                 cache.conv_state[i], cache.value_state[i])

            r, x, prev = decoder_layer(op, cfg, L, r, x, prev, nxt, attention)
        return x

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return lm_logits(self, x, self._backend)

    def _resolve_slots(self, cache: ZayaCache, slots: Sequence[int] | None, n: int) -> list[int]:
        if slots is None:
            active = cache.active_slots
            if not active:
                if n > cache.max_seqs:
                    raise ValueError(f"{n} sequences given but the cache has {cache.max_seqs} slots")
                return cache.admit(n)
            if len(active) != n:
                raise ValueError(f"{n} sequences given but the cache holds {len(active)} (another batch?): "
                                 f"pass slots=[...] naming which cached sequence each one continues")
            return active
        slots = [int(s) for s in slots]
        if len(slots) != n:
            raise ValueError(f"{n} sequences given but {len(slots)} slots")
        cache.validate_batch(slots)  # once per change of batch
        return slots

    @torch.no_grad()
    def forward(self, input_ids, cache: ZayaCache | None = None, slots: Sequence[int] | None = None, *,
                all_logits: bool = False) -> ZayaOutput:
        """Prefill (or continue, chunked) a batch of sequences of any lengths, packed without padding.

        Args:
            input_ids: the new tokens: a list of sequences (lists of ints or 1-D integer tensors, any
                lengths >= 1), a 2-D tensor [B, T] (B sequences of T tokens), or one sequence (a 1-D
                tensor or a list of ints).
            cache: where the sequences' state lives. None: a fresh cache sized to these inputs. A cache
                with no sequence: B slots are admitted. A cache holding B sequences: each input continues
                one (in admission order, or as ``slots`` says).
            slots: the cache slot of each sequence (admitted sequences), default as above.
            all_logits: return logits of every new token (packed) instead of each sequence's last.
        Returns:
            :class:`ZayaOutput`.
        Raises:
            ValueError: empty sequences, ids outside the vocabulary, a cache of another model, a batch
            that does not match the cache, or sequences longer than the cache; the cache is unchanged.
        """
        seqs = _as_sequences(input_ids, self.config.vocab_size, self.device)
        lens = [int(s.numel()) for s in seqs]
        if cache is None:
            if slots is not None:
                raise ValueError("slots given without a cache")
            cache = self.new_cache(len(seqs), max(lens))
        self._check_cache(cache)
        slots = self._resolve_slots(cache, slots, len(seqs))
        cache.reserve(slots, lens)  # bounds and blocks; raises before anything changes
        cache.validate_batch(slots)  # the metadata below, as the kernels will index with it

        dev = self.device
        starts = [cache.seq_len(s) for s in slots]
        cu = [0, *itertools.accumulate(lens)]
        positions = [p for st, n in zip(starts, lens) for p in range(st, st + n)]
        slot_map = cache.slot_mapping(slots, lens)
        slots_t = torch.tensor(slots, dtype=torch.int32)
        new_lens = torch.tensor([st + n for st, n in zip(starts, lens)], dtype=torch.int32)
        meta = StepMeta(
            positions=torch.tensor(positions, dtype=torch.int64).to(dev),
            cu_seqlens=torch.tensor(cu, dtype=torch.int32).to(dev),
            slot_mapping=torch.tensor(slot_map, dtype=torch.int64).to(dev),
            state_indices=slots_t.to(dev),
            seqused_k=new_lens.to(dev),
            block_table=cache.block_table.index_select(0, slots_t.to(dev, torch.int64)),
            max_seqlen_q=max(lens),
            max_seqlen_k=max(st + n for st, n in zip(starts, lens)),
        )
        ids = torch.cat(seqs)
        x = self._layers(self._embed(ids), meta, cache)
        cache.seq_lens[slots_t.to(dev, torch.int64)] = meta.seqused_k
        cache.advance(slots, lens)
        if not all_logits:
            x = x[torch.tensor(cu[1:], device=dev) - 1]
        return ZayaOutput(logits=self._logits(x), cu_seqlens=cu, cache=cache, slots=slots)

    __call__ = forward

    def _slots_tensor(self, slots: Sequence[int]) -> torch.Tensor:
        key = tuple(slots)
        t = self._decode_slots.get(key)
        if t is None:
            if len(self._decode_slots) > 64:
                self._decode_slots.clear()
            # non_blocking: a plain host-to-device copy would synchronise (once per new batch).
            t = self._decode_slots[key] = torch.tensor(key, dtype=torch.int32).to(self.device, non_blocking=True)
        return t

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor | Sequence[int], cache: ZayaCache, slots: Sequence[int] | None = None, *,
               check_ids: bool | None = None) -> torch.Tensor:
        """One decode step: token ``tokens[b]`` appended to the sequence in ``slots[b]``.

        The host part checks the batch and bounds and reserves cache blocks (``ValueError`` when a
        sequence would outgrow the cache, nothing changed); the device part is :meth:`decode_step`.

        Args:
            tokens: [B] token ids (int tensor on any device, or a list of ints).
            cache: the cache holding the sequences; slots: their slots (default: the cache's active
                sequences in admission order).
            check_ids: check the ids against the vocabulary (a host read when they live on a GPU;
                default: only when they are on the CPU).
        Returns:
            logits [B, V] in the model dtype.
        """
        self._check_cache(cache)
        if not isinstance(tokens, torch.Tensor):
            tokens = torch.tensor(list(tokens), dtype=torch.int64)
        if tokens.dim() != 1 or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise ValueError(f"tokens must be a 1-D integer tensor [B], got {tokens.dtype} {tuple(tokens.shape)}")
        B = tokens.shape[0]
        if B == 0:
            raise ValueError("tokens is empty: decode needs one token per sequence")
        if slots is None and not cache.active_slots:
            raise ValueError("the cache holds no sequence: prefill with forward() first")
        slots = self._resolve_slots(cache, slots, B)
        if check_ids is None:
            check_ids = tokens.device.type == "cpu"
        if check_ids:
            lo, hi = int(tokens.min()), int(tokens.max())
            if lo < 0 or hi >= self.config.vocab_size:
                raise ValueError(f"token id {lo if lo < 0 else hi} is outside the vocabulary "
                                 f"[0, {self.config.vocab_size})")
        cache.validate_batch(slots)
        for s, n in zip(slots, cache.lengths(slots)):
            if n == 0:
                raise ValueError(f"slot {s} has no tokens yet: prefill it with forward() before decoding")
        cache.reserve(slots, [1] * B)
        cache.validate_batch(slots)  # again only if reserve handed out a block
        logits = self.decode_step(tokens.to(self.device, torch.int64), self._slots_tensor(slots), cache)
        cache.advance(slots, [1] * B)
        return logits

    def decode_step(self, tokens: torch.Tensor, slots: torch.Tensor, cache: ZayaCache) -> torch.Tensor:
        """The device part of a decode step, with static shapes and no data-dependent host syncs.

        ``tokens`` int64 [B] and ``slots`` int32 [B] on the model's device; the slots' next positions
        must be reserved in ``cache`` (``cache.reserve``). Positions come from ``cache.seq_lens``, the
        slot mapping from ``cache.block_table``, ``max_seqlen_q = 1`` and ``max_seqlen_k =
        cache.max_seq_len``; ``cache.seq_lens[slots]`` is incremented on the device. Returns logits [B, V].
        """
        B = tokens.shape[0]
        bs = cache.block_size
        sl = slots.to(torch.int64)
        pos = cache.seq_lens.index_select(0, sl).to(torch.int64)
        table = cache.block_table.index_select(0, sl)
        block = table.gather(1, (pos // bs)[:, None])[:, 0].to(torch.int64)
        meta = StepMeta(
            positions=pos,
            cu_seqlens=torch.arange(B + 1, dtype=torch.int32, device=tokens.device),
            slot_mapping=block * bs + pos % bs,
            state_indices=slots,
            seqused_k=(pos + 1).to(torch.int32),
            block_table=table,
            max_seqlen_q=1,
            max_seqlen_k=cache.max_seq_len,
        )
        with torch.no_grad():
            x = self._layers(self._embed(tokens), meta, cache)
            cache.seq_lens.index_add_(0, sl, torch.ones_like(slots))
            return self._logits(x)

    # ------------------------------------------------------------------------------------------
    def generate(self, prompts, max_new_tokens: int = 32, **kwargs):
        """Generate from a batch of prompts; see :func:`zaya_ops.model.generation.generate`."""
        from .generation import generate

        return generate(self, prompts, max_new_tokens, **kwargs)

    def num_parameters(self) -> int:
        """Number of parameters (the tied head counted once)."""
        return sum(t.numel() for t in self.hf_state_dict().values())

    def __repr__(self) -> str:
        c = self.config
        return (f"ZayaForCausalLM({c.num_hidden_layers} layers, hidden {c.hidden_size}, heads {c.num_attention_heads}/"
                f"{c.num_key_value_heads}x{c.head_dim}, experts {c.num_experts}x{c.moe_intermediate_size}, vocab "
                f"{c.vocab_size}, {self.dtype}, {self.device}, backend {self.backend!r})")
