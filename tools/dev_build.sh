#!/usr/bin/env bash
# Developer build: configure and build zaya_ops._C with CMake into BUILD_DIR (default build/dev)
# and copy the module next to the Python sources, so `PYTHONPATH=python` imports it.
#   ZAYA_BACKENDS=cpu tools/dev_build.sh build/dev-cpu
#   TARGETS="_emu_w32 _emu_w64" tools/dev_build.sh build/dev   # only the emulator modules
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build/dev}
py=${PYTHON:-python}
cmake_bin=$("$py" -c 'import cmake, os; print(os.path.join(cmake.CMAKE_BIN_DIR, "cmake"))' 2>/dev/null || echo cmake)
"$cmake_bin" -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DPython_EXECUTABLE="$(command -v "$py")" \
  -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" >/dev/null
# shellcheck disable=SC2086  # TARGETS is a space-separated list
"$cmake_bin" --build "$build_dir" -j "${JOBS:-2}" ${TARGETS:+--target $TARGETS}
# copy then rename: a process that has the old module mapped keeps its (unlinked) file intact
# (only the modules named in TARGETS when it is set: another module in the build folder may be stale)
for so in "$build_dir"/_C*.so "$build_dir"/_emu_w*.so; do
  [ -e "$so" ] || continue
  if [ -n "${TARGETS:-}" ] && [[ " $TARGETS " != *" $(basename "$so" | cut -d. -f1) "* ]]; then continue; fi
  cp "$so" "python/zaya_ops/.$(basename "$so").tmp"
  mv -f "python/zaya_ops/.$(basename "$so").tmp" "python/zaya_ops/$(basename "$so")"
done
echo "built $(ls "$build_dir"/_C*.so "$build_dir"/_emu_w*.so 2>/dev/null | tr '\n' ' ')-> python/zaya_ops/"
