#!/usr/bin/env bash
# Compile-check every hip/*.hip for AMD GPUs without a GPU or a ROCm PyTorch, with Debian's clang-16
# and ROCm device libraries, and report each kernel's resources (VGPRs, AGPRs, SGPRs, scratch,
# spills, LDS, occupancy) and its MFMA instruction count. Fails on a compile error, on any kernel
# using scratch or spilling, and on a matrix kernel (router_kernel, router_bwd_layer, expert_gemm, expert_bwd_gemm,
# cca_qkv_kernel, cca_attention_fwd, cca_attention_bwd_dq/_dkdv) missing or without v_mfma in its ISA.
#
# Every file is compiled in two variants, both of which must pass:
#   default   as the installed compiler defines the target macros;
#   no-wsize  with -U__AMDGCN_WAVEFRONT_SIZE on both passes, as LLVM 22 (the compiler of current
#             ROCm 7.x) compiles: it no longer defines that macro (llvm-project PR #157463), so
#             vendor.h must derive the wave size from the architecture macros. The ROCm 5.2 headers
#             Debian ships read the macro in one line (hip/amd_detail/amd_warp_functions.h, the
#             constexpr `warpSize`); this variant compiles against a copy of those headers with that
#             line written as ROCm 7's headers have it (a run-time `warpSize` object returning
#             __builtin_amdgcn_wavefrontsize()), so nothing in the compile can use the macro.
#
#   tools/check_hip.sh                     # all hip/*.hip, archs gfx940 (MI300 ISA) and gfx90a (MI200)
#   tools/check_hip.sh hip/norms.hip       # some files only
#   ZAYA_HIP_ARCHS="gfx90a" tools/check_hip.sh
#   ZAYA_HIP_VARIANTS="no-wsize" tools/check_hip.sh   # one variant (default: "default no-wsize")
#   ZAYA_HIP_ISA_DIR=/tmp/isa tools/check_hip.sh      # also keep the ISA, <file>-<arch>-<variant>.s
#
# Needs: apt-get install clang-16 lld-16 hipcc libamdhip64-dev rocm-device-libs
# Each arch is compiled device-only to its ISA (Debian's clang-16 has no clang-offload-bundler), plus
# one host-only pass for the host half of each file (launchers, kernel stubs).
set -euo pipefail
cd "$(dirname "$0")/.."

CLANG=${CLANG:-clang++-16}
archs=${ZAYA_HIP_ARCHS:-"gfx940 gfx90a"}
variants=${ZAYA_HIP_VARIANTS:-"default no-wsize"}
device_libs=${ZAYA_ROCM_DEVICE_LIBS:-/usr/lib/x86_64-linux-gnu/amdgcn/bitcode}
rocm_path=${ZAYA_ROCM_PATH:-/usr}

