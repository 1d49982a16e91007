#!/usr/bin/env bash
# compute-sanitizer memcheck's stand-in without a GPU: the GPU kernel tests on the SIMT emulator built
# with AddressSanitizer, so an out-of-bounds read or write by a kernel body into a tensor (torch's CPU
# allocator goes through the intercepted posix_memalign) stops the run with the kernel's name.
#
#   tools/emu_memcheck.sh                     # every GPU kernel test file, emulated targets
#   tools/emu_memcheck.sh tests/test_moe_top1_gpu.py -k "emu32 and matches"
#
# Builds build/emu-asan (the two emulator modules only), stages them over a copy of python/zaya_ops in a
# temporary directory, and runs pytest there with libasan preloaded. Caveat: the emulator switches
# fiber stacks without telling ASan, which prints one "ignoring __asan_handle_no_return" warning; no
# false report has been seen from it (a planted 16-byte over-read in expert_gemv was reported as a
# heap-buffer-overflow 0 bytes past x).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
cmake_bin=$("$py" -c 'import cmake, os; print(os.path.join(cmake.CMAKE_BIN_DIR, "cmake"))' 2>/dev/null || echo cmake)
"$cmake_bin" -S . -B build/emu-asan -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$(command -v "$py")" \
  -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" -DZAYA_BACKENDS="cpu;emu" -DZAYA_EMU_SANITIZE=address >/dev/null
"$cmake_bin" --build build/emu-asan -j "${JOBS:-2}" --target _emu_w32 _emu_w64 >/dev/null
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r python/zaya_ops "$stage/"
cp build/emu-asan/_emu_w*.so "$stage/zaya_ops/"
if [ $# -eq 0 ]; then
  set -- tests/test_norms.py tests/test_moe_top1_gpu.py tests/test_router_gpu.py tests/test_cca_qkv_gpu.py \
         tests/test_cca_cpu.py tests/test_unchecked_indices_gpu.py tests/test_model_emulated.py tests/test_emulator.py \
         -k emu
fi
# --capture=sys: pytest must not capture file descriptor 2, or an ASan report vanishes with the abort.
# libstdc++ after libasan: ASan's __cxa_throw interceptor must find the real one when it starts, or the
# first C++ exception (every argument-error test) aborts with "CHECK failed ... real___cxa_throw".
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so.6)" \
  ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 \
  PYTHONPATH="$stage" "$py" -m pytest -q -p no:cacheprovider --capture=sys "$@"
