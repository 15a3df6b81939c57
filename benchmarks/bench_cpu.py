"""CPU training speed: deepnet against PyTorch, JAX, scikit-learn and a plain NumPy loop.

Every framework trains the same network from the same initial weights on the same
batches in the same order, with the same optimizer and number of threads.  Repetitions
are interleaved (framework A, B, C, then again) and the median samples per second is
reported with the ratio deepnet / PyTorch per repetition.  "PyTorch" is the faster of its
default and fused optimizers.  The "BLAS floor" is the time of only the matrix products
one training step needs, done alone with NumPy on preallocated arrays.

"deepnet compiled" is deepnet's fit with ``graphs="epoch"``; "jax jit" is one jitted JAX
step per batch, "jax scan" the whole pass as one jitted ``lax.scan``.  Their compilation
is timed apart (``compile_s``), and "deepnet compiled" is compared per repetition with
the fastest peer (PyTorch's two runs and JAX's two), with JAX's scan and with plain deepnet.

    DEEPNET_MNIST=../shared/data/mnist python benchmarks/bench_cpu.py [--configs seed,small] [--reps 5]
        [--threads 2] [--json results.json]

PyTorch, JAX and scikit-learn are optional (skipped with a message when missing;
``pip install 'deepnet[bench]'`` installs JAX).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
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
def run_deepnet(cfg: Config, X: np.ndarray, y: np.ndarray, graphs: str = "off") -> Callable[[], None]:
    """deepnet's fit, one epoch without shuffling: the plain loop (``graphs="off"``); ``graphs="epoch"`` is
    the "deepnet compiled" run."""
    net = deepnet_net(cfg)

    def go() -> None:
        net.fit(X, y, epochs=1, batch_size=cfg.batch, shuffle=False, graphs=graphs)
    return go


def deepnet_compile_seconds(cfg: Config, X: np.ndarray, y: np.ndarray) -> float:
    """The first ``fit(graphs="epoch")`` of a fresh network on two batches: compilation with an
    empty numba disk cache (the worker points ``NUMBA_CACHE_DIR`` at a new folder), imports excluded."""
    import importlib.util

    if importlib.util.find_spec("numba") is not None:
        import numba  # noqa: F401  (its import is not compilation)
    n = 2 * cfg.batch
    go = run_deepnet(cfg, X[:n], y[:n], graphs="epoch")
    t0 = time.perf_counter()
    go()
    return time.perf_counter() - t0


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


# ---------------------------------------------------------------- JAX
def _seed_targets(y: np.ndarray) -> np.ndarray:
    """The seed's targets: 0.99 for the label, 0.01 elsewhere."""
    T = np.full((len(y), 10), 0.01, np.float32)
    T[np.arange(len(y)), y] = 0.99
    return T


