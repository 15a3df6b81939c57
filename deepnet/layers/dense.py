"""Dense (fully connected) layer: y = x·Aᵀ + b, weights shaped (n_out, n_in) like A and B."""

from __future__ import annotations

from typing import Any

from ..backend import Array
from ..errors import ShapeError
from ..initializers import get_initializer
from .base import Layer


class Dense(Layer):
    """Affine map of a batch: ``y = x Wᵀ (+ b)``.

    ``weight`` is W with shape (n_out, n_in): the derivation's A (or B) acting on the
    columns of xᵀ.  Backward, for the error δ = ∂f/∂y arriving from above:

    * ∂f/∂W += δᵀ x   (the derivation's 2(e∘z∘(1−z))·z̃ᵀ when δ is that product)
    * ∂f/∂b += Σ_rows δ
    * returns ẽ = δ W  (the error for the layer below: Aᵀ·δ in column form)
    """

    any_layout = True          # W is read only through ops.linear / ops.gemm
    compiled_kind = "dense"

    def __init__(self, n_in: int, n_out: int, bias: bool = True, init: str = "glorot") -> None:
        super().__init__()
        for label, v in (("n_in", n_in), ("n_out", n_out)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Dense: {label} must be a positive integer, got {v!r}")
        self.n_in = n_in
        self.n_out = n_out
        self.bias = bool(bias)
        self.init = init
        get_initializer(init)  # validate early

    def initialize(self, rng: Any) -> None:
        w = get_initializer(self.init)(rng, (self.n_out, self.n_in))
        self.add_param("weight", w)
        if self.bias:
            self.add_param("bias", w[:, 0] * 0.0)

    def get_config(self) -> dict[str, Any]:
        return {"n_in": self.n_in, "n_out": self.n_out, "bias": self.bias, "init": self.init}

    def output_width(self, n_in: int) -> int:
        return self.n_out

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if tuple(in_shape) != (self.n_in,):
            hint = ": put Flatten before it" if len(in_shape) > 1 else ""
            raise ShapeError(f"Dense expects inputs of width {self.n_in}, got per-sample shape {tuple(in_shape)}{hint}")
        return (self.n_out,)

    def forward(self, x: Array, training: bool = False) -> Array:
        if x.ndim != 2 or x.shape[1] != self.n_in:
            self._check_input(x, self.n_in)
        y = self.ops.linear(x, self._params["weight"].data)
        if self.bias:
            self.ops.add_bias_(y, self._params["bias"].data)
        self._cache = x if training else None
        return y

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        x = self._cache
        if x is None:
            x = self._need_cache()
        ops = self.ops
        params = self._params
        gw, acc = params["weight"].grad_target()
        ops.gemm(grad_output, x, trans_a=True, out=gw, accumulate=acc)     # ∂f/∂W += δᵀ x
        if self.bias:
            gb, acc = params["bias"].grad_target()
            ops.sum_rows(grad_output, out=gb, accumulate=acc)               # ∂f/∂b += Σ_rows δ
        if not need_input_grad:
            return None
        return ops.gemm(grad_output, params["weight"].data)                 # ẽ = δ W
