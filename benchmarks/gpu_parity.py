"""Parity between two backends by three criteria that mean something.

Comparing final float32 weights after hundreds of steps measures chaos, not correctness:
training at lr 0.05 with momentum 0.9 amplifies a rounding difference of one part in 10⁷
into visibly different weights (multiplying the learning rate by 1 + 10⁻⁶ moves NumPy's own
final weights by 0.2).  So the same network (seed, batches, optimizer) is compared on
backend A (the reference, NumPy) and backend B in three ways:

(a) float64, end to end: ``--steps`` steps (default 300) of SGD with momentum (lr 0.05,
    μ 0.9) and of Adam (lr 10⁻³), ReLU; the final weights must agree to a relative 10⁻¹²
    (in float64 a correct backend differs by rounding only, measured 10⁻¹⁵ to 10⁻¹³ on the
    CPU backends, which even chaotic training does not amplify to 10⁻¹² in a few hundred
    steps).
(b) float32, one step at a time along A's trajectory: before each step A's weights and
    optimizer state (``get_weights``/``state_dict``) are loaded into B, both take the same
    step on the same batch, and B's results (the loss, every weight and every optimizer
    slot) are compared with A's; then both continue from A's state.  ``--steps-b`` steps
    (default 200), both optimizers; tolerance 10⁻⁵.  Hidden units are tanh here (ReLU's
    kink makes one step discontinuous; see :func:`criterion_b`), and the weights after
    Adam's very first step are left out (its loss and moments are compared): that step is
    a smoothed sign of the gradient, ill-conditioned by design (see :func:`first_adam_step`).
(c) float32, one full epoch (shuffled, Adam, ReLU, batch 64) on each backend from the same
    seed: test accuracies within 0.3 percentage points.

"Relative difference" of two tensors a (A's) and b (B's) is ``max|a - b| / max|a|``,
computed per tensor; a criterion's figure is the worst over tensors (and steps).

Data: MNIST when ``DEEPNET_MNIST`` names its folder, else a synthetic set shaped like it
(784 features, 10 classes, see :func:`synthetic`).  Backends with fused kernels (cupy,
cupy-shaped) are checked with fused and with generic kernels: the registered backend and a
second one of the generic class on the same namespace (:func:`kernel_variants`).
``--b torch`` is PyTorch (CPU) through array-api-compat, registered here the way a user
would (``register_backend``).  Exits 1 if any criterion fails.

    PYTHONPATH=. python benchmarks/gpu_parity.py --a numpy --b cupy --json parity.json       # on a GPU
    PYTHONPATH=. python benchmarks/gpu_parity.py --b cupy-shaped --dry-run      # CPU: ~6 s on 2 idle cores
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

import numpy as np

import deepnet as dn
from deepnet.backend import Ops, get_ops, register_backend, registered_backends
from deepnet.backend.cupy_ops import CupyOps, FusedCupyOps
from deepnet.backend.cupy_shaped import CupyShapedOps, FusedCupyShapedOps
from deepnet.presets import mlp_layers

#: thresholds of the three criteria
TOL_A = 1e-12          # (a) float64 end to end: max relative weight difference
TOL_B = 1e-5           # (b) float32 one step: max relative difference of loss, weights, optimizer slots
TOL_C = 0.3            # (c) float32 one epoch: test accuracy difference, percentage points

OPTIMIZERS = {"momentum": lambda: dn.SGD(0.05, momentum=0.9), "adam": lambda: dn.Adam(1e-3)}

#: sizes of a full run (a GPU machine) and of the CPU dry run
FULL = dict(spec="784-256-128-10", batch=64, steps=300, steps_b=200, train=20000, test=5000, batch_c=64)
DRY = dict(spec="784-64-32-10", batch=32, steps=150, steps_b=40, train=20000, test=5000, batch_c=100)


def _torch_ops() -> dn.backend.Ops:
    """PyTorch (CPU) as a user adds it: any Array-API namespace through register_backend."""
    import array_api_compat.torch as xp

    return dn.backend.Ops(xp, device=xp.asarray(0).device, name="torch")


if "torch" not in registered_backends():
    register_backend("torch", _torch_ops)


# ---------------------------------------------------------------------------- data
def synthetic(n_train: int, n_test: int, n_features: int = 784, n_classes: int = 10,
              seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Ten overlapping Gaussian classes shaped like MNIST (used when DEEPNET_MNIST is unset).

    Class k has mean 0.3 + 0.1·s_k with s_k a random ±1 pattern over the 784 features, and
    every feature has Gaussian noise of standard deviation 0.6 (values mostly in [-1.5, 2]).
    Class means are about 4 apart against noise of 0.6 along the line joining them, so the
    classes are learnable but overlap slightly (the best possible accuracy is about 99.6%):
    one epoch of 20,000 samples with Adam reaches about 98% with either network size used
    here, short of saturation, with margins wide enough that correct backends agree (on a
    noisier version, SGD with momentum at lr 0.05 differed by over a point between correct
    backends after one epoch).  Deterministic in ``seed``.
    """
    rng = np.random.default_rng(seed)
    means = (0.3 + 0.1 * rng.choice([-1.0, 1.0], size=(n_classes, n_features))).astype(np.float32)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, n_classes, n)
        X = means[y] + rng.standard_normal((n, n_features), dtype=np.float32) * np.float32(0.6)
        return X, y

    return draw(n_train), draw(n_test)


