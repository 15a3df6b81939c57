"""The model as callbacks and the modules below the network see it: small protocols.

:class:`~deepnet.Network` satisfies :class:`TrainedModel`; callbacks, checkpoints and model
files type against it, so they need not import the network (which imports them).  It sits
below the losses and optimizers too, so it names the parts of them it uses as protocols of
its own (:class:`TrainedLoss`, :class:`TrainedOptimizer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .backend import Ops
from .layers.base import Layer, Parameter


class TrainedOptimizer(Protocol):
    """The optimizer of a model, as callbacks use it (learning-rate schedules, the NaN guard)."""

    #: the learning rate of the next update (a schedule or a guard may set it)
    lr: float

    @property
    def name(self) -> str: ...

    def get_config(self) -> dict[str, Any]: ...


class TrainedLoss(Protocol):
    """The loss of a model, as the modules below the network use it."""

    #: ``"mean"`` or ``"sum"`` over the batch
    reduction: str
    #: whether a CUDA graph may capture the step with this loss
    capturable: bool

    @property
    def name(self) -> str: ...

    def get_config(self) -> dict[str, Any]: ...


class TrainedModel(Protocol):
    """What a callback's ``net`` (and a checkpoint's, a model file's) offers: the layers and
    their weights, the backend, the loss and optimizer, and the run's stop flags."""

    layers: Sequence[Layer]
    ops: Ops
    #: the dtype of the parameters by name (``"float32"``)
    dtype_name: str
    #: set by a callback to end ``fit`` after this epoch (``stop_reason`` says why)
    stop_training: bool
    stop_reason: str | None
    #: optimizer steps taken so far
    step_count: int
    #: the per-sample input shape (None: not known yet) and where it came from
    #: (``"layers"``, ``"input_shape="``, ``"the first data"``)
    input_shape: tuple[int, ...] | None
    input_shape_source: str
    #: what the run or a loaded file noted about the model ({} when nothing)
    metadata: dict[str, Any]

    @property
    def loss(self) -> TrainedLoss | None: ...

    @property
    def optimizer(self) -> TrainedOptimizer | None: ...

    @property
    def lowest_trained(self) -> int:
        """Index of the lowest layer a backward pass reaches."""
        ...

    def inputs_shape(self, shape: Sequence[int], where: str) -> tuple[int, ...]:
        """The per-sample input shape for data of ``shape`` (n, ...)."""
        ...

    def parameters(self) -> dict[str, Parameter]: ...

    def get_weights(self) -> dict[str, Any]:
        """Host copies of every parameter, by name."""
        ...

    def set_weights(self, weights: dict[str, Any]) -> None:
        """Load host arrays by name (shapes must match)."""
        ...

    def zero_grad(self) -> None: ...

    def clear_cache(self) -> None: ...
