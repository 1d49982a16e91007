"""zaya::rms_norm and zaya::residual_scale_rmsnorm against zaya_ops.reference, on every device.

Exactness contract:
* new_residual (fp32) is elementwise arithmetic with the same rounding points as the reference: bit-equal
  on the CPU (no FMA contraction), within fp32 rounding elsewhere.
* normed: the kernels sum the mean square in another order than PyTorch, so rsqrt(mean + eps) may differ
  in its last bits and the rounded normalised value ``n = round_w(v * inv)`` may land on the neighbouring
  bf16/fp16 value. The output must therefore equal ``w * n`` for n the reference's intermediate or one of
  its two neighbours (1 ulp of n; after the multiply by w that is at most 2 ulps of the output), and
  nearly all elements must be bit-equal to the reference. fp32 params: rtol 1e-5.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import zaya_ops
from conftest import KERNEL_TARGETS, use_target
from zaya_ops import reference as ref
from zaya_ops import tolerances as tol
from zaya_ops.tolerances import require

PARAM_DTYPES = [torch.float32, torch.bfloat16, torch.float16]
TS = [1, 7, 257, 4096]
HS = [8, 264, 2048]
EPS = 1e-5
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=KERNEL_TARGETS)
def device(request, monkeypatch) -> str:
    """Every kernel target: the real devices and the GPU kernels under the SIMT emulator."""
    return use_target(request.param, monkeypatch)


def _dt(d: torch.dtype) -> str:
    return str(d).replace("torch.", "")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _vectors(H: int, dtype: torch.dtype, device: str, g: torch.Generator) -> list[torch.Tensor]:
    """h_bias, h_scale, r_bias, r_scale, norm_weight: biases near 0, scales and weight near 1."""
    def r(scale, offset):
        return (torch.randn(H, generator=g) * scale + offset).to(dtype).to(device)

    return [r(0.1, 0.0), r(0.2, 1.0), r(0.1, 0.0), r(0.2, 1.0), r(0.3, 1.0)]


# --------------------------------------------------------------------------------------------------
# Comparison helpers (the rules live in zaya_ops.tolerances)
# --------------------------------------------------------------------------------------------------


def check_normed(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, eps: float = EPS) -> None:
    """y (the op's RMSNorm output) against the reference RMSNorm of x (the op's normalised input):
    zaya_ops.tolerances.rms_norm's rule (the one zaya_ops.selftest applies)."""
    require(tol.rms_norm(y, x, w, eps))


def check_new_residual(new_r: torch.Tensor, new_r_ref: torch.Tensor) -> None:
    """Bit-equal on CPU tensors; within fp32 rounding on a GPU (device compilers may contract
    (r + rb) * rs + a into an FMA)."""
    require([tol.new_residual(new_r, new_r_ref)])


# --------------------------------------------------------------------------------------------------
# Accuracy against the reference
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("H", HS)
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("pdt", PARAM_DTYPES, ids=_dt)
def test_residual_scale_rmsnorm_matches_reference(device, pdt, T, H):
    g = _gen(1000 * T + H)
    h = torch.randn(T, H, generator=g).to(pdt).to(device)
    residual = (torch.randn(T, H, generator=g) * 4).to(device)
    vecs = _vectors(H, pdt, device, g)
    new_r, normed = zaya_ops.residual_scale_rmsnorm(h, residual, *vecs, EPS)
    new_r_ref, _ = ref.residual_scale_rmsnorm(h, residual, *vecs, EPS)
    check_new_residual(new_r, new_r_ref)
    check_normed(normed, new_r, vecs[4])


@pytest.mark.parametrize("H", HS)
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("xdt", ["fp32", "param"])
@pytest.mark.parametrize("pdt", PARAM_DTYPES, ids=_dt)
def test_rms_norm_matches_reference(device, pdt, xdt, T, H):
    g = _gen(7 + 1000 * T + H)
    x = (torch.randn(T, H, generator=g) * 3).to(torch.float32 if xdt == "fp32" else pdt).to(device)
    w = _vectors(H, pdt, device, g)[4]
    y = zaya_ops.rms_norm(x, w, EPS)
    check_normed(y, x, w)


@pytest.mark.parametrize("xdt,pdt", [(torch.float16, torch.bfloat16), (torch.bfloat16, torch.float16),
                                     (torch.bfloat16, torch.float32), (torch.float16, torch.float32)],
                         ids=lambda d: _dt(d))
