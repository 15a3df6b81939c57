"""A/B speed of two checkouts of deepnet: the same training run in alternating processes.

Each repetition runs one process per checkout (A, then B), each timing one epoch of ``fit``
after a short warm-up (numba compilation, caches), on the first ``--samples`` MNIST images.
Reports each side's median and the median of the per-pair ratios B/A (pairs share the
machine's state, so the ratio is steadier than either time).

    git worktree add /tmp/old <commit>
    DEEPNET_MNIST=../shared/data/mnist python benchmarks/ab_checkouts.py /tmp/old . --batch 1 --reps 15
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import sys, time
import deepnet as dn
from deepnet.datasets import load_mnist_folder
from deepnet.presets import mlp_layers, seed_network
path, n, bs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
(X, y), _ = load_mnist_folder(path, scale="seed")
X, y = X[:n], y[:n]
if bs == 1:     # the seed network: 784-50-10 sigmoid, sum of squares, per-sample SGD
    net = seed_network()
    kw = dict(loss=dn.SumOfSquares(on=0.99, off=0.01), optimizer=dn.SGD(0.1), shuffle=False)
else:
    net = dn.Network(mlp_layers("784-256-128-10", "relu"), seed=0)
    kw = dict(loss="xent", optimizer=dn.SGD(0.05, momentum=0.9))
net.fit(X[:500], y[:500], epochs=1, batch_size=bs, **kw)
t = time.perf_counter()
net.fit(X, y, epochs=1, batch_size=bs, **kw)
print(time.perf_counter() - t)
"""


def run(src: str, data: str, samples: int, batch: int) -> float:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(src), "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", CHILD, data, str(samples), str(batch)], env=env,
                         capture_output=True, text=True, check=True, cwd=os.path.abspath(src))
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="source folder of checkout A (the reference)")
    ap.add_argument("b", help="source folder of checkout B")
    ap.add_argument("--data", default=os.environ.get("DEEPNET_MNIST", "../shared/data/mnist"))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--samples", type=int, default=None, help="default: 8,000 at batch 1, 30,000 otherwise")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    samples = args.samples or (8000 if args.batch == 1 else 30000)
    times: dict[str, list[float]] = {"a": [], "b": []}
    for _ in range(args.reps):
        for side in ("a", "b"):
            times[side].append(run(getattr(args, side), args.data, samples, args.batch))
    ratios = [b / a for a, b in zip(times["a"], times["b"])]
    result = {"batch": args.batch, "samples": samples, "reps": args.reps,
              "median_a_s": statistics.median(times["a"]), "median_b_s": statistics.median(times["b"]),
              "ratio_b_over_a_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
              "times": times}
    print(f"batch {args.batch}, {samples} samples, {args.reps} interleaved pairs: A median "
          f"{result['median_a_s']:.3f} s, B median {result['median_b_s']:.3f} s, B/A per pair median "
          f"{result['ratio_b_over_a_median']:.2f} ({result['ratio_min']:.2f}-{result['ratio_max']:.2f})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
