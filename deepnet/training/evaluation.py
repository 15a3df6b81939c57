"""Mean loss and accuracy of a model over data on its backend, in evaluation mode."""

from __future__ import annotations

import math
from typing import Any

from ..backend import Array
from ..losses import Loss


def evaluate_batches(model: Any, loss: Loss | None, X: Array, T: Array, labels: Array, batch_size: int,
                     dtype: Any, rows: Array = None) -> dict[str, float]:
    """{"loss", "accuracy"} over (X, T) in slices of ``batch_size`` rows; one device read.
    ``rows``: evaluate these rows of X (device indices; T and labels are theirs)."""
    ops = model.ops
    loss_sum = ops.zeros((), dtype)
    correct = ops.zeros((), ops.int64)
    n = int(X.shape[0]) if rows is None else int(rows.shape[0])
    for s in range(0, n, batch_size):
        e = min(s + batch_size, n)
        z = model.forward(X[s:e, ...] if rows is None else ops.take_rows(X, rows[s:e]), False)
        if loss is not None:
            f, _ = loss.forward_backward(z, T[s:e, ...])
            loss_sum += f if loss.reduction == "sum" else f * float(e - s)
        correct += ops.count_equal(ops.argmax_rows(z), labels[s:e, ...])
    loss_total, n_correct = ops.read_scalars([loss_sum, correct])
    return {"accuracy": n_correct / n, "loss": loss_total / n if loss is not None else math.nan}
