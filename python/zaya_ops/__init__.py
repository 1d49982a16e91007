"""zaya_ops: compiled CPU, CUDA and HIP kernels for the ZAYA1 mixture-of-experts models.

The ops live in ``torch.ops.zaya``; typed, checked wrappers are re-exported here (see
``zaya_ops.ops``), and ``zaya_ops.reference`` holds the pure-PyTorch reference of each. :func:`selftest` checks every compiled
kernel of a device against that reference (the model's ``backend="auto"`` runs it before a kernel's first
use and routes a kernel that fails it to the reference).
"""

from __future__ import annotations

from . import _fake  # noqa: F401  (meta kernels for torch.compile)
from ._autograd import backward_backends  # registers the norms' autograd (training, in progress)
from ._library import build_info
from ._selftest import OpCheck, SelfTestWarning, selftest
from .ops import cca_attention, cca_qkv, cca_qkv_functional, moe_top1, residual_scale_rmsnorm, rms_norm, router
from .model import ZayaConfig, ZayaForCausalLM  # the model on the ops (zaya_ops.model)

__version__ = "0.1.0"

__all__ = [
    "backward_backends",
    "build_info",
    "cca_attention",
    "cca_qkv",
    "cca_qkv_functional",
    "moe_top1",
    "residual_scale_rmsnorm",
    "rms_norm",
    "router",
    "selftest",
    "OpCheck",
    "SelfTestWarning",
    "ZayaConfig",
    "ZayaForCausalLM",
]
