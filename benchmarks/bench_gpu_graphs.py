"""The training step with and without CUDA graphs (issue 15), every column side by side:
deepnet eager, deepnet with the step replayed as a CUDA graph (per step, and the whole epoch
as one graph), deepnet bf16, PyTorch eager, PyTorch fused Adam, PyTorch with the step in a
CUDA graph, JAX jit per step, JAX with the whole epoch in one ``lax.scan``, and the step's
matrix products alone on CuPy.

    PYTHONPATH=. python benchmarks/bench_gpu_graphs.py --json graphs.json        # on a GPU machine
    PYTHONPATH=. python benchmarks/bench_gpu_graphs.py --nets small,seed --columns deepnet_eager,torch_cuda_graph
    PYTHONPATH=. python benchmarks/bench_gpu_graphs.py --dry-run --reps 1         # CPU: numpy, tiny sizes, < 60 s

Networks (``--nets``): small 784-128-10 batch 64, medium 784-512-512-10 batch 128, wide
784-4096×4-10 batch 4096 (ReLU hidden, softmax cross-entropy, Adam lr 10⁻³), and seed
784-50-10 batch 1 (sigmoid, no biases, sum of squares with targets 0.01/0.99, SGD lr 0.1).
Sample counts: 60,000 (small, medium), 40,960 (wide), 5,000 (seed), rounded down to whole
batches so that no column has a partial last batch.  Random data (uniform inputs, labels
0-9), float32, resident on the device before the clock starts; TF32 off everywhere
(``CUPY_TF32=0``, PyTorch's ``allow_tf32`` flags, JAX's ``highest`` matmul precision).

Measurement: one untimed warm-up epoch (compilation, graph capture, allocator growth), then
``--reps`` timed epochs, each bracketed by a device synchronisation; samples/s is the median.
deepnet's columns time the epochs of one ``fit(epochs=1 + reps)`` through a callback that
synchronises at each epoch's end (a run captures its step in its first epoch, and with
``graphs="epoch"`` replays the whole-epoch graph only from its second);
``--deepnet-timing per-call`` times one ``fit(epochs=1)`` per rep instead (bench_gpu.py's way).
A column stops after fewer reps once its time (warm-up included) would pass
``--max-seconds-per-column``; once the whole run passes ``--max-seconds-total`` the columns
not yet run are reported n/a.  Columns run column by column (third-party columns first, the
deepnet graph columns last), so that a CUDA error in new capture code cannot spoil the
reference numbers.  Columns (``--columns``, keys as below):

    deepnet_eager        net.fit(X, y, batch_size=B, shuffle=True, check_finite="off", graphs="off")
    deepnet_graph        the same with graphs="on" (each step a replayed CUDA graph)
    deepnet_graph_epoch  the same with graphs="epoch" (the whole epoch one graph where possible)
    deepnet_bf16         graphs="on", precision="bf16"
    torch_eager          PyTorch, torch.optim.Adam defaults (seed: SGD)
    torch_fused          PyTorch, Adam(fused=True) (seed: SGD(fused=True)); CUDA only
    torch_cuda_graph     PyTorch, forward + backward + optimizer step captured in one torch.cuda.CUDAGraph
                         (capturable Adam, static input/target filled by index_select each step); CUDA only
    jax_jit              JAX, one jitted step per batch (optax if importable, else Adam in jax.numpy)
    jax_scan             JAX, the whole epoch one jitted lax.scan over the batches
    products             only the step's matrix products (x·Wᵀ, δᵀx, δW per layer) on the backend, eager

A column that cannot run says why (JSON ``reason``; ``n/a`` in the table): its library is
missing, it needs CUDA and the run is on the CPU, or deepnet's ``fit`` has no ``graphs=`` /
``precision=`` yet.  ``--json PATH`` is rewritten after every column (a run cut short keeps
what it measured) and holds every rep, the devices, the library versions, the date and the
command line.
"""

from __future__ import annotations

import os

# Before any of the libraries is imported: float32 products without TF32 on CuPy, and JAX
# allocating as it goes instead of taking 75 % of the GPU that CuPy and PyTorch share.
os.environ["CUPY_TF32"] = "0"
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse
import contextlib
import datetime
import gc
import importlib.metadata
import importlib.util
import inspect
import io
import itertools
import json
import platform
import shlex
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

import deepnet as dn
from deepnet.backend import get_ops
from deepnet.presets import mlp_layers, seed_layers


