"""Checkpoints during a run, as callbacks around a checkpointer (``deepnet.checkpoint``).

:class:`SaveStopPoint` sees the epoch's totals first: when a run stops inside an epoch it
saves where the run is, before the epoch's partial logs enter the history.
:class:`SaveCheckpoints` comes last in the callback list: after every other callback saw a
batch or an epoch (so a per-batch schedule has run, and an early stop is recorded as the
run's end), it saves every ``every_steps`` steps and at the end of every finished epoch.
A checkpointer made ``interrupt_only`` saves only where SIGINT or SIGTERM stopped the run.
"""

from __future__ import annotations

from typing import Any

from ..callbacks import Callback
from .position import RunPosition


def _wanted(checkpointer: Any, position: RunPosition) -> bool:
    """Whether this stop point or epoch end is saved (an ``interrupt_only`` checkpointer: only
    where a signal stopped the run)."""
    return not checkpointer.interrupt_only or position.interrupted is not None


class SaveStopPoint(Callback):
    """A checkpoint of a run stopped inside an epoch (resume redraws the epoch's shuffle from
    its generator state and trains the rest of the epoch)."""

    def __init__(self, checkpointer: Any, position: RunPosition) -> None:
        self.checkpointer, self.position = checkpointer, position

    def on_epoch_totals(self, net: Any, epoch: int, totals: dict[str, Any]) -> None:
        pos = self.position
        if not pos.finished_epoch and _wanted(self.checkpointer, pos):
            self.checkpointer.save_training(net, epoch, pos.done, pos.epoch_rng_state, pos.history, totals)


class SaveCheckpoints(Callback):
    """A checkpoint every ``checkpointer.every_steps`` steps, and one at the end of every
    finished epoch (``best.npz`` too when it is the best)."""

    def __init__(self, checkpointer: Any, position: RunPosition) -> None:
        self.checkpointer, self.position = checkpointer, position

    def wants_batch_hooks(self) -> bool:
        return self.checkpointer.every_steps > 0

    def on_batch_end(self, net: Any, step: int, logs: dict[str, Any]) -> None:
        if self.checkpointer.due(step):
            pos = self.position
            done = logs["batch"] + 1
            self.checkpointer.save_training(net, pos.epoch, done, pos.epoch_rng_state, pos.history,
                                            pos.partial_totals(done))

    def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, float]) -> None:
        if self.position.finished_epoch and _wanted(self.checkpointer, self.position):
            self.checkpointer.save_epoch(net, epoch, self.position.history, logs)
