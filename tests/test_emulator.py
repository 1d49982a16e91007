"""The SIMT emulator's own checks (csrc/emu/selftest.cpp): its models of Hopper's wgmma and TMA compute
what the PTX ISA documents, and its hazard checks fire. Every GPU kernel test relies on these checks to
catch a missing wait or barrier, so a checker that stopped firing must fail here, not pass silently."""

from __future__ import annotations

import importlib

import pytest

from conftest import EMULATORS


def _module(target):
    return importlib.import_module(f"zaya_ops._emu_w{target[3:]}")


@pytest.mark.skipif(not EMULATORS, reason="built without the SIMT emulator (ZAYA_BACKENDS=...,emu)")
@pytest.mark.parametrize("target", EMULATORS)
def test_divergent_shuffle_is_reported_as_deadlock(target):
    assert "deadlock" in _module(target).selftest("divergent_shuffle")


W32 = pytest.mark.skipif("emu32" not in EMULATORS, reason="wgmma and TMA exist on the 32-lane emulator only")


# (self-test, what its launch must report: "" = correct results)
W32_SELFTESTS = [
    ("wgmma_layouts", ""),  # ss and rs forms, K- and MN-major B, N = 64 and 128: every accumulator = A B^T
    ("tma_box", ""),        # a box partly outside the matrix reads zeros there
    ("wgmma_overwrite", "changed before every thread waited"),
    ("wgmma_descriptors_differ", "different descriptors"),
    ("mbarrier_early_wait", "before its copies were issued"),
    ("smem_opt_in", ""),  # > 48 KiB of dynamic shared memory: refused without the opt-in, runs with it
    ("nope", "unknown self-test"),
]


@W32
@pytest.mark.parametrize("name,expect", W32_SELFTESTS, ids=[n for n, _ in W32_SELFTESTS])
def test_wgmma_and_tma_models(name, expect):
    got = _module("emu32").selftest(name)
    assert (expect in got) if expect else got == "", got
