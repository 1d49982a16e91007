"""The two vLLM "attention backends" of a ZAYA1 CCA layer: metadata for its paged KV cache and for its
per-sequence conv/value state.

Why a zaya_ops backend on vLLM's own cache layout (and no change to the ops): vLLM 0.32 allocates every
attention layer's KV cache itself, as a logical ``[num_blocks, kv_heads, block_size, 2 * D]`` page view
(K in the first D of the last dim, V in the second) whose physical stride order is one of its
``KVCacheLayout`` members. ``cca_qkv`` and ``cca_attention`` take their ``[num_blocks, block_size, nkv, D]``
K and V caches with any strides (CPU kernels read any strides; the CUDA/HIP glue needs unit stride along D
and 16-byte-multiple other strides, which these views have for D a multiple of 8), so
``kv[..., :D].transpose(1, 2)`` and ``kv[..., D:].transpose(1, 2)`` are zaya_ops caches as they are: the
same ops on CPU, CUDA and ROCm, reading and writing vLLM's cache in place, with no scratch copy, no layout
argument and no companion op. vLLM's own attention backends cannot be used instead: ``cca_qkv`` writes the
new keys (after the CCA convolutions, QK norm and RoPE) and values into the cache itself, fused with the
projection epilogue, and ``cca_attention`` needs per-sequence query offsets, cached lengths and block
tables, which :class:`ZayaCCAAttentionMetadataBuilder` takes straight from vLLM's common metadata. We
prefer the token-major page interiors (``LBNHC``, ``BLNHC``: zaya_ops' own ``[block_size, nkv, D]``
interleaved K|V) but accept every layout vLLM may resolve.

The state (``MambaSpec``: conv state ``[C, 2]`` and value state ``[nkv*D/2]`` per slot, in one page) is a
Mamba-style cache: vLLM gives each sequence a slot (in prefix-caching "align" mode the block of its last
token, with the previous state copied in before the step) but does not clear a reused slot, so
:class:`ZayaCCAStateMetadataBuilder` tells the layer which sequences start from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from vllm.v1.attention.backend import (
    AttentionBackend,
    AttentionCGSupport,
    AttentionMetadataBuilder,
    AttentionType,
    CommonAttentionMetadata,
    MultipleOf,
)
from vllm.v1.attention.backends.utils import mamba_get_block_table_tensor
from vllm.v1.kv_cache_interface import KVCacheLayout

__all__ = [
    "ZayaCCAAttentionBackend",
    "ZayaCCAAttentionMetadata",
    "ZayaCCAAttentionMetadataBuilder",
    "ZayaCCAStateBackend",
    "ZayaCCAStateMetadata",
    "ZayaCCAStateMetadataBuilder",
]


class ZayaCCAAttentionBackend(AttentionBackend):
    """The KV cache of the CCA layers (written by ``cca_qkv``, read by ``cca_attention``)."""

    # cca_qkv writes the new keys and values inside the layer's op: no separate cache-update op.
    forward_includes_kv_cache_update = True
    supported_dtypes: ClassVar[list[torch.dtype]] = [torch.float16, torch.bfloat16, torch.float32]
    supported_kv_cache_dtypes: ClassVar[list[str]] = ["auto"]

    @staticmethod
    def get_supported_kernel_block_sizes(kv_cache_spec=None) -> list[int | MultipleOf]:
        """Any block size: the ops address blocks through the block table and ``block_size``."""
        return [MultipleOf(1)]

    @classmethod
    def supported_kv_cache_layouts(cls) -> tuple[KVCacheLayout, ...]:
        """Every layout (the ops take strided K/V views), token-major page interiors first."""
        return (KVCacheLayout.LBNHC, KVCacheLayout.BLNHC, KVCacheLayout.LBHNC, KVCacheLayout.BLHNC,
                KVCacheLayout.LHBNC, KVCacheLayout.BHLNC)

    @staticmethod
    def get_name() -> str:
        return "ZAYA_CCA"

    @staticmethod
    def get_impl_cls():
        raise NotImplementedError("ZAYA_CCA has no AttentionImpl: the CCA layer calls zaya_ops' cca_qkv and "
                                  "cca_attention itself (zaya_ops.integrations.vllm.model)")

    @staticmethod
    def get_builder_cls() -> type["ZayaCCAAttentionMetadataBuilder"]:
        return ZayaCCAAttentionMetadataBuilder

    @classmethod
    def supports_attn_type(cls, attn_type: str) -> bool:
        return attn_type == AttentionType.DECODER


@dataclass
class ZayaCCAAttentionMetadata:
    """What ``cca_qkv``/``cca_attention`` need about one step's batch (vLLM's request order).

    ``num_tokens``: the step's real tokens T (the model's input may be padded beyond them);
    ``cu_seqlens`` int32 [B+1]; ``seqused_k`` int32 [B] (cached tokens after the step);
    ``block_table`` int32 [B, max_blocks]; ``slot_mapping`` int64 [T]; ``max_query_len`` and
    ``max_seq_len`` host upper bounds.
    """

    num_tokens: int
    num_reqs: int
    cu_seqlens: torch.Tensor
    seqused_k: torch.Tensor
    block_table: torch.Tensor
    slot_mapping: torch.Tensor
    max_query_len: int
    max_seq_len: int


def _as(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t if t.dtype == dtype else t.to(dtype)


class ZayaCCAAttentionMetadataBuilder(AttentionMetadataBuilder[ZayaCCAAttentionMetadata]):
    """Builds :class:`ZayaCCAAttentionMetadata` from vLLM's common metadata (views, no copies)."""

    _cudagraph_support: ClassVar[AttentionCGSupport] = AttentionCGSupport.NEVER

    def __init__(self, kv_cache_spec: Any, layer_names: list[str], vllm_config: Any, device: torch.device) -> None:
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)

    def build(self, common_prefix_len: int, common_attn_metadata: CommonAttentionMetadata,
              fast_build: bool = False) -> ZayaCCAAttentionMetadata:
        m = common_attn_metadata
        B = m.num_reqs
        T = int(m.query_start_loc_cpu[B])
        return ZayaCCAAttentionMetadata(
            num_tokens=T,
            num_reqs=B,
            cu_seqlens=_as(m.query_start_loc[:B + 1], torch.int32),
            seqused_k=_as(m.seq_lens[:B], torch.int32),
            block_table=_as(m.block_table_tensor[:B], torch.int32),
            slot_mapping=_as(m.slot_mapping[:T], torch.int64),
            max_query_len=int(m.max_query_len),
            max_seq_len=int(m.max_seq_len),
        )


