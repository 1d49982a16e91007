"""Helpers for parity tests against transformers (which must be installed to use them): small random
transformers ``ZayaForCausalLM`` models with every parameter randomised, saved as safetensors
checkpoints that :meth:`ZayaForCausalLM.from_pretrained` loads.

transformers initialises residual scales to 1, biases and ``qk_norm.temp`` to 0, ``router_states_scale`` to 1
and ``balancing_biases`` to (0, ..., 0, -1); random values everywhere keep mistakes in any of them visible.
"""

from __future__ import annotations

import os

import torch

from ..tolerances import max_scaled_error, model_tolerance as tolerance  # noqa: F401  (the shared rules)

__all__ = ["make_hf_model", "randomise_hf_model", "save_hf_model", "tolerance", "max_scaled_error"]


def randomise_hf_model(model, seed: int = 0, skip_bias: float = 0.15) -> None:
    """Give every parameter and ``balancing_biases`` of a transformers ZayaForCausalLM a random value of a
    sensible scale (drawn in fp32, rounded to the parameter dtype). ``skip_bias`` is the skip class's
    balancing bias (so that it wins for a share of the tokens, not all)."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(shape):
        return torch.randn(shape, generator=gen)

    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("hidden_states_scale", "residual_scale", "input_hidden_states_scale",
                        "router_states_scale") or (p.dim() == 1 and "norm" in name):
                p.copy_(1.0 + 0.25 * rnd(p.shape))
            elif leaf == "temp":
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            elif p.dim() == 1:
                p.copy_(0.1 * rnd(p.shape))
            elif "embed_tokens" in name or name == "lm_head.weight":
                p.copy_(rnd(p.shape))
            elif "router_mlp.out_proj" in name:
                p.copy_(3.0 * rnd(p.shape) / p.shape[-1] ** 0.5)
            elif "conv_qk_depthwise" in name:
                p.copy_(0.7 * rnd(p.shape))
            else:
                fan_in = p.shape[-1] * (p.shape[-2] if p.dim() == 3 and "conv" in name else 1)
                p.copy_(rnd(p.shape) / fan_in ** 0.5)
        for layer in model.model.layers:
            gate = layer.mlp.gate
            bb = 0.05 * rnd(gate.balancing_biases.shape)
            bb[-1] = skip_bias
            gate.balancing_biases.copy_(bb)


def make_hf_model(dtype: torch.dtype = torch.float32, seed: int = 0, *, vocab_size: int = 96, hidden_size: int = 64,
                  num_hidden_layers: int = 2, num_attention_heads: int = 4, num_key_value_heads: int = 2,
                  head_dim: int = 16, num_experts: int = 4, moe_intermediate_size: int = 32,
                  router_hidden_size: int = 16, max_position_embeddings: int = 512, attention_bias: bool = False,
                  tie_word_embeddings: bool = True, attn_implementation: str = "eager", **extra):
    """A small random transformers ``ZayaForCausalLM`` in ``dtype`` (eval mode, eager attention and experts
    by default), every parameter randomised by :func:`randomise_hf_model`.

    Built as ``from_pretrained(dtype=...)`` builds it: under that default dtype, so the buffers created
    explicitly in fp32 (rotary ``inv_freq``, ``balancing_biases``) stay fp32.
    """
    from transformers import ZayaConfig as HFZayaConfig
    from transformers.models.zaya.modeling_zaya import ZayaForCausalLM as HFZayaForCausalLM

    config = HFZayaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads, num_key_value_heads=num_key_value_heads, head_dim=head_dim,
        num_experts=num_experts, moe_intermediate_size=moe_intermediate_size, router_hidden_size=router_hidden_size,
        max_position_embeddings=max_position_embeddings, attention_bias=attention_bias,
        tie_word_embeddings=tie_word_embeddings, bos_token_id=None, eos_token_id=None, pad_token_id=0,
        attn_implementation=attn_implementation, experts_implementation="eager", **extra,
    )
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = HFZayaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(default)
    randomise_hf_model(model, seed)
    return model


def save_hf_model(model, directory: str | os.PathLike, max_shard_size: str | int | None = None) -> str:
    """``save_pretrained`` as safetensors (sharded when ``max_shard_size`` is given); returns the directory."""
    kw = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(os.fspath(directory), safe_serialization=True, **kw)
    return os.fspath(directory)
