"""``zaya_ops.selftest``: every compiled kernel against ``zaya_ops.reference`` on small awkward cases,
and the once-per-process gate that keeps a kernel failing it out of the model's ``backend="auto"``.

No GPU had run the GPU kernels when they were written, so a user's first run is also their first run on
silicon: the model and the integrations check each kernel on their device before its first use and route
an op whose kernel answers wrong to its reference, with one warning, rather than return a wrong answer.
The CPU kernels go through the same gate (a few milliseconds each): their vector paths depend on the
host's instruction set, which CI cannot cover entirely, and the same mechanism is what CI exercises on
the CPU and on the SIMT emulators (``torch.ops.zaya_emu32`` / ``zaya_emu64``, see tests/conftest.py).

Environment:

* ``ZAYA_SELFTEST=0`` skips the automatic check (``backend="auto"`` then trusts every kernel that exists);
  :func:`selftest` itself, and ``python -m zaya_ops --check-ops``, still run when asked.
* ``ZAYA_SELFTEST_FAULT=<op>[,<op>...]`` makes the check see a wrong result for those ops (it perturbs
  the kernel's output inside the check, not the kernel), so tests prove the fallback without a broken
  kernel.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch

from . import ops as _ops
from ._library import hopper_paths  # the Hopper kernels' switch (None: ZAYA_WGMMA, read once per process)
from . import reference as _reference
from . import samples as _samples
from . import tolerances as _tol

__all__ = ["OpCheck", "SelfTestWarning", "selftest", "gate", "clear_cache", "format_report", "OP_NAMES", "DTYPES"]

OP_NAMES = tuple(_samples.CHECK_CASES)
#: The dtypes :func:`selftest` tries by default (a GPU kernel refuses fp32: "not-implemented" there).
DTYPES = (torch.float32, torch.bfloat16, torch.float16)

FAULT_ENV = "ZAYA_SELFTEST_FAULT"
SKIP_ENV = "ZAYA_SELFTEST"


class SelfTestWarning(RuntimeWarning):
    """A compiled kernel failed its self-check: the op runs on its reference instead."""


@dataclass
class OpCheck:
    """The self-check of one op on one device.

    Attributes:
        op: the op name.
        device: the tensors' device ("cpu", "cuda:0").
        kernels: the op namespace that ran ("zaya"; "zaya_emu32"/"zaya_emu64" for the emulated GPU
            kernels; "+wgmma" when ``ZAYA_WGMMA=1`` selects the Hopper kernels).
        dtypes: the parameter dtypes checked (the kernel ran them).
        not_implemented: the dtypes whose kernel does not exist (NotImplementedError).
        status: "ok", "failed" or "not-implemented" (no dtype has a kernel).
        max_error, tolerance: the worst measure over all cases (the first failing one, else the one
            closest to its tolerance), in the unit ``measure`` names; None when nothing ran.
        measure: what that was ("bfloat16 decode T=1: out ulps at row scale").
        error: why it failed ("" when it did not).
        seconds: wall time of the op's check (kernel, reference and comparison, all dtypes).
    """

    op: str
    device: str
    kernels: str
    dtypes: tuple[str, ...] = ()
    not_implemented: tuple[str, ...] = ()
    status: str = "not-implemented"
    max_error: float | None = None
    tolerance: float | None = None
    measure: str = ""
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True unless the op failed (an op without a kernel is not a failure)."""
        return self.status != "failed"

    def as_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return asdict(self)


@dataclass
class _DtypeResult:
    """One (op, dtype) on one target: what :func:`gate` caches."""

    status: str  # "ok" | "failed" | "not-implemented"
    measure: _tol.Measure | None = None
    error: str = ""
    seconds: float = 0.0
    warned: bool = field(default=False, compare=False)


def _dt(dtype: torch.dtype) -> str:
    return _tol.dtype_name(dtype)


def _device(device) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _kernels() -> str:
    """The namespace the wrappers call now (tests route it to the emulators), "+wgmma" when opted in."""
    name = getattr(_ops._OPS, "name", "zaya")
    opted_in = hopper_paths.state if hopper_paths.state is not None else os.environ.get("ZAYA_WGMMA") == "1"
    return name + ("+wgmma" if opted_in else "")


def _gpu_kernel(device: torch.device) -> bool:
    """Whether the kernels that run are GPU kernels (a GPU, or their emulation on CPU tensors)."""
    return device.type != "cpu" or _kernels().startswith("zaya_emu")


