#!/usr/bin/env bash
# Every GPU check in one call.  On the GPU machine (CuPy and PyTorch installed there, no
# package registry), from the repository root:
#     OUT=/some/dir bash scripts/gpu_check.sh
# CPU dry run (no GPU needed; numpy vs the strict backend, tiny sizes):
#     bash scripts/gpu_check.sh --dry-run
# Writes full results as JSON under $OUT and prints a short table last.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-gpu-results}"
mkdir -p "$OUT"
DRY=0; [ "${1:-}" = "--dry-run" ] && DRY=1
status=0
if [ "$DRY" = 1 ]; then
  B=strict; STEPS=20; BENCH="--dry-run"; TESTS="tests/test_layers.py -k strict"
else
  B=cupy; STEPS=300; BENCH=""; TESTS="tests"
  python -c "import deepnet.backend as b; b.get_ops('cupy'); print('cupy backend ok')" || exit 2
fi
echo "== 1. test suite (CuPy variants included) =="
python -m pytest -q -p no:cacheprovider $TESTS -ra --junitxml="$OUT/tests.xml" > "$OUT/tests.txt" 2>&1 || status=1
tail -3 "$OUT/tests.txt"
echo "== 2. parity: numpy vs $B =="
python benchmarks/gpu_parity.py --a numpy --b "$B" --steps "$STEPS" --json "$OUT/parity.json" | tee "$OUT/parity.txt" || status=1
echo "== 3. benchmark against PyTorch on the same device =="
python benchmarks/bench_gpu.py $BENCH --json "$OUT/bench.json" > "$OUT/bench.txt" 2>&1 || status=1
echo; echo "== summary =="; grep -E "passed|failed" "$OUT/tests.txt" | tail -1; cat "$OUT/parity.txt"; tail -6 "$OUT/bench.txt"
exit $status
