"""CSV and .npz loaders, with clear errors for malformed files."""

from __future__ import annotations

import csv
import io
import os
import zipfile

import numpy as np

from .errors import DatasetError
from .idx import read_bytes  # transparently handles .gz

#: largest CSV text (after decompression) read: parsing peaks near 17x the text size (measured
#: with tracemalloc on an MNIST-like CSV), so a bigger file would not fit in memory anyway, and
#: a small .gz that expands without end is stopped here (convert big data to .npz instead).
MAX_TEXT_BYTES = 1 << 30


def read_text(path: str | os.PathLike[str]) -> str:
    """The file's text (UTF-8, a BOM dropped; ``.gz`` decompressed), at most :data:`MAX_TEXT_BYTES`."""
    try:
        return read_bytes(path, limit=MAX_TEXT_BYTES).decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DatasetError(path, f"not a UTF-8 text file ({err.reason} at byte {err.start})") from None


def csv_numbers(path: str | os.PathLike[str] | None, body: list[list[str]], lines: list[int],
                error: type[DatasetError] = DatasetError) -> np.ndarray:
    """CSV rows as float64, or ``error`` naming the file line and column of the first non-number."""
    try:
        return np.array(body, dtype=np.float64)
    except ValueError:
        for i, r in enumerate(body):
            for j, c in enumerate(r):
                try:
                    float(c)
                except ValueError:
                    raise error(path, f"line {lines[i]}, column {j + 1}: {c!r} is not a number") from None
        raise


def parse_csv(text: str, path: str | os.PathLike[str] | None = None, label_column: int | str = 0,
              n_features: int | None = None, header: bool | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Parse CSV text into (features float32 (n, d), labels int64 (n,), feature names).

    ``label_column`` is a column index or a header name.  ``header=None`` detects a
    header row (a first row that is not all numbers).  Every row must have the same
    width (``n_features`` + 1 if given); labels must be whole non-negative numbers.
    """
    reader = csv.reader(io.StringIO(text))
    rows, lines = [], []                    # non-blank rows and the file line each ends on
    for r in reader:
        if r and any(c.strip() for c in r):
            rows.append(r)
            lines.append(reader.line_num)
    if not rows:
        raise DatasetError(path, "empty CSV file")

    def numeric(row: list[str]) -> bool:
        try:
            [float(c) for c in row]
        except ValueError:
            return False
        return True

    if header is None:
        header = not numeric(rows[0])
    names = [c.strip() for c in rows[0]] if header else [f"x{i}" for i in range(len(rows[0]))]
    body = rows[1:] if header else rows
    body_lines = lines[1:] if header else lines
    if not body:
        raise DatasetError(path, "CSV file has a header but no data rows")
    width = len(names)
    if n_features is not None and width != n_features + 1:
        raise DatasetError(path, f"line {lines[0]}: expected {n_features + 1} columns "
                                 f"(a label and {n_features} values), got {width}")
    for i, r in enumerate(body):
        if len(r) != width:
            raise DatasetError(path, f"line {body_lines[i]}: expected {width} columns, got {len(r)}")
    if isinstance(label_column, str):
        if label_column not in names:
            raise DatasetError(path, f"no column named {label_column!r}; columns are {names[:10]}"
                                     + ("..." if len(names) > 10 else ""))
        label_column = names.index(label_column)
    if not -width <= label_column < width:
        raise DatasetError(path, f"label column {label_column} is outside the {width} columns")
    label_column %= width
    data = csv_numbers(path, body, body_lines)
    labels = data[:, label_column]
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(labels) | (labels != np.round(labels)) | (labels < 0) | (labels > 2**31)
    if bad.any():
        i = int(np.argmax(bad))
        raise DatasetError(path, f"line {body_lines[i]}: label {body[i][label_column]!r} is not a class "
                                 "number 0, 1, 2, ...")
    X = np.delete(data, label_column, axis=1).astype(np.float32)
    if not np.all(np.isfinite(X)):
        i = int(np.argmax(~np.isfinite(X).all(axis=1)))
        raise DatasetError(path, f"line {body_lines[i]}: NaN or infinite value")
    del names[label_column]
    return X, labels.astype(np.int64), names


def load_seed_csv(path: str | os.PathLike[str], n_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The course notebook's CSV: label first, then 784 pixel values 0..255, no header.

    Returns raw pixels as float32 (n, 784) and labels int64.
    """
    X, y, _ = parse_csv(read_text(path), path, label_column=0, n_features=784, header=False)
    if y.size and y.max() >= n_classes:
        i = int(np.argmax(y >= n_classes))
        raise DatasetError(path, f"line {i + 1}: label {y[i]} is outside 0..{n_classes - 1}")
    if X.size and (X.min() < 0 or X.max() > 255):
        raise DatasetError(path, "pixel values must lie in 0..255")
    return X, y


def load_csv(path: str | os.PathLike[str], label_column: int | str = "label",
             header: bool | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A user's CSV with a label column (by header name or index): (X, y, feature names)."""
    text = read_text(path)
    if isinstance(label_column, str) and label_column.lstrip("-").isdigit():
        label_column = int(label_column)
    if isinstance(label_column, str) and header is False:
        raise DatasetError(path, "a label column given by name needs a header row")
    return parse_csv(text, path, label_column=label_column, header=header)


def load_npz(path: str | os.PathLike[str], keys: tuple[str, ...] = ("x_train", "y_train", "x_test", "y_test")
             ) -> dict[str, np.ndarray]:
    """Named arrays from a ``.npz`` file, loaded with pickling disabled."""
    try:
        with np.load(path, allow_pickle=False) as data:
            found = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise DatasetError(path, f"not a readable .npz file ({err})") from None
    missing = [k for k in keys if k not in found]
    if missing:
        raise DatasetError(path, f"missing arrays {missing}; the file holds {sorted(found)}")
    return found
