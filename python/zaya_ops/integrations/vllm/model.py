"""``ZayaForCausalLM`` for vLLM, built on the zaya_ops ops and zaya_ops' model pieces.

The network is zaya_ops' own: the decoder layer is :func:`zaya_ops.model.modeling.decoder_layer`, the CCA
block :func:`~zaya_ops.model.modeling.cca_block`, the embedding, head and RoPE table the model's helpers,
every op called through an :class:`~zaya_ops.model.backend.OpBackend` (so its per-op kernel/reference
choice applies), the config validated by :class:`~zaya_ops.model.config.ZayaConfig` and the checkpoint
names mapped by :func:`~zaya_ops.model.modeling.hf_tensor_map` and checked by
:func:`~zaya_ops.model.weights.check_checkpoint_names`. What is vLLM-specific lives here:

* weights are ``nn.Parameter`` s named after zaya_ops' fused layout (one ``qkv_weight`` per layer) and
  filled by :meth:`ZayaForCausalLM.load_weights` from vLLM's checkpoint iterator (one read of sharded
  safetensors, by transformers names); dense projections are torch matmuls, since the plugin runs on one
  device (tensor parallelism is refused, see ``config.py``, so vLLM's parallel linear layers would shard
  nothing);
* each layer's attention part (``self_attn``, :class:`ZayaCCA`) is two vLLM cache layers: a paged KV cache
  (:class:`ZayaCCAKV`, a ``FullAttentionSpec``; backend ``ZAYA_CCA``) and the conv/value state (the
  ``MambaBase`` :class:`ZayaCCA` itself, a ``MambaSpec``; backend ``ZAYA_CCA_STATE``), see ``backend.py``;
* ``cca_qkv`` + ``cca_attention`` run inside one opaque custom op, ``torch.ops.vllm.zaya_cca`` (like vLLM's
  own attention and ShortConv ops): it reads the step's metadata from vLLM's forward context, resets the
  state of sequences that start from scratch (vLLM reuses state slots without clearing them) and writes
  the attention output. The rest of the layer (norms, router, experts) is traced by vLLM's
  ``torch.compile`` through the ops' fake kernels; :meth:`ZayaForCausalLM.load_weights` runs every op
  once eagerly first, so OpBackend has made its per-op choice before Dynamo traces the model.
"""

from __future__ import annotations

import os
import types
from collections.abc import Iterable

import torch
import torch.nn as nn
from vllm.compilation.decorators import support_torch_compile
from vllm.config import VllmConfig
from vllm.forward_context import get_forward_context
from vllm.logger import init_logger
from vllm.model_executor.layers.attention_layer_base import AttentionLayerBase
from vllm.model_executor.layers.mamba.abstract import MambaBase
from vllm.model_executor.layers.mamba.mamba_utils import MambaCopySpec
from vllm.model_executor.models.interfaces import HasInnerState, IsHybrid, SupportsMambaPrefixCaching
from vllm.utils.torch_utils import direct_register_custom_op
from vllm.v1.attention.backends.registry import MambaAttentionBackendEnum
from vllm.v1.kv_cache_interface import FullAttentionSpec

from ...model.backend import BACKENDS, OpBackend
from ...model.config import ZayaConfig, check_not_legacy
from ...model.modeling import (
    StepMeta,
    cca_block,
    decoder_layer,
    delayed_value_bias,
    embed_tokens,
    hf_tensor_map,
    lm_logits,
    rope_table,
)
from ...model.weights import check_checkpoint_names
from . import STATE_BACKEND
from .backend import ZayaCCAAttentionBackend
from .config import check_engine_config

__all__ = ["ZayaForCausalLM", "ZayaModel", "ZayaDecoderLayer", "ZayaCCA", "ZayaCCAKV", "OP_BACKEND_ENV", "describe"]

logger = init_logger("vllm.zaya_ops")  # under vLLM's logger, so its handlers print it

#: Environment variable choosing the OpBackend switch of the plugin: "auto" (default), "ops" (compiled
#: kernels only: a missing kernel fails) or "reference" (pure PyTorch).
OP_BACKEND_ENV = "ZAYA_VLLM_OP_BACKEND"


def _param(*shape: int, dtype: torch.dtype) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, dtype=dtype), requires_grad=False)


