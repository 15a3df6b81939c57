"""The training step on fixed buffers, captured once and replayed (CUDA graphs).

A CUDA graph replays the kernels a step launched, on the addresses it used, with no Python.
So the captured step (:class:`StaticStep`) keeps everything a replay touches in device
memory that lives as long as the graph:

* the batch is gathered on the device: the epoch's order is copied once per epoch into a
  fixed (batches × B) index buffer, and a device batch index b selects its row, then is
  incremented (b ← b + 1) by the step itself;
* the optimizer's step count, learning rate and Adam's bias corrections are device scalars
  (:class:`~deepnet.optimizers.StepScalars`; η is the optimizer's own, written when it is set), the dropout masks come from a counter-based
  generator whose counter lives on the device;
* each batch's loss and correct count are written at index b (:class:`StepMetrics`).

The first full batch of a run is an eager warm-up (optimizer slots, generators and kernels
come into being; the layers are checked not to rebind state a replay would need), the
second is captured, the rest are replays; with ``graphs="epoch"`` every later epoch's full
batches are one graph.  A short last batch runs through the same step code without a graph.
On a backend without CUDA graphs the same step runs its Python every time
(:class:`~deepnet.backend.graphs.StepGraphs`): identical arithmetic, which is how it is
tested on the CPU.
"""

from __future__ import annotations

import sys
import warnings
from functools import partial
from typing import Any

from ..backend import Array, Ops
from ..backend.graphs import CaptureError, Replay
from ..errors import BackendError
from .metrics import StepMetrics
from .step import train_step

GRAPHS = ("auto", "on", "off", "epoch")


class GraphCaptureWarning(UserWarning):
    """``graphs="auto"`` could not capture the step; the run trains eagerly (reason given once)."""


def capture_obstacles(net: Any, *, check_finite: str, streamed: bool, batch_hooks: list[str], mode: str,
                      distributed: bool = False) -> list[str]:
    """Why this run's step cannot be captured (empty: it can).  ``mode`` "epoch" also needs no
    per-batch callbacks (``batch_hooks``: their names; they run Python between steps)."""
    out = []
    if distributed:
        out.append("data-parallel training reduces the gradients across processes between backward and the "
                   "update (not captured)")
    if check_finite == "skip":
        out.append("check_finite='skip' decides on the host after every step")
    elif check_finite == "raise" and net.ops.cheap_sync and net.ops.graphs.captures:
        out.append("check_finite='raise' reads every step's loss on this backend (use 'off' to check at "
                   "each epoch's end)")
    if streamed:
        out.append("the data is streamed from the host in chunks (stream_chunk_rows); a graph needs X resident")
    for i, top in enumerate(net.layers):       # a block is capturable iff every layer in it is
        for path, layer in [("", top), *top.walk()]:
            if not layer.capturable and all(c.capturable for c in layer.sublayers().values()):
                where = f"layer {i} ({top.name})" + (f", its {path} ({layer.name})," if path else "")
                out.append(f"{where} sets capturable = False")
    if not net.optimizer.can_capture():
        out.append(f"the optimizer {net.optimizer.name} overrides step/update without declaring capturable = True")
    if not net.loss.capturable:
        out.append(f"the loss {net.loss.name} sets capturable = False")
    if net.diagnostics is not None:
        out.append("diagnostics record every step on the host")
    if mode == "epoch" and batch_hooks:
        out.append(f"callbacks run at every batch, between the steps of an epoch graph: {', '.join(batch_hooks)} "
                   "(use graphs='on': one graph per step, callbacks between them)")
    return out


_WARNED: set[str] = set()


def warn_once(reason: str, what: str = "a CUDA graph") -> None:
    """Say once per process why a run with ``graphs="auto"`` trains without ``what`` (pointing at
    the caller's line that started the run, the first frame outside deepnet)."""
    if reason in _WARNED:
        return
    _WARNED.add(reason)
    level, frame = 1, sys._getframe(0)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("deepnet."):
        frame, level = frame.f_back, level + 1
    warnings.warn(f"graphs='auto': training without {what} because {reason}", GraphCaptureWarning,
                  stacklevel=level)


