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
