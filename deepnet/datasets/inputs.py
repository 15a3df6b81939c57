"""Inputs to predict on: an image, a ``.npy`` array or CSV rows, read as rows of raw values
(and, from a CSV file with a label column, the labels).

:func:`read_inputs` reads the file and checks it against the model's input width; scaling
the values like the training data is the caller's (``deepnet predict``).  A file that cannot
be used raises :class:`~deepnet.datasets.errors.InputFileError` naming the file and why.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputFileError
from .tabular import csv_numbers, read_text

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


def _label_index(path: Path, names: list[str] | None, width: int, n_features: int,
                 label_column: int | str | None) -> int | None:
    """Which column holds labels (None: none).  Given: by header name or index.  Not given: the
    column named ``label``, else the first when rows have one value more than the model takes
    (the notebook's CSV)."""
    if isinstance(label_column, str) and label_column.lstrip("-").isdigit():
        label_column = int(label_column)
    if isinstance(label_column, str):
        if names is None:
            raise InputFileError(path, f"no header row, so no column named {label_column!r} "
                                       "(give --label-column as an index, 0 for the first)")
        if label_column not in names:
            raise InputFileError(path, f"no column named {label_column!r}; columns are {names[:10]}"
                                       + ("..." if len(names) > 10 else ""))
        index: int | None = names.index(label_column)
    elif label_column is not None:
        if not -width <= label_column < width:
            raise InputFileError(path, f"label column {label_column} is outside the {width} columns")
        index = label_column % width
    elif names and "label" in names:
        index = names.index("label")
    elif width == n_features + 1:
        if names:
            raise InputFileError(path, f"rows have {width} columns, one more than the model's {n_features} values, "
                                       "and none is named 'label': give --label-column (name or index)")
        index = 0
    else:
        index = None
    expected = n_features + (index is not None)
    if width != expected:
        raise InputFileError(path, f"rows have {width} columns; the model expects {n_features} values"
                                   + (" and a label" if index is not None else " (or a label and "
                                      f"{n_features} values)"))
    return index


def read_csv_labelled(path: str | os.PathLike[str], n_features: int,
                      label_column: int | str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """CSV rows of ``n_features`` values and their labels (None if the file has none), in the
    formats ``deepnet train`` reads: a header row or none, a label column anywhere (by name
    or index, see :func:`_label_index`) or none."""
    path = Path(path)
    reader = csv.reader(io.StringIO(read_text(path)))
    rows, lines = [], []
    for r in reader:
        if r and any(c.strip() for c in r):
            rows.append(r)
            lines.append(reader.line_num)
    if not rows:
        raise InputFileError(path, f"no rows; expected CSV rows of {n_features} values")
    try:
        [float(c) for c in rows[0]]
        names = None
    except ValueError:
        names = [c.strip() for c in rows[0]]
    body, lines = (rows[1:], lines[1:]) if names else (rows, lines)
    if not body:
        raise InputFileError(path, "the CSV file has a header but no data rows")
    width = len(rows[0])
    for r, line in zip(body, lines):
        if len(r) != width:
            raise InputFileError(path, f"line {line}: expected {width} columns, got {len(r)}")
    index = _label_index(path, names, width, n_features, label_column)
    data = csv_numbers(path, body, lines, InputFileError)
    if index is None:
        return data, None
    labels = data[:, index]
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(labels) | (labels != np.round(labels)) | (labels < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputFileError(path, f"line {lines[i]}: label {body[i][index]!r} is not a class number 0, 1, 2, ...")
    return np.delete(data, index, axis=1), labels.astype(np.int64)


def read_csv_rows(path: str | os.PathLike[str], n_features: int) -> np.ndarray:
    """CSV rows of ``n_features`` values (a label column is dropped: :func:`read_csv_labelled`)."""
    return read_csv_labelled(path, n_features)[0]


def read_inputs(path: str | os.PathLike[str], n_features: int, image_shape: Any = None) -> np.ndarray:
    """Rows of ``n_features`` finite raw values from an image (by suffix: .png, .jpg, .jpeg,
    .bmp), a ``.npy`` array or a CSV file (anything else, ``.gz`` allowed), as read (not scaled)."""
    return read_labelled_inputs(path, n_features, image_shape)[0]


def read_labelled_inputs(path: str | os.PathLike[str], n_features: int, image_shape: Any = None,
                         label_column: int | str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`read_inputs`' rows and, for a CSV file with a label column, its labels (else None)."""
    path = Path(path)
    labels = None
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if not path.exists():
        raise InputFileError(path, "file not found")
    if path.is_dir():
        raise InputFileError(path, "is a folder; expected an image, a .npy array or a CSV file")
    if suffix.lower() in IMAGE_SUFFIXES:
        raw = read_image_rows(path, image_shape)
    elif suffix.lower() == ".npy":
        raw = read_npy_rows(path)
    elif suffix.lower() == ".npz":
        raise InputFileError(path, "a .npz file holds a data set: predict reads images, .npy arrays and CSV files "
                                   "(for a data set's accuracy: deepnet evaluate MODEL --dataset npz --data FILE)")
    else:
        raw, labels = read_csv_labelled(path, n_features, label_column)
    if raw.shape[1] != n_features:
        raise InputFileError(path, f"inputs have {raw.shape[1]} values each, the model expects {n_features}")
    if not np.all(np.isfinite(raw)):
        raise InputFileError(path, "inputs contain NaN or infinite values")
    return raw, labels