def _state_of(net: Any, ops: Ops) -> dict[tuple[int, str], Any]:
    """What a step must not replace: each layer's array attributes (by identity; ``_cache``
    and its ``step_scratch`` excepted), numbers, and its parameters' arrays."""
    state: dict[tuple[int, str], Any] = {}
    for i, top in enumerate(net.layers):
        for path, layer in [("", top), *top.walk()]:      # the layers inside blocks too
            skip = {"_cache", *layer.step_scratch}
            at = f"{path}." if path else ""
            for name, v in vars(layer).items():
                if name in skip:
                    continue
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    state[i, at + name] = ("number", v)
                elif ops.owns(v):
                    state[i, at + name] = ("array", id(v))
        for pname, p in top.parameters().items():
            state[i, f"parameter {pname}"] = ("array", id(p.data))
    return state


#: the most steps one graph holds with graphs="epoch" (an epoch is then a few launches): a graph
#: of every step of a batch-1 epoch would hold millions of nodes
EPOCH_CHUNK = 256


def _settings_of(net: Any, ops: Ops) -> tuple:
    """What a graph freezes besides η: the optimizer's and the loss's settings and the layers'
    numbers (dropout p, momentum, ...); a change means capturing again."""
    opt = {k: v for k, v in net.optimizer.get_config().items() if k != "lr"}
    numbers = {k: v for k, v in _state_of(net, ops).items() if v[0] == "number"}
    return repr(sorted(opt.items())), repr(sorted(net.loss.get_config().items())), repr(sorted(numbers.items()))


