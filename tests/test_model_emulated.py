"""The reference model end to end on the GPU kernels, under the SIMT emulator (CI has no GPU).

With ``torch.ops.zaya`` swapped for an emulator namespace (tests/conftest.py: ``use_target``), the model's
``backend="ops"`` runs every op through the CUDA (emu32) or CDNA (emu64) kernel bodies: a packed prefill
of two prompts and cached decode through ``generate``, then the same sequences teacher-forced in one
prefill. Checks: every op ran a kernel; decode through the paged cache picks the tokens the full prefill
predicts; and the bf16 logits are as close to the fp32 reference model as the bf16 reference backend is
(at most twice its error, as the main job holds the CPU kernels to).
"""

from __future__ import annotations

import pytest
import torch

from conftest import EMULATORS, HOPPER_TARGETS, use_target
from zaya_ops.model import ZayaConfig, ZayaForCausalLM, random_state_dict, save_checkpoint

CONFIG = dict(vocab_size=128, hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              head_dim=64, num_experts=4, moe_intermediate_size=64, router_hidden_size=32,
              max_position_embeddings=256, partial_rotary_factor=0.5, bos_token_id=1, eos_token_id=None,
              pad_token_id=0)
PROMPTS = [[1, 17, 99, 4, 56, 23, 8, 77, 31], [1, 5, 64, 12]]
NEW_TOKENS = 4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("emulated_model")
    cfg = ZayaConfig(**CONFIG, dtype="bfloat16")
    save_checkpoint(path, cfg, random_state_dict(cfg, seed=3, dtype=torch.bfloat16))
    return path


@pytest.mark.skipif(not EMULATORS, reason="built without the SIMT emulator (ZAYA_BACKENDS=...,emu)")
@pytest.mark.parametrize("target", EMULATORS + [t for t in HOPPER_TARGETS if t.startswith("emu")])
def test_model_on_emulated_gpu_kernels(target, checkpoint, monkeypatch):
    use_target(target, monkeypatch)
    model = ZayaForCausalLM.from_pretrained(checkpoint, device="cpu", dtype=torch.bfloat16, backend="ops",
                                            progress=False)
    out = model.generate(PROMPTS, max_new_tokens=NEW_TOKENS)
    assert all(how.startswith("kernel") for how in model.op_backends().values()), model.op_backends()

    seqs = [p + toks[:-1] for p, toks in zip(PROMPTS, out.tokens)]
    got = model.forward(seqs, all_logits=True).logits.float()
    # Cached decode agrees with the full prefill: each generated token is the prefill's argmax there.
    start = 0
    for p, toks, s in zip(PROMPTS, out.tokens, seqs):
        pred = got[start + len(p) - 1 : start + len(s)].argmax(-1).tolist()
        assert pred == toks, (pred, toks)
        start += len(s)

    model.set_backend("reference")
    want = model.forward(seqs, all_logits=True).logits.float()
    truth_model = ZayaForCausalLM.from_pretrained(checkpoint, device="cpu", dtype=torch.float32,
                                                  backend="reference", progress=False)
    truth = truth_model.forward(seqs, all_logits=True).logits.float()
    err_kernels = (got - truth).abs().max().item()
    err_reference = (want - truth).abs().max().item()
    print(f"{target}: max |logit - fp32| kernels {err_kernels:.3g}, bf16 reference {err_reference:.3g}")
    assert err_kernels <= 2 * err_reference + 0.05, (err_kernels, err_reference)
