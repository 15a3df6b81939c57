"""The settings that shape a run, as plain data, for checkpoints to record and compare."""

from __future__ import annotations

import hashlib
from typing import Any

from ..backend import Array, to_device, to_host
from ..classnames import setting_name


def rows_of(ops: Any, A: Any, rows: Any) -> Any:
    """``A[rows]`` (host indices), gathered where A lives: only those rows are copied."""
    return ops.take_rows(A, to_device(rows, ops, dtype="int64")) if ops.owns(A) else to_host(A)[rows]


def run_settings(net: Any, X: Array, targets: Array, labels: Array, epochs: int, batch_size: int,
                 shuffle: bool, rows: Any = None) -> dict[str, Any]:
    """Batch size, shuffling, dtype, epochs, the loss, the optimizer as configured (before any
    schedule changed it), and a fingerprint of the data: shape, labels and 16 evenly spaced
    rows of inputs and targets (one small read; a different split, scaling or data set
    changes it).  ``rows``: the run trains on these rows of X (host indices; the fingerprint is
    that of X[rows], so the same data split by copies or by indices is the same run)."""
    n = int(X.shape[0]) if rows is None else len(rows)
    every = slice(None, None, max(1, n // 16))
    shape = tuple(X.shape) if rows is None else (n, *X.shape[1:])
    sample = X[every, ...] if rows is None else rows_of(net.ops, X, rows[every])
    h = hashlib.sha256(f"{shape}".encode())
    for part in (labels, sample, targets[every, ...] if targets.ndim == 2 else None):
        if part is not None:
            h.update(to_host(part).tobytes())
    out: dict[str, Any] = {"epochs": epochs, "batch_size": batch_size, "shuffle": bool(shuffle),
                           "dtype": net.dtype_name, "training samples": n, "training data": h.hexdigest()[:16],
                           "loss": setting_name(type(net.loss)), "optimizer": setting_name(type(net.optimizer))}
    for prefix, cfg in (("loss", net.loss.get_config()), ("optimizer", net.optimizer.initial_config())):
        out.update({f"{prefix}.{k}": v for k, v in cfg.items()})
    return out
