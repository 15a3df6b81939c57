#!/usr/bin/env bash
# Samples/s of `deepnet train --dataset mnist --nproc 2 --epochs 1`, a commit before ranks had their
# share of the cores (default 883a836) against this checkout, in interleaved runs (docs/distributed.md).
# Needs the mnist and mpi extras and the MNIST files in $DEEPNET_DATA (or ~/.cache/deepnet/mnist).
# Usage: scripts/measure_nproc.sh [BASE_COMMIT] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-883a836}
runs=${2:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git archive "$base" | tar -x -C "$work" --one-top-level=base
here=$PWD
cd "$work"          # not the checkout: `python -m deepnet` (the ranks) puts the current folder first on sys.path
for rep in $(seq "$runs"); do
  for tree in "$work/base" "$here"; do
    name=$([ "$tree" = "$here" ] && echo "this checkout" || echo "$base")
    line=$(PYTHONPATH="$tree" deepnet train --dataset mnist --nproc 2 --epochs 1 --out "$work/out-$rep" 2>&1 \
           | grep -o 'epoch 1/1.*' || true)
    rm -rf "$work/out-$rep"
    echo "run $rep, $name: ${line:-failed}"
  done
done
