"""Why deep sigmoid networks stall, seen in the error ẽ that reaches each layer.

Trains two 10-hidden-layer networks on MNIST with the same code and records the norm of
the back-propagated error at every layer (``deepnet.diagnostics.GradientFlow``):

1. sigmoid, normal(0, 1/√n_in) initialization, plain SGD: the error shrinks by orders of
   magnitude on its way down (each sigmoid multiplies it by z(1 − z) ≤ ¼), and the
   network barely learns;
2. ReLU with He initialization: the error reaches the first layer at a similar size, and
   the same depth trains.

    python examples/vanishing_gradients.py --data ../shared/data/mnist --plot plots/

It ends by printing the table docs/training.md quotes, with the software it ran on
(whether numba's compiled kernels were used: DEEPNET_NUMBA=0 turns them off), so the
figures in the docs come from a run anyone can repeat.
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

import numpy as np

import deepnet as dn
from deepnet.backend.numba_ops import NumbaOps
from deepnet.datasets import load_mnist_folder
from deepnet.diagnostics import GradientFlow
from deepnet.presets import mlp_layers


def extras() -> str:
    """The backend and the optional extras this run used (numba: yes/no, and why not)."""
    import os

    ops = dn.get_backend()
    parts = [f"deepnet {dn.__version__}", f"backend {ops.name}", f"NumPy {np.__version__}"]
    if ops.name == "numpy":
        if isinstance(ops, NumbaOps):
            import numba

            parts.append(f"numba {numba.__version__}: yes")
        elif os.environ.get("DEEPNET_NUMBA", "1") == "0":
            parts.append("numba: no (DEEPNET_NUMBA=0)")
        else:
            parts.append("numba: no (not installed)")
        parts.append(f"BLAS {ops.blas}")
    parts.append(f"Python {platform.python_version()}")
    return ", ".join(parts)


def _sci(v: float) -> str:
    """1.9 × 10⁶ style, as the docs write it (plain for 0.01 ≤ v < 1000)."""
    if 0.01 <= abs(v) < 1000:
        return f"{v:.2g}"
    mant, exp = f"{v:.1e}".split("e")
    sup = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
    return f"{mant} × 10{str(int(exp)).translate(sup)}"


def run(name: str, layers: list, X, y, Xt, yt, epochs: int, lr: float, plot: Path | None) -> dict:
    net = dn.Network(layers, seed=0)
    net.diagnostics = GradientFlow()
    hist = net.fit(X, y, epochs=epochs, batch_size=64, loss="xent", optimizer=dn.SGD(lr),
                   validation_data=(Xt, yt))
    err = net.diagnostics.error_norm[-1]
    print(f"\n{name}: test accuracy {100 * hist['val_accuracy'][-1]:.2f}% after {epochs} epochs")
    print("  mean ‖error‖ arriving at each layer, input side first:")
    print("  " + "  ".join(f"{v:.1e}" for v in err))
    print(f"  ratio output side / input side: {err[-1] / err[0]:.1e}")
    for w in net.diagnostics.warnings():
        print("  warning:", w)
    if plot is not None:
        from deepnet.plotting import plot_gradient_flow

        plot.mkdir(parents=True, exist_ok=True)
        print("  plot:", plot_gradient_flow(net.diagnostics.records(), plot / f"gradient_flow_{name}.png"))
    return {"ratio": err[-1] / err[0], "accuracy": 100 * hist["val_accuracy"][-1],
            "warned": bool(net.diagnostics.warnings())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--train-size", type=int, default=20000)
    args = ap.parse_args()
    (X, y), (Xt, yt) = load_mnist_folder(args.data)
    X, y = X[: args.train_size], y[: args.train_size]
    spec = "784-" + "-".join(["128"] * 10) + "-10"
    rows = [("sigmoid, normal(0, 1/√n_in), SGD η = 0.1",
             run("sigmoid", mlp_layers(spec, "sigmoid", init="normal"), X, y, Xt, yt, args.epochs, 0.1, args.plot)),
            ("ReLU, He initialization, SGD η = 0.05",
             run("relu_he", mlp_layers(spec, "relu", init="he"), X, y, Xt, yt, args.epochs, 0.05, args.plot))]
    print(f"\nFor docs/training.md ({args.epochs} epochs on {len(X):,} samples, batch 64; "
          f"{datetime.date.today().isoformat()}; {extras()}):\n")
    print("| network | ‖δ‖ at the top / at the first layer | test accuracy |")
    print("|---|---|---|")
    for label, r in rows:
        note = " (vanishing; warning printed)" if r["warned"] else ""
        print(f"| {label} | {_sci(r['ratio'])}{note} | {r['accuracy']:.2f}% |")


if __name__ == "__main__":
    main()
