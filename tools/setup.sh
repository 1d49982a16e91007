#!/usr/bin/env bash
# Sets up a virtual environment in .venv (or $ZAYA_VENV) with pinned torch, the build tools and the
# test tools, then builds and installs zaya_ops into it.
#   ZAYA_BACKENDS   cpu | cpu,cuda | cpu,hip | auto (default: auto = whatever torch and nvcc allow)
#   TORCH_SPEC      the torch to install (default torch==2.14.1; a ROCm user passes their own)
#   TORCH_CUDA_ARCH_LIST, CMAKE_HIP_ARCHITECTURES   device arch lists (see README)
#   ZAYA_EDITABLE=1 installs in editable mode (rebuild after C++ changes with the same command)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${ZAYA_VENV:-.venv}
torch_spec=${TORCH_SPEC:-torch==2.14.1}
step() { printf '\n== %s\n' "$*"; }
# pip warns once per package about find-links folders some machines list but lack: drop that noise.
quiet_pip() { "$py" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

if [ ! -x "$venv/bin/python" ]; then
  step "creating virtual environment $venv"
  python3 -m venv "$venv"
fi
py="$venv/bin/python"

step "installing $torch_spec and the build/test tools (pinned)"
quiet_pip install -q --disable-pip-version-check "$torch_spec" \
  "scikit-build-core==1.1.2" "pybind11==3.1.0" "cmake==4.4.4" "ninja==1.13.2" \
  "numpy" "safetensors" "tqdm" "matplotlib==3.11.2" \
  "pytest==9.2.0" "pytest-benchmark==5.3.1" "expecttest==0.3.0" "transformers==5.18.0"

# nvcc lives outside PATH on many machines; torch's default arch list is rejected by nvcc 13.
if [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0;9.0a}
export PATH="$(cd "$venv/bin" && pwd):$PATH"   # the PyPI cmake (Debian's is too old)

step "building zaya_ops (backends: ${ZAYA_BACKENDS:-auto}, CUDA archs: $TORCH_CUDA_ARCH_LIST)"
editable=()
if [ "${ZAYA_EDITABLE:-0}" = 1 ]; then editable=(-e); fi
ZAYA_BACKENDS=${ZAYA_BACKENDS:-auto} quiet_pip install -q --disable-pip-version-check \
  --no-build-isolation --no-deps "${editable[@]}" .

step "installed"
"$py" -c "import zaya_ops, json; print(json.dumps(zaya_ops.build_info(), indent=1))"
