"""The main job, ``python -m zaya_ops``: random model -> safetensors checkpoint -> load -> generate."""

from __future__ import annotations

import re

from zaya_ops.__main__ import main


def test_main_job_builds_saves_loads_and_generates(capsys):
    assert main(["--device", "cpu", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "model.safetensors" in out and "loaded ZayaForCausalLM(4 layers" in out
    assert re.search(r"generated 4 tokens \(length\): \[\d+, \d+, \d+, \d+\]", out)
    assert re.search(r"prefill: 16 tokens in [\d.]+ ms = [\d,]+ tok/s", out)
    assert re.search(r"decode:  3 steps in [\d.]+ ms = [\d,.]+ tok/s", out)
    for op in ("rms_norm", "residual_scale_rmsnorm", "cca_qkv", "cca_attention", "router", "moe_top1"):
        assert re.search(rf"  {op} +(kernel \(cpu\)|reference \()", out), op
    # bf16: the kernels (fp32 attention probabilities) may differ from the bf16 reference by more than
    # the reference differs from itself, so both are held against the fp32 reference model instead.
    m = re.search(r"kernels' max \|logit diff\| (\S+), bfloat16 reference's (\S+)", out)
    assert m and float(m.group(1)) <= 2 * float(m.group(2)) + 0.05, m and m.group(0)


def test_main_job_fp32_matches_reference(capsys):
    assert main(["--device", "cpu", "--dtype", "fp32", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    m = re.search(r"vs reference backend: max \|logit diff\| (\S+) .* generated tokens identical", out)
    assert m and float(m.group(1)) < 1e-3, out


def test_main_job_prompt_and_checkpoint(tmp_path, capsys):
    import torch

    from zaya_ops.model import ZayaConfig, random_state_dict, save_checkpoint

    cfg = ZayaConfig(vocab_size=40, hidden_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                     head_dim=32, num_experts=2, moe_intermediate_size=16, router_hidden_size=8,
                     max_position_embeddings=64, eos_token_id=None)
    save_checkpoint(tmp_path, cfg, random_state_dict(cfg, dtype=torch.float32))
    assert main(["--device", "cpu", "--checkpoint", str(tmp_path), "--prompt", "1, 2, 3", "--max-new-tokens", "3",
                 "--dtype", "fp32", "--temperature", "0.8", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "prompt: 3 tokens [1, 2, 3]" in out and "generated 3 tokens" in out


def test_main_job_text_prompt_with_tokenizer(tmp_path, capsys):
    """--checkpoint with a tokenizer.json: the prompt is text, encoded and decoded with `tokenizers`."""
    import pytest
    import torch

    tokenizers = pytest.importorskip("tokenizers")
    from zaya_ops.model import ZayaConfig, random_state_dict, save_checkpoint

    words = [f"w{i}" for i in range(38)] + ["hello", "world"]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="w0"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.decoder = tokenizers.decoders.WordPiece()  # joins tokens with spaces
    tok.save(str(tmp_path / "tokenizer.json"))
    cfg = ZayaConfig(vocab_size=40, hidden_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                     head_dim=32, num_experts=2, moe_intermediate_size=16, router_hidden_size=8,
                     max_position_embeddings=64, eos_token_id=None)
    save_checkpoint(tmp_path, cfg, random_state_dict(cfg, dtype=torch.float32))
    assert main(["--device", "cpu", "--checkpoint", str(tmp_path), "--prompt", "hello world",
                 "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr().out
    assert "prompt: 2 tokens [38, 39]" in out
    assert re.search(r"text: 'w\d+ w\d+ w\d+'|text: '(hello|world|w\d+)", out)
