#!/usr/bin/env bash
# Everything a session with a lent GPU should run, in stages that each fit one device call (10 min):
#
#   tools/gpu_session.sh first-light  # the first GPU call, time-boxed to 7.5 min (H100/H200, 16 cores): build,
#                                   # check-ops and selftest, the one-tile wgmma tests, every GPU kernel
#                                   # test, memcheck on one small case per kernel, a quick benchmark of
#                                   # every op with its peers; each step time-boxed (below)
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
#   Knobs: ZAYA_FIRST_LIGHT_BUDGET (seconds, default 450), ZAYA_MEMCHECK_K (memcheck's pytest -k).
#
#   tools/gpu_session.sh first-light --dry-run   # (or ZAYA_GPU_DRY_RUN=1) on any machine, no GPU: checks
#                                   # the arguments, prints the plan, and runs what needs no GPU (the
#                                   # CPU check-ops, test collection of every selection, the bench's
#                                   # argument parsing), so the first GPU minute is not lost to a typo.
#                                   # tests/test_gpu_session.py runs it in CI.
#
# Through the device tool: `run` with command "bash tools/gpu_session.sh first-light" (timeout_s 540) and
# so on. Output goes to $OUT (default ./gpu-session-out) under the stage's name. The device tool brings
# back at most 8 files, two folders down: first-light therefore writes summary.txt, summary.json and one
# first-light.tar.gz (every log, build_info, the bench JSON), refreshed after each step so that a killed
# call still returns what ran. Copy bench results into bench/results/<device>/ here and commit them. The
# build stays in build/gpu between calls while the machine is warm; each stage rebuilds incrementally.
#
# The machine has its own torch (not the pinned one of tools/setup.sh) and no network, so this builds
# with tools/dev_build.sh and runs from the source tree (PYTHONPATH=python).
set -euo pipefail
cd "$(dirname "$0")/.."

stages="first-light build test sanitize bench bench-model hopper"
usage() {
  echo "usage: tools/gpu_session.sh [--dry-run] STAGE   (STAGE: ${stages// /, })" >&2
}
dry=${ZAYA_GPU_DRY_RUN:-0}
stage=""
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_session.sh: unknown option $arg" >&2; usage; exit 2 ;;
    *)
      if [ -n "$stage" ]; then echo "gpu_session.sh: one stage at a time (got $stage and $arg)" >&2; usage; exit 2; fi
      stage=$arg ;;
  esac
done
if [ -z "$stage" ]; then usage; exit 2; fi
case " $stages " in
  *" $stage "*) ;;
  *) echo "gpu_session.sh: unknown stage: $stage" >&2; usage; exit 2 ;;
esac
if [ "$dry" != 0 ] && [ "$stage" != first-light ]; then
  echo "gpu_session.sh: --dry-run is implemented for first-light (the stage that runs on an untried GPU)" >&2
  exit 2
fi

out=${OUT:-$PWD/gpu-session-out}
mkdir -p "$out/$stage"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
log() { printf '\n== [%s] %s\n' "$(date +%T)" "$*"; }

# The TORCH_CUDA_ARCH_LIST entry for a compute capability "M.m": sm_90a on Hopper (its wgmma kernels),
# plain M.m elsewhere.
arch_for_capability() {
  local cap=$1
  case "$cap" in
    9.*) echo "${cap}a" ;;
    [0-9]*.[0-9]*) echo "$cap" ;;
    *) echo "gpu_session.sh: bad compute capability '$cap'" >&2; return 1 ;;
  esac
}