# ---------------------------------------------------------------------------- networks
@dataclass(frozen=True)
class Net:
    """One benchmarked network: layer widths, batch size, samples per epoch."""

    name: str
    sizes: tuple[int, ...]
    batch: int
    samples: int
    seed: bool = False          # the seed network: sigmoid everywhere, no biases, Σ(z − t)², SGD 0.1

    @property
    def label(self) -> str:
        return f"{'-'.join(map(str, self.sizes))}, batch {self.batch}"

    @property
    def n(self) -> int:
        """Samples per epoch: whole batches only."""
        return self.batch * max(1, self.samples // self.batch)


NETS: dict[str, Net] = {
    "small": Net("small", (784, 128, 10), 64, 60_000),
    "medium": Net("medium", (784, 512, 512, 10), 128, 60_000),
    "wide": Net("wide", (784, 4096, 4096, 4096, 4096, 10), 4096, 40_960),
    "seed": Net("seed", (784, 50, 10), 1, 5_000, seed=True),
}

#: --dry-run: the same networks at a few batches each, the wide one shrunk
DRY_NETS: dict[str, Net] = {
    "small": replace(NETS["small"], samples=4 * 64),
    "medium": replace(NETS["medium"], samples=4 * 128),
    "wide": replace(NETS["wide"], sizes=(784, 64, 64, 10), batch=32, samples=4 * 32),
    "seed": replace(NETS["seed"], samples=16),
}

ADAM_LR = 1e-3
SGD_LR = 0.1
TARGET_ON, TARGET_OFF = 0.99, 0.01      # the seed's targets for sum of squares


# ---------------------------------------------------------------------------- columns
class Skip(Exception):
    """A column that cannot run here; the message is the reason."""


@dataclass
class Settings:
    backend: str                # deepnet's backend
    torch_device: str           # "cuda" or "cpu"
    cuda: bool                  # a GPU run (CuPy backend, CUDA device)
    reps: int
    max_seconds: float          # per column
    dry_run: bool
    deepnet_timing: str = "one-fit"


@dataclass
class Timing:
    """Rates of the timed epochs and what it took to get there."""

    rates: list[float]
    warmup_s: float
    setup_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def time_epochs(run_epoch: Callable[[], None], sync: Callable[[], None], n: int, s: Settings,
                setup_s: float = 0.0) -> Timing:
    """One warm-up epoch, then up to ``s.reps`` timed ones (fewer once the column's time would
    pass ``s.max_seconds``), each between two device synchronisations."""
    start = time.perf_counter()
    sync()
    t0 = time.perf_counter()
    run_epoch()
    sync()
    warmup = time.perf_counter() - t0
    rates: list[float] = []
    for _ in range(s.reps):
        sync()
        t0 = time.perf_counter()
        run_epoch()
        sync()
        dt = time.perf_counter() - t0
        rates.append(n / dt)
        if len(rates) < s.reps and setup_s + (time.perf_counter() - start) + dt > s.max_seconds:
            break
    return Timing(rates, warmup, setup_s)


def make_data(net: Net) -> tuple[np.ndarray, np.ndarray]:
    """Uniform inputs in [0, 1) and labels 0-9, float32 / int64, the same for every column."""
    rng = np.random.default_rng(0)
    return rng.random((net.n, net.sizes[0]), dtype=np.float32), rng.integers(0, net.sizes[-1], net.n)


def seed_targets(y: np.ndarray, classes: int) -> np.ndarray:
    t = np.full((len(y), classes), TARGET_OFF, np.float32)
    t[np.arange(len(y)), y] = TARGET_ON
    return t


def free_device_memory(collect: bool) -> None:
    """Hand cached device memory back between columns (``collect``: after a full garbage
    collection, which costs a quarter of a second once PyTorch is imported)."""
    if collect:
        gc.collect()
    if "cupy" in sys.modules:
        with contextlib.suppress(Exception):
            sys.modules["cupy"].get_default_memory_pool().free_all_blocks()
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# ---- deepnet
def fit_options(graphs: str | None, precision: str | None) -> dict[str, str]:
    """The fit keywords for a column, or Skip when this deepnet's ``fit`` lacks them."""
    params = inspect.signature(dn.Network.fit).parameters
    kw: dict[str, str] = {}
    if graphs is not None:
        if "graphs" not in params:
            if graphs != "off":
                raise Skip("fit has no graphs= (older deepnet)")
        else:
            kw["graphs"] = graphs
    if precision is not None:
        if "precision" not in params:
            if precision != "float32":
                raise Skip("fit has no precision= (older deepnet)")
        else:
            kw["precision"] = precision
    return kw


def deepnet_network(net: Net, backend: str) -> dn.Network:
    if net.seed:
        return dn.Network(seed_layers(), seed=0, backend=backend,
                          loss=dn.SumOfSquares(on=TARGET_ON, off=TARGET_OFF), optimizer=dn.SGD(lr=SGD_LR))
    return dn.Network(mlp_layers(list(net.sizes), "relu"), seed=0, backend=backend,
                      loss=dn.SoftmaxCrossEntropy(), optimizer=dn.Adam(ADAM_LR))


def device_sync_for(ops: Any) -> Callable[[], None]:
    if getattr(ops.xp, "__name__", "") == "cupy":
        runtime = ops.xp.cuda.runtime
        return runtime.deviceSynchronize     # every stream: a graph may replay on its own
    return lambda: None


class EpochClock(dn.Callback):
    """Times the epochs of one ``fit``: epoch k lasts from the end of epoch k − 1 (for the first,
    the start of training) to its own end, each instant after a device synchronisation, so an
    epoch's time includes its shuffle.  Epoch 0 is the warm-up; training stops after
    ``reps`` timed epochs, or earlier once the column would pass ``max_seconds``."""

    def __init__(self, sync: Callable[[], None], n: int, s: Settings, start: float) -> None:
        self.sync, self.n, self.reps, self.max_seconds, self.start = sync, n, s.reps, s.max_seconds, start
        self.last = 0.0
        self.warmup = 0.0
        self.rates: list[float] = []

    def on_train_begin(self, net: dn.Network, logs: dict[str, Any]) -> None:
        self.sync()
        self.last = time.perf_counter()

    def on_epoch_end(self, net: dn.Network, epoch: int, logs: dict[str, Any]) -> None:
        self.sync()
        now = time.perf_counter()
        dt, self.last = now - self.last, now
        if epoch == 0:
            self.warmup = dt
        else:
            self.rates.append(self.n / dt)
        if len(self.rates) >= self.reps or (self.rates and now - self.start + dt > self.max_seconds):
            net.stop_training = True


def bench_deepnet(net: Net, X: np.ndarray, y: np.ndarray, s: Settings, graphs: str,
                  precision: str) -> Timing:
    """``s.deepnet_timing`` "one-fit": one ``fit(epochs=1 + reps)`` timed per epoch by
    :class:`EpochClock` (deepnet captures in a run's first epoch and, with ``graphs="epoch"``,
    replays a whole-epoch graph only from its second); "per-call": a warm-up ``fit(epochs=1)``
    and then one timed ``fit(epochs=1)`` per rep (as benchmarks/bench_gpu.py)."""
    kw = fit_options(graphs, precision)
    needs_cuda = graphs != "off" or precision != "float32"
    start = time.perf_counter()
    model = deepnet_network(net, s.backend)
    Xd, yd = dn.to_device(X, model.ops), dn.to_device(y, model.ops, dtype="int64")
    sync = device_sync_for(model.ops)
    setup = time.perf_counter() - start
    said = io.StringIO()
    common = dict(batch_size=net.batch, shuffle=True, check_finite="off", **kw)

    def epoch() -> None:
        model.fit(Xd, yd, epochs=1, **common)

    try:
        # what fit says (a reason it cannot capture, once) is kept for the JSON and repeated on stderr
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(said):
            warnings.simplefilter("always")
            if s.deepnet_timing == "per-call":
                timing = time_epochs(epoch, sync, net.n, s, setup_s=setup)
            else:
                clock = EpochClock(sync, net.n, s, start)
                model.fit(Xd, yd, epochs=1 + s.reps, callbacks=[clock], **common)
                if not clock.rates:
                    raise RuntimeError("fit stopped before a timed epoch")
                timing = Timing(clock.rates, clock.warmup, setup)
    except Skip:
        raise
    except Exception as err:
        if needs_cuda and not s.cuda:
            raise Skip(f"needs CUDA ({s.backend} backend): {type(err).__name__}: {err}") from err
        raise
    notes = sorted({str(w.message) for w in caught} | {line for line in said.getvalue().splitlines() if line.strip()})
    if needs_cuda and not s.cuda:
        notes.append(f"{s.backend} backend: nothing is captured; this only exercises the options")
    notes.append(f"timing: {s.deepnet_timing}")
    timing.notes = notes
    return timing


# ---- PyTorch
def torch_module(s: Settings, cuda_only: bool) -> Any:
    try:
        import torch
    except ImportError as err:
        raise Skip(f"torch not importable: {err}") from None
    if cuda_only and s.torch_device != "cuda":
        raise Skip("needs CUDA" + (" (dry run on the CPU)" if s.dry_run else " (no CUDA device for torch)"))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return torch


def torch_setup(torch: Any, net: Net, X: np.ndarray, y: np.ndarray, dev: str) -> tuple[Any, Any, Any, Callable]:
    """The model, the device data X and targets T (labels, or the seed's target rows), the loss."""
    torch.manual_seed(0)
    mods: list[Any] = []
    pairs = list(zip(net.sizes[:-1], net.sizes[1:], strict=True))
    for i, (a, b) in enumerate(pairs):
        mods.append(torch.nn.Linear(a, b, bias=not net.seed))
        if net.seed:
            mods.append(torch.nn.Sigmoid())
        elif i < len(pairs) - 1:
            mods.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*mods).to(dev)
    Xt = torch.from_numpy(X).to(dev)
    if net.seed:
        Tt = torch.from_numpy(seed_targets(y, net.sizes[-1])).to(dev)

        def loss_fn(z: Any, t: Any) -> Any:
            return ((z - t) ** 2).sum(dim=1).mean()
    else:
        Tt = torch.from_numpy(y.astype(np.int64)).to(dev)
        loss_fn = torch.nn.functional.cross_entropy
    return model, Xt, Tt, loss_fn


