"""Inputs to predict on: an image, a ``.npy`` array or CSV rows, read as rows of raw values.

:func:`read_inputs` reads the file and checks it against the model's input width; scaling
the values like the training data is the caller's (``deepnet predict``).  A file that cannot
be used raises :class:`~deepnet.datasets.errors.InputFileError` naming the file and why.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputFileError
from .tabular import parse_csv, read_text

#: the image files :func:`read_inputs` reads (grayscale; colour is averaged)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def read_image_rows(path: str | os.PathLike[str], image_shape: Any = None) -> np.ndarray:
    """One row of 0..255 grayscale pixels from a PNG/JPEG/BMP file (needs matplotlib); with
    ``image_shape`` (height, width) the image must have that size."""
    path = Path(path)
    try:
        from matplotlib.image import imread
    except ImportError:
        raise InputFileError(None, "reading images needs matplotlib: pip install 'deepnet[plot]'") from None
    try:
        img = np.asarray(imread(path), dtype=np.float64)
    except Exception as err:          # PIL's UnidentifiedImageError, SyntaxError, OSError, ValueError...
        raise InputFileError(path, f"not a readable {path.suffix.lstrip('.').upper()} image "
                                   f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'})"
                             ) from None
    if img.ndim == 3:
        img = img[..., :3].mean(axis=2)
    if img.ndim != 2 or img.size == 0:
        raise InputFileError(path, f"expected a 2-D grayscale or colour image, got an array of shape {img.shape}")
    if img.max() <= 1.0:
        img = img * 255.0
    if image_shape and tuple(img.shape) != tuple(image_shape):
        raise InputFileError(path, f"image is {img.shape[1]}x{img.shape[0]} pixels, the model expects "
                                   f"{image_shape[1]}x{image_shape[0]} grayscale")
    return img.reshape(1, -1)


def read_npy_rows(path: str | os.PathLike[str]) -> np.ndarray:
    """The samples of a ``.npy`` array (pickles refused), one per row (a 1-D array is one sample)."""
    try:
        raw = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputFileError(path, f"not a readable .npy array ({str(err).splitlines()[0]})") from None
    if raw.size == 0:
        raise InputFileError(path, f"the array is empty (shape {raw.shape}); expected at least one sample")
    if raw.dtype.kind not in "biuf":
        raise InputFileError(path, f"expected numbers, got an array of dtype {raw.dtype}")
    return raw.reshape(raw.shape[0], -1) if raw.ndim > 1 else raw.reshape(1, -1)


def read_csv_rows(path: str | os.PathLike[str], n_features: int) -> np.ndarray:
    """CSV rows of ``n_features`` values, or of a label and ``n_features`` values (the label
    is dropped); no header."""
    text = read_text(path)
    first = next((line for line in text.splitlines() if line.strip()), "")
    if not first:
        raise InputFileError(path, f"no rows; expected CSV rows of {n_features} values")
    width = len(first.split(","))
    if width == n_features + 1:
        raw, _, _ = parse_csv(text, path, label_column=0, header=False)
        return raw
    if width == n_features:
        rows = [r.split(",") for r in text.splitlines() if r.strip()]
        try:
            return np.array(rows, dtype=np.float64)
        except ValueError:
            raise InputFileError(path, f"rows must be {n_features} numbers") from None
    raise InputFileError(path, f"rows have {width} columns; the model expects {n_features} values "
                               f"(or a label and {n_features} values)")


def read_inputs(path: str | os.PathLike[str], n_features: int, image_shape: Any = None) -> np.ndarray:
    """Rows of ``n_features`` finite raw values from an image (by suffix: .png, .jpg, .jpeg,
    .bmp), a ``.npy`` array or a CSV file (anything else, ``.gz`` allowed), as read (not scaled)."""
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if not path.exists():
        raise InputFileError(path, "file not found")
    if path.is_dir():
        raise InputFileError(path, "is a folder; expected an image, a .npy array or a CSV file")
    if suffix.lower() in IMAGE_SUFFIXES:
        raw = read_image_rows(path, image_shape)
    elif suffix.lower() == ".npy":
        raw = read_npy_rows(path)
    else:
        raw = read_csv_rows(path, n_features)
    if raw.shape[1] != n_features:
        raise InputFileError(path, f"inputs have {raw.shape[1]} values each, the model expects {n_features}")
    if not np.all(np.isfinite(raw)):
        raise InputFileError(path, "inputs contain NaN or infinite values")
    return raw
