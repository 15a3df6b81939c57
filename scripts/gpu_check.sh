#!/usr/bin/env bash
# Every GPU check in one call.  On the GPU machine (CuPy and PyTorch installed there, no
# package registry; deepnet runs from this source tree), from the repository root:
#     OUT=/some/dir bash scripts/gpu_check.sh
# CPU dry run (no GPU needed; numpy vs the CuPy-shaped backend, small sizes):
#     bash scripts/gpu_check.sh --dry-run
# Steps: 1. tests, 2. parity (criteria a, b, c of benchmarks/gpu_parity.py), 3. the CLI on
# the backend (train, evaluate, predict), 4. benchmark against PyTorch.  Full results go to
# $OUT (JSON and text); the last screen is a verdict, one line per step.  Each step has a
# time limit (the tests' from their count), so the whole script stays near 6 minutes at most.
#     bash scripts/gpu_check.sh --plan      # count the GPU tests, print every step's limit, run nothing
# GPU_CHECK_DEADLINE (seconds since the epoch, optional): no step runs past it, so this script
# and scripts/gpu_graphs_check.sh fit one device command together (docs/gpu.md).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-gpu-results}"
DRY=0; PLAN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --plan) PLAN=1 ;;
    *) echo "gpu_check.sh: unknown option $arg (expected --dry-run, --plan)" >&2; exit 2 ;;
  esac
done
[ "$PLAN" = 1 ] || mkdir -p "$OUT"
START=$SECONDS
# the dry-run test runs this script: never from inside it
SELF_TEST=tests/test_gpu.py::test_gpu_check_script_dry_run
# nor the tests that run these scripts with --plan or past their deadline (CPU tests)
SCRIPT_TESTS=(--deselect tests/test_gpu.py::test_gpu_check_sizes_the_tests_limit_from_their_count
              --deselect tests/test_gpu.py::test_the_gpu_scripts_stop_at_their_shared_deadline)
if [ "$DRY" = 1 ]; then
  B=cupy-shaped; PARITY="--dry-run"; BENCH="--dry-run"
  TESTS=(tests/test_gpu.py tests/test_cupy_shaped.py --deselect "$SELF_TEST" "${SCRIPT_TESTS[@]}")
else
  B=cupy; PARITY=""; BENCH=""
  # the CuPy variants only (CI runs every CPU variant already): kernels compile on first use
  TESTS=(tests -m cupy --deselect "$SELF_TEST")
  [ "$PLAN" = 1 ] || python -c "import deepnet.backend as b; b.get_ops('cupy'); print('cupy backend ok')" || exit 2
fi
# how many tests step 1 runs (collected, not run: no GPU needed)
N_TESTS=$(python -m pytest -q -p no:cacheprovider --collect-only "${TESTS[@]}" 2>/dev/null \
  | sed -nE 's/^([0-9]+)(\/[0-9]+)? tests? collected.*/\1/p' | tail -1)
N_TESTS=${N_TESTS:-0}
# time limits per step (seconds); a step that reaches its limit is stopped (SIGINT, then SIGKILL
# 5 s later) and fails.  The tests' limit follows their count: 104 GPU tests took 18 s on an H200
# (0.17 s each, kernels compiled on first use included), so 0.35 s a test (twice that) plus 40 s
# for starting Python, collecting the suite and initialising CUDA: 181 s for 404 tests.  Expected
# on a GPU: about 3 minutes in all (tests about 85 s, parity 30 s, CLI 20 s, benchmark 40 s).
if [ "$DRY" = 1 ]; then T_TESTS=120; else T_TESTS=$((40 + (N_TESTS * 35 + 99) / 100)); fi
T_PARITY=70; T_TRAIN=20; T_CLI=15; T_BENCH=40
T_ALL=$((T_TESTS + T_PARITY + T_TRAIN + 2 * T_CLI + T_BENCH))
DEADLINE=${GPU_CHECK_DEADLINE:-0}
limit() {       # limit SECONDS COMMAND...: at most SECONDS, and never past GPU_CHECK_DEADLINE
  local s=$1 left; shift
  if [ "$DEADLINE" -gt 0 ]; then
    left=$((DEADLINE - $(date +%s)))
    if [ "$left" -lt 10 ]; then echo "not run: GPU_CHECK_DEADLINE has passed" >&2; return 124; fi
    [ "$left" -lt "$s" ] && s=$left
  fi
  timeout -s INT -k 5 "$s" "$@"
}
if [ "$PLAN" = 1 ]; then
  echo "tests: $N_TESTS GPU tests, limit $T_TESTS s; parity $T_PARITY s; CLI train $T_TRAIN s, evaluate $T_CLI s," \
    "predict $T_CLI s; benchmark $T_BENCH s; in all $T_ALL s"
  exit 0