class JaxRun:
    """The network trained with JAX, in jax.numpy: the same initial weights, batches, loss and
    optimizer formulas as the other runners (no optax).  ``scan=False``: one ``jax.jit`` step per
    batch, called from Python ("jax jit"); ``scan=True``: the whole pass one jitted
    ``lax.scan`` over the batches ("jax scan").  The batches are stacked on the device once,
    shape (batches, B, ...); ``compile_s`` is the tracing and XLA compilation of the function."""

    def __init__(self, cfg: Config, X: np.ndarray, y: np.ndarray, scan: bool) -> None:
        import jax

        self.cfg, self.jax = cfg, jax
        B = cfg.batch
        nb = len(X) // B
        if nb == 0 or nb * B != len(X):
            raise ValueError(f"JaxRun: expected a whole number of batches of {B} samples, got {len(X)} samples")
        T = _seed_targets(y) if cfg.loss == "sse" else np.asarray(y, np.int32)
        self.Xs = jax.device_put(np.ascontiguousarray(X, np.float32).reshape(nb, B, X.shape[1]))
        self.Ts = jax.device_put(T.reshape(nb, B, *T.shape[1:]))
        self.params = [(jax.device_put(W), None if b is None else jax.device_put(b)) for W, b in initial_weights(cfg)]
        self.state = self._init_state()
        self.scan = scan
        if scan:
            fn = jax.jit(self._epoch, donate_argnums=(0, 1))
            args: tuple = (self.params, self.state, self.Xs, self.Ts)
        else:
            fn = jax.jit(self._indexed_step, donate_argnums=(0, 1))
            self.index = [jax.device_put(np.int32(i)) for i in range(nb)]
            args = (self.params, self.state, self.Xs, self.Ts, self.index[0])
        t0 = time.perf_counter()
        fn.lower(*args).compile()          # the first call's compilation; it fills jit's cache
        self.compile_s = time.perf_counter() - t0
        self.fn = fn

    # the model, loss and optimizer, traced once
    def _init_state(self) -> Any:
        zeros = self.jax.tree_util.tree_map(self.jax.numpy.zeros_like, self.params)
        if self.cfg.optimizer == "sgd":
            return ()
        if self.cfg.optimizer == "momentum":
            return zeros
        return zeros, self.jax.tree_util.tree_map(self.jax.numpy.zeros_like, self.params), self.jax.numpy.float32(0)

    def loss(self, params: list, x: Any, t: Any) -> Any:
        jax, jnp = self.jax, self.jax.numpy
        a = x
        for i, (W, b) in enumerate(params):
            a = a @ W.T
            if b is not None:
                a = a + b
            if self.cfg.activation == "sigmoid":
                a = jax.nn.sigmoid(a)
            elif i < len(params) - 1:
                a = jax.nn.relu(a)
        if self.cfg.loss == "sse":             # f = Σ (z − y)² per sample, mean over the batch
            return jnp.sum((a - t) ** 2) / x.shape[0]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(a), t[:, None], axis=1))

    def _update(self, params: list, state: Any, grads: list) -> tuple[list, Any]:
        jnp, tmap = self.jax.numpy, self.jax.tree_util.tree_map
        lr = np.float32(self.cfg.lr)
        if self.cfg.optimizer == "sgd":
            return tmap(lambda p, g: p - lr * g, params, grads), state
        if self.cfg.optimizer == "momentum":         # v ← μv + g, w ← w − ηv
            v = tmap(lambda v, g: np.float32(0.9) * v + g, state, grads)
            return tmap(lambda p, v: p - lr * v, params, v), v
        m, v, t = state                               # Adam as deepnet's: bias correction folded in η_t, ε̂
        b1, b2 = np.float32(0.9), np.float32(0.999)
        t = t + 1
        m = tmap(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
        v = tmap(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
        c2 = jnp.sqrt(1 - b2 ** t)
        lr_t, eps_hat = lr * c2 / (1 - b1 ** t), c2 * np.float32(1e-8)
        return tmap(lambda p, m, v: p - lr_t * m / (jnp.sqrt(v) + eps_hat), params, m, v), (m, v, t)

    def _step(self, params: list, state: Any, x: Any, t: Any) -> tuple[list, Any]:
        return self._update(params, state, self.jax.grad(self.loss)(params, x, t))

    def _indexed_step(self, params: list, state: Any, Xs: Any, Ts: Any, i: Any) -> tuple[list, Any]:
        return self._step(params, state, Xs[i], Ts[i])

    def _epoch(self, params: list, state: Any, Xs: Any, Ts: Any) -> tuple[list, Any]:
        def body(carry: tuple, batch: tuple) -> tuple[tuple, None]:
            return self._step(*carry, *batch), None
        return self.jax.lax.scan(body, (params, state), (Xs, Ts))[0]

    # the runs
    def go(self) -> None:
        """One pass over the batches, finished (block_until_ready) when it returns."""
        if self.scan:
            self.params, self.state = self.fn(self.params, self.state, self.Xs, self.Ts)
        else:
            for i in self.index:
                self.params, self.state = self.fn(self.params, self.state, self.Xs, self.Ts, i)
        self.jax.block_until_ready((self.params, self.state))

    def weights(self) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """The current weights, (W, b) per layer as in ``initial_weights``."""
        return [(np.asarray(W), None if b is None else np.asarray(b)) for W, b in self.params]


def _limit_jax_threads(threads: int) -> None:
    """Give XLA's CPU client ``threads`` cores; call before jax is imported.

    XLA has no thread-count setting: it sizes its pools from the cores the process may run
    on (``--xla_cpu_multi_thread_eigen=false`` still leaves a second pool running the work on
    another core), so below the machine's count the process is restricted to that many cores."""
    if threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    if not hasattr(os, "sched_setaffinity"):
        print(f"jax: cannot restrict XLA to {threads} thread(s) on {platform.system()}: it uses every core",
              file=sys.stderr)
        return
    cores = sorted(os.sched_getaffinity(0))
    if threads < len(cores):
        os.sched_setaffinity(0, cores[:threads])


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
    import shutil
    import tempfile

    if framework in ("deepnet mkl", "MKL floor"):
        os.environ["DEEPNET_BLAS"] = "mkl"        # read when deepnet's NumPy backend is created
        os.environ["MKL_NUM_THREADS"] = str(threads)
    cache = None
    if framework == "deepnet compiled":           # compile from scratch: an empty numba cache, read at import
        cache = tempfile.mkdtemp(prefix="bench-cpu-numba-")
        os.environ["NUMBA_CACHE_DIR"] = cache
    if framework.startswith("jax"):
        _limit_jax_threads(threads)
    try:
        _limit_threads(threads)
        _time_one(config, framework, threads, scale)
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)


def _time_one(config: str, framework: str, threads: int, scale: float) -> None:
    """Build ``framework``'s run of ``config``, warm it up once, time one pass, print JSON."""
    cfg = CONFIGS[config]
    n = max(cfg.batch, int(cfg.samples * scale) // cfg.batch * cfg.batch)
    X, y = load_data(n)
    compile_s = None
    if framework == "deepnet compiled":
        compile_s = deepnet_compile_seconds(cfg, X, y)
        go = run_deepnet(cfg, X, y, graphs="epoch")
    elif framework.startswith("jax"):
        run = JaxRun(cfg, X, y, scan=framework == "jax scan")
        go, compile_s = run.go, run.compile_s
    elif framework.startswith("torch"):
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
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "samples": n, **({"compile_s": compile_s} if compile_s is not None else {})}))


