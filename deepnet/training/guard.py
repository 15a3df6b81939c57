"""The NaN guard: a non-finite loss or weight stops the run (or, on request, skips the step)."""

from __future__ import annotations

import math
import warnings
from typing import Any

from ..backend import Array, to_host
from ..callbacks import Callback
from ..errors import NonFiniteError
from .position import RunPosition


class NonFiniteGuard(Callback):
    """``check_finite`` of ``fit``: ``"raise"`` stops at the first non-finite loss before its
    update (on backends where a per-step read is cheap; elsewhere at the epoch's end, naming
    the batch); ``"skip"`` drops the step and halves the learning rate, with a warning;
    ``"off"`` checks only at the end of each epoch."""

    def __init__(self, policy: str, net: Any, position: RunPosition, checkpointer: Any = None) -> None:
        self.policy, self.net, self.position, self.checkpointer = policy, net, position, checkpointer
        #: whether each step's loss is read and checked before its update
        self.each_step = policy != "off" and net.ops.cheap_sync

    def accept(self, loss: Array) -> bool:
        """Whether a step with this loss may update the weights (a host read of ``loss``)."""
        if math.isfinite(loss):
            return True
        net = self.net
        if self.policy == "skip":
            net.zero_grad()
            net.clear_cache()
            net.optimizer.scale_lr(0.5)
            warnings.warn(f"fit: the loss of epoch {self.position.epoch + 1}, batch {self.position.batch + 1} is NaN "
                          f"or inf: step skipped, learning rate halved to {net.optimizer.lr:g} (check_finite='skip')",
                          RuntimeWarning, stacklevel=2)
            return False
        self.fail(self.position.batch, loss_was_nonfinite=True)
        return False

    def on_epoch_totals(self, net: Any, epoch: int, totals: dict[str, Any]) -> None:
        """At the epoch's end, before validation: a NaN or inf epoch loss or weight stops the run."""
        pos = self.position
        if math.isfinite(totals["loss_sum"]) and totals["weights_finite"]:
            return
        bad = pos.metrics.first_nonfinite_batch(pos.first, pos.done)     # read only on failure
        self.fail(pos.done - 1 if bad is None else bad, late=bad is not None)

    def fail(self, batch: int, loss_was_nonfinite: bool = False, late: bool = False) -> None:
        """Raise :class:`NonFiniteError` naming the step, the first non-finite layer and the last
        good checkpoint.  ``late``: found at the epoch's end, after later updates."""
        net = self.net
        last = self.checkpointer.last_path() if self.checkpointer is not None else None
        where = f"epoch {self.position.epoch + 1}, batch {batch + 1}" + ("" if late else f" (step {net.step_count + 1})")
        what = ("the loss is NaN or inf" if loss_was_nonfinite else
                "the loss of this batch was NaN or inf (found at the epoch's end on this backend: the updates of "
                "the batches after it were applied)" if late else "the weights or the epoch loss became NaN or inf")
        raise NonFiniteError(
            f"training stopped at {where}: {what}; first non-finite layer: {first_nonfinite_layer(net)}; "
            f"last good checkpoint: {last if last else 'none (pass checkpoint= to fit to keep one)'}. "
            f"Lower the learning rate, clip gradients (clip_norm=) or use check_finite='skip'.")


def first_nonfinite_layer(net: Any) -> str:
    """The first layer holding a NaN or inf (parameter, else the arrays kept for backward)."""
    ops = net.ops
    for i, layer in enumerate(net.layers):
        for name, p in layer.parameters().items():
            if not bool(to_host(ops.all_finite(p.data))):
                return f"layer {i} ({layer.name}) parameter {name}"
        cache = layer.cached
        if cache is not None and hasattr(cache, "shape") and not bool(to_host(ops.all_finite(cache))):
            return f"layer {i} ({layer.name}) input or output"
    return "none found in the weights (the loss itself overflowed)"
