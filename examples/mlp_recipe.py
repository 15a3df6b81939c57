"""A plain multi-layer perceptron on MNIST at the level of the published dropout results.

784-1024-1024-1024-10, ReLU, He initialization, dropout 0.2 on the inputs and 0.4 after
each hidden layer, max-norm 3.5 on each unit's incoming weights, Adam with a one-epoch
linear warm-up then cosine decay, batch 128; no data augmentation, no convolution.

    python examples/mlp_recipe.py --data ../shared/data/mnist [--epochs 30] [--backend cupy]
"""

from __future__ import annotations

import argparse
import json
import time

import deepnet as dn
from deepnet.datasets import load_mnist_folder
from deepnet.presets import mlp_layers
from deepnet.schedules import LearningRateScheduler, cosine, linear_warmup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default=None)
    ap.add_argument("--json", default=None, help="write the history here")
    args = ap.parse_args()

    (X, y), (Xt, yt) = load_mnist_folder(args.data)
    layers = [dn.Dropout(0.2)] + mlp_layers("784-1024-1024-1024-10", "relu", hidden=lambda w: [dn.Dropout(0.4)])
    net = dn.Network(layers, seed=args.seed, backend=args.backend)
    print(net.summary())
    schedule = linear_warmup(args.lr, 1, cosine(args.lr, args.epochs - 1, args.lr * 0.01))
    t0 = time.perf_counter()
    hist = net.fit(X, y, epochs=args.epochs, batch_size=args.batch_size, loss="xent",
                   optimizer=dn.Adam(args.lr, max_norm=3.5),
                   callbacks=[LearningRateScheduler(schedule)], validation_data=(Xt, yt), verbose=True)
    wall = time.perf_counter() - t0
    acc = hist["val_accuracy"][-1]
    print(f"recipe: test accuracy {100 * acc:.2f}% (error {100 * (1 - acc):.2f}%) after {args.epochs} epochs, "
          f"{wall / 60:.1f} min on {net.ops.name}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"history": hist.history, "wall_seconds": wall, "test_accuracy": acc}, fh, indent=2)


if __name__ == "__main__":
    main()
