"""CPU training speed: deepnet against PyTorch, scikit-learn and a plain NumPy loop.

Every framework trains the same network from the same initial weights on the same
batches in the same order, with the same optimizer and number of threads.  Repetitions
are interleaved (framework A, B, C, then again) and the median samples per second is
reported with the ratio deepnet / PyTorch per repetition.  "PyTorch" is the faster of its
default and fused optimizers.  The "BLAS floor" is the time of only the matrix products
one training step needs, done alone with NumPy on preallocated arrays.

    DEEPNET_MNIST=../shared/data/mnist python benchmarks/bench_cpu.py [--configs seed,small] [--reps 5]
        [--threads 2] [--json results.json]

PyTorch and scikit-learn are optional (skipped with a message when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Config:
    name: str
    sizes: list[int]
    activation: str       # hidden (and, for seed, output) activation
    loss: str             # "sse" (seed) or "xent"
    optimizer: str        # "sgd", "momentum", "adam"
    lr: float
    batch: int
    samples: int          # samples per timed repetition
    bias: bool = True


CONFIGS = {
    "seed": Config("seed", [784, 50, 10], "sigmoid", "sse", "sgd", 0.1, 1, 4000, bias=False),
    "small": Config("small", [784, 128, 10], "relu", "xent", "momentum", 0.01, 64, 32000),
    "medium": Config("medium", [784, 512, 512, 10], "relu", "xent", "adam", 1e-3, 128, 12800),
    "wide": Config("wide", [784, 2048, 2048, 2048, 10], "relu", "xent", "adam", 1e-3, 256, 2560),
}


# ---------------------------------------------------------------- data and weights
def load_data(n: int) -> tuple[np.ndarray, np.ndarray]:
    path = os.environ.get("DEEPNET_MNIST")
    if path and os.path.isdir(path):
        from deepnet.datasets import load_mnist_folder

        (X, y), _ = load_mnist_folder(path)
        return np.ascontiguousarray(X[:n]), y[:n]
    rng = np.random.default_rng(0)   # no MNIST: random pixels (speed does not depend on content)
    return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)


def deepnet_net(cfg: Config):
    import deepnet as dn
    from deepnet.presets import mlp_layers, seed_layers

    if cfg.name == "seed":
        return dn.Network(seed_layers(), seed=0, loss=dn.SumOfSquares(on=0.99, off=0.01), optimizer=dn.SGD(cfg.lr))
    opt = {"sgd": lambda: dn.SGD(cfg.lr), "momentum": lambda: dn.SGD(cfg.lr, momentum=0.9),
           "adam": lambda: dn.Adam(cfg.lr)}[cfg.optimizer]()
    return dn.Network(mlp_layers(cfg.sizes, cfg.activation, bias=cfg.bias), seed=0, loss="xent", optimizer=opt)


def initial_weights(cfg: Config) -> list[tuple[np.ndarray, np.ndarray | None]]:
    w = deepnet_net(cfg).get_weights()
    out = []
    for i in range(len(cfg.sizes) - 1):
        W = [v for k, v in w.items() if k.endswith("weight")][i]
        b = [v for k, v in w.items() if k.endswith("bias")][i] if cfg.bias else None
        out.append((W.copy(), None if b is None else b.copy()))
    return out


# ---------------------------------------------------------------- runners
def run_deepnet(cfg: Config, X: np.ndarray, y: np.ndarray) -> Callable[[], None]:
    net = deepnet_net(cfg)

    def go() -> None:
        net.fit(X, y, epochs=1, batch_size=cfg.batch, shuffle=False)
    return go


def run_torch(cfg: Config, X: np.ndarray, y: np.ndarray, fused: bool) -> Callable[[], None]:
    import torch

    mods: list = []
    for i, (W, b) in enumerate(initial_weights(cfg)):
        lin = torch.nn.Linear(W.shape[1], W.shape[0], bias=b is not None)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W))
            if b is not None:
                lin.bias.copy_(torch.from_numpy(b))
        mods.append(lin)
        last = i == len(cfg.sizes) - 2
        if not last or cfg.loss == "sse":
            mods.append(torch.nn.Sigmoid() if cfg.activation == "sigmoid" else torch.nn.ReLU())
    model = torch.nn.Sequential(*mods)
    kw = {"fused": True} if fused else {}
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, **kw)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9 if cfg.optimizer == "momentum" else 0.0, **kw)
    Xt = torch.from_numpy(X)
    if cfg.loss == "sse":
        T = np.full((len(y), 10), 0.01, np.float32)
        T[np.arange(len(y)), y] = 0.99
        Tt = torch.from_numpy(T)

        def loss_fn(z, s, e):
            return ((z - Tt[s:e]) ** 2).sum() / (e - s)
    else:
        yt = torch.from_numpy(y.astype(np.int64))
        ce = torch.nn.CrossEntropyLoss()

        def loss_fn(z, s, e):
            return ce(z, yt[s:e])

    def go() -> None:
        n, B = len(X), cfg.batch
        for s in range(0, n, B):
            e = min(s + B, n)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(Xt[s:e]), s, e)
            loss.backward()
            opt.step()
    return go


def run_numpy(cfg: Config, X: np.ndarray, y: np.ndarray) -> Callable[[], None]:
    """A plain NumPy loop written for the network (float32, in place where natural)."""
    params = [(W.copy(), None if b is None else b.copy()) for W, b in initial_weights(cfg)]
    lr = np.float32(cfg.lr)
    state = [[np.zeros_like(W), None if b is None else np.zeros_like(b)] for W, b in params]
    state2 = [[np.zeros_like(W), None if b is None else np.zeros_like(b)] for W, b in params]
    t = [0]
    T = np.full((len(y), 10), 0.01, np.float32)
    T[np.arange(len(y)), y] = 0.99

    def update(i: int, j: int, p: np.ndarray, g: np.ndarray) -> None:
        if cfg.optimizer == "sgd":
            p -= lr * g
        elif cfg.optimizer == "momentum":
            v = state[i][j]
            v *= np.float32(0.9)
            v += g
            p -= lr * v
        else:
            m, v = state[i][j], state2[i][j]
            m *= np.float32(0.9)
            m += np.float32(0.1) * g
            v *= np.float32(0.999)
            v += np.float32(0.001) * g * g
            c1, c2 = 1 - 0.9 ** t[0], 1 - 0.999 ** t[0]
            p -= np.float32(cfg.lr * (c2 ** 0.5) / c1) * m / (np.sqrt(v) + np.float32(1e-8 * c2 ** 0.5))

    def go() -> None:
        n, B = len(X), cfg.batch
        for s in range(0, n, B):
            e = min(s + B, n)
            t[0] += 1
            a = [X[s:e]]
            for i, (W, b) in enumerate(params):
                h = a[-1] @ W.T
                if b is not None:
                    h += b
                last = i == len(params) - 1
                if cfg.activation == "sigmoid":
                    h = 1.0 / (1.0 + np.exp(-h))
                elif not last:
                    np.maximum(h, 0, out=h)
                a.append(h)
            z = a[-1]
            if cfg.loss == "sse":
                d = (2.0 / (e - s)) * (z - T[s:e]) * z * (1 - z)
            else:
                p = np.exp(z - z.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                p[np.arange(e - s), y[s:e]] -= 1
                d = p / np.float32(e - s)
            for i in range(len(params) - 1, -1, -1):
                W, b = params[i]
                gW = d.T @ a[i]
                gb = d.sum(axis=0) if b is not None else None
                if i > 0:
                    d = d @ W
                    if cfg.activation == "sigmoid":
                        d *= a[i] * (1 - a[i])
                    else:
                        d *= a[i] > 0
                update(i, 0, W, gW)
                if b is not None:
                    update(i, 1, b, gb)
    return go


def run_sklearn(cfg: Config, X: np.ndarray, y: np.ndarray) -> Callable[[], None] | None:
    if cfg.loss != "xent":
        return None          # no sum-of-squares classifier, no bias-free layers
    from sklearn.neural_network import MLPClassifier

    solver = "adam" if cfg.optimizer == "adam" else "sgd"
    clf = MLPClassifier(hidden_layer_sizes=tuple(cfg.sizes[1:-1]), activation="relu", solver=solver,
                        learning_rate_init=cfg.lr, batch_size=cfg.batch, alpha=0.0, shuffle=False,
                        momentum=0.9, nesterovs_momentum=False, random_state=0)
    classes = np.arange(10)

    def go() -> None:
        clf.partial_fit(X, y, classes=classes)     # one epoch over the samples, own initial weights
    return go


def _products_floor(cfg: Config, n: int, make: Callable[[tuple[int, int]], Any],
                    mm: Callable[[Any, Any, Any], Any]) -> Callable[[], None]:
    """Only the matrix products of each step: forward h = a Wᵀ, backward ∂W = δᵀ a and
    (except the first layer) ẽ = δ W, into preallocated arrays made by ``make``."""
    B = cfg.batch
    Ws = [make((o, i)) for i, o in zip(cfg.sizes[:-1], cfg.sizes[1:], strict=True)]
    acts = [make((B, k)) for k in cfg.sizes]
    grads = [make(tuple(W.shape)) for W in Ws]
    errs = [make((B, k)) for k in cfg.sizes]

    def go() -> None:
        for _ in range(n // B):
            for i, W in enumerate(Ws):
                mm(acts[i], W.T, acts[i + 1])
            for i in range(len(Ws) - 1, -1, -1):
                mm(acts[i + 1].T, acts[i], grads[i])
                if i > 0:
                    mm(acts[i + 1], Ws[i], errs[i])
    return go


def blas_floor(cfg: Config, n: int) -> Callable[[], None]:
    """The products with NumPy (OpenBLAS in its wheels): what deepnet uses by default."""
    rng = np.random.default_rng(0)
    return _products_floor(cfg, n, lambda shape: rng.random(shape, dtype=np.float32),
                           lambda a, b, out: np.dot(a, b, out=out))


def mkl_blas_floor(cfg: Config, n: int) -> Callable[[], None]:
    """The products through deepnet's oneMKL binding (what ``DEEPNET_BLAS=mkl`` uses)."""
    from deepnet.backend.mkl_blas import MklBlas

    mkl = MklBlas()
    mkl.MIN_WORK = 0
    rng = np.random.default_rng(0)
    return _products_floor(cfg, n, lambda shape: rng.random(shape, dtype=np.float32),
                           lambda a, b, out: mkl.gemm(a, b, out, 0.0))


