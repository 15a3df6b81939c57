"""The training step as compiled code on the CPU: ``fit(graphs=...)`` on a backend that
compiles steps (:meth:`~deepnet.backend.ops.Ops.step_compiler`: NumPy with numba).

What a CUDA graph is to the GPU, this is to the CPU: the step (``graphs="on"``) or a run of
steps (``"epoch"``, and ``"auto"`` without per-batch callbacks) runs as one compiled call over
fixed buffers, with no Python between the operations (``"auto"`` only for steps small enough
that it pays: :data:`AUTO_MAX_WORK`).  The maths is the layers', the loss's
and the optimizer's own, written out once more for the compiled code
(:mod:`deepnet.backend.numba_steps`), which each built-in declares by its ``compiled_kind``;
a network with anything else trains in the plain loop (``"auto"``: the reason said once;
``"on"``/``"epoch"``: an error naming it).

:class:`CompiledRun` has the interface of the captured step
(:class:`~deepnet.training.captured.StaticStep`), so :class:`~deepnet.training.steps.CapturedStep`
drives it: the batches of an epoch come from a fixed order buffer, each batch's loss and
correct count are written at its index, the short last batch runs through the plain step.
Results do not depend on how steps are grouped into calls: the same code runs each step, the
dropout masks come from the counter-based generator whose counter the step advances.
"""

from __future__ import annotations

from typing import Any

from ..backend import Array
from .captured import warn_once
from .metrics import StepMetrics
from .step import train_step

_LAYER_CODE = {"dense": "DENSE", "sigmoid": "SIGMOID", "relu": "RELU", "tanh": "TANH",
               "identity": "IDENTITY", "dropout": "DROPOUT"}
_LAYER_METHODS = ("forward", "backward", "_forward", "_backward_", "op", "op_backward")
_LOSS_METHODS = ("forward_backward", "targets", "label_targets")
_OPTIMIZER_METHODS = ("step", "update", "update_many", "step_lr", "advance", "step_scalars", "without_decay")
#: the work (multiply-adds) of one call of a run of steps, about 0.1 s on a 2-core machine: a
#: run is cut into calls of this size, so Ctrl-C and ``stop`` are heard between them
CALL_WORK = 2e9


#: ``graphs="auto"`` compiles steps of up to this much work (batch size × parameters, the
#: multiply-adds of one product pass).  Measured on 2 cores (2026-12-07, docs/performance.md):
#: compiled / plain 12× at batch 1 (seed) and 1.29× for 784-128-10 at batch 64 (6.5M), but
#: 0.93–0.98× for 784-512-512-10 at batch 128 (86M) and 0.90× for 784-2048³-10 at batch 256,
#: where the matrix products are the step.  ``"on"`` and ``"epoch"`` compile at any size.
AUTO_MAX_WORK = 1 << 24


def pays_to_compile(net: Any, batch_size: int) -> bool:
    """Whether ``graphs="auto"`` compiles: the step's work is at most :data:`AUTO_MAX_WORK`."""
    return batch_size * net.n_params <= AUTO_MAX_WORK


def declared_kind(obj: Any, methods: tuple[str, ...]) -> str | None:
    """``compiled_kind`` as declared by the class that defines the nearest of ``methods`` (a
    subclass overriding one of them without declaring a kind is not what the compiled code does)."""
    for klass in type(obj).__mro__:
        if any(m in klass.__dict__ for m in (*methods, "compiled_kind")):
            return klass.__dict__.get("compiled_kind")
    return None


