"""SIGINT (Ctrl-C) and SIGTERM (how schedulers stop jobs) during ``fit``: stop after the step.

While a run trains, :class:`StopSignals` takes over both signals where Python's defaults
hold them (and only in the main thread, the only one that may): the first one is noted and the
run stops after the step it is in, writing a checkpoint there; a second one raises at once.
The previous handlers are back as soon as ``fit`` returns or raises.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from ..errors import TrainingInterrupted

SIGNALS = ("SIGINT", "SIGTERM")


def _is_default(sig: int, handler: Any) -> bool:
    """Whether ``handler`` is Python's own for ``sig``, or one marked ``yields_to_fit`` (the
    command line's SIGTERM handler outside training); a handler the program set is left alone,
    and so is an ignored signal."""
    return (handler is signal.SIG_DFL or (sig == signal.SIGINT and handler is signal.default_int_handler)
            or getattr(handler, "yields_to_fit", False))


class StopSignals:
    """A context in which SIGINT and SIGTERM ask the run to stop (:attr:`received`: the first
    signal's name, or None)."""

    def __init__(self, redeliver: bool = True) -> None:
        self.received: str | None = None
        #: whether the run stopped for :attr:`received` (False: it came after the run's last step)
        self.heeded = False
        #: a signal that came after the last step goes to the previous handler once fit is over
        #: (as if it came a moment later); False: the caller looks at :attr:`late` itself
        self.redeliver = redeliver
        self._previous: dict[int, Any] = {}

    @property
    def late(self) -> str | None:
        """A signal received after the run's last step (the run finished), or None."""
        return None if self.heeded else self.received

    def __enter__(self) -> StopSignals:
        self.received, self.heeded = None, False
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in SIGNALS:
            sig = getattr(signal, name)
            handler = signal.getsignal(sig)
            if _is_default(sig, handler):
                self._previous[sig] = handler
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        self.restore()
        if kind is None and self.redeliver and self.late is not None:
            signal.raise_signal(getattr(signal, self.late))

    def restore(self) -> None:
        """Give the signals back to their previous handlers."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is None:
            self.received = name
            return
        self.restore()          # a third signal acts as it would without deepnet
        raise TrainingInterrupted(
            f"interrupted again ({name}) while stopping: stopped at once, without a checkpoint at this step "
            "(earlier checkpoints are intact)", signal_name=self.received, aborted=True)