def test_rms_norm_mixed_dtypes(device, xdt, pdt):
    g = _gen(3)
    x = (torch.randn(33, 264, generator=g) * 3).to(xdt).to(device)
    w = _vectors(264, pdt, device, g)[4]
    check_normed(zaya_ops.rms_norm(x, w, EPS), x, w)


@pytest.mark.parametrize("pdt", PARAM_DTYPES, ids=_dt)
def test_eps_and_scale_extremes(device, pdt):
    """Tiny rows (eps dominates), huge rows, an all-zero row, and a large eps."""
    g = _gen(5)
    H = 264
    x = torch.randn(6, H, generator=g)
    x[0] *= 1e-4
    x[1] *= 1e3 if pdt != torch.float16 else 1e2
    x[2] = 0
    x = x.to(device)
    w = _vectors(H, pdt, device, g)[4]
    for eps in (1e-5, 1e-2, 1.0):
        check_normed(zaya_ops.rms_norm(x, w, eps), x, w, eps)
        h = x.to(pdt)
        vecs = _vectors(H, pdt, device, g)
        new_r, normed = zaya_ops.residual_scale_rmsnorm(h, x, *vecs[:4], w, eps)
        check_new_residual(new_r, ref.residual_scale_rmsnorm(h, x, *vecs[:4], w, eps)[0])
        check_normed(normed, new_r, w, eps)


def _random_bits(n: int, dtype: torch.dtype, g: torch.Generator) -> torch.Tensor:
    """Every kind of 16-bit value (normal, subnormal, zero, inf, NaN) as dtype."""
    return torch.randint(-(2**15), 2**15, (n,), generator=g, dtype=torch.int32).to(torch.int16).view(dtype)


@pytest.mark.parametrize("pdt", [torch.bfloat16, torch.float16], ids=_dt)
def test_h_branch_rounding_is_exact(device, pdt):
    """new_residual = round(round(h + hb) * hs) exactly (residual branch zeroed), over random bit
    patterns: ties, subnormals, overflow to inf, inf - inf = NaN."""
    g = _gen(11)
    T, H = 64, 264  # H % 8 != 0: vector body and scalar tail
    h = _random_bits(T * H, pdt, g).view(T, H).to(device)
    hb = _random_bits(H, pdt, g).to(device)
    hs = (torch.rand(H, generator=g) * 4 - 2).to(pdt).to(device)
    zeros = torch.zeros(H, dtype=pdt, device=device)
    residual = torch.zeros(T, H, device=device)
    args = (h, residual, hb, hs, zeros, zeros, torch.ones(H, dtype=pdt, device=device), EPS)
    new_r, _ = zaya_ops.residual_scale_rmsnorm(*args)
    new_r_ref, _ = ref.residual_scale_rmsnorm(*args)
    assert torch.equal(new_r.isnan(), new_r_ref.isnan())
    fin = ~new_r_ref.isnan()
    assert torch.equal(new_r[fin], new_r_ref[fin])


def test_non_finite_rows_propagate(device):
    g = _gen(12)
    H = 264
    x = torch.randn(4, H, generator=g)
    x[1, 5] = float("nan")
    x[2, 7] = float("inf")
    x[3, 9] = 70000.0  # overflows to inf in fp16
    x = x.to(device)
    for pdt in PARAM_DTYPES:
        w = _vectors(H, pdt, device, g)[4]
        y = zaya_ops.rms_norm(x, w, EPS).float()
        y_ref = ref.rms_norm(x, w, EPS).float()
        assert torch.equal(y.isnan(), y_ref.isnan()), pdt
        fin = ~y_ref.isnan()
        torch.testing.assert_close(y[fin], y_ref[fin], rtol=2 ** -7, atol=0)


def test_empty_inputs(device):
    for pdt in PARAM_DTYPES:
        w = torch.ones(8, dtype=pdt, device=device)
        y = zaya_ops.rms_norm(torch.empty(0, 8, device=device), w, EPS)
        assert y.shape == (0, 8) and y.dtype == pdt
        new_r, normed = zaya_ops.residual_scale_rmsnorm(
            torch.empty(0, 8, dtype=pdt, device=device), torch.empty(0, 8, device=device), w, w, w, w, w, EPS
        )
        assert new_r.shape == (0, 8) and new_r.dtype == torch.float32
        assert normed.shape == (0, 8) and normed.dtype == pdt