def compile_obstacles(net: Any, *, labels_as_targets: bool, check_finite: str, streamed: bool,
                      batch_hooks: list[str], mode: str, distributed: bool = False,
                      precision: str = "float32") -> list[str]:
    """Why this run's step cannot be compiled (empty: it can).  ``labels_as_targets``: the
    run trains on integer labels (not target rows)."""
    out = []
    if distributed:
        out.append("data-parallel training reduces the gradients across processes between backward and the update")
    if check_finite == "skip":
        out.append("check_finite='skip' decides in Python after every step")
    if streamed:
        out.append("the data is streamed from the host in chunks (stream_chunk_rows)")
    if precision != "float32":
        out.append(f"the products run in precision {precision!r}")
    if net.ops.step_compiler().blas(net.ops) is None:
        out.append("NumPy's BLAS (its CBLAS gemm), which the compiled step calls, was not found")
    if net.dtype_name not in ("float32", "float64"):
        out.append(f"the network computes in {net.dtype_name}")
    if net.diagnostics is not None:
        out.append("diagnostics record every step in Python")
    for i, layer in enumerate(net.layers):
        kind = declared_kind(layer, _LAYER_METHODS)
        if kind == "flatten" and i == 0:
            continue
        if kind is None:
            out.append(f"layer {i} ({layer.name}) has no compiled form")
        elif kind == "flatten":
            out.append(f"layer {i} ({layer.name}) reshapes inside the network (compiled only as the first layer)")
        elif kind == "dropout" and not hasattr(_generator(net, layer), "counter"):
            out.append(f"layer {i} ({layer.name}) draws from a generator without a counter (the compiled step "
                       "reproduces the counter-based one)")
        elif kind == "dropout" and layer.draws_frozen:
            out.append(f"layer {i} ({layer.name}) reuses a frozen draw (freeze_randomness, for gradient checks)")
    loss_kind = declared_kind(net.loss, _LOSS_METHODS)
    if loss_kind is None:
        out.append(f"the loss {net.loss.name} has no compiled form")
    elif loss_kind == "xent" and not labels_as_targets:
        out.append(f"the loss {net.loss.name} is given target rows (the compiled step takes integer labels)")
    opt = net.optimizer
    if declared_kind(opt, _OPTIMIZER_METHODS) is None:
        out.append(f"the optimizer {opt.name} has no compiled form")
    elif opt.transforms:
        names = ", ".join(type(t).__name__ for t in opt.transforms)
        out.append(f"the optimizer {opt.name} transforms its gradients ({names})")
    if mode == "epoch" and batch_hooks:
        out.append(f"callbacks run at every batch, between the steps of a compiled run: {', '.join(batch_hooks)} "
                   "(use graphs='on': one compiled call per step, callbacks between them)")
    return out


def _rule(opt: Any) -> str:
    """The compiled update of ``opt``: "sgd", "momentum", "nesterov" or "adam" (AdamW too)."""
    if declared_kind(opt, _OPTIMIZER_METHODS) == "adam":
        return "adam"
    return ("nesterov" if opt.nesterov else "momentum") if opt.momentum else "sgd"


def _generator(net: Any, layer: Any) -> Any:
    """The generator a dropout layer draws from (made as the layer's first draw would)."""
    if layer.rng is None:
        layer.rng = net.ops.device_rng(layer.seed)
    return layer.rng


