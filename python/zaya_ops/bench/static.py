"""Static report per GPU kernel, from the built library and the HIP assembly, without a GPU.

``python -m zaya_ops.bench --static [--so PATH] [--out DIR]`` writes ``static-<stamp>.json`` and
``static-<stamp>.md`` under ``bench/results/static/``:

* CUDA (sm_90a and whatever else the library embeds): per kernel registers, stack/local bytes (spills),
  static shared memory and the block size the kernel was compiled for (``cuobjdump -res-usage`` and the
  ``EIATTR_MAX_THREADS`` attribute of ``cuobjdump -elf``), occupancy on an H100 (computed from those), and
  the instruction mix of the kernel and of its inner loop (``cuobjdump -sass``): matrix instructions
  (HMMA, HGMMA), shared-memory loads (LDS, LDSM = ldmatrix), cp.async (LDGSTS), TMA (UTMALDG), local
  memory (LDL/STL: spills). The inner loop is the innermost backward-branch loop holding the most matrix
  instructions.
* HIP (gfx940 = the MI300 ISA, gfx90a): the resources ``tools/check_hip.sh`` prints (VGPR, AGPR, SGPR,
  scratch, spills, LDS, occupancy in waves per SIMD) and the same instruction mix from the ISA it keeps
  (v_mfma per ds_read / ds_load).
* A model, not a measurement: expected time per op at the bench's ZAYA1 shapes from bytes and FLOPs
  (``layer_cases.projected_cost``) against the H100 SXM and MI300X datasheet peaks.

The parsers are pure functions of the tools' text (tests/test_static_report.py runs them on saved
samples). Tools are looked for in $ZAYA_CUOBJDUMP, PATH, /usr/local/cuda/bin and triton's bundled
binaries (triton/backends/nvidia/bin).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------------------------------
# Instruction classes
# --------------------------------------------------------------------------------------------------

# SASS opcode (the mnemonic before the first '.') -> class.
SASS_CLASSES = {
    "HMMA": "matrix", "HGMMA": "matrix", "IMMA": "matrix", "WGMMA": "matrix",
    "LDS": "smem_load", "LDSM": "ldmatrix",
    "STS": "smem_store",
    "LDGSTS": "cp_async", "LDGDEPBAR": "cp_async_commit", "DEPBAR": "dep_wait",
    "UTMALDG": "tma_load", "UBLKCP": "tma_load",
    "LDG": "global_load", "STG": "global_store",
    "LDL": "local_load", "STL": "local_store",
    "BAR": "barrier",
}


def hip_class(mnemonic: str) -> str | None:
    """Class of an AMDGPU instruction (as for SASS_CLASSES), None for the rest."""
    m = mnemonic
    if m.startswith("v_mfma"):
        return "matrix"
    if m.startswith(("ds_read", "ds_load")):
        return "smem_load"
    if m.startswith(("ds_write", "ds_store")):
        return "smem_store"
    if m.startswith(("global_load", "buffer_load", "flat_load")):
        return "global_load"
    if m.startswith(("global_store", "buffer_store", "flat_store")):
        return "global_store"
    if m.startswith("scratch_load"):
        return "local_load"
    if m.startswith("scratch_store"):
        return "local_store"
    if m == "s_barrier":
        return "barrier"
    return None


@dataclass
class Mix:
    """Instruction counts by class over a span of code, and their ratio of interest."""

    instructions: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, cls: str | None) -> None:
        self.instructions += 1
        if cls is not None:
            self.counts[cls] = self.counts.get(cls, 0) + 1

    def summary(self) -> dict[str, Any]:
        c = self.counts
        loads = c.get("smem_load", 0) + c.get("ldmatrix", 0)
        mat = c.get("matrix", 0)
        return {"instructions": self.instructions, "counts": dict(sorted(c.items())),
                "matrix_per_smem_load": round(mat / loads, 3) if loads else None,
                "ldmatrix": c.get("ldmatrix", 0) > 0, "cp_async": c.get("cp_async", 0) > 0,
                "tma": c.get("tma_load", 0) > 0, "spill_code": c.get("local_load", 0) + c.get("local_store", 0) > 0}


def inner_loop(instrs: list[tuple[int, str | None]], loops: list[tuple[int, int]]) -> dict[str, Any] | None:
    """The innermost loop holding the most matrix instructions.

    instrs: (address or index, class) in program order; loops: (head, branch) spans of backward branches.
    Returns the loop's span and mix, or None when no loop holds a matrix instruction."""
    def mix_of(lo: int, hi: int) -> Mix:
        m = Mix()
        for addr, cls in instrs:
            if lo <= addr <= hi:
                m.add(cls)
        return m

    spans = sorted(set(loops))
    mixes = {s: mix_of(*s) for s in spans}
    with_mat = [s for s in spans if mixes[s].counts.get("matrix", 0) > 0]
    # innermost: no other matrix-holding loop strictly inside it
    inner = [s for s in with_mat
             if not any(o != s and s[0] <= o[0] and o[1] <= s[1] for o in with_mat)]
    if not inner:
        return None
    best = max(inner, key=lambda s: (mixes[s].counts.get("matrix", 0), -(s[1] - s[0])))
    return {"span": [best[0], best[1]]} | mixes[best].summary()


