"""The captured step (``fit(graphs="on")``) against the eager one on the same backend, by the
parity criteria of the GPU issues, and bf16 products against float32:

(a) float64 end to end: 2 epochs of SGD with momentum and of Adam, graphs on and off; the
    final weights agree to a relative 10⁻¹² (on the CPU backends they are identical: the
    same step runs its Python every time).
(b) float32, step by step: the weights after each of the first ``--steps`` steps (the eager
    warm-up, the captured step, then replays) compared with the eager run's; relative 10⁻⁵.
(c) float32, accuracy: one epoch of 784-512-512-10, Adam, batch 128 (MNIST if ``DEEPNET_MNIST``
    names its folder, else a synthetic set), graphs on and off: test accuracies within 0.3
    points; and 784-4096×4-10, batch 4096, ``--wide-epochs`` epochs with products in float32
    and in bf16 (both captured): within 0.2 points.

"Relative difference" of tensors a, b is max|a − b| / max|a|, the worst over tensors.

    PYTHONPATH=. python benchmarks/graph_parity.py --backend cupy --json graph_parity.json   # on a GPU
    PYTHONPATH=. python benchmarks/graph_parity.py --dry-run        # CPU: cupy-shaped, small sizes
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

import deepnet as dn
from deepnet.callbacks import Callback
from deepnet.presets import mlp_layers


def _data(dry: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    folder = os.environ.get("DEEPNET_MNIST")
    if folder and not dry:
        from deepnet.datasets import load_dataset
        d = load_dataset("mnist", folder, download=False)
        return (d.X_train.astype(np.float32), d.y_train, d.X_test.astype(np.float32), d.y_test, "mnist")
    rng = np.random.default_rng(0)
    n, m = (1200, 400) if dry else (60000, 10000)
    centers = rng.random((10, 784), dtype=np.float32)
    y, yt = rng.integers(0, 10, n), rng.integers(0, 10, m)
    X = np.clip(centers[y] + 0.35 * rng.standard_normal((n, 784)).astype(np.float32), 0, 1)
    Xt = np.clip(centers[yt] + 0.35 * rng.standard_normal((m, 784)).astype(np.float32), 0, 1)
    return X, y, Xt, yt, "synthetic"


def _rel(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(a[k] - b[k]).max() / max(np.abs(a[k]).max(), 1e-30)) for k in a)


def _weights(net: dn.Network) -> dict[str, np.ndarray]:
    return {k: dn.to_host(v).astype(np.float64) for k, v in net.get_weights().items()}


class _EachStep(Callback):
    def __init__(self, steps: int) -> None:
        self.steps, self.seen = steps, []

    def on_batch_end(self, net: Any, step: int, logs: dict[str, Any]) -> None:
        if len(self.seen) < self.steps:
            self.seen.append(_weights(net))


def criterion_a(backend: str, X: np.ndarray, y: np.ndarray, dry: bool) -> dict[str, Any]:
    n = 512 if dry else 2048
    out = {}
    for name, opt in (("momentum", lambda: dn.SGD(0.05, momentum=0.9)), ("adam", lambda: dn.Adam(1e-3))):
        w = []
        for graphs in ("off", "on"):
            net = dn.Network(mlp_layers("784-64-64-10", "relu"), seed=0, backend=backend, dtype="float64",
                             loss="xent", optimizer=opt())
            net.fit(X[:n], y[:n], epochs=2, batch_size=64, graphs=graphs)
            w.append(_weights(net))
        out[name] = _rel(w[0], w[1])
    worst = max(out.values())
    return {"relative": out, "worst": worst, "pass": worst <= 1e-12}


def criterion_b(backend: str, X: np.ndarray, y: np.ndarray, steps: int) -> dict[str, Any]:
    runs = []
    for graphs in ("off", "on"):
        cb = _EachStep(steps)
        net = dn.Network(mlp_layers("784-128-10", "relu"), seed=1, backend=backend, loss="xent",
                         optimizer=dn.Adam(1e-3))
        net.fit(X[:64 * (steps + 1)], y[:64 * (steps + 1)], epochs=1, batch_size=64, graphs=graphs, callbacks=[cb])
        runs.append(cb.seen)
    per_step = [_rel(a, b) for a, b in zip(runs[0], runs[1], strict=True)]
    return {"relative_per_step": per_step, "worst": max(per_step), "pass": max(per_step) <= 1e-5}


def _accuracy(backend: str, spec: str, batch: int, epochs: int, data: tuple, **fit: Any) -> tuple[float, float]:
    X, y, Xt, yt = data
    net = dn.Network(mlp_layers(spec, "relu"), seed=0, backend=backend, loss="xent", optimizer=dn.Adam(1e-3))
    t0 = time.perf_counter()
    net.fit(X, y, epochs=epochs, batch_size=batch, check_finite="off", **fit)
    return 100.0 * net.evaluate(Xt, yt)["accuracy"], time.perf_counter() - t0


def criterion_c(backend: str, data: tuple, dry: bool, wide_epochs: int) -> dict[str, Any]:
    medium = "784-64-64-10" if dry else "784-512-512-10"
    wide, wbatch = ("784-128-128-10", 128) if dry else ("784-4096-4096-4096-4096-10", 4096)
    eager, t_eager = _accuracy(backend, medium, 128, 1, data, graphs="off")
    graph, t_graph = _accuracy(backend, medium, 128, 1, data, graphs="on")
    f32, t32 = _accuracy(backend, wide, wbatch, wide_epochs, data, graphs="on")
    bf16, t16 = _accuracy(backend, wide, wbatch, wide_epochs, data, graphs="on", precision="bf16")
    return {"medium": {"net": medium, "eager": eager, "graph": graph, "seconds": [t_eager, t_graph],
                       "pass": abs(eager - graph) <= 0.3},
            "wide": {"net": wide, "epochs": wide_epochs, "float32": f32, "bf16": bf16, "seconds": [t32, t16],
                     "pass": abs(f32 - bf16) <= 0.2}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="cupy")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--wide-epochs", type=int, default=3)
    ap.add_argument("--dry-run", action="store_true", help="CPU: the cupy-shaped backend, small sizes")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    backend = "cupy-shaped" if args.dry_run and args.backend == "cupy" else args.backend
    X, y, Xt, yt, source = _data(args.dry_run)
    res: dict[str, Any] = {"backend": backend, "data": source, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                           "command": " ".join(sys.argv)}
    try:
        res["device"] = dn.backend.get_ops(backend).device_info()["name"]
    except Exception as err:  # noqa: BLE001  (CPU backends have no device to describe)
        res["device"] = f"n/a ({type(err).__name__})"
    res["a"] = criterion_a(backend, X, y, args.dry_run)
    print(f"(a) float64, graphs on vs off: worst relative {res['a']['worst']:.2e}  {'PASS' if res['a']['pass'] else 'FAIL'}")
    res["b"] = criterion_b(backend, X, y, args.steps)
    print(f"(b) float32, first {args.steps} steps: worst relative {res['b']['worst']:.2e}  "
          f"{'PASS' if res['b']['pass'] else 'FAIL'}")
    res["c"] = criterion_c(backend, (X, y, Xt, yt), args.dry_run, args.wide_epochs)
    m, w = res["c"]["medium"], res["c"]["wide"]
    print(f"(c) {m['net']}: eager {m['eager']:.2f}%, graph {m['graph']:.2f}%  {'PASS' if m['pass'] else 'FAIL'};  "
          f"{w['net']} {w['epochs']} epochs: float32 {w['float32']:.2f}%, bf16 {w['bf16']:.2f}% "
          f"({w['seconds'][0]:.1f} s / {w['seconds'][1]:.1f} s)  {'PASS' if w['pass'] else 'FAIL'}")
    ok = res["a"]["pass"] and res["b"]["pass"] and m["pass"] and w["pass"]
    res["pass"] = ok
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
