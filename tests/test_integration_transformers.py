"""zaya_ops.integrations.transformers.patch: a transformers ZayaForCausalLM whose decoder layers run on
the zaya_ops ops gives the unpatched model's outputs (eager attention: the rounding points the ops follow),
with and without a cache, with left padding, and in generate; unpatch restores it.

Tolerances as in test_model.py (same computation, different accumulation order only): fp32 2e-5 and bf16
4 ulps of (|value| + rms), on max |got - want| / (|want| + rms(want)); measured: fp32 <= 1e-6, bf16 exact.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from zaya_ops.integrations.transformers import is_patched, op_backends, patch, unpatch  # noqa: E402
from zaya_ops.model.testing import make_hf_model, max_scaled_error, tolerance  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# Tiny matrices: one thread is faster, and immune to a busy machine's oversubscription.
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def check(got, want, dtype, what):
    err = max_scaled_error(got, want)
    assert err <= tolerance(dtype), f"{what}: scaled error {err:.3g}"


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_patched_model_matches_unpatched(dtype, bias):
    hf = make_hf_model(dtype, seed=7, vocab_size=64, num_hidden_layers=3, attention_bias=bias)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 64, (2, 13), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # row 0 left-padded by 4
    ids[mask == 0] = 0
    with torch.no_grad():
        want = hf(ids).logits
        want_masked = hf(ids, attention_mask=mask).logits
        want_gen = hf.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    patch(hf)
    assert is_patched(hf)
    try:
        with torch.no_grad():
            got = hf(ids).logits
            got_masked = hf(ids, attention_mask=mask).logits
            got_gen = hf.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
        rep = op_backends(hf)
    finally:
        unpatch(hf)
    check(got, want, dtype, "no mask")
    real = mask.bool()
    check(got_masked[real], want_masked[real], dtype, "left padded (real tokens)")
    assert torch.equal(got_gen, want_gen)
    assert set(rep) == {"rms_norm", "residual_scale_rmsnorm", "cca_qkv", "cca_attention", "router", "moe_top1"}
    assert all(v != "not run yet" for v in rep.values()), rep
    # unpatched again: the original forwards are back
    assert not is_patched(hf)
    with torch.no_grad():
        assert torch.equal(hf(ids).logits, want)


def test_patch_rejects_other_models():
    with pytest.raises(ValueError, match="ZayaForCausalLM or ZayaModel"):
        patch(torch.nn.Linear(2, 2))
