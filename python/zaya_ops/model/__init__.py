"""The ZAYA1 model on the zaya_ops op layer: config, checkpoint loader, paged cache, model and generation.

>>> from zaya_ops.model import ZayaForCausalLM
>>> model = ZayaForCausalLM.from_pretrained("path/to/ZAYA1-8B", device="cuda")   # doctest: +SKIP
>>> model.generate([[2, 1000, 2000], [2, 5]], max_new_tokens=16).tokens          # doctest: +SKIP
"""

from __future__ import annotations

from .backend import BACKENDS, OP_NAMES
from .cache import ZayaCache
from .config import KERNEL_HEAD_DIMS, LegacyCheckpointError, ZayaConfig
from .generation import GenerationOutput, generate, sample_next
from .modeling import StepMeta, ZayaForCausalLM, ZayaOutput
from .weights import CheckpointError, parameter_shapes, random_state_dict, save_checkpoint

__all__ = [
    "BACKENDS",
    "OP_NAMES",
    "KERNEL_HEAD_DIMS",
    "CheckpointError",
    "LegacyCheckpointError",
    "GenerationOutput",
    "StepMeta",
    "ZayaCache",
    "ZayaConfig",
    "ZayaForCausalLM",
    "ZayaOutput",
    "generate",
    "parameter_shapes",
    "random_state_dict",
    "sample_next",
    "save_checkpoint",
]
