"""Loss and accuracy of an epoch, accumulated on the device and read once.

Each step stores its batch loss f and the predicted classes argmax z (one store each, no
read); the epoch's totals are reduced on the device and read in one transfer, together
with whether every weight is still finite.
"""

from __future__ import annotations

from typing import Any

from ..backend import Array, Ops
from ..layers.base import Parameter


class EpochMetrics:
    """Per-batch losses and per-row predictions of one epoch, in the epoch's row order."""

    def __init__(self, ops: Ops, n: int, batch_size: int, dtype: Any, reduction: str) -> None:
        self.ops, self.n, self.batch_size, self.reduction = ops, n, batch_size, reduction
        n_batches = -(-n // batch_size)
        self.batch_losses = ops.zeros((n_batches,), dtype)
        self.preds = ops.zeros((n,), ops.int64)
        self._argmax = ops.argmax_rows

    def record(self, index: int, start: int, stop: int, loss: Array, z: Array) -> None:
        """Store batch ``index``'s loss f and its rows' predicted classes (no host read)."""
        self.batch_losses[index] = loss
        self.preds[start:stop] = self._argmax(z)

    def totals(self, labels: Array, first: int, done: int, carried: dict[str, Any] | None = None,
               params: list[Parameter] | None = None) -> dict[str, Any]:
        """Host totals for batches ``first``..``done``−1: Σ per-sample loss, correct count and
        samples seen (plus ``carried`` ones from a resumed checkpoint); with ``params`` also
        whether every weight is finite.  ``labels`` are the epoch's labels in its row order.
        One device read."""
        ops, xp = self.ops, self.ops.xp
        s, e = first * self.batch_size, min(done * self.batch_size, self.n)
        sums: list[Array] = []
        if e > s:
            per_batch = 1.0 if self.reduction == "sum" else float(self.batch_size)
            weights = ops.full((done - first,), per_batch, self.batch_losses.dtype)
            if e - s < (done - first) * self.batch_size and self.reduction != "sum":
                weights[-1] = float(e - s - (done - first - 1) * self.batch_size)   # the short last batch
            sums = [xp.sum(self.batch_losses[first:done] * weights), self._correct(labels, first, done, s, e)]
        if params:
            ok = ops.all_finite(params[0].data)
            for p in params[1:]:
                ok = xp.logical_and(ok, ops.all_finite(p.data))
            sums.append(ok)
        host = ops.read_scalars(sums)
        loss_sum, correct, seen = (host[0], host[1], e - s) if e > s else (0.0, 0.0, 0)
        if carried is not None:
            loss_sum += carried["loss_sum"]
            correct += carried["correct"]
            seen += carried["seen"]
        totals: dict[str, Any] = {"loss_sum": loss_sum, "correct": correct, "seen": seen}
        if params is not None:
            totals["weights_finite"] = not params or host[-1] == 1.0
        return totals

    def _correct(self, labels: Array, first: int, done: int, s: int, e: int) -> Array:
        """Correct predictions among rows ``s``..``e``−1 (batches ``first``..``done``−1), on the device."""
        return self.ops.count_equal(self.preds[s:e], labels[s:e])

    def first_nonfinite_batch(self, first: int, done: int) -> int | None:
        """The first of batches ``first``..``done``−1 whose loss was NaN or inf (read on failure only)."""
        flags = self.ops.to_host(self.ops.xp.isfinite(self.batch_losses[first:done])).tolist()
        return first + flags.index(False) if False in flags else None


class StepMetrics(EpochMetrics):
    """Per-batch losses and correct counts, written by the step itself on the device at a
    device batch index (a captured step cannot slice with a Python number that changes), so
    the epoch's totals are the same sums as :class:`EpochMetrics` gives."""

    def __init__(self, ops: Ops, n: int, batch_size: int, dtype: Any, reduction: str) -> None:
        self.ops, self.n, self.batch_size, self.reduction = ops, n, batch_size, reduction
        n_batches = -(-n // batch_size)
        self.batch_losses = ops.zeros((n_batches,), dtype)
        self.batch_correct = ops.zeros((n_batches,), ops.int64)
        self._argmax = ops.argmax_rows

    def reset(self) -> None:
        """Zero every batch's figures (a new epoch; the buffers keep their addresses)."""
        self.ops.fill_(self.batch_losses, 0.0)
        self.ops.fill_(self.batch_correct, 0)

    def record_at(self, index: Array, loss: Array, z: Array, labels: Array) -> None:
        """Store the loss f and the correct count of the batch at device ``index`` (shape (1,))."""
        ops = self.ops
        ops.set_at_(self.batch_losses, index, loss)
        ops.set_at_(self.batch_correct, index, ops.count_equal(self._argmax(z), labels))

    def record(self, index: int, start: int, stop: int, loss: Array, z: Array, labels: Array | None = None) -> None:
        """Store batch ``index``'s figures (a step run outside the graph; ``labels``: its rows')."""
        self.batch_losses[index] = loss
        self.batch_correct[index] = self.ops.count_equal(self._argmax(z), labels)

    def _correct(self, labels: Array, first: int, done: int, s: int, e: int) -> Array:
        return self.ops.xp.sum(self.batch_correct[first:done])
