"""The static kernel report's parsers (zaya_ops.bench.static) on saved outputs of the real tools.

Samples in tests/data/static/ (cut from a build of main, sm_90a, and from tools/check_hip.sh, gfx940):
cuobjdump -res-usage, the .nv.info section of cuobjdump -elf and the SASS of moe::expert_gemm<BF16, true>
(instruction encodings stripped), and that kernel's gfx940 assembly with check_hip.sh's table. The
expected values are read off the samples by other means (grep, and the kernel's source: 2 x 2 x 2
mma() calls of two HMMA each per k-step of 2 sub-steps = 32 HMMA; 16 v_mfma on CDNA), not from the parser.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from zaya_ops.bench import static as S

DATA = Path(__file__).parent / "data" / "static"
GEMM = "_ZN4zaya7kernels3moe11expert_gemmINS_5dtype4BF16ELb1EEEvNS0_11MoeTop1ArgsE"


def test_res_usage_and_max_threads():
    res = S.parse_res_usage((DATA / "res_usage_sm90a.txt").read_text())
    r = res[f"sm_90a:{GEMM}"]
    assert (r["REG"], r["STACK"], r["SHARED"], r["LOCAL"]) == (140, 0, 32000, 0)
    assert len(res) == 2
    with open(DATA / "elf_nv_info_expert_gemm.txt") as f:
        assert S.parse_max_threads(f) == {GEMM: 128}  # __launch_bounds__(kThreads = 4 warps x 32)


def test_sm90_occupancy_by_hand():
    # 140 regs -> 144 per thread (8-register units) -> 4608 per warp; 65536 / 4608 = 14 warps -> 3 blocks of 4
    assert S.sm90_occupancy(140, 32000, 128) == {"blocks_per_sm": 3, "warps_per_sm": 12, "occupancy": 0.188,
                                                 "limiter": "registers"}
    # 32 regs, 512 threads: 4 blocks by warps (64 / 16); shared 1088 + 1024 reserved allows 110
    assert S.sm90_occupancy(32, 1088, 512)["blocks_per_sm"] == 4
    # shared-memory bound: 100 KB blocks -> 2 per SM (228 KB)
    o = S.sm90_occupancy(64, 100 * 1024, 128)
    assert (o["blocks_per_sm"], o["limiter"]) == (2, "shared memory")


def test_sass_mix_and_inner_loop():
    text = (DATA / "sass_moe_expert_gemm_sm90a.txt").read_text()
    got = S.parse_sass(text)[f"sm_90a:{GEMM}"]
    k = got["mix"]
    assert k["counts"]["matrix"] == len(re.findall(r" HMMA\.", text)) == 32
    assert k["counts"]["cp_async"] == len(re.findall(r" LDGSTS", text))
    assert k["cp_async"] and not k["ldmatrix"] and not k["spill_code"]
    loop = got["inner_loop"]
    assert loop["counts"]["matrix"] == 32  # the k-step loop holds every HMMA (the epilogue has none)
    lo, hi = loop["span"]
    # independent count of LDS in that address span
    n_lds = 0
    for line in text.splitlines():
        m = re.match(r"\s*/\*([0-9a-f]+)\*/\s+(?:@!?P\d\s+)?(\S+)", line)
        if m and lo <= int(m.group(1), 16) <= hi and m.group(2).split(".")[0] == "LDS":
            n_lds += 1
    assert loop["counts"]["smem_load"] == n_lds > 0
    assert loop["matrix_per_smem_load"] == round(32 / n_lds, 3)
    assert loop["cp_async"]  # the next stage's copies are issued inside the k loop


def test_cuda_report_rows():
    rows = S.cuda_report((DATA / "res_usage_sm90a.txt").read_text(),
                         (DATA / "sass_moe_expert_gemm_sm90a.txt").read_text(),
                         {GEMM: 128})
    gemm = next(r for r in rows if r["mangled"] == GEMM)
    assert gemm["op"] == "moe_top1" and gemm["registers"] == 140 and not gemm["spills"]
    assert gemm["occupancy_h100"]["blocks_per_sm"] == 3
    assert gemm["mix"]["counts"]["matrix"] == 32
    router = next(r for r in rows if r["mangled"] != GEMM)
    assert router["op"] == "router" and "mix" not in router  # no SASS in the sample for it
    assert "occupancy_h100" not in router  # no block size known
    md = S.to_markdown({"stamp": "x", "commit": "c", "cuda": rows, "hip": [], "model": []})
    assert "| 140 |" in md and "MODEL" in md


def test_check_hip_table_and_isa():
    rows = S.parse_check_hip((DATA / "check_hip_moe_top1_gfx940.txt").read_text())
    assert len(rows) == 9 and all(r["arch"] == "gfx940" and r["variant"] == "default" for r in rows)
    g = next(r for r in rows if r["kernel"] == "expert_gemm<BF16, true>")
    assert (g["vgpr"], g["agpr"], g["lds_bytes"], g["occupancy_waves_per_simd"], g["mfma"]) == (48, 32, 15616, 4, 16)
    text = (DATA / "isa_moe_expert_gemm_gfx940.s").read_text()
    isa = S.parse_hip_isa(text)[GEMM]
    assert isa["mix"]["counts"]["matrix"] == len(re.findall(r"^\s+v_mfma", text, re.M)) == g["mfma"]
    assert isa["inner_loop"]["counts"]["matrix"] == 16
    assert isa["inner_loop"]["counts"]["smem_load"] > 0


@pytest.mark.parametrize("line, cls", [("ds_read_b128", "smem_load"), ("ds_load_b64", "smem_load"),
                                       ("v_mfma_f32_16x16x16bf16_1k", "matrix"), ("scratch_store_dword", "local_store"),
                                       ("v_add_f32", None)])
def test_hip_classes(line, cls):
    assert S.hip_class(line) == cls


def test_inner_loop_prefers_innermost():
    instrs = [(i, "matrix" if i in (2, 3, 7) else "smem_load") for i in range(10)]
    # outer 0..9 holds all three; inner 1..4 holds two, inner 6..8 one: the innermost with most wins
    got = S.inner_loop(instrs, [(0, 9), (1, 4), (6, 8)])
    assert got["span"] == [1, 4] and got["counts"] == {"matrix": 2, "smem_load": 2}
    assert S.inner_loop(instrs, [(4, 5)]) is None


def test_model_rows_are_marked():
    rows = S.expected_times()
    assert rows and all("model" in r["kind"] for r in rows)
    r = rows[0]
    assert r["h100-sxm"]["floor_us"] > 0 and r["mi300x"]["floor_us"] > 0