class ZayaCCAStateBackend(AttentionBackend):
    """The per-sequence CCA state (registered as vLLM Mamba backend ``ZAYA_CCA_STATE``)."""

    @staticmethod
    def get_name() -> str:
        return "ZAYA_CCA_STATE"

    @staticmethod
    def get_impl_cls():
        raise NotImplementedError("ZAYA_CCA_STATE has no AttentionImpl (state only)")

    @staticmethod
    def get_builder_cls() -> type["ZayaCCAStateMetadataBuilder"]:
        return ZayaCCAStateMetadataBuilder

    @classmethod
    def is_ssm(cls) -> bool:
        return True


@dataclass
class ZayaCCAStateMetadata:
    """``state_indices`` int32 [B]: each request's state slot (a block of the state group);
    ``new_rows``: int64 indices of the requests that start from scratch this step (no computed tokens:
    their slot must be reset, vLLM reuses slots without clearing them), or None when there are none."""

    state_indices: torch.Tensor
    new_rows: torch.Tensor | None


class ZayaCCAStateMetadataBuilder(AttentionMetadataBuilder[ZayaCCAStateMetadata]):
    """Builds :class:`ZayaCCAStateMetadata`: the slot of every request, in vLLM's request order (the same
    order as the KV metadata; no decode/prefill split is needed, the ops take mixed batches)."""

    _cudagraph_support: ClassVar[AttentionCGSupport] = AttentionCGSupport.NEVER

    def __init__(self, kv_cache_spec: Any, layer_names: list[str], vllm_config: Any, device: torch.device) -> None:
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)
        self.cache_mode = vllm_config.cache_config.mamba_cache_mode

    def build(self, common_prefix_len: int, common_attn_metadata: CommonAttentionMetadata,
              fast_build: bool = False, **kwargs: Any) -> ZayaCCAStateMetadata:
        m = common_attn_metadata
        B = m.num_reqs
        # "none": one slot per request (column 0); "align": the block of the request's last token.
        table = mamba_get_block_table_tensor(m.block_table_tensor, m.seq_lens, self.kv_cache_spec, self.cache_mode)
        if table.dim() == 2:
            table = table[:, 0]
        state_indices = _as(table[:B], torch.int32)
        query_lens = m.query_start_loc_cpu[1:B + 1] - m.query_start_loc_cpu[:B]
        if m.seq_lens_cpu_upper_bound is not None:  # exact for requests without computed tokens
            new = (m.seq_lens_cpu_upper_bound[:B] - query_lens) <= 0
            rows = new.nonzero().flatten()
            new_rows = rows.to(m.seq_lens.device, non_blocking=True) if rows.numel() else None
        else:  # a device read; only when vLLM gives no host lengths
            rows = (m.compute_num_computed_tokens()[:B] <= 0).nonzero().flatten()
            new_rows = rows if rows.numel() else None
        return ZayaCCAStateMetadata(state_indices=state_indices, new_rows=new_rows)