def _state_shapes(cfg: ZayaConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per-slot CCA state: conv state [C, 2] (cca_qkv's layout), value state [nkv*D/2]."""
    return (cfg.conv_channels, 2), (cfg.kv_dim // 2,)


def _copy_whole_state(state: torch.Tensor, block_ids: list[int], cur_block_idx: int,
                      num_accepted_tokens: int) -> MambaCopySpec:
    """Prefix caching ("align" mode) copies a state between slots: the whole slot (no speculative offsets)."""
    src = state[block_ids[cur_block_idx]]
    return MambaCopySpec(start_addr=src.data_ptr(), num_elements=src.numel())


class ZayaCCAKV(nn.Module, AttentionLayerBase):
    """The paged KV cache of one CCA layer (vLLM binds ``kv_cache``: a ``[num_blocks, nkv, block_size,
    2D]`` view with K in ``[..., :D]``, V in ``[..., D:]``, see ``backend.py``)."""

    def __init__(self, cfg: ZayaConfig, vllm_config: VllmConfig, prefix: str) -> None:
        super().__init__()
        self.layer_name = prefix
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_size = cfg.head_dim
        self.dtype = vllm_config.model_config.dtype
        self.kv_cache = torch.tensor([])
        ctx = vllm_config.compilation_config.static_forward_context
        if prefix in ctx:
            raise ValueError(f"duplicate layer name {prefix}")
        ctx[prefix] = self

    def get_attn_backend(self) -> type[ZayaCCAAttentionBackend]:
        return ZayaCCAAttentionBackend

    def get_kv_cache_spec(self, vllm_config: VllmConfig) -> FullAttentionSpec:
        return FullAttentionSpec(block_size=vllm_config.cache_config.block_size, num_kv_heads=self.num_kv_heads,
                                 head_size=self.head_size, dtype=self.dtype)

    def k_v(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The bound cache as zaya_ops' K and V caches: two [num_blocks, block_size, nkv, D] strided views."""
        D = self.head_size
        kv = self.kv_cache
        return kv[..., :D].transpose(1, 2), kv[..., D:].transpose(1, 2)


class ZayaCCA(nn.Module, MambaBase):
    """The attention part of one decoder layer: its weights (fused q/k/v-current/v-delayed projection,
    CCA convolutions, key temperature, o_proj), its KV cache layer (``attn``) and, as a vLLM ``MambaBase``
    layer itself, its per-sequence conv/value state."""

    def __init__(self, cfg: ZayaConfig, op: OpBackend, cos_sin: torch.Tensor, vllm_config: VllmConfig,
                 prefix: str) -> None:
        super().__init__()
        dt = vllm_config.model_config.dtype
        H, C, D = cfg.hidden_size, cfg.conv_channels, cfg.head_dim
        self.cfg, self.op, self.layer_name = cfg, op, prefix
        self.state_dtype = dt
        self.qkv_weight = _param(cfg.qkv_dim, H, dtype=dt)
        self.qkv_bias = _param(cfg.qkv_dim, dtype=dt) if cfg.attention_bias else None
        self.conv_dw_weight = _param(C, 1, 2, dtype=dt)
        self.conv_dw_bias = _param(C, dtype=dt)
        self.conv_g_weight = _param(C, D, 2, dtype=dt)
        self.conv_g_bias = _param(C, dtype=dt)
        self.qk_temp = _param(cfg.num_key_value_heads, dtype=dt)
        self.o_weight = _param(H, cfg.q_dim, dtype=dt)
        self.o_bias = _param(H, dtype=dt) if cfg.attention_bias else None
        self.register_buffer("cos_sin", cos_sin, persistent=False)
        self.attn = ZayaCCAKV(cfg, vllm_config, f"{prefix}.attn")
        self.kv_cache = (torch.tensor([]), torch.tensor([]))
        ctx = vllm_config.compilation_config.static_forward_context
        if prefix in ctx:
            raise ValueError(f"duplicate layer name {prefix}")
        ctx[prefix] = self

    # vLLM MambaBase: the state this layer keeps per sequence slot
    def get_state_shape(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return _state_shapes(self.cfg)

    def get_state_dtype(self) -> tuple[torch.dtype, torch.dtype]:
        return self.state_dtype, self.state_dtype

    @property
    def mamba_type(self) -> MambaAttentionBackendEnum:
        return MambaAttentionBackendEnum[STATE_BACKEND]

    def forward(self, proj: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Attention output [T, nq*D] of the fused projection ``proj`` [T, qkv_dim] (one opaque op)."""
        out = torch.empty(proj.shape[0], self.cfg.q_dim, dtype=proj.dtype, device=proj.device)
        torch.ops.vllm.zaya_cca(proj, positions, out, self.layer_name)
        return out

    def run_cca(self, proj: torch.Tensor, positions: torch.Tensor, out: torch.Tensor) -> None:
        """The body of ``torch.ops.vllm.zaya_cca`` (eager): state reset, then :func:`cca_block` over vLLM's
        caches for the step's real tokens; padded rows of ``out`` are zeroed."""
        md = get_forward_context().attn_metadata
        if md is None:  # vLLM's profile run: no caches yet, the output values do not matter
            out.zero_()
            return
        if not isinstance(md, dict):
            raise NotImplementedError(f"zaya_cca: per-microbatch attention metadata ({type(md).__name__}) is not "
                                      f"supported")
        kv_md, st_md = md[self.attn.layer_name], md[self.layer_name]
        conv_state, value_state = self.kv_cache
        if st_md.new_rows is not None:
            # New sequences start from zero conv state and the delayed-value bias (cca_qkv's contract).
            slots = st_md.state_indices.index_select(0, st_md.new_rows).to(torch.int64)
            conv_state.index_fill_(0, slots, 0)
            init = delayed_value_bias(self.cfg, self)
            if init is None:
                value_state.index_fill_(0, slots, 0)
            else:
                value_state.index_copy_(0, slots, init.expand(slots.shape[0], -1))
        n = kv_md.num_tokens
        k_cache, v_cache = self.attn.k_v()
        meta = StepMeta(positions=positions[:n], cu_seqlens=kv_md.cu_seqlens, slot_mapping=kv_md.slot_mapping,
                        state_indices=st_md.state_indices, seqused_k=kv_md.seqused_k,
                        block_table=kv_md.block_table, max_seqlen_q=kv_md.max_query_len,
                        max_seqlen_k=kv_md.max_seq_len)
        out[:n] = cca_block(self.op, self.cfg, self, proj[:n], self.cos_sin, meta, k_cache, v_cache,
                            conv_state, value_state)
        if n < out.shape[0]:
            out[n:].zero_()


def zaya_cca(proj: torch.Tensor, positions: torch.Tensor, output: torch.Tensor, layer_name: str) -> None:
    """vLLM custom op: run layer ``layer_name``'s CCA block (see :meth:`ZayaCCA.run_cca`)."""
    get_forward_context().no_compile_layers[layer_name].run_cca(proj, positions, output)


def _zaya_cca_fake(proj: torch.Tensor, positions: torch.Tensor, output: torch.Tensor, layer_name: str) -> None:
    return None


direct_register_custom_op(op_name="zaya_cca", op_func=zaya_cca, mutates_args=["output"], fake_impl=_zaya_cca_fake)


class ZayaDecoderLayer(nn.Module):
    """One ZAYA1 decoder layer's weights, with the names :func:`decoder_layer` and :func:`hf_tensor_map`
    read (the attention weights live in ``self_attn`` and are exposed here as properties)."""

    def __init__(self, cfg: ZayaConfig, index: int, op: OpBackend, cos_sin: torch.Tensor, vllm_config: VllmConfig,
                 prefix: str) -> None:
        super().__init__()
        dt = vllm_config.model_config.dtype
        H, R, E, I = cfg.hidden_size, cfg.router_hidden_size, cfg.num_experts, cfg.moe_intermediate_size
        self.self_attn = ZayaCCA(cfg, op, cos_sin, vllm_config, f"{prefix}.self_attn")
        self.input_norm = _param(H, dtype=dt)
        self.post_attn_norm = _param(H, dtype=dt)
        for part in ("attn", "mlp"):
            for leaf in ("hb", "hs", "rb", "rs"):
                setattr(self, f"{part}_{leaf}", _param(H, dtype=dt))
        self.router_down_weight = _param(R, H, dtype=dt)
        self.router_down_bias = _param(R, dtype=dt)
        self.router_states_scale = _param(R, dtype=dt) if index > 0 else None
        self.router_norm = _param(R, dtype=dt)
        self.router_fc1_weight = _param(R, R, dtype=dt)
        self.router_fc1_bias = _param(R, dtype=dt)
        self.router_fc2_weight = _param(R, R, dtype=dt)
        self.router_fc2_bias = _param(R, dtype=dt)
        self.router_out_weight = _param(E + 1, R, dtype=dt)
        self.balancing_biases = _param(E + 1, dtype=torch.float32)
        self.gate_up_proj = _param(E, 2 * I, H, dtype=dt)
        self.down_proj = _param(E, H, I, dtype=dt)

    @property
    def attn_scale(self) -> tuple[torch.Tensor, ...]:
        return self.attn_hb, self.attn_hs, self.attn_rb, self.attn_rs

    @property
    def mlp_scale(self) -> tuple[torch.Tensor, ...]:
        return self.mlp_hb, self.mlp_hs, self.mlp_rb, self.mlp_rs


def _attention_weight(name: str) -> property:
    return property(lambda self: getattr(self.self_attn, name), doc=f"``self_attn.{name}``")


for _name in ("qkv_weight", "qkv_bias", "conv_dw_weight", "conv_dw_bias", "conv_g_weight", "conv_g_bias", "qk_temp",
              "o_weight", "o_bias"):
    setattr(ZayaDecoderLayer, _name, _attention_weight(_name))


@support_torch_compile(dynamic_arg_dims={"input_ids": 0, "positions": 0, "inputs_embeds": 0})
class ZayaModel(nn.Module):
    """Embedding, decoder layers and final norm (compiled by vLLM as one graph around the CCA ops)."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        cfg = check_engine_config(vllm_config)
        dt = vllm_config.model_config.dtype
        backend = os.environ.get(OP_BACKEND_ENV, "auto")
        if backend not in BACKENDS:
            raise ValueError(f"{OP_BACKEND_ENV}={backend!r}: use one of {BACKENDS}")
        device = torch.get_default_device()
        self.cfg = cfg
        self.op = OpBackend(backend, device, dt, cfg.head_dim)
        H, V = cfg.hidden_size, cfg.vocab_size
        self.embed = _param(V, H, dtype=dt)
        self.input_bias = _param(H, dtype=dt)
        self.input_scale = _param(H, dtype=dt)
        self.final_norm = _param(H, dtype=dt)
        self.register_buffer("cos_sin", rope_table(cfg, device, dt), persistent=False)
        self.layers = nn.ModuleList(
            ZayaDecoderLayer(cfg, i, self.op, self.cos_sin, vllm_config, f"{prefix}.layers.{i}")
            for i in range(cfg.num_hidden_layers))

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """fp32 residual stream of ``input_ids`` (spec "Embedding")."""
        return embed_tokens(self, input_ids)

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor, intermediate_tensors=None,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        cfg, op = self.cfg, self.op
        r = self.embed_input_ids(input_ids) if inputs_embeds is None else inputs_embeds.to(torch.float32)
        x = op("rms_norm", r, self.layers[0].input_norm, cfg.rms_norm_eps)
        prev = None
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            nxt = self.layers[i + 1].input_norm if i + 1 < n else self.final_norm

            def attention(proj, layer=layer):
                return layer.self_attn(proj, positions)

            r, x, prev = decoder_layer(op, cfg, layer, r, x, prev, nxt, attention)
        return x

    @torch.no_grad()
    def resolve_op_backends(self) -> dict[str, str]:
        """Run every op once, eagerly, on one token through layer 0 with a scratch cache, so that the
        OpBackend's per-op choice (compiled kernel or reference) is made before vLLM traces the model.
        Returns :meth:`OpBackend.report`."""
        cfg, op = self.cfg, self.op
        dev, dt = self.embed.device, self.embed.dtype
        L = self.layers[0]
        r = self.embed_input_ids(torch.zeros(1, dtype=torch.int64, device=dev))
        x = op("rms_norm", r, L.input_norm, cfg.rms_norm_eps)
        i32 = dict(dtype=torch.int32, device=dev)
        meta = StepMeta(positions=torch.zeros(1, dtype=torch.int64, device=dev),
                        cu_seqlens=torch.tensor([0, 1], **i32), slot_mapping=torch.zeros(1, dtype=torch.int64, device=dev),
                        state_indices=torch.zeros(1, **i32), seqused_k=torch.ones(1, **i32),
                        block_table=torch.zeros(1, 1, **i32), max_seqlen_q=1, max_seqlen_k=1)
        k = torch.zeros(1, 1, cfg.num_key_value_heads, cfg.head_dim, dtype=dt, device=dev)
        v = torch.zeros_like(k)
        conv = torch.zeros(1, *_state_shapes(cfg)[0], dtype=dt, device=dev)
        value = torch.zeros(1, *_state_shapes(cfg)[1], dtype=dt, device=dev)
        nxt = self.layers[1].input_norm if len(self.layers) > 1 else self.final_norm
        decoder_layer(op, cfg, L, r, x, None, nxt,
                      lambda proj: cca_block(op, cfg, L.self_attn, proj, self.cos_sin, meta, k, v, conv, value))
        return op.report()


class ZayaForCausalLM(nn.Module, HasInnerState, IsHybrid, SupportsMambaPrefixCaching):
    """ZAYA1 (transformers' ``ZayaForCausalLM`` checkpoints) for vLLM, on the zaya_ops ops."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        self.model = ZayaModel(vllm_config=vllm_config, prefix=f"{prefix}.model" if prefix else "model")
        cfg = self.cfg = self.model.cfg
        dt = vllm_config.model_config.dtype
        self.lm_head_weight = None if cfg.tie_word_embeddings else _param(cfg.vocab_size, cfg.hidden_size, dtype=dt)
        self.lm_head_bias = _param(cfg.vocab_size, dtype=dt) if cfg.lm_head_bias else None
        self.checkpoint = vllm_config.model_config.model

    @property
    def lm_head(self) -> torch.Tensor:
        """The LM head (the embedding when tied)."""
        return self.model.embed if self.lm_head_weight is None else self.lm_head_weight

    # vLLM's hybrid-model interface: the per-slot state, computed from the config alone
    @classmethod
    def get_mamba_state_shape_from_config(cls, vllm_config: VllmConfig) -> tuple[tuple[int, ...], ...]:
        from .config import zaya_config

        return _state_shapes(zaya_config(vllm_config.model_config.hf_config))

    @classmethod
    def get_mamba_state_dtype_from_config(cls, vllm_config: VllmConfig) -> tuple[torch.dtype, ...]:
        dt = vllm_config.model_config.dtype
        return dt, dt

    @classmethod
    def get_mamba_state_copy_func(cls) -> tuple:
        return _copy_whole_state, _copy_whole_state

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_input_ids(input_ids)

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor, intermediate_tensors=None,
                inputs_embeds: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return self.model(input_ids, positions, intermediate_tensors, inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return lm_logits(self, hidden_states)

    def op_backends(self) -> dict[str, str]:
        """Which backend ran each op (``OpBackend.report``)."""
        return self.model.op.report()

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Copy the checkpoint (vLLM's iterator of transformers-named tensors, read once) into the
        parameters through zaya_ops' name mapping; every missing, unexpected or mis-shaped tensor is named
        in one ``CheckpointError`` (a legacy alternating-layer checkpoint gets ``LegacyCheckpointError``).
        Then runs every op once (:meth:`ZayaModel.resolve_op_backends`). Returns the loaded parameter names."""
        cfg = self.cfg
        m = self.model
        targets = hf_tensor_map(cfg, types.SimpleNamespace(
            embed=m.embed, input_bias=m.input_bias, input_scale=m.input_scale, final_norm=m.final_norm,
            lm_head=self.lm_head, lm_head_bias=self.lm_head_bias, layers=m.layers))
        ignore = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
        shapes: dict[str, tuple[int, ...]] = {}
        dtypes: dict[str, torch.dtype] = {}
        with torch.no_grad():
            for name, t in weights:
                check_not_legacy(names=(name,))  # fail on the first legacy tensor, before reading on
                shapes[name], dtypes[name] = tuple(t.shape), t.dtype
                dst = targets.get(name)
                if dst is not None and tuple(dst.shape) == shapes[name] and t.dtype.is_floating_point:
                    dst.copy_(t)
        check_checkpoint_names(str(self.checkpoint), targets, shapes, dtypes=dtypes, ignore=ignore)
        report = m.resolve_op_backends()
        logger.info("ZAYA1 on zaya_ops (%s): %s", m.op.backend,
                    ", ".join(f"{k}: {v}" for k, v in report.items()))
        return {name for name, _ in self.named_parameters()}



def describe(model: nn.Module) -> dict:
    """What vLLM runs: the model class and, for this plugin's model, which backend ran each zaya_ops op
    (for ``LLM.apply_model(describe)``, which needs ``VLLM_ALLOW_INSECURE_SERIALIZATION=1``)."""
    cls = type(model)
    out = {"class": f"{cls.__module__}.{cls.__qualname__}"}
    if isinstance(model, ZayaForCausalLM):
        out["op_backends"] = model.op_backends()
    return out