fi

echo "== 1. test suite ($([ "$DRY" = 1 ] && echo "CuPy-shaped and GPU tests" || echo "all, CuPy variants included"):" \
  "$N_TESTS tests, limit $T_TESTS s) =="
limit $T_TESTS python -m pytest -q -p no:cacheprovider "${TESTS[@]}" -ra --junitxml="$OUT/tests.xml" \
  > "$OUT/tests.txt" 2>&1; RC_TESTS=$?
tail -3 "$OUT/tests.txt"

echo "== 2. parity: numpy vs $B (criteria a, b, c) =="
limit $T_PARITY python benchmarks/gpu_parity.py --a numpy --b "$B" $PARITY --json "$OUT/parity.json" \
  2>&1 | tee "$OUT/parity.txt"; RC_PARITY=${PIPESTATUS[0]}

echo "== 3. CLI on $B: train, evaluate, predict =="
CLI="$OUT/cli"
mkdir -p "$CLI"
limit $T_TRAIN python -m deepnet train --backend "$B" --dataset digits --epochs 3 --out "$CLI" --quiet \
  > "$OUT/cli-train.txt" 2>&1; RC_TRAIN=$?
tail -1 "$OUT/cli-train.txt"
limit $T_CLI python -m deepnet evaluate "$CLI/model.npz" --backend "$B" --json "$OUT/cli-evaluate.json" \
  > "$OUT/cli-evaluate.txt" 2>&1; RC_EVAL=$?
head -2 "$OUT/cli-evaluate.txt"
python -c "import sys, numpy as np; from deepnet.datasets import load_digits; d = load_digits()
np.save(sys.argv[1] + '/rows.npy', d.X_test[:8]); np.save(sys.argv[1] + '/rows-labels.npy', d.y_test[:8])" "$CLI"
limit $T_CLI python -m deepnet predict "$CLI/model.npz" "$CLI/rows.npy" --backend "$B" \
  > "$OUT/cli-predict.txt" 2>&1; RC_PREDICT=$?
cat "$OUT/cli-predict.txt"

echo "== 4. benchmark against PyTorch on the same device =="
limit $T_BENCH python benchmarks/bench_gpu.py $BENCH --json "$OUT/bench.json" > "$OUT/bench.txt" 2>&1; RC_BENCH=$?
tail -5 "$OUT/bench.txt"

echo; echo "== verdict: numpy vs $B$([ "$DRY" = 1 ] && echo ", CPU dry run") =="
python - "$OUT" "$B" "$((SECONDS - START))" "$RC_TESTS" "$RC_PARITY" "$RC_TRAIN" "$RC_EVAL" "$RC_PREDICT" \
  "$RC_BENCH" <<'EOF'
import json, re, sys
from pathlib import Path

out, backend, seconds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rc = dict(zip(("tests", "parity", "train", "evaluate", "predict", "bench"), map(int, sys.argv[4:])))


