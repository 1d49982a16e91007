"""How a kernel's outputs are held to ``zaya_ops.reference``: the one set of rules that the tests and
:func:`zaya_ops.selftest` share.

Each rule returns :class:`Measure` objects (what was measured, the error, the tolerance, and whether it
holds) instead of asserting, so the tests assert them (:func:`require`) and the self-check reports them.
Units: "ulps at row scale" = ``|got - want| / (finfo(dtype).eps * max |want| over the row)``, so one ulp of
the row's largest element; an ``allclose`` ratio is ``max |got - want| / (atol + rtol * |want|)`` (holds
at <= 1, as ``torch.isclose``).

Per op (the reasons are in the test files named):

* ``rms_norm`` (tests/test_norms.py): fp32 params: allclose(rtol 1e-5, atol 1e-6). bf16/fp16: the kernels
  sum the mean square in another order, so the rounded normalised value ``n`` may land on a neighbour:
  at most max(4, numel/1000) elements differ from the reference, each equal to ``w * (n or a neighbour
  of n)``, at most 2 ulps off.
* ``residual_scale_rmsnorm``: new_residual bit-equal on CPU tensors (the CPU kernels and the emulators
  do not contract into FMAs), allclose(1e-6, 1e-5) on a GPU; normed by the ``rms_norm`` rule applied to
  the kernel's own new_residual.
* ``cca_qkv`` (tests/test_cca_cpu.py): q and k_cache: fp32 allclose(1e-5, 1e-5); bf16/fp16 within
  2 eps (rtol and atol) and at least 99.8% (fp16: 99.5%) bit-identical; v_cache and the states identical. ``cca_qkv_functional``: q and k by the same rule, v identical.
* ``cca_attention``: FlashAttention's rule: the error against the reference run on fp32-cast inputs at
  most twice the reference's own error (+1e-5), for out and lse; fp32 allclose(1e-5, 1e-5).
* ``router`` (tests/test_router_moe_cpu.py): router_state within 1 ulp at row scale (fp32: 8), logits
  within 4 (fp32: 32), indices equal wherever the reference's top two biased probabilities differ by more
  than 1e-3, weights within 4 (fp32: 16) ulps of themselves where the indices agree, counts the
  bincount of the indices (and the reference's when all indices agree), the skip class weighted 0.
* ``moe_top1``: CPU kernel within 1 ulp at row scale (fp32: 4); GPU kernels (and their emulation)
  within 2, with at least 99% of the elements bit-equal (tests/test_moe_top1_gpu.py).

Whole models (two computations of the same model that differ in accumulation order):
:func:`max_scaled_error` within :func:`model_tolerance` (fp32 2e-5, bf16 4 * 2^-8, fp16 4 * 2^-11).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "Measure", "require", "worst", "ulps_at_row_scale", "ulp_diff", "exact", "allclose", "rounded_close",
    "rms_norm", "new_residual", "residual_scale_rmsnorm", "cca_qkv", "cca_qkv_functional", "cca_attention", "router", "moe_top1",
    "ROUTER_TOL", "MOE_TOL", "MOE_GPU_TOL", "max_scaled_error", "model_tolerance", "dtype_name",
]

BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32

#: router tolerances in ulps at row scale (state, logits) and ulps of themselves (weight), per dtype.
ROUTER_TOL = {BF16: dict(state=1, logits=4, weight=4), FP16: dict(state=1, logits=4, weight=4),
              FP32: dict(state=8, logits=32, weight=16)}
#: moe_top1, CPU kernel: ulps at row scale per dtype.
MOE_TOL = {BF16: 1, FP16: 1, FP32: 4}
#: moe_top1, GPU kernels: ulps at row scale, and the least fraction of bit-equal elements.
MOE_GPU_TOL = dict(ulps=2, min_exact=0.99)


@dataclass(frozen=True)
class Measure:
    """One comparison: ``what`` (output and rule), the ``error`` found, the ``tolerance``, and ``ok``."""

    what: str
    error: float
    tolerance: float
    ok: bool

    @property
    def ratio(self) -> float:
        """error / tolerance (inf for a failed zero tolerance): how close to its limit the measure is."""
        if not self.ok:
            return math.inf if self.tolerance <= 0 or not math.isfinite(self.error) else self.error / self.tolerance
        return 0.0 if self.tolerance <= 0 else self.error / self.tolerance

    def __str__(self) -> str:
        return f"{self.what}: {self.error:.3g} {'<=' if self.ok else 'exceeds'} {self.tolerance:.3g}"


def require(measures: Iterable[Measure]) -> list[Measure]:
    """Raise AssertionError listing every measure that does not hold; returns the measures otherwise."""
    measures = list(measures)
    bad = [m for m in measures if not m.ok]
    if bad:
        raise AssertionError("; ".join(str(m) for m in bad))
    return measures


def worst(measures: Sequence[Measure]) -> Measure | None:
    """The first failing measure, else the one closest to its tolerance (None for no measures)."""
    bad = [m for m in measures if not m.ok]
    if bad:
        return bad[0]
    return max(measures, key=lambda m: m.ratio, default=None)


def _structure(what: str, got, shape, dtype, contiguous: bool = False) -> Measure | None:
    """A failing measure when ``got`` is not a tensor of that shape/dtype (None when it is)."""
    problem = None
    if not isinstance(got, torch.Tensor):
        problem = f"not a tensor ({type(got).__name__})"
    elif tuple(got.shape) != tuple(shape):
        problem = f"shape {list(got.shape)}, expected {list(shape)}"
    elif got.dtype != dtype:
        problem = f"dtype {got.dtype}, expected {dtype}"
    elif contiguous and not got.is_contiguous():
        problem = "not contiguous"
    return None if problem is None else Measure(f"{what} {problem}", math.inf, 0.0, False)


def _max_abs(got: torch.Tensor, want: torch.Tensor) -> float:
    if got.numel() == 0:
        return 0.0
    d = (got.float() - want.float()).abs()
    d = torch.where(torch.isnan(got.float()) & torch.isnan(want.float()), 0.0, d)
    return float(d.nan_to_num(nan=math.inf).max())


def exact(what: str, got: torch.Tensor, want: torch.Tensor) -> Measure:
    """Bit-equal (``torch.equal``); the error is the largest absolute difference."""
    bad = _structure(what, got, want.shape, want.dtype)
    if bad is not None:
        return bad
    return Measure(f"{what} max |diff| (must be identical)", _max_abs(got, want), 0.0, torch.equal(got, want))


def allclose(what: str, got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float) -> Measure:
    """``torch.isclose`` everywhere (NaN fails); the error is max |got - want| / (atol + rtol |want|)."""
    bad = _structure(what, got, want.shape, want.dtype)
    if bad is not None:
        return bad
    if got.numel() == 0:
        return Measure(f"{what} allclose(rtol={rtol:g}, atol={atol:g}) ratio", 0.0, 1.0, True)
    ok = bool(torch.isclose(got, want, rtol=rtol, atol=atol).all())
    g, w = got.double(), want.double()
    ratio = ((g - w).abs() / (atol + rtol * w.abs())).nan_to_num(nan=math.inf).max()
    err = float(ratio)
    if ok:  # inf == inf counts as close (isclose), its ratio is NaN or inf: report only the finite part
        fin = torch.isfinite(g) & torch.isfinite(w)
        err = float(((g - w).abs() / (atol + rtol * w.abs()))[fin].max()) if bool(fin.any()) else 0.0
    return Measure(f"{what} allclose(rtol={rtol:g}, atol={atol:g}) ratio", err, 1.0, ok)


def ulps_at_row_scale(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest |actual - expected| in units of eps * (max |expected| of its row)."""
    if expected.numel() == 0:
        return 0.0
    a, e = actual.float(), expected.float()
    e2, d2 = e.reshape(e.shape[0], -1), (a - e).abs().reshape(e.shape[0], -1)
    scale = e2.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    return float((d2 / (torch.finfo(expected.dtype).eps * scale)).max())


