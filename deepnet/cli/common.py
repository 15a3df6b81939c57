"""Shared pieces of the ``deepnet`` command: its error type, exit codes, quiet-aware printing, JSON
conversion, the versions it reports and a model's input shape.
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


def model_input_shape(net: Any, image_shape: Any = None) -> tuple[int, ...] | None:
    """One sample's shape as the model takes it.  A model saved before it saw any data records
    none: for a data set of ``image_shape`` (H, W) images and a first layer that takes images,
    (1, H, W), as the data set draws them; else None."""
    shape = net.input_shape
    if shape is None and image_shape and len(net.layers[0].input_spec() or ()) == 3:
        shape = (1, *image_shape)
    return shape


def model_inputs(net: Any, X: np.ndarray, image_shape: Any = None) -> np.ndarray:
    """Rows of a data set as a view in the model's input shape (images for a network that
    takes them directly, e.g. one starting with Conv2D; :func:`model_input_shape`)."""
    shape = model_input_shape(net, image_shape)
    return X.reshape(len(X), *shape) if shape is not None and len(shape) > 1 else X