def load(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None


def text(name):
    try:
        return (out / name).read_text()
    except OSError:
        return ""


def why(code):
    return {124: "timed out", 137: "killed (time limit)", 130: "interrupted (time limit)"}.get(code, f"exit {code}")


lines = []


def line(step, ok, figure):
    lines.append({"step": step, "ok": bool(ok), "figure": figure})


summary = [s for s in text("tests.txt").splitlines() if re.search(r"\d+ (passed|failed|error)", s)]
line("tests", rc["tests"] == 0, (summary[-1].strip("= ") if summary else "no summary")
     + ("" if rc["tests"] == 0 else f" ({why(rc['tests'])})"))

parity = load("parity.json") or {}
for c in "abc":
    res = parity.get(f"criterion_{c}")
    if res is None:
        line(f"parity ({c})", False, parity.get("error") or f"no result ({why(rc['parity'])})")
    elif c == "c":
        line(f"parity ({c})", res["ok"], f"float32 one epoch: test accuracy differs by {res['figure']:.2f} points "
                                         f"(A {res['accuracy_a']:.2f}%; threshold {res['threshold']:g})")
    else:
        what = "float64 end to end" if c == "a" else "float32 one step"
        worst = max(res["runs"], key=lambda k: res["runs"][k]["max_rel_diff"])
        line(f"parity ({c})", res["ok"], f"{what}: max rel diff {res['figure']:.1e} (threshold {res['threshold']:g}; "
                                         f"worst {worst}: {res['runs'][worst]['worst_tensor']})")

summ = load("cli/summary.json") or {}
acc_train = summ.get("test", {}).get("accuracy")
line("CLI train", rc["train"] == 0 and acc_train is not None,
     f"test accuracy {100 * acc_train:.2f}% after {len(summ['history']['loss'])} epochs ({summ['train_seconds']:.1f} s)"
     if acc_train is not None else why(rc["train"]))
ev = load("cli-evaluate.json") or {}
acc_eval = ev.get("accuracy")
same = acc_eval is not None and acc_train is not None and abs(acc_eval - acc_train) <= 0.005
line("CLI evaluate", rc["evaluate"] == 0 and same,
     f"accuracy {100 * acc_eval:.2f}% ({'matches' if same else 'differs from'} train's)"
     if acc_eval is not None else why(rc["evaluate"]))
rows = [r.split("\t") for r in text("cli-predict.txt").splitlines() if r.count("\t") >= 2]
try:
    import numpy as np

    labels = np.load(out / "cli" / "rows-labels.npy").tolist()
except (OSError, ValueError):
    labels = []
right = sum(1 for r, t in zip(rows, labels) if r[1] == str(t))
line("CLI predict", rc["predict"] == 0 and len(rows) == len(labels) > 0,
     f"{len(rows)} of {len(labels)} rows predicted, {right} correct"
     + ("" if rc["predict"] == 0 else f" ({why(rc['predict'])})"))

bench = load("bench.json") or {}
res = bench.get("results", {})
if res:
    import statistics

    def med(r, k):
        return statistics.median(r[k]) if r.get(k) else None

    parts = []
    for name, r in res.items():
        d, t = med(r, "deepnet"), med(r, "torch")
        parts.append(f"{name} {d:,.0f}/s" + (f" ({d / t:.2f}x PyTorch)" if t else ""))
    line("benchmark", rc["bench"] == 0, "; ".join(parts))
else:
    line("benchmark", False, f"no result ({why(rc['bench'])})")

for r in lines:
    print(f"{'PASS' if r['ok'] else 'FAIL'}  {r['step']:<13s} {r['figure']}")
ok = all(r["ok"] for r in lines)
print(f"{'PASS' if ok else 'FAIL'}  overall       numpy vs {backend}, {seconds} s; details in {out}/")
verdict = {"backend": backend, "ok": ok, "seconds": seconds, "steps": lines}
(out / "verdict.json").write_text(json.dumps(verdict, indent=2))
sys.exit(0 if ok else 1)
EOF
exit $?
