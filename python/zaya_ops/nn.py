"""``torch.nn.Module`` layers of ZAYA1 on the zaya_ops ops, and a ZAYA1 model that trains.

The modules and their parameters are named as transformers' ZAYA modules (``modeling_zaya.py``), so a
transformers checkpoint's ``state_dict`` loads into :class:`ZayaForCausalLM` and back with ``strict=True``
(the rotary table is no state, as transformers' non-persistent buffer; ``balancing_biases`` is a persistent
fp32 buffer that ``.to(dtype)`` keeps in fp32, as the router op requires).

No module holds maths of its own: each calls the ops through :class:`~zaya_ops.model.backend.OpBackend`
(``backend`` "auto", "ops" or "reference"), and the decoder layer is
:func:`zaya_ops.model.modeling.decoder_layer`, the function the inference model and the vLLM plugin run,
with :func:`~zaya_ops.model.modeling.cca_block_functional` (``cca_qkv_functional`` + ``cca_attention`` over
the new keys as a block-size-1 paged cache) as its attention. Under "auto", an op that autograd records and
that has no backward yet runs its reference (see ``zaya_ops.backward_backends()``); everything is
differentiable under every backend once all ops are.

Shapes: the modules work on packed tokens ``[T, ...]`` of B sequences (``cu_seqlens``, as the ops);
:class:`ZayaForCausalLM` also takes padded ``[B, T]`` batches with an ``attention_mask`` and packs them.

>>> model = ZayaForCausalLM(ZayaConfig(vocab_size=96, hidden_size=64, num_hidden_layers=2,
...     num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=4, moe_intermediate_size=32,
...     router_hidden_size=16, max_position_embeddings=64), backend="reference")   # doctest: +SKIP
>>> out = model(torch.tensor([[5, 6, 7, 8]]), labels=torch.tensor([[5, 6, 7, 8]]))   # doctest: +SKIP
>>> out.loss.backward()                                                             # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from .model import modeling as _m
from .model.backend import OpBackend
from .model.config import ZayaConfig

__all__ = [
    "ZayaRMSNorm", "ZayaResidualScaling", "ZayaCCAProjection", "ZayaQKNorm", "ZayaAttention", "ZayaRouterMLP",
    "ZayaRouter", "ZayaExperts", "ZayaSparseMoeBlock", "ZayaDecoderLayer", "ZayaModel", "ZayaForCausalLM",
    "ZayaCausalLMOutput", "config_from_transformers",
]


def config_from_transformers(hf_config) -> ZayaConfig:
    """zaya_ops' :class:`ZayaConfig` of a transformers ``ZayaConfig`` (checked: ValueError naming a field
    the ops do not support)."""
    return ZayaConfig.from_dict(hf_config.to_dict())


class _Runner:
    """The backend switch shared by the modules of one model: one :class:`OpBackend` per (device, dtype)
    the parameters have lived on (``.to()`` moves them), all with the same backend name."""

    def __init__(self, backend: str, head_dim: int) -> None:
        OpBackend(backend, torch.device("cpu"), torch.float32, head_dim)  # validates the name and head dim
        self.backend = backend
        self.head_dim = head_dim
        self._by_key: dict[tuple[torch.device, torch.dtype], OpBackend] = {}
        self.last: OpBackend | None = None

    def get(self, device: torch.device, dtype: torch.dtype) -> OpBackend:
        key = (torch.device(device), dtype)
        ob = self._by_key.get(key)
        if ob is None:
            ob = self._by_key[key] = OpBackend(self.backend, key[0], dtype, self.head_dim)
        self.last = ob
        return ob


class _OpsModule(nn.Module):
    """A module that calls the ops: ``self._ops()`` is the OpBackend of its parameters' device and dtype."""

    def __init__(self, backend: str = "auto", head_dim: int = 128) -> None:
        super().__init__()
        self._runner = _Runner(backend, head_dim)

    def _share_runner(self, runner: _Runner) -> None:
        for m in self.modules():
            if isinstance(m, _OpsModule):
                m._runner = runner

    def _ops(self) -> OpBackend:
        p = next(self.parameters())
        return self._runner.get(p.device, p.dtype)

    def _ops_for(self, dtype: torch.dtype) -> OpBackend:
        p = next(self.parameters())
        return self._runner.get(p.device, dtype)


