#!/usr/bin/env bash
# The captured step (CUDA graphs), deepnet's cuBLAS path, the Philox dropout kernel and bf16
# products on a GPU, in one call (issue 15).  Run it after scripts/gpu_check.sh, from the
# repository root on the GPU machine (CuPy, PyTorch, JAX there; deepnet from this tree):
#     OUT=/some/dir bash scripts/gpu_graphs_check.sh
# With MNIST: DEEPNET_MNIST=<folder with the four idx files> (else a synthetic set).
# CPU dry run (cupy-shaped backend, tiny sizes, no GPU):  bash scripts/gpu_graphs_check.sh --dry-run
# Steps: 1. the GPU variants of the tests of these parts, 2. graph parity (benchmarks/graph_parity.py:
# float64 end to end, float32 step by step, accuracy graph vs eager and bf16 vs float32),
# 3. the benchmark of every column of the issue (benchmarks/bench_gpu_graphs.py).  About 6
# minutes at most (each step has a time limit); results and a verdict under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-gpu-graphs-results}"
mkdir -p "$OUT"
DRY=0; [ "${1:-}" = "--dry-run" ] && DRY=1
START=$SECONDS
TESTS=(tests/test_graphs.py tests/test_cublas.py tests/test_counter_rng.py tests/test_precision.py)
if [ "$DRY" = 1 ]; then
  B=cupy-shaped; SEL=(-m "not cupy"); DRYARG="--dry-run"
else
  B=cupy; SEL=(-m cupy); DRYARG=""
  python -c "import deepnet.backend as b; b.get_ops('cupy'); print('cupy backend ok')" || exit 2
fi
T_TESTS=90; T_PARITY=100; T_BENCH=230
limit() { local s=$1; shift; timeout -s INT -k 5 "$s" "$@"; }

echo "== 1. tests of the captured step, cuBLAS, Philox and bf16 ($B variants) =="
limit $T_TESTS python -m pytest -q -p no:cacheprovider "${TESTS[@]}" "${SEL[@]}" -ra > "$OUT/tests.txt" 2>&1
RC_TESTS=$?; tail -3 "$OUT/tests.txt"

echo "== 2. graph parity on $B =="
limit $T_PARITY python benchmarks/graph_parity.py --backend "$B" $DRYARG --json "$OUT/graph_parity.json" \
  2>&1 | tee "$OUT/graph_parity.txt"; RC_PARITY=${PIPESTATUS[0]}

echo "== 3. benchmark: every column of the issue's table =="
limit $T_BENCH python benchmarks/bench_gpu_graphs.py $DRYARG --reps 3 --json "$OUT/bench_graphs.json" \
  > "$OUT/bench_graphs.txt" 2>&1; RC_BENCH=$?
tail -20 "$OUT/bench_graphs.txt"

echo; echo "== verdict ($B$([ "$DRY" = 1 ] && echo ", CPU dry run"), $((SECONDS - START)) s) =="
for step in "tests:$RC_TESTS" "parity:$RC_PARITY" "benchmark:$RC_BENCH"; do
  name=${step%%:*}; rc=${step##*:}
  echo "$([ "$rc" = 0 ] && echo PASS || echo "FAIL (exit $rc)")  $name"
done | tee "$OUT/verdict.txt"
[ "$RC_TESTS" = 0 ] && [ "$RC_PARITY" = 0 ] && [ "$RC_BENCH" = 0 ]