def test_single_column(device, request):
    """H = 1, with a column view whose inner stride is not 1 (any stride is fine for a size-1 dim).

    The GPU kernels move 8 elements per access and reject such hidden sizes (NotImplementedError, so
    that callers such as the model's "auto" backend fall back to the reference)."""
    if request.node.callspec.params["device"] != "cpu":
        x = torch.randn(5, 1, device=device)
        with pytest.raises(NotImplementedError, match="multiple of 8"):
            zaya_ops.rms_norm(x, torch.ones(1, device=device), EPS)
        return
    for pdt in PARAM_DTYPES:
        x = (torch.randn(1, 5) * 3).t().to(device)  # [5, 1], strides (1, 5)
        w = torch.full((1,), 1.5, dtype=pdt, device=device)
        check_normed(zaya_ops.rms_norm(x, w, EPS), x, w)
        new_r, normed = zaya_ops.residual_scale_rmsnorm(x.to(pdt), x, w, w, w, w, w, EPS)
        check_new_residual(new_r, ref.residual_scale_rmsnorm(x.to(pdt), x, w, w, w, w, w, EPS)[0])
        check_normed(normed, new_r, w)


# --------------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["row_strided", "offset_slice", "transposed", "expanded_rows"])
@pytest.mark.parametrize("pdt", PARAM_DTYPES, ids=_dt)
def test_non_contiguous_inputs(device, pdt, layout):
    g = _gen(21)
    T, H = 37, 264

    def make(dtype, scale=1.0):
        """A [T, H] tensor of dtype on device in the layout under test."""
        t = (torch.randn(T, H, generator=g) * scale).to(dtype).to(device)
        if layout == "transposed":  # inner stride T: the kernel makes a contiguous copy
            return t.t().contiguous().t()
        if layout == "expanded_rows":  # every row the same storage (row stride 0)
            return t[:1].expand_as(t)
        # rows 2H + 3 apart, inner stride 1 (used in place), with or without a storage offset
        off = 0 if layout == "row_strided" else 3
        buf = torch.zeros(T, 2 * H + 3, dtype=dtype, device=device)
        buf[:, off : off + H] = t
        return buf[:, off : off + H]

    x = make(torch.float32, 3.0)
    h = make(pdt)
    residual = make(torch.float32, 4.0)
    assert not x.is_contiguous() and not h.is_contiguous() and not residual.is_contiguous()
    vecs = [torch.cat([v, v])[::2] for v in _vectors(H, pdt, device, g)]  # strided [H] params
    assert not vecs[0].is_contiguous()

    check_normed(zaya_ops.rms_norm(x, vecs[4], EPS), x, vecs[4])
    x_p = make(pdt, 3.0)
    check_normed(zaya_ops.rms_norm(x_p, vecs[4], EPS), x_p, vecs[4])

    new_r, normed = zaya_ops.residual_scale_rmsnorm(h, residual, *vecs, EPS)
    new_r_ref, _ = ref.residual_scale_rmsnorm(h.contiguous(), residual.contiguous(),
                                              *[v.contiguous() for v in vecs], EPS)
    check_new_residual(new_r, new_r_ref)
    check_normed(normed, new_r, vecs[4])


# --------------------------------------------------------------------------------------------------
# CPU specifics: threads and the portable (non-AVX2) kernels
# --------------------------------------------------------------------------------------------------


def test_thread_count_does_not_change_results():
    g = _gen(31)
    T, H = 257, 2048
    h = torch.randn(T, H, generator=g).to(torch.bfloat16)
    residual = torch.randn(T, H, generator=g)
    vecs = _vectors(H, torch.bfloat16, "cpu", g)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = zaya_ops.residual_scale_rmsnorm(h, residual, *vecs, EPS)
        one_rms = zaya_ops.rms_norm(residual, vecs[4], EPS)
    finally:
        torch.set_num_threads(n)
    many = zaya_ops.residual_scale_rmsnorm(h, residual, *vecs, EPS)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])
    assert torch.equal(one_rms, zaya_ops.rms_norm(residual, vecs[4], EPS))


