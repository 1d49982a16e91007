"""Timing, roofline probe, device description and JSON rows: the parts every benchmark shares.

Nothing here knows about a particular op: ``zaya_ops.bench.cases`` describes what to run, this module
says how to time it and how to report it. GPU code uses only ``torch.cuda`` calls that exist on ROCm
builds of torch too (``torch.cuda.Event``, ``synchronize``, ``get_device_properties``), so one command
serves CUDA and ROCm.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

SCHEMA = "zaya_ops.bench/1"

# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TimerConfig:
    """How long and how often to run each measured callable.

    warmup_s / min_warmup: warm-up calls run until both are reached (and estimate the call's time).
    budget_s: target time for the measured reps; reps = budget_s / estimate, clamped to
    [min_reps, max_reps]. flush_cache: overwrite a buffer larger than the last-level cache before each
    rep (outside the timed region), so memory-bound ops read their inputs from DRAM/HBM, not cache.
    max_measure_s: when set, caps the measured reps at about this many seconds (at least one rep,
    overriding min_reps), for baselines whose single call takes minutes (transformers' bf16 model at
    ZAYA1-8B widths on a CPU without fast bf16 GEMMs); the row's ``stats.reps`` says how many ran.
    """

    warmup_s: float = 0.1
    min_warmup: int = 3
    budget_s: float = 1.0
    min_reps: int = 10
    max_reps: int = 10_000
    flush_cache: bool = False
    max_measure_s: float | None = None

    @classmethod
    def for_run(cls, device: torch.device, quick: bool, budget_s: float | None = None,
                flush: str = "auto") -> "TimerConfig":
        if quick:
            cfg = cls(warmup_s=0.01, min_warmup=2, budget_s=0.05, min_reps=5, max_reps=200)
        else:
            cfg = cls()
        if budget_s is not None:
            cfg.budget_s = float(budget_s)
        cfg.flush_cache = (device.type != "cpu") if flush == "auto" else (flush == "on")
        return cfg


@dataclasses.dataclass
class Stats:
    """Per-call times in microseconds over ``reps`` measured calls.

    ``cpu_median_us`` (CPU timer only): the median of the process's CPU time per call
    (``time.process_time``, all its threads): unlike wall time it does not grow when other processes
    share the cores, so on a loaded machine ratios of CPU-time rates (``Roofline.copy_gbps_cpu``,
    ``Row.pct_floor_cpu``) are steadier than the wall-time ones. A memory-bound thread stalls on the CPU,
    so its stalls count."""

    median_us: float
    p10_us: float
    p90_us: float
    mean_us: float
    min_us: float
    max_us: float
    reps: int
    cpu_median_us: float | None = None

    @classmethod
    def from_samples(cls, samples_us: Sequence[float], cpu_samples_us: Sequence[float] | None = None) -> "Stats":
        s = sorted(float(v) for v in samples_us)
        if not s:
            raise ValueError("no samples")
        return cls(
            cpu_median_us=percentile(sorted(float(v) for v in cpu_samples_us), 50.0) if cpu_samples_us else None,
            median_us=percentile(s, 50.0),
            p10_us=percentile(s, 10.0),
            p90_us=percentile(s, 90.0),
            mean_us=sum(s) / len(s),
            min_us=s[0],
            max_us=s[-1],
            reps=len(s),
        )


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of already sorted values."""
    n = len(sorted_values)
    if n == 1:
        return float(sorted_values[0])
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(sorted_values[lo] * (1.0 - frac) + sorted_values[hi] * frac)


def is_gpu(device: torch.device) -> bool:
    """True for torch's "cuda" device type, which is also what ROCm builds of torch use."""
    return device.type == "cuda"


def synchronize(device: torch.device) -> None:
    if is_gpu(device):
        torch.cuda.synchronize(device)


class _CacheFlusher:
    """Writes a buffer bigger than the last-level cache: 256 MiB on CUDA (H100 L2 is 50 MB), 512 MiB on
    ROCm (MI300's Infinity Cache is 256 MB), 256 MiB on CPU."""

    def __init__(self, device: torch.device) -> None:
        mib = 256
        if is_gpu(device) and getattr(torch.version, "hip", None):
            mib = 512
        self.buf = torch.empty(mib * 2**20 // 4, dtype=torch.int32, device=device)

    def __call__(self) -> None:
        self.buf.zero_()


def time_fn(fn: Callable[[], Any], device: torch.device, cfg: TimerConfig,
            setup: Callable[[], Any] | None = None, after: Callable[[], Any] | None = None,
            max_calls: int | None = None, first_s: float | None = None) -> Stats:
    """Time ``fn()`` (already compiled / first-called by the caller): warm-up, then adaptive reps.

    GPU: a pair of ``torch.cuda.Event`` around each call, one synchronize at the end (no host sync
    between reps, so launch overhead overlaps as in a real model unless the call is launch-bound).
    CPU: ``time.perf_counter`` around each call.

    ``setup`` / ``after`` run before / after every call (warm-up included) outside the timed region
    (e.g. a model's host-side cache bookkeeping); ``max_calls`` caps warm-up + reps (a decode run can
    only take as many steps as its cache holds).

    ``first_s``: how long the caller's own first call took. When it took longer than the whole budget,
    that call was the warm-up and its time the estimate: no further warm-up call is made (a model
    prefill of minutes would otherwise run once more untimed).
    """
    gpu = is_gpu(device)
    flusher = _CacheFlusher(device) if cfg.flush_cache else None
    if setup is not None or after is not None:
        inner, pre, post = fn, setup or (lambda: None), after or (lambda: None)
    else:
        inner = pre = post = None

    # Warm-up, which also estimates the per-call time.
    synchronize(device)
    n = 0
    t0 = time.perf_counter()
    while first_s is None or first_s <= cfg.budget_s:
        if flusher is not None:
            flusher()
        if pre is not None:
            pre()
            inner()
            post()
        else:
            fn()
        n += 1
        if n >= cfg.min_warmup:
            synchronize(device)
            if time.perf_counter() - t0 >= cfg.warmup_s or (max_calls is not None and n >= max_calls // 2):
                break
    # includes the flush: an over-estimate, which only lowers reps
    est = (time.perf_counter() - t0) / n if n else float(first_s)
    reps = int(cfg.budget_s / max(est, 1e-7))
    reps = max(cfg.min_reps, min(cfg.max_reps, reps))
    if cfg.max_measure_s is not None:
        reps = max(1, min(reps, int(cfg.max_measure_s / max(est, 1e-7))))
    if max_calls is not None:
        reps = max(1, min(reps, max_calls - n))

    samples: list[float]
    if gpu:
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for i in range(reps):
            if flusher is not None:
                flusher()
            if pre is not None:
                pre()
                starts[i].record()
                inner()
                ends[i].record()
                post()
            else:
                starts[i].record()
                fn()
                ends[i].record()
        torch.cuda.synchronize(device)
        samples = [s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends)]
    else:
        samples = []
        cpu_samples: list[float] = []
        pc, ct = time.perf_counter, time.process_time
        for _ in range(reps):
            if flusher is not None:
                flusher()
            if pre is not None:
                pre()
                c0, a = ct(), pc()
                inner()
                b, c1 = pc(), ct()
                post()
            else:
                c0, a = ct(), pc()
                fn()
                b, c1 = pc(), ct()
            samples.append((b - a) * 1e6)
            cpu_samples.append((c1 - c0) * 1e6)
        return Stats.from_samples(samples, cpu_samples)
    return Stats.from_samples(samples)


def timer_name(device: torch.device) -> str:
    return "device-events" if is_gpu(device) else "perf_counter"


# --------------------------------------------------------------------------------------------------
# Roofline probe
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Roofline:
    """The device's own measured ceilings, taken at the start of the run.

    copy_gbps: ``dst.copy_(src)`` of a large tensor, counting read + write bytes (median rep).
    gemm_tflops: square matmul rate in ``gemm_dtype`` (bf16 unless that is much slower than fp32 on
    this CPU, in which case fp32 is the fairer compute ceiling and ``note`` says so).
    """

    copy_gbps: float
    copy_bytes: int
    gemm_tflops: float
    gemm_dtype: str
    gemm_n: int
    note: str = ""
    copy_gbps_cpu: float | None = None  # CPU: copy bytes per second of the process's CPU time (Stats)

    def bound_us(self, nbytes: float, flops: float) -> float | None:
        """Lower bound on a call's time: max(bytes / copy BW, FLOPs / GEMM rate), in microseconds."""
        parts = []
        if self.copy_gbps > 0:
            parts.append(nbytes / (self.copy_gbps * 1e9) * 1e6)
        if self.gemm_tflops > 0:
            parts.append(flops / (self.gemm_tflops * 1e12) * 1e6)
        return max(parts) if parts else None


def _measure_gemm(device: torch.device, dtype: torch.dtype, n: int, cfg: TimerConfig) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.matmul(a, b, out=out)
    st = time_fn(lambda: torch.matmul(a, b, out=out), device, cfg)
    return 2.0 * n**3 / (st.median_us * 1e-6) / 1e12


def measure_roofline(device: torch.device, quick: bool = False,
                     log: Callable[[str], None] | None = None) -> Roofline:
    """Measure copy bandwidth and bf16 (or fp32) GEMM TFLOP/s on ``device``."""
    log = log or (lambda s: None)
    gpu = is_gpu(device)
    cfg = TimerConfig(warmup_s=0.05 if quick else 0.2, min_warmup=2, budget_s=0.2 if quick else 1.0,
                      min_reps=5, max_reps=200)

    # Copy bandwidth: a tensor far larger than any cache (GPU 1 GiB, CPU 256 MiB; quick: 64 MiB).
    mib = 64 if quick else (1024 if gpu else 256)
    src = torch.empty(mib * 2**20 // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)
    st = time_fn(lambda: dst.copy_(src), device, cfg)
    copy_bytes = 2 * src.numel() * src.element_size()
    copy_gbps = copy_bytes / (st.median_us * 1e-6) / 1e9
    copy_gbps_cpu = copy_bytes / (st.cpu_median_us * 1e-6) / 1e9 if st.cpu_median_us else None
    del src, dst
    log(f"roofline: copy {copy_gbps:,.1f} GB/s ({mib} MiB tensor, read+write counted)"
        + (f", {copy_gbps_cpu:,.1f} GB per CPU-second" if copy_gbps_cpu else ""))

    note = ""
    if gpu:
        n = 2048 if quick else 8192
        tflops = _measure_gemm(device, torch.bfloat16, n, cfg)
        gemm_dtype = "bf16"
    else:
        # CPUs without native bf16 matmul run bf16 GEMM one to two orders of magnitude slower than fp32.
        n_bf, n_fp = (256, 512) if quick else (512, 1024)
        bf = _measure_gemm(device, torch.bfloat16, n_bf, cfg)
        fp = _measure_gemm(device, torch.float32, n_fp, cfg)
        if bf >= 0.5 * fp:
            tflops, gemm_dtype, n = bf, "bf16", n_bf
        else:
            tflops, gemm_dtype, n = fp, "fp32", n_fp
            note = (f"bf16 GEMM is slow on this CPU ({bf * 1e3:.2f} GFLOP/s at n={n_bf}); "
                    f"fp32 GEMM ({fp * 1e3:.1f} GFLOP/s at n={n_fp}) used as the compute ceiling")
    log(f"roofline: {gemm_dtype} GEMM {tflops:.4g} TFLOP/s (n={n})" + (f"; {note}" if note else ""))
    return Roofline(copy_gbps=copy_gbps, copy_bytes=copy_bytes, gemm_tflops=tflops, gemm_dtype=gemm_dtype,
                    gemm_n=n, note=note, copy_gbps_cpu=copy_gbps_cpu)


# --------------------------------------------------------------------------------------------------
# Device description
# --------------------------------------------------------------------------------------------------


def slugify(s: str) -> str:
    s = re.sub(r"\(r\)|\(tm\)", "", s.lower())
    s = re.sub(r"[^a-z0-9]+", "-", s).strip("-")
    return s or "unknown"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _run(cmd: Sequence[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip() or None


def _gpu_driver(index: int) -> str | None:
    if getattr(torch.version, "hip", None):
        out = _run(["rocm-smi", "--showdriverversion"])
        if out:
            m = re.search(r"Driver version:\s*(\S+)", out, re.I)
            if m:
                return m.group(1)
        try:
            return Path("/sys/module/amdgpu/version").read_text().strip() or None
        except OSError:
            return None
    out = _run(["nvidia-smi", f"--id={index}", "--query-gpu=driver_version", "--format=csv,noheader"])
    if out:
        return out.splitlines()[0].strip()
    try:  # /proc/driver/nvidia/version: "NVRM version: NVIDIA UNIX ... Kernel Module  580.65.06  ..."
        m = re.search(r"Kernel Module\s+(\S+)", Path("/proc/driver/nvidia/version").read_text())
        return m.group(1) if m else None
    except OSError:
        return None


def repo_root() -> Path | None:
    """The source checkout this package lives in (python/zaya_ops/bench -> root), if any."""
    here = Path(__file__).resolve()
    for p in here.parents:
        if (p / "pyproject.toml").is_file() and (p / "python" / "zaya_ops").is_dir():
            return p
    return None


def git_commit() -> str | None:
    """HEAD of the source checkout (suffix "-dirty" if tracked files differ), or $ZAYA_COMMIT."""
    env = os.environ.get("ZAYA_COMMIT")
    if env:
        return env
    root = repo_root()
    if root is None:
        return None
    sha = _run(["git", "-C", str(root), "rev-parse", "HEAD"])
    if not sha:
        return None
    dirty = _run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"])
    return sha + ("-dirty" if dirty else "")


def describe_device(device: torch.device) -> dict[str, Any]:
    """Device name, slug, driver, runtime, torch and zaya_ops build facts, git commit."""
    info: dict[str, Any] = {"device_type": device.type, "torch": torch.__version__, "commit": git_commit(),
                            "host_cpu": _cpu_model(), "python": platform.python_version(),
                            "os": platform.platform()}
    if is_gpu(device):
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        hip = getattr(torch.version, "hip", None)
        name = props.name
        info.update(
            device_name=name,
            device=slugify(name),
            driver=_gpu_driver(index),
            runtime=f"HIP {hip}" if hip else f"CUDA {torch.version.cuda}",
            arch=getattr(props, "gcnArchName", None) if hip else f"sm_{props.major}{props.minor}",
            multiprocessors=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
        )
    else:
        name = _cpu_model()
        info.update(
            device_name=name,
            device="cpu-" + slugify(name),
            driver=None,
            runtime=f"CPU {torch.backends.cpu.get_cpu_capability()}",
            arch=platform.machine(),
            cores=os.cpu_count(),
            threads=torch.get_num_threads(),
        )
    try:
        from .. import build_info

        bi = build_info()
        info["zaya_backends"] = bi.get("backends")
        info["zaya_cxx"] = bi.get("cxx_compiler")
    except Exception as exc:  # pragma: no cover - only with a broken build
        info["zaya_backends"] = f"unavailable: {exc}"
    return info


# --------------------------------------------------------------------------------------------------
# Rows and JSON
# --------------------------------------------------------------------------------------------------

STATUS_OK = "ok"  # timed, output matches the reference
STATUS_NA = "n/a"  # the op has no kernel for this device (NotImplementedError)
STATUS_SKIPPED = "skipped"  # the provider could not be set up (e.g. torch.compile without a C compiler)
STATUS_ERROR = "error"  # the provider raised something else
STATUS_MISMATCH = "mismatch"  # timed, but its output differs from the reference beyond tolerance


@dataclasses.dataclass
class Row:
    """One (op, shape, dtype, provider) measurement; every field is JSON-serialisable."""

    op: str
    shape: str  # "T=4096,H=2048"
    params: dict[str, Any]
    dtype: str
    provider: str
    status: str
    note: str = ""
    # where
    device: str = ""  # slug, e.g. "nvidia-h100-80gb-hbm3" or "cpu-amd-epyc"
    device_name: str = ""
    driver: str | None = None
    runtime: str | None = None
    torch: str = ""
    commit: str | None = None
    timestamp: str = ""
    timer: str = ""
    cache_flushed: bool = False
    threads: int | None = None  # torch intra-op threads (CPU runs)
    loadavg: list[float] | None = None  # 1/5/15-minute load averages when the row was measured
    # what
    bytes: int = 0
    flops: int = 0
    stats: dict[str, float] | None = None  # Stats as a dict, None unless timed
    # derived
    gbps: float | None = None
    tflops: float | None = None
    pct_copy_bw: float | None = None
    pct_gemm: float | None = None
    pct_roofline: float | None = None
    roofline_bound_us: float | None = None
    speedup_vs_eager: float | None = None  # baseline median / this median (baseline: see ``baseline``)
    baseline: str | None = None  # the provider speedup_vs_eager divides by ("eager"; "hf-eager" for the model)
    max_abs_err: float | None = None
    max_rel_err: float | None = None  # max |err| / max |reference|, worst output
    # end-to-end model rows (zaya_ops.bench.model_bench); None for op rows
    tokens: int | None = None  # tokens processed per timed call (prefill: T; decode step: B)
    tokens_per_s: float | None = None  # tokens / median
    floor_tokens_per_s: float | None = None  # decode: tokens/s if only the weight reads took time
    pct_floor: float | None = None  # tokens_per_s as % of floor_tokens_per_s
    # the same ratio in CPU time (CPU runs: weight bytes per CPU-second of the step / copy bytes per
    # CPU-second of the copy probe, see Stats): steadier than pct_floor when other processes load the cores
    pct_floor_cpu: float | None = None

    @property
    def median_us(self) -> float | None:
        return None if self.stats is None else self.stats["median_us"]

    def fill_derived(self, roof: Roofline | None) -> None:
        """GB/s, TFLOP/s and % of the measured ceilings from bytes, FLOPs and the median time."""
        med = self.median_us
        if med is None or med <= 0:
            return
        sec = med * 1e-6
        self.gbps = self.bytes / sec / 1e9
        self.tflops = self.flops / sec / 1e12
        if roof is not None:
            if roof.copy_gbps > 0:
                self.pct_copy_bw = 100.0 * self.gbps / roof.copy_gbps
            if roof.gemm_tflops > 0:
                self.pct_gemm = 100.0 * self.tflops / roof.gemm_tflops
            bound = roof.bound_us(self.bytes, self.flops)
            if bound is not None:
                self.roofline_bound_us = bound
                self.pct_roofline = 100.0 * bound / med

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def utc_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def write_json(path: Path, rows: Sequence[Row], meta: dict[str, Any]) -> Path:
    """Write ``{"schema", "meta", "rows"}`` to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"schema": SCHEMA, "meta": meta, "rows": [r.to_dict() for r in rows]}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")
    tmp.replace(path)
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.dtype):
        return str(o).replace("torch.", "")
    if isinstance(o, (torch.device, Path)):
        return str(o)
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def default_results_dir(device_slug: str) -> Path:
    """bench/results/<device-slug>/ in the source checkout, else ./bench/results/<device-slug>/."""
    root = repo_root()
    base = (root / "bench" / "results") if root is not None else Path("bench") / "results"
    return base / device_slug
