"""Checks of user data on the host, once per call (never per training step)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError
from .core import to_host


def as_host_inputs(X: Any, shape: int | tuple[int, ...], where: str) -> np.ndarray:
    """Validate a batch of inputs: (n, *shape) (``shape`` an int: rows of that width), numeric,
    finite; one sample of ``shape`` becomes a batch of one (a view, never a copy)."""
    shape = (int(shape),) if isinstance(shape, int) else tuple(int(d) for d in shape)
    n_in = shape[0] if len(shape) == 1 else None
    arr = to_host(X)
    if tuple(arr.shape) == shape and shape != (0,):
        arr = arr.reshape(1, *shape)
    if n_in is not None:
        if arr.ndim != 2:
            raise ShapeError(f"{where}: inputs X must be 2-D (n, {n_in}), got shape {arr.shape}")
        if arr.shape[1] != n_in:
            raise ShapeError(f"{where}: the first layer expects inputs of width {n_in}, got X of shape {arr.shape}")
    elif tuple(arr.shape[1:]) != shape:
        raise ShapeError(f"{where}: inputs X must have shape (n, {', '.join(map(str, shape))}), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ShapeError(f"{where}: X has no rows")
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{where}: X must be numeric, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not all_finite_rows(arr):
        bad = ~np.isfinite(arr)                 # only on failure: a mask as large as X
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{where}: X contains {int(bad.sum())} non-finite value(s) (NaN or inf); "
            f"the first is X[{', '.join(map(str, at))}] = {arr[at]}")
    return arr


def all_finite_rows(arr: np.ndarray, block_bytes: int = 1 << 22) -> bool:
    """Whether every value of a float array (n, ...) is finite, checked in blocks of samples so
    the temporary mask stays small (a mask of all of X would be a quarter of a float32 X)."""
    per_row = int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.itemsize
    rows = max(1, block_bytes // max(1, per_row))
    return all(bool(np.isfinite(arr[i:i + rows]).all()) for i in range(0, arr.shape[0], rows))


def as_host_targets(y: Any, n: int, k: int, where: str, allow_labels: bool = True) -> np.ndarray:
    """Validate targets: integer labels in 0..k−1 of length n, or an (n, k) float array."""
    arr = to_host(y)
    if arr.ndim == 2 and arr.shape[1] == 1 and k != 1 and arr.dtype.kind in "iuf":
        arr = arr[:, 0]             # a column of labels (whole-number floats checked below, like ints)
    if arr.ndim == 1:
        if not allow_labels:
            raise ShapeError(f"{where}: this loss needs targets of shape ({n}, {k}), got labels of shape {arr.shape}")
        if arr.shape[0] != n:
            raise ShapeError(f"{where}: X has {n} rows but y has {arr.shape[0]} labels")
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                bad = int(np.argmax(~np.isfinite(arr) | (arr != np.round(arr))))
                raise ValueError(f"{where}: labels y must be whole numbers (class 0, 1, 2, ...), got dtype "
                                 f"{arr.dtype} with y[{bad}] = {arr[bad].item()!r}")
        elif arr.dtype.kind not in "iu":
            raise TypeError(f"{where}: labels y must be integers, got dtype {arr.dtype}")
        if arr.size:
            lo, hi = arr.min(), arr.max()
            if lo < 0 or hi >= k:
                raise ValueError(f"{where}: labels must lie in 0..{k - 1} for {k} outputs, got values in {int(lo)}..{int(hi)}")
        return arr.astype(np.int64, copy=False)
    if arr.ndim == 2:
        if arr.shape != (n, k):
            raise ShapeError(f"{where}: targets y must have shape ({n}, {k}), got {arr.shape}")
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"{where}: targets y must be numeric, got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{where}: targets y contain NaN or inf")
        return arr
    raise ShapeError(f"{where}: y must be labels (n,) or targets (n, {k}), got shape {arr.shape}")


def as_host_rows(rows: Any, n: int, where: str) -> np.ndarray:
    """Validate row indices into an array of n rows: 1-D integers in 0..n−1, at least one."""
    arr = to_host(rows)
    if arr.ndim != 1 or arr.dtype.kind not in "iu" or arr.size == 0:
        raise ShapeError(f"{where}: rows must be a non-empty 1-D array of integer row indices, "
                         f"got shape {arr.shape} and dtype {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n:
        raise ShapeError(f"{where}: row indices must lie in 0..{n - 1}, got values in {lo}..{hi}")
    return arr.astype(np.int64, copy=False)


def host_concat(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate host result blocks along the batch axis."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
