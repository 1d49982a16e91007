#!/usr/bin/env bash
# Everything a session with a lent GPU should run, in stages that each fit one device call (10 min):
#
#   tools/gpu_session.sh build      # CPU + CUDA build for this GPU's arch with the machine's python3
#   tools/gpu_session.sh test       # build, then the whole test suite on the GPU (junit XML kept)
#   tools/gpu_session.sh sanitize   # build, then compute-sanitizer memcheck + racecheck + synccheck on the
#                                   # GPU kernel tests (small shapes)
#   tools/gpu_session.sh bench      # build, then every op's benchmark and its plots
#   tools/gpu_session.sh bench-model  # build, then the end-to-end model benchmark (ZAYA1-8B shapes)
#   tools/gpu_session.sh hopper     # H100/H200: build, then the opt-in wgmma/TMA kernels: their tests
#                                   # (cuda and cuda-wgmma rows), memcheck on them, and a zaya vs
#                                   # zaya-wgmma timing of moe_top1 and cca_attention
#
# Through the device tool: `run` with command "bash tools/gpu_session.sh test" (and so on). Logs, JSON and
# plots go to $OUT (default ./gpu-session-out), under the stage's name; copy bench results into
# bench/results/<device>/ here and commit them. The build stays in build/gpu between calls while the
# machine is warm; each stage rebuilds incrementally, so stages may come in any order.
#
# The machine has its own torch (not the pinned one of tools/setup.sh) and no network, so this builds
# with tools/dev_build.sh and runs from the source tree (PYTHONPATH=python).
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:?usage: tools/gpu_session.sh build|test|sanitize|bench|bench-model|hopper}
out=${OUT:-$PWD/gpu-session-out}
mkdir -p "$out/$stage"
py=${PYTHON:-python3}
export PYTHONPATH=$PWD/python
log() { printf '\n== [%s] %s\n' "$(date +%T)" "$*"; }

log "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$out/$stage/gpu.csv"
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'

arch=$("$py" -c 'import torch; M, m = torch.cuda.get_device_capability(0); print(f"{M}.{m}" + ("a" if M == 9 else ""))')
log "build (sm ${arch})"
if ! TORCH_CUDA_ARCH_LIST="$arch" ZAYA_BACKENDS=cpu,cuda PYTHON="$py" JOBS=$(nproc) \
     tools/dev_build.sh build/gpu > "$out/$stage/build.log" 2>&1; then
  tail -40 "$out/$stage/build.log"
  exit 1
fi
tail -1 "$out/$stage/build.log"
"$py" -c 'import zaya_ops, json; print(json.dumps(zaya_ops.build_info()))' | tee "$out/$stage/build_info.json"

case "$stage" in
  build) ;;
  test)
    log "tests (whole suite; the GPU rows run on cuda)"
    set +e
    "$py" -m pytest tests -q -x -p no:cacheprovider --junitxml="$out/test/junit.xml" 2>&1 | tee "$out/test/pytest.log" | tail -30
    rc=${PIPESTATUS[0]}
    set -e
    exit "$rc"
    ;;
  sanitize)
    # The GPU kernel tests only (-k cuda), each tool in turn; --error-exitcode makes a finding fail the stage.
    sel=(tests/test_norms.py tests/test_moe_top1_gpu.py)
    for f in tests/test_router_gpu.py tests/test_cca_attention_gpu.py tests/test_cca_qkv_gpu.py; do
      [ -e "$f" ] && sel+=("$f")
    done
    status=0
    for tool in memcheck racecheck synccheck; do
      log "compute-sanitizer --tool $tool"
      if ! compute-sanitizer --tool "$tool" --error-exitcode 99 --target-processes all \
           "$py" -m pytest "${sel[@]}" -q -x -k "cuda and not 4096 and not compile" -p no:cacheprovider \
           > "$out/sanitize/$tool.log" 2>&1; then
        status=1
      fi
      grep -E "ERROR SUMMARY|passed|failed" "$out/sanitize/$tool.log" | tail -3
    done
    exit $status
    ;;
  bench)
    log "op benchmarks (roofline measured first; peers in the same run)"
    "$py" -m zaya_ops.bench --device cuda --out "$out/bench" 2>&1 | tee "$out/bench/ops.log" | tail -60
    log "plots"
    "$py" -m zaya_ops.bench.plot "$out/bench" 2>&1 | tail -5
    ;;
  bench-model)
    log "model benchmark (ZAYA1-8B shapes, random weights, against transformers' eager model)"
    "$py" -m zaya_ops.bench --model --device cuda --out "$out/bench-model" 2>&1 | tee "$out/bench-model/model.log" | tail -30
    "$py" -m zaya_ops.bench.plot "$out/bench-model" 2>&1 | tail -5
    ;;
  hopper)
    # The wgmma/TMA kernels were written and emulator-tested without a GPU: this is their first check
    # on silicon. If only these fail, look first at the descriptors' LBO/SBO roles (wgmma.cuh) and the
    # TMA box order (tma.cuh); the default kernels do not depend on them (ZAYA_WGMMA unset).
    log "Hopper kernels: tests (cuda-wgmma), then zaya vs zaya-wgmma"
    set +e
    "$py" -m pytest tests/test_moe_top1_gpu.py tests/test_cca_cpu.py tests/test_unchecked_indices_gpu.py \
        tests/test_no_host_sync.py -q \
        -p no:cacheprovider -k cuda 2>&1 | tee "$out/hopper/pytest.log" | tail -15
    rc=${PIPESTATUS[0]}
    compute-sanitizer --tool memcheck --error-exitcode 99 "$py" -m pytest tests/test_moe_top1_gpu.py -q -x \
        -p no:cacheprovider -k "cuda-wgmma and not 4096" > "$out/hopper/memcheck.log" 2>&1 || rc=1
    grep -E "ERROR SUMMARY|passed|failed" "$out/hopper/memcheck.log" | tail -3
    set -e
    "$py" -m zaya_ops.bench --device cuda --ops moe_top1,cca_attention --providers zaya,zaya-wgmma \
        --out "$out/hopper" 2>&1 | tee "$out/hopper/bench.log" | tail -30
    exit "$rc"
    ;;
  *)
    echo "unknown stage: $stage (build, test, sanitize, bench, bench-model, hopper)" >&2
    exit 2
    ;;
esac