def torch_optimizer(torch: Any, net: Net, params: Any, **kw: Any) -> Any:
    if net.seed:
        kw.pop("capturable", None)         # SGD keeps no step count: nothing to capture
        return torch.optim.SGD(params, lr=SGD_LR, **kw)
    return torch.optim.Adam(params, lr=ADAM_LR, **kw)


def torch_sync(torch: Any, dev: str) -> Callable[[], None]:
    return torch.cuda.synchronize if dev == "cuda" else (lambda: None)


def bench_torch(net: Net, X: np.ndarray, y: np.ndarray, s: Settings, fused: bool) -> Timing:
    torch = torch_module(s, cuda_only=fused)
    t0 = time.perf_counter()
    dev = s.torch_device
    model, Xt, Tt, loss_fn = torch_setup(torch, net, X, y, dev)
    try:
        opt = torch_optimizer(torch, net, model.parameters(), **({"fused": True} if fused else {}))
    except (TypeError, RuntimeError, ValueError) as err:
        raise Skip(f"this torch has no fused {'SGD' if net.seed else 'Adam'}: {err}") from None
    B, n = net.batch, net.n

    def epoch() -> None:
        perm = torch.randperm(n, device=dev)
        for i in range(0, n, B):
            idx = perm[i:i + B]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(Xt.index_select(0, idx)), Tt.index_select(0, idx)).backward()
            opt.step()

    return time_epochs(epoch, torch_sync(torch, dev), n, s, setup_s=time.perf_counter() - t0)