def faults() -> frozenset[str]:
    """The ops named by ``ZAYA_SELFTEST_FAULT`` (ValueError for a name that is not an op)."""
    raw = os.environ.get(FAULT_ENV, "")
    names = frozenset(n.strip() for n in raw.split(",") if n.strip())
    unknown = sorted(names - set(OP_NAMES))
    if unknown:
        raise ValueError(f"{FAULT_ENV} names unknown ops {unknown}; the ops are {list(OP_NAMES)}")
    return names


def enabled() -> bool:
    """False when ``ZAYA_SELFTEST`` is 0 (or false/off/no): the automatic check is skipped."""
    return os.environ.get(SKIP_ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def _perturb(out):
    """The kernel's output with its first non-empty floating tensor made wrong (ZAYA_SELFTEST_FAULT)."""
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    for i, t in enumerate(outs):
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
            bad = t.clone()
            flat = bad.view(-1)
            flat[0] = flat[0] + 1.0 + flat[0].abs()  # never equal to the original, finite when it was
            outs[i] = bad
            break
    return tuple(outs) if isinstance(out, (tuple, list)) else outs[0]


def _compare(op: str, kw: dict, out, after: dict, gpu_kernel: bool) -> list[_tol.Measure]:
    """The tolerance rule of ``op`` (zaya_ops.tolerances) on the kernel's output ``out`` and the
    arguments it wrote (``after``), against the reference run on a copy of ``kw``."""
    dtype = _dtype_of(op, kw)
    if op == "rms_norm":
        return _tol.rms_norm(out, kw["x"], kw["weight"], kw["eps"])
    if op == "residual_scale_rmsnorm":
        return _tol.residual_scale_rmsnorm(out, kw)
    if op == "cca_qkv":
        ref_after = _samples.clone_args(kw)
        q_ref = _reference.cca_qkv(**ref_after)
        return _tol.cca_qkv(out, after, q_ref, ref_after, dtype)
    if op == "cca_qkv_functional":
        return _tol.cca_qkv_functional(out, _reference.cca_qkv_functional(**_samples.clone_args(kw)), dtype)
    if op == "cca_attention":
        return _tol.cca_attention(*out, *_tol.attention_references(kw), dtype)
    if op == "router":
        ref = _reference.router(**{**_samples.clone_args(kw), "return_logits": True})
        return _tol.router(out, ref, kw)
    if op == "moe_top1":
        return _tol.moe_top1(out, _reference.moe_top1(**_samples.clone_args(kw)), gpu_kernel)
    raise ValueError(f"unknown op {op!r}")


#: The argument whose dtype is the op's parameter dtype.
_DTYPE_ARG = {"rms_norm": "weight", "residual_scale_rmsnorm": "h", "cca_qkv": "qt", "cca_qkv_functional": "qt",
              "cca_attention": "q", "router": "x", "moe_top1": "x"}


def _dtype_of(op: str, kw: dict) -> torch.dtype:
    return kw[_DTYPE_ARG[op]].dtype


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def one_thread():
    """Run the block with one CPU thread, then restore the count. Small cases and the reference's many
    small ops are faster on one thread than on a team, and immune to a busy machine's oversubscription
    (where each parallel region can wait milliseconds for a descheduled worker)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _one_cpu_thread(device: torch.device):
    return one_thread() if device.type == "cpu" else contextlib.nullcontext()


def _check_dtype(op: str, device: torch.device, dtype: torch.dtype, fault: bool) -> _DtypeResult:
    """Run every case of ``op`` in ``dtype`` on ``device`` through the current kernels."""
    t0 = time.perf_counter()
    gpu = _gpu_kernel(device)
    fn = getattr(_ops, op)
    measures: list[tuple[str, _tol.Measure]] = []
    ran = 0
    with torch.no_grad(), _one_cpu_thread(device):
        for label, builder, args in _samples.CHECK_CASES[op]:
            case = f"{_dt(dtype)} {label}"
            kw = _samples.check_case(builder, args, dtype, device)
            after = _samples.clone_args(kw)
            try:
                out = fn(**after)
                _sync(device)
            except NotImplementedError:
                continue  # outside this kernel's coverage: the model's own call will say so too
            except Exception as exc:  # noqa: BLE001 - any other failure of the kernel is the finding
                first = (str(exc).strip().splitlines() or [""])[0]
                return _DtypeResult("failed", error=f"{case}: {type(exc).__name__}: {first}",
                                    seconds=time.perf_counter() - t0)
            ran += 1
            if fault:
                out = _perturb(out)
            try:
                measures += [(case, m) for m in _compare(op, kw, out, after, gpu)]
            except Exception as exc:  # noqa: BLE001 - outputs the rules cannot even read: a failure too
                return _DtypeResult("failed", error=f"{case}: comparing with the reference raised "
                                    f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    if ran == 0:
        return _DtypeResult("not-implemented", seconds=seconds)
    bad = [(c, m) for c, m in measures if not m.ok]
    case, m = bad[0] if bad else max(measures, key=lambda cm: _rank(cm[1]), default=(None, None))
    named = None if m is None else _tol.Measure(f"{case}: {m.what}", m.error, m.tolerance, m.ok)
    if not bad:
        return _DtypeResult("ok", named, seconds=seconds)
    msg = str(named) + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
    if fault:
        msg += f" [fault injected by {FAULT_ENV}]"
    return _DtypeResult("failed", named, msg, seconds)


def _rank(m: _tol.Measure | None) -> tuple[float, bool]:
    """Order of "worst" among passing measures: closest to its tolerance, then a non-zero tolerance
    (a measure of an exact rule says less than a measured margin)."""
    return (-1.0, False) if m is None else (m.ratio, m.tolerance > 0)


def _summarise(op: str, device: torch.device, kernels: str, results: dict[torch.dtype, _DtypeResult]) -> OpCheck:
    rep = OpCheck(op=op, device=str(device), kernels=kernels)
    ran = {d: r for d, r in results.items() if r.status != "not-implemented"}
    rep.dtypes = tuple(_dt(d) for d in ran)
    rep.not_implemented = tuple(_dt(d) for d, r in results.items() if r.status == "not-implemented")
    rep.seconds = sum(r.seconds for r in results.values())
    failed = [r for r in ran.values() if r.status == "failed"]
    rep.status = "failed" if failed else ("ok" if ran else "not-implemented")
    if failed:
        rep.error = "; ".join(r.error for r in failed)
    chosen = failed[0] if failed else max(ran.values(), key=lambda r: _rank(r.measure), default=None)
    if chosen is not None and chosen.measure is not None:
        rep.max_error, rep.tolerance, rep.measure = chosen.measure.error, chosen.measure.tolerance, chosen.measure.what
    return rep


def _op_list(ops) -> list[str]:
    if ops is None:
        return list(OP_NAMES)
    names = [ops] if isinstance(ops, str) else list(ops)
    unknown = [n for n in names if n not in OP_NAMES]
    if unknown:
        raise ValueError(f"ops: unknown op(s) {unknown}; the ops are {list(OP_NAMES)}")
    return names


def selftest(device=None, ops=None, dtypes=None) -> list[OpCheck]:
    """Check every compiled kernel against ``zaya_ops.reference`` on small awkward cases.

    For each op, each dtype and each case of ``zaya_ops.samples.CHECK_CASES`` (decode T = 1, prefill
    T = 7, varlen batches with an empty sequence and cached context, both sides of moe_top1's GPU
    decode/prefill switch), the kernel's outputs (and the arguments it writes) are held to the
    reference's by the tests' rules (``zaya_ops.tolerances``). A kernel that raises NotImplementedError
    for a dtype (GPU kernels and fp32) has that dtype listed as not implemented; any other exception, or
    an output outside its tolerance, fails the op. ``ZAYA_SELFTEST_FAULT=<op>[,...]`` perturbs the named
    ops' outputs inside the check (to test the fallback). This function always runs the check (it is not
    cached and ``ZAYA_SELFTEST=0`` does not skip it); the model's ``backend="auto"`` uses the cached gate.

    Args:
        device: where to run, default "cuda" when torch sees a GPU, else "cpu". The kernels are those the
            wrappers call (``zaya_ops.ops``; tests may route them to the SIMT emulators).
        ops: an op name or a list of them (default: all six).
        dtypes: parameter dtypes to try (default fp32, bf16 and fp16).
    Returns:
        one :class:`OpCheck` per op, in order. ``all(r.ok for r in report)`` says no kernel failed.
    """
    dev = _device(device)
    names = _op_list(ops)
    dts = list(DTYPES if dtypes is None else dtypes)
    fault = faults()
    kernels = _kernels()
    report = []
    for op in names:
        results = {dt: _check_dtype(op, dev, dt, op in fault) for dt in dts}
        report.append(_summarise(op, dev, kernels, results))
    return report


# --------------------------------------------------------------------------------------------------
# The gate of backend="auto": once per process, per (op, dtype, device, kernels)
# --------------------------------------------------------------------------------------------------

_CACHE: dict[tuple, _DtypeResult] = {}
_LOCK = threading.RLock()
#: How many (op, dtype) checks the gate has run in this process (tests read it to see the cache work).
runs = 0


def clear_cache() -> None:
    """Forget the gate's results (tests; or after changing the kernels a process calls)."""
    with _LOCK:
        _CACHE.clear()


