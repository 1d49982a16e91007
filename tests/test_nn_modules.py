"""zaya_ops.nn: parameter names as transformers' ZAYA modules (state_dict round-trips strictly both ways), the
layers call the ops and agree with transformers' modules, .to() keeps balancing_biases fp32."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from zaya_ops import nn as znn  # noqa: E402
from zaya_ops.model.modeling import packed_meta  # noqa: E402
from zaya_ops.model.testing import make_hf_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.mark.parametrize("tie,bias", [(True, False), (False, True)], ids=["tied", "untied-bias"])
def test_state_dict_round_trip_strict(tie, bias):
    hf = make_hf_model(torch.float32, seed=1, tie_word_embeddings=tie, attention_bias=bias)
    model = znn.ZayaForCausalLM(znn.config_from_transformers(hf.config), backend="reference")
    sd = hf.state_dict()
    assert set(model.state_dict()) == set(sd)
    model.load_state_dict(sd, strict=True)
    for n, t in model.state_dict().items():
        assert t.dtype == sd[n].dtype and torch.equal(t, sd[n]), n
    # and back: a fresh transformers model takes ours
    hf2 = make_hf_model(torch.float32, seed=9, tie_word_embeddings=tie, attention_bias=bias)
    hf2.load_state_dict(model.state_dict(), strict=True)
    ids = torch.randint(1, 96, (1, 7))
    with torch.no_grad():
        torch.testing.assert_close(hf2(ids).logits, hf(ids).logits)
        torch.testing.assert_close(model(ids).logits, hf(ids).logits, rtol=2e-5, atol=2e-5)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tie


def test_modules_match_transformers_modules():
    hf = make_hf_model(torch.float32, seed=2)
    model = znn.ZayaForCausalLM.from_transformers(hf, backend="auto")
    hl, ml = hf.model.layers[1], model.model.layers[1]
    x = torch.randn(1, 9, 64)
    # norm
    torch.testing.assert_close(ml.input_layernorm(x[0]), hl.input_layernorm(x)[0])
    # router + experts (transformers masks the skip class to expert 0 with weight 0)
    prev = torch.randn(1, 9, 16)
    _, w_hf, i_hf, s_hf = hl.mlp.gate(x, prev)
    idx, w, s = ml.mlp.gate(x[0], prev[0])
    torch.testing.assert_close(w, w_hf[:, 0])
    torch.testing.assert_close(s, s_hf[0])
    E = hf.config.num_experts
    assert torch.equal(idx.long().masked_fill(idx == E, 0), i_hf[:, 0])
    out, _ = ml.mlp(x[0], prev[0])
    want, _ = hl.mlp(x, prev)
    torch.testing.assert_close(out, want[0], rtol=1e-5, atol=1e-6)
    # residual scaling fused with the next norm
    r = torch.randn(9, 64)
    new, normed = ml.post_attention_residual_scale(x[0], r, ml.post_attention_layernorm)
    want_new = hl.post_attention_residual_scale(x[0], r)
    torch.testing.assert_close(new, want_new)
    torch.testing.assert_close(normed, hl.post_attention_layernorm(want_new))
    # attention block on one sequence: transformers' attention with its causal mask
    cos, sin = hf.model.rotary_emb(x, torch.arange(9)[None], "hybrid")
    causal = torch.full((9, 9), torch.finfo(torch.float32).min).triu(1)[None, None]
    want_a, _ = hl.self_attn(x, attention_mask={"causal": causal}, past_key_values=None, position_embeddings=(cos, sin))
    got_a = ml.self_attn(x[0], packed_meta([9], "cpu"), model.model.rope(torch.device("cpu"), torch.float32))
    torch.testing.assert_close(got_a, want_a[0], rtol=1e-5, atol=1e-5)
    # the modules share the model's backend switch
    assert all(m._runner is model._runner for m in model.modules() if isinstance(m, znn._OpsModule))
    model.set_backend("reference")
    assert all(m._runner.backend == "reference" for m in model.modules() if isinstance(m, znn._OpsModule))


def test_to_dtype_keeps_balancing_biases_fp32_and_bad_config():
    hf = make_hf_model(torch.float32, seed=3)
    model = znn.ZayaForCausalLM.from_transformers(hf).to(torch.bfloat16)
    for layer in model.model.layers:
        bb = layer.mlp.gate.balancing_biases
        assert bb.dtype == torch.float32
    assert torch.equal(model.model.layers[0].mlp.gate.balancing_biases, hf.model.layers[0].mlp.gate.balancing_biases)
    with pytest.raises(TypeError, match="ZayaConfig"):
        znn.ZayaForCausalLM(hf.config)
    with pytest.raises(ValueError, match="backend"):
        znn.ZayaForCausalLM(znn.config_from_transformers(hf.config), backend="fast")
