"""Learning-rate schedules and the callbacks that apply them.

A schedule is a function ``epoch -> learning rate`` (epochs count from 0).  Pass it to
:class:`LearningRateScheduler`; :class:`ReduceLROnPlateau` instead reacts to a metric.
Warm-up can also run per step (``per_step=True``) for the first epochs of large batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .callbacks import Callback

Schedule = Callable[[float], float]


def step_decay(lr: float, every: int, gamma: float = 0.1) -> Schedule:
    """η · γ^⌊epoch / every⌋."""
    return lambda epoch: lr * gamma ** math.floor(epoch / every)


def exponential_decay(lr: float, gamma: float) -> Schedule:
    """η · γ^epoch."""
    return lambda epoch: lr * gamma ** epoch


def cosine(lr: float, total: int, min_lr: float = 0.0) -> Schedule:
    """min + ½(η − min)(1 + cos(π · epoch / total)), flat at ``min_lr`` after ``total``."""
    return lambda epoch: min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(epoch, total) / total))


def linear_warmup(lr: float, warmup: float, then: Schedule | None = None) -> Schedule:
    """Rise linearly from η/warmup to η over ``warmup`` epochs, then follow ``then``
    (shifted to start at 0) or stay at η.  Fractional epochs are allowed (per-step use)."""
    def f(epoch: float) -> float:
        if epoch < warmup:
            return lr * (epoch + 1) / (warmup + 1) if warmup >= 1 else lr * min(1.0, (epoch + 1e-9) / warmup)
        return then(epoch - warmup) if then is not None else lr
    return f


def get_schedule(name: str, lr: float, epochs: int) -> Schedule:
    """Schedules by name for the command line: cosine, step, exponential, warmup-cosine."""
    key = name.lower()
    if key == "cosine":
        return cosine(lr, max(epochs, 1), lr * 0.01)
    if key == "step":
        return step_decay(lr, max(1, epochs // 3), 0.1)
    if key == "exponential":
        return exponential_decay(lr, 0.01 ** (1 / max(epochs, 1)))
    if key == "warmup-cosine":
        warm = max(1, epochs // 10)
        return linear_warmup(lr, warm, cosine(lr, max(epochs - warm, 1), lr * 0.01))
    raise ValueError(f"unknown schedule {name!r}: expected cosine, step, exponential or warmup-cosine")


class LearningRateScheduler(Callback):
    """Set η ← ``schedule(epoch)`` (``optimizer.apply_schedule``) at the start of each epoch, or before every
    step with ``per_step=True``: then batch b of epoch e sees the fractional epoch
    e + b / (steps per epoch), the step count being known from ``fit`` before the first step
    (also when a run resumes mid-epoch)."""

    def __init__(self, schedule: Schedule, per_step: bool = False) -> None:
        self.schedule = schedule
        self.per_step = per_step
        self._steps_per_epoch = 0

    def wants_batch_hooks(self) -> bool:
        return self.per_step

    def on_train_begin(self, net: Any, logs: dict[str, Any]) -> None:
        self._steps_per_epoch = int(logs.get("steps_per_epoch") or 0)
        if self.per_step and self._steps_per_epoch < 1:
            raise ValueError("LearningRateScheduler(per_step=True) needs fit's steps per epoch "
                             f"in on_train_begin's logs, got {logs.get('steps_per_epoch')!r}")

    def on_epoch_begin(self, net: Any, epoch: int, logs: dict[str, Any]) -> None:
        net.optimizer.apply_schedule(self.schedule, epoch)

    def on_batch_begin(self, net: Any, step: int, logs: dict[str, Any]) -> None:
        net.optimizer.apply_schedule(self.schedule, logs["epoch"] + logs["batch"] / self._steps_per_epoch)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved by
    ``min_delta`` for ``patience`` epochs (never below ``min_lr``)."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.5, patience: int = 3,
                 min_delta: float = 1e-4, min_lr: float = 0.0, mode: str = "auto") -> None:
        if not 0.0 < factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor}")
        self.monitor, self.factor, self.patience = monitor, factor, patience
        self.min_delta, self.min_lr = min_delta, min_lr
        self.mode = ("max" if "acc" in monitor else "min") if mode == "auto" else mode
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0

    def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, Any]) -> None:
        if self.monitor not in logs:
            raise KeyError(f"ReduceLROnPlateau: metric {self.monitor!r} not in the epoch logs {sorted(logs)}")
        v = logs[self.monitor]
        better = v < self.best - self.min_delta if self.mode == "min" else v > self.best + self.min_delta
        if better:
            self.best, self.wait = v, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            net.optimizer.scale_lr(self.factor, floor=self.min_lr)
            self.wait = 0
