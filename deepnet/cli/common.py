"""Shared pieces of the ``deepnet`` command: its error type, exit codes, quiet-aware printing, JSON
conversion and the versions it reports.
"""

from __future__ import annotations

import argparse
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ..version import __version__


EXIT_ERROR = 1
EXIT_CLOSED_PIPE = 141      #: 128 + SIGPIPE: what a shell reports for ``git log | head``'s git


class CLIError(Exception):
    """A user-facing error: printed without a traceback."""


def say(args: argparse.Namespace, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, flush=True)


def json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return repr(o)


def versions() -> dict[str, str]:
    out = {"deepnet": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for pkg in ("cupy", "cupy-cuda12x", "cupy-cuda13x", "scikit-learn", "tqdm", "matplotlib", "safetensors",
                "array-api-strict", "torch", "threadpoolctl"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out
