"""torch.ops.zaya.linear (csrc/cpu/linear.cpp, csrc/cpu/gemv.h): F.linear for the model's projections and
LM head, fast in bf16/fp16 on CPUs without ATen's oneDNN path.

Paths: rows <= 8 the streaming AVX2 GEMV (row blocks of 4, 2, 1; 4 or 2 columns per block plus a tail;
K tails), more rows fp32 sgemm on converted operands, fp32 and ZAYA_CPU_GEMM=native at::linear itself.
Oracle: the fp32 sum of the same inputs plus the bias, rounded once to the dtype (F.linear's contract);
only the summation order differs, so each element is within one rounding step of the dtype at row scale
(finfo.eps * max |row|, as tests/test_router_moe_cpu.py's "ulp at row scale").
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import zaya_ops  # noqa: F401  (loads torch.ops.zaya)

BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32


def _oracle(x, w, b):
    y = x.float() @ w.float().T
    if b is not None:
        y = y + b.float()
    return y


def _check(y, x, w, b):
    want = _oracle(x, w, b)
    assert y.dtype == x.dtype and y.shape == want.shape
    scale = want.abs().amax(-1, keepdim=True).clamp_min(1e-6)
    eps = torch.finfo(x.dtype).eps if x.dtype != FP32 else 1e-5
    err = ((y.float() - want).abs() / scale).max().item()
    assert err <= eps, f"max error {err:.3g} of the row scale > {eps:.3g}"


@pytest.mark.parametrize("dtype", [BF16, FP16, FP32])
@pytest.mark.parametrize("rows", [1, 2, 3, 5, 7, 8, 9, 257])
@pytest.mark.parametrize("N,K,bias", [(13, 37, True), (64, 256, False), (1030, 264, True)])
def test_matches_oracle(dtype, rows, N, K, bias):
    g = torch.Generator().manual_seed(rows * 7 + N)
    x = torch.randn(rows, K, generator=g).to(dtype)
    w = (torch.randn(N, K, generator=g) / K ** 0.5).to(dtype)
    b = torch.randn(N, generator=g).to(dtype) if bias else None
    _check(torch.ops.zaya.linear(x, w, b), x, w, b)


def test_leading_dims_and_strides():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 2 * 72, generator=g).to(BF16)[..., ::2]  # [2, 3, 72], non-contiguous
    big = torch.randn(40, 72, generator=g).to(BF16)
    w = big[5:29]  # a row slice (ld 72), as the model's q/k/v views of the fused matrix
    y = torch.ops.zaya.linear(x, w, None)
    assert y.shape == (2, 3, 24)
    _check(y.reshape(6, 24), x.reshape(6, 72), w, None)
    wt = torch.randn(72, 24, generator=g).to(BF16).T  # [24, 72] with unit stride along N: copied first
    _check(torch.ops.zaya.linear(x.reshape(6, 72), wt, None), x.reshape(6, 72), wt, None)
    e = torch.ops.zaya.linear(torch.empty(0, 72, dtype=BF16), w, None)
    assert e.shape == (0, 24)


@pytest.mark.parametrize("rows", [1, 5, 40])
def test_native_mode_is_f_linear(rows, monkeypatch):
    monkeypatch.setenv("ZAYA_CPU_GEMM", "native")
    g = torch.Generator().manual_seed(2)
    x, w, b = (torch.randn(rows, 96, generator=g).to(BF16), torch.randn(50, 96, generator=g).to(BF16),
               torch.randn(50, generator=g).to(BF16))
    assert torch.equal(torch.ops.zaya.linear(x, w, b), F.linear(x, w, b))


def test_meta():
    y = torch.ops.zaya.linear(torch.empty(3, 4, 16, device="meta", dtype=BF16),
                              torch.empty(8, 16, device="meta", dtype=BF16), None)
    assert y.shape == (3, 4, 8) and y.device.type == "meta"


@pytest.mark.parametrize("x,w,b,exc,match", [
    ("i32", "ok", None, TypeError, "x must have dtype"),
    ("ok", "fp16", None, TypeError, "weight must have dtype bfloat16"),
    ("ok", "3d", None, ValueError, "weight must be 2-D"),
    ("ok", "k", None, ValueError, r"weight must have shape \[N, 16\]"),
    ("ok", "ok", "n", ValueError, r"bias must have shape \[8\]"),
    ("ok", "ok", "fp32", TypeError, "bias must have dtype bfloat16"),
])
def test_errors_name_the_argument(x, w, b, exc, match):
    xs = {"ok": torch.ones(2, 16, dtype=BF16), "i32": torch.ones(2, 16, dtype=torch.int32)}[x]
    ws = {"ok": torch.ones(8, 16, dtype=BF16), "fp16": torch.ones(8, 16, dtype=FP16),
          "3d": torch.ones(1, 8, 16, dtype=BF16), "k": torch.ones(8, 15, dtype=BF16)}[w]
    bs = {None: None, "n": torch.ones(7, dtype=BF16), "fp32": torch.ones(8)}[b]
    with pytest.raises(exc, match=match):
        torch.ops.zaya.linear(xs, ws, bs)


# --- autograd (python/zaya_ops/_autograd.py: F.linear's formula, each product through zaya.linear) ---

def _within_one_rounding(got, want, dtype, what):
    """``got`` (dtype) is the fp32 ``want`` rounded once, up to the summation order: within finfo.eps of
    the row scale (fp32: 1e-5)."""
    assert got.dtype == dtype and got.shape == want.shape, what
    scale = want.abs().amax(-1, keepdim=True).clamp_min(1e-6)
    eps = torch.finfo(dtype).eps if dtype != FP32 else 1e-5
    err = ((got.float() - want).abs() / scale).max().item()
    assert err <= eps, f"{what}: max error {err:.3g} of the row scale > {eps:.3g}"


@pytest.mark.parametrize("dtype", [BF16, FP16, FP32])
@pytest.mark.parametrize("lead", [(1,), (7,), (257,), (2, 7)])
@pytest.mark.parametrize("bias", [True, False])
def test_gradients_are_f_linears(dtype, lead, bias):
    g = torch.Generator().manual_seed(len(lead) * 31 + lead[-1])
    K, N = 72, 40
    x = torch.randn(*lead, K, generator=g).to(dtype).requires_grad_()
    w = (torch.randn(N, K, generator=g) / K ** 0.5).to(dtype).requires_grad_()
    b = torch.randn(N, generator=g).to(dtype).requires_grad_() if bias else None
    gy = torch.randn(*lead, N, generator=g).to(dtype)
    torch.ops.zaya.linear(x, w, b).backward(gy)
    g2, x2 = gy.reshape(-1, N).float(), x.detach().reshape(-1, K).float()
    _within_one_rounding(x.grad.reshape(-1, K), g2 @ w.detach().float(), dtype, "grad x")
    _within_one_rounding(w.grad, g2.T @ x2, dtype, "grad weight")
    if bias:
        _within_one_rounding(b.grad[None], g2.sum(0)[None], dtype, "grad bias")


def test_gradient_only_where_required():
    x = torch.randn(5, 16, dtype=BF16, requires_grad=True)
    w = torch.randn(8, 16, dtype=BF16)
    b = torch.randn(8, dtype=BF16)
    torch.ops.zaya.linear(x, w, b).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape and w.grad is None and b.grad is None


def test_fp32_gradients_equal_f_linear():
    g = torch.Generator().manual_seed(5)
    args = [torch.randn(9, 24, generator=g), torch.randn(12, 24, generator=g), torch.randn(12, generator=g)]
    ours = [a.clone().requires_grad_() for a in args]
    theirs = [a.clone().requires_grad_() for a in args]
    gy = torch.randn(9, 12, generator=g)
    torch.ops.zaya.linear(*ours).backward(gy)
    F.linear(*theirs).backward(gy)
    for a, t in zip(ours, theirs):
        torch.testing.assert_close(a.grad, t.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [BF16, FP32])
def test_opcheck_with_grad(dtype):
    g = torch.Generator().manual_seed(9)
    x = torch.randn(7, 24, generator=g).to(dtype).requires_grad_()
    w = torch.randn(12, 24, generator=g).to(dtype).requires_grad_()
    b = torch.randn(12, generator=g).to(dtype).requires_grad_()
    torch.library.opcheck(torch.ops.zaya.linear.default, (x, w, b),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() != "AVX2",
                    reason="the AVX2 GEMV is the path only on AVX2 CPUs without AVX-512 (ATen's own GEMM there)")
@pytest.mark.parametrize("dtype", [BF16, FP16])
def test_decode_runs_the_avx2_gemv(dtype, monkeypatch):
    """On an AVX2 CPU the decode GEMV takes its vector path (it once ran the scalar loop: cpuinfo read
    false inside the module). Told apart by the summation order: the vector path keeps 8 lane sums
    (k mod 8) and adds them at the end, the scalar loop keeps one running sum. Products: +2^25 at k = 0,
    -2^25 at k = 8 (both lane 0), 1 at k = 1..7. Lane sums give 7; a running sum loses each 1 against
    2^25 (fp32 spacing 4 there) and gives 0."""
    monkeypatch.delenv("ZAYA_CPU_GEMM", raising=False)
    K = 16
    big = 2.0 ** 25 if dtype == BF16 else 2.0 ** 15  # fp16 (max 65504): 2^15 * x = 2^25 with x = 2^10
    xv = 1.0 if dtype == BF16 else 2.0 ** 10
    w = torch.zeros(4, K, dtype=dtype)
    w[:, 0], w[:, 8] = big, -big
    w[:, 1:8] = 1.0 if dtype == BF16 else 2.0 ** -10  # products 1 each
    x = torch.full((1, K), xv, dtype=dtype)
    y = torch.ops.zaya.linear(x, w, None)
    assert y.float().tolist() == [[7.0] * 4]