class ZayaRMSNorm(_OpsModule):
    """RMSNorm (``rms_norm`` op): ``weight * normalise(x.to(weight.dtype))``, as transformers' ``ZayaRMSNorm``
    applied to ``x.to(weight.dtype)``. ``forward(x)`` takes [..., H] of any float dtype."""

    def __init__(self, hidden_size: int, eps: float = 1e-6, *, backend: str = "auto") -> None:
        super().__init__(backend)
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The normed [..., H] in the weight's dtype."""
        shape = x.shape
        y = self._ops()("rms_norm", x.reshape(-1, shape[-1]), self.weight, self.variance_epsilon)
        return y.reshape(shape)


class ZayaResidualScaling(_OpsModule):
    """Learned residual scaling fused with the norm that follows it (``residual_scale_rmsnorm`` op):
    ``new = (h + hidden_states_bias) * hidden_states_scale + (residual + residual_bias) * residual_scale``
    (fp32), and ``norm(new)``."""

    def __init__(self, hidden_size: int, *, backend: str = "auto") -> None:
        super().__init__(backend)
        self.hidden_states_scale = nn.Parameter(torch.ones(hidden_size))
        self.hidden_states_bias = nn.Parameter(torch.zeros(hidden_size))
        self.residual_scale = nn.Parameter(torch.ones(hidden_size))
        self.residual_bias = nn.Parameter(torch.zeros(hidden_size))

    def scales(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h_bias, h_scale, r_bias, r_scale): the op's argument order."""
        return self.hidden_states_bias, self.hidden_states_scale, self.residual_bias, self.residual_scale

    def forward(self, h: torch.Tensor, residual: torch.Tensor, norm: ZayaRMSNorm) -> tuple[torch.Tensor, torch.Tensor]:
        """h [T, H] (param dtype), residual [T, H] fp32, ``norm`` the RMS norm that follows; returns
        (new residual fp32 [T, H], its normed copy)."""
        return self._ops()("residual_scale_rmsnorm", h, residual, *self.scales(), norm.weight, norm.variance_epsilon)


