"""ZayaConfig validation and the safetensors loader: single-file and sharded checkpoints (ours and
transformers'), tied/untied heads, and errors that name the missing, unexpected or mis-shaped tensors."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from zaya_ops import ZayaConfig, ZayaForCausalLM
from zaya_ops.model import CheckpointError, parameter_shapes, random_state_dict, save_checkpoint

SMALL = dict(vocab_size=80, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             head_dim=16, num_experts=3, moe_intermediate_size=32, router_hidden_size=16, max_position_embeddings=128,
             eos_token_id=None, bos_token_id=None)


# Tiny matrices: one thread is faster, and immune to a busy machine's oversubscription.
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def hf_config(**changes):
    d = ZayaConfig(**SMALL).to_dict()
    d.update(changes)
    return d


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes,match", [
    ({"model_type": "llama"}, "model_type 'llama'"),
    ({"num_experts_per_tok": 2}, "num_experts_per_tok"),
    ({"layer_types": ["hybrid", "hybrid_sliding"], "sliding_window": 64}, "hybrid_sliding"),
    ({"layer_types": ["hybrid"]}, "layer_types has 1 entries for 2 layers"),
    ({"rope_parameters": {"hybrid": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}}, "rope_type 'yarn'"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling"),
    ({"head_dim": 15}, "head_dim"),
    ({"partial_rotary_factor": 0.1, "rope_parameters": None}, "rotary dim 1"),
    ({"cca_time0": 3}, "cca_time0"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"num_attention_heads": 3}, "multiple of num_key_value_heads"),
    ({"hidden_size": 0}, "hidden_size"),
    ({"quantization_config": {"quant_method": "fp8"}}, "quantization_config"),
    ({"dtype": "int8"}, "dtype"),
    # values of the wrong JSON type: the field and the value named (a bool is not an int)
    ({"rms_norm_eps": "1e-5"}, r"rms_norm_eps must be a finite number, got '1e-5'"),
    ({"rms_norm_eps": None}, r"rms_norm_eps must be a finite number, got None"),
    ({"rms_norm_eps": float("inf")}, r"rms_norm_eps must be a finite number, got inf"),
    ({"rms_norm_eps": True}, r"rms_norm_eps must be a finite number, got True"),
    ({"rope_parameters": {"hybrid": {"rope_type": "default", "rope_theta": "abc"}}},
     r"rope_theta must be a finite number, got 'abc'"),
    ({"rope_parameters": None, "rope_theta": float("nan")}, r"rope_theta must be a finite number, got nan"),
    ({"rope_parameters": {"hybrid": "default"}}, r"rope_parameters.hybrid must be an object, got 'default'"),
    ({"rope_parameters": None, "partial_rotary_factor": "0.5"}, r"partial_rotary_factor must be a finite number"),
    ({"num_hidden_layers": True}, r"num_hidden_layers must be an integer, got True"),
    ({"num_hidden_layers": True, "layer_types": None}, r"num_hidden_layers must be an integer, got True"),
    ({"hidden_size": 64.0}, r"hidden_size must be an integer, got 64.0"),
    ({"num_experts_per_tok": True}, r"num_experts_per_tok must be an integer, got True"),
    ({"cca_time1": "2"}, r"cca_time1 must be an integer, got '2'"),
    ({"tie_word_embeddings": "false"}, r"tie_word_embeddings must be true or false, got 'false'"),
    ({"attention_bias": 0}, r"attention_bias must be true or false, got 0"),
    ({"eos_token_id": "106"}, r"eos_token_id must be an integer, a list of integers or null, got '106'"),
    ({"eos_token_id": [1, True]}, r"eos_token_id must be .*, got \[1, True\]"),
    ({"pad_token_id": 0.0}, r"pad_token_id must be an integer or null, got 0.0"),
    ({"hidden_act": None}, r"hidden_act must be a string, got None"),
    ({"layer_types": "hybrid"}, r"layer_types must be a list of strings, got 'hybrid'"),
])
def test_config_rejects(changes, match):
    with pytest.raises(ValueError, match=match):
        ZayaConfig.from_dict(hf_config(**changes))


def test_config_json_special_floats_fail_at_load(tmp_path):
    """``Infinity``/``NaN`` literals (Python's json reads them) are refused when config.json is read,
    not at the first forward; a JSON integer where a float belongs is fine."""
    for value, shown in (("Infinity", "inf"), ("NaN", "nan"), ("-Infinity", "-inf")):
        text = json.dumps(hf_config()).replace('"rms_norm_eps": 1e-05', f'"rms_norm_eps": {value}')
        assert value in text
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(ValueError, match=f"rms_norm_eps must be a finite number, got {shown}$"):
            ZayaForCausalLM.from_pretrained(tmp_path)
    c = ZayaConfig.from_dict(hf_config(rms_norm_eps=1, rope_parameters=None, rope_theta=10000))
    assert (c.rms_norm_eps, c.rope_theta) == (1.0, 10000.0) and isinstance(c.rope_theta, float)
    assert ZayaConfig.from_dict(c.to_dict()) == c


def test_config_reads_transformers_forms():
    # transformers' nested rope dict (+ the hub's stray top-level rope_type), legacy flat keys, defaults
    d = hf_config()
    d["rope_parameters"] = {"rope_type": "default", "hybrid": {"rope_type": "default", "rope_theta": 1e4,
                                                               "partial_rotary_factor": 0.25},
                            "hybrid_sliding": {"rope_type": "default", "rope_theta": 1e4}}
    c = ZayaConfig.from_dict(d)
    assert (c.rope_theta, c.partial_rotary_factor, c.rotary_dim) == (1e4, 0.25, 4)
    d = hf_config(rope_parameters=None, rope_theta=123.0)
    assert ZayaConfig.from_dict(d).rope_theta == 123.0
    c = ZayaConfig.from_dict({"model_type": "zaya", "eos_token_id": [1, 106], "torch_dtype": "bfloat16"})
    assert c.hidden_size == 2048 and c.num_hidden_layers == 40 and c.rotary_dim == 64 and c.vocab_size == 262272
    assert c.eos_token_ids == (1, 106) and c.torch_dtype == torch.bfloat16 and c.kernel_head_dim_ok()
    assert ZayaConfig.from_dict(c.to_dict()) == c


def test_config_round_trips_through_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    c = ZayaConfig(**SMALL, attention_bias=True, rope_theta=1e5)
    c.save(tmp_path)
    hf = transformers.AutoConfig.from_pretrained(tmp_path)
    assert hf.model_type == "zaya" and hf.head_dim == 16 and hf.attention_bias
    assert hf.rope_parameters["hybrid"]["rope_theta"] == 1e5
    hf.save_pretrained(tmp_path / "again")
    assert ZayaConfig.from_pretrained(tmp_path / "again") == c


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def _assert_same_weights(a: ZayaForCausalLM, b: ZayaForCausalLM) -> None:
    sa, sb = a.hf_state_dict(), b.hf_state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_single_and_sharded_checkpoints_load_the_same(tmp_path, tied):
    cfg = ZayaConfig(**SMALL, tie_word_embeddings=tied, attention_bias=not tied)
    sd = random_state_dict(cfg, seed=3)
    save_checkpoint(tmp_path / "one", cfg, sd)
    files = save_checkpoint(tmp_path / "many", cfg, sd, max_shard_bytes=20_000)
    assert sum(f.endswith(".safetensors") for f in files) > 3
    assert os.path.isfile(tmp_path / "many" / "model.safetensors.index.json")
    one = ZayaForCausalLM.from_pretrained(tmp_path / "one", dtype=torch.float32)
    many = ZayaForCausalLM.from_pretrained(tmp_path / "many", dtype="fp32", progress=True)
    _assert_same_weights(one, many)
    for name, t in one.hf_state_dict().items():
        assert torch.equal(t, sd[name].float()), name
    assert (one.lm_head is one.embed) == tied
    # bf16 by default (config dtype absent -> bf16); balancing biases stay fp32
    m = ZayaForCausalLM.from_pretrained(tmp_path / "many")
    assert m.embed.dtype == torch.bfloat16 and m.layers[0].balancing_biases.dtype == torch.float32


def test_transformers_sharded_checkpoint_and_our_checkpoint_in_transformers(tmp_path):
    """transformers' own sharded save_pretrained output loads; transformers loads our checkpoint writer's
    output and computes the same logits (ties the parameter names and the config both ways)."""
    pytest.importorskip("transformers")
    from transformers.models.zaya.modeling_zaya import ZayaForCausalLM as HF

    from zaya_ops.model.testing import make_hf_model, save_hf_model

    hf = make_hf_model(torch.float32, seed=5, vocab_size=80)
    save_hf_model(hf, tmp_path / "hf", max_shard_size="40KB")
    assert os.path.isfile(tmp_path / "hf" / "model.safetensors.index.json")
    ours = ZayaForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    ids = torch.randint(0, 80, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = hf(ids).logits[0]
    torch.testing.assert_close(ours(ids, all_logits=True).logits, want, rtol=2e-5, atol=2e-5)

    cfg = ZayaConfig(**SMALL)
    save_checkpoint(tmp_path / "ours", cfg, random_state_dict(cfg, seed=1, dtype=torch.float32))
    mine = ZayaForCausalLM.from_pretrained(tmp_path / "ours", dtype=torch.float32)
    theirs = HF.from_pretrained(tmp_path / "ours", dtype=torch.float32, attn_implementation="eager",
                                experts_implementation="eager").eval()
    for i, layer in enumerate(theirs.model.layers):  # transformers resets the last stored balancing bias
        layer.mlp.gate.balancing_biases.copy_(mine.layers[i].balancing_biases)
    with torch.no_grad():
        want = theirs(ids).logits[0]
    torch.testing.assert_close(mine(ids, all_logits=True).logits, want, rtol=2e-5, atol=2e-5)


@pytest.fixture
def checkpoint(tmp_path):
    cfg = ZayaConfig(**SMALL)
    save_checkpoint(tmp_path, cfg, random_state_dict(cfg, seed=0))
    return tmp_path


def _edit(path, fn):
    f = os.path.join(path, "model.safetensors")
    sd = load_file(f)
    fn(sd)
    save_file(sd, f, metadata={"format": "pt"})


def test_missing_unexpected_misshaped_are_named(checkpoint):
    def change(sd):
        del sd["model.layers.1.mlp.gate.router_states_scale"]
        del sd["model.norm.weight"]
        sd["model.layers.0.mlp.gate.router_states_scale"] = torch.ones(16)  # layer 0 has none
        sd["model.layers.1.self_attn.qk_norm.temp"] = torch.ones(3)
        sd["model.layers.0.mlp.experts.down_proj"] = sd["model.layers.0.mlp.experts.down_proj"][:, :, :-1].clone()

    _edit(checkpoint, change)
    with pytest.raises(CheckpointError) as e:
        ZayaForCausalLM.from_pretrained(checkpoint)
    msg = str(e.value)
    assert isinstance(e.value, ValueError)
    assert "missing tensors: model.norm.weight, model.layers.1.mlp.gate.router_states_scale" in msg or (
        "missing tensors:" in msg and "model.norm.weight" in msg and "layers.1.mlp.gate.router_states_scale" in msg)
    assert "unexpected tensors: model.layers.0.mlp.gate.router_states_scale" in msg
    assert "model.layers.1.self_attn.qk_norm.temp (expected [2], got [3])" in msg
    assert "model.layers.0.mlp.experts.down_proj (expected [3, 64, 32], got [3, 64, 31])" in msg


def test_untied_head_must_be_present_and_tied_head_is_ignored(checkpoint):
    cfg = json.loads((checkpoint / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (checkpoint / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing tensors: lm_head.weight"):
        ZayaForCausalLM.from_pretrained(checkpoint)
    cfg["tie_word_embeddings"] = True
    (checkpoint / "config.json").write_text(json.dumps(cfg))
    _edit(checkpoint, lambda sd: sd.update({"lm_head.weight": torch.zeros(80, 64, dtype=torch.bfloat16)}))
    m = ZayaForCausalLM.from_pretrained(checkpoint)
    assert m.lm_head is m.embed and m.embed.abs().sum() > 0


def test_loader_errors(tmp_path, checkpoint):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        ZayaForCausalLM.from_pretrained(tmp_path / "nothing")
    (tmp_path / "bin").mkdir()
    ZayaConfig(**SMALL).save(tmp_path / "bin")
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="not supported"):
        ZayaForCausalLM.from_pretrained(tmp_path / "bin")
    cfg = json.loads((checkpoint / "config.json").read_text())
    cfg["model_type"] = "mixtral"
    (checkpoint / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="model_type 'mixtral'"):
        ZayaForCausalLM.from_pretrained(checkpoint)
    # a shard listed by the index but not on disk
    files = save_checkpoint(tmp_path / "sh", ZayaConfig(**SMALL), random_state_dict(ZayaConfig(**SMALL)),
                            max_shard_bytes=50_000)
    os.remove([f for f in files if f.endswith("safetensors")][-1])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ZayaForCausalLM.from_pretrained(tmp_path / "sh")


def test_non_floating_tensors_are_refused(checkpoint):
    """Integer or bool tensors would convert silently into the float weights: refused from the header,
    naming tensor and dtype; the fp32 balancing biases and any floating dtype load."""
    def change(sd):
        sd["model.norm.weight"] = sd["model.norm.weight"].to(torch.int64)
        sd["model.layers.1.mlp.gate.balancing_biases"] = torch.ones(4, dtype=torch.bool)
        sd["model.layers.0.input_layernorm.weight"] = sd["model.layers.0.input_layernorm.weight"].half()
        sd["model.layers.0.mlp.gate.balancing_biases"] = sd["model.layers.0.mlp.gate.balancing_biases"].double()

    _edit(checkpoint, change)
    with pytest.raises(CheckpointError, match=r"non-floating dtype .*: model.norm.weight \(I64\), "
                                              r"model.layers.1.mlp.gate.balancing_biases \(BOOL\)$"):
        ZayaForCausalLM.from_pretrained(checkpoint)
    _edit(checkpoint, lambda sd: sd.update({"model.norm.weight": torch.ones(64, dtype=torch.bfloat16),
                                            "model.layers.1.mlp.gate.balancing_biases": torch.zeros(4)}))
    m = ZayaForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    assert m.layers[0].balancing_biases.dtype == torch.float32 and torch.equal(m.hf_state_dict()["model.norm.weight"], torch.ones(64))


def _sharded(tmp_path):
    cfg = ZayaConfig(**SMALL)
    d = tmp_path / "ckpt"
    files = save_checkpoint(d, cfg, random_state_dict(cfg), max_shard_bytes=50_000)
    index = d / "model.safetensors.index.json"
    return d, index, json.loads(index.read_text()), sorted(f for f in files if f.endswith(".safetensors"))


def test_shards_outside_the_checkpoint_are_refused(tmp_path):
    """An index entry may name only files inside the checkpoint directory: '../x' and absolute paths are
    refused (even when the file there is a valid shard). Symlinks that the directory itself holds are its
    writer's choice and are followed (shards linked from another disk, the hub cache's blobs)."""
    d, index, idx, shards = _sharded(tmp_path)
    name = next(iter(idx["weight_map"]))
    victim = idx["weight_map"][name]
    (tmp_path / "other").mkdir()
    outside = tmp_path / "other" / victim
    os.replace(d / victim, outside)
    for entry in (f"../other/{victim}", str(outside), f"sub/../../other/{victim}"):
        index.write_text(json.dumps({"weight_map": {**idx["weight_map"], name: entry}}))
        with pytest.raises(CheckpointError, match=r"shards must be files of the checkpoint directory"):
            ZayaForCausalLM.from_pretrained(d)
    index.write_text(json.dumps(idx))
    os.symlink(outside, d / victim)  # the directory links a shard kept elsewhere: followed
    ZayaForCausalLM.from_pretrained(d)


def test_hub_cache_layout_loads(tmp_path):
    """The Hugging Face hub cache keeps files in <repo>/blobs/ and links them from
    <repo>/snapshots/<revision>/: those links are followed."""
    d, index, idx, shards = _sharded(tmp_path)
    repo = tmp_path / "models--zyphra--tiny"
    snap = repo / "snapshots" / "abc123"
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for i, f in enumerate(os.listdir(d)):
        os.replace(d / f, repo / "blobs" / f"blob{i}")
        os.symlink(os.path.join("..", "..", "blobs", f"blob{i}"), snap / f)
    m = ZayaForCausalLM.from_pretrained(snap, dtype=torch.float32)
    assert torch.equal(m.embed, random_state_dict(ZayaConfig(**SMALL))["model.embed_tokens.weight"].float())


def test_corrupt_or_truncated_files_are_named(tmp_path, checkpoint):
    f = checkpoint / "model.safetensors"
    raw = f.read_bytes()
    for data in (raw[:-100], raw[:5], b"not a safetensors file" * 4, b""):
        f.write_bytes(data)
        with pytest.raises(CheckpointError, match=rf"{f} is not a valid safetensors file \(corrupt or truncated\?\)"):
            ZayaForCausalLM.from_pretrained(checkpoint)
    d, index, idx, shards = _sharded(tmp_path)
    with open(shards[1], "r+b") as fh:
        fh.truncate(os.path.getsize(shards[1]) - 8)
    with pytest.raises(CheckpointError, match=rf"{shards[1]} is not a valid safetensors file"):
        ZayaForCausalLM.from_pretrained(d)
    index.write_text(json.dumps({"weight_map": ["model.norm.weight"]}))
    with pytest.raises(CheckpointError, match=r"weight_map must map tensor names to file names"):
        ZayaForCausalLM.from_pretrained(d)


def test_legacy_alternating_layer_checkpoints_are_refused_clearly(checkpoint):
    """Zyphra's legacy layout (attention and MoE in alternate layers) is named as such, with what to do,
    whether the config or only the tensor names give it away."""
    from zaya_ops.model import LegacyCheckpointError

    cfg = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**cfg, "zaya_layers": ["a", 3, "a", 3]}))
    with pytest.raises(LegacyCheckpointError, match="legacy alternating-layer layout .config.json has zaya_layers"):
        ZayaForCausalLM.from_pretrained(checkpoint)
    (checkpoint / "config.json").write_text(json.dumps(cfg))

    def legacy_names(sd):
        sd["model.layers.1.zaya_block.router.down_proj.weight"] = sd.pop("model.layers.1.mlp.gate.down_proj.weight")

    _edit(checkpoint, legacy_names)
    with pytest.raises(LegacyCheckpointError, match="zaya_block") as e:
        ZayaForCausalLM.from_pretrained(checkpoint)
    assert isinstance(e.value, ValueError) and "Use a checkpoint published in that layout" in str(e.value)


def test_parameter_table_matches_transformers():
    """Our parameter names and shapes are exactly transformers' state_dict (tied and untied, biases)."""
    pytest.importorskip("transformers")
    from zaya_ops.model.testing import make_hf_model

    for kw in (dict(), dict(attention_bias=True, tie_word_embeddings=False, lm_head_bias=True)):
        hf = make_hf_model(torch.float32, vocab_size=80, **kw)
        cfg = ZayaConfig.from_dict(hf.config.to_dict())
        want = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
        if cfg.tie_word_embeddings:
            want.pop("lm_head.weight")
        assert parameter_shapes(cfg) == want