missing=()
command -v "$CLANG" >/dev/null 2>&1 || missing+=("clang-16 (and lld-16)")
[ -f "$rocm_path/include/hip/hip_runtime.h" ] || missing+=("libamdhip64-dev and hipcc (HIP headers in $rocm_path/include/hip)")
[ -d "$device_libs" ] || missing+=("rocm-device-libs (bitcode in $device_libs)")
if [ ${#missing[@]} -gt 0 ]; then
  echo "check_hip.sh: the HIP toolchain is incomplete; missing:" >&2
  for m in "${missing[@]}"; do echo "  - $m" >&2; done
  echo "install with: apt-get update && apt-get install -y clang-16 lld-16 hipcc libamdhip64-dev rocm-device-libs" >&2
  exit 2
fi

if [ $# -gt 0 ]; then files=("$@"); else files=(hip/*.hip); fi
if [ ! -e "${files[0]}" ]; then
  echo "check_hip.sh: no hip/*.hip files"
  exit 0
fi

filt=$(command -v llvm-cxxfilt-16 || command -v c++filt || echo cat)
flags=(-x hip -std=c++20 -O3 --rocm-path="$rocm_path" --rocm-device-lib-path="$device_libs"
       -Icsrc -Wall -Wno-unused-function -Werror)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -n "${ZAYA_HIP_ISA_DIR:-}" ]; then mkdir -p "$ZAYA_HIP_ISA_DIR"; fi

# The matrix kernel of each file: it must exist and hold v_mfma instructions on every arch.
# (several kernels: names separated by '|', each must hold v_mfma.)
declare -A matrix=([router]=router_kernel [router_backward]=router_bwd_layer [moe_top1]=expert_gemm
                   [moe_top1_backward]=expert_bwd_gemm [cca_qkv]=cca_qkv_kernel [cca_qkv_backward]=conv_kernel
                   [cca_attention]=cca_attention_fwd
                   [cca_attention_backward]="cca_attention_bwd_dq|cca_attention_bwd_dkdv")

# The headers of the no-wsize variant: a copy of the HIP headers whose warpSize does not read the macro.
make_no_wsize_headers() {
  local dir="$tmp/no-wsize"
  mkdir -p "$dir"
  cp -r "$rocm_path/include/hip" "$dir/hip"
  python3 - "$dir/hip" <<'EOF'
import pathlib, re, sys
root = pathlib.Path(sys.argv[1])
warp = root / "amd_detail" / "amd_warp_functions.h"
old = "static constexpr int warpSize = __AMDGCN_WAVEFRONT_SIZE;"
# ROCm 7's form; clang 16 has the intrinsic llvm.amdgcn.wavefrontsize but not yet its builtin.
new = """#if !__has_builtin(__builtin_amdgcn_wavefrontsize)
extern "C" __device__ int __zaya_llvm_wavefrontsize() __asm("llvm.amdgcn.wavefrontsize");
#define __builtin_amdgcn_wavefrontsize __zaya_llvm_wavefrontsize
#endif
inline __device__ const struct final {
  __device__ __attribute__((always_inline, const)) operator int() const noexcept {
#ifdef __HIP_DEVICE_COMPILE__
    return __builtin_amdgcn_wavefrontsize();
#endif
  }
} warpSize{};"""
text = warp.read_text()
if old in text:
    warp.write_text(text.replace(old, new, 1))
# Any other use outside a preprocessor condition (where an undefined macro reads as 0) would make
# this variant fail for the headers' sake, not ours: say so plainly.
for h in root.rglob("*.h"):
    for n, line in enumerate(h.read_text(errors="replace").splitlines(), 1):
        if "__AMDGCN_WAVEFRONT_SIZE" in line and not re.match(r"\s*#\s*(if|elif)", line):
            sys.exit(f"check_hip.sh: {h}:{n} still reads __AMDGCN_WAVEFRONT_SIZE; extend make_no_wsize_headers")
EOF
}

variant_flags=()
set_variant() {
  case "$1" in
    default) variant_flags=() ;;
    no-wsize)
      [ -d "$tmp/no-wsize/hip" ] || make_no_wsize_headers
      variant_flags=(-U__AMDGCN_WAVEFRONT_SIZE -isystem "$tmp/no-wsize")
      # The variant's premise: neither pass of the compile defines the macro.
      echo 'int probe;' > "$tmp/probe.hip"
      local pass
      for pass in --cuda-host-only --cuda-device-only; do
        if "$CLANG" "${flags[@]}" "${variant_flags[@]}" --offload-arch=gfx940 "$pass" -dM -E "$tmp/probe.hip" \
             | grep -q __AMDGCN_WAVEFRONT_SIZE; then
          echo "check_hip.sh: -U__AMDGCN_WAVEFRONT_SIZE left the macro defined ($pass)" >&2
          return 1
        fi
      done
      ;;
    *) echo "check_hip.sh: unknown variant '$1' (default, no-wsize)" >&2; return 1 ;;
  esac
}