class StaticStep:
    """One run's training step on fixed buffers (see the module docstring).

    ``X`` resident on ``ops``; ``T`` and ``labels`` for the run's rows in order; ``rows``
    (device indices or None) the rows of X trained on."""

    def __init__(self, net: Any, X: Array, T: Array, labels: Array, batch_size: int, rows: Array | None,
                 mode: str, accept: Any = None) -> None:
        ops = self.ops = net.ops
        self.net, self.X, self.T, self.labels, self.rows, self.mode = net, X, T, labels, rows, mode
        #: ``accept(f, b)``: the NaN guard's check of each step's loss before its update, on a
        #: backend whose reads are cheap and that replays by running the Python (never in a graph)
        self.accept = accept
        self.B = batch_size
        self.n = int(T.shape[0])
        self.n_full = self.n // batch_size
        dtype = ops.dtype(net.dtype_name)
        self.metrics = StepMetrics(ops, self.n, batch_size, dtype, net.loss.reduction)
        shape = (max(self.n_full, 1), batch_size)
        self.t_order = ops.zeros(shape, ops.int64)                 # rows of T (and labels) per batch
        self.x_order = ops.zeros(shape, ops.int64) if rows is not None else self.t_order
        self.index = ops.zeros((1,), ops.int64)                    # the device batch index b
        self.xbuf = ops.empty((batch_size, *X.shape[1:]), X.dtype)
        self.tbuf = ops.empty((batch_size, *T.shape[1:]), T.dtype)
        self.scalars = net.optimizer.device_scalars(ops, dtype)
        #: the optimizer as the step sees it: η and the step count from the device scalars
        self.optimizer = _OnScalars(net.optimizer, self.scalars)
        net.optimizer.create_slots(net.parameters(), ops)     # not inside a graph's memory
        self.graph: Replay | None = None
        self.epoch_graph: Replay | None = None
        self.failed: str | None = None
        self._warmed = False
        #: the per-step graph's own memory: the warm-up runs in it, so the capture finds its blocks
        self.memory = ops.graphs.private_memory()
        self.last: tuple[Array, Array] | None = None      # (f, z) of the latest step
        self.order: Array | None = None
        self._settings = _settings_of(net, ops)

    # ------------------------------------------------------------------ the step
    def _step_on(self, x: Array, t: Array, labels: Array, at: Array | None, b: int) -> tuple[Array, Array]:
        """:func:`train_step` on (x, t) with the device scalars, its loss and correct count
        recorded at batch b (``at``: the device batch index, None: ``b``)."""
        accept = None
        if self.accept is not None:         # raises on a NaN or inf loss, before any update
            accept = partial(self.accept, b=b if at is None else int(self.ops.to_host(at)[0]))
        result = train_step(self.net, self.net.loss, self.optimizer, x, t, accept)
        assert result is not None           # (check_finite="skip", which refuses steps, is never captured)
        f, z = result
        if at is None:
            self.metrics.record(b, 0, 0, f, z, labels)
        else:
            self.metrics.record_at(at, f, z, labels)
        return f, z

    def _step(self) -> None:
        """One full batch at the device index b, then b ← b + 1: device work only."""
        ops, xp = self.ops, self.ops.xp
        t_rows = xp.reshape(xp.take(self.t_order, self.index, axis=0), (self.B,))
        x_rows = t_rows if self.rows is None else xp.reshape(xp.take(self.x_order, self.index, axis=0), (self.B,))
        x = ops.take_rows(self.X, x_rows, out=self.xbuf)
        t = ops.take_rows(self.T, t_rows, out=self.tbuf)
        self.last = self._step_on(x, t, ops.take_rows(self.labels, t_rows), self.index, -1)
        self.index += 1

    # ------------------------------------------------------------------ an epoch
    def begin_epoch(self, order: Array | None, first: int) -> StepMetrics:
        """Copy the epoch's order (device indices into the run's rows; None: in order) into the
        index buffers, set b to ``first`` and zero the metrics."""
        ops, xp = self.ops, self.ops.xp
        if order is None:
            order = ops.arange(self.n)
        if self.n_full:
            full = order[:self.n_full * self.B]
            ops.assign_(self.t_order, xp.reshape(full, (self.n_full, self.B)))
            if self.rows is not None:
                ops.assign_(self.x_order, xp.reshape(ops.take_rows(self.rows, full), (self.n_full, self.B)))
        self.order = order
        ops.fill_(self.index, first)
        self.metrics.reset()
        self._follow_settings()
        return self.metrics

    def _follow_settings(self) -> None:
        """Drop the graphs when a setting they froze changed (a schedule of momentum, weight
        decay, dropout p, ...): the next step is captured again with the new values."""
        now = _settings_of(self.net, self.ops)
        if now != self._settings:
            self._settings = now
            self.graph = self.epoch_graph = None

    def run_full_batches(self, first: int, hooks: Any = None, stop: Any = None) -> int:
        """Train the full batches from ``first`` and return how many batches are done.
        ``hooks``: None, or an object with ``begin(b)`` and ``end(b, f)`` (True: stop) called
        around each step (the graphs' frozen settings are compared after ``begin``).  Without
        hooks, ``stop(done)`` (True: stop; e.g. on Ctrl-C) is asked after each step or graph run.
        With graphs="epoch" and no hooks, once the step's graph exists, runs of up to
        :data:`EPOCH_CHUNK` steps are one graph each (the device batch index carries on)."""
        b = first
        with self.ops.graphs.stream():
            while b < self.n_full:
                if hooks is not None:
                    hooks.begin(b)
                    self._follow_settings()
                if self.graph is not None:
                    chunk = self._chunk()
                    if hooks is None and chunk and self.n_full - b >= chunk:
                        self._run_chunk(chunk)
                        b += chunk
                        if stop is not None and b < self.n_full and stop(b):
                            return b
                        continue
                    self.graph.launch()
                    self._count(1)
                elif self.failed is not None:
                    self._step()                 # graphs="auto" after a refusal: the same step, eagerly
                    self._count(1)
                elif self._warmed:
                    self._capture()
                else:
                    self._warm_up()
                if hooks is not None and hooks.end(b, self.last[0]):
                    return b + 1
                if hooks is None and stop is not None and b + 1 < self.n_full and stop(b + 1):
                    return b + 1
                b += 1
        return self.n_full

    def _chunk(self) -> int:
        """Steps per epoch graph (0: none): the full batches in equal runs of at most EPOCH_CHUNK."""
        if self.mode != "epoch" or self.n_full < 2:
            return 0
        runs = -(-self.n_full // EPOCH_CHUNK)
        return self.n_full // runs

    def _run_chunk(self, chunk: int) -> None:
        if self.epoch_graph is None:
            try:        # the capture trains these steps
                self.epoch_graph = self.ops.graphs.capture(self._step, steps=chunk)
            except CaptureError as err:
                self.fail(f"{chunk} steps could not be captured as one graph ({err})")
        else:
            self.epoch_graph.launch()
        self._count(chunk)

    def _count(self, steps: int) -> None:
        self.net.optimizer.iterations += steps
        self.net.step_count += steps

    def _check_state(self, before: dict, after: dict, *, new_too: bool) -> None:
        """Fail when a step replaced layer state (``new_too``: also state it created)."""
        changed = [k for k in after if (k in before and before[k] != after[k]) or (new_too and k not in before)]
        if changed:
            i, name = changed[0]
            layer = self.net.layers[i]
            self.fail(f"layer {i} ({layer.name}) replaced its {name!r} during a step: a replay would keep "
                      f"using the first one (update it in place, a[...] = ..., or set {layer.name}.capturable = False)")

    def _warm_up(self) -> None:
        """The first full batch, eagerly (state may come into being here, not be replaced)."""
        before = _state_of(self.net, self.ops)
        with self.memory:
            self._step()
            self.net.clear_cache()       # free the step's blocks into the graph's pool for the capture
        self._count(1)
        self._warmed = True
        self._check_state(before, _state_of(self.net, self.ops), new_too=False)

    def _capture(self) -> None:
        """A full batch, captured (and run once); a step that replaced layer state while being
        captured leaves a graph reading the old state, so it is dropped."""
        before = _state_of(self.net, self.ops)
        try:
            graph = self.ops.graphs.capture(self._step, memory=self.memory)
        except CaptureError as err:
            # on a GPU nothing ran (capture records, it does not execute), but the Python did: the
            # gradients are marked written and the layers hold caches, so both are reset first
            self.net.zero_grad()
            self.net.clear_cache()
            self.fail(f"the step could not be captured ({err})")
            self._step()
            self._count(1)
            return
        self._count(1)
        self._check_state(before, _state_of(self.net, self.ops), new_too=True)
        if self.failed is None:
            self.graph = graph

    def fail(self, reason: str) -> None:
        """Stop capturing for this run: graphs="auto" warns once, "on"/"epoch" raise."""
        self.failed = reason
        self.graph = None
        if self.mode == "auto":
            warn_once(reason)
        else:
            raise BackendError(f"fit(graphs={self.mode!r}): {reason}; graphs='auto' trains eagerly instead")

    def run_last_batch(self) -> tuple[Array, Array] | None:
        """The short last batch (if any), through the same step code outside any graph."""
        if self.n_full * self.B == self.n:
            return None
        ops = self.ops
        with self.ops.graphs.stream():
            t_rows = self.order[self.n_full * self.B:]
            x_rows = t_rows if self.rows is None else ops.take_rows(self.rows, t_rows)
            res = self._step_on(ops.take_rows(self.X, x_rows), ops.take_rows(self.T, t_rows),
                                ops.take_rows(self.labels, t_rows), None, self.n_full)
        self._count(1)
        return res


class _OnScalars:
    """The run's optimizer whose ``step`` reads η and the step count from device scalars (what
    a replay needs: no Python state changes; the captured step counts the iterations)."""

    def __init__(self, optimizer: Any, scalars: Any) -> None:
        self.optimizer, self.scalars = optimizer, scalars

    def step(self, params: dict[str, Any]) -> None:
        self.optimizer.step(params, scalars=self.scalars)
