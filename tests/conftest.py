"""Shared pytest configuration: the devices the op tests run on.

``DEVICES`` is ["cpu"], plus "cuda" when torch sees a GPU (CUDA or ROCm: both are "cuda" to torch).
Tests take the ``device`` fixture (or parametrize over ``DEVICES``) so the same tests cover every
backend of the machine they run on.
"""

from __future__ import annotations

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _emulators() -> list[str]:
    found = []
    for w in (32, 64):
        try:
            __import__(f"zaya_ops._emu_w{w}")
            found.append(f"emu{w}")
        except ImportError:
            pass
    return found


# The GPU kernels under the SIMT emulator (built with ZAYA_BACKENDS=...,emu): "emu32" runs their CUDA
# paths (32-lane warps, mma.sync layouts), "emu64" their CDNA paths (64-lane wavefronts, MFMA
# layouts), on CPU tensors. CI has no GPU, so this is where the GPU code is tested there.
EMULATORS = _emulators()
# Where a kernel test runs: every real device plus the emulated GPU kernels.
KERNEL_TARGETS = DEVICES + EMULATORS


def _hopper_gpu() -> bool:
    return torch.cuda.is_available() and torch.version.hip is None and torch.cuda.get_device_capability()[0] == 9


# The Hopper (wgmma) kernels, opt-in (csrc/kernels/wgmma.cuh; tests flip the switch
# zaya_ops._library.hopper_paths, since the launchers read ZAYA_WGMMA only once per process): on the
# 32-lane emulator always, on a real GPU when it is a Hopper. Tests of ops that have such kernels add these.
HOPPER_TARGETS = (["cuda-wgmma"] if _hopper_gpu() else []) + (["emu32-wgmma"] if "emu32" in EMULATORS else [])
# The version-1 mma.sync kernels (scalar fragment loads, no ldmatrix: zaya_ops._library.kernels_v1), which
# exist where the 32-lane kernels run: an NVIDIA GPU and the 32-lane emulator. The tests of cca_attention,
# router and moe_top1 add these, so that both versions pass the same tests.
V1_TARGETS = (["cuda-v1"] if torch.cuda.is_available() and torch.version.hip is None else []) + (
    ["emu32-v1"] if "emu32" in EMULATORS else [])


_FAKES_REGISTERED: set[str] = set()


def _register_emulator_fakes(ns: str) -> None:
    """Give an emulator namespace torch.ops.zaya's fake kernels (python/zaya_ops/_fake.py), so that
    opcheck can hold the GPU glue's outputs to the same contract, and the norms' autograd."""
    if ns in _FAKES_REGISTERED:
        return
    from zaya_ops import _autograd, _fake, samples

    for name in samples.SAMPLES:
        torch.library.register_fake(f"{ns}::{name}", getattr(_fake, f"_{name}_fake"))
    _autograd.register_namespace(ns)  # the norms' autograd (backward: the reference by recompute)
    _FAKES_REGISTERED.add(ns)


def use_target(target: str, monkeypatch) -> str:
    """Route the zaya_ops wrappers to ``target``'s kernels; returns the torch device for its tensors.
    A "-wgmma" suffix selects the Hopper kernels (the switch zaya_ops._library.hopper_paths, restored
    after the test), see HOPPER_TARGETS; a "-v1" suffix the version-1 mma.sync kernels
    (zaya_ops._library.kernels_v1), see V1_TARGETS; other targets run with both off."""
    from zaya_ops._library import hopper_paths, kernels_v1

    monkeypatch.setattr(hopper_paths, "state", target.endswith("-wgmma"))
    monkeypatch.setattr(kernels_v1, "state", target.endswith("-v1"))
    target = target.removesuffix("-wgmma").removesuffix("-v1")
    if target.startswith("emu"):
        import zaya_ops.ops

        _register_emulator_fakes("zaya_" + target)
        monkeypatch.setattr(zaya_ops.ops, "_OPS", getattr(torch.ops, "zaya_" + target))
        # Threads between barriers run in reverse order on emu32, in thread order on emu64, so a missing
        # barrier shows up on one of them whichever way the hazard points (csrc/kernels/simt_emu.h).
        if target == "emu32":
            monkeypatch.setenv("ZAYA_EMU_ORDER", "reverse")
        else:
            monkeypatch.delenv("ZAYA_EMU_ORDER", raising=False)
        return "cpu"
    return target


@pytest.fixture(params=KERNEL_TARGETS)
def kernel_device(request, monkeypatch) -> str:
    """Each kernel target in turn (see KERNEL_TARGETS); the value is the device for the tensors."""
    return use_target(request.param, monkeypatch)


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Each available device in turn."""
    return request.param



@pytest.fixture(scope="module")
def one_cpu_thread():
    """Run a module with one CPU thread (tiny models: faster, and immune to oversubscription), then restore."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
