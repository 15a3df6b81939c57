"""The degradation experiment (docs/training.md): plain against residual MLPs on MNIST.

Same width, same budget (epochs, optimizer, learning rate, batch, seed) for every network; the
depths are counts of Dense layers (deepnet.presets.resmlp_layers).  Writes a JSON of the
per-epoch training losses, the final training loss (evaluation mode, the whole training
subset) and the test accuracy, and a PNG of the training-loss curves.

    python benchmarks/degradation.py --data /work/shared/data/mnist --out benchmarks/results-degradation.json \
        --plot docs/degradation.png
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from deepnet import Network
from deepnet.datasets import load_dataset
from deepnet.presets import resmlp_layers


def run_one(data: Any, rows: Any, depth: int, residual: bool, args: argparse.Namespace) -> dict[str, Any]:
    """Train one network and return its curves and final figures."""
    X, y = data.X_train[rows], data.y_train[rows]
    net = Network(resmlp_layers(data.n_features, data.n_classes, depth, args.width, residual=residual),
                  seed=args.seed)
    t0 = time.perf_counter()
    hist = net.fit(X, y, epochs=args.epochs, batch_size=args.batch_size, loss="xent", optimizer="adam")
    seconds = time.perf_counter() - t0
    train = net.evaluate(X, y)
    test = net.evaluate(data.X_test, data.y_test)
    return {"depth": depth, "residual": residual, "params": net.n_params, "epoch_loss": list(hist.history["loss"]),
            "train_loss": train["loss"], "train_accuracy": train["accuracy"], "test_loss": test["loss"],
            "test_accuracy": test["accuracy"], "seconds": seconds}


def plot(results: list[dict[str, Any]], depths: list[int], path: Path, title: str) -> None:
    """Training loss per epoch, plain (dashed) against residual (solid), one colour per depth."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colours = dict(zip(depths, ("tab:blue", "tab:orange", "tab:red", "tab:green", "tab:purple"), strict=False))
    for r in results:
        epochs = range(1, len(r["epoch_loss"]) + 1)
        ax.plot(epochs, r["epoch_loss"], color=colours[r["depth"]], linestyle="-" if r["residual"] else "--",
                marker="o", label=f"{'residual' if r['residual'] else 'plain'} {r['depth']}")
    ax.set_yscale("log")
    ax.set_xticks(range(1, max(len(r["epoch_loss"]) for r in results) + 1))
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (mean over the epoch's batches)")
    ax.set_title(title, fontsize=9)
    ax.legend(ncol=2, fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/work/shared/data/mnist")
    p.add_argument("--depths", default="10,30,50")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-rows", type=int, default=0, help="use the first N training rows (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results-degradation.json")
    p.add_argument("--plot", default="docs/degradation.png")
    p.add_argument("--replot", action="store_true", help="only draw --plot again from the results in --out")
    args = p.parse_args()
    if args.replot:
        record = json.loads(Path(args.out).read_text())
        draw(record, Path(args.plot))
        return
    depths = [int(d) for d in args.depths.split(",")]
    data = load_dataset("mnist", args.data)
    rows = slice(0, args.train_rows or len(data.X_train))
    results = []
    for depth in depths:
        for residual in (False, True):
            r = run_one(data, rows, depth, residual, args)
            print(f"{'residual' if residual else 'plain':8s} {depth:3d} Dense: train loss {r['train_loss']:.4f}  "
                  f"test accuracy {r['test_accuracy']:.4f}  ({r['seconds']:.0f}s)", flush=True)
            results.append(r)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    record = {"settings": {k: v for k, v in vars(args).items() if k not in ("out", "plot", "replot")}, "optimizer": "adam",
              "lr": 1e-3, "commit": commit, "machine": platform.machine(), "results": results}
    record["settings"]["train_rows"] = args.train_rows or len(data.X_train)
    Path(args.out).write_text(json.dumps(record, indent=1))
    draw(record, Path(args.plot))


def draw(record: dict[str, Any], path: Path) -> None:
    """The plot of a results record, titled with its settings, commit and machine."""
    st = record["settings"]
    depths = sorted({r["depth"] for r in record["results"]})
    plot(record["results"], depths, path,
         f"Degradation on MNIST: plain (dashed) vs residual (solid) MLPs, width {st['width']}\n"
         f"{st['train_rows']:,} training images, Adam 1e-3, batch {st['batch_size']}, {st['epochs']} epochs; "
         f"2026-12-07, commit {record['commit']}, 2-core x86-64")


if __name__ == "__main__":
    main()