def torch_blas_floor(cfg: Config, n: int) -> Callable[[], None]:
    """The products with PyTorch's BLAS (MKL in its x86 CPU builds): the floor PyTorch's own
    training runs against."""
    import torch

    g = torch.Generator().manual_seed(0)
    return _products_floor(cfg, n, lambda shape: torch.rand(shape, generator=g),
                           lambda a, b, out: torch.mm(a, b, out=out))


# ---------------------------------------------------------------- harness
def _limit_threads(threads: int) -> None:
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)
    except ImportError:
        pass


def worker(config: str, framework: str, threads: int, scale: float) -> None:
    """One timed run in a fresh process: build, warm up once, time one pass, print JSON.

    Each framework runs alone in its process so that idle, spinning threads of another
    library's pool (OpenMP, OpenBLAS) never compete with it for the cores.
    """
    if framework in ("deepnet mkl", "MKL floor"):
        os.environ["DEEPNET_BLAS"] = "mkl"        # read when deepnet's NumPy backend is created
        os.environ["MKL_NUM_THREADS"] = str(threads)
    _limit_threads(threads)
    cfg = CONFIGS[config]
    n = max(cfg.batch, int(cfg.samples * scale) // cfg.batch * cfg.batch)
    X, y = load_data(n)
    if framework.startswith("torch"):
        import torch
        torch.set_num_threads(threads)
        if framework == "torch BLAS floor":
            go = torch_blas_floor(cfg, len(X))
        else:
            go = run_torch(cfg, X, y, fused=framework == "torch fused")
    else:
        go = {"deepnet": run_deepnet, "deepnet mkl": run_deepnet, "numpy loop": run_numpy, "sklearn": run_sklearn,
              "BLAS floor": lambda c, X, y: blas_floor(c, len(X)),
              "MKL floor": lambda c, X, y: mkl_blas_floor(c, len(X))}[framework](cfg, X, y)
    go()                                   # warm-up: first-touch allocations, caches
    t0 = time.perf_counter()
    go()
    print(json.dumps({"seconds": time.perf_counter() - t0, "samples": n}))


def _spawn(config: str, framework: str, threads: int, scale: float) -> dict:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, __file__, "--worker", config, framework, "--threads", str(threads),
                          "--scale", str(scale)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{config}/{framework} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="seed,small,medium,wide")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the samples per repetition")
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-sklearn", action="store_true")
    ap.add_argument("--no-mkl", action="store_true", help="skip the 'deepnet mkl' run even if oneMKL is installed")
    ap.add_argument("--only", default=None,
                    help="comma-separated subset of frameworks to run (deepnet and the BLAS floor always run)")
    ap.add_argument("--worker", nargs=2, metavar=("CONFIG", "FRAMEWORK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], args.threads, args.scale)
        return

    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
        print("PyTorch not installed: its columns are skipped (pip install torch)")
    try:
        import sklearn
        sk_version = None if args.no_sklearn else sklearn.__version__
    except ImportError:
        sk_version = None
        print("scikit-learn not installed: its column is skipped")

    mkl = _mkl_available() and not args.no_mkl
    if not mkl:
        print("oneMKL not available (pip install 'deepnet[mkl]'): the 'deepnet mkl' column is skipped")
    results: dict[str, dict] = {}
    for name in args.configs.split(","):
        cfg = CONFIGS[name]
        frameworks = ["deepnet"] + (["deepnet mkl"] if mkl else []) + ["numpy loop"]
        if torch_version:
            frameworks += ["torch", "torch fused"]
        if sk_version and cfg.loss == "xent":
            frameworks.append("sklearn")
        frameworks.append("BLAS floor")
        if mkl:
            frameworks.append("MKL floor")
        if torch_version:
            frameworks.append("torch BLAS floor")
        if args.only:
            keep = set(args.only.split(",")) | {"deepnet", "BLAS floor", "deepnet mkl", "MKL floor"}
            frameworks = [k for k in frameworks if k in keep]
        sps: dict[str, list[float]] = {k: [] for k in frameworks}
        n = 0
        for _ in range(args.reps):                 # interleaved: every framework once per repetition
            for k in frameworks:
                r = _spawn(name, k, args.threads, args.scale)
                n = r["samples"]
                sps[k].append(n / r["seconds"])
        res = {"samples": n, "batch": cfg.batch, "samples_per_s": sps,
               "median": {k: statistics.median(v) for k, v in sps.items()}}
        torch_runs = [sps[k] for k in ("torch", "torch fused") if k in sps]
        if torch_runs:
            best_torch = [max(r) for r in zip(*torch_runs, strict=True)]
            res["ratio_vs_torch"] = [d / t for d, t in zip(sps["deepnet"], best_torch, strict=True)]
        if "torch" in sps:
            res["ratio_vs_torch_default"] = [d / t for d, t in zip(sps["deepnet"], sps["torch"], strict=True)]
        if "torch BLAS floor" in sps:
            res["torch_fraction_of_its_floor"] = [max(r) / f for r, f in
                                                  zip(zip(*torch_runs, strict=True), sps["torch BLAS floor"],
                                                      strict=True)]
        res["fraction_of_blas_floor"] = [d / f for d, f in zip(sps["deepnet"], sps["BLAS floor"], strict=True)]
        if "deepnet mkl" in sps:
            res["mkl_fraction_of_mkl_floor"] = [d / f for d, f in zip(sps["deepnet mkl"], sps["MKL floor"],
                                                                      strict=True)]
            if torch_runs:
                res["mkl_ratio_vs_torch"] = [d / t for d, t in zip(sps["deepnet mkl"], best_torch, strict=True)]
        results[name] = res
        print(_table_block(name, cfg, res), flush=True)

    meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "processor": _cpu_name(),
            "cpus": os.cpu_count(), "threads": args.threads, "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch_version, "sklearn": sk_version,
            "mnist": bool(os.environ.get("DEEPNET_MNIST")), "isolation": "one process per framework and repetition"}
    print("\n" + summary_table(results, meta))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": results}, fh, indent=2)


def _mkl_available() -> bool:
    try:
        from deepnet.backend.mkl_blas import MklBlas

        MklBlas()
        return True
    except (ImportError, OSError, RuntimeError, AttributeError):   # not installed, not loadable
        return False


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _fmt_spread(v: list[float]) -> str:
    return f"{statistics.median(v):,.0f} ({min(v):,.0f}-{max(v):,.0f})"


def _table_block(name: str, cfg: Config, res: dict) -> str:
    lines = [f"\n{name}: {'-'.join(map(str, cfg.sizes))} {cfg.activation}, {cfg.loss}, {cfg.optimizer}, "
             f"batch {cfg.batch}, {res['samples']} samples per repetition; samples/s median (min-max)"]
    for k, v in res["samples_per_s"].items():
        lines.append(f"  {k:12s} {_fmt_spread(v)}")
    if "ratio_vs_torch" in res:
        r = res["ratio_vs_torch"]
        lines.append(f"  deepnet / PyTorch (faster of default, fused) per rep: {', '.join(f'{x:.2f}' for x in r)}")
    f = res["fraction_of_blas_floor"]
    lines.append(f"  deepnet / BLAS floor per rep: {', '.join(f'{x:.2f}' for x in f)}")
    if "mkl_ratio_vs_torch" in res:
        r = res["mkl_ratio_vs_torch"]
        lines.append(f"  deepnet mkl / PyTorch per rep: {', '.join(f'{x:.2f}' for x in r)}")
    if "mkl_fraction_of_mkl_floor" in res:
        f = res["mkl_fraction_of_mkl_floor"]
        lines.append(f"  deepnet mkl / MKL floor per rep: {', '.join(f'{x:.2f}' for x in f)}")
    if "torch_fraction_of_its_floor" in res:
        f = res["torch_fraction_of_its_floor"]
        lines.append(f"  PyTorch (best) / its own BLAS floor per rep: {', '.join(f'{x:.2f}' for x in f)}")
    return "\n".join(lines)


def summary_table(results: dict, meta: dict) -> str:
    head = (f"{meta['date']}, {meta['processor']}, {meta['threads']} threads, numpy {meta['numpy']}, "
            f"torch {meta['torch']}, scikit-learn {meta['sklearn']}")
    rows = ["| config | deepnet (NumPy BLAS) | deepnet (oneMKL) | PyTorch best (default / fused) | numpy loop | "
            "sklearn | BLAS floor NumPy / MKL / PyTorch | deepnet / PyTorch | deepnet mkl / PyTorch | "
            "deepnet / NumPy floor | deepnet mkl / MKL floor | PyTorch / its floor |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def spread(v: list[float] | None) -> str:
        return f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})" if v else "n/a"

    def num(med: dict, k: str) -> str:
        return f"{med[k]:,.0f}" if k in med else "n/a"

    for name, r in results.items():
        med = r["median"]
        best = max(med.get("torch", 0), med.get("torch fused", 0))
        torch_cell = f"{best:,.0f} ({num(med, 'torch')} / {num(med, 'torch fused')})" if best else "n/a"
        rows.append(f"| {name} | {num(med, 'deepnet')} | {num(med, 'deepnet mkl')} | {torch_cell} | "
                    f"{num(med, 'numpy loop')} | {num(med, 'sklearn')} | {num(med, 'BLAS floor')} / "
                    f"{num(med, 'MKL floor')} / {num(med, 'torch BLAS floor')} | {spread(r.get('ratio_vs_torch'))} | "
                    f"{spread(r.get('mkl_ratio_vs_torch'))} | {spread(r['fraction_of_blas_floor'])} | "
                    f"{spread(r.get('mkl_fraction_of_mkl_floor'))} | {spread(r.get('torch_fraction_of_its_floor'))} |")
    return head + "\n" + "\n".join(rows)


if __name__ == "__main__":
    main()
