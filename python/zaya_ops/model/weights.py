"""Checkpoint I/O: the Hugging Face parameter names of a ZAYA1 checkpoint, a safetensors loader that checks
names and shapes before it reads anything and then copies tensor by tensor from memory-mapped files, and a
writer (used for random test/demo checkpoints).

A checkpoint directory holds ``config.json`` and either ``model.safetensors`` or shards listed by
``model.safetensors.index.json`` (its ``weight_map``), as transformers' ``save_pretrained`` writes them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable, Mapping

import torch

from .config import ZayaConfig, check_not_legacy

__all__ = [
    "CheckpointError",
    "SINGLE_FILE",
    "INDEX_FILE",
    "parameter_shapes",
    "checkpoint_tensor_files",
    "check_checkpoint_names",
    "load_tensors_into",
    "random_state_dict",
    "save_checkpoint",
]

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
#: Checkpoints at least this large get a progress bar by default.
PROGRESS_MIN_BYTES = 256 << 20


class CheckpointError(ValueError):
    """A checkpoint is unusable: missing, unexpected, mis-shaped or non-floating tensors (all named), a
    shard outside the checkpoint directory, or a file that is not valid safetensors (named)."""


#: safetensors dtypes that load into the (floating-point) weights; integer, bool, complex and
#: scale-only (F8_E8M0) tensors are refused.
_FLOAT_STORED = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")


def _floating(dtype: str | torch.dtype) -> bool:
    """Whether a stored dtype (safetensors' name, or a torch dtype) is floating point."""
    return dtype.is_floating_point if isinstance(dtype, torch.dtype) else dtype in _FLOAT_STORED


@contextlib.contextmanager
def _safetensors(path: str):
    """``safe_open(path)`` on the CPU, a corrupt, truncated or unreadable file raising a CheckpointError
    that names it (safetensors' own errors do not)."""
    import safetensors
    from safetensors import safe_open

    errors = (getattr(safetensors, "SafetensorError", RuntimeError), OSError)
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            yield f
    except errors as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file (corrupt or truncated?): {exc}") from exc


def _layer_shapes(cfg: ZayaConfig, i: int) -> dict[str, tuple[int, ...]]:
    H, D, C = cfg.hidden_size, cfg.head_dim, cfg.conv_channels
    R, E, I = cfg.router_hidden_size, cfg.num_experts, cfg.moe_intermediate_size
    p = f"model.layers.{i}."
    a = p + "self_attn."
    qkv = a + "qkv_proj."
    s = {
        p + "input_layernorm.weight": (H,),
        p + "post_attention_layernorm.weight": (H,),
        qkv + "q_proj.weight": (cfg.q_dim, H),
        qkv + "k_proj.weight": (cfg.kv_dim, H),
        qkv + "v_proj_current.weight": (cfg.kv_dim // 2, H),
        qkv + "v_proj_delayed.weight": (cfg.kv_dim // 2, H),
        qkv + "conv_qk_depthwise.weight": (C, 1, 2),
        qkv + "conv_qk_depthwise.bias": (C,),
        qkv + "conv_qk_grouped.weight": (C, D, 2),
        qkv + "conv_qk_grouped.bias": (C,),
        a + "qk_norm.temp": (cfg.num_key_value_heads,),
        a + "o_proj.weight": (H, cfg.q_dim),
    }
    if cfg.attention_bias:
        s.update({qkv + "q_proj.bias": (cfg.q_dim,), qkv + "k_proj.bias": (cfg.kv_dim,),
                  qkv + "v_proj_current.bias": (cfg.kv_dim // 2,), qkv + "v_proj_delayed.bias": (cfg.kv_dim // 2,),
                  a + "o_proj.bias": (H,)})
    for scale in ("post_attention_residual_scale", "post_mlp_residual_scale"):
        for leaf in ("hidden_states_bias", "hidden_states_scale", "residual_bias", "residual_scale"):
            s[f"{p}{scale}.{leaf}"] = (H,)
    g = p + "mlp.gate."
    s.update({
        g + "down_proj.weight": (R, H), g + "down_proj.bias": (R,),
        g + "router_mlp.norm.weight": (R,),
        g + "router_mlp.fc1.weight": (R, R), g + "router_mlp.fc1.bias": (R,),
        g + "router_mlp.fc2.weight": (R, R), g + "router_mlp.fc2.bias": (R,),
        g + "router_mlp.out_proj.weight": (E + 1, R),
        g + "balancing_biases": (E + 1,),
        p + "mlp.experts.gate_up_proj": (E, 2 * I, H),
        p + "mlp.experts.down_proj": (E, H, I),
    })
    if i > 0:
        s[g + "router_states_scale"] = (R,)
    return s


def parameter_shapes(cfg: ZayaConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a checkpoint of ``cfg`` holds, by its transformers name, with its shape.

    ``lm_head.weight`` is listed only when the embedding is not tied (a tied checkpoint may still hold
    it; the loader then ignores it, as transformers does). ``*.balancing_biases`` are fp32 buffers, the
    rest parameters of the model dtype.
    """
    H, V = cfg.hidden_size, cfg.vocab_size
    s = {
        "model.embed_tokens.weight": (V, H),
        "model.input_hidden_states_bias": (H,),
        "model.input_hidden_states_scale": (H,),
        "model.norm.weight": (H,),
    }
    for i in range(cfg.num_hidden_layers):
        s.update(_layer_shapes(cfg, i))
    if not cfg.tie_word_embeddings:
        s["lm_head.weight"] = (V, H)
    if cfg.lm_head_bias:
        s["lm_head.bias"] = (V,)
    return s


def checkpoint_tensor_files(directory: str | os.PathLike) -> dict[str, str]:
    """Map each tensor name of the checkpoint in ``directory`` to the safetensors file holding it.

    Uses ``model.safetensors.index.json`` when present (sharded), else ``model.safetensors``. Raises
    FileNotFoundError when neither exists (naming what the directory holds) or a listed shard is missing,
    and CheckpointError for an index entry that is not a plain relative file name (absolute, ``..``): the
    index names files of the directory, never elsewhere. Symlinks the directory itself holds are followed
    (whoever wrote the directory chose them: the Hugging Face hub cache links ``snapshots/<revision>/``
    files into ``blobs/``, and users link shards from other disks).
    """
    directory = os.fspath(directory)
    index = os.path.join(directory, INDEX_FILE)
    single = os.path.join(directory, SINGLE_FILE)
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            try:
                weight_map = json.load(f)["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{index}: not a safetensors index with a weight_map ({exc})") from exc
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: weight_map must map tensor names to file names, got {weight_map!r}")
        files = {}
        for name, shard in weight_map.items():
            what = f"{index} lists {name!r} in {shard!r}"
            if (not isinstance(shard, str) or not shard or os.path.isabs(shard)
                    or ".." in shard.replace("\\", "/").split("/")):
                raise CheckpointError(f"{what}: shards must be files of the checkpoint directory, named relative "
                                      f"to it (no absolute path, no '..')")
            path = os.path.join(directory, shard)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{index} lists {name!r} in {shard}, which does not exist")
            files[name] = path
        return files
    if os.path.isfile(single):
        with _safetensors(single) as f:
            return {name: single for name in f.keys()}
    have = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    hint = " (PyTorch .bin checkpoints are not supported: convert them to safetensors)" if any(
        h.endswith(".bin") for h in have) else ""
    raise FileNotFoundError(f"{directory} holds neither {SINGLE_FILE} nor {INDEX_FILE}{hint}; it holds {have}")


def _fmt(names: Iterable[str], limit: int = 12) -> str:
    names = list(names)
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_checkpoint_names(
    where: str,
    targets: Mapping[str, torch.Tensor],
    shapes: Mapping[str, tuple[int, ...]],
    *,
    dtypes: Mapping[str, str | torch.dtype] | None = None,
    ignore: Iterable[str] = (),
    absent_in_shard: Iterable[str] = (),
) -> None:
    """Raise a ``CheckpointError`` naming every missing, unexpected, mis-shaped and non-floating tensor of a
    checkpoint (``shapes``: name -> shape of what it holds; ``dtypes``: name -> its stored dtype, a
    safetensors dtype name or a torch dtype) against the model's ``targets`` (name -> tensor), or, for a
    checkpoint in Zyphra's legacy alternating-layer layout, the error of :func:`check_not_legacy`.
    ``where`` names the checkpoint in the message."""
    check_not_legacy(names=shapes)
    ignore = set(ignore)
    absent_in_shard = list(absent_in_shard)
    missing = [n for n in targets if n not in shapes]
    unexpected = [n for n in shapes if n not in targets and n not in ignore]
    misshaped = [f"{n} (expected {list(targets[n].shape)}, got {list(shapes[n])})"
                 for n in targets if n in shapes and tuple(targets[n].shape) != tuple(shapes[n])]
    dtypes = dtypes or {}
    not_float = [f"{n} ({dtypes[n]})" for n in targets if n in dtypes and not _floating(dtypes[n])]
    problems = []
    if absent_in_shard:
        problems.append(f"listed by the index but absent from their shard: {_fmt(absent_in_shard)}")
    if missing:
        problems.append(f"missing tensors: {_fmt(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_fmt(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped tensors: {_fmt(misshaped)}")
    if not_float:
        problems.append(f"tensors stored with a non-floating dtype (the weights are floating point): "
                        f"{_fmt(not_float)}")
    if problems:
        raise CheckpointError(f"checkpoint {where} does not match its config: " + "; ".join(problems))


def load_tensors_into(
    directory: str | os.PathLike,
    targets: Mapping[str, torch.Tensor],
    *,
    ignore: Iterable[str] = (),
    progress: bool | None = None,
) -> None:
    """Copy each checkpoint tensor of ``directory`` into ``targets[name]`` (converting dtype and device).

    First every name, shape and stored dtype is checked against ``targets`` from the safetensors headers
    alone; a ``CheckpointError`` then lists all missing, unexpected, mis-shaped and non-floating (integer,
    bool: they would convert silently) tensors, and nothing is read. A corrupt or truncated file raises a
    ``CheckpointError`` naming it.
    Then each file is memory-mapped (``safe_open``) and its tensors are copied one at a time, so host
    memory holds at most one tensor beyond the destinations. ``ignore``: names that may be present and
    are skipped (e.g. a tied ``lm_head.weight``). ``progress``: a tqdm bar (default: for checkpoints of
    256 MiB or more).
    """
    files = checkpoint_tensor_files(directory)
    ignore = set(ignore)
    by_file: dict[str, list[str]] = {}
    for name, path in files.items():
        by_file.setdefault(path, []).append(name)

    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    nbytes = 0
    absent_in_shard = []
    for path, names in by_file.items():
        with _safetensors(path) as f:
            keys = set(f.keys())
            for name in names:
                if name not in keys:
                    absent_in_shard.append(f"{name} (in {os.path.basename(path)})")
                    continue
                sl = f.get_slice(name)
                shapes[name] = tuple(sl.get_shape())
                dtypes[name] = sl.get_dtype()
                nbytes += math.prod(shapes[name]) * _DTYPE_BYTES.get(dtypes[name], 4)
    check_checkpoint_names(os.fspath(directory), targets, shapes, dtypes=dtypes, ignore=ignore,
                           absent_in_shard=absent_in_shard)

    if progress is None:
        progress = nbytes >= PROGRESS_MIN_BYTES
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=nbytes, unit="B", unit_scale=True, unit_divisor=1024, desc="loading checkpoint")
    try:
        with torch.no_grad():
            for path, names in by_file.items():
                with _safetensors(path) as f:
                    for name in names:
                        if name not in targets:
                            continue
                        t = f.get_tensor(name)
                        targets[name].copy_(t)
                        if bar is not None:
                            bar.update(t.numel() * t.element_size())
                        del t
    finally:
        if bar is not None:
            bar.close()


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


# --------------------------------------------------------------------------------------------------
# Writing (random demo/test checkpoints)
# --------------------------------------------------------------------------------------------------


def random_state_dict(cfg: ZayaConfig, seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """A random checkpoint of ``cfg`` by transformers names: every parameter drawn at a sensible scale
    (norm weights and branch scales near 1, residual scales near 0.5, small biases, a nonzero key temperature,
    fan-in scaled matrices, router output peaked enough that both experts and the skip class are chosen), so that a
    random model exercises every op. ``balancing_biases`` are fp32, the rest ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in parameter_shapes(cfg).items():
        leaf = name.rsplit(".", 1)[-1]
        r = torch.randn(shape, generator=gen)
        if name.endswith("balancing_biases"):
            t = 0.05 * r
            t[-1] = 0.1
            out[name] = t.float()
            continue
        if leaf == "residual_scale":  # < 1: the residual forgets the input embedding over the layers, so a
            t = 0.5 + 0.05 * r           # random model with a tied head does not just repeat its last token
        elif leaf in ("hidden_states_scale", "input_hidden_states_scale", "router_states_scale") \
                or (len(shape) == 1 and "norm" in name):
            t = 1.0 + 0.1 * r
        elif leaf == "temp":
            t = 0.75 + 0.5 * torch.rand(shape, generator=gen)
        elif len(shape) == 1:
            t = 0.05 * r
        elif "embed_tokens" in name or name == "lm_head.weight":
            t = r
        elif "out_proj" in name:
            t = 3.0 * r / shape[-1] ** 0.5
        elif "conv_qk_depthwise" in name:
            t = 0.7 * r
        else:
            fan_in = shape[-1] * (shape[-2] if len(shape) == 3 and "conv" in name else 1)
            t = r / fan_in ** 0.5
        out[name] = t.to(dtype)
    return out


def save_checkpoint(
    directory: str | os.PathLike,
    cfg: ZayaConfig,
    tensors: Mapping[str, torch.Tensor],
    max_shard_bytes: int | None = None,
) -> list[str]:
    """Write ``config.json`` and the tensors as ``model.safetensors``, or, with ``max_shard_bytes``, as
    ``model-0000i-of-0000n.safetensors`` shards plus ``model.safetensors.index.json`` (the transformers
    layout). Returns the files written."""
    from safetensors.torch import save_file

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    written = [cfg.save(directory)]
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    if max_shard_bytes is None:
        path = os.path.join(directory, SINGLE_FILE)
        save_file(tensors, path, metadata={"format": "pt"})
        return written + [path]
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        b = t.numel() * t.element_size()
        if shards[-1] and size + b > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += b
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(directory, fname), metadata={"format": "pt"})
        written.append(os.path.join(directory, fname))
        weight_map.update(dict.fromkeys(shard, fname))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = os.path.join(directory, INDEX_FILE)
    with open(index, "w", encoding="utf-8") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
    return written + [index]