def load_data(n_train: int, n_test: int) -> tuple[str, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(description, train, test): MNIST if DEEPNET_MNIST is set (all of it), else :func:`synthetic`."""
    path = os.environ.get("DEEPNET_MNIST")
    if path:
        from deepnet.datasets import load_mnist_folder

        (X, y), (Xt, yt) = load_mnist_folder(path)
        return f"MNIST from {path} ({len(y):,} train / {len(yt):,} test)", (X, y), (Xt, yt)
    train, test = synthetic(n_train, n_test)
    return (f"synthetic: 10 overlapping Gaussian classes, 784 features ({n_train:,} train / {n_test:,} test; "
            "set DEEPNET_MNIST for MNIST)"), train, test


# ---------------------------------------------------------------------------- helpers
#: the class with the generic code of each backend class with fused kernels
GENERIC_OF: dict[type, type] = {FusedCupyOps: CupyOps, FusedCupyShapedOps: CupyShapedOps}


def kernel_variants(backend: str | Ops) -> list[tuple[str, Ops]]:
    """[(label, backend)]: the backend itself, labelled "fused" where it has fused kernels
    and then followed by a backend of its generic class on the same namespace ("generic")."""
    ops = get_ops(backend)
    generic = GENERIC_OF.get(type(ops))
    if generic is None:
        return [("generic", ops)]
    return [("fused", ops), ("generic", generic(ops.xp))]


def make_net(backend: str | Ops, spec: str, dtype: str, optimizer: str, seed: int = 0,
             activation: str = "relu") -> dn.Network:
    """The compared network: an MLP, softmax cross-entropy, no dropout (nothing random
    after initialisation, which is drawn on the host from ``seed`` for every backend)."""
    return dn.Network(mlp_layers(spec, activation), seed=seed, backend=backend, dtype=dtype, loss="xent",
                      optimizer=OPTIMIZERS[optimizer]())


def rel_diff(a: Any, b: Any) -> float:
    """max|a - b| / max|a| (A's tensor a is the reference); 0 when both are all zero."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return math.inf
    d = float(np.max(np.abs(a - b))) if a.size else 0.0
    if d == 0.0:
        return 0.0
    s = float(np.max(np.abs(a)))
    return d / s if s > 0 else math.inf


def _worst(pairs: dict[str, tuple[Any, Any]]) -> tuple[float, str]:
    worst, where = 0.0, ""
    for name, (a, b) in pairs.items():
        r = rel_diff(a, b)
        if not r <= worst:        # NaN counts as worst
            worst, where = r, name
    return worst, where


def _state(net: dn.Network) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    return net.get_weights(), net.optimizer.state_dict()


def _tensors(weights: dict[str, np.ndarray], sd: dict[str, Any], loss: float) -> dict[str, Any]:
    out: dict[str, Any] = {"loss": loss}
    out.update({f"weight {k}": v for k, v in weights.items()})
    for pname, slots in sd["slots"].items():
        out.update({f"{k} {pname}": v for k, v in slots.items()})
    return out


def one_step(net: dn.Network, xb: np.ndarray, yb: np.ndarray) -> float:
    """One training step on one batch, through the public ``fit``; returns the batch loss."""
    hist = net.fit(xb, yb, epochs=1, batch_size=len(xb), shuffle=False)
    return float(hist["loss"][0])


def first_adam_step(optimizer: str, sd: dict[str, Any]) -> bool:
    """True for Adam's first step (no moments yet), whose weights (b) does not compare.

    There m̂/(√v̂ + ε) = g/(|g| + ε): a smoothed sign of g.  A gradient element that cancels
    to rounding level (|g| ~ ε = 10⁻⁸) moves its weight by anything up to ±lr depending on
    the last bits of g, so two correct float32 backends differ there by up to ~10⁻⁴ of the
    largest weight (measured at full size: 4·10⁻⁴ numpy vs strict, 2·10⁻⁴ vs torch; from
    the second step on, below 3·10⁻⁶).  The step's loss and its m and v (linear and
    quadratic in g) are still compared."""
    return optimizer == "adam" and int(sd.get("iterations", 0)) == 0


def _verdict(figure: float, threshold: float) -> bool:
    return bool(figure <= threshold)        # False for NaN


# ---------------------------------------------------------------------------- (a)
def criterion_a(a: str, b: str, X: np.ndarray, y: np.ndarray, *, steps: int, batch: int, spec: str,
                optimizers: tuple[str, ...] = ("momentum", "adam"),
                variants: list[tuple[str, Ops]] | None = None) -> dict[str, Any]:
    """float64 end to end: ``steps`` steps on each backend, final weights compared."""
    variants = kernel_variants(b) if variants is None else variants
    n = steps * batch
    if n > len(X):
        raise ValueError(f"criterion (a): {steps} steps of {batch} need {n} rows, the data has {len(X)}")
    runs: dict[str, Any] = {}
    t0 = time.perf_counter()
    for opt in optimizers:
        ref = make_net(a, spec, "float64", opt)
        ref.fit(X[:n], y[:n], epochs=1, batch_size=batch, shuffle=False)
        wa = ref.get_weights()
        for label, ops in variants:
            net = make_net(ops, spec, "float64", opt)
            net.fit(X[:n], y[:n], epochs=1, batch_size=batch, shuffle=False)
            wb = net.get_weights()
            worst, where = _worst({k: (wa[k], wb[k]) for k in wa})
            runs[f"{label}/{opt}"] = {"max_rel_diff": worst, "worst_tensor": where}
    figure = max(r["max_rel_diff"] for r in runs.values())
    return {"criterion": "a", "what": f"float64, {steps} steps of {batch}, final weights",
            "figure": figure, "threshold": TOL_A, "ok": _verdict(figure, TOL_A), "runs": runs,
            "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------- (b)
def criterion_b(a: str, b: str, X: np.ndarray, y: np.ndarray, *, steps: int, batch: int, spec: str,
                optimizers: tuple[str, ...] = ("momentum", "adam"),
                variants: list[tuple[str, Ops]] | None = None, activation: str = "tanh") -> dict[str, Any]:
    """float32 one-step parity along A's trajectory (B restarts from A's state every step).

    Hidden units are tanh, not ReLU: ReLU's derivative jumps at 0, so a pre-activation within
    rounding of 0 (measured: 4.4e-7, numpy vs torch, once in 200 steps) takes its sample's
    whole contribution to that unit's gradient row on one backend and not on the other; the
    velocity then differed by 8.9% of its largest element, with nothing wrong.  A step of a
    smooth network is a smooth function of its inputs, so rounding stays rounding-sized.
    (ReLU is compared end to end in float64, criterion (a), and by accuracy, criterion (c).)"""
    variants = kernel_variants(b) if variants is None else variants
    n = steps * batch
    if n > len(X):
        raise ValueError(f"criterion (b): {steps} steps of {batch} need {n} rows, the data has {len(X)}")
    runs: dict[str, Any] = {}
    t0 = time.perf_counter()
    for opt in optimizers:
        ref = make_net(a, spec, "float32", opt, activation=activation)
        nets = {}
        for label, ops in variants:
            nets[label] = make_net(ops, spec, "float32", opt, activation=activation)
        worst = {label: (0.0, "", -1) for label, _ in variants}
        excluded: dict[str, float] = {}
        for step in range(steps):
            xb, yb = X[step * batch:(step + 1) * batch], y[step * batch:(step + 1) * batch]
            w0, sd0 = _state(ref)
            loss_a = one_step(ref, xb, yb)
            after_a = _tensors(*_state(ref), loss_a)
            for label, _ in variants:
                net = nets[label]
                net.set_weights(w0)
                net.optimizer.load_state_dict(sd0, net.ops)
                loss_b = one_step(net, xb, yb)
                after_b = _tensors(*_state(net), loss_b)
                compared = {k: (after_a[k], after_b.get(k)) for k in after_a}
                if first_adam_step(opt, sd0):
                    weights = {k: compared.pop(k) for k in list(compared) if k.startswith("weight ")}
                    excluded[label] = _worst(weights)[0]
                r, where = _worst(compared)
                if set(after_b) != set(after_a):
                    r, where = math.inf, f"tensors differ: {sorted(set(after_a) ^ set(after_b))}"
                if not r <= worst[label][0]:
                    worst[label] = (r, where, step)
        for label, (r, where, step) in worst.items():
            runs[f"{label}/{opt}"] = {"max_rel_diff": r, "worst_tensor": where, "worst_step": step}
            if label in excluded:
                runs[f"{label}/{opt}"]["first_step_weights_not_compared"] = excluded[label]
    figure = max(r["max_rel_diff"] for r in runs.values())
    return {"criterion": "b", "what": f"float32, one step at a time along A's trajectory, {steps} steps of {batch}, "
                                      f"{activation}",
            "figure": figure, "threshold": TOL_B, "ok": _verdict(figure, TOL_B), "runs": runs,
            "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------- (c)
def criterion_c(a: str, b: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], *,
                batch: int, spec: str, optimizer: str = "adam",
                variants: list[tuple[str, Ops]] | None = None) -> dict[str, Any]:
    """float32, one full shuffled epoch on each backend from the same seed; test accuracy compared."""
    variants = kernel_variants(b) if variants is None else variants
    (X, y), (Xt, yt) = train, test
    t0 = time.perf_counter()
    ref = make_net(a, spec, "float32", optimizer)
    ref.fit(X, y, epochs=1, batch_size=batch, shuffle=True)
    acc_a = 100.0 * ref.evaluate(Xt, yt)["accuracy"]
    runs: dict[str, Any] = {}
    for label, ops in variants:
        net = make_net(ops, spec, "float32", optimizer)
        net.fit(X, y, epochs=1, batch_size=batch, shuffle=True)
        acc_b = 100.0 * net.evaluate(Xt, yt)["accuracy"]
        runs[f"{label}/{optimizer}"] = {"accuracy_a": acc_a, "accuracy_b": acc_b, "diff_points": abs(acc_a - acc_b)}
    figure = max(r["diff_points"] for r in runs.values())
    return {"criterion": "c", "what": f"float32, one epoch of {len(y):,} samples, batch {batch}, {optimizer}: "
                                      f"test accuracy on {len(yt):,} samples",
            "figure": figure, "threshold": TOL_C, "ok": _verdict(figure, TOL_C), "runs": runs,
            "accuracy_a": acc_a, "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------- report
def describe(res: dict[str, Any]) -> str:
    """One line per criterion: figure, threshold, PASS/FAIL."""
    c = res["criterion"]
    word = "PASS" if res["ok"] else "FAIL"
    if c == "c":
        accs = ", ".join(f"{k.split('/')[0]} {r['accuracy_b']:.2f}%" for k, r in res["runs"].items())
        return (f"({c}) {word}  {res['what']}: A {res['accuracy_a']:.2f}%, B {accs}; "
                f"max difference {res['figure']:.2f} points (threshold {res['threshold']:g})")
    runs = ", ".join(f"{k} {r['max_rel_diff']:.1e}" for k, r in res["runs"].items())
    return (f"({c}) {word}  {res['what']}: max relative difference {res['figure']:.2e} "
            f"(threshold {res['threshold']:g}; {runs})")


def run_all(a: str, b: str, *, spec: str, batch: int, steps: int, steps_b: int, train: int, test: int,
            batch_c: int, which: str = "abc", log: Any = print) -> dict[str, Any]:
    data, (X, y), (Xt, yt) = load_data(max(train, steps * batch, steps_b * batch), test)
    out: dict[str, Any] = {"a": a, "b": b, "data": data, "spec": spec, "batch": batch,
                           "kernels": [label for label, _ in kernel_variants(b)],
                           "relative_difference": "max|a - b| / max|a| per tensor, worst over tensors (and steps)"}
    log(f"parity: {a} (A, reference) vs {b} (B; kernels: {', '.join(out['kernels'])}), network {spec}; data: {data}")
    if "a" in which:
        out["criterion_a"] = criterion_a(a, b, X, y, steps=steps, batch=batch, spec=spec)
        log(describe(out["criterion_a"]))
    if "b" in which:
        out["criterion_b"] = criterion_b(a, b, X, y, steps=steps_b, batch=batch, spec=spec)
        log(describe(out["criterion_b"]))
    if "c" in which:
        n = min(train, len(X)) if not os.environ.get("DEEPNET_MNIST") else len(X)
        out["criterion_c"] = criterion_c(a, b, (X[:n], y[:n]), (Xt, yt), batch=batch_c, spec=spec)
        log(describe(out["criterion_c"]))
    out["ok"] = all(out[f"criterion_{c}"]["ok"] for c in which)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", default="numpy", help="reference backend (default numpy)")
    ap.add_argument("--b", default="cupy", help="compared backend: cupy, cupy-shaped, strict, torch, ...")
    ap.add_argument("--dry-run", action="store_true", help=f"CPU sizes: {DRY}")
    ap.add_argument("--spec", default=None, help=f"layer sizes (default {FULL['spec']})")
    ap.add_argument("--batch", type=int, default=None, help="(a), (b): batch size (default 64)")
    ap.add_argument("--batch-c", type=int, default=None, help="(c): batch size (default 64)")
    ap.add_argument("--steps", type=int, default=None, help="(a): float64 steps (default 300)")
    ap.add_argument("--steps-b", type=int, default=None, help="(b): one-step comparisons (default 200)")
    ap.add_argument("--train", type=int, default=None, help="(c): synthetic training samples (default 20000)")
    ap.add_argument("--test", type=int, default=None, help="(c): synthetic test samples (default 5000)")
    ap.add_argument("--only", default="abc", help="criteria to run, e.g. 'ab'")
    ap.add_argument("--json", default=None, help="write the full results here")
    args = ap.parse_args(argv)
    sizes = dict(DRY if args.dry_run else FULL)
    for k in sizes:
        if getattr(args, k) is not None:
            sizes[k] = getattr(args, k)
    t0 = time.perf_counter()
    try:
        out = run_all(args.a, args.b, which=args.only, **sizes)
    except Exception as err:                     # a backend that cannot run is a FAIL with its reason
        out = {"a": args.a, "b": args.b, "ok": False, "error": f"{type(err).__name__}: {err}"}
        print(f"parity FAIL: {out['error']}", file=sys.stderr)
    out["seconds"] = time.perf_counter() - t0
    print(f"parity {args.a} vs {args.b}: {'PASS' if out['ok'] else 'FAIL'} ({out['seconds']:.1f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