# --------------------------------------------------------------------------------------------------
# CUDA: cuobjdump text
# --------------------------------------------------------------------------------------------------


def _functions(text: str, header: str):
    """(arch, function or None, line) over cuobjdump's text: ``header`` is the regex of a function's
    first line (group 1 its mangled name); the arch comes from the preceding 'arch = ' line."""
    arch, fn = None, None
    for line in text.splitlines():
        m = re.match(r"\s*arch = (\S+)", line)
        if m:
            arch, fn = m.group(1), None
            continue
        m = re.match(header, line)
        if m:
            fn = m.group(1)
            yield arch, fn, None
            continue
        yield arch, fn, line


def _summarise(funcs: dict[str, list[tuple[int, str | None]]], loops: dict[str, list[tuple[int, int]]]):
    out = {}
    for fn, instrs in funcs.items():
        k = Mix()
        for _, cls in instrs:
            k.add(cls)
        out[fn] = {"mix": k.summary(), "inner_loop": inner_loop(instrs, loops[fn])}
    return out


def parse_res_usage(text: str) -> dict[str, dict[str, Any]]:
    """``cuobjdump -res-usage``: {mangled name: {arch, REG, STACK, SHARED, LOCAL, ...}}."""
    out: dict[str, dict[str, Any]] = {}
    for arch, fn, line in _functions(text, r"\s*Function (\S+):\s*$"):
        if fn is not None and line is not None and "REG:" in line:
            vals = {k: int(v) for k, v in re.findall(r"(\w+)(?:\[\d+\])?:(\d+)", line)}
            out[f"{arch}:{fn}"] = {"arch": arch, "name": fn} | vals
    return out


def parse_max_threads(elf_lines) -> dict[str, int]:
    """``cuobjdump -elf`` lines: {mangled name: EIATTR_MAX_THREADS x*y*z} (from __launch_bounds__)."""
    out: dict[str, int] = {}
    fn, want = None, False
    for line in elf_lines:
        if line.startswith(".nv.info."):
            fn = line.strip()[len(".nv.info."):]
            continue
        if "Attribute:" in line:
            want = fn is not None and "EIATTR_MAX_THREADS" in line
            continue
        if want and "Value:" in line:
            dims = [int(v, 16) for v in re.findall(r"0x[0-9a-fA-F]+", line)]
            if dims:
                n = 1
                for d in dims:
                    n *= d
                out[fn] = n
            want = False
    return out


# "/*addr*/ [@pred] OPCODE.mods operands ;"; "@!PT" marks never-executed padding (ptxas' "@!PT LDS RZ, [RZ]").
_SASS_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)(\S*)\s*([^;]*);")


def parse_sass(text: str) -> dict[str, dict[str, Any]]:
    """``cuobjdump -sass``: {arch:mangled name: {"mix": the kernel's, "inner_loop": ...}}."""
    funcs: dict[str, list[tuple[int, str | None]]] = {}
    loops: dict[str, list[tuple[int, int]]] = {}
    for arch, name, line in _functions(text, r"\s*Function : (\S+)"):
        if name is None:
            continue
        fn = f"{arch}:{name}"
        if line is None:
            funcs[fn], loops[fn] = [], []
            continue
        m = _SASS_INSTR.search(line)
        if not m or (m.group(2) or "").strip() == "@!PT":
            continue
        addr, op, ops = int(m.group(1), 16), m.group(3), m.group(5)
        funcs[fn].append((addr, SASS_CLASSES.get(op)))
        if op == "BRA":
            t = re.search(r"0x([0-9a-f]+)", ops)
            if t and int(t.group(1), 16) <= addr:
                loops[fn].append((int(t.group(1), 16), addr))
    return _summarise(funcs, loops)


