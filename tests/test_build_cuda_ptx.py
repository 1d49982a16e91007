"""The CUDA build embeds PTX of a portable architecture beside its machine code (issue 14, section 2).

A fat binary built only for "-real" architectures holds no PTX, and a GPU newer than the list (sm_100,
sm_120) then finds no kernel image. These tests read the ``.nv_fatbin`` ELF section of the built
``zaya_ops._C`` and parse its fat-binary headers (no CUDA tool needed), so they prove what the library
really holds, and check it against ``zaya_ops.build_info()``. Skipped only for builds without CUDA.

Fat-binary layout (as written by nvcc's fatbinary; the same fields cuobjdump lists): the section holds
one or more containers, each a 16-byte header (u32 magic 0xBA55ED50, u16 version, u16 header size, u64
size of the entries that follow) and its entries, each with a header of (u16 kind: 1 PTX, 2 ELF; u16
version; u32 header size; u64 padded payload size; u32 compressed size; u32; u16 minor, u16 major;
u32 arch, e.g. 80 or 90; ...; u64 flags at byte 40, where 0x100000 marks an arch-specific target such
as sm_90a and 0x8000 a compressed payload; u64 uncompressed size at byte 56) and its payload.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

import zaya_ops

INFO = zaya_ops.build_info()
pytestmark = pytest.mark.skipif("cuda" not in INFO["backends"], reason="this build has no CUDA backend")

FATBIN_MAGIC = 0xBA55ED50
KIND_PTX, KIND_ELF = 1, 2
FLAG_ARCH_SPECIFIC = 0x100000
FLAG_COMPRESSED = 0x8000


@dataclass(frozen=True)
class Entry:
    container: int  # index of the fat-binary container (one per CUDA translation unit)
    kind: int
    arch: int  # e.g. 80, 90
    flags: int
    payload: bytes

    @property
    def name(self) -> str:
        a = str(self.arch) + ("a" if self.flags & FLAG_ARCH_SPECIFIC else "")
        return ("compute_" if self.kind == KIND_PTX else "sm_") + a


def elf_section(path: Path, wanted: str) -> bytes:
    """The contents of section ``wanted`` of a little-endian ELF64 file (b"" if absent)."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, f"{path} is not a little-endian ELF64 file"
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]
    for name, _type, _flags, _addr, offset, size in headers:
        end = data.index(b"\0", names_at + name)
        if data[names_at + name:end].decode() == wanted:
            return data[offset:offset + size]
    return b""


def fatbin_entries(section: bytes) -> list[Entry]:
    """Every entry of every fat-binary container in ``section``."""
    entries, pos, container = [], 0, 0
    while pos + 16 <= len(section):
        magic, _version, header_size, size = struct.unpack_from("<IHHQ", section, pos)
        if magic != FATBIN_MAGIC:  # containers are 8-byte aligned; skip padding
            pos += 8
            continue
        p, end = pos + header_size, pos + header_size + size
        assert end <= len(section), "a fat-binary container runs past its section"
        while p < end:
            kind, _ev, ehs, payload_size = struct.unpack_from("<HHIQ", section, p)
            (arch,) = struct.unpack_from("<I", section, p + 28)
            (flags,) = struct.unpack_from("<Q", section, p + 40)
            assert kind in (KIND_PTX, KIND_ELF), f"unknown fat-binary entry kind {kind} at byte {p}"
            assert ehs >= 64 and p + ehs + payload_size <= end, f"malformed fat-binary entry at byte {p}"
            entries.append(Entry(container, kind, arch, flags, section[p + ehs:p + ehs + payload_size]))
            p += ehs + payload_size
        pos, container = end, container + 1
    return entries


def library_path() -> Path:
    from zaya_ops import _C

    return Path(_C.__file__)


@pytest.fixture(scope="module")
def entries() -> list[Entry]:
    section = elf_section(library_path(), ".nv_fatbin")
    assert section, f"{library_path()} has no .nv_fatbin section although build_info() lists the cuda backend"
    found = fatbin_entries(section)
    assert found, "the .nv_fatbin section holds no fat-binary entries"
    return found


def arch_number(name: str) -> tuple[int, bool]:
    """'9.0a' -> (90, True); '8.0' -> (80, False); 'compute_80' -> (80, False)."""
    name = name.removeprefix("compute_").replace("+PTX", "").replace(".", "")
    specific = name.endswith(("a", "f"))
    return int(name.rstrip("af")), specific


def test_build_info_names_portable_ptx():
    ptx = INFO["cuda_ptx"]
    assert ptx, ("this CUDA build embeds no PTX, so GPUs newer than cuda_archs find no kernel image; "
                 "build with the default ZAYA_CUDA_PTX (8.0)")
    for p in ptx:
        assert p.startswith("compute_") and not arch_number(p)[1], f"{p}: PTX must be of a portable arch"


