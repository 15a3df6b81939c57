"""A small convolutional network on MNIST: the Keras "simple MNIST convnet" shape.

conv 3×3 (32) → ReLU → max-pool 2 → conv 3×3 (64) → ReLU → max-pool 2 → flatten →
dropout 0.5 → dense 1600 → 10 (``deepnet.presets.cnn_layers``), softmax cross-entropy,
Adam, batch 128, no augmentation.  The network takes the images as (n, 1, 28, 28) arrays (views
of the data set's rows; ``--rows`` trains the same network started by ``Reshape`` on the rows).  The last 5,000 training images are held out for
validation (accuracy printed after each epoch); the test accuracy is printed at the end.

    python examples/cnn_mnist.py ../shared/data/mnist [--epochs 12] [--backend cupy]
    DEEPNET_MNIST=../shared/data/mnist python examples/cnn_mnist.py --limit 2000 --epochs 1   # quick look
"""

from __future__ import annotations

import argparse
import os
import time

import deepnet as dn
from deepnet.datasets import load_mnist_folder
from deepnet.presets import cnn_layers

VALIDATION = 5000     # the last 5,000 training images


class PrintEpoch(dn.Callback):
    """Prints each epoch's training loss and validation accuracy as it ends."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, net: dn.Network, epoch: int, logs: dict) -> None:
        print(f"epoch {epoch + 1:2d}: training loss {logs['loss']:.4f}, validation accuracy "
              f"{100 * logs['val_accuracy']:.2f}%  ({time.perf_counter() - self.start:.0f} s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", default=os.environ.get("DEEPNET_MNIST"),
                    help="folder with the four MNIST IDX files (default: $DEEPNET_MNIST)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default=None, help="numpy (default), cupy or strict")
    ap.add_argument("--rows", action="store_true", help="feed rows of 784 pixels to a network starting with Reshape")
    ap.add_argument("--limit", type=int, default=None,
                    help="train on the first N training images only (and validate on N/4 held-out ones)")
    args = ap.parse_args()
    if not args.data:
        ap.error("give the MNIST folder as an argument or set DEEPNET_MNIST")

    (X, y), (X_test, y_test) = load_mnist_folder(args.data)          # rows of 784 pixels in [0, 1]
    n_val = VALIDATION if args.limit is None else min(VALIDATION, max(args.limit // 4, 100))
    X_val, y_val = X[-n_val:], y[-n_val:]
    n_train = len(X) - VALIDATION if args.limit is None else min(args.limit, len(X) - VALIDATION)
    X, y = X[:n_train], y[:n_train]

    if not args.rows:           # (n, 1, 28, 28) images: views of the rows, nothing copied
        X, X_val, X_test = (a.reshape(len(a), 1, 28, 28) for a in (X, X_val, X_test))
    net = dn.Network(cnn_layers((28, 28), 10, rows=args.rows), seed=args.seed, backend=args.backend)
    print(net.summary())
    print(f"training on {n_train:,} images, validating on {n_val:,}, testing on {len(X_test):,}")

    t0 = time.perf_counter()
    net.fit(X, y, epochs=args.epochs, batch_size=args.batch_size, loss="xent", optimizer=dn.Adam(args.lr),
            validation_data=(X_val, y_val), callbacks=[PrintEpoch()])
    wall = time.perf_counter() - t0

    test = net.evaluate(X_test, y_test, batch_size=500)
    print(f"test accuracy {100 * test['accuracy']:.2f}% after {args.epochs} epochs "
          f"({wall:.1f} s of training on {net.ops.name})")


if __name__ == "__main__":
    main()
