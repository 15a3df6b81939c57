"""History and printing of a run, as callbacks."""

from __future__ import annotations

from typing import Any

from ..callbacks import Callback
from .history import History


class RecordHistory(Callback):
    """Appends each epoch's logs to the run's :class:`History`."""

    def __init__(self, history: History) -> None:
        self.history = history

    def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, float]) -> None:
        self.history.append(epoch, logs)


class PrintEpochs(Callback):
    """``fit(verbose=True)``: one line per epoch with every metric and the time."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, float]) -> None:
        print(f"epoch {epoch + 1}/{self.epochs}  " + "  ".join(
            f"{k} {v:.4f}" for k, v in logs.items() if k != "time") + f"  ({logs['time']:.1f}s)", flush=True)