def test_every_translation_unit_holds_the_ptx(entries):
    want = {arch_number(p)[0] for p in INFO["cuda_ptx"]}
    containers = sorted({e.container for e in entries})
    with_code = [c for c in containers if any(e.container == c and e.kind == KIND_ELF for e in entries)]
    # One container per cuda/*.cu (each kernel family); every one must carry the PTX too.
    n_cu = len(list((Path(__file__).resolve().parents[1] / "cuda").glob("*.cu")))
    assert len(with_code) >= n_cu, f"{len(with_code)} fat-binary containers with machine code, {n_cu} CUDA sources"
    for c in with_code:
        ptx = {e.arch for e in entries if e.container == c and e.kind == KIND_PTX}
        assert ptx == want, f"container {c}: PTX for {sorted(ptx)}, build_info() says {sorted(want)}"
    for e in entries:
        if e.kind == KIND_PTX:
            assert not e.flags & FLAG_ARCH_SPECIFIC, f"{e.name}: arch-specific PTX runs on one GPU only"


def test_machine_code_matches_cuda_archs(entries):
    have = {(e.arch, bool(e.flags & FLAG_ARCH_SPECIFIC)) for e in entries if e.kind == KIND_ELF}
    for a in INFO["cuda_archs"]:
        assert arch_number(a) in have, f"no machine code for {a} (have {sorted(have)})"


def _decompress(e: Entry) -> str | None:
    """The PTX text of an entry: stored, or zstd-compressed (nvcc 13) and decompressed by the zstd tool."""
    if not e.flags & FLAG_COMPRESSED:
        return e.payload.split(b"\0", 1)[0].decode()
    zstd = shutil.which("zstd")
    if zstd is None or e.payload[:4] != b"\x28\xb5\x2f\xfd":
        return None
    out = subprocess.run([zstd, "-dc"], input=e.payload, capture_output=True)
    return out.stdout.split(b"\0", 1)[0].decode() if out.stdout else None


def test_ptx_text_holds_every_kernel_family(entries):
    texts = [_decompress(e) for e in entries if e.kind == KIND_PTX]
    if any(t is None for t in texts):
        pytest.skip("the PTX is zstd-compressed and no zstd tool is installed to read it")
    ptx = "\n".join(texts)
    for p in INFO["cuda_ptx"]:
        assert f".target sm_{arch_number(p)[0]}" in ptx
    for kernel in ("rms_norm", "router_kernel", "expert_gemm", "expert_gemv", "cca_qkv_kernel", "cca_attention_fwd",
                   "cca_attention_combine"):
        assert any(kernel in line for line in ptx.splitlines() if ".entry" in line), f"no PTX entry for {kernel}"


def _tool(name: str) -> str | None:
    for d in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if d and Path(d, "bin", name).is_file():
            return str(Path(d, "bin", name))
    return shutil.which(name)


def test_ptx_assembles_for_blackwell(entries, tmp_path):
    """What a B200's driver does with the embedded PTX, done ahead of time: ptxas for sm_100 (the norms'
    container, the smallest, keeps it quick)."""
    ptxas = _tool("ptxas")
    if ptxas is None:
        pytest.skip("no ptxas")
    ptx = [e for e in entries if e.kind == KIND_PTX]
    texts = [(_decompress(e), e) for e in ptx]
    texts = [(t, e) for t, e in texts if t is not None and "rms_norm" in t]
    if not texts:
        pytest.skip("the PTX is compressed and no zstd tool is installed to read it")
    src = tmp_path / "norms.ptx"
    src.write_text(texts[0][0])
    out = subprocess.run([ptxas, "-arch=sm_100", str(src), "-o", str(tmp_path / "norms.cubin")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_cuobjdump_agrees(entries):
    """When a cuobjdump is at hand (CUDA toolkit, or PyPI's nvidia-cuda-cuobjdump), it lists the same PTX."""
    tool = _tool("cuobjdump")
    if tool is None:
        try:
            import nvidia.cu13  # noqa: F401  (PyPI's CUDA 13 packages install their tools here)

            cand = Path(nvidia.cu13.__path__[0], "bin", "cuobjdump")
            tool = str(cand) if cand.is_file() else None
        except ImportError:
            tool = None
    if tool is None:
        pytest.skip("no cuobjdump")
    out = subprocess.run([tool, "--list-ptx", str(library_path())], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    listed = [ln for ln in out.stdout.splitlines() if ln.startswith("PTX file")]
    ours = [e for e in entries if e.kind == KIND_PTX]
    assert len(listed) == len(ours)
    for e, ln in zip(ours, listed):
        assert ln.endswith(f".sm_{e.arch}.ptx"), (ln, e.name)