def _spawn(config: str, framework: str, threads: int, scale: float) -> dict:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, __file__, "--worker", config, framework, "--threads", str(threads),
                          "--scale", str(scale)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{config}/{framework} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


FRAMEWORKS = ["deepnet", "deepnet compiled", "deepnet mkl", "numpy loop", "torch", "torch fused", "jax jit",
              "jax scan", "sklearn", "BLAS floor", "MKL floor", "torch BLAS floor"]
ALWAYS = {"deepnet", "BLAS floor", "deepnet mkl", "MKL floor"}     # run whatever --only says
PEERS = ("torch", "torch fused", "jax jit", "jax scan")           # "fastest peer": the best of these per rep
# issue 26's targets for "deepnet compiled": per-pair median ratio against a column, and compilation
TARGETS = {"seed": ("jax scan", 1.0), "small": ("jax scan", 1.0), "medium": ("fastest peer", 1.1),
           "wide": ("fastest peer", 1.1)}
COMPILE_TARGET_S = 5.0


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
                    help="comma-separated subset of frameworks to run (deepnet and the BLAS floor always run): "
                         + ", ".join(FRAMEWORKS))
    ap.add_argument("--worker", nargs=2, metavar=("CONFIG", "FRAMEWORK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], args.threads, args.scale)
        return
    only = _parse_only(ap, args.only)
    if args.reps < 1 or args.threads < 1 or args.scale <= 0:
        ap.error(f"--reps and --threads: expected at least 1, --scale above 0; got {args.reps}, {args.threads}, "
                 f"{args.scale}")
    unknown = [c for c in args.configs.split(",") if c not in CONFIGS]
    if unknown:
        ap.error(f"--configs: expected names from {', '.join(CONFIGS)}, got {', '.join(unknown)}")

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
    jax_version = _jax_version()
    if not jax_version:
        print("JAX not installed: its columns are skipped (pip install 'deepnet[bench]')")

    mkl = _mkl_available() and not args.no_mkl
    if not mkl:
        print("oneMKL not available (pip install 'deepnet[mkl]'): the 'deepnet mkl' column is skipped")
    results: dict[str, dict] = {}
    for name in args.configs.split(","):
        cfg = CONFIGS[name]
        frameworks = ["deepnet", "deepnet compiled"] + (["deepnet mkl"] if mkl else []) + ["numpy loop"]
        if torch_version:
            frameworks += ["torch", "torch fused"]
        if jax_version:
            frameworks += ["jax jit", "jax scan"]
        if sk_version and cfg.loss == "xent":
            frameworks.append("sklearn")
        frameworks.append("BLAS floor")
        if mkl:
            frameworks.append("MKL floor")
        if torch_version:
            frameworks.append("torch BLAS floor")
        if only:
            frameworks = [k for k in frameworks if k in only | ALWAYS]
        sps: dict[str, list[float]] = {k: [] for k in frameworks}
        compile_s: dict[str, list[float]] = {}
        n = 0
        for _ in range(args.reps):                 # interleaved: every framework once per repetition
            for k in frameworks:
                r = _spawn(name, k, args.threads, args.scale)
                n = r["samples"]
                sps[k].append(n / r["seconds"])
                if "compile_s" in r:
                    compile_s.setdefault(k, []).append(r["compile_s"])
        results[name] = config_results(name, n, cfg.batch, sps, compile_s)
        print(_table_block(name, cfg, results[name]), flush=True)

    meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "processor": _cpu_name(),
            "cpus": os.cpu_count(), "threads": args.threads, "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch_version, "sklearn": sk_version, "jax": jax_version,
            "mnist": bool(os.environ.get("DEEPNET_MNIST")), "isolation": "one process per framework and repetition"}
    print("\n" + summary_table(results, meta))
    if any("compiled_ratio_vs_deepnet" in r for r in results.values()):
        print("\n" + compiled_table(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": results}, fh, indent=2)


def _parse_only(ap: argparse.ArgumentParser, only: str | None) -> set[str]:
    """``--only``'s names (empty: every framework); an unknown name is an error naming the known ones."""
    if only is None:
        return set()
    names = {k.strip() for k in only.split(",") if k.strip()}
    unknown = sorted(names - set(FRAMEWORKS))
    if unknown or not names:
        ap.error(f"--only: expected a comma-separated subset of {', '.join(FRAMEWORKS)}; got {only!r}")
    return names


def _jax_version() -> str | None:
    try:
        import jax
    except ImportError:
        return None
    return jax.__version__


def _per_rep(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True)]


def config_results(name: str, n: int, batch: int, sps: dict[str, list[float]],
                   compile_s: dict[str, list[float]]) -> dict:
    """One configuration's results: samples/s per framework and repetition, their medians, and
    the per-repetition ratios (each repetition's runs are neighbours in time, so a pair's
    ratio is steadier than a ratio of medians)."""
    res: dict[str, Any] = {"samples": n, "batch": batch, "samples_per_s": sps,
                           "median": {k: statistics.median(v) for k, v in sps.items()}}
    if compile_s:
        res["compile_s"] = compile_s
    torch_runs = [sps[k] for k in ("torch", "torch fused") if k in sps]
    if torch_runs:
        best_torch = [max(r) for r in zip(*torch_runs, strict=True)]
        res["ratio_vs_torch"] = _per_rep(sps["deepnet"], best_torch)
    if "torch" in sps:
        res["ratio_vs_torch_default"] = _per_rep(sps["deepnet"], sps["torch"])
    if "torch BLAS floor" in sps and torch_runs:
        res["torch_fraction_of_its_floor"] = _per_rep(best_torch, sps["torch BLAS floor"])
    res["fraction_of_blas_floor"] = _per_rep(sps["deepnet"], sps["BLAS floor"])
    if "deepnet mkl" in sps:
        res["mkl_fraction_of_mkl_floor"] = _per_rep(sps["deepnet mkl"], sps["MKL floor"])
        if torch_runs:
            res["mkl_ratio_vs_torch"] = _per_rep(sps["deepnet mkl"], best_torch)
    if "deepnet compiled" in sps:
        res.update(_compiled_ratios(name, sps, compile_s))
    return res


def _compiled_ratios(name: str, sps: dict[str, list[float]], compile_s: dict[str, list[float]]) -> dict:
    """"deepnet compiled" against the fastest peer (per rep), JAX's scan epoch and plain deepnet,
    and whether issue 26's target for this configuration is met (on the median of the pairs)."""
    comp = sps["deepnet compiled"]
    out: dict[str, Any] = {"compiled_ratio_vs_deepnet": _per_rep(comp, sps["deepnet"])}
    peers = [k for k in PEERS if k in sps]
    if peers:
        reps = list(zip(*(sps[k] for k in peers), strict=True))
        out["fastest_peer"] = [peers[r.index(max(r))] for r in reps]
        out["compiled_ratio_vs_fastest_peer"] = _per_rep(comp, [max(r) for r in reps])
    if "jax scan" in sps:
        out["compiled_ratio_vs_jax_scan"] = _per_rep(comp, sps["jax scan"])
    if name in TARGETS:
        against, factor = TARGETS[name]
        key = "compiled_ratio_vs_" + against.replace(" ", "_")
        ratio = statistics.median(out[key]) if key in out else None
        comp_s = statistics.median(compile_s["deepnet compiled"]) if "deepnet compiled" in compile_s else None
        out["target"] = {"against": against, "factor": factor, "median_ratio": ratio,
                         "met": None if ratio is None else ratio >= factor,
                         "compile_s_median": comp_s, "compile_limit_s": COMPILE_TARGET_S,
                         "compile_met": None if comp_s is None else comp_s < COMPILE_TARGET_S}
    return out


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
        comp = res.get("compile_s", {}).get(k)
        lines.append(f"  {k:16s} {_fmt_spread(v)}" + (f"; compile {_fmt_seconds(comp)} s" if comp else ""))
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
    for key, label in (("compiled_ratio_vs_fastest_peer", "fastest peer (PyTorch, JAX)"),
                       ("compiled_ratio_vs_jax_scan", "JAX scan"), ("compiled_ratio_vs_deepnet", "deepnet")):
        if key in res:
            lines.append(f"  deepnet compiled / {label} per rep: {', '.join(f'{x:.2f}' for x in res[key])}")
    if "fastest_peer" in res:
        lines.append(f"  fastest peer per rep: {', '.join(res['fastest_peer'])}")
    return "\n".join(lines)


def _fmt_seconds(v: list[float]) -> str:
    return f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})"