class ZayaCCAProjection(nn.Module):
    """The CCA projections' parameters (transformers' names): ``q_proj``, ``k_proj``, ``v_proj_current``,
    ``v_proj_delayed`` and the two causal convolutions. Their maths (spec steps 3-7) is the
    ``cca_qkv_functional`` op, called by :class:`ZayaAttention`; this module holds no forward."""

    def __init__(self, config: ZayaConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        H, bias = config.hidden_size, config.attention_bias
        C = config.conv_channels
        self.q_proj = nn.Linear(H, config.q_dim, bias=bias)
        self.k_proj = nn.Linear(H, config.kv_dim, bias=bias)
        self.v_proj_current = nn.Linear(H, config.kv_dim // 2, bias=bias)
        self.v_proj_delayed = nn.Linear(H, config.kv_dim // 2, bias=bias)
        self.conv_qk_depthwise = nn.Conv1d(C, C, kernel_size=config.cca_time0, groups=C)
        self.conv_qk_grouped = nn.Conv1d(C, C, kernel_size=config.cca_time1,
                                         groups=config.num_attention_heads + config.num_key_value_heads)

    def fused(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The fused [qkv_dim, H] weight (rows Wq, Wk, Wvc, Wvd: the layout of the ops' model) and bias, built
        from the four projections (differentiable)."""
        mods = (self.q_proj, self.k_proj, self.v_proj_current, self.v_proj_delayed)
        w = torch.cat([m.weight for m in mods])
        b = None if self.q_proj.bias is None else torch.cat([m.bias for m in mods])
        return w, b


class ZayaQKNorm(nn.Module):
    """The learned per-KV-head key temperature ``temp`` of the QK norm, applied inside ``cca_qkv_functional``
    (which fuses the norm); this module holds no forward."""

    def __init__(self, config: ZayaConfig) -> None:
        super().__init__()
        self.temp = nn.Parameter(torch.zeros(config.num_key_value_heads))


def _layer_view(layer: "ZayaDecoderLayer") -> SimpleNamespace:
    """The layer's tensors by the names of ``zaya_ops.model.modeling._Layer`` (what the shared layer
    functions read); the q/k/v weights are concatenated (a differentiable copy)."""
    a, g = layer.self_attn, layer.mlp.gate
    p, gm = a.qkv_proj, g.router_mlp
    qkv_w, qkv_b = p.fused()
    return SimpleNamespace(
        input_norm=layer.input_layernorm.weight, qkv_weight=qkv_w, qkv_bias=qkv_b,
        conv_dw_weight=p.conv_qk_depthwise.weight, conv_dw_bias=p.conv_qk_depthwise.bias,
        conv_g_weight=p.conv_qk_grouped.weight, conv_g_bias=p.conv_qk_grouped.bias, qk_temp=a.qk_norm.temp,
        o_weight=a.o_proj.weight, o_bias=a.o_proj.bias, attn_scale=layer.post_attention_residual_scale.scales(),
        post_attn_norm=layer.post_attention_layernorm.weight, router_down_weight=g.down_proj.weight,
        router_down_bias=g.down_proj.bias, router_states_scale=g.router_states_scale, router_norm=gm.norm.weight,
        router_fc1_weight=gm.fc1.weight, router_fc1_bias=gm.fc1.bias, router_fc2_weight=gm.fc2.weight,
        router_fc2_bias=gm.fc2.bias, router_out_weight=gm.out_proj.weight, balancing_biases=g.balancing_biases,
        gate_up_proj=layer.mlp.experts.gate_up_proj, down_proj=layer.mlp.experts.down_proj,
        mlp_scale=layer.post_mlp_residual_scale.scales(),
    )


class ZayaAttention(_OpsModule):
    """CCA attention block: ``qkv_proj`` (:class:`ZayaCCAProjection`), ``qk_norm`` (:class:`ZayaQKNorm`) and
    ``o_proj``. ``forward(x, meta, cos_sin)``: x [T, H] normed hidden states of whole packed sequences
    (``meta``: :func:`zaya_ops.model.modeling.packed_meta`), ``cos_sin`` the rotary table
    (:func:`zaya_ops.model.modeling.rope_table`); returns [T, H]."""

    def __init__(self, config: ZayaConfig, layer_idx: int, *, backend: str = "auto") -> None:
        super().__init__(backend, config.head_dim)
        self.config = config
        self.layer_idx = layer_idx
        self.qkv_proj = ZayaCCAProjection(config, layer_idx)
        self.qk_norm = ZayaQKNorm(config)
        self.o_proj = nn.Linear(config.q_dim, config.hidden_size, bias=config.attention_bias)

    def attend(self, proj: torch.Tensor, meta: _m.PackedMeta, cos_sin: torch.Tensor) -> torch.Tensor:
        """The attention output [T, nq*D] (before o_proj) of the fused projection ``proj`` [T, qkv_dim]."""
        p = self.qkv_proj
        L = SimpleNamespace(conv_dw_weight=p.conv_qk_depthwise.weight, conv_dw_bias=p.conv_qk_depthwise.bias,
                            conv_g_weight=p.conv_qk_grouped.weight, conv_g_bias=p.conv_qk_grouped.bias,
                            qk_temp=self.qk_norm.temp, qkv_bias=p.fused()[1])
        return _m.cca_block_functional(self._ops(), self.config, L, proj, cos_sin, meta)

    def forward(self, x: torch.Tensor, meta: _m.PackedMeta, cos_sin: torch.Tensor) -> torch.Tensor:
        w, b = self.qkv_proj.fused()
        return self.o_proj(self.attend(F.linear(x, w, b), meta, cos_sin))


class ZayaRouterMLP(nn.Module):
    """The router MLP's parameters (``norm``, ``fc1``, ``fc2``, ``out_proj``); its maths is the ``router``
    op, called by :class:`ZayaRouter`; this module holds no forward."""

    def __init__(self, hidden_size: int, num_classes: int, rms_norm_eps: float) -> None:
        super().__init__()
        self.norm = ZayaRMSNorm(hidden_size, eps=rms_norm_eps)
        self.fc1 = nn.Linear(hidden_size, hidden_size, bias=True)
        self.fc2 = nn.Linear(hidden_size, hidden_size, bias=True)
        self.out_proj = nn.Linear(hidden_size, num_classes, bias=False)


class ZayaRouter(_OpsModule):
    """The MLP router with the skip class (``router`` op): ``down_proj``, ``router_states_scale`` (layers
    after the first), ``router_mlp``, and the fp32 buffer ``balancing_biases`` [E+1].

    ``forward(x, prev_state)`` -> (expert_index int32 [T] (E: skip), expert_weight [T], router_state [T, R]);
    the weight is differentiable (the chosen probability), the choice is not, as in transformers."""

    def __init__(self, config: ZayaConfig, layer_idx: int, *, backend: str = "auto") -> None:
        super().__init__(backend, config.head_dim)
        H, R, E1 = config.hidden_size, config.router_hidden_size, config.num_experts + 1
        self.layer_idx = layer_idx
        self.down_proj = nn.Linear(H, R, bias=True)
        self.router_states_scale = nn.Parameter(torch.ones(R)) if layer_idx != 0 else None
        self.router_mlp = ZayaRouterMLP(R, E1, config.rms_norm_eps)
        bb = torch.zeros(E1, dtype=torch.float32)
        bb[-1] = -1.0
        self.register_buffer("balancing_biases", bb)

    def _apply(self, fn, recurse=True):
        bb = self.balancing_biases
        out = super()._apply(fn, recurse)
        if self.balancing_biases.dtype != torch.float32:  # .to(dtype) moves it, but it stays fp32 (from the original)
            self.balancing_biases = bb.to(device=self.balancing_biases.device, dtype=torch.float32)
        return out

    def forward(self, x: torch.Tensor, prev_state: torch.Tensor | None = None):
        gm = self.router_mlp
        scale = self.router_states_scale if prev_state is not None else None
        idx, w, state, _, _ = self._ops()(
            "router", x, prev_state, self.down_proj.weight, self.down_proj.bias, scale, gm.norm.weight,
            gm.fc1.weight, gm.fc1.bias, gm.fc2.weight, gm.fc2.bias, gm.out_proj.weight, self.balancing_biases,
            gm.norm.variance_epsilon)
        return idx, w, state


class ZayaExperts(_OpsModule):
    """Top-1 SiLU-gated experts (``moe_top1`` op): ``gate_up_proj`` [E, 2I, H], ``down_proj`` [E, H, I].
    ``forward(x, expert_index, expert_weight)`` -> [T, H]; skip-class tokens (index E) get zero."""

    def __init__(self, config: ZayaConfig, *, backend: str = "auto") -> None:
        super().__init__(backend, config.head_dim)
        E, I, H = config.num_experts, config.moe_intermediate_size, config.hidden_size
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * I, H).normal_(std=0.02))
        self.down_proj = nn.Parameter(torch.empty(E, H, I).normal_(std=0.02))

    def forward(self, x: torch.Tensor, expert_index: torch.Tensor, expert_weight: torch.Tensor) -> torch.Tensor:
        return self._ops()("moe_top1", x, expert_index, expert_weight, self.gate_up_proj, self.down_proj)


class ZayaSparseMoeBlock(nn.Module):
    """``gate`` (:class:`ZayaRouter`) then ``experts`` (:class:`ZayaExperts`). ``forward(x, prev_state)`` ->
    (expert output [T, H], router state [T, R] for the next layer)."""

    def __init__(self, config: ZayaConfig, layer_idx: int, *, backend: str = "auto") -> None:
        super().__init__()
        self.gate = ZayaRouter(config, layer_idx, backend=backend)
        self.experts = ZayaExperts(config, backend=backend)

    def forward(self, x: torch.Tensor, prev_state: torch.Tensor | None = None):
        idx, w, state = self.gate(x, prev_state)
        return self.experts(x, idx, w), state


class ZayaDecoderLayer(_OpsModule):
    """One ZAYA1 decoder layer (transformers' submodule names), run by
    :func:`zaya_ops.model.modeling.decoder_layer`, the inference model's layer function.

    ``forward(residual, prev_state, meta, cos_sin, normed=None, next_norm=None)``: ``residual`` fp32 [T, H]
    of whole packed sequences; ``normed`` its input-normed copy if the caller has it (the previous layer's
    fused norm), else this layer norms it; ``next_norm`` the :class:`ZayaRMSNorm` that follows, fused into
    the last residual op (None: this layer's own input norm, whose output is then dropped). Returns
    (new residual fp32 [T, H], its copy normed by ``next_norm`` or None, router state [T, R]).
    """

    def __init__(self, config: ZayaConfig, layer_idx: int, *, backend: str = "auto") -> None:
        super().__init__(backend, config.head_dim)
        self.config = config
        H = config.hidden_size
        self.self_attn = ZayaAttention(config, layer_idx, backend=backend)
        self.mlp = ZayaSparseMoeBlock(config, layer_idx, backend=backend)
        self.input_layernorm = ZayaRMSNorm(H, eps=config.rms_norm_eps, backend=backend)
        self.post_attention_layernorm = ZayaRMSNorm(H, eps=config.rms_norm_eps, backend=backend)
        self.post_attention_residual_scale = ZayaResidualScaling(H, backend=backend)
        self.post_mlp_residual_scale = ZayaResidualScaling(H, backend=backend)
        self._share_runner(self._runner)

    def forward(self, residual: torch.Tensor, prev_state: torch.Tensor | None, meta: _m.PackedMeta,
                cos_sin: torch.Tensor, normed: torch.Tensor | None = None, next_norm: ZayaRMSNorm | None = None):
        op = self._ops()
        if normed is None:
            normed = self.input_layernorm(residual)
        L = _layer_view(self)
        nxt = (next_norm or self.input_layernorm).weight
        r, x, state = _m.decoder_layer(op, self.config, L, residual, normed, prev_state, nxt,
                                       lambda proj: self.self_attn.attend(proj, meta, cos_sin))
        return r, (x if next_norm is not None else None), state


@dataclass
class ZayaCausalLMOutput:
    """Result of :meth:`ZayaForCausalLM.forward`: ``logits`` in the input's layout ([T, V] packed, or
    [B, T, V] padded with zeros at padding), ``loss`` (mean next-token cross entropy in fp32, or None)."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None


class ZayaModel(_OpsModule):
    """The ZAYA1 trunk: ``embed_tokens``, ``input_hidden_states_bias``/``_scale``, ``layers``, ``norm``.
    ``forward(ids [T], meta)`` -> final-normed hidden states [T, H] (param dtype)."""

    def __init__(self, config: ZayaConfig, *, backend: str = "auto") -> None:
        super().__init__(backend, config.head_dim)
        self.config = config
        H = config.hidden_size
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, H, config.pad_token_id)
        self.layers = nn.ModuleList([ZayaDecoderLayer(config, i, backend=backend)
                                     for i in range(config.num_hidden_layers)])
        self.norm = ZayaRMSNorm(H, eps=config.rms_norm_eps, backend=backend)
        self.input_hidden_states_scale = nn.Parameter(torch.ones(H))
        self.input_hidden_states_bias = nn.Parameter(torch.zeros(H))
        self._rope: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}  # rotary tables (not state)
        self._share_runner(self._runner)

    def rope(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The rotary ``cos_sin`` table on ``device`` in ``dtype`` (:func:`zaya_ops.model.modeling.rope_table`,
        computed once per device and dtype; not a parameter or buffer, as transformers' is non-persistent)."""
        key = (torch.device(device), dtype)
        t = self._rope.get(key)
        if t is None:
            t = self._rope[key] = _m.rope_table(self.config, device, dtype)
        return t

    def forward(self, ids: torch.Tensor, meta: _m.PackedMeta) -> torch.Tensor:
        view = SimpleNamespace(embed=self.embed_tokens.weight, input_bias=self.input_hidden_states_bias,
                               input_scale=self.input_hidden_states_scale, padding_idx=self.padding_idx)
        r = _m.embed_tokens(view, ids)
        w = self.embed_tokens.weight
        cos_sin = self.rope(w.device, w.dtype)
        x = self.layers[0].input_layernorm(r)
        prev = None
        for i, layer in enumerate(self.layers):
            nxt = self.layers[i + 1].input_layernorm if i + 1 < len(self.layers) else self.norm
            r, x, prev = layer(r, prev, meta, cos_sin, normed=x, next_norm=nxt)
        return x


def _as_packed(input_ids: torch.Tensor, cu_seqlens, attention_mask):
    """(flat ids [T], lengths, row/column index of each packed token or None)."""
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must hold integer token ids, got {input_ids.dtype}")
    if input_ids.dim() == 1:
        if attention_mask is not None:
            raise ValueError("attention_mask goes with padded [B, T] input_ids; packed input takes cu_seqlens")
        T = input_ids.shape[0]
        cu = [0, T] if cu_seqlens is None else [int(c) for c in (cu_seqlens.tolist() if isinstance(
            cu_seqlens, torch.Tensor) else cu_seqlens)]
        if cu[0] != 0 or cu[-1] != T or any(b < a for a, b in zip(cu, cu[1:])):
            raise ValueError(f"cu_seqlens must rise from 0 to the {T} tokens of input_ids, got {cu}")
        return input_ids, [b - a for a, b in zip(cu, cu[1:])], None
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [T] (packed) or [B, T] (padded), got shape {tuple(input_ids.shape)}")
    if cu_seqlens is not None:
        raise ValueError("cu_seqlens goes with packed 1-D input_ids; a [B, T] batch takes attention_mask")
    B, T = input_ids.shape
    if attention_mask is None:
        return input_ids.reshape(-1), [T] * B, None
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask must have input_ids' shape {tuple(input_ids.shape)}, "
                         f"got {tuple(attention_mask.shape)}")
    real = attention_mask.to(torch.bool)
    where = real.reshape(-1).nonzero()[:, 0]
    return input_ids.reshape(-1)[where], real.sum(1).tolist(), where


class ZayaForCausalLM(_OpsModule):
    """ZAYA1 causal LM as a trainable ``nn.Module`` on the ops (transformers' parameter names: a
    transformers ``ZayaForCausalLM.state_dict()`` loads with ``strict=True``, and ours into it).

    ``parameters()``, ``train()``/``eval()``, ``.to(device, dtype)``, ``state_dict`` work as usual (the
    residual stream is fp32 whatever the parameter dtype; ``balancing_biases`` stay fp32). The
    LM head is tied to the embedding when the config says so. Sequences are whole (no KV cache: generate
    with :class:`zaya_ops.ZayaForCausalLM`, e.g. after ``save_checkpoint``); each starts from a fresh CCA
    state at position 0.

    Args:
        config: a zaya_ops :class:`ZayaConfig` (:func:`config_from_transformers` converts transformers').
        backend: "auto" (default), "ops" or "reference" (see ``zaya_ops.model.backend``).
    """

    def __init__(self, config: ZayaConfig, *, backend: str = "auto") -> None:
        super().__init__(backend, config.head_dim)
        if not isinstance(config, ZayaConfig):
            raise TypeError(f"config must be a zaya_ops ZayaConfig (see config_from_transformers), "
                            f"got {type(config).__name__}")
        self.config = config
        self.model = ZayaModel(config, backend=backend)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=config.lm_head_bias)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self._share_runner(self._runner)

    @classmethod
    def from_transformers(cls, hf_model, *, backend: str = "auto") -> "ZayaForCausalLM":
        """A copy of a transformers ``ZayaForCausalLM`` (same dtype and device, weights copied)."""
        p = next(hf_model.parameters())
        model = cls(config_from_transformers(hf_model.config), backend=backend).to(p.device, p.dtype)
        model.load_state_dict(hf_model.state_dict(), strict=True)
        return model

    @property
    def backend(self) -> str:
        """The backend switch: "auto", "ops" or "reference"."""
        return self._runner.backend

    def set_backend(self, backend: str) -> None:
        """Switch every module's backend ("auto", "ops", "reference")."""
        self._share_runner(_Runner(backend, self.config.head_dim))

    def op_backends(self) -> dict[str, str]:
        """Which backend ran each op in the last forward's device and dtype (see ``OpBackend.report``)."""
        return self._ops().report() if self._runner.last is None else self._runner.last.report()

    def forward(self, input_ids: torch.Tensor, *, cu_seqlens: Sequence[int] | torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> ZayaCausalLMOutput:
        """Logits (and the loss) of whole sequences.

        Args:
            input_ids: packed [T] (with ``cu_seqlens``, default one sequence) or a batch [B, T] (with
                ``attention_mask`` [B, T], 1 for real tokens, any padding side; a row's real tokens are
                its sequence, in order, positions from 0).
            labels: input_ids' shape; the loss predicts ``labels[t + 1]`` from token t within each sequence
                (as transformers' causal-LM loss), ignoring -100 and padding; mean over the counted tokens.
        Returns:
            :class:`ZayaCausalLMOutput`.
        """
        if labels is not None and labels.shape != input_ids.shape:
            raise ValueError(f"labels must have input_ids' shape {tuple(input_ids.shape)}, got {tuple(labels.shape)}")
        ids, lens, where = _as_packed(input_ids, cu_seqlens, attention_mask)
        dev = self.lm_head.weight.device
        ids = ids.to(dev)
        meta = _m.packed_meta(lens, dev)
        x = self.model(ids, meta)
        view = SimpleNamespace(lm_head=self.lm_head.weight, lm_head_bias=self.lm_head.bias)
        logits = _m.lm_logits(view, x)
        loss = None
        if labels is not None:
            flat = labels.reshape(-1).to(dev)
            if where is not None:
                flat = flat[where.to(dev)]
            shifted = torch.cat([flat[1:], flat.new_full((1,), -100)])
            last = meta.cu_seqlens[1:].to(torch.int64) - 1
            shifted[last[last >= 0]] = -100  # no target across a sequence boundary
            loss = F.cross_entropy(logits.float(), shifted, ignore_index=-100)
        if input_ids.dim() == 2:
            B, T = input_ids.shape
            if where is None:
                logits = logits.reshape(B, T, -1)
            else:
                full = logits.new_zeros(B * T, logits.shape[-1])
                full[where.to(dev)] = logits
                logits = full.reshape(B, T, -1)
        return ZayaCausalLMOutput(logits=logits, loss=loss)
