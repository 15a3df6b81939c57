"""Reproduce the course notebook's network on MNIST with deepnet.

784-50-10, sigmoid on both layers, no biases, f = Σ(z − y)², targets 0.01/0.99,
per-sample SGD with η = 0.1, inputs x/255·0.99 + 0.01, normal(0, 1/√n_in) weights,
5 epochs in file order (the notebook does not shuffle).

    python examples/seed_mnist.py --data ../shared/data/mnist
    python examples/seed_mnist.py --data ../shared/data/mnist --shortcut   # notebook's ẽ = Aᵀe
"""

from __future__ import annotations

import argparse
import time

from deepnet.datasets import load_mnist_folder
from deepnet.presets import seed_network


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with the four MNIST IDX files (.gz or raw)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default=None, help="numpy (default), cupy or strict")
    ap.add_argument("--shortcut", action="store_true", help="use the notebook's shortcut ẽ = Aᵀe")
    ap.add_argument("--shuffle", action="store_true", help="shuffle each epoch (the notebook does not)")
    args = ap.parse_args()

    (X, y), (Xt, yt) = load_mnist_folder(args.data, scale="seed")
    net = seed_network(seed=args.seed, shortcut=args.shortcut, backend=args.backend)
    print(net.summary())
    t0 = time.perf_counter()
    hist = net.fit(X, y, epochs=args.epochs, batch_size=1, shuffle=args.shuffle,
                   validation_data=(Xt, yt), verbose=True)
    wall = time.perf_counter() - t0
    acc = hist["val_accuracy"][-1]
    mode = "notebook shortcut ẽ = Aᵀe" if args.shortcut else "exact chain rule"
    print(f"seed network ({mode}), {args.epochs} epochs, backend {net.ops.name}: "
          f"test accuracy {100 * acc:.2f}%  ({wall:.1f}s, {wall / max(args.epochs, 1):.1f}s/epoch incl. evaluation)")


if __name__ == "__main__":
    main()