def compiled_table(results: dict) -> str:
    """"deepnet compiled" against its peers: medians of samples/s, per-pair ratios (median and
    min-max over the repetitions), compilation seconds and issue 26's targets."""
    rows = ["| config | deepnet | deepnet compiled | jax jit | jax scan | fastest peer | compiled / fastest peer | "
            "compiled / jax scan | compiled / deepnet | compile s: deepnet compiled / jax jit / jax scan | target |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]

    def spread(v: list[float] | None) -> str:
        return f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})" if v else "n/a"

    for name, r in results.items():
        if "compiled_ratio_vs_deepnet" not in r:
            continue
        med, comp = r["median"], r.get("compile_s", {})
        num = {k: f"{med[k]:,.0f}" if k in med else "n/a" for k in ("deepnet", "deepnet compiled", "jax jit",
                                                                  "jax scan")}
        peers = [k for k in PEERS if k in med]
        best = f"{max(med[k] for k in peers):,.0f}" if peers else "n/a"
        secs = " / ".join(f"{statistics.median(comp[k]):.2f}" if k in comp else "n/a"
                          for k in ("deepnet compiled", "jax jit", "jax scan"))
        rows.append(f"| {name} | {num['deepnet']} | {num['deepnet compiled']} | {num['jax jit']} | {num['jax scan']} | "
                    f"{best} | {spread(r.get('compiled_ratio_vs_fastest_peer'))} | "
                    f"{spread(r.get('compiled_ratio_vs_jax_scan'))} | {spread(r['compiled_ratio_vs_deepnet'])} | "
                    f"{secs} | {_fmt_target(r.get('target'))} |")
    return "\n".join(rows)


def _fmt_target(t: dict | None) -> str:
    if not t:
        return "n/a"
    speed = ("n/a" if t["met"] is None else "met" if t["met"] else "not met")
    comp = ("n/a" if t["compile_met"] is None else "met" if t["compile_met"] else "not met")
    return f">= {t['factor']:g}x {t['against']}: {speed}; compile < {t['compile_limit_s']:g} s: {comp}"


def summary_table(results: dict, meta: dict) -> str:
    head = (f"{meta['date']}, {meta['processor']}, {meta['threads']} threads, numpy {meta['numpy']}, "
            f"torch {meta['torch']}, scikit-learn {meta['sklearn']}, jax {meta.get('jax')}")
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