_PORTABLE_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {tests!r})
    import test_norms as tn
    for pdt in tn.PARAM_DTYPES:
        for T, H in ((5, 8), (9, 264), (33, 2048), (3, 13)):
            tn.test_residual_scale_rmsnorm_matches_reference("cpu", pdt, T, H)
            tn.test_rms_norm_matches_reference("cpu", pdt, "fp32", T, H)
            tn.test_rms_norm_matches_reference("cpu", pdt, "param", T, H)
        tn.test_eps_and_scale_extremes("cpu", pdt)
    for pdt in (torch.bfloat16, torch.float16):
        tn.test_h_branch_rounding_is_exact("cpu", pdt)
    tn.test_non_finite_rows_propagate("cpu")
    print("portable ok")
    """
)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="only x86-64 has a second (AVX2) build of the kernels")
def test_portable_kernels_match_reference():
    """The baseline-ISA kernels (ZAYA_CPU_ISA=default), in a subprocess since the choice is made once."""
    env = dict(os.environ, ZAYA_CPU_ISA="default")
    pkg_root = str(Path(zaya_ops.__file__).resolve().parents[1])  # the zaya_ops this process imported
    env["PYTHONPATH"] = os.pathsep.join([pkg_root] + [p for p in [env.get("PYTHONPATH")] if p])
    out = subprocess.run([sys.executable, "-c", _PORTABLE_SCRIPT.format(tests=str(ROOT / "tests"))],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "portable ok" in out.stdout, out.stdout + out.stderr


# --------------------------------------------------------------------------------------------------
# opcheck and torch.compile
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pdt,T,H", [(torch.bfloat16, 7, 264), (torch.float16, 3, 8), (torch.float32, 5, 40)],
                         ids=["bf16-7x264", "fp16-3x8", "fp32-5x40"])
def test_opcheck(device, pdt, T, H):
    g = _gen(41)
    x = torch.randn(T, H, generator=g).to(device)
    h = torch.randn(T, H, generator=g).to(pdt).to(device)
    vecs = _vectors(H, pdt, device, g)
    torch.library.opcheck(torch.ops.zaya.rms_norm.default, (x, vecs[4], EPS))
    torch.library.opcheck(torch.ops.zaya.rms_norm.default, (x.to(pdt), vecs[4], EPS))
    torch.library.opcheck(torch.ops.zaya.residual_scale_rmsnorm.default, (h, x, *vecs, EPS))


def test_torch_compile_fullgraph(device, request):
    if request.node.callspec.params["device"].startswith("emu"):
        pytest.skip("the emulator namespaces have no fake kernels; torch.compile is tested on torch.ops.zaya")
    g = _gen(51)
    T, H = 9, 264
    pdt = torch.bfloat16
    h = torch.randn(T, H, generator=g).to(pdt).to(device)
    residual = torch.randn(T, H, generator=g).to(device)
    vecs = _vectors(H, pdt, device, g)
    final_w = _vectors(H, pdt, device, g)[4]

    def block(h, residual, vecs, final_w):
        new_r, normed = zaya_ops.residual_scale_rmsnorm(h, residual, *vecs, 1e-5)
        return new_r, normed, zaya_ops.rms_norm(new_r, final_w, 1e-5)

    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    got = compiled(h, residual, vecs, final_w)
    want = block(h, residual, vecs, final_w)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------------
# Bad inputs: clear TypeError/ValueError naming the argument, from the wrappers and from the C++ checks
# --------------------------------------------------------------------------------------------------


def _good(device="cpu", pdt=torch.bfloat16, T=4, H=8):
    h = torch.randn(T, H).to(pdt).to(device)
    residual = torch.randn(T, H).to(device)
    vecs = [torch.ones(H, dtype=pdt, device=device) for _ in range(5)]
    return h, residual, vecs


_RMS_BAD = [
    ("x_dtype", lambda x, w: (x.to(torch.int32), w, EPS), TypeError, r"\bx\b"),
    ("x_float64", lambda x, w: (x.double(), w, EPS), TypeError, r"\bx\b"),
    ("x_not_tensor", lambda x, w: (x.tolist(), w, EPS), TypeError, r"\bx\b"),
    ("x_3d", lambda x, w: (x[None], w, EPS), ValueError, r"\bx\b"),
    ("weight_dtype", lambda x, w: (x, w.to(torch.int64), EPS), TypeError, r"weight"),
    ("weight_shape", lambda x, w: (x, w[:-1], EPS), ValueError, r"weight"),
    ("weight_2d", lambda x, w: (x, w[None], EPS), ValueError, r"weight"),
    ("weight_meta", lambda x, w: (x, w.to("meta"), EPS), ValueError, r"weight"),
    ("weight_not_tensor", lambda x, w: (x, 1.0, EPS), TypeError, r"weight"),
    ("eps_negative", lambda x, w: (x, w, -1e-5), ValueError, r"eps"),
    ("eps_zero", lambda x, w: (x, w, 0.0), ValueError, r"eps"),
    ("eps_nan", lambda x, w: (x, w, float("nan")), ValueError, r"eps"),
    ("eps_inf", lambda x, w: (x, w, float("inf")), ValueError, r"eps"),
]


@pytest.mark.parametrize("name,change,exc,match", _RMS_BAD, ids=[c[0] for c in _RMS_BAD])
def test_rms_norm_bad_inputs(name, change, exc, match):
    h, residual, vecs = _good()
    with pytest.raises(exc, match=match):
        zaya_ops.rms_norm(*change(residual, vecs[4]))


_RSR_NAMES = ["h", "residual", "h_bias", "h_scale", "r_bias", "r_scale", "norm_weight"]


def _rsr_bad_cases():
    cases = []
    for i, name in enumerate(_RSR_NAMES):
        def wrong_dtype(args, i=i):
            t = args[i]
            args[i] = t.to(torch.float16 if t.dtype != torch.float16 else torch.float32)
            if i == 0:
                args[i] = t.to(torch.int32)
        cases.append((f"{name}_dtype", wrong_dtype, TypeError, name))
        cases.append((f"{name}_not_tensor", lambda args, i=i: args.__setitem__(i, 3), TypeError, name))
        if i > 0:  # h sets T, H and the device: a change to h is reported against the others
            cases.append((f"{name}_shape", lambda args, i=i: args.__setitem__(i, args[i][..., :-1]), ValueError,
                          name))
            cases.append((f"{name}_meta", lambda args, i=i: args.__setitem__(i, args[i].to("meta")), ValueError,
                          name))
    cases.append(("eps_negative", lambda args: args.__setitem__(7, -1.0), ValueError, "eps"))
    cases.append(("h_1d", lambda args: args.__setitem__(0, args[0][0]), ValueError, "h"))
    return cases


_RSR_BAD = _rsr_bad_cases()


@pytest.mark.parametrize("name,change,exc,match", _RSR_BAD, ids=[c[0] for c in _RSR_BAD])
def test_residual_scale_rmsnorm_bad_inputs(name, change, exc, match):
    h, residual, vecs = _good()
    args = [h, residual, *vecs, EPS]
    change(args)
    with pytest.raises(exc, match=rf"\b{match}\b"):
        zaya_ops.residual_scale_rmsnorm(*args)


def test_cpp_checks_raise_python_errors():
    """Calling torch.ops.zaya.* directly skips the wrappers: the kernels' own checks must raise."""
    h, residual, vecs = _good()
    rms = torch.ops.zaya.rms_norm
    rsr = torch.ops.zaya.residual_scale_rmsnorm
    with pytest.raises(TypeError, match=r"\bx\b.*dtype"):
        rms(residual.to(torch.int32), vecs[0], EPS)
    with pytest.raises(TypeError, match=r"\bweight\b.*dtype"):
        rms(residual, vecs[0].double(), EPS)
    with pytest.raises(ValueError, match=r"\bweight\b.*shape"):
        rms(residual, vecs[0][:-1], EPS)
    with pytest.raises(ValueError, match=r"\bx\b.*2-D"):
        rms(residual[0], vecs[0], EPS)
    with pytest.raises(ValueError, match=r"\beps\b"):
        rms(residual, vecs[0], -1.0)
    with pytest.raises(ValueError, match=r"\beps\b"):
        rms(residual, vecs[0], float("nan"))
    with pytest.raises(TypeError, match=r"\bresidual\b.*float32"):
        rsr(h, residual.to(torch.bfloat16), *vecs, EPS)
    with pytest.raises(ValueError, match=r"\bresidual\b.*shape"):
        rsr(h, residual[:-1], *vecs, EPS)
    with pytest.raises(TypeError, match=r"\br_bias\b.*dtype"):
        rsr(h, residual, vecs[0], vecs[1], vecs[2].float(), vecs[3], vecs[4], EPS)
    with pytest.raises(ValueError, match=r"\bnorm_weight\b.*shape"):
        rsr(h, residual, *vecs[:4], vecs[4][:-2], EPS)
    with pytest.raises(TypeError, match=r"\bh\b.*dtype"):
        rsr(h.to(torch.int16), residual, *vecs, EPS)
    with pytest.raises(ValueError, match=r"\beps\b"):
        rsr(h, residual, *vecs, 0.0)
