"""Where a run is: epoch, batches done, the epoch's generator state and its metrics."""

from __future__ import annotations

from typing import Any

from ..backend import Array
from .history import History
from .metrics import EpochMetrics


class RunPosition:
    """The state of a run that its callbacks read: the epoch, the batch being trained, the first batch trained in it
    (a resumed epoch starts later), the batches done, the host generator state the epoch's
    shuffle was drawn from, its metrics, its labels in row order, and totals carried over
    from a resumed checkpoint."""

    def __init__(self, history: History, n_batches: int, params: list[Any]) -> None:
        self.history, self.n_batches, self.params = history, n_batches, params
        self.epoch = 0
        self.first = 0
        self.batch = 0
        self.done = 0
        self.epoch_rng_state: dict[str, Any] = {}
        self.metrics: EpochMetrics | None = None
        self.labels: Array = None
        self.carried: dict[str, Any] | None = None
        self.totals: dict[str, Any] = {}
        #: sums this process's totals over the ranks of a data-parallel run (None: one process)
        self.reduce: Any = None
        #: the signal that stopped the run ("SIGINT", "SIGTERM"), or None
        self.interrupted: str | None = None
        #: the run's last epoch (a signal after its last step stops nothing)
        self.last_epoch = 0

    def partial_totals(self, done: int, check_weights: bool = False) -> dict[str, Any]:
        """Totals of this epoch's batches so far (one device read); ``trained``: the rows of
        ``seen`` trained since this run started the epoch (not those of a resumed checkpoint)."""
        assert self.metrics is not None
        params = self.params if check_weights else None
        if self.reduce is None:
            totals = self.metrics.totals(self.labels, self.first, done, self.carried, params)
        else:
            totals = self.reduce(self.metrics.totals(self.labels, self.first, done, None, params))
            if self.carried is not None:         # a resumed epoch's totals were saved summed already
                for k in ("loss_sum", "correct", "seen"):
                    totals[k] += self.carried[k]
        totals["trained"] = totals["seen"] - (self.carried["seen"] if self.carried is not None else 0)
        return totals

    @property
    def finished_epoch(self) -> bool:
        return self.done == self.n_batches
