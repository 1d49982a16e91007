"""The GPU kernels' own guards on index values. The GPU glue never reads index values on the host (no
device sync per call): the wrappers validate direct calls (python/zaya_ops/_index_checks.py) and the
model its metadata; the guards stand alone for raw torch.ops.zaya calls, during CUDA-graph capture and
with ZAYA_CHECK_INDICES=0.

Documented behaviour (csrc/gpu/glue.h and each kernel): nothing outside the caches, tables or
activations is read or written; moe_top1 treats an out-of-range expert index as the skip class (zero
row); cca_attention gives NaN rows for a sequence whose block table points outside the cache; cca_qkv
gives a NaN q row and no cache write for a token whose slot is out of range. Everything else matches
the checked run.
Runs on a GPU when present and on the SIMT emulators.
"""

from __future__ import annotations

import pytest
import torch

from conftest import HOPPER_TARGETS, KERNEL_TARGETS, use_target
from zaya_ops import ops, samples

GPU_TARGETS = [t for t in KERNEL_TARGETS if t != "cpu"]


@pytest.fixture(params=GPU_TARGETS)
def device(request, monkeypatch) -> str:
    return use_target(request.param, monkeypatch)


@pytest.fixture(params=GPU_TARGETS + HOPPER_TARGETS)
def attn_device(request, monkeypatch) -> str:
    """The GPU targets plus the Hopper (wgmma) attention kernel (head dim 64 here)."""
    return use_target(request.param, monkeypatch)


def _on(kw, device):
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}


def test_checked_by_default(device):
    kw = _on(samples.moe_top1_args(T=9, H=72, I=40, E=4), device)
    kw["expert_index"][3] = 7
    with pytest.raises(ValueError, match="expert_index entries must lie in 0..4"):
        ops.moe_top1(**kw)


def test_raw_op_reads_no_index_values(device):
    """Past the wrapper (torch.ops, checks on), the glue does not read the indices: a bad expert index
    counts as the skip class instead of raising."""
    kw = _on(samples.moe_top1_args(T=9, H=72, I=40, E=4, seed=2), device)
    want_kw = {**kw, "expert_index": kw["expert_index"].clone()}
    want_kw["expert_index"][3] = 4
    want = ops.moe_top1(**want_kw)
    kw["expert_index"][3] = 7
    got = ops._OPS.moe_top1(*samples.to_op_args("moe_top1", kw))
    assert torch.equal(got, want)


def test_moe_out_of_range_index_is_skipped(device, monkeypatch):
    kw = _on(samples.moe_top1_args(T=40, H=72, I=40, E=4, seed=5), device)
    want_kw = {**kw, "expert_index": kw["expert_index"].clone()}
    want_kw["expert_index"][[3, 17]] = 4  # the skip class
    want = ops.moe_top1(**want_kw)
    kw["expert_index"][3], kw["expert_index"][17] = 9, -2
    monkeypatch.setenv("ZAYA_CHECK_INDICES", "0")
    got = ops.moe_top1(**kw)
    assert torch.equal(got, want)
    assert bool((got[[3, 17]] == 0).all())


def test_attention_bad_block_table_gives_nan_rows_only(attn_device, monkeypatch):
    shape = samples.SampleShape(seq_lens=(5, 3, 4), nq=4, nkv=2, head_dim=64, block_size=8)
    kw = _on(samples.cca_attention_args(shape, cached=(9, 2, 20)), attn_device)
    want, _ = ops.cca_attention(**kw)
    kw["block_table"][1, 0] = 10**6
    monkeypatch.setenv("ZAYA_CHECK_INDICES", "0")
    got, _ = ops.cca_attention(**kw)
    rows = torch.arange(want.shape[0], device=want.device)
    seq1 = (rows >= 5) & (rows < 8)
    assert bool(got[seq1].isnan().all())
    assert torch.equal(got[~seq1], want[~seq1])


def test_qkv_bad_slot_gives_nan_row_and_no_write(device, monkeypatch):
    shape = samples.SampleShape(seq_lens=(5, 1, 6), nq=4, nkv=2, head_dim=32, rot_dim=16, block_size=8)
    kw = _on(samples.cca_qkv_args(shape), device)
    fresh = samples.clone_args(kw)
    want_q = ops.cca_qkv(**fresh)
    bad = samples.clone_args(kw)
    bad["slot_mapping"][2] = bad["k_cache"].shape[0] * bad["k_cache"].shape[1] + 100
    monkeypatch.setenv("ZAYA_CHECK_INDICES", "0")
    got_q = ops.cca_qkv(**bad)
    assert bool(got_q[2].isnan().all())
    others = torch.arange(got_q.shape[0], device=got_q.device) != 2
    assert torch.equal(got_q[others], want_q[others])
    for name in ("conv_state", "value_state"):
        assert torch.equal(bad[name], fresh[name]), name
    # Every cache slot but the one token 2 should have written is as in the checked run.
    slot = int(kw["slot_mapping"][2])
    for name in ("k_cache", "v_cache"):
        g = bad[name].flatten(0, 1)
        w = fresh[name].flatten(0, 1)
        keep = torch.ones(g.shape[0], dtype=torch.bool, device=g.device)
        keep[slot] = False
        assert torch.equal(g[keep], w[keep]), name
        assert torch.equal(g[slot], kw[name].flatten(0, 1)[slot]), name  # untouched
