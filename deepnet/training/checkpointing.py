"""Checkpoints during a run, as callbacks around a checkpointer (``deepnet.checkpoint``).

:class:`SaveProgress` comes first in the callback list: every ``every_steps`` steps, and
when a run stops inside an epoch, it saves where the run is (before the epoch's partial
logs enter the history).  :class:`SaveEpochs` comes last: after every other callback saw
the epoch (so an early stop is recorded as the run's end), it saves the finished epoch.
"""

from __future__ import annotations

from typing import Any

from ..callbacks import Callback
from .position import RunPosition


class SaveProgress(Callback):
    """Mid-epoch checkpoints: every ``checkpointer.every_steps`` steps and when a run stops
    inside an epoch (resume redraws the epoch's shuffle from its generator state)."""

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
        pos = self.position
        if not pos.finished_epoch:
            self.checkpointer.save_training(net, epoch, pos.done, pos.epoch_rng_state, pos.history, pos.totals)


class SaveEpochs(Callback):
    """A checkpoint at the end of every finished epoch (and ``best.npz`` when it is the best)."""

    def __init__(self, checkpointer: Any, position: RunPosition) -> None:
        self.checkpointer, self.position = checkpointer, position

    def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, float]) -> None:
        if self.position.finished_epoch:
            self.checkpointer.save_epoch(net, epoch, self.position.history, logs)
