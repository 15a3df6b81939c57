"""The error every loader raises for a bad file: it names the file and the problem."""

from __future__ import annotations

import os


class DatasetError(ValueError):
    """A data file is missing, damaged or not what it claims to be."""

    def __init__(self, path: str | os.PathLike[str] | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class InputFileError(DatasetError):
    """A file of inputs to predict on (an image, a ``.npy`` array, CSV rows) cannot be used:
    the message is the whole story (one line, no traceback needed)."""
