"""Elementwise activations g and their derivatives, applied to the incoming error."""

from __future__ import annotations

from typing import Any

from ..backend import Array
from ..errors import ShapeError
from .base import Layer


class Activation(Layer):
    """An activation z = g(x) without parameters.

    Built-in activations name their backend kernels in ``op`` and ``op_backward``
    (``ops.<op>(x)`` and ``ops.<op_backward>(dy, kept)``), bound once so a step costs
    one call.  A user-defined activation instead overrides ``_forward(x)`` and
    ``_backward_(dy, kept)``, returning dy ∘ g'(x) (it may overwrite dy).  ``keep``
    says what backward needs: the output ``"y"`` or the input ``"x"``.
    """

    keep = "y"
    backward_free = True
    op: str | None = None
    op_backward: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self._on_moved()

    def _on_moved(self) -> None:
        if self.op is not None:
            self._forward = getattr(self.ops, self.op)  # type: ignore[method-assign]
            self._backward_ = getattr(self.ops, self.op_backward)  # type: ignore[method-assign]

    def _forward(self, x: Array) -> Array:
        raise NotImplementedError

    def _backward_(self, dy: Array, kept: Array) -> Array:
        raise NotImplementedError

    #: whether the activation works on a batch of any rank (elementwise), not only rows
    any_rank = True

    def forward(self, x: Array, training: bool = False) -> Array:
        if x.ndim != 2:
            self._check_input(x, None, any_rank=self.any_rank)
        y = self._forward(x)
        if training:
            self._cache = y if self.keep == "y" else x
        else:
            self._cache = None
        return y

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        kept = self._cache
        if kept is None:
            kept = self._need_cache()
        if not need_input_grad:
            return None
        return self._backward_(grad_output, kept)


class Identity(Activation):
    """g(x) = x."""

    compiled_kind = "identity"

    def _forward(self, x: Array) -> Array:
        return self.ops.copy(x)

    def _backward_(self, dy: Array, kept: Array) -> Array:
        return dy


class Sigmoid(Activation):
    """g(x) = 1/(1+e^{−x}); backward: e ∘ z ∘ (1 − z)."""

    op, op_backward = "sigmoid", "sigmoid_backward_"
    compiled_kind = "sigmoid"


class Tanh(Activation):
    """g(x) = tanh x; backward: dy ∘ (1 − z²)."""

    op, op_backward = "tanh", "tanh_backward_"
    compiled_kind = "tanh"


class ReLU(Activation):
    """g(x) = max(x, 0); backward: dy ∘ [z > 0]."""

    op, op_backward = "relu", "relu_backward_"
    compiled_kind = "relu"


class Softmax(Activation):
    """g(x)_i = e^{x_i} / Σ_j e^{x_j} per row (stable: the row maximum is subtracted).

    For classification prefer logits with :class:`~deepnet.losses.SoftmaxCrossEntropy`,
    which fuses both and is cheaper and more accurate.
    """

    op, op_backward = "softmax", "softmax_backward_"
    any_rank = False           # over the features of a row

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 1:
            raise ShapeError(f"Softmax works on rows (n, k), got per-sample shape {tuple(in_shape)}: "
                             "put Flatten before it")
        return tuple(in_shape)


class LeakyReLU(Activation):
    """g(x) = x for x > 0, αx otherwise."""

    keep = "x"

    def __init__(self, slope: float = 0.01) -> None:
        super().__init__()
        self.slope = float(slope)

    def get_config(self) -> dict[str, Any]:
        return {"slope": self.slope}

    def _forward(self, x: Array) -> Array:
        return self.ops.leaky_relu(x, self.slope)

    def _backward_(self, dy: Array, kept: Array) -> Array:
        return self.ops.leaky_relu_backward_(dy, kept, self.slope)


class GELU(Activation):
    """g(x) = ½x(1 + tanh u), u = √(2/π)(x + 0.044715x³): the tanh form of GELU (PyTorch's
    ``approximate="tanh"``; the Array API has no erf), computed as x·σ(2u), which equals it
    and keeps float32's relative accuracy for x < 0 (1 + tanh u cancels there).
    g'(x) = s + 2x s(1 − s) u' with s = σ(2u), u' = √(2/π)(1 + 3·0.044715x²)."""

    keep = "x"
    _c = 0.7978845608028654  # √(2/π)

    def _forward(self, x: Array) -> Array:
        s = self.ops.sigmoid((x + x * x * x * 0.044715) * (2 * self._c))
        s *= x
        return s

    def _backward_(self, dy: Array, kept: Array) -> Array:
        x = kept
        s = self.ops.sigmoid((x + x * x * x * 0.044715) * (2 * self._c))
        du = (1.0 + x * x * (3 * 0.044715)) * (2 * self._c)
        dy *= s + x * s * (1.0 - s) * du
        return dy


class ELU(Activation):
    """g(x) = x for x > 0, α(eˣ − 1) otherwise; g'(x) = 1 or z + α."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def get_config(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def _forward(self, x: Array) -> Array:
        xp = self.ops.xp
        return xp.where(x > 0, x, xp.expm1(xp.minimum(x, xp.zeros_like(x))) * self.alpha)

    def _backward_(self, dy: Array, kept: Array) -> Array:
        xp = self.ops.xp
        y = kept
        dy *= xp.where(y > 0, xp.ones_like(y), y + self.alpha)
        return dy


class Softplus(Activation):
    """g(x) = log(1 + eˣ), computed as logaddexp(0, x); g'(x) = sigmoid(x)."""

    keep = "x"

    def _forward(self, x: Array) -> Array:
        return self.ops.xp.logaddexp(self.ops.xp.zeros_like(x), x)

    def _backward_(self, dy: Array, kept: Array) -> Array:
        dy *= self.ops.sigmoid(kept)
        return dy
