"""``ZayaConfig``: the model hyper-parameters, read from a Hugging Face ``config.json`` (model_type "zaya").

Only what the zaya_ops model implements is accepted; anything else raises a ``ValueError`` that names the
field and says why (see :class:`ZayaConfig`). Missing fields take transformers' ``ZayaConfig`` defaults
(the ZAYA1-8B values).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["ZayaConfig", "KERNEL_HEAD_DIMS", "DTYPE_NAMES", "LegacyCheckpointError", "check_not_legacy"]

#: Head dims the compiled ``cca_qkv``/``cca_attention`` kernels are written for. The reference backend
#: takes any even head dim (the tests use 16 and 32); with ``backend="auto"`` other head dims run those two
#: ops on the reference, and ``backend="ops"`` rejects them.
KERNEL_HEAD_DIMS = (64, 128, 256)

#: dtype names used in ``config.json`` (``dtype`` / ``torch_dtype``) and on the command line.
DTYPE_NAMES = {
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
}

_DEFAULT_ROPE = {"rope_type": "default", "rope_theta": 5_000_000.0, "partial_rotary_factor": 0.5}

#: Size fields: integers (not bools) >= 1.
_POSITIVE_INTS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                  "head_dim", "num_experts", "moe_intermediate_size", "router_hidden_size",
                  "max_position_embeddings")


def _err(field_name: str, msg: str) -> ValueError:
    return ValueError(f"unsupported ZAYA config: {field_name} {msg}")


def _is_int(v: Any) -> bool:
    """An integer that is not a bool (JSON ``true`` parses as a Python bool, a subclass of int)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _finite_number(name: str, v: Any) -> float:
    """``v`` as a float when it is a finite int or float (not a bool, a string or null), else a ValueError
    naming the field and the value."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _err(name, f"must be a finite number, got {v!r}")
    return float(v)


def _token_ids_ok(v: Any, many: bool) -> bool:
    if v is None or _is_int(v):
        return True
    return many and isinstance(v, (list, tuple)) and all(_is_int(t) for t in v)


class LegacyCheckpointError(ValueError):
    """A checkpoint in Zyphra's legacy alternating-layer layout, which zaya_ops does not read."""


# config.json keys and tensor-name pieces found only in the legacy layout (Zyphra's Megatron-style export:
# even layers attention, odd layers MoE, per-layer config lists)
_LEGACY_KEYS = ("zaya_layers", "cca", "cca_num_q_heads", "num_query_groups_list", "ffn_hidden_size_list")
_LEGACY_NAME_PARTS = (".zaya_block.", ".self_attn.qkv.linear_q.", ".res_scale.", "model.final_norm.")


def check_not_legacy(config: Mapping[str, Any] | None = None, names: Iterable[str] | None = None) -> None:
    """Raise :class:`LegacyCheckpointError` (a ValueError that says what to do) when a ``config.json``
    dict or a checkpoint's tensor names are in Zyphra's legacy alternating-layer layout: 2 x L layers,
    attention and MoE apart (``zaya_layers`` in the config; ``model.layers.<2i+1>.zaya_block.*`` tensors),
    as in ZAYA1-base, ZAYA1-reasoning-base and the *-legacy repositories of Zyphra's transformers 4.57
    fork."""
    evidence = None
    if config is not None:
        keys = [k for k in _LEGACY_KEYS if k in config]
        if keys:
            evidence = f"config.json has {', '.join(keys)}"
    if evidence is None and names is not None:
        for n in names:
            if any(part in n for part in _LEGACY_NAME_PARTS):
                evidence = f"it holds tensor {n!r}"
                break
    if evidence is not None:
        raise LegacyCheckpointError(
            f"this ZAYA1 checkpoint is in Zyphra's legacy alternating-layer layout ({evidence}): attention "
            f"and MoE are separate layers, as in ZAYA1-base, ZAYA1-reasoning-base and the *-legacy "
            f"repositories made for Zyphra's transformers 4.57 fork. zaya_ops (and its vLLM plugin) read "
            f"the transformers >= 5.18 layout, where each 'hybrid' layer N holds both "
            f"(model.layers.N.self_attn.qkv_proj.*, model.layers.N.mlp.gate.*, model.layers.N.mlp.experts.*). "
            f"Use a checkpoint published in that layout (such as Zyphra/ZAYA1-8B), or convert this one first: "
            f"merge legacy layers 2N (attention) and 2N+1 (MoE) into layer N under transformers' names and "
            f"write a config.json with model_type 'zaya' and num_hidden_layers = len(zaya_layers) / 2.")


