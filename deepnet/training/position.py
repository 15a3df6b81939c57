"""Where a run is: epoch, batches done, the epoch's generator state and its metrics.

A :class:`RunPosition` is a value: the loop makes a new one (``dataclasses.replace``) as the
run moves on, and the callbacks that save or report the run read the current one through a
:class:`LivePosition`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..backend import Array
from .history import History
from .metrics import EpochMetrics


@dataclass(frozen=True)
class RunPosition:
    """The state of a run that its callbacks read: the epoch, the batch being trained, the
    first batch trained in it (a resumed epoch starts later), the batches done, the host
    generator state the epoch's shuffle was drawn from, its metrics, its labels in row order,
    totals carried over from a resumed checkpoint, and the signal that stopped the run."""

    history: History
    n_batches: int
    params: list[Any]
    #: the run's last epoch (a signal after its last step stops nothing)
    last_epoch: int = 0
    epoch: int = 0
    first: int = 0
    batch: int = 0
    done: int = 0
    epoch_rng_state: dict[str, Any] = field(default_factory=dict)
    metrics: EpochMetrics | None = None
    labels: Array = None
    carried: dict[str, Any] | None = None
    #: the signal that stopped the run ("SIGINT", "SIGTERM"), or None
    interrupted: str | None = None
    #: sums this process's totals over the ranks of a data-parallel run (one process: as they are)
    reduce: Callable[[dict[str, Any]], dict[str, Any]] = lambda totals: totals

    def partial_totals(self, done: int, check_weights: bool = False) -> dict[str, Any]:
        """Totals of this epoch's batches so far (one device read; summed over the ranks);
        ``trained``: the rows of ``seen`` trained since this run started the epoch (not those
        of a resumed checkpoint, whose totals were saved summed already)."""
        assert self.metrics is not None
        params = self.params if check_weights else None
        totals = self.reduce(self.metrics.totals(self.labels, self.first, done, None, params))
        if self.carried is not None:
            for k in ("loss_sum", "correct", "seen"):
                totals[k] += self.carried[k]
        totals["trained"] = totals["seen"] - (self.carried["seen"] if self.carried is not None else 0)
        return totals

    @property
    def finished_epoch(self) -> bool:
        return self.done == self.n_batches

    @property
    def stops_nothing(self) -> bool:
        """Whether a signal now comes after the run's last step (the run finishes)."""
        return self.finished_epoch and self.epoch == self.last_epoch


class LivePosition:
    """The run's current :class:`RunPosition`, read through ``now()`` (what the callbacks of
    a run hold: the loop replaces the position, they always see the latest)."""

    def __init__(self, now: Callable[[], RunPosition]) -> None:
        self._now = now

    def __getattr__(self, name: str) -> Any:
        return getattr(self._now(), name)
