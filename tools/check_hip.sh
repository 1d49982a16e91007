#!/usr/bin/env bash
# Compile-check every hip/*.hip for AMD GPUs without a GPU or a ROCm PyTorch, with Debian's clang-16
# and ROCm device libraries, and report each kernel's resources (VGPRs, AGPRs, SGPRs, scratch,
# spills, LDS, occupancy). Fails on a compile error or on any kernel using scratch or spilling.
#
#   tools/check_hip.sh                     # all hip/*.hip, archs gfx940 (MI300 ISA) and gfx90a (MI200)
#   tools/check_hip.sh hip/norms.hip       # some files only
#   ZAYA_HIP_ARCHS="gfx90a" tools/check_hip.sh
#   ZAYA_HIP_ISA_DIR=/tmp/isa tools/check_hip.sh   # also write the ISA, <file>-<arch>.s, e.g. to look
#                                                 # for v_mfma_* in matrix kernels
#
# Needs: apt-get install clang-16 lld-16 hipcc libamdhip64-dev rocm-device-libs
# Each arch is compiled device-only and unbundled (Debian's clang-16 has no clang-offload-bundler),
# plus one host-only pass for the host half of each file (launchers, kernel stubs).
set -euo pipefail
cd "$(dirname "$0")/.."

CLANG=${CLANG:-clang++-16}
archs=${ZAYA_HIP_ARCHS:-"gfx940 gfx90a"}
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

status=0
for f in "${files[@]}"; do
  base=$(basename "$f" .hip)
  if ! "$CLANG" "${flags[@]}" --cuda-host-only -c "$f" -o "$tmp/$base-host.o" 2>"$tmp/host.log"; then
    echo "FAIL $f (host pass)"; cat "$tmp/host.log"; status=1; continue
  fi
  for arch in $archs; do
    log="$tmp/$base-$arch.log"
    if ! "$CLANG" "${flags[@]}" --offload-arch="$arch" --cuda-device-only --no-gpu-bundle-output -c "$f" \
         -o "$tmp/$base-$arch.o" -Rpass-analysis=kernel-resource-usage 2>"$log"; then
      echo "FAIL $f ($arch)"; grep -v 'remark:' "$log" | grep -v '^\s*\^' || true; status=1; continue
    fi
    if [ -n "${ZAYA_HIP_ISA_DIR:-}" ]; then
      "$CLANG" "${flags[@]}" --offload-arch="$arch" --cuda-device-only -S "$f" \
        -o "$ZAYA_HIP_ISA_DIR/$base-$arch.s"
    fi
    # Remarks come as "<loc>: remark: Function Name: X" then "<loc>: remark:     Key: value" lines.
    if ! python3 - "$log" "$f" "$arch" "$filt" <<'EOF'
import re, subprocess, sys
log, src, arch, filt = sys.argv[1:]
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
names = [k["name"] for k in kernels]
if filt != "cat" and names:
    out = subprocess.run([filt], input="\n".join(names), capture_output=True, text=True).stdout.split("\n")
    for k, d in zip(kernels, out):
        k["pretty"] = d
bad = 0
print(f"{src} [{arch}]: {len(kernels)} kernels")
print(f"  {'VGPR':>4} {'AGPR':>4} {'SGPR':>4} {'scratch':>7} {'spill':>5} {'LDS':>6} {'occ':>3}  kernel")
for k in kernels:
    pretty = k.get("pretty", k["name"])
    pretty = re.sub(r"zaya::(kernels::\w+|dtype)::", "", pretty)
    pretty = re.sub(r"\(zaya::kernels::\w+(, int)?\)", "", pretty).replace("void ", "")
    spill = k.get("SGPRs Spill", 0) + k.get("VGPRs Spill", 0)
    scratch = k.get("ScratchSize [bytes/lane]", 0)
    flag = "  <-- SCRATCH/SPILL" if spill or scratch else ""
    bad |= bool(flag)
    print(f"  {k.get('VGPRs', -1):>4} {k.get('AGPRs', -1):>4} {k.get('SGPRs', -1):>4} {scratch:>7} {spill:>5} "
          f"{k.get('LDS Size [bytes/block]', -1):>6} {k.get('Occupancy [waves/SIMD]', -1):>3}  {pretty}{flag}")
sys.exit(1 if bad or not kernels else 0)
EOF
    then
      echo "FAIL $f ($arch): scratch use or spills (or no kernel found)"; status=1
    fi
  done
done
[ $status -eq 0 ] && echo "check_hip.sh: OK" || echo "check_hip.sh: FAILED"
exit $status