def bench_torch_cuda_graph(net: Net, X: np.ndarray, y: np.ndarray, s: Settings) -> Timing:
    """The whole step (forward, loss, backward, optimizer) captured once and replayed, the way
    the PyTorch CUDA-graph docs capture a whole network: static input and target tensors,
    Adam with ``capturable=True``, three warm-up steps on a side stream, gradients set to None
    before capture (the graph's private pool then owns them).  Each step gathers its batch
    into the static tensors by ``index_select(..., out=)`` from a per-epoch device permutation
    (two eager kernels), then replays the graph."""
    torch = torch_module(s, cuda_only=True)
    t0 = time.perf_counter()
    dev = s.torch_device
    model, Xt, Tt, loss_fn = torch_setup(torch, net, X, y, dev)
    opt = torch_optimizer(torch, net, model.parameters(), capturable=True)
    B, n = net.batch, net.n
    static_x = Xt[:B].clone()
    static_t = Tt[:B].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(static_x), static_t).backward()
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = loss_fn(model(static_x), static_t)
        static_loss.backward()
        opt.step()
    torch.cuda.synchronize()

    def epoch() -> None:
        perm = torch.randperm(n, device=dev)
        for i in range(0, n, B):
            idx = perm[i:i + B]
            torch.index_select(Xt, 0, idx, out=static_x)
            torch.index_select(Tt, 0, idx, out=static_t)
            graph.replay()

    timing = time_epochs(epoch, torch.cuda.synchronize, n, s, setup_s=time.perf_counter() - t0)
    loss = float(static_loss)
    if not np.isfinite(loss):
        timing.notes.append(f"last loss not finite: {loss}")
    return timing


# ---- JAX
def jax_modules(s: Settings) -> tuple[Any, Any, Any | None]:
    try:
        import jax
        import jax.numpy as jnp
    except Exception as err:  # noqa: BLE001  (ImportError, or a jaxlib/CUDA plugin that fails to load)
        raise Skip(f"jax not importable: {type(err).__name__}: {err}") from None
    jax.config.update("jax_default_matmul_precision", "highest")    # float32 products, no TF32
    backend = jax.default_backend()
    if s.cuda and backend != "gpu":
        raise Skip(f"JAX has no GPU here (default backend {backend!r}; jax[cuda] not installed?)")
    try:
        import optax
    except Exception:  # noqa: BLE001  (optax is optional: any failure means the hand-written one)
        optax = None
    return jax, jnp, optax


