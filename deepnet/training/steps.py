"""How a run takes its steps: one strategy, chosen once per run, behind one interface.

Each strategy trains an epoch's batches from a first one with the same step body,
:func:`~deepnet.training.step.train_step`:

* :class:`PlainStep`: one eager step per batch of :class:`~.batches.EpochBatches`;
* :class:`DataParallelStep`: the same, each rank's error scaled by its share of the global
  batch and the gradients summed over the ranks between backward and the update;
* :class:`CapturedStep`: the step on fixed buffers, captured once and replayed
  (:class:`~.captured.StaticStep`, CUDA graphs).

``begin_epoch(perm, order, labels, first)`` returns the epoch's (metrics, labels in row order);
``run(first, events)`` trains and returns the batches done.  ``events`` is the run's side of
a step: ``at(b)`` (batch b is being trained), ``begin(b)`` and ``end(b, f, size)`` around it
(True: stop), ``stop(done)`` between steps without batch callbacks (True: stop), and
``active`` (whether any callback wants each batch).
"""

from __future__ import annotations

from typing import Any

from ..backend import Array
from .batches import EpochBatches
from .captured import StaticStep
from .metrics import EpochMetrics
from .step import train_step


class PlainStep:
    """One eager :func:`train_step` per batch (``accept``: the NaN guard's per-step check)."""

    #: summed over the processes between backward and the update (None: this process's own)
    gradients: Any = None

    def __init__(self, net: Any, batches: EpochBatches, accept: Any = None) -> None:
        self.net, self.batches, self.accept = net, batches, accept
        self.perm: Any = None
        self.order: Array = None
        self.metrics: EpochMetrics | None = None

    def begin_epoch(self, perm: Any, order: Array, labels: Array, first: int) -> tuple[EpochMetrics, Array]:
        net, ops = self.net, self.net.ops
        self.perm, self.order = perm, order
        self.metrics = EpochMetrics(ops, self.batches.n, self.batches.batch_size, ops.dtype(net.dtype_name),
                                    net.loss.reduction)
        return self.metrics, labels if order is None else ops.take_rows(labels, order)

    def share(self, b: int, s: int, e: int) -> float:
        """This process's share of batch b's mean loss (one process: all of it)."""
        return 1.0

    def size(self, b: int, s: int, e: int) -> int:
        """The rows of batch b that the batch callbacks are told of."""
        return e - s

    def run(self, first: int, events: Any) -> int:
        net, metrics = self.net, self.metrics
        assert metrics is not None
        for b, s, e, x, t in self.batches.epoch(self.perm, self.order, first):
            events.begin(b)
            result = train_step(net, net.loss, net.optimizer, x, t, self.accept, self.share(b, s, e), self.gradients)
            if result is None:      # refused by the NaN guard (check_finite="skip")
                if events.stop(b + 1):
                    return b + 1
                continue
            net.step_count += 1
            metrics.record(b, s, e, *result)
            if events.end(b, result[0], self.size(b, s, e)):
                return b + 1
        return self.batches.n_batches


class DataParallelStep(PlainStep):
    """The plain step on this rank's shard of each global batch: ∂f/∂z scaled by the rank's
    share n_r / N of a mean loss, the gradients summed over the ranks (``gradients``: the
    run's :class:`~deepnet.distributed.gradients.GradientBuckets`) before the update."""

    def __init__(self, net: Any, batches: Any, gradients: Any) -> None:
        super().__init__(net, batches)
        self.gradients = gradients
        self.mean = net.loss.reduction != "sum"

    def share(self, b: int, s: int, e: int) -> float:
        return (e - s) / self.batches.global_rows(b) if self.mean else 1.0

    def size(self, b: int, s: int, e: int) -> int:
        return self.batches.global_rows(b)      # the global batch's rows (the loss is this rank's)


class CapturedStep:
    """The captured step (:class:`StaticStep`): per-batch callbacks run between replays; without
    them the run asks ``events.stop`` between steps (or graph runs)."""

    def __init__(self, static: StaticStep) -> None:
        self.static = static

    def begin_epoch(self, perm: Any, order: Array, labels: Array, first: int) -> tuple[Any, Array]:
        return self.static.begin_epoch(order, first), labels     # (the captured step counts correct rows itself)

    def run(self, first: int, events: Any) -> int:
        static = self.static
        hooks = _Between(events, static) if events.active else None
        done = static.run_full_batches(first, hooks, events.stop)
        if static.net.stop_training or done < static.n_full or static.n_full * static.B == static.n:
            return done
        if hooks is not None:
            hooks.begin(static.n_full)
        last = static.run_last_batch()
        if last is None:
            return done
        if hooks is not None:
            hooks.end(static.n_full, last[0])
        else:
            events.stop(static.n_full + 1)
        return static.n_full + 1


class _Between:
    """The batch callbacks around each captured step (the loss handed to them is a copy: the
    graph overwrites its own at the next replay)."""

    def __init__(self, events: Any, static: StaticStep) -> None:
        self.events, self.static = events, static

    def begin(self, b: int) -> None:
        self.events.begin(b)

    def end(self, b: int, f: Array) -> bool:
        static = self.static
        return self.events.end(b, static.ops.copy(f), min(static.B, static.n - b * static.B))
