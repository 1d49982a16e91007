"""One Hopper warpgroup MMA tile against torch.matmul, in the three operand forms the Hopper kernels
issue (csrc/kernels/wgmma_tile.cuh): "ss" with A and B K-major in shared memory (moe_top1_sm90,
cca_attention_sm90's S = Q K^T), "rs" with A from registers, and B read MN-major (cca_attention_sm90's
O += P V, whose no-swizzle MN-major descriptor, LBO = 16 N bytes along k and SBO = 128 bytes along n,
is the one reading of the manuals that sources state differently: tests/test_layouts.py), and the
K-major 128-byte swizzle (op ``_wgmma_tile_sw128``: moe_top1_sm90's A and B tiles, CuTe's Layout_K_SW128_Atom
with make_gmma_desc's B128 descriptor, k-steps 32 bytes apart inside the swizzled rows).

The test-only op ``_wgmma_tile`` exists in CUDA builds with sm_90a (``torch.ops.zaya``) and in the
32-lane SIMT emulator (``torch.ops.zaya_emu32``). On the emulator these tests hold the kernels'
layouts to the emulator's model of wgmma (itself checked against CUTLASS in tests/test_layouts.py); on
a Hopper GPU they hold them to the silicon, and a pass of the MN-major cases settles the descriptor
question (the other reading addresses other bytes, so it cannot give the product).
"""

from __future__ import annotations

import pytest
import torch

import zaya_ops  # noqa: F401  (loads torch.ops.zaya)
from conftest import EMULATORS


def _hopper() -> bool:
    return torch.cuda.is_available() and torch.version.hip is None and torch.cuda.get_device_capability()[0] == 9


TARGETS = (["cuda"] if _hopper() else []) + (["emu32"] if "emu32" in EMULATORS else [])


def _op(target, name="_wgmma_tile"):
    if target == "cuda":
        if not hasattr(torch.ops.zaya, name):
            pytest.skip(f"this build has no sm_90a image (TORCH_CUDA_ARCH_LIST without 9.0a): no {name}")
        return getattr(torch.ops.zaya, name), "cuda"
    import zaya_ops._emu_w32  # noqa: F401  (registers torch.ops.zaya_emu32)

    return getattr(torch.ops.zaya_emu32, name), "cpu"


pytestmark = pytest.mark.skipif(not TARGETS, reason="needs a Hopper GPU or the 32-lane SIMT emulator")

FORMS = {  # (a_from_registers, b_mn_major, swizzle128)
    "ss_kmajor": (False, False, False),
    "rs_kmajor": (True, False, False),
    "ss_mn_major_b": (False, True, False),
    "rs_mn_major_b": (True, True, False),  # cca_attention_sm90's O += P V
    "ss_kmajor_sw128": (False, False, True),  # moe_top1_sm90 (version 2): both operands swizzled
    "rs_kmajor_sw128": (True, False, True),
}


def _ints(shape, g, dtype):
    return torch.randint(-8, 9, shape, generator=g).to(dtype)


def _check(target, form, n, k, dtype, exact=True):
    op, device = _op(target, "_wgmma_tile_sw128" if FORMS[form][2] else "_wgmma_tile")
    a_regs, b_mn, sw = FORMS[form]
    g = torch.Generator().manual_seed(1000 * n + k + 7 * a_regs + 13 * b_mn + 29 * sw)
    if exact:  # small integers: every product and partial sum is exact in fp32, in any order
        a, b = _ints((64, k), g, dtype), _ints((n, k), g, dtype)
    else:
        a, b = torch.randn(64, k, generator=g).to(dtype), torch.randn(n, k, generator=g).to(dtype)
    a, b = a.to(device), b.to(device)
    out = op(a, b, a_regs) if sw else op(a, b, a_regs, b_mn)
    want = a.float() @ b.float().T
    assert out.dtype == torch.float32 and out.shape == (64, n)
    if exact:
        bad = (out != want).nonzero()
        assert bad.numel() == 0, f"{bad.shape[0]} wrong of {out.numel()}, first at {bad[:4].tolist()}"
    else:
        torch.testing.assert_close(out, want, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n", [64, 128])  # moe_top1_sm90's N; cca_attention_sm90's N = D
@pytest.mark.parametrize("k", [16, 48, 64, 128])
def test_one_tile(target, form, dtype, n, k):
    """Each form at both N and several k-step counts, exactly (``-k mn_major`` picks the V reading,
    ``-k sw128`` the swizzled tiles; k = 128 spans two 64-column swizzle atoms)."""
    _check(target, form, n, k, dtype)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("form", list(FORMS))
def test_random_values_longest_k(target, form):
    """Real-valued inputs over the longest K (8 k-steps in one commit group), against fp32 matmul."""
    _check(target, form, 128, 128, torch.bfloat16, exact=False)


@pytest.mark.parametrize("target", TARGETS)
def test_argument_errors(target):
    op, device = _op(target)
    a = torch.zeros(64, 32, dtype=torch.bfloat16, device=device)
    b = torch.zeros(64, 32, dtype=torch.bfloat16, device=device)
    with pytest.raises(ValueError, match="K"):
        op(a[:, :24], b[:, :24], False, False)
    with pytest.raises(ValueError, match="b must be"):
        op(a, b[:32], False, False)
    with pytest.raises(ValueError, match="a must be"):
        op(a[:32], b, False, False)
    with pytest.raises(TypeError, match="bfloat16 or float16"):
        op(a.float(), b.float(), False, False)
    with pytest.raises(TypeError, match="b must have"):
        op(a, b.half(), False, False)
    sw, _ = _op(target, "_wgmma_tile_sw128")
    with pytest.raises(ValueError, match="K"):
        sw(a[:, :24], b[:, :24], False)


@pytest.mark.parametrize("target", TARGETS)
def test_noncontiguous_inputs(target):
    """Column slices and transposed views are copied into the dense layout the kernel reads."""
    op, device = _op(target)
    g = torch.Generator().manual_seed(3)
    a = _ints((64, 80), g, torch.float16).to(device)[:, 8:40]
    b = _ints((32, 64), g, torch.float16).to(device).T  # [64, 32], stride (1, 64)
    torch.testing.assert_close(op(a, b, True, True), a.float() @ b.float().T, atol=0, rtol=0)
