"""The callbacks of a run, called in order; batch hooks only for those that want them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..callbacks import Callback


class CallbackList:
    """Calls each hook on every callback in order (batch hooks: only on those that override them)."""

    def __init__(self, callbacks: Iterable[Callback]) -> None:
        self.callbacks = list(callbacks)
        self.batch_callbacks = [cb for cb in self.callbacks if cb.wants_batch_hooks()]

    def train_begin(self, net: Any, logs: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(net, logs)

    def epoch_begin(self, net: Any, epoch: int) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(net, epoch, {})

    def batch_begin(self, net: Any, step: int, logs: dict[str, Any]) -> None:
        for cb in self.batch_callbacks:
            cb.on_batch_begin(net, step, logs)

    def batch_end(self, net: Any, step: int, logs: dict[str, Any]) -> None:
        for cb in self.batch_callbacks:
            cb.on_batch_end(net, step, logs)

    def epoch_totals(self, net: Any, epoch: int, totals: dict[str, Any]) -> None:
        """The run's own step between an epoch's last batch and its logs: ``on_epoch_totals``
        (the stop-point saver, the NaN guard) sees the totals just read, before validation runs."""
        for cb in self.callbacks:
            cb.on_epoch_totals(net, epoch, totals)

    def epoch_end(self, net: Any, epoch: int, logs: dict[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(net, epoch, logs)

    def train_end(self, net: Any, logs: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_train_end(net, logs)