@torch.compiler.disable
def gate(op: str, device, dtype: torch.dtype) -> str | None:
    """The automatic check before a kernel's first use: None when ``op``'s kernel may run on ``device``
    in ``dtype`` (it passed, has no kernel there, or ``ZAYA_SELFTEST=0``), else why it failed.

    The check runs once per process for each (op, dtype, device, kernel namespace, injected fault) and is
    remembered; a failure warns once (:class:`SelfTestWarning`, naming op, device and error).
    """
    if not enabled():
        return None
    dev = _device(device)
    fault = op in faults()
    key = (op, dtype, str(dev), _kernels(), fault)
    with _LOCK:
        res = _CACHE.get(key)
        if res is None:
            if dev.type == "cuda" and torch.cuda.is_current_stream_capturing():
                raise RuntimeError(
                    f"zaya_ops: the first call of {op} on {dev} is under CUDA graph capture, where its kernel's "
                    f"self-check cannot run: run the model once before capturing (or call "
                    f"zaya_ops.selftest / OpBackend.self_check), or set ZAYA_SELFTEST=0")
            global runs
            runs += 1
            res = _check_dtype(op, dev, dtype, fault)
            _CACHE[key] = res
        if res.status != "failed":
            return None
        if not res.warned:
            res.warned = True
            kernels = _kernels()
            where = str(dev) + ("" if kernels == "zaya" else f" ({kernels} kernels)")
            warnings.warn(
                f"zaya_ops: the {op} kernel failed its self-check on {where} in {_dt(dtype)}: {res.error}. "
                f"{op} runs on its reference (zaya_ops.reference.{op}) instead; `python -m zaya_ops --check-ops "
                f"--device {dev.type}` prints the full report.", SelfTestWarning, stacklevel=3)
        return res.error


