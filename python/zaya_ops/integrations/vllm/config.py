"""What the vLLM plugin supports, checked when vLLM builds its engine configuration.

:class:`ZayaVllmConfig` is registered in vLLM's per-architecture config hooks (``MODELS_CONFIG_MAP``), so
vLLM calls it while it builds the ``VllmConfig`` in the process that creates the engine: an unsupported
setting fails there, in the caller's ``LLM(...)`` or server start-up, with a ``ValueError`` that names the
setting and says what to use instead. The model's constructor runs the same checks again in the workers.
"""

from __future__ import annotations

from typing import Any

import torch

from ...model.config import ZayaConfig

__all__ = ["UnsupportedByZayaPlugin", "ZayaVllmConfig", "check_engine_config", "zaya_config"]

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class UnsupportedByZayaPlugin(ValueError):
    """A vLLM setting the ZAYA1 plugin does not implement."""


def zaya_config(hf_config: Any) -> ZayaConfig:
    """zaya_ops' validated :class:`ZayaConfig` from vLLM's transformers config object (the one source of
    the config checks: sliding-window layers, top-k > 1, RoPE scaling, the legacy layout ... raise here)."""
    return ZayaConfig.from_dict(hf_config.to_dict())


def check_engine_config(vllm_config: Any) -> ZayaConfig:
    """Raise :class:`UnsupportedByZayaPlugin` (a ValueError) for any setting the plugin does not implement;
    return the model's :class:`ZayaConfig`.

    Refused: speculative decoding, tensor/pipeline/context/data parallelism, quantization, LoRA, a KV or
    state cache dtype other than the model's ("auto"), ReplaySSM, and model dtypes other than fp32, bf16
    and fp16. Prefix caching is supported (vLLM's "align" state caching; tested equal to no caching).
    """
    mc = vllm_config.model_config
    cfg = zaya_config(mc.hf_config)
    problems = []
    if vllm_config.speculative_config is not None:
        problems.append("speculative decoding (speculative_config) is not supported: the CCA conv and value "
                        "states have no rollback for rejected draft tokens; run without a speculative config")
    pc = vllm_config.parallel_config
    for name in ("tensor_parallel_size", "pipeline_parallel_size", "decode_context_parallel_size",
                 "prefill_context_parallel_size", "data_parallel_size"):
        n = getattr(pc, name, 1)
        if n != 1:
            problems.append(f"{name}={n} is not supported: the plugin runs ZAYA1 on one device; set it to 1")
    if vllm_config.quant_config is not None or getattr(mc, "quantization", None):
        problems.append(f"quantization ({getattr(mc, 'quantization', None)}) is not supported: the zaya_ops ops "
                        f"take bf16/fp16/fp32 weights")
    if vllm_config.lora_config is not None:
        problems.append("LoRA adapters are not supported")
    cc = vllm_config.cache_config
    if cc.cache_dtype != "auto":
        problems.append(f"kv_cache_dtype={cc.cache_dtype!r} is not supported: cca_qkv/cca_attention keep the KV "
                        f"cache in the model dtype; use kv_cache_dtype='auto'")
    for name in ("mamba_cache_dtype", "mamba_ssm_cache_dtype"):
        if getattr(cc, name, "auto") != "auto":
            problems.append(f"{name}={getattr(cc, name)!r} is not supported: the CCA states are kept in the "
                            f"model dtype; use 'auto'")
    if getattr(cc, "use_replayssm", False):
        problems.append("use_replayssm is a Mamba2 decode kernel option and does not apply to ZAYA1")
    if mc.dtype not in _DTYPES:
        problems.append(f"dtype {mc.dtype} is not supported: use bfloat16, float16 or float32")
    if problems:
        raise UnsupportedByZayaPlugin("ZAYA1 (zaya_ops vLLM plugin): " + "; ".join(problems))
    return cfg


class ZayaVllmConfig:
    """vLLM's per-architecture config hook for ``ZayaForCausalLM`` (a ``VerifyAndUpdateConfig``)."""

    @staticmethod
    def verify_and_update_config(vllm_config: Any) -> None:
        """Refuse unsupported settings (see :func:`check_engine_config`)."""
        check_engine_config(vllm_config)

    @staticmethod
    def verify_and_update_model_config(model_config: Any) -> None:
        """Validate the ZAYA1 config itself as soon as vLLM has read it."""
        zaya_config(model_config.hf_config)
