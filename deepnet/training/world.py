"""The processes a run trains in: :class:`OneProcess` here, :class:`~.data_parallel.DataParallel`
over a communicator's ranks.  Both answer the same questions (which batches, which step, how
totals and validation are summed, what the ranks must agree on), so the loop asks without
knowing which it has."""

from __future__ import annotations

from typing import Any

from ..backend import Array
from ..losses import Loss
from .batches import EpochBatches
from .evaluation import evaluate_batches
from .steps import PlainStep


class OneProcess:
    """A run in this process alone: nothing to agree on, share or sum."""

    rank, size = 0, 1
    comm = None
    #: whether the run's settings are compared with other processes (read from the device)
    compares_settings = False
    #: whether each step reduces its gradients across processes (a step that cannot be captured)
    reduces_gradients = False
    #: whether the NaN guard may stop this process alone after a step
    checks_each_step = True

    def start(self, net: Any) -> None:
        pass

    def finish(self, net: Any) -> None:
        pass

    def record(self, settings: dict[str, Any]) -> dict[str, Any]:
        return settings

    def agree_run(self, settings: dict[str, Any], trainer: Any) -> None:
        pass

    def agree_position(self, where: dict[str, Any]) -> None:
        pass

    def share_weights(self, net: Any, resumed: bool) -> None:
        pass

    def batches(self, net: Any, X: Any, T: Any, batch_size: int, chunk_rows: int | None, rows: Any) -> EpochBatches:
        return EpochBatches(net.ops, X, T, batch_size, chunk_rows, rows)

    def step(self, net: Any, batches: Any, accept: Any) -> PlainStep:
        return PlainStep(net, batches, accept)

    def sum_totals(self, totals: dict[str, Any]) -> dict[str, Any]:
        return totals

    def stop_callbacks(self, signals: Any, heed: Any) -> list[Any]:
        return []

    def local_signal(self, signals: Any) -> str | None:
        """A signal this process heeds after its own step (a data-parallel run agrees instead)."""
        return signals.received

    def end_epoch(self, net: Any) -> None:
        pass

    def evaluate(self, net: Any, loss: Loss, X: Array, T: Array, labels: Array, batch_size: int, dtype: Any,
                 rows: Array = None) -> dict[str, float]:
        return evaluate_batches(net, loss, X, T, labels, batch_size, dtype, rows)

    def check_same_weights(self, net: Any) -> None:
        pass

    def left_alone(self, err: BaseException) -> bool:
        """Whether an error on this process leaves other processes waiting (then the job ends)."""
        return False