# ==================================================================================================
# first-light
# ==================================================================================================
if [ "$stage" = first-light ]; then
  budget=${ZAYA_FIRST_LIGHT_BUDGET:-450}  # seconds for the whole stage: 7.5 min, inside the 8 asked
  fl="$out/first-light"
  work=$(mktemp -d "${TMPDIR:-/tmp}/zaya-first-light.XXXXXX")  # logs and JSON, packed into $fl
  t0=$(date +%s)
  overall=0
  : > "$work/summary.tsv"

  # memcheck's cases: small ones that reach every kernel (norms: each dtype pairing and the one-column
  # row; router: both tile configs; moe_top1: decode's gemv and prefill's gemm; cca_qkv: one and two
  # token blocks, varlen; cca_attention: decode, split keys with the combine), on "TARGET" = cuda, which
  # also selects the Hopper rows (cuda-wgmma), or emu32 in a dry run, where every file must contribute.
  memcheck_files="tests/test_norms.py tests/test_router_gpu.py tests/test_moe_top1_gpu.py tests/test_cca_qkv_gpu.py tests/test_cca_cpu.py"
  memcheck_k=${ZAYA_MEMCHECK_K:-"TARGET and not compile and (rms_norm_mixed_dtypes or single_column or (residual_scale_rmsnorm_matches_reference and bfloat16-7-264) or router_other_sizes or launches_per_call or (varlen_batch and bf16) or (attention_decode and bf16) or (few_blocks_split_keys and bf16))"}

  pack() {  # summary + tarball into $fl (at most 3 files come back from this stage)
    {
      printf '%-14s %-38s %6s %6s\n' step status secs limit
      while IFS=$'\t' read -r n s secs lim; do printf '%-14s %-38s %6s %6s\n' "$n" "$s" "$secs" "$lim"; done \
        < "$work/summary.tsv"
    } > "$fl/summary.txt"
    "$py" - "$work/summary.tsv" "$fl/summary.json" "$dry" <<'EOF' || true
import json, sys
rows = [dict(zip(("step", "status", "seconds", "limit"), l.rstrip("\n").split("\t")))
        for l in open(sys.argv[1]) if l.strip()]
json.dump({"dry_run": sys.argv[3] != "0", "steps": rows}, open(sys.argv[2], "w"), indent=1)
EOF
    tar -czf "$fl/first-light.tar.gz.tmp" -C "$work" . && mv -f "$fl/first-light.tar.gz.tmp" "$fl/first-light.tar.gz"
  }
  trap 'pack; rm -rf "$work"' EXIT

  # step NAME SECONDS REQUIRED COMMAND [DRY_COMMAND]: runs COMMAND (a bash string) with a time box of
  # min(SECONDS, what is left of the budget), its output in $work/NAME.log. REQUIRED=1: a failure fails
  # the stage. In a dry run it prints the plan line and runs DRY_COMMAND instead (the CPU part; "" =
  # plan only).
  step() {
    local name=$1 box=$2 required=$3 cmd=$4 dry_cmd=${5:-}
    local now left limit rc status s
    now=$(date +%s)
    left=$(( budget - (now - t0) ))
    limit=$(( box < left ? box : left ))
    if [ "$dry" != 0 ]; then
      printf '  %-14s <= %4ss  %s\n' "$name" "$box" "$cmd" | tee -a "$work/plan.txt"
      if [ -z "$dry_cmd" ]; then
        printf '%s\tplanned (GPU only)\t0\t%s\n' "$name" "$box" >> "$work/summary.tsv"
        return 0
      fi
      cmd=$dry_cmd
      limit=$box
      printf '  %-14s    dry:  %s\n' "" "$dry_cmd" | tee -a "$work/plan.txt"
    fi
    if [ "$limit" -lt 15 ]; then
      printf '%s\tskipped (budget spent)\t0\t%s\n' "$name" "$box" >> "$work/summary.tsv"
      log "$name: skipped, ${left}s of the budget left"
      [ "$required" = 1 ] && overall=1
      return 0
    fi
    log "$name (time box ${limit}s)"
    s=$(date +%s)
    set +e
    timeout --kill-after=10 "$limit" bash -o pipefail -c "$cmd" > "$work/$name.log" 2>&1
    rc=$?
    set -e
    case $rc in
      0) status=ok ;;
      124|137) status="timeout (${limit}s)" ;;
      *) status="failed (rc $rc)" ;;
    esac
    tail -n 12 "$work/$name.log"
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - s ))" "$limit" >> "$work/summary.tsv"
    if [ "$rc" != 0 ] && [ "$required" = 1 ]; then overall=1; fi
    pack
    return 0
  }

  export py work
  if [ "$dry" != 0 ]; then
    log "first-light DRY RUN (no GPU): the plan, and the steps that run on a CPU"
    cap=${ZAYA_GPU_CAPABILITY:-9.0}  # what an H100/H200 reports
    # Import the built tree when it has its module, else the installed zaya_ops (CI's .venv).
    if compgen -G "python/zaya_ops/_C*.so" > /dev/null; then export PYTHONPATH=$PWD/python; fi
    target=emu32
  else
    export PYTHONPATH=$PWD/python
    cap=$("$py" -c 'import torch; M, m = torch.cuda.get_device_capability(0); print(f"{M}.{m}")')
    target=cuda
  fi
  arch=$(arch_for_capability "$cap")
  export TORCH_CUDA_ARCH_LIST=$arch
  mk=${memcheck_k//TARGET/$target}
  jobs=$(nproc)
  echo "first-light: compute capability $cap -> TORCH_CUDA_ARCH_LIST=$arch; budget ${budget}s; python $py"

  step machine 30 1 \
    "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; \"\$py\" -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.get_device_name(0))'" \
    "\"\$py\" -c 'import sys, torch; print(\"python\", sys.version.split()[0], \"torch\", torch.__version__)'"

  # Build: SASS for this GPU plus the default compute_80 PTX; nvcc compiles the two targets of each file
  # in parallel (--threads 2), ninja runs every file at once on the 16 cores.
  step build 270 1 \
    "CUDAFLAGS='--threads 2' ZAYA_BACKENDS=cpu,cuda PYTHON=\"\$py\" JOBS=$jobs tools/dev_build.sh build/gpu && \"\$py\" -c 'import zaya_ops, json; print(json.dumps(zaya_ops.build_info()))' | tee \"\$work/build_info.json\""
  if [ "$dry" = 0 ] && ! grep -q $'^build\tok' "$work/summary.tsv"; then
    log "the build failed: nothing else can run (see build.log in first-light.tar.gz)"
    cat "$fl/summary.txt" 2>/dev/null || true
    exit 1
  fi

  # Self-check: every op against its reference (--check-ops), and zaya_ops.selftest where this tree has it.
  step check-ops 60 1 \
    "\"\$py\" -m zaya_ops --check-ops --device cuda --json" \
    "\"\$py\" -m zaya_ops --check-ops --device cpu"
  selftest_py='import json, sys, zaya_ops
f = getattr(zaya_ops, "selftest", None)
if f is None:
    print("zaya_ops.selftest is not in this tree (issue 14, section 4): nothing to run"); sys.exit(0)
print(json.dumps(f(device=sys.argv[1]), indent=1, default=str))'
  step selftest 60 1 "\"\$py\" -c '$selftest_py' cuda" "\"\$py\" -c '$selftest_py' cpu"

  # The one-tile wgmma tests (Hopper), which settle the descriptor readings first.
  if [ -e tests/test_wgmma_tiles.py ]; then
    step wgmma-tiles 60 1 \
      "\"\$py\" -m pytest tests/test_wgmma_tiles.py -v -p no:cacheprovider -rs" \
      "\"\$py\" -m pytest tests/test_wgmma_tiles.py -q -p no:cacheprovider --collect-only"
  else
    printf '%s\t%s\t0\t0\n' wgmma-tiles "absent (no tests/test_wgmma_tiles.py)" >> "$work/summary.tsv"
  fi

  # Every GPU kernel test except the torch.compile ones (those come last, on what budget is left).
  step tests 150 1 \
    "\"\$py\" -m pytest tests -v -k 'cuda and not compile' -p no:cacheprovider -rfE --durations=15 --junitxml=\"\$work/junit.xml\"" \
    "\"\$py\" -m pytest tests -q -p no:cacheprovider --collect-only -k 'emu32' | tail -3"

  # compute-sanitizer memcheck on one small case per kernel family (the Hopper kernels too: cuda-wgmma).
  sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  step memcheck 120 1 \
    "$sanitizer --tool memcheck --error-exitcode 99 --target-processes all \"\$py\" -m pytest $memcheck_files -q -p no:cacheprovider -k '$mk'" \
    "\"\$py\" -m pytest $memcheck_files -q -p no:cacheprovider --collect-only -k '$mk' > \"\$work/memcheck-ids.txt\"; echo \"memcheck would run \$(grep -c '::' \"\$work/memcheck-ids.txt\") tests\"; for f in $memcheck_files; do grep -q \"^\$f::\" \"\$work/memcheck-ids.txt\" || { echo \"no memcheck case in \$f\"; exit 1; }; done"

  # Every op with its peers, tiny shapes, then every op's backward and forward+backward (--backward: zaya
  # against eager autograd of the reference; ops not differentiable yet give n/a rows), in the same time
  # box (the JSON goes into the tarball).
  step bench 90 0 \
    "\"\$py\" -m zaya_ops.bench --quick --device cuda --out \"\$work/bench\"; r=\$?; \"\$py\" -m zaya_ops.bench --quick --backward --no-roofline --device cuda --out \"\$work/bench\" && exit \$r" \
    "\"\$py\" -m zaya_ops.bench --quick --no-roofline --device cpu --no-write --ops rms_norm,rms_norm_backward --tokens 3 --budget 0.01"

  # The torch.compile tests on the GPU, on what is left of the budget (the tests step's dry run has
  # collected their files already).
  step tests-compile 90 0 "\"\$py\" -m pytest tests -v -k 'cuda and compile' -p no:cacheprovider -rfE"

  log "first-light summary ($(( $(date +%s) - t0 ))s of ${budget}s)"
  pack
  cat "$fl/summary.txt"
  exit "$overall"
fi

# ==================================================================================================
# The other stages: machine, build, then the stage's own work
# ==================================================================================================
export PYTHONPATH=$PWD/python
log "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$out/$stage/gpu.csv"
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'

arch=$(arch_for_capability "$("$py" -c 'import torch; M, m = torch.cuda.get_device_capability(0); print(f"{M}.{m}")')")
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
esac
