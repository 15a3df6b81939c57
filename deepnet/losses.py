"""Losses: each computes f and ∂f/∂z for the network output z and targets y.

Every loss is the **mean over the batch of a per-sample loss** (``reduction="mean"``),
so batch size 1 is exactly the seed's per-sample f and larger batches average the
per-sample gradients; ``reduction="sum"`` adds them instead.  Values are returned as
0-d device arrays, never read back to the host.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .backend import Array, Ops, backend_of
from .classnames import ClassRegistry, qualified_name
from .layers.base import ShapeError


class Loss:
    """Base class: :meth:`forward_backward` returns ``(f, ∂f/∂z)`` in one pass."""

    #: every loss class by qualified name (``module.QualName``): files name losses through it
    registry: ClassVar[ClassRegistry] = ClassRegistry("loss")
    #: whether integer class labels are accepted as targets
    accepts_labels = True
    #: whether a CUDA graph may capture a training step with this loss (its forward_backward
    #: does the same device work every step, through ``ops`` only); False: always eager
    capturable: ClassVar[bool] = True
    #: what the CPU's compiled step knows this loss as ("squared", "xent"); None: the plain
    #: loop.  Honoured only when declared by the class defining ``forward_backward``
    compiled_kind: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Loss.registry.add(cls)

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in ("mean", "sum"):
            raise ValueError(f"{self.name}: reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction
        self._ops: Ops | None = None

    def bind(self, ops: Ops) -> Loss:
        """Compute on ``ops`` (``Network`` binds its loss to its own backend)."""
        self._ops = ops
        return self

    def ops_for(self, z: Array) -> Ops:
        """The bound backend when it owns ``z``, else the backend that does (never a guess:
        an array no backend owns is an error)."""
        ops = self._ops
        if ops is not None and ops.owns(z):
            return ops
        ops = self._ops = backend_of(z)
        return ops

    @property
    def name(self) -> str:
        return type(self).__name__

    def get_config(self) -> dict[str, Any]:
        return {"reduction": self.reduction}

    def _scale(self, n: int) -> float:
        return 1.0 / n if self.reduction == "mean" else 1.0

    def error_scale(self, n: int, k: int) -> float:
        """The factor c in f = c Σ (per-sample loss) for n rows of k outputs (1/n for the mean)."""
        return self._scale(n)

    def check(self, z: Array, y: Array) -> None:
        """Raise :class:`ShapeError` when targets ``y`` do not fit outputs ``z``."""
        if z.ndim != 2:
            raise ShapeError(f"{self.name} expects outputs of shape (n, k), got {tuple(z.shape)}")
        if y.ndim == 1:
            if not self.accepts_labels:
                raise ShapeError(f"{self.name} expects targets of shape {tuple(z.shape)}, got labels {tuple(y.shape)}")
            if y.shape[0] != z.shape[0]:
                raise ShapeError(f"{self.name}: {z.shape[0]} outputs but {y.shape[0]} labels")
        elif tuple(y.shape) != tuple(z.shape):
            raise ShapeError(f"{self.name} expects targets of shape {tuple(z.shape)}, got {tuple(y.shape)}")

    def forward_backward(self, z: Array, y: Array) -> tuple[Array, Array]:
        """Return the loss f (0-d array) and ∂f/∂z (a new array the caller may overwrite)."""
        raise NotImplementedError

    def targets(self, ops: Ops, z: Array, y: Array) -> Array:
        """The targets compared with outputs ``z`` for ``y`` (rows, or integer labels that a loss
        working on rows turns into rows).  Default: ``y`` as given (the loss takes labels)."""
        return y

    def label_targets(self, ops: Ops, labels: Array, width: int, dtype: Any) -> Array:
        """What ``fit`` trains on for integer ``labels`` of ``width`` outputs, built once per run:
        :meth:`targets` for outputs of that shape, or the labels themselves when the loss does
        not override :meth:`targets`."""
        if type(self).targets is Loss.targets:
            return labels
        return self.targets(ops, ops.zeros((int(labels.shape[0]), int(width)), dtype), labels)

    def __call__(self, z: Array, y: Array) -> Array:
        self.check(z, y)
        return self.forward_backward(z, y)[0]

    def gradient(self, z: Array, y: Array) -> Array:
        self.check(z, y)
        return self.forward_backward(z, y)[1]

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"



class SumOfSquares(Loss):
    """The seed's f = Σ (z − y)² per sample; ∂f/∂z = 2e with e = z − y.

    Integer labels are turned into targets ``off``/``on`` (the seed's 0.01/0.99).
    """

    compiled_kind = "squared"

    def __init__(self, reduction: str = "mean", on: float = 0.99, off: float = 0.01) -> None:
        super().__init__(reduction)
        self.on = float(on)
        self.off = float(off)

    def get_config(self) -> dict[str, Any]:
        return {"reduction": self.reduction, "on": self.on, "off": self.off}

    def targets(self, ops: Ops, z: Array, y: Array) -> Array:
        if y.ndim == 1:
            return ops.one_hot(y, z.shape[1], self.on, self.off, dtype=z.dtype)
        return y

    def forward_backward(self, z: Array, y: Array) -> tuple[Array, Array]:
        ops = self.ops_for(z)
        return ops.squared_error(z, self.targets(ops, z, y), self.error_scale(z.shape[0], z.shape[1]))


class MeanSquaredError(SumOfSquares):
    """f = (1/k) Σ (z − y)² per sample (k outputs); ∂f/∂z = 2e/k."""

    def __init__(self, reduction: str = "mean", on: float = 1.0, off: float = 0.0) -> None:
        super().__init__(reduction, on, off)

    def error_scale(self, n: int, k: int) -> float:
        return self._scale(n) / k


class SoftmaxCrossEntropy(Loss):
    """f = −log softmax(z)_label per sample, from logits z, fused and stable.

    Targets are integer labels (n,) or probability rows (n, k) such as one-hot.
    ∂f/∂z = softmax(z) − y.  The network's last layer should output logits (no Softmax).
    """

    compiled_kind = "xent"

    def forward_backward(self, z: Array, y: Array) -> tuple[Array, Array]:
        return self.ops_for(z).softmax_cross_entropy(z, y, self.error_scale(z.shape[0], z.shape[1]))


LOSSES: dict[str, type[Loss]] = {
    "sse": SumOfSquares,
    "sum_of_squares": SumOfSquares,
    "mse": MeanSquaredError,
    "xent": SoftmaxCrossEntropy,
    "cross_entropy": SoftmaxCrossEntropy,
    "softmax_cross_entropy": SoftmaxCrossEntropy,
}


def get_loss(spec: str | Loss) -> Loss:
    """A loss from an alias (``"xent"``), a class name or a loss itself; a class name that
    several classes share (a built-in's and a program's own, or two of the program's) is an
    error naming them."""
    if isinstance(spec, Loss):
        return spec
    cls = LOSSES.get(spec)
    if cls is None:
        builtin, users = Loss.registry.builtin(spec), Loss.registry.user_classes(spec)
        names = ([qualified_name(builtin)] if builtin is not None else []) + users
        if not names:
            raise ValueError(f"unknown loss {spec!r}: expected one of {sorted(LOSSES)}")
        if len(names) > 1:
            raise ValueError(f"loss {spec!r} is ambiguous: it names {' and '.join(names)}; pass the loss "
                             f"itself (loss={spec}()) to choose")
        cls = builtin if builtin is not None else Loss.registry[users[0]]
    return cls()