status=0
for variant in $variants; do
  set_variant "$variant"
  echo "== variant $variant ${variant_flags[*]:-}"
  for f in "${files[@]}"; do
    base=$(basename "$f" .hip)
    if ! "$CLANG" "${flags[@]}" "${variant_flags[@]}" --cuda-host-only -c "$f" -o "$tmp/$base-host.o" \
         2>"$tmp/host.log"; then
      echo "FAIL $f (host pass, $variant)"; cat "$tmp/host.log"; status=1; continue
    fi
    for arch in $archs; do
      log="$tmp/$base-$arch.log"
      isa="$tmp/$base-$arch.s"
      if ! "$CLANG" "${flags[@]}" "${variant_flags[@]}" --offload-arch="$arch" --cuda-device-only -S "$f" \
           -o "$isa" -Rpass-analysis=kernel-resource-usage 2>"$log"; then
        echo "FAIL $f ($arch, $variant)"; grep -v 'remark:' "$log" | grep -v '^\s*\^' || true; status=1; continue
      fi
      if [ -n "${ZAYA_HIP_ISA_DIR:-}" ]; then cp "$isa" "$ZAYA_HIP_ISA_DIR/$base-$arch-$variant.s"; fi
      # Remarks come as "<loc>: remark: Function Name: X" then "<loc>: remark:     Key: value" lines.
      if ! python3 - "$log" "$isa" "$f" "$arch" "$filt" "${matrix[$base]:-}" <<'EOF'
import re, subprocess, sys
log, isa, src, arch, filt, matrix = sys.argv[1:]
kernels, cur = [], None
for line in open(log, errors="replace"):
    m = re.search(r"remark: Function Name: (\S+)", line)
    if m:
        cur = {"name": m.group(1)}
        kernels.append(cur)
        continue
    m = re.search(r"remark:\s+([A-Za-z][A-Za-z /\[\]]*?): (\d+)", line)
    if m and cur is not None:
        cur[m.group(1).strip()] = int(m.group(2))
# v_mfma instructions per function of the ISA (a function's code follows its .type directive).
mfma, fn = {}, None
for line in open(isa, errors="replace"):
    m = re.match(r"\s*\.type\s+([^,\s]+),@function", line)
    if m:
        fn = m.group(1)
        mfma.setdefault(fn, 0)
    elif fn is not None and re.match(r"\s*v_mfma_", line):
        mfma[fn] += 1
names = [k["name"] for k in kernels]
if filt != "cat" and names:
    out = subprocess.run([filt], input="\n".join(names), capture_output=True, text=True).stdout.split("\n")
    for k, d in zip(kernels, out):
        k["pretty"] = d
bad = False
matrix_kernels = 0
print(f"{src} [{arch}]: {len(kernels)} kernels")
print(f"  {'VGPR':>4} {'AGPR':>4} {'SGPR':>4} {'scratch':>7} {'spill':>5} {'LDS':>6} {'occ':>3} {'mfma':>4}  kernel")
for k in kernels:
    pretty = k.get("pretty", k["name"])
    is_matrix = bool(matrix) and re.search(r"\b(" + "|".join(map(re.escape, matrix.split("|"))) + r")\b",
                                           pretty) is not None
    pretty = re.sub(r"zaya::(kernels::\w+|dtype)::", "", pretty)
    pretty = re.sub(r"\(zaya::kernels::\w+(, int)?\)", "", pretty).replace("void ", "")
    spill = k.get("SGPRs Spill", 0) + k.get("VGPRs Spill", 0)
    scratch = k.get("ScratchSize [bytes/lane]", 0)
    n_mfma = mfma.get(k["name"], 0)
    flag = "  <-- SCRATCH/SPILL" if spill or scratch else ""
    if is_matrix:
        matrix_kernels += 1
        if n_mfma == 0:
            flag += "  <-- MATRIX KERNEL WITHOUT v_mfma"
    bad |= bool(flag)
    print(f"  {k.get('VGPRs', -1):>4} {k.get('AGPRs', -1):>4} {k.get('SGPRs', -1):>4} {scratch:>7} {spill:>5} "
          f"{k.get('LDS Size [bytes/block]', -1):>6} {k.get('Occupancy [waves/SIMD]', -1):>3} {n_mfma:>4}  {pretty}{flag}")
if matrix and matrix_kernels == 0:
    print(f"  no kernel named {matrix}: the matrix kernel this check expects in {src}")
    bad = True
sys.exit(1 if bad or not kernels else 0)
EOF
      then
        echo "FAIL $f ($arch, $variant): scratch use or spills, a matrix kernel without v_mfma, or no kernel found"
        status=1
      fi
    done
  done
done
[ $status -eq 0 ] && echo "check_hip.sh: OK ($variants)" || echo "check_hip.sh: FAILED"
exit $status
