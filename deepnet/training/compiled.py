"""The training step as compiled code on the CPU: ``fit(graphs=...)`` on a backend that
compiles steps (:meth:`~deepnet.backend.ops.Ops.step_compiler`: NumPy with numba).

What a CUDA graph is to the GPU, this is to the CPU: the step (``graphs="on"``) or a run of
steps (``"epoch"``, and ``"auto"`` without per-batch callbacks) runs as one compiled call over
fixed buffers, with no Python between the operations.  The maths is the layers', the loss's
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

from ..backend import Array, Ops
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
    if net.ops.blas != "numpy":
        out.append(f"the products go to {net.ops.blas} (DEEPNET_BLAS), which the compiled step does not call")
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
        """The network as the compiled step reads it: codes, the arrays of every layer, the
        buffers of every batch, the optimizer's slots (made now)."""
        net, ops, kern, B = self.net, self.ops, self.kern, self.B
        layers = net.layers
        start = 1 if declared_kind(layers[0], _LAYER_METHODS) == "flatten" else 0
        self.Xrows = ops.xp.reshape(self.X, (int(self.X.shape[0]), -1))
        widths = [int(self.Xrows.shape[1])]
        codes, slot, flags = [], [], []
        self._grad_of: dict[int, Array] = {}        # id of a parameter's array -> its gradient buffer
        weights, biases, gweights, gbiases, masks, ps, keeps, counters, keys = [], [], [], [], [], [], [], [], []
        for layer in layers[start:]:
            kind = declared_kind(layer, _LAYER_METHODS)
            codes.append(getattr(kern, _LAYER_CODE[kind]))
            if kind == "dense":
                params = layer.parameters()
                w, transposed = kern.row_major(params["weight"].data)
                slot.append(len(weights))
                flags.append(int(transposed))
                weights.append(w)
                gweights.append(ops.zeros_like(w))
                self._grad_of[id(params["weight"].data)] = gweights[-1]
                b = params["bias"].data if layer.bias else ops.zeros((0,), self.dtype)
                biases.append(b)
                gbiases.append(ops.zeros_like(b))
                if layer.bias:
                    self._grad_of[id(b)] = gbiases[-1]
                widths.append(layer.n_out)
                continue
            if kind == "dropout":
                rng = _generator(net, layer)
                slot.append(len(masks))
                masks.append(ops.zeros((B, widths[-1]), self.dtype))
                ps.append(layer.p)
                keeps.append(1.0 / (1.0 - layer.p))
                counters.append(rng.counter)
                keys.append(list(rng.key))
            else:
                slot.append(0)
            widths.append(widths[-1])
        self.lowest = max(net.lowest_trained - start, 0)
        self.widths = widths
        self.acts = [ops.zeros((B, w), self.dtype) for w in widths]
        self.errs = [ops.zeros((B, w) if i else (1, 1), self.dtype) for i, w in enumerate(widths)]
        self.tbuf = ops.zeros((B, widths[-1]) if self.T.ndim == 2 else (1, 1), self.dtype)
        self.lbuf = ops.zeros((B,), ops.int64)
        self.Trows = self.T if self.T.ndim == 2 else self.tbuf
        self.lists = dict(
            codes=kern.ints(codes), slot=kern.ints(slot), flags=kern.ints(flags or [0]),
            acts=kern.typed(self.acts), errs=kern.typed(self.errs),
            weights=kern.typed(weights), biases=kern.typed(biases),
            grads_w=kern.typed(gweights), grads_b=kern.typed(gbiases),
            masks=kern.typed(masks or [ops.zeros((1, 1), self.dtype)]),
            ps=kern.values(ps or [0.0], self.dtype), keeps=kern.values(keeps or [1.0], self.dtype),
            counters=kern.typed(counters or [kern.counter()]), keys=kern.keys(keys or [[0, 0]]))
        self._params_lists()
        self.work = B * sum(w.size for w in weights) * 3

    def _params_lists(self) -> None:
        """Every parameter, its gradient buffer and its optimizer slots as flat views in one
        orientation (row-major), in the order the update walks them; which parameters decoupled
        weight decay skips."""
        net, kern, opt = self.net, self.kern, self.net.optimizer
        params = list(net.parameters().values())
        opt.create_slots(net.parameters(), self.ops)
        excluded = opt.decay_excluded(params)
        none = kern.flat(self.ops.zeros((0,), self.dtype))
        flat_p, flat_g, s1, s2, decays = [], [], [], [], []
        for p in params:
            flat_p.append(kern.flat(p.data))
            flat_g.append(kern.flat(self._grad_of[id(p.data)]))
            st = [opt.state[p.name][k] for k in opt.slots]
            s1.append(kern.flat(st[0]) if st else none)
            s2.append(kern.flat(st[1]) if len(st) > 1 else none)
            decays.append(int(p.name not in excluded))
        self.lists.update(params=kern.typed(flat_p), grads=kern.typed(flat_g), slots1=kern.typed(s1),
                          slots2=kern.typed(s2), decays=kern.ints(decays))
        self._bound = self._binding()

    def _binding(self) -> tuple:
        """What the description was built from: the identities of the parameters' arrays and slots."""
        opt = self.net.optimizer
        return tuple((id(p.data), *(id(a) for a in opt.state.get(p.name, {}).values()))
                     for p in self.net.parameters().values())

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
        net, opt, L = self.net, self.net.optimizer, self.lists
        kind = declared_kind(opt, _OPTIMIZER_METHODS)
        update = self._update_code(kind)
        hyper = self.kern.values(self._hyper(kind), "float64")
        fused = update == self.kern.SGD and self.B == 1
        self._refresh_layer_values()
        m = self.metrics
        done = self.kern.run_steps(
            self.Xrows, self.x_order, self.t_order, self.Trows, self.labels, first, count,
            L["codes"], L["slot"], L["flags"], L["acts"], L["errs"], L["weights"], L["biases"],
            L["grads_w"], L["grads_b"], L["masks"], L["ps"], L["keeps"], L["counters"], L["keys"],
            self.tbuf, self.lbuf, self._loss_code(), self._scale(), self.lowest,
            update, L["params"], L["grads"], L["slots1"], L["slots2"], L["decays"], opt.iterations, hyper,
            fused, self.accept is not None, m.batch_losses, m.batch_correct)
        self._count(done)
        at = first + max(done, 1) - 1
        self.last = (self.ops.xp.reshape(m.batch_losses[at:at + 1], ()), self.acts[-1])
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

    def _update_code(self, kind: str | None) -> int:
        opt, kern = self.net.optimizer, self.kern
        if kind == "adam":
            return kern.ADAM
        if opt.momentum:
            return kern.NESTEROV if opt.nesterov else kern.MOMENTUM
        return kern.SGD

    def _hyper(self, kind: str | None) -> list[float]:
        """(η, μ or β₁, β₂, ε, λ decoupled, the dtype's smallest normal number), read at every
        call: a schedule or callback may have changed them between calls."""
        opt, tiny = self.net.optimizer, self.kern.tiny(self.dtype)
        if kind == "adam":
            return [opt.lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay if opt.decoupled else 0.0, tiny]
        return [opt.lr, opt.momentum, 0.0, 0.0, 0.0, tiny]

    def _refresh_layer_values(self) -> None:
        """Dropout's p (and 1/(1−p)) as set now (a schedule may change it), and its generator's
        counter and key (restoring a checkpoint may replace the generator or its key)."""
        L = self.lists
        drops = [layer for layer in self.net.layers if declared_kind(layer, _LAYER_METHODS) == "dropout"]
        for k, layer in enumerate(drops):
            L["ps"][k] = layer.p
            L["keeps"][k] = 1.0 / (1.0 - layer.p)
            rng = _generator(self.net, layer)
            if L["counters"][k] is not rng.counter:
                L["counters"][k] = rng.counter
            L["keys"][k, 0], L["keys"][k, 1] = rng.key

    def _loss_code(self) -> int:
        return self.kern.XENT if declared_kind(self.net.loss, _LOSS_METHODS) == "xent" else self.kern.SQUARED

    def _scale(self) -> float:
        """c of the loss for a full batch (f = c Σ ..., 1/B for a mean)."""
        loss = self.net.loss
        return loss.error_scale(self.B, self.widths[-1])

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


def compiled_or_none(net: Any, ops: Ops, obstacles: list[str], mode: str) -> bool:
    """Whether to compile: no obstacles; ``"auto"`` with obstacles says the first once."""
    if not obstacles:
        return True
    if mode == "auto":
        warn_once(obstacles[0], what="a compiled step")
        return False
    raise ValueError(f"fit(graphs={mode!r}): the step cannot be compiled: {'; '.join(obstacles)}")
