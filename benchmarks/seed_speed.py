"""Seed network, one sample per update: deepnet against a plain NumPy loop.

Both train 784-50-10 (sigmoid, no biases, f = Σ(z − y)², SGD η = 0.1) on the same
MNIST samples in the same order from the same initial weights, in float32.  Runs are
interleaved; the median time per epoch-equivalent (60,000 samples) is reported.

    DEEPNET_MNIST=../shared/data/mnist python benchmarks/seed_speed.py [--samples 10000] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

from deepnet.datasets import load_mnist_folder
from deepnet.presets import seed_network


def plain_numpy(X: np.ndarray, T: np.ndarray, B: np.ndarray, A: np.ndarray, lr: float = 0.1) -> None:
    """The seed network written out by hand: exact chain rule, in-place updates."""
    for i in range(X.shape[0]):
        x = X[i]
        h = 1.0 / (1.0 + np.exp(-(B @ x)))
        z = 1.0 / (1.0 + np.exp(-(A @ h)))
        d = 2.0 * (z - T[i]) * z * (1.0 - z)           # 2 e ∘ z ∘ (1 − z)
        dh = (A.T @ d) * h * (1.0 - h)                  # ẽ ∘ z̃ ∘ (1 − z̃)
        A -= lr * np.outer(d, h)
        B -= lr * np.outer(dh, x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("DEEPNET_MNIST", "../shared/data/mnist"))
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", default=None, help="write results here")
    args = ap.parse_args()

    (X, y), _ = load_mnist_folder(args.data, scale="seed")
    X, y = np.ascontiguousarray(X[: args.samples]), y[: args.samples]
    T = np.full((len(y), 10), 0.01, np.float32)
    T[np.arange(len(y)), y] = 0.99
    scale = 60000 / len(y)
    times: dict[str, list[float]] = {"plain numpy loop": [], "deepnet": []}
    seed_network(seed=0).fit(X[:200], y[:200], epochs=1, batch_size=1, shuffle=False)   # warm-up (compiled kernels)
    with np.errstate(over="ignore"):
        for _ in range(args.reps):
            net = seed_network(seed=0)
            w = net.get_weights()
            B, A = w["0.weight"].copy(), w["2.weight"].copy()
            t0 = time.perf_counter()
            plain_numpy(X, T, B, A)
            times["plain numpy loop"].append((time.perf_counter() - t0) * scale)
            t0 = time.perf_counter()
            net.fit(X, y, epochs=1, batch_size=1, shuffle=False)
            times["deepnet"].append((time.perf_counter() - t0) * scale)
            w = net.get_weights()
            diff = max(np.abs(w["0.weight"] - B).max(), np.abs(w["2.weight"] - A).max())
    print(f"seed network, batch 1, {len(y)} samples x {args.reps} interleaved reps; seconds per 60,000-sample epoch")
    print(f"{'':18s} {'median':>8s} {'min':>8s} {'max':>8s}")
    for k, v in times.items():
        print(f"{k:18s} {statistics.median(v):8.2f} {min(v):8.2f} {max(v):8.2f}")
    ratios = [p / d for p, d in zip(times["plain numpy loop"], times["deepnet"], strict=True)]
    print(f"deepnet speed-up over the plain loop per rep: {', '.join(f'{r:.2f}' for r in ratios)} "
          f"(median {statistics.median(ratios):.2f}x)")
    print(f"max |weight difference| between the two after one pass: {diff:.2e}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"times_s_per_epoch": times, "ratios": ratios, "max_weight_diff": float(diff)}, fh, indent=2)


if __name__ == "__main__":
    main()
