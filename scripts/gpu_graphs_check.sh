#!/usr/bin/env bash
# The captured step (CUDA graphs), deepnet's cuBLAS path, the Philox dropout kernel and bf16
# products on a GPU, in one call (issue 15).  Run it after scripts/gpu_check.sh, from the
# repository root on the GPU machine (CuPy, PyTorch, JAX there; deepnet from this tree):
#     OUT=/some/dir bash scripts/gpu_graphs_check.sh
# With MNIST: DEEPNET_MNIST=<folder with the four idx files> (else a synthetic set).
# CPU dry run (cupy-shaped backend, tiny sizes, no GPU):  bash scripts/gpu_graphs_check.sh --dry-run
# Steps: 1. the GPU variants of the tests of these parts, 2. graph parity (benchmarks/graph_parity.py:
# float64 end to end, float32 step by step, accuracy graph vs eager and bf16 vs float32),
# 3. the benchmark of every column of the issue (benchmarks/bench_gpu_graphs.py).  About 7
# minutes at most (each step has a time limit); results and a verdict under $OUT.
# --skip-tests: no step 1 (its tests are among scripts/gpu_check.sh's, run just before);
# --plan: print the steps' limits, run nothing.  GPU_CHECK_DEADLINE (seconds since the epoch,
# optional): no step runs past it (docs/gpu.md: both scripts in one device command).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-gpu-graphs-results}"
DRY=0; SKIP_TESTS=0; PLAN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --skip-tests) SKIP_TESTS=1 ;;
    --plan) PLAN=1 ;;
    *) echo "gpu_graphs_check.sh: unknown option $arg (expected --dry-run, --skip-tests, --plan)" >&2; exit 2 ;;
  esac
done
[ "$PLAN" = 1 ] || mkdir -p "$OUT"
START=$SECONDS
TESTS=(tests/test_graphs.py tests/test_cublas.py tests/test_counter_rng.py tests/test_precision.py)
if [ "$DRY" = 1 ]; then
  B=cupy-shaped; SEL=(-m "not cupy"); DRYARG="--dry-run"
else
  B=cupy; SEL=(-m cupy); DRYARG=""
  [ "$PLAN" = 1 ] || python -c "import deepnet.backend as b; b.get_ops('cupy'); print('cupy backend ok')" || exit 2
fi
# time limits per step (seconds): the tests (12 GPU tests), graph parity, and the benchmark, whose
# own --max-seconds-total stops it 10 s before its limit (it keeps every column it measured)
T_TESTS=90; T_PARITY=100; T_BENCH=230
[ "$SKIP_TESTS" = 1 ] && T_TESTS=0
DEADLINE=${GPU_CHECK_DEADLINE:-0}
left() {        # seconds of SECONDS left before GPU_CHECK_DEADLINE (all of them without one)
  local s=$1
  if [ "$DEADLINE" -gt 0 ] && [ $((DEADLINE - $(date +%s))) -lt "$s" ]; then s=$((DEADLINE - $(date +%s))); fi
  echo "$s"
}
limit() {       # limit SECONDS COMMAND...: at most SECONDS, and never past GPU_CHECK_DEADLINE
  local s; s=$(left "$1"); shift
  if [ "$s" -lt 10 ]; then echo "not run: GPU_CHECK_DEADLINE has passed" >&2; return 124; fi
  timeout -s INT -k 5 "$s" "$@"
}
if [ "$PLAN" = 1 ]; then
  echo "tests $T_TESTS s; graph parity $T_PARITY s; benchmark $T_BENCH s; in all $((T_TESTS + T_PARITY + T_BENCH)) s"
  exit 0
fi

if [ "$SKIP_TESTS" = 1 ]; then
  echo "== 1. tests: skipped (--skip-tests: scripts/gpu_check.sh ran them) =="; RC_TESTS=0
else
  echo "== 1. tests of the captured step, cuBLAS, Philox and bf16 ($B variants) =="
  limit $T_TESTS python -m pytest -q -p no:cacheprovider "${TESTS[@]}" "${SEL[@]}" -ra > "$OUT/tests.txt" 2>&1
  RC_TESTS=$?; tail -3 "$OUT/tests.txt"
fi

echo "== 2. graph parity on $B =="
limit $T_PARITY python benchmarks/graph_parity.py --backend "$B" $DRYARG --json "$OUT/graph_parity.json" \
  2>&1 | tee "$OUT/graph_parity.txt"; RC_PARITY=${PIPESTATUS[0]}

echo "== 3. benchmark: every column of the issue's table =="
T_BENCH=$(left $T_BENCH)
BENCH_TOTAL=$((T_BENCH > 20 ? T_BENCH - 10 : 10))
limit $T_BENCH python benchmarks/bench_gpu_graphs.py $DRYARG --reps 3 --max-seconds-total $BENCH_TOTAL \
  --json "$OUT/bench_graphs.json" > "$OUT/bench_graphs.txt" 2>&1; RC_BENCH=$?
tail -20 "$OUT/bench_graphs.txt"

echo; echo "== verdict ($B$([ "$DRY" = 1 ] && echo ", CPU dry run"), $((SECONDS - START)) s) =="
for step in "tests:$RC_TESTS" "parity:$RC_PARITY" "benchmark:$RC_BENCH"; do
  name=${step%%:*}; rc=${step##*:}
  echo "$([ "$rc" = 0 ] && echo PASS || echo "FAIL (exit $rc)")  $name"
done | tee "$OUT/verdict.txt"
[ "$RC_TESTS" = 0 ] && [ "$RC_PARITY" = 0 ] && [ "$RC_BENCH" = 0 ]