def _row_ulps(what: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> Measure:
    bad = _structure(what, got, want.shape, want.dtype)
    if bad is not None:
        return bad
    err = ulps_at_row_scale(got, want)
    return Measure(f"{what} ulps at row scale", err, float(tol), err <= tol)


def _exact_fraction(what: str, got: torch.Tensor, want: torch.Tensor, min_exact: float) -> Measure:
    """At least ``min_exact`` of the elements bit-identical (reported as the fraction that differ)."""
    same = float((got == want).float().mean()) if want.numel() else 1.0
    return Measure(f"{what} fraction not bit-identical", 1.0 - same, 1.0 - min_exact, same >= min_exact)


def _order_key(t: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 bit patterns mapped to integers in value order (+0 and -0 both 0; neighbours differ by 1)."""
    i = t.view(torch.int16).to(torch.int32)
    return torch.where(i < 0, -(i & 0x7FFF), i)


def _from_key(k: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    bits = torch.where(k < 0, (-k) | 0x8000, k)
    return bits.to(torch.int16).view(dtype)


def ulp_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise distance in representable steps between two bf16/fp16 tensors."""
    return (_order_key(a) - _order_key(b)).abs()


# --------------------------------------------------------------------------------------------------
# Per-op rules
# --------------------------------------------------------------------------------------------------


def rms_norm(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, eps: float, what: str = "out") -> list[Measure]:
    """``y`` (a kernel's RMSNorm output) against the reference RMSNorm of ``x`` (the op's normalised input)."""
    from . import reference

    y_ref = reference.rms_norm(x, w, eps)
    bad = _structure(what, y, x.shape, w.dtype, contiguous=True)
    if bad is not None:
        return [bad]
    if w.dtype == torch.float32:
        return [allclose(what, y, y_ref, rtol=1e-5, atol=1e-6)]
    differ = y.view(torch.int16) != y_ref.view(torch.int16)
    mismatches = int(differ.sum())
    limit = max(4, y.numel() // 1000)
    out = [Measure(f"{what} elements not bit-equal", float(mismatches), float(limit), mismatches <= limit)]
    if mismatches == 0:
        return out
    # Where they differ, y must be w * (n or a neighbour of n), n the reference's intermediate
    # round_w(v * inv) (restated from zaya_ops.reference.rms_norm, at those elements only).
    rows, cols = differ.nonzero(as_tuple=True)
    xr = x.to(w.dtype).to(torch.float32)
    inv = torch.rsqrt(xr.pow(2).mean(-1) + eps)
    n = (xr[rows, cols] * inv[rows]).to(w.dtype)
    wd = w[cols]
    if not torch.equal(wd * n, y_ref[rows, cols]):
        raise AssertionError("tolerances.rms_norm: its restatement of the reference drifted")
    k = _order_key(n)
    got = y[rows, cols]
    ok = torch.zeros_like(got, dtype=torch.bool)
    for d in (-1, 1):
        ok |= got == wd * _from_key(k + d, w.dtype)
    nbad = int((~ok).sum())
    out.append(Measure(f"{what} elements not w * (n or a neighbour of n)", float(nbad), 0.0, nbad == 0))
    ulps = int(ulp_diff(got, y_ref[rows, cols]).max())
    out.append(Measure(f"{what} ulps", float(ulps), 2.0, ulps <= 2))
    return out


def new_residual(new_r: torch.Tensor, new_r_ref: torch.Tensor) -> Measure:
    """residual_scale_rmsnorm's fp32 new_residual: bit-equal on CPU tensors (CPU kernels, emulators),
    within fp32 rounding on a GPU (device compilers may contract into FMAs)."""
    bad = _structure("new_residual", new_r, new_r_ref.shape, torch.float32, contiguous=True)
    if bad is not None:
        return bad
    if new_r.device.type == "cpu":
        return exact("new_residual", new_r, new_r_ref)
    return allclose("new_residual", new_r, new_r_ref, rtol=1e-6, atol=1e-5)


def residual_scale_rmsnorm(out, kw: dict) -> list[Measure]:
    """The kernel's (new_residual, normed) for the wrapper arguments ``kw``."""
    from . import reference

    new_r, normed = out
    new_r_ref, _ = reference.residual_scale_rmsnorm(**kw)
    m = [new_residual(new_r, new_r_ref)]
    if isinstance(new_r, torch.Tensor) and new_r.shape == new_r_ref.shape:
        m += rms_norm(normed, new_r, kw["norm_weight"], kw["eps"], what="normed")
    return m


def rounded_close(what: str, got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype,
                  min_exact: float | None = None) -> list[Measure]:
    """fp32: allclose(1e-5, 1e-5); bf16/fp16: within 2 eps (a flip may reach 2 ulps after RoPE) and
    bit-identical almost everywhere (``min_exact``: 0.998, fp16 0.995, which keeps 3 more mantissa bits
    than bf16, so another fp32 summation order flips it more often)."""
    bad = _structure(what, got, want.shape, want.dtype)
    if bad is not None:
        return [bad]
    if dtype == torch.float32:
        return [allclose(what, got, want, rtol=1e-5, atol=1e-5)]
    if min_exact is None:
        min_exact = 0.995 if dtype == torch.float16 else 0.998
    eps = torch.finfo(dtype).eps
    return [allclose(what, got.float(), want.float(), rtol=2 * eps, atol=2 * eps),
            _exact_fraction(what, got, want, min_exact)]


def cca_qkv(q: torch.Tensor, after: dict, q_ref: torch.Tensor, after_ref: dict, dtype: torch.dtype) -> list[Measure]:
    """cca_qkv's q and the arguments it wrote (``after``: k_cache, v_cache, conv_state, value_state)
    against the reference's."""
    m = rounded_close("q", q, q_ref, dtype) + rounded_close("k_cache", after["k_cache"], after_ref["k_cache"], dtype)
    m += [exact(name, after[name], after_ref[name]) for name in ("v_cache", "conv_state", "value_state")]
    return m


def cca_qkv_functional(out: tuple, ref: tuple, dtype: torch.dtype) -> list[Measure]:
    """cca_qkv_functional's (q, k, v) against the reference's: q and k as cca_qkv's q and k_cache, v
    identical (it is a copy of vc, vd and value_state)."""
    return (rounded_close("q", out[0], ref[0], dtype) + rounded_close("k", out[1], ref[1], dtype)
            + [exact("v", out[2], ref[2])])


def cca_attention(out: torch.Tensor, lse: torch.Tensor, ref_out: torch.Tensor, ref_lse: torch.Tensor,
                  ref32_out: torch.Tensor, ref32_lse: torch.Tensor, dtype: torch.dtype) -> list[Measure]:
    """cca_attention's (out, lse) against the reference in ``dtype`` (``ref_*``) and on fp32-cast inputs
    (``ref32_*``)."""
    m = [b for b in (_structure("out", out, ref32_out.shape, dtype), _structure("lse", lse, ref32_lse.shape, FP32))
         if b is not None]
    if m:
        return m
    if dtype == torch.float32:
        return [allclose("out", out, ref32_out, rtol=1e-5, atol=1e-5),
                allclose("lse", lse, ref32_lse, rtol=1e-5, atol=1e-5)]
    for name, got, low, truth in (("out", out, ref_out, ref32_out), ("lse", lse, ref_lse, ref32_lse)):
        err = _max_abs(got, truth)
        limit = 2 * _max_abs(low, truth) + 1e-5
        m.append(Measure(f"{name} max |error| vs the fp32 reference (limit 2 x the {dtype_name(dtype)} "
                         f"reference's + 1e-5)", err, limit, err <= limit))
    return m


def attention_references(kw: dict, run=None) -> tuple[torch.Tensor, ...]:
    """(out, lse) of the reference on ``kw`` and on its fp32 cast, for :func:`cca_attention`. ``run``
    calls the reference (default ``zaya_ops.reference.cca_attention``)."""
    from . import reference

    run = run or reference.cca_attention
    low = run(**kw)
    if all(v.dtype == torch.float32 for v in kw.values() if isinstance(v, torch.Tensor) and v.is_floating_point()):
        return (*low, *low)
    f32 = {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in kw.items()}
    return (*low, *run(**f32))


def router(out, ref, kw: dict) -> list[Measure]:
    """The router kernel's 5 outputs against the reference's (run with ``return_logits=True``)."""
    dtype = kw["x"].dtype
    idx, w, state, logits, counts = out
    ridx, rw, rstate, rlogits, rcounts = ref
    T, E1 = kw["x"].shape[0], kw["out_weight"].shape[0]
    m = [b for b in (_structure("expert_index", idx, (T,), torch.int32),
                     _structure("expert_weight", w, (T,), dtype),
                     _structure("router_state", state, rstate.shape, dtype),
                     _structure("counts", counts, (E1,), torch.int32),
                     _structure("logits", logits, (T, E1) if kw["return_logits"] else (0, E1), dtype))
         if b is not None]
    if m:
        return m
    in_range = bool(((idx >= 0) & (idx < E1)).all())
    m.append(Measure("expert_index outside 0..E (count)", float(int(((idx < 0) | (idx >= E1)).sum())), 0.0, in_range))
    if not in_range:
        return m
    m.append(exact("counts vs bincount(expert_index)", counts,
                   torch.bincount(idx.long(), minlength=E1).to(torch.int32)))
    skip_w = w[idx == E1 - 1].float().abs()
    m.append(Measure("skip-class weight (must be 0)", float(skip_w.max()) if skip_w.numel() else 0.0, 0.0,
                     bool((skip_w == 0).all())))
    tol = ROUTER_TOL[dtype]
    m.append(_row_ulps("router_state", state, rstate, tol["state"]))
    if kw["return_logits"]:
        m.append(_row_ulps("logits", logits, rlogits, tol["logits"]))
    # Indices: equal wherever the decision is clear in the reference.
    biased = torch.softmax(rlogits, dim=-1).float() + kw["balancing_biases"]
    top2 = biased.topk(min(2, E1), dim=-1).values
    decisive = (top2[:, 0] - top2[:, 1]) > 1e-3
    same = idx == ridx
    wrong = int((~same & decisive).sum())
    m.append(Measure("decisive tokens routed differently", float(wrong), 0.0, wrong == 0))
    eps = torch.finfo(dtype).eps
    dw = (w[same].float() - rw[same].float()).abs()
    scale = eps * rw[same].float().abs()
    rel = float((dw / scale.clamp_min(torch.finfo(torch.float32).tiny)).max()) if dw.numel() else 0.0
    m.append(Measure("expert_weight ulps of itself (where indices agree)", rel, float(tol["weight"]),
                     bool((dw <= tol["weight"] * scale).all())))
    if bool(same.all()):
        m.append(exact("counts vs the reference's", counts, rcounts))
    return m


def moe_top1(out: torch.Tensor, ref: torch.Tensor, gpu_kernel: bool) -> list[Measure]:
    """moe_top1's output against the reference: :data:`MOE_TOL` for the CPU kernel, :data:`MOE_GPU_TOL`
    for the GPU kernels (real or emulated)."""
    bad = _structure("out", out, ref.shape, ref.dtype)
    if bad is not None:
        return [bad]
    got = out.cpu()
    ref = ref.cpu()
    if not gpu_kernel:
        return [_row_ulps("out", got, ref, MOE_TOL[ref.dtype])]
    m = [_row_ulps("out", got, ref, MOE_GPU_TOL["ulps"])]
    if ref.numel():
        m.append(_exact_fraction("out", got, ref, MOE_GPU_TOL["min_exact"]))
    return m


# --------------------------------------------------------------------------------------------------
# Whole models (tests/test_model.py, test_integration_transformers.py, ...)
# --------------------------------------------------------------------------------------------------


def max_scaled_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / (|want| + rms(want)), elementwise, in fp32: an error relative to each value's
    magnitude, floored at the tensor's rms so that values near zero do not dominate."""
    got, want = got.float(), want.float()
    if got.shape != want.shape:
        raise AssertionError(f"shape {tuple(got.shape)} != {tuple(want.shape)}")
    rms = want.pow(2).mean().sqrt()
    return ((got - want).abs() / (want.abs() + rms + 1e-30)).max().item()


def model_tolerance(dtype: torch.dtype) -> float:
    """The :func:`max_scaled_error` allowed between two computations of the same model in ``dtype`` that
    differ only in accumulation order (see the parity tests for the reasoning)."""
    return {torch.float32: 2e-5, torch.bfloat16: 4 * 2.0 ** -8, torch.float16: 4 * 2.0 ** -11}[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    """"bfloat16" for torch.bfloat16."""
    return str(dtype).replace("torch.", "")
