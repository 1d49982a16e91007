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


@W32
def test_wgmma_products_match_the_documented_layouts():
    """ss and rs forms, K-major and MN-major B, N = 64 and 128: every accumulator equals A B^T."""
    assert _module("emu32").selftest("wgmma_layouts") == ""


@W32
def test_wgmma_operand_overwritten_before_wait_fails():
    assert "changed before every thread waited" in _module("emu32").selftest("wgmma_overwrite")


@W32
def test_wgmma_descriptors_must_agree_across_the_warpgroup():
    assert "different descriptors" in _module("emu32").selftest("wgmma_descriptors_differ")


@W32
def test_tma_box_reads_zero_outside_the_matrix():
    assert _module("emu32").selftest("tma_box") == ""


@W32
def test_mbarrier_wait_before_the_copy_fails():
    assert "before its copies were issued" in _module("emu32").selftest("mbarrier_early_wait")


@W32
def test_unknown_selftest_is_named():
    assert "unknown self-test" in _module("emu32").selftest("nope")