# H100 SXM (sm_90) per-SM limits, from NVIDIA's CUDA occupancy calculator data for compute capability 9.0.
SM90 = {"regs": 65536, "reg_unit": 256, "max_warps": 64, "max_blocks": 32, "smem": 233472,
        "smem_reserved_per_block": 1024, "max_regs_per_thread": 255}


def sm90_occupancy(regs: int, smem: int, threads: int) -> dict[str, Any]:
    """Blocks per SM and warp occupancy on sm_90 from registers/thread, shared bytes/block, threads/block."""
    warps = -(-threads // 32)
    per_warp = -(-max(regs, 1) * 32 // SM90["reg_unit"]) * SM90["reg_unit"]
    by_regs = (SM90["regs"] // per_warp) // warps
    by_smem = SM90["smem"] // (smem + SM90["smem_reserved_per_block"])
    by_warps = SM90["max_warps"] // warps
    blocks = min(by_regs, by_smem, by_warps, SM90["max_blocks"])
    limiter = min((("registers", by_regs), ("shared memory", by_smem), ("warps", by_warps),
                   ("blocks", SM90["max_blocks"])), key=lambda kv: kv[1])[0]
    return {"blocks_per_sm": blocks, "warps_per_sm": blocks * warps,
            "occupancy": round(blocks * warps / SM90["max_warps"], 3), "limiter": limiter}


def demangle(names: list[str]) -> dict[str, str]:
    filt = shutil.which("c++filt") or shutil.which("llvm-cxxfilt-16")
    if not filt or not names:
        return {n: n for n in names}
    res = subprocess.run([filt], input="\n".join(names), capture_output=True, text=True, check=False)
    pretty = res.stdout.split("\n")
    return {n: (pretty[i] if i < len(pretty) and pretty[i] else n) for i, n in enumerate(names)}


def short_name(pretty: str) -> str:
    """'void zaya::kernels::moe::expert_gemm<zaya::dtype::BF16, true>(zaya::kernels::MoeTop1Args)' ->
    'moe::expert_gemm<BF16, true>'."""
    s = re.sub(r"^void ", "", pretty)
    s = re.sub(r"\(.*\)$", "", s)
    s = s.replace("zaya::kernels::", "").replace("zaya::dtype::", "").replace("zaya::", "")
    return s


def op_of(name: str) -> str | None:
    """The zaya op a kernel serves (by its namespace or name)."""
    for key, op in (("attn::", "cca_attention"), ("moe::", "moe_top1"), ("router", "router"),
                    ("cca_qkv", "cca_qkv"), ("qkv::", "cca_qkv"), ("norm", "rms_norm"), ("wgmma_tile", None)):
        if key in name:
            return op
    return None


def cuda_report(res_text: str, sass_text: str, max_threads: dict[str, int]) -> list[dict[str, Any]]:
    """Rows of the CUDA report from the three tools' outputs."""
    res = parse_res_usage(res_text)
    sass = parse_sass(sass_text)
    names = sorted({v["name"] for v in res.values()})
    pretty = demangle(names)
    rows = []
    for key, r in sorted(res.items(), key=lambda kv: short_name(pretty[kv[1]["name"]])):
        name = short_name(pretty[r["name"]])
        threads = max_threads.get(r["name"])
        row = {"backend": "cuda", "arch": r["arch"], "kernel": name, "op": op_of(name), "mangled": r["name"],
               "registers": r.get("REG"), "stack_bytes": r.get("STACK"), "local_bytes": r.get("LOCAL"),
               "static_shared_bytes": r.get("SHARED"), "max_threads": threads,
               "spills": bool(r.get("STACK") or r.get("LOCAL"))}
        if threads and r["arch"].startswith("sm_90"):
            row["occupancy_h100"] = sm90_occupancy(r.get("REG", 0), r.get("SHARED", 0), threads) | {
                "note": "static shared memory only; a kernel with dynamic shared memory (the *_sm90 ones) uses more"}
        row |= sass.get(key, {})
        rows.append(row)
    return rows


def find_tool(name: str) -> str | None:
    env = os.environ.get(f"ZAYA_{name.upper()}")
    if env:
        return env
    p = shutil.which(name)
    if p:
        return p
    cands = [Path("/usr/local/cuda/bin") / name]
    try:
        import triton  # noqa: PLC0415

        cands.append(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)
    except Exception:  # noqa: BLE001 - triton is optional
        pass
    return next((str(c) for c in cands if c.exists()), None)


def run_cuda(so: Path) -> list[dict[str, Any]]:
    tool = find_tool("cuobjdump")
    if tool is None:
        raise RuntimeError("cuobjdump not found (set ZAYA_CUOBJDUMP, or install triton, which bundles it)")

    def run(*args: str) -> str:
        return subprocess.run([tool, *args, str(so)], capture_output=True, text=True, check=True).stdout

    res = run("-res-usage")
    if "Function" not in res:
        raise RuntimeError(f"{so} holds no CUDA device code (build with ZAYA_BACKENDS including cuda)")
    with subprocess.Popen([tool, "-elf", str(so)], stdout=subprocess.PIPE, text=True) as p:
        threads = parse_max_threads(p.stdout)
    return cuda_report(res, run("-sass"), threads)


# --------------------------------------------------------------------------------------------------
# HIP: check_hip.sh's table and ISA
# --------------------------------------------------------------------------------------------------

_HIP_ROW = re.compile(r"^\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)\s+(\d+)\s+(\d+)\s+(-?\d+)\s+(-?\d+)\s+(\d+)\s+(.+?)(\s+<--.*)?$")


def parse_check_hip(text: str) -> list[dict[str, Any]]:
    """tools/check_hip.sh's tables: one row per (file, arch, variant, kernel)."""
    rows, src, arch, variant = [], None, None, None
    for line in text.splitlines():
        m = re.match(r"== variant (\S+)", line)
        if m:
            variant = m.group(1)
            continue
        m = re.match(r"(\S+\.hip) \[(\w+)\]: \d+ kernels", line)
        if m:
            src, arch = m.group(1), m.group(2)
            continue
        m = _HIP_ROW.match(line)
        if m and src is not None:
            v = [int(m.group(i)) for i in range(1, 9)]
            rows.append({"backend": "hip", "arch": arch, "variant": variant, "file": src, "kernel": m.group(9).strip(),
                         "vgpr": v[0], "agpr": v[1], "sgpr": v[2], "scratch_bytes": v[3], "spills": v[4],
                         "lds_bytes": v[5], "occupancy_waves_per_simd": v[6], "mfma": v[7]})
    return rows


def parse_hip_isa(text: str) -> dict[str, dict[str, Any]]:
    """AMDGPU assembly (clang -S): {symbol: {"mix", "inner_loop"}}; loops are backward branches to a label."""
    funcs: dict[str, list[tuple[int, str | None]]] = {}
    loops: dict[str, list[tuple[int, int]]] = {}
    labels: dict[str, int] = {}
    fn = None
    idx = 0
    for line in text.splitlines():
        m = re.match(r"\s*\.type\s+([^,\s]+),@function", line)
        if m:
            fn = m.group(1)
            funcs[fn], loops[fn], labels = [], [], {}
            continue
        if fn is None:
            continue
        if re.match(r"\s*\.Lfunc_end", line):
            fn = None
            continue
        m = re.match(r"^(\.L\w+):", line)
        if m:
            labels[m.group(1)] = idx
            continue
        m = re.match(r"\s+([a-z][a-z0-9_]*)\b\s*(.*)", line)
        if not m or m.group(1).startswith("."):
            continue
        op, rest = m.group(1), m.group(2)
        funcs[fn].append((idx, hip_class(op)))
        if op.startswith("s_cbranch") or op == "s_branch":
            t = re.match(r"(\.L\w+)", rest)
            if t and t.group(1) in labels:
                loops[fn].append((labels[t.group(1)], idx))
        idx += 1
    return _summarise(funcs, loops)


def run_hip(root: Path, archs: str = "gfx940 gfx90a", files: list[str] | None = None) -> list[dict[str, Any]]:
    """Runs tools/check_hip.sh (default variant; all hip/*.hip or ``files``), parses its table and ISA;
    rows per kernel and arch."""
    with tempfile.TemporaryDirectory() as isa_dir:
        env = os.environ | {"ZAYA_HIP_ISA_DIR": isa_dir, "ZAYA_HIP_VARIANTS": "default", "ZAYA_HIP_ARCHS": archs}
        res = subprocess.run([str(root / "tools" / "check_hip.sh"), *(files or [])], cwd=root, env=env, capture_output=True,
                             text=True, check=False)
        rows = parse_check_hip(res.stdout)
        isa: dict[tuple[str, str], dict[str, Any]] = {}
        for s in Path(isa_dir).glob("*.s"):
            base, arch, _ = s.stem.rsplit("-", 2)
            for sym, mix in parse_hip_isa(s.read_text(errors="replace")).items():
                isa[(f"hip/{base}.hip", arch, sym)] = mix
    # Match the table's pretty names to the ISA's symbols through the demangler.
    pretty = demangle(sorted({k[2] for k in isa}))
    by_pretty = {}
    for (f, arch, sym), mix in isa.items():
        p = re.sub(r"zaya::(kernels::\w+|dtype)::", "", pretty[sym])
        p = re.sub(r"\(zaya::kernels::\w+(, int)?\)", "", p).replace("void ", "")
        by_pretty[(f, arch, p)] = mix
    for r in rows:
        r["op"] = op_of(Path(r["file"]).stem + "::" + r["kernel"])
        r |= by_pretty.get((r["file"], r["arch"], r["kernel"]), {})
    if res.returncode != 0:
        rows.append({"backend": "hip", "error": "check_hip.sh failed", "tail": res.stdout[-2000:]})
    return rows


# --------------------------------------------------------------------------------------------------
# The model: bytes and FLOPs against datasheet peaks
# --------------------------------------------------------------------------------------------------


def expected_times() -> list[dict[str, Any]]:
    """Per (op, bench shape): bytes, FLOPs and the roofline floor on H100 SXM and MI300X (a model)."""
    from . import cases as C  # noqa: PLC0415
    from .layer_cases import projected_cost  # noqa: PLC0415
    from .report import DATASHEETS  # noqa: PLC0415

    out = []
    for name in ("cca_qkv", "cca_attention", "router", "moe_top1"):
        b = C.get(name)
        for params in b.shapes(quick=False):
            nb, fl = projected_cost(name, params)
            row = {"op": name, "shape": {k: v for k, v in params.items() if k in ("phase", "T", "B", "ctx")},
                   "bytes": nb, "flops": fl, "kind": "model (datasheet peaks, not a measurement)"}
            for dev, ds in DATASHEETS.items():
                tb, tf = nb / (ds["hbm_tbps"] * 1e12), fl / (ds["bf16_tflops"] * 1e12)
                row[dev] = {"bound": "memory" if tb >= tf else "compute", "floor_us": round(max(tb, tf) * 1e6, 3)}
            out.append(row)
    return out


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------


def _loop_cell(r: dict[str, Any]) -> str:
    lp = r.get("inner_loop")
    if not lp:
        return "-"
    c = lp["counts"]
    ratio = lp["matrix_per_smem_load"]
    return (f"{c.get('matrix', 0)} mma / {c.get('smem_load', 0)} lds + {c.get('ldmatrix', 0)} ldsm"
            f" = {'-' if ratio is None else ratio}; cp.async {c.get('cp_async', 0)}")


def _yes(r: dict[str, Any], key: str) -> str:
    return "-" if "mix" not in r else "yes" if r["mix"][key] else "no"


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Static kernel report ({report['stamp']}, commit {report.get('commit')})", "",
             "Made by `python -m zaya_ops.bench --static` from the built library (cuobjdump) and "
             "tools/check_hip.sh's assembly. Nothing here ran on a GPU.", "",
             f"CUDA library: `{report.get('library')}`" + (f"; label: {report['label']}" if report.get("label") else "")
             + (f"; HIP rows from `{report['hip_rows_from']}`" if report.get("hip_rows_from") else ""), ""]
    cuda = [r for r in report["cuda"] if "error" not in r]
    if cuda:
        lines += ["## CUDA", "", "| kernel | arch | regs | stack/local | smem (static) | threads | H100 occupancy "
                  "(limiter) | inner loop: matrix / smem loads | ldmatrix | cp.async | kernel mma / lds / ldsm |",
                  "|---|---|---:|---:|---:|---:|---|---|---|---|---|"]
        for r in cuda:
            occ = r.get("occupancy_h100")
            kc = r["mix"]["counts"] if "mix" in r else {}
            lines.append(
                f"| {r['kernel']} | {r['arch']} | {r['registers']} | {r['stack_bytes']}/{r['local_bytes']} | "
                f"{r['static_shared_bytes']} | {r['max_threads'] or '-'} | "
                f"{'-' if not occ else str(occ['occupancy']) + ' (' + occ['limiter'] + ')'} | {_loop_cell(r)} | "
                f"{_yes(r, 'ldmatrix')} | {_yes(r, 'cp_async')} | "
                f"{kc.get('matrix', 0)} / {kc.get('smem_load', 0)} / {kc.get('ldmatrix', 0)} |")
        lines.append("")
    hip = [r for r in report["hip"] if "error" not in r]
    if hip:
        lines += ["## HIP", "", "| kernel | file | arch | VGPR | AGPR | scratch | spills | LDS | waves/SIMD | "
                  "inner loop: matrix / smem loads | kernel mfma / ds_read |", "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
        for r in hip:
            kc = r["mix"]["counts"] if "mix" in r else {}
            lines.append(f"| {r['kernel']} | {r['file']} | {r['arch']} | {r['vgpr']} | {r['agpr']} | {r['scratch_bytes']} | "
                         f"{r['spills']} | {r['lds_bytes']} | {r['occupancy_waves_per_simd']} | {_loop_cell(r)} | "
                         f"{kc.get('matrix', 0)} / {kc.get('smem_load', 0)} |")
        lines.append("")
    for r in report["cuda"] + report["hip"]:
        if "error" in r:
            lines += [f"**{r['backend']}: {r['error']}**", ""]
    lines += ["## Expected time: a MODEL from bytes and FLOPs against datasheet peaks (not a measurement)", "",
              "| op | shape | MB | GFLOP | H100 SXM floor us (bound) | MI300X floor us (bound) |",
              "|---|---|---:|---:|---:|---:|"]
    for r in report["model"]:
        shape = ",".join(f"{k}={v}" for k, v in r["shape"].items())
        lines.append(f"| {r['op']} | {shape} | {r['bytes'] / 1e6:,.3f} | {r['flops'] / 1e9:,.3f} | "
                     f"{r['h100-sxm']['floor_us']:,.2f} ({r['h100-sxm']['bound']}) | "
                     f"{r['mi300x']['floor_us']:,.2f} ({r['mi300x']['bound']}) |")
    return "\n".join(lines) + "\n"


def build_report(so: Path | None, root: Path, hip: bool = True, hip_rows: Path | None = None) -> dict[str, Any]:
    from .harness import git_commit, utc_stamp  # noqa: PLC0415

    report: dict[str, Any] = {"schema": "zaya_ops.bench.static/1", "stamp": utc_stamp(), "commit": git_commit(),
                              "library": str(so) if so else None, "cuda": [], "hip": []}
    if so is not None:
        try:
            report["cuda"] = run_cuda(so)
        except (RuntimeError, subprocess.CalledProcessError) as e:
            report["cuda"] = [{"backend": "cuda", "error": str(e)}]
    if hip_rows is not None:  # rows an earlier run_hip of the same tree saved (check_hip.sh is slow)
        report["hip"] = json.loads(Path(hip_rows).read_text())
        report["hip_rows_from"] = str(hip_rows)
    elif hip:
        report["hip"] = run_hip(root)
    report["model"] = expected_times()
    return report


def default_library() -> Path | None:
    import zaya_ops  # noqa: PLC0415

    found = sorted(Path(zaya_ops.__file__).parent.glob("_C*.so"))
    return found[0] if found else None


def main(so: Path | None, out_dir: Path | None, hip: bool, write: bool, log=print, hip_rows: Path | None = None,
         label: str | None = None) -> int:
    from .harness import repo_root  # noqa: PLC0415

    root = repo_root() or Path.cwd()
    so = so or default_library()
    report = build_report(so, root, hip=hip, hip_rows=hip_rows)
    if label:
        report["label"] = label
    md = to_markdown(report)
    print(md)
    if write:
        out_dir = out_dir or (root / "bench" / "results" / "static")
        out_dir.mkdir(parents=True, exist_ok=True)
        name = f"static-{report['stamp']}" + (f"-{label}" if label else "")
        (out_dir / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
        (out_dir / f"{name}.md").write_text(md)
        log(f"wrote {out_dir}/{name}.json and .md")
    bad = [r for r in report["cuda"] + report["hip"] if "error" in r]
    return 1 if bad else 0


__all__ = ["asdict", "build_report", "cuda_report", "expected_times", "inner_loop", "main", "parse_check_hip",
           "parse_hip_isa", "parse_max_threads", "parse_res_usage", "parse_sass", "sm90_occupancy", "to_markdown"]