def jax_trainer(net: Net, X: np.ndarray, y: np.ndarray, s: Settings) -> dict[str, Any]:
    """Parameters, optimizer and ``step(params, state, X, T, idx)`` for one batch of rows idx."""
    jax, jnp, optax = jax_modules(s)
    dev = jax.devices()[0]
    rng = np.random.default_rng(0)
    params: list[dict[str, Any]] = []
    pairs = list(zip(net.sizes[:-1], net.sizes[1:], strict=True))
    for i, (a, b) in enumerate(pairs):
        # deepnet's initialisation: seed normal(0, 1/√n_in); He for ReLU layers, Glorot for the last
        if net.seed:
            scale = np.sqrt(1.0 / a)
        else:
            scale = np.sqrt(2.0 / a) if i < len(pairs) - 1 else np.sqrt(2.0 / (a + b))
        layer = {"W": jax.device_put(rng.standard_normal((a, b), dtype=np.float32) * np.float32(scale), dev)}
        if not net.seed:
            layer["b"] = jax.device_put(np.zeros(b, np.float32), dev)
        params.append(layer)
    T = seed_targets(y, net.sizes[-1]) if net.seed else y.astype(np.int32)

    def forward(ps: list[dict[str, Any]], x: Any) -> Any:
        for i, p in enumerate(ps):
            x = x @ p["W"]
            if "b" in p:
                x = x + p["b"]
            if net.seed:
                x = jax.nn.sigmoid(x)
            elif i < len(ps) - 1:
                x = jax.nn.relu(x)
        return x

    def loss_fn(ps: list[dict[str, Any]], x: Any, t: Any) -> Any:
        z = forward(ps, x)
        if net.seed:
            return jnp.mean(jnp.sum((z - t) ** 2, axis=1))
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), t[:, None], axis=1))

    if optax is not None:
        tx = optax.sgd(SGD_LR) if net.seed else optax.adam(ADAM_LR)
        opt_init = tx.init

        def opt_apply(ps: Any, grads: Any, state: Any) -> tuple[Any, Any]:
            updates, state = tx.update(grads, state, ps)
            return optax.apply_updates(ps, updates), state
        which = f"optax {optax.__version__}"
    elif net.seed:
        def opt_init(ps: Any) -> Any:
            return ()

        def opt_apply(ps: Any, grads: Any, state: Any) -> tuple[Any, Any]:
            return jax.tree_util.tree_map(lambda p, g: p - SGD_LR * g, ps, grads), state
        which = "SGD in jax.numpy (no optax)"
    else:
        b1, b2, eps = 0.9, 0.999, 1e-8

        def opt_init(ps: Any) -> Any:
            zeros = jax.tree_util.tree_map(jnp.zeros_like, ps)
            return zeros, jax.tree_util.tree_map(jnp.zeros_like, ps), jnp.zeros((), jnp.float32)

        def opt_apply(ps: Any, grads: Any, state: Any) -> tuple[Any, Any]:
            m, v, t = state
            t = t + 1.0
            m = jax.tree_util.tree_map(lambda m_, g: b1 * m_ + (1 - b1) * g, m, grads)
            v = jax.tree_util.tree_map(lambda v_, g: b2 * v_ + (1 - b2) * g * g, v, grads)
            c1, c2 = 1 - b1 ** t, 1 - b2 ** t
            ps = jax.tree_util.tree_map(lambda p, m_, v_: p - ADAM_LR * (m_ / c1) / (jnp.sqrt(v_ / c2) + eps), ps, m, v)
            return ps, (m, v, t)
        which = "Adam in jax.numpy (no optax)"

    def step(ps: Any, state: Any, Xd: Any, Td: Any, idx: Any) -> tuple[Any, Any]:
        grads = jax.grad(loss_fn)(ps, jnp.take(Xd, idx, axis=0), jnp.take(Td, idx, axis=0))
        return opt_apply(ps, grads, state)

    return {"jax": jax, "jnp": jnp, "params": params, "state": opt_init(params), "step": step,
            "X": jax.device_put(X, dev), "T": jax.device_put(T, dev), "key": jax.random.PRNGKey(0),
            "which": which, "device": str(dev)}


def bench_jax(net: Net, X: np.ndarray, y: np.ndarray, s: Settings, scan: bool) -> Timing:
    """``scan=False``: one jitted step per batch, its rows sliced (``dynamic_slice``) from the
    epoch's device permutation inside the step.  ``scan=True``: the whole epoch one jitted
    function, ``lax.scan`` over the permutation reshaped to (steps, B)."""
    t0 = time.perf_counter()
    tr = jax_trainer(net, X, y, s)
    jax, step = tr["jax"], tr["step"]
    B, n = net.batch, net.n
    steps = n // B
    st: dict[str, Any] = {"p": tr["params"], "o": tr["state"], "key": tr["key"]}

    if scan:
        def train_epoch(ps: Any, state: Any, Xd: Any, Td: Any, key: Any) -> tuple[Any, Any]:
            perm = jax.random.permutation(key, n).reshape(steps, B)

            def body(carry: Any, idx: Any) -> tuple[Any, None]:
                return step(carry[0], carry[1], Xd, Td, idx), None
            (ps, state), _ = jax.lax.scan(body, (ps, state), perm)
            return ps, state
        run = jax.jit(train_epoch, donate_argnums=(0, 1))

        def epoch() -> None:
            st["key"], sub = jax.random.split(st["key"])
            st["p"], st["o"] = run(st["p"], st["o"], tr["X"], tr["T"], sub)
    else:
        def one(ps: Any, state: Any, Xd: Any, Td: Any, perm: Any, start: Any) -> tuple[Any, Any]:
            return step(ps, state, Xd, Td, jax.lax.dynamic_slice_in_dim(perm, start, B))
        run = jax.jit(one, donate_argnums=(0, 1))

        starts = [jax.device_put(np.int32(i), tr["X"].devices().pop()) for i in range(0, n, B)]   # no upload per step

        def epoch() -> None:
            st["key"], sub = jax.random.split(st["key"])
            perm = jax.random.permutation(sub, n)
            p, o = st["p"], st["o"]
            for i in starts:
                p, o = run(p, o, tr["X"], tr["T"], perm, i)
            st["p"], st["o"] = p, o

    def sync() -> None:
        jax.block_until_ready((st["p"], st["o"]))

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*donated buffers.*")
        timing = time_epochs(epoch, sync, n, s, setup_s=time.perf_counter() - t0)
    timing.notes.append(f"{tr['which']} on {tr['device']}")
    return timing