class CompiledRun:
    """One run's compiled step on fixed buffers (see the module docstring).

    ``X`` on ``ops``; ``T`` (target rows, or the labels) and ``labels`` for the run's rows in
    order; ``rows`` (indices or None) the rows of X trained on."""

    def __init__(self, net: Any, X: Array, T: Array, labels: Array, batch_size: int, rows: Array | None,
                 mode: str, accept: Any = None) -> None:
        ops = self.ops = net.ops
        self.kern = ops.step_compiler()
        self.blas = self.kern.blas(ops)
        self.z: Array = None
        self.net, self.T, self.labels, self.rows, self.mode = net, T, labels, rows, mode
        #: ``accept(f, b)``: the NaN guard's check, asked when a step's loss is not finite
        self.accept = accept
        self.B = batch_size
        self.n = int(T.shape[0])
        self.n_full = self.n // batch_size
        self.X = X
        self.dtype = ops.dtype(net.dtype_name)
        self.metrics = StepMetrics(ops, self.n, batch_size, self.dtype, net.loss.reduction)
        self.t_order = ops.zeros((max(self.n_full, 1) * batch_size,), ops.int64)
        self.x_order = ops.zeros((max(self.n_full, 1) * batch_size,), ops.int64) if rows is not None else self.t_order
        self.order: Array | None = None
        self.last: tuple[Array, Array] | None = None
        self._bound: tuple | None = None
        self._build()

    # ------------------------------------------------------------------ the description
    def _build(self) -> None:
        """The network as the compiled step reads it (``kern.Tables``): a row per layer naming
        the arrays it reads and writes (its parameters, the batch buffers made here, a dropout
        layer's mask and generator), a row per parameter for the update (slots made now)."""
        net, ops, kern, B = self.net, self.ops, self.kern, self.B
        layers = net.layers
        start = 1 if declared_kind(layers[0], _LAYER_METHODS) == "flatten" else 0
        self.Xrows = ops.xp.reshape(self.X, (int(self.X.shape[0]), -1))
        tables = self.tables = kern.Tables()
        self.rule = _rule(net.optimizer)
        into = kern.INTO[self.rule]
        net.optimizer.create_slots(net.parameters(), ops)
        self._lay_out_first(layers[start + max(net.lowest_trained - start, 0)], into)
        width = int(self.Xrows.shape[1])
        x, dx = tables.add(ops.zeros((B, width), self.dtype)), -1        # the batch; no error below the first layer
        rows, grad_row = [], {}                    # grad_row: id of a parameter's array -> its gradient's row
        self.drops: list[Any] = []                 # the dropout layers, in the order of ``rates``
        self._generators: list[Any] = []           # their distinct generators, in the order of ``counters``
        for layer in layers[start:]:
            kind = declared_kind(layer, _LAYER_METHODS)
            extra = [-1] * 5
            if kind == "dense":
                params = layer.parameters()
                w, transposed = kern.row_major(params["weight"].data)
                extra = [tables.add(w), self._target(params["weight"], into, grad_row), -1, -1, int(transposed)]
                if layer.bias:
                    extra[2], extra[3] = tables.add(params["bias"].data), self._target(params["bias"], into, grad_row)
                width = layer.n_out
            elif kind == "dropout":
                rng = _generator(net, layer)
                if all(g is not rng for g in self._generators):
                    self._generators.append(rng)
                counter = next(i for i, g in enumerate(self._generators) if g is rng)
                extra = [tables.add(ops.zeros((B, width), self.dtype)), counter, len(self.drops), -1, -1]
                self.drops.append(layer)
            y = tables.add(ops.zeros((B, width), self.dtype))
            # a layer without parameters hands its error down in place: ∂f/∂y in ∂f/∂x's buffer
            dy = dx if kind != "dense" and dx >= 0 else tables.add(ops.zeros((B, width), self.dtype))
            rows.append([getattr(kern, _LAYER_CODE[kind]), x, y, dx, dy, *extra])
            x, dx = y, dy
        self.lowest = max(net.lowest_trained - start, 0)
        self.width = width
        self.z = tables.array(rows[-1][2])
        self.tbuf = ops.zeros((B, width) if self.T.ndim == 2 else (1, 1), self.dtype)
        self.lbuf = ops.zeros((B,), ops.int64)
        self.Trows = self.T if self.T.ndim == 2 else self.tbuf
        self.layer_table = kern.ints(rows, len(kern.LAYER_COLUMNS))
        self.update_table = self._update_rows(grad_row)
        self.array_table = tables.arrays()
        self.counters = kern.values([0] * max(len(self._generators), 1), "uint64")
        self.rates = kern.values([[0.0, 1.0]] * max(len(self.drops), 1), self.dtype)
        self.keys = kern.values([[0, 0]] * max(len(self.drops), 1), "uint32")
        self.work = B * sum(p.data.size for p in net.parameters().values()) * 3
        self._bound = self._binding()

    def _lay_out_first(self, layer: Any, into: int) -> None:
        """Batch 1 with plain SGD: the lowest trained layer's W stored transposed (column-major),
        so the forward product and the update walk only the rows Wᵀ[i, :] of nonzero inputs x_i
        (a pixel that is 0 adds nothing to y and leaves its weights as they are)."""
        kern, opt = self.kern, self.net.optimizer
        if self.B != 1 or into != kern.INTO_PARAMETER or declared_kind(layer, _LAYER_METHODS) != "dense":
            return
        p = layer.parameters()["weight"]
        if kern.row_major(p.data)[1] or not layer.any_layout:
            return
        p.data = kern.column_major(p.data)
        opt.match_parameters(self.net.parameters(), self.ops)

    def _target(self, p: Any, into: int, grad_row: dict[int, int]) -> int:
        """The row where backward puts ∂f/∂θ of parameter ``p`` (``kern.INTO_*``): a gradient
        buffer made here, momentum's velocity, or θ itself; row-major like θ's own row."""
        kern, tables = self.kern, self.tables
        if into == kern.INTO_PARAMETER:
            return tables.add(kern.row_major(p.data)[0])
        if into == kern.INTO_VELOCITY:
            return tables.add(kern.row_major(self.net.optimizer.state[p.name]["velocity"])[0])
        grad_row[id(p.data)] = tables.add(self.ops.zeros_like(kern.row_major(p.data)[0]))
        return grad_row[id(p.data)]

    def _update_rows(self, grad_row: dict[int, int]) -> Array:
        """A row per parameter: the rows of its array, its gradient (−1: backward wrote no
        buffer) and its optimizer slots as flat arrays in one orientation (row-major), and
        whether decoupled weight decay applies."""
        net, kern, opt, tables = self.net, self.kern, self.net.optimizer, self.tables
        params = list(net.parameters().values())
        excluded = opt.decay_excluded(params)
        rows = []
        for p in params:
            slots = [tables.add(kern.flat(opt.state[p.name][k])) for k in opt.slots] + [-1, -1]
            rows.append([tables.add(kern.flat(p.data)), grad_row.get(id(p.data), -1), slots[0], slots[1],
                         int(p.name not in excluded)])
        return kern.ints(rows, len(kern.UPDATE_COLUMNS))

    def _binding(self) -> tuple:
        """What the description was built from: the update rule, the identities of the
        parameters' arrays and slots."""
        opt = self.net.optimizer
        return (_rule(opt), *((id(p.data), *(id(a) for a in opt.state.get(p.name, {}).values()))
                              for p in self.net.parameters().values()))

    # ------------------------------------------------------------------ an epoch
    def begin_epoch(self, order: Array | None, first: int) -> StepMetrics:
        """Copy the epoch's order (indices into the run's rows; None: in order) into the order
        buffers and zero the metrics."""
        ops = self.ops
        if order is None:
            order = ops.arange(self.n)
        if self.n_full:
            full = order[:self.n_full * self.B]
            ops.assign_(self.t_order, full)
            if self.rows is not None:
                ops.assign_(self.x_order, ops.take_rows(self.rows, full))
        self.order = order
        self.metrics.reset()
        return self.metrics

    def run_full_batches(self, first: int, hooks: Any = None, stop: Any = None) -> int:
        """Train the full batches from ``first``; returns how many batches are done.  With
        ``hooks`` (``begin(b)``, ``end(b, f)``: True stops) one compiled call per step,
        else runs of up to :data:`CALL_WORK` multiply-adds per call, ``stop(done)`` asked between."""
        b = first
        per_call = 1 if hooks is not None or self.mode == "on" else self._per_call()
        while b < self.n_full:
            if hooks is not None:
                hooks.begin(b)
            count = min(per_call, self.n_full - b)
            b = self._call(b, count)
            if hooks is not None and hooks.end(b - 1, self.last[0]):
                return b
            if hooks is None and stop is not None and b < self.n_full and stop(b):
                return b
        return self.n_full

    def _per_call(self) -> int:
        """Steps per call of a run: about :data:`CALL_WORK` multiply-adds."""
        return max(1, int(CALL_WORK // max(self.work, 1)))

    def _call(self, first: int, count: int) -> int:
        """One compiled call over batches first … first+count−1; returns the next batch."""
        if self._binding() != self._bound:           # a parameter or slot was replaced between calls
            self._build()
        opt, kern, rule = self.net.optimizer, self.kern, self.rule
        hyper = kern.values(self._hyper(), "float64")
        loss_kind = declared_kind(self.net.loss, _LOSS_METHODS)
        self._generators_in()
        m = self.metrics
        try:
            done = kern.run_steps(
                kern.LOSSES[loss_kind], kern.UPDATES[rule], self.blas, self.Xrows, self.x_order, self.t_order,
                self.Trows, self.labels, first, count, self.layer_table, self.array_table, self.update_table,
                self.counters, self.rates, self.keys, self.tbuf, self.lbuf, self._scale(), self.lowest,
                opt.iterations, hyper, self.accept is not None, loss_kind == "squared",
                kern.c_contiguous(self.Xrows), m.batch_losses, m.batch_correct)
        finally:
            self._generators_out()
        self._count(done)
        at = first + max(done, 1) - 1
        self.last = (self.ops.xp.reshape(m.batch_losses[at:at + 1], ()), self.z)
        if done < count:                              # a NaN or inf loss: the guard raises naming it
            self._forward_eagerly(first + done)
            self.accept(m.batch_losses[first + done], first + done)
        return first + done

    def _forward_eagerly(self, b: int) -> None:
        """Batch b's forward pass through the layers (not applied: the compiled step stopped
        before its update), so each layer holds what the guard inspects for the first NaN or inf."""
        ops = self.ops
        x_rows = ops.xp.reshape(self.x_order[b * self.B:(b + 1) * self.B], (self.B,))
        self.net.forward(ops.take_rows(self.X, x_rows), True)

    def _hyper(self) -> list[float]:
        """(η, μ or β₁, β₂, ε, λ decoupled, the dtype's smallest normal number), read at every
        call: a schedule or callback may have changed them between calls."""
        opt, tiny = self.net.optimizer, self.kern.tiny(self.dtype)
        if self.rule == "adam":
            return [opt.lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay if opt.decoupled else 0.0, tiny]
        return [opt.lr, opt.momentum, 0.0, 0.0, 0.0, tiny]

    def _generators_in(self) -> None:
        """Dropout's p and 1/(1−p) as set now (a schedule may change them), and each generator's
        draw counter and key (restoring a checkpoint may replace a generator or its key)."""
        for k, layer in enumerate(self.drops):
            rng = _generator(self.net, layer)
            if all(g is not rng for g in self._generators):      # replaced since the tables were built
                self._build()
                return self._generators_in()
            self.rates[k, 0], self.rates[k, 1] = layer.p, 1.0 / (1.0 - layer.p)
            self.keys[k, 0], self.keys[k, 1] = rng.key
        for i, rng in enumerate(self._generators):
            self.counters[i] = rng.counter[0]
        return None

    def _generators_out(self) -> None:
        """The draw counters the compiled steps advanced, back into the generators."""
        for i, rng in enumerate(self._generators):
            rng.counter[0] = self.counters[i]

    def _scale(self) -> float:
        """c of the loss for a full batch (f = c Σ ..., 1/B for a mean)."""
        loss = self.net.loss
        return loss.error_scale(self.B, self.width)

    def _count(self, steps: int) -> None:
        self.net.optimizer.iterations += steps
        self.net.step_count += steps

    def run_last_batch(self) -> tuple[Array, Array] | None:
        """The short last batch (if any), through the plain step."""
        if self.n_full * self.B == self.n:
            return None
        ops = self.ops
        t_rows = self.order[self.n_full * self.B:]
        x_rows = t_rows if self.rows is None else ops.take_rows(self.rows, t_rows)
        net = self.net
        accept = None if self.accept is None else (lambda f: self.accept(f, self.n_full))
        result = train_step(net, net.loss, net.optimizer, ops.take_rows(self.X, x_rows), ops.take_rows(self.T, t_rows),
                            accept)
        assert result is not None          # ("skip", which refuses steps, is never compiled)
        f, z = result
        self.metrics.record(self.n_full, 0, 0, f, z, ops.take_rows(self.labels, t_rows))
        net.step_count += 1
        return f, z