def format_report(report: list[OpCheck], timings: dict[str, tuple[float, float]] | None = None) -> str:
    """The report as a table (what ``python -m zaya_ops --check-ops`` prints); ``timings`` adds the
    columns kernel us, reference us and speedup (op -> (kernel seconds, reference seconds) per call)."""
    head = f"{'op':<24}{'status':<17}{'dtypes':<24}{'max error':>10}{'tolerance':>10}{'check s':>9}"
    if timings is not None:
        head += f"{'kernel us':>11}{'reference us':>14}{'speedup':>9}"
    lines = [head]
    for r in report:
        dts = ",".join(_short(d) for d in r.dtypes) or "-"
        if r.not_implemented and r.dtypes:
            dts += " (no " + ",".join(_short(d) for d in r.not_implemented) + ")"
        err = "-" if r.max_error is None else f"{r.max_error:.3g}"
        tol = "-" if r.tolerance is None else f"{r.tolerance:.3g}"
        line = f"{r.op:<24}{r.status:<17}{dts:<24}{err:>10}{tol:>10}{r.seconds:>9.3f}"
        if timings is not None and r.op in timings:
            k, ref = timings[r.op]
            line += f"{k * 1e6:>11.1f}{ref * 1e6:>14.1f}{ref / k:>8.2f}x"
        lines.append(line)
    lines.append("\nworst measure of each op (error vs tolerance):")
    lines += [f"  {r.op:<24}{r.measure or '-'}" for r in report]
    for r in report:
        if r.status == "failed":
            lines.append(f"FAILED {r.op} on {r.device} ({r.kernels} kernels): {r.error}")
    return "\n".join(lines)


def _short(dtype_name: str) -> str:
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(dtype_name, dtype_name)