# ---- the products alone
def bench_products(net: Net, s: Settings) -> Timing:
    """Per step and layer: y = x·Wᵀ forward; ∂W = δᵀx and (not for the first layer)
    ẽ = δ·W backward, each into a preallocated output (``matmul(..., out=)``), nothing else."""
    t0 = time.perf_counter()
    ops = get_ops(s.backend)
    xp = ops.xp
    direct = getattr(xp, "__name__", "") in ("numpy", "cupy")
    rng = np.random.default_rng(0)
    B, n = net.batch, net.n
    sizes = net.sizes

    def dev(shape: tuple[int, ...]) -> Any:
        return dn.to_device(rng.random(shape, dtype=np.float32), ops)
    Ws = [dev((o, i)) for i, o in itertools.pairwise(sizes)]
    acts = [dev((B, k)) for k in sizes]                 # acts[0] = x; acts[i+1] = layer i's output
    deltas = [dev((B, k)) for k in sizes]               # deltas[i+1]: δ of layer i's output
    dWs = [dev(W.shape) for W in Ws]
    errs = [dev((B, k)) for k in sizes]                 # errs[i]: ẽ into layer i

    if direct:
        try:
            xp.matmul(acts[0], Ws[0].T, out=acts[1])
        except (TypeError, ValueError, NotImplementedError):      # no matmul(out=) here
            direct = False

    def mm(a: Any, b: Any, out: Any) -> None:
        if direct:
            xp.matmul(a, b, out=out)
        else:
            ops.gemm(a, b, out=out)

    def epoch() -> None:
        for _ in range(n // B):
            for i, W in enumerate(Ws):
                mm(acts[i], W.T, acts[i + 1])
            for i in range(len(Ws) - 1, -1, -1):
                mm(deltas[i + 1].T, acts[i], dWs[i])
                if i > 0:
                    mm(deltas[i + 1], Ws[i], errs[i])

    timing = time_epochs(epoch, device_sync_for(ops), n, s, setup_s=time.perf_counter() - t0)
    timing.notes.append(f"{'xp.matmul(out=)' if direct else 'ops.gemm'} on {s.backend}")
    return timing


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    run: Callable[[Net, np.ndarray, np.ndarray, Settings], Timing]


#: display order (the table and JSON); RUN_ORDER below is the order they are measured in
COLUMNS: list[Column] = [
    Column("deepnet_eager", "deepnet eager", lambda n, X, y, s: bench_deepnet(n, X, y, s, "off", "float32")),
    Column("deepnet_graph", "deepnet graph (per step)", lambda n, X, y, s: bench_deepnet(n, X, y, s, "on", "float32")),
    Column("deepnet_graph_epoch", "deepnet graph (epoch)",
           lambda n, X, y, s: bench_deepnet(n, X, y, s, "epoch", "float32")),
    Column("deepnet_bf16", "deepnet bf16 (graph)", lambda n, X, y, s: bench_deepnet(n, X, y, s, "on", "bf16")),
    Column("torch_eager", "PyTorch eager", lambda n, X, y, s: bench_torch(n, X, y, s, fused=False)),
    Column("torch_fused", "PyTorch fused Adam", lambda n, X, y, s: bench_torch(n, X, y, s, fused=True)),
    Column("torch_cuda_graph", "PyTorch, step in a CUDA graph", bench_torch_cuda_graph),
    Column("jax_jit", "JAX jit per step", lambda n, X, y, s: bench_jax(n, X, y, s, scan=False)),
    Column("jax_scan", "JAX, epoch in one lax.scan", lambda n, X, y, s: bench_jax(n, X, y, s, scan=True)),
    Column("products", "products alone (eager)", lambda n, X, y, s: bench_products(n, s)),
]
COLUMN_KEYS = [c.key for c in COLUMNS]
RUN_ORDER = ["products", "torch_eager", "torch_fused", "torch_cuda_graph", "jax_jit", "jax_scan",
             "deepnet_eager", "deepnet_graph", "deepnet_graph_epoch", "deepnet_bf16"]

#: issue 15's targets, checked under the table
TARGET_RATES = {"small": 1_000_000, "medium": 1_000_000, "seed": 30_000}
TARGET_GRAPH_OVER_PRODUCTS = 0.97        # wide net, float32
TARGET_BF16_OVER_F32 = 3.0               # wide net


# ---------------------------------------------------------------------------- reporting
def median_of(entry: dict[str, Any] | None) -> float | None:
    return entry["median"] if entry and entry.get("status") == "ok" else None


def best_graph(cols: dict[str, Any]) -> tuple[float | None, str | None]:
    """deepnet's faster graph column (per step or whole epoch)."""
    found = [(median_of(cols.get(k)), k) for k in ("deepnet_graph", "deepnet_graph_epoch")]
    found = [(v, k) for v, k in found if v is not None]
    return max(found) if found else (None, None)


def ratios(cols: dict[str, Any]) -> dict[str, Any]:
    g, which = best_graph(cols)
    g_on = median_of(cols.get("deepnet_graph"))
    prod, tg, bf = (median_of(cols.get(k)) for k in ("products", "torch_cuda_graph", "deepnet_bf16"))
    return {
        "graph_column": which,
        "graph_over_products": None if g is None or prod is None else g / prod,
        "graph_over_torch_graph": None if g is None or tg is None else g / tg,
        "bf16_over_float32": None if bf is None or g_on is None else bf / g_on,
    }


def fmt_rate(entry: dict[str, Any]) -> str:
    if entry["status"] == "ok":
        return f"{entry['median']:,.0f}" + ("*" if entry.get("shortened") else "")
    return entry["status"]          # n/a or error


def fmt_ratio(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def table(report: dict[str, Any], keys: list[str]) -> str:
    heads = [c.header for c in COLUMNS if c.key in keys]
    heads += ["best deepnet graph / products", "best deepnet graph / PyTorch CUDA graph", "bf16 / float32 (graph)"]
    lines = ["| network | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for r in report["nets"].values():
        cells = [fmt_rate(r["columns"][k]) for k in keys]
        q = r["ratios"]
        cells += [fmt_ratio(q["graph_over_products"]), fmt_ratio(q["graph_over_torch_graph"]),
                  fmt_ratio(q["bf16_over_float32"])]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def target_lines(report: dict[str, Any]) -> list[str]:
    out = []
    for name, r in report["nets"].items():
        g, which = best_graph(r["columns"])
        if name in TARGET_RATES and g is not None:
            ok = "met" if g >= TARGET_RATES[name] else "NOT met"
            out.append(f"{name}: deepnet graph ({which}) {g:,.0f} samples/s, target ≥ {TARGET_RATES[name]:,}: {ok}")
        if name == "wide":
            q = r["ratios"]
            for key, target in (("graph_over_products", TARGET_GRAPH_OVER_PRODUCTS), ("bf16_over_float32", TARGET_BF16_OVER_F32)):
                if q[key] is not None:
                    out.append(f"wide: {key.replace('_', ' ')} = {q[key]:.3f}, target ≥ {target}: "
                               f"{'met' if q[key] >= target else 'NOT met'}")
    return out


_VERSIONS: dict[str, str] = {}


def versions() -> dict[str, str]:
    """Versions of the libraries, read from the imported modules (else the installed
    distribution; looked up once)."""
    out = {"python": platform.python_version(), "deepnet": dn.__version__}
    for mod in ("numpy", "cupy", "torch", "jax", "jaxlib", "optax"):
        if mod in sys.modules:
            out[mod] = str(getattr(sys.modules[mod], "__version__", "?"))
            continue
        if mod not in _VERSIONS:
            _VERSIONS[mod] = "not installed"
            if importlib.util.find_spec(mod) is not None:
                _VERSIONS[mod] = "installed (not imported)"
                for dist in (mod, f"{mod}-cuda13x", f"{mod}-cuda12x", f"{mod}-cuda11x"):
                    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                        _VERSIONS[mod] = importlib.metadata.version(dist) + " (not imported)"
                        break
        out[mod] = _VERSIONS[mod]
    return out


def devices(s: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {"host": platform.node(), "cpu": platform.processor() or platform.machine()}
    if s.cuda and "cupy" in sys.modules:
        with contextlib.suppress(Exception):
            cupy = sys.modules["cupy"]
            dev_id = cupy.cuda.runtime.getDevice()
            name = cupy.cuda.runtime.getDeviceProperties(dev_id)["name"]
            out["cupy"] = name.decode() if isinstance(name, bytes) else str(name)
            out["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
            out["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        out["torch"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        out["torch_cuda"] = torch.version.cuda
    if "jax" in sys.modules:
        with contextlib.suppress(Exception):
            out["jax"] = [f"{d.platform}: {getattr(d, 'device_kind', d)}" for d in sys.modules["jax"].devices()]
    return out


def cuda_broken() -> str | None:
    """After an error: a sticky CUDA error makes every later device call fail; say so once."""
    if "cupy" not in sys.modules:
        return None
    try:
        sys.modules["cupy"].cuda.runtime.deviceSynchronize()
    except Exception as err:  # noqa: BLE001  (any failure here means the context is gone)
        return f"{type(err).__name__}: {err}"
    return None


# ---------------------------------------------------------------------------- main
def parse_list(text: str | None, known: list[str], what: str) -> list[str]:
    if not text:
        return list(known)
    got = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in got if t not in known]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (known: {', '.join(known)})")
    return [k for k in known if k in got]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="cupy", help="deepnet's backend (default cupy)")
    ap.add_argument("--reps", type=int, default=3, help="timed epochs per column; the median is reported")
    ap.add_argument("--nets", default=None, help=f"comma-separated subset of {','.join(NETS)}")
    ap.add_argument("--columns", default=None, help=f"comma-separated subset of {','.join(COLUMN_KEYS)}")
    ap.add_argument("--max-seconds-per-column", type=float, default=20.0,
                    help="fewer reps once a column (warm-up included) would pass this")
    ap.add_argument("--max-seconds-total", type=float, default=220.0,
                    help="columns not started by then are reported n/a (0: no limit)")
    ap.add_argument("--deepnet-timing", choices=("one-fit", "per-call"), default="one-fit",
                    help="deepnet columns: epochs of one fit(epochs=1+reps), or one fit(epochs=1) per rep")
    ap.add_argument("--json", default=None, metavar="PATH", help="every rep, devices, versions, command line")
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU: numpy backend, PyTorch on the CPU, a few batches, wide net 784-64-64-10 batch 32")
    args = ap.parse_args(argv)
    if args.reps < 1:
        raise SystemExit("--reps must be at least 1")
    nets = DRY_NETS if args.dry_run else NETS
    net_names = parse_list(args.nets, list(nets), "network")
    keys = parse_list(args.columns, COLUMN_KEYS, "column")

    backend = "numpy" if args.dry_run else args.backend
    cuda = backend == "cupy"
    torch_device = "cpu"
    if cuda and importlib.util.find_spec("torch") is not None:
        with contextlib.suppress(Exception):
            import torch
            torch_device = "cuda" if torch.cuda.is_available() else "cpu"
    s = Settings(backend, torch_device, cuda, args.reps, args.max_seconds_per_column, args.dry_run,
                 args.deepnet_timing)

    report: dict[str, Any] = {
        "command": shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["bench_gpu_graphs.py", *argv]),
        "cwd": os.getcwd(),
        "env": {k: os.environ[k] for k in ("PYTHONPATH", "CUPY_TF32", "XLA_PYTHON_CLIENT_PREALLOCATE",
                                           "CUDA_VISIBLE_DEVICES", "DEEPNET_BLAS") if k in os.environ},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {"backend": backend, "torch_device": torch_device, "reps": args.reps,
                     "max_seconds_per_column": args.max_seconds_per_column,
                     "max_seconds_total": args.max_seconds_total, "dry_run": args.dry_run,
                     "deepnet_timing": args.deepnet_timing,
                     "float32": "TF32 off", "fit_parameters": list(inspect.signature(dn.Network.fit).parameters)},
        "columns": {c.key: c.header for c in COLUMNS if c.key in keys},
        "run_order": [k for k in RUN_ORDER if k in keys],
        "nets": {name: {"label": nets[name].label, "sizes": list(nets[name].sizes), "batch": nets[name].batch,
                        "samples": nets[name].n, "columns": {k: {"status": "n/a", "reason": "not run"} for k in keys},
                        "ratios": {}} for name in net_names},
    }

    def save() -> None:
        for r in report["nets"].values():
            r["ratios"] = ratios(r["columns"])
        report["devices"] = devices(s)
        report["versions"] = versions()
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(report, fh, indent=2)

    data = {name: make_data(nets[name]) for name in net_names}
    start = time.perf_counter()
    broken: str | None = None
    for key in report["run_order"]:
        col = next(c for c in COLUMNS if c.key == key)
        for name in net_names:
            net, (X, y) = nets[name], data[name]
            entry: dict[str, Any]
            if broken:
                entry = {"status": "n/a", "reason": f"skipped: the CUDA context broke earlier ({broken})"}
            elif args.max_seconds_total and time.perf_counter() - start > args.max_seconds_total:
                entry = {"status": "n/a", "reason": f"skipped: past --max-seconds-total {args.max_seconds_total:g}"}
            else:
                try:
                    t = col.run(net, X, y, s)
                    entry = {"status": "ok", "median": statistics.median(t.rates), "reps": t.rates,
                             "reps_requested": s.reps, "shortened": len(t.rates) < s.reps,
                             "warmup_s": t.warmup_s, "setup_s": t.setup_s, "notes": t.notes}
                except Skip as why:
                    entry = {"status": "n/a", "reason": str(why)}
                except Exception as err:  # noqa: BLE001  (one column's failure is reported, the run goes on)
                    entry = {"status": "error", "reason": f"{type(err).__name__}: {err}",
                             "traceback": traceback.format_exc()}
                    broken = cuda_broken() if s.cuda else None
                free_device_memory(collect=s.cuda and (name == "wide" or entry["status"] == "error"))
            report["nets"][name]["columns"][key] = entry
            shown = fmt_rate(entry) if entry["status"] == "ok" else f"{entry['status']}: {entry['reason']}"
            print(f"  {name:6s} {key:20s} {shown}", file=sys.stderr, flush=True)
            for note in entry.get("notes", []):
                print(f"  {'':6s} {'':20s} note: {note}", file=sys.stderr)
            save()
    report["total_s"] = time.perf_counter() - start
    save()

    print(f"\nsamples/s, median of {args.reps} timed epochs after a warm-up epoch; float32, TF32 off; "
          f"deepnet backend {backend}, PyTorch on {torch_device}{' (DRY RUN: sizes are tiny)' if args.dry_run else ''}")
    print(table(report, keys))
    notes = [f"{name}/{k}: {e['status']}: {e['reason']}" for name, r in report["nets"].items()
             for k, e in r["columns"].items() if e["status"] != "ok"]
    if any(e.get("shortened") for r in report["nets"].values() for e in r["columns"].values()):
        print("* fewer reps than asked (--max-seconds-per-column)")
    for line in [] if args.dry_run else target_lines(report):
        print(line)
    if notes:
        print("\nnot measured:")
        for line in notes:
            print("  " + line)
    print(f"\ntotal {report['total_s']:.1f} s" + (f"; JSON: {args.json}" if args.json else ""))
    return report


if __name__ == "__main__":
    main()
