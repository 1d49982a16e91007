"""The 16-bit float conversions of the GPU kernels (csrc/kernels/vendor.h), checked on the CPU.

The CUDA and HIP kernels carry bf16/fp16 as raw 16-bit values and convert them with their own
round-to-nearest-even functions (one source for both vendors). No GPU runs here, so this test builds
those same functions as host C++ (vendor.h compiles without a CUDA/HIP compiler) into a tiny shared
library, loaded with ctypes, and compares them with torch's CPU casts, bit for bit, on every 16-bit
value and on millions of fp32 values: random bit patterns, exact ties, subnormals, overflow, inf, NaN.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

_SRC = r"""
#include "kernels/vendor.h"
#include <cstdint>
using namespace zaya::vendor;
extern "C" {
void f2bf(const float* x, uint16_t* y, int64_t n) { for (int64_t i = 0; i < n; ++i) y[i] = float_to_bf16(x[i]); }
void bf2f(const uint16_t* x, float* y, int64_t n) { for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_float(x[i]); }
void f2h(const float* x, uint16_t* y, int64_t n) { for (int64_t i = 0; i < n; ++i) y[i] = float_to_half(x[i]); }
void h2f(const uint16_t* x, float* y, int64_t n) { for (int64_t i = 0; i < n; ++i) y[i] = half_to_float(x[i]); }
}
"""


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no host C++ compiler")
    d = tmp_path_factory.mktemp("vendor")
    src, so = d / "rounding.cpp", d / "rounding.so"
    src.write_text(_SRC)
    subprocess.run(
        [cxx, "-std=c++20", "-O2", "-shared", "-fPIC", f"-I{ROOT / 'csrc'}", str(src), "-o", str(so)],
        check=True, capture_output=True, text=True,
    )
    lib = ctypes.CDLL(str(so))
    for name in ("f2bf", "bf2f", "f2h", "h2f"):
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        getattr(lib, name).restype = None
    return lib


def _call(fn, x: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    x = x.contiguous()
    y = torch.empty(x.shape, dtype=out_dtype)
    fn(x.data_ptr(), y.data_ptr(), x.numel())
    return y


def _all_16bit() -> torch.Tensor:
    return torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)


def _fp32_cases() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    bits = [torch.randint(-(2**31), 2**31, (1 << 21,), generator=g, dtype=torch.int64)]
    # Exact ties and their neighbours for bf16 (16 dropped bits) and for normal fp16 (13 dropped
    # bits), over every sign/exponent/kept mantissa, sampled.
    hi = torch.randint(0, 2**16, (1 << 18,), generator=g, dtype=torch.int64) << 16
    for low in (0x7FFF, 0x8000, 0x8001, 0xFFFF, 0):
        bits.append(hi | low)
    hi13 = torch.randint(0, 2**19, (1 << 18,), generator=g, dtype=torch.int64) << 13
    for low in (0x0FFF, 0x1000, 0x1001):
        bits.append(hi13 | low)
    # The fp16 range (exponents 2^-26 .. 2^17), fp16 subnormals included, densely.
    exp = torch.randint(101, 145, (1 << 20,), generator=g, dtype=torch.int64)
    man = torch.randint(0, 2**23, (1 << 20,), generator=g, dtype=torch.int64)
    sign = torch.randint(0, 2, (1 << 20,), generator=g, dtype=torch.int64) << 31
    bits.append(sign | (exp << 23) | man)
    b = torch.cat(bits)
    b = torch.where(b >= 2**31, b - 2**32, b)  # to int32 range, two's complement
    f = b.to(torch.int32).view(torch.float32)
    special = torch.tensor(
        [0.0, -0.0, float("inf"), float("-inf"), float("nan"), 65504.0, 65519.99, 65520.0, 65535.0, 65536.0,
         -65520.0, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 2.0**-14, 2.0**-14 - 2.0**-25, 1e-45, 3.4028235e38,
         -3.4028235e38, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-9],
        dtype=torch.float32,
    )
    return torch.cat([f, special])


def _assert_same_bits(got: torch.Tensor, want: torch.Tensor, src: torch.Tensor) -> None:
    """Bit equality; any NaN matches any NaN (payloads are not part of the contract)."""
    nan_got = got.float().isnan()
    nan_want = want.float().isnan()
    assert torch.equal(nan_got, nan_want), "NaN-ness differs"
    g = got.view(torch.int16 if got.element_size() == 2 else torch.int32)[~nan_want]
    w = want.view(torch.int16 if want.element_size() == 2 else torch.int32)[~nan_want]
    bad = (g != w).nonzero()
    if bad.numel():
        i = bad[0, 0].item()
        raise AssertionError(
            f"{bad.numel()} mismatches; first: input {src[~nan_want][i].item()!r} -> {g[i].item():#06x}, "
            f"torch {w[i].item():#06x}"
        )


@pytest.mark.parametrize("dtype,to16,from16", [(torch.bfloat16, "f2bf", "bf2f"), (torch.float16, "f2h", "h2f")])
def test_widening_is_exact_for_every_value(lib, dtype, to16, from16):
    h = _all_16bit()
    got = _call(getattr(lib, from16), h, torch.float32)
    _assert_same_bits(got, h.view(dtype).float(), h)


@pytest.mark.parametrize("dtype,to16", [(torch.bfloat16, "f2bf"), (torch.float16, "f2h")])
def test_rounding_matches_torch(lib, dtype, to16):
    f = _fp32_cases()
    got = _call(getattr(lib, to16), f, torch.int16).view(dtype)
    _assert_same_bits(got, f.to(dtype), f)


@pytest.mark.parametrize("dtype,to16,from16", [(torch.bfloat16, "f2bf", "bf2f"), (torch.float16, "f2h", "h2f")])
def test_round_trip_of_every_value(lib, dtype, to16, from16):
    h = _all_16bit()
    back = _call(getattr(lib, to16), _call(getattr(lib, from16), h, torch.float32), torch.int16)
    _assert_same_bits(back.view(dtype), h.view(dtype), h)
