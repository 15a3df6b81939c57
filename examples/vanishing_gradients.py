"""Why deep sigmoid networks stall, seen in the error ẽ that reaches each layer.

Trains two 10-hidden-layer networks on MNIST with the same code and records the norm of
the back-propagated error at every layer (``deepnet.diagnostics.GradientFlow``):

1. sigmoid, normal(0, 1/√n_in) initialization, plain SGD: the error shrinks by orders of
   magnitude on its way down (each sigmoid multiplies it by z(1 − z) ≤ ¼), and the
   network barely learns;
2. ReLU with He initialization: the error reaches the first layer at a similar size, and
   the same depth trains.

    python examples/vanishing_gradients.py --data ../shared/data/mnist --plot plots/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import deepnet as dn
from deepnet.datasets import load_mnist_folder
from deepnet.diagnostics import GradientFlow
from deepnet.presets import mlp_layers


def run(name: str, layers: list, X, y, Xt, yt, epochs: int, lr: float, plot: Path | None) -> None:
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
    run("sigmoid", mlp_layers(spec, "sigmoid", init="normal"), X, y, Xt, yt, args.epochs, 0.1, args.plot)
    run("relu_he", mlp_layers(spec, "relu", init="he"), X, y, Xt, yt, args.epochs, 0.05, args.plot)


if __name__ == "__main__":
    main()
