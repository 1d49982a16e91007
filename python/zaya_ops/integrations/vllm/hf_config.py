"""transformers' ``ZayaConfig`` with zaya_ops' legacy-layout check in front of it, for vLLM.

vLLM reads ``config.json`` through transformers, whose ``ZayaConfig`` fails on a checkpoint in Zyphra's
legacy alternating-layer layout with an unrelated message (its ``rope_scaling: false`` does not validate).
The plugin registers this subclass for model type "zaya" in vLLM's config registry, so such a checkpoint
gets :class:`zaya_ops.model.config.LegacyCheckpointError`, which says what to do, and every other config
is transformers' own.
"""

from __future__ import annotations

from transformers import ZayaConfig as _TransformersZayaConfig

from ...model.config import check_not_legacy

__all__ = ["ZayaConfigForVllm"]


class ZayaConfigForVllm(_TransformersZayaConfig):
    """transformers' ``ZayaConfig``; :meth:`from_dict` refuses the legacy layout first."""

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """Raise ``LegacyCheckpointError`` for a legacy config, else transformers' ``from_dict``."""
        check_not_legacy(config=config_dict)
        return super().from_dict(config_dict, **kwargs)
