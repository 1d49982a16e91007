"""The launchers' device facts (issue 14, section 1), checked on the SIMT emulator's device.

Every GPU launcher takes its block shapes from the device's reported wave size, asked once per device
(vendor::device_warp_size, cached), and refuses a device whose wave size differs from the one its
kernels were compiled for, with an error naming both. The emulated device can be made to report another
wave size (``set_device_warp_size``), so CI proves the refusal for every op, and counts the attribute
queries to prove the caching.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from conftest import EMULATORS, use_target
from zaya_ops import ops, samples

pytestmark = pytest.mark.skipif(not EMULATORS, reason="built without the SIMT emulator (ZAYA_BACKENDS=...,emu)")


def _module(target: str):
    return importlib.import_module(f"zaya_ops._emu_w{target.removeprefix('emu')}")


# The shared samples, at a head dim the GPU attention kernel takes (64, 128 or 256).
_SHAPE = samples.SampleShape(head_dim=64, rot_dim=32)


def _sample(name: str) -> dict:
    build = samples.SAMPLES[name]
    if name.startswith("cca_"):
        return build(_SHAPE, dtype=torch.bfloat16, device="cpu")
    return build(dtype=torch.bfloat16, device="cpu")


def _run_every_op() -> None:
    for name in samples.SAMPLES:
        getattr(ops, name)(**_sample(name))


@pytest.mark.parametrize("target", EMULATORS)
def test_every_launcher_refuses_a_device_of_another_wave_size(target, monkeypatch):
    use_target(target, monkeypatch)
    mod = _module(target)
    compiled = mod.warp_size
    other = 64 if compiled == 32 else 32
    mod.set_device_warp_size(other)
    try:
        for name in samples.SAMPLES:
            with pytest.raises(RuntimeError) as err:
                getattr(ops, name)(**_sample(name))
            msg = str(err.value)
            launcher = "cca_qkv" if name == "cca_qkv_functional" else name  # it runs cca_qkv's kernel
            assert f"zaya {launcher}" in msg, msg
            assert f"runs {other}-lane warps/wavefronts but these kernels were compiled for {compiled}" in msg, msg
    finally:
        mod.set_device_warp_size(0)
    _run_every_op()  # the real wave size again: every op runs


@pytest.mark.parametrize("target", EMULATORS)
def test_device_facts_are_asked_once_per_device(target, monkeypatch):
    use_target(target, monkeypatch)
    mod = _module(target)
    mod.set_device_warp_size(0)  # also forgets the cached facts
    before = mod.attribute_queries()
    launches = mod.launches()
    for _ in range(3):
        _run_every_op()
    assert mod.launches() - launches >= 3 * len(samples.SAMPLES)
    # The wave size and the SM count, once each, however many launches followed.
    assert mod.attribute_queries() - before == 2
