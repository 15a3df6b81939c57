"""Parity: the same network, seed and batches on two backends; compare loss curves and
final weights.  On a GPU machine: numpy vs cupy.  CPU dry run: numpy vs strict.

    PYTHONPATH=. python benchmarks/gpu_parity.py --a numpy --b cupy --steps 300 --json parity.json
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

import deepnet as dn
from deepnet.presets import mlp_layers


def run(backend: str, X: np.ndarray, y: np.ndarray, steps: int, batch: int, optimizer: str, fused: bool | None):
    net = dn.Network(mlp_layers("784-256-128-10", "relu"), seed=0, backend=backend, loss="xent",
                     optimizer=dn.Adam(1e-3) if optimizer == "adam" else dn.SGD(0.05, momentum=0.9))
    if fused is not None and hasattr(net.ops, "use_fused"):
        net.ops.use_fused = fused
    losses = []
    rec = dn.LambdaCallback(on_batch_end=lambda n, s, logs: losses.append(float(dn.to_host(logs["loss"]))))
    n = steps * batch
    net.fit(X[:n], y[:n], epochs=1, batch_size=batch, shuffle=False, callbacks=[rec])
    return np.array(losses), net.get_weights()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--a", default="numpy")
    ap.add_argument("--b", default="cupy")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--optimizer", default="adam", choices=["adam", "momentum"])
    ap.add_argument("--tolerance", type=float, default=1e-3, help="max relative weight difference allowed")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    path = os.environ.get("DEEPNET_MNIST")
    n = args.steps * args.batch
    if path:
        from deepnet.datasets import load_mnist_folder

        (X, y), _ = load_mnist_folder(path)
    else:
        rng = np.random.default_rng(0)
        X, y = rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)
    out = {}
    la, wa = run(args.a, X, y, args.steps, args.batch, args.optimizer, None)
    for label, fused in (("fused", True), ("generic", False)):
        lb, wb = run(args.b, X, y, args.steps, args.batch, args.optimizer, fused)
        wdiff = max(float(np.abs(wa[k] - wb[k]).max() / (np.abs(wa[k]).max() + 1e-12)) for k in wa)
        ldiff = float(np.abs(la - lb).max())
        out[label] = {"max_rel_weight_diff": wdiff, "max_abs_loss_diff": ldiff, "ok": wdiff <= args.tolerance}
        print(f"parity {args.a} vs {args.b} ({label} kernels), {args.steps} steps of {args.batch}, {args.optimizer}: "
              f"max relative weight difference {wdiff:.2e}, max loss difference {ldiff:.2e} "
              f"-> {'OK' if wdiff <= args.tolerance else 'FAIL'} (tolerance {args.tolerance:g})")
        if not hasattr(dn.backend.get_ops(args.b), "use_fused"):
            break
    out["loss_curve_a"] = la[:: max(1, len(la) // 50)].tolist()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    if not all(v["ok"] for k, v in out.items() if isinstance(v, dict) and "ok" in v):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
