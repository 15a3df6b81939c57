"""Callbacks: hooks into :meth:`deepnet.Network.fit`.

Subclass :class:`Callback` and override any of the ``on_*`` methods.  Batch hooks are
only called when a callback overrides them (so per-sample training pays nothing for
them), and ``logs`` hold device arrays unless said otherwise: read them sparingly, each
read of a GPU value waits for the GPU.
"""

from __future__ import annotations

import math
from typing import Any

from .protocols import TrainedModel

#: the hooks a callback may define; ``fit`` calls each in this order of a run's life
HOOKS = ("on_train_begin", "on_epoch_begin", "on_batch_begin", "on_batch_end", "on_epoch_totals",
         "on_epoch_end", "on_train_end")


class Callback:
    """Base class with no-op hooks.  ``net`` is the model being trained: a
    :class:`~deepnet.protocols.TrainedModel` (a :class:`~deepnet.Network`)."""

    def on_train_begin(self, net: TrainedModel, logs: dict[str, Any]) -> None:
        """``logs``: epochs, steps_per_epoch, batch_size, samples, initial_epoch (of a resumed run),
        resumed (whether the run continues a checkpoint), rank and ranks (this process in a data-parallel run, and how many; 0 and 1 otherwise)."""
    def on_epoch_begin(self, net: TrainedModel, epoch: int, logs: dict[str, Any]) -> None: ...
    def on_batch_begin(self, net: TrainedModel, step: int, logs: dict[str, Any]) -> None:
        """``step``: steps done so far; ``logs``: this batch's ``epoch`` and ``batch`` index."""
    def on_batch_end(self, net: TrainedModel, step: int, logs: dict[str, Any]) -> None: ...
    def on_epoch_totals(self, net: TrainedModel, epoch: int, totals: dict[str, Any]) -> None:
        """After an epoch's last batch, before validation: ``totals`` hold the epoch's sums just
        read to the host (``loss_sum``, ``weights_finite``, ...).  The run's own savers and
        guards use it; most callbacks want :meth:`on_epoch_end`."""
    def on_epoch_end(self, net: TrainedModel, epoch: int, logs: dict[str, Any]) -> None:
        """``logs`` hold this epoch's host floats: loss, accuracy, val_loss, val_accuracy, lr."""
    def on_train_end(self, net: TrainedModel, logs: dict[str, Any]) -> None: ...

    def wants_batch_hooks(self) -> bool:
        cls = type(self)
        return cls.on_batch_begin is not Callback.on_batch_begin or cls.on_batch_end is not Callback.on_batch_end


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best=True`` the weights of the best epoch are put back at the end.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best: bool = True) -> None:
        self.monitor, self.patience, self.min_delta = monitor, int(patience), float(min_delta)
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'min', 'max' or 'auto', got {mode!r}")
        self.mode = mode
        self.restore_best = restore_best
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = -1
        self.wait = 0
        self._best_weights: dict[str, Any] | None = None
        self.stopped_epoch: int | None = None

    def _better(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_train_begin(self, net: TrainedModel, logs: dict[str, Any]) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait, self.best_epoch, self.stopped_epoch = 0, -1, None

    def on_epoch_end(self, net: TrainedModel, epoch: int, logs: dict[str, Any]) -> None:
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping: metric {self.monitor!r} not in the epoch logs {sorted(logs)}"
                           " (val_* metrics need validation_data)")
        value = logs[self.monitor]
        if self._better(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self._best_weights = net.get_weights()
        else:
            self.wait += 1
            if self.wait >= self.patience:
                net.stop_training = True
                net.stop_reason = (f"early stopping at epoch {epoch + 1}: {self.monitor} did not improve for "
                                   f"{self.patience} epochs (best at epoch {self.best_epoch + 1})")
                self.stopped_epoch = epoch

    def on_train_end(self, net: TrainedModel, logs: dict[str, Any]) -> None:
        if self.restore_best and self._best_weights is not None:
            net.set_weights(self._best_weights)


class KeepBest(EarlyStopping):
    """Keep the weights of the best epoch by ``monitor`` and restore them at the end."""

    def __init__(self, monitor: str = "val_accuracy", mode: str = "auto") -> None:
        super().__init__(monitor, patience=10**9, mode=mode, restore_best=True)


class LambdaCallback(Callback):
    """A callback from plain functions, e.g. ``LambdaCallback(on_epoch_end=lambda net, e, logs: ...)``."""

    def __init__(self, **hooks: Any) -> None:
        for name, fn in hooks.items():
            if name not in HOOKS:
                raise ValueError(f"LambdaCallback: unknown hook {name!r}: expected one of {', '.join(HOOKS)}")
            setattr(self, name, fn)

    def wants_batch_hooks(self) -> bool:
        return "on_batch_begin" in self.__dict__ or "on_batch_end" in self.__dict__