@dataclass(frozen=True)
class ZayaConfig:
    """Hyper-parameters of a ZAYA1 model (the subset of transformers' ``ZayaConfig`` that matters here).

    Build it with :meth:`from_pretrained` (a checkpoint directory), :meth:`from_json_file` or
    :meth:`from_dict` (a parsed ``config.json``), or directly with keyword arguments for a random model.
    Validation (in ``__post_init__``) rejects, with a ``ValueError`` naming the field:

    * ``model_type`` other than ``"zaya"`` (from_dict);
    * ``num_experts_per_tok != 1`` (the router and ``moe_top1`` are top-1);
    * ``layer_types`` other than all ``"hybrid"`` (``"hybrid_sliding"``, sliding-window attention, is not
      implemented by ``cca_attention``);
    * a RoPE type other than ``"default"`` (no YaRN/dynamic scaling), or a rotary dim
      (``int(head_dim * partial_rotary_factor)``) that is odd, zero or larger than ``head_dim``;
    * ``cca_time0``/``cca_time1`` other than 2 (the CCA convolutions have kernel size 2);
    * ``hidden_act`` other than ``"silu"``; a ``quantization_config``;
    * ``num_attention_heads`` not a multiple of ``num_key_value_heads``, an odd or non-positive
      ``head_dim``, non-positive sizes;
    * a value of the wrong JSON type (a size or count that is not an integer, ``true`` included; a
      ``rms_norm_eps``/``rope_theta``/``partial_rotary_factor`` that is a string, null, NaN or
      infinite; a flag that is not ``true``/``false``; token ids that are not integers), the message
      naming the field and the value.

    Head dims: any even head dim works with the reference backend; the compiled attention kernels take
    ``head_dim`` in :data:`KERNEL_HEAD_DIMS` (64, 128, 256). Other kernel limits: the router and experts
    take any H, R, I and E >= 1.
    """

    vocab_size: int = 262272
    hidden_size: int = 2048
    num_hidden_layers: int = 40
    num_attention_heads: int = 8
    num_key_value_heads: int = 2
    head_dim: int = 128
    num_experts: int = 16
    num_experts_per_tok: int = 1
    moe_intermediate_size: int = 2048
    router_hidden_size: int = 256
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 131072
    rope_theta: float = 5_000_000.0
    partial_rotary_factor: float = 0.5
    attention_bias: bool = False
    lm_head_bias: bool = False
    tie_word_embeddings: bool = True
    hidden_act: str = "silu"
    cca_time0: int = 2
    cca_time1: int = 2
    bos_token_id: int | None = 2
    eos_token_id: int | tuple[int, ...] | None = 106
    pad_token_id: int | None = 0
    dtype: str | None = None
    #: config.json fields this class does not model (kept for :meth:`to_dict`).
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # ------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self._check_types()
        if isinstance(self.eos_token_id, list):
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
        for name in _POSITIVE_INTS:
            v = getattr(self, name)
            if v <= 0:
                raise _err(name, f"must be a positive integer, got {v!r}")
        if self.num_experts_per_tok != 1:
            raise _err("num_experts_per_tok", f"must be 1 (ZAYA1 routes each token to one expert or the skip "
                       f"class), got {self.num_experts_per_tok}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise _err("num_attention_heads", f"({self.num_attention_heads}) must be a multiple of "
                       f"num_key_value_heads ({self.num_key_value_heads})")
        if self.head_dim % 2:
            raise _err("head_dim", f"must be even (values are two half-heads), got {self.head_dim}")
        rot = self.rotary_dim
        if rot <= 0 or rot % 2 or rot > self.head_dim:
            raise _err("partial_rotary_factor", f"{self.partial_rotary_factor} gives rotary dim {rot} for head_dim "
                       f"{self.head_dim}: it must be even, positive and <= head_dim")
        if not self.rope_theta > 0:
            raise _err("rope_theta", f"must be positive, got {self.rope_theta}")
        if self.cca_time0 != 2 or self.cca_time1 != 2:
            raise _err("cca_time0/cca_time1", f"must both be 2 (the CCA conv kernels have 2 taps), got "
                       f"{self.cca_time0}/{self.cca_time1}")
        if self.hidden_act != "silu":
            raise _err("hidden_act", f"must be 'silu' (the experts are SiLU-gated), got {self.hidden_act!r}")
        if not self.rms_norm_eps > 0:
            raise _err("rms_norm_eps", f"must be positive, got {self.rms_norm_eps}")
        if self.dtype is not None and self.dtype not in DTYPE_NAMES:
            raise _err("dtype", f"{self.dtype!r} is not one of {sorted(set(DTYPE_NAMES))}")

    def _check_types(self) -> None:
        """Every field's JSON type (a bool is not an int, a string is not a number), and finite
        floats, each failure a ValueError naming the field and its value; the float fields become
        Python floats."""
        for name in _POSITIVE_INTS + ("num_experts_per_tok", "cca_time0", "cca_time1"):
            v = getattr(self, name)
            if not _is_int(v):
                raise _err(name, f"must be an integer, got {v!r}")
        for name in ("rms_norm_eps", "rope_theta", "partial_rotary_factor"):
            object.__setattr__(self, name, _finite_number(name, getattr(self, name)))
        for name in ("attention_bias", "lm_head_bias", "tie_word_embeddings"):
            v = getattr(self, name)
            if not isinstance(v, bool):
                raise _err(name, f"must be true or false, got {v!r}")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            v = getattr(self, name)
            if not _token_ids_ok(v, many=name == "eos_token_id"):
                kind = "an integer, a list of integers or null" if name == "eos_token_id" else "an integer or null"
                raise _err(name, f"must be {kind}, got {v!r}")
        if not isinstance(self.hidden_act, str):
            raise _err("hidden_act", f"must be a string, got {self.hidden_act!r}")
        if self.dtype is not None and not isinstance(self.dtype, str):
            raise _err("dtype", f"must be a string or null, got {self.dtype!r}")

    # ------------------------------------------------------------------------------------------
    # Derived sizes
    @property
    def rotary_dim(self) -> int:
        """Dims of each head that RoPE rotates: ``int(head_dim * partial_rotary_factor)`` (64 for ZAYA1-8B)."""
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def conv_channels(self) -> int:
        """CCA convolution channels C = (nq + nkv) * D."""
        return (self.num_attention_heads + self.num_key_value_heads) * self.head_dim

    @property
    def q_dim(self) -> int:
        """nq * D."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """nkv * D."""
        return self.num_key_value_heads * self.head_dim

    @property
    def qkv_dim(self) -> int:
        """Width of the fused q/k/v-current/v-delayed projection: nq*D + nkv*D + 2 * nkv*D/2."""
        return self.q_dim + 2 * self.kv_dim

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """The end-of-sequence ids as a tuple (empty when the config has none)."""
        if self.eos_token_id is None:
            return ()
        if isinstance(self.eos_token_id, int):
            return (self.eos_token_id,)
        return tuple(self.eos_token_id)

    @property
    def torch_dtype(self) -> torch.dtype | None:
        """The checkpoint's parameter dtype from ``config.json`` (None if it does not say)."""
        return DTYPE_NAMES[self.dtype] if self.dtype is not None else None

    def kernel_head_dim_ok(self) -> bool:
        """Whether the compiled attention kernels take this head dim (see :data:`KERNEL_HEAD_DIMS`)."""
        return self.head_dim in KERNEL_HEAD_DIMS

    # ------------------------------------------------------------------------------------------
    # config.json
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ZayaConfig":
        """Build from a parsed Hugging Face ``config.json``; raises ValueError for another model type or
        unsupported values (see the class docstring)."""
        if not isinstance(d, dict):
            raise ValueError(f"config must be a JSON object, got {type(d).__name__}")
        mt = d.get("model_type")
        if mt != "zaya":
            raise ValueError(f"config.json has model_type {mt!r}; zaya_ops loads only model_type 'zaya' (ZAYA1)")
        check_not_legacy(config=d)
        if d.get("quantization_config"):
            raise _err("quantization_config", "is set: quantized checkpoints are not supported")
        layer_types = d.get("layer_types")
        if layer_types is not None:
            if not isinstance(layer_types, list):
                raise _err("layer_types", f"must be a list of strings, got {layer_types!r}")
            bad = sorted({repr(t) for t in layer_types if t != "hybrid"})
            if bad:
                raise _err("layer_types", f"contains {', '.join(bad)}: only 'hybrid' (full causal attention) layers "
                           f"are supported, not sliding-window ('hybrid_sliding') ones")
            n = d.get("num_hidden_layers", cls.num_hidden_layers)
            if not _is_int(n):
                raise _err("num_hidden_layers", f"must be an integer, got {n!r}")
            if len(layer_types) != n:
                raise _err("layer_types", f"has {len(layer_types)} entries for {n} layers")
        rope = cls._rope_from_dict(d)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "rope_theta", "partial_rotary_factor", "dtype"}
        kwargs = {k: d[k] for k in names if k in d}
        if kwargs.get("head_dim") is None:
            kwargs.pop("head_dim", None)
        dtype = d.get("dtype", d.get("torch_dtype"))
        known = names | {"rope_parameters", "rope_theta", "partial_rotary_factor", "dtype", "torch_dtype",
                         "rope_scaling"}
        extra = {k: v for k, v in d.items() if k not in known}
        return cls(rope_theta=rope["rope_theta"], partial_rotary_factor=rope.get("partial_rotary_factor", 1.0),
                   dtype=dtype if isinstance(dtype, str) else None, extra=extra, **kwargs)

    @staticmethod
    def _rope_from_dict(d: dict[str, Any]) -> dict[str, Any]:
        if d.get("rope_scaling"):
            raise _err("rope_scaling", f"is set ({d['rope_scaling']!r}): only default RoPE is supported")
        rp = d.get("rope_parameters")
        if rp is None:
            rope = dict(_DEFAULT_ROPE)
            for k in ("rope_theta", "partial_rotary_factor"):
                if k in d:
                    rope[k] = d[k]
            return rope
        if not isinstance(rp, dict):
            raise _err("rope_parameters", f"must be an object, got {rp!r}")
        if "hybrid" in rp:  # transformers' nested form (a stray top-level rope_type is ignored, as transformers)
            rope = rp["hybrid"]
            if rope is None:
                raise _err("rope_parameters.hybrid", "is null: the hybrid layers need RoPE parameters")
            if not isinstance(rope, dict):
                raise _err("rope_parameters.hybrid", f"must be an object, got {rope!r}")
        else:
            rope = rp
        rope = {**_DEFAULT_ROPE, **rope}
        if rope.get("rope_type", "default") != "default":
            raise _err("rope_parameters", f"rope_type {rope['rope_type']!r}: only 'default' RoPE is supported")
        return rope

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "ZayaConfig":
        """Read a ``config.json`` file (see :meth:`from_dict`)."""
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(d)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "ZayaConfig":
        """Read ``config.json`` from a checkpoint directory (or a path to the file itself)."""
        path = os.fspath(path)
        file = os.path.join(path, "config.json") if os.path.isdir(path) else path
        if not os.path.isfile(file):
            raise FileNotFoundError(f"no config.json at {path}")
        return cls.from_json_file(file)

    def to_dict(self) -> dict[str, Any]:
        """A Hugging Face ``config.json`` dict (readable by transformers' ``ZayaConfig`` and by us)."""
        d: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name in ("extra", "rope_theta", "partial_rotary_factor"):
                continue
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        if d.get("dtype") is None:
            d.pop("dtype")
        d["model_type"] = "zaya"
        d.setdefault("architectures", ["ZayaForCausalLM"])
        d["layer_types"] = ["hybrid"] * self.num_hidden_layers
        d["rope_parameters"] = {"hybrid": {"rope_type": "default", "rope_theta": self.rope_theta,
                                           "partial_rotary_factor": self.partial_rotary_factor}}
        return d

    def save(self, directory: str | os.PathLike) -> str:
        """Write ``config.json`` into ``directory``; returns its path."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "config.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")
        return path

    def replace(self, **changes: Any) -> "ZayaConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
