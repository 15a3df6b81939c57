"""A per-epoch progress bar for ``fit`` (tqdm, optional)."""

from __future__ import annotations

import sys
import time
from typing import Any

from .backend import to_host
from .callbacks import Callback


class ProgressBar(Callback):
    """Shows samples done, samples per second and the loss, refreshed a few times a second.

    Reading the loss waits for the device, so it is read only at each refresh, never per
    step.  Disabled when ``quiet`` or when the output is not a terminal (unless
    ``force=True``).  Needs ``tqdm`` (``pip install "deepnet[progress]"``).
    """

    def __init__(self, n_samples: int, epochs: int, quiet: bool = False, force: bool = False,
                 refresh: float = 0.25, stream: Any = None) -> None:
        self.n_samples, self.epochs, self.refresh = n_samples, epochs, refresh
        self.stream = stream or sys.stderr
        self.enabled = not quiet and (force or getattr(self.stream, "isatty", lambda: False)())
        self._bar: Any = None
        self._pending = 0
        self._next = 0.0
        if self.enabled:
            try:
                import tqdm  # noqa: F401
            except ImportError:
                self.enabled = False

    def wants_batch_hooks(self) -> bool:
        return self.enabled

    def on_epoch_begin(self, net: Any, epoch: int, logs: dict[str, Any]) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        self._bar = tqdm(total=self.n_samples, desc=f"epoch {epoch + 1}/{self.epochs}", unit="sample",
                         unit_scale=True, leave=True, file=self.stream, dynamic_ncols=True)
        self._pending, self._next = 0, time.monotonic() + self.refresh

    def on_batch_end(self, net: Any, step: int, logs: dict[str, Any]) -> None:
        self._pending += logs["size"]
        now = time.monotonic()
        if now >= self._next and self._bar is not None:
            self._bar.update(self._pending)
            self._pending = 0
            self._bar.set_postfix(loss=f"{float(to_host(logs['loss'])):.4f}", refresh=False)
            self._next = now + self.refresh

    def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, Any]) -> None:
        if self._bar is None:
            return
        self._bar.update(self._pending)
        post = {"loss": f"{logs['loss']:.4f}", "acc": f"{logs['accuracy']:.4f}"}
        if "val_accuracy" in logs:
            post["val_acc"] = f"{logs['val_accuracy']:.4f}"
        self._bar.set_postfix(post)
        self._bar.close()
        self._bar = None
