"""Classification metrics computed on the device and read back once.

All functions take device arrays (any backend) and return device arrays; call
:func:`deepnet.to_host` on the result once.
"""

from __future__ import annotations

from .backend import Array, Ops


def accuracy(ops: Ops, scores: Array, labels: Array) -> Array:
    """Fraction of rows whose largest score is the label (0-d device array)."""
    return ops.xp.astype(ops.count_equal(ops.argmax_rows(scores), labels), ops.float64) / float(labels.shape[0])


def top_k_accuracy(ops: Ops, scores: Array, labels: Array, k: int = 5) -> Array:
    """Fraction of rows whose label is among the k largest scores.

    A label is in the top k when fewer than k scores are strictly larger than its own.
    """
    xp = ops.xp
    own = xp.take_along_axis(scores, xp.reshape(labels, (-1, 1)), axis=1)
    larger = xp.sum(xp.astype(scores > own, ops.int64), axis=1)
    return xp.astype(xp.sum(xp.astype(larger < k, ops.int64)), ops.float64) / float(labels.shape[0])


def confusion_matrix(ops: Ops, labels: Array, predicted: Array, n_classes: int) -> Array:
    """C[i, j] = number of samples of class i predicted as j (a one-hot product, no scatter).

    Counts are exact up to 2²⁴ per cell (float32 accumulation).
    """
    t = ops.one_hot(labels, n_classes)
    p = ops.one_hot(predicted, n_classes)
    return ops.xp.astype(ops.gemm(t, p, trans_a=True), ops.int64)


def per_class_accuracy(ops: Ops, confusion: Array) -> Array:
    """Recall of each class from a confusion matrix (NaN for a class with no samples)."""
    xp = ops.xp
    diag = xp.linalg.diagonal(confusion) if hasattr(xp, "linalg") and hasattr(xp.linalg, "diagonal") else xp.diagonal(confusion)
    total = xp.astype(xp.sum(confusion, axis=1), ops.float64)
    ratio = xp.astype(diag, ops.float64) / xp.maximum(total, xp.ones_like(total))
    return xp.where(total > 0, ratio, xp.full_like(ratio, float("nan")))
