"""deepnet's error types, in one leaf module every other module may import (it imports none).

Each is raised with a one-line message naming what was expected and what was given.
"""

from __future__ import annotations

import os


class BackendError(RuntimeError):
    """A backend was asked for that does not exist or cannot run here."""


class ShapeError(ValueError):
    """An input's shape or value does not fit the layer or loss it was given to."""


class NonFiniteError(FloatingPointError):
    """Training produced NaN or inf; the message names the step, layer and last good state."""


class ResumeError(ValueError):
    """A checkpoint cannot be resumed with the settings given (or there is none)."""


class ModelFileError(ValueError):
    """A model or checkpoint file cannot be used; the message names the file and why."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path, self.problem = os.fspath(path), problem
        super().__init__(f"{self.path}: {problem}")


class TrainingInterrupted(KeyboardInterrupt):
    """``fit`` stopped on SIGINT (Ctrl-C) or SIGTERM: after finishing the step it was in and
    writing a checkpoint there (when it had a checkpointer), or at once on a second signal
    (``aborted``).  A ``KeyboardInterrupt``, so a script stops as after any Ctrl-C.

    ``signal_name``: "SIGINT" or "SIGTERM"; ``exit_code``: 130 or 143 (the shell's code for
    each); ``epoch`` (1-based), ``batch`` (steps done in it), ``n_batches``, ``step`` (steps in
    the run); ``checkpoint``: the file written at that point, or None."""

    def __init__(self, message: str, *, signal_name: str, epoch: int = 0, batch: int = 0, n_batches: int = 0,
                 step: int = 0, checkpoint: str | os.PathLike[str] | None = None, aborted: bool = False) -> None:
        super().__init__(message)
        self.signal_name, self.epoch, self.batch, self.n_batches = signal_name, epoch, batch, n_batches
        self.step, self.aborted = step, aborted
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        self.exit_code = 143 if signal_name == "SIGTERM" else 130

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "interrupted"
