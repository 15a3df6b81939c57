"""Elementwise activations g and their derivatives, applied to the incoming error."""

from __future__ import annotations

from typing import Any

from ..backend import Array
from .base import Layer


class Activation(Layer):
    """An activation z = g(x) without parameters.

    Subclasses define ``_forward(x)`` and ``_backward_(dy, x, y)`` which returns
    dy ∘ g'(x), overwriting ``dy``.  ``keep`` says what backward needs ("y" or "x").
    """

    keep = "y"

    def _forward(self, x: Array) -> Array:
        raise NotImplementedError

    def _backward_(self, dy: Array, x: Array | None, y: Array | None) -> Array:
        raise NotImplementedError

    def forward(self, x: Array, training: bool = False) -> Array:
        if x.ndim != 2:
            self._check_input(x, None)
        y = self._forward(x)
        if training:
            self._cache = y if self.keep == "y" else x
        else:
            self._cache = None
        return y

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        kept = self._need_cache()
        if not need_input_grad:
            return None
        if self.keep == "y":
            return self._backward_(grad_output, None, kept)
        return self._backward_(grad_output, kept, None)


class Identity(Activation):
    """g(x) = x."""

    def _forward(self, x: Array) -> Array:
        return self.ops.copy(x)

    def _backward_(self, dy: Array, x: Array | None, y: Array | None) -> Array:
        return dy


class Sigmoid(Activation):
    """g(x) = 1/(1+e^{−x}); backward: e ∘ z ∘ (1 − z)."""

    def _forward(self, x: Array) -> Array:
        return self.ops.sigmoid(x)

    def _backward_(self, dy: Array, x: Array | None, y: Array | None) -> Array:
        return self.ops.sigmoid_backward_(dy, y)


class Tanh(Activation):
    """g(x) = tanh x; backward: dy ∘ (1 − z²)."""

    def _forward(self, x: Array) -> Array:
        return self.ops.tanh(x)

    def _backward_(self, dy: Array, x: Array | None, y: Array | None) -> Array:
        return self.ops.tanh_backward_(dy, y)


class ReLU(Activation):
    """g(x) = max(x, 0); backward: dy ∘ [z > 0]."""

    def _forward(self, x: Array) -> Array:
        return self.ops.relu(x)

    def _backward_(self, dy: Array, x: Array | None, y: Array | None) -> Array:
        return self.ops.relu_backward_(dy, y)


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

    def _backward_(self, dy: Array, x: Array | None, y: Array | None) -> Array:
        return self.ops.leaky_relu_backward_(dy, x, self.slope)


class Softmax(Activation):
    """g(x)_i = e^{x_i} / Σ_j e^{x_j} per row (stable: the row maximum is subtracted).

    For classification prefer logits with :class:`~deepnet.losses.SoftmaxCrossEntropy`,
    which fuses both and is cheaper and more accurate.
    """

    def _forward(self, x: Array) -> Array:
        return self.ops.softmax(x)

    def _backward_(self, dy: Array, x: Array | None, y: Array | None) -> Array:
        return self.ops.softmax_backward_(dy, y)
