"""The settings that shape a run, as plain data, for checkpoints to record and compare."""

from __future__ import annotations

import hashlib
from typing import Any

from ..backend import Array, to_host


def run_settings(net: Any, X: Array, targets: Array, labels: Array, epochs: int, batch_size: int,
                 shuffle: bool) -> dict[str, Any]:
    """Batch size, shuffling, dtype, epochs, the loss, the optimizer as configured (before any
    schedule changed it), and a fingerprint of the data: shape, labels and 16 evenly spaced
    rows of inputs and targets (one small read; a different split, scaling or data set
    changes it)."""
    n = int(X.shape[0])
    rows = slice(None, None, max(1, n // 16))
    h = hashlib.sha256(f"{tuple(X.shape)}".encode())
    for part in (labels, X[rows, ...], targets[rows, ...] if targets.ndim == 2 else None):
        if part is not None:
            h.update(to_host(part).tobytes())
    out: dict[str, Any] = {"epochs": epochs, "batch_size": batch_size, "shuffle": bool(shuffle),
                           "dtype": net.dtype_name, "training samples": n, "training data": h.hexdigest()[:16],
                           "loss": type(net.loss).__name__, "optimizer": type(net.optimizer).__name__}
    for prefix, cfg in (("loss", net.loss.get_config()), ("optimizer", net.optimizer.initial_config())):
        out.update({f"{prefix}.{k}": v for k, v in cfg.items()})
    return out
