"""A deeper network with the same code: 784-256-128-10 ReLU, softmax cross-entropy,
mini-batch SGD with momentum, on MNIST.

    python examples/deep_mnist.py --data ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import time

import deepnet as dn
from deepnet.datasets import load_mnist_folder
from deepnet.presets import mlp_layers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with the four MNIST IDX files")
    ap.add_argument("--spec", default="784-256-128-10")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default=None)
    args = ap.parse_args()

    (X, y), (Xt, yt) = load_mnist_folder(args.data, scale="unit")
    net = dn.Network(mlp_layers(args.spec, "relu"), seed=args.seed, backend=args.backend)
    print(net.summary())
    t0 = time.perf_counter()
    hist = net.fit(X, y, epochs=args.epochs, batch_size=args.batch_size, loss="xent",
                   optimizer=dn.SGD(lr=args.lr, momentum=args.momentum),
                   validation_data=(Xt, yt), verbose=True)
    print(f"{args.spec} ReLU, SGD(lr={args.lr}, momentum={args.momentum}), batch {args.batch_size}, "
          f"{args.epochs} epochs: test accuracy {100 * hist['val_accuracy'][-1]:.2f}% "
          f"({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
