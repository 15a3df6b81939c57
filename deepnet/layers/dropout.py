"""Inverted dropout."""

from __future__ import annotations

from typing import Any

from ..backend import Array
from .base import Layer
from .draws import RandomDraws


class Dropout(RandomDraws, Layer):
    """Zero each input with probability p during training and scale the rest by 1/(1−p).

    y = x ∘ m with m_i = [u_i ≥ p]/(1−p), u uniform, so E[y] = x and evaluation is the
    identity.  Backward: ∂f/∂x = δ ∘ m with the same mask.  The mask comes from the
    network's device generator (seeded from the run's seed); a layer used alone makes
    its own from ``seed``.
    """

    compiled_kind = "dropout"
    step_scratch = ("_mask",)      # a new mask each step, read only by that step's backward

    def __init__(self, p: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p!r}")
        self.p = float(p)
        self._start_draws(seed)
        self._mask: Array | None = None

    def get_config(self) -> dict[str, Any]:
        return {"p": self.p}

    def _forget_draw(self) -> None:
        self._mask = None

    def forward(self, x: Array, training: bool = False) -> Array:
        if x.ndim != 2:
            self._check_input(x, None, any_rank=True)
        if not training:
            self._cache = None
            return self.ops.copy(x)
        if self.p == 0.0:
            self._mask = 1.0          # keeps nothing: y = x
        elif not (self._frozen and self._mask is not None and self._mask.shape == x.shape):
            u = self._uniform(tuple(x.shape), x.dtype)
            self._mask = self.ops.xp.astype(u >= self.p, x.dtype) * (1.0 / (1.0 - self.p))
        self._cache = self._mask
        return x * self._mask

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        mask = self._cache
        if mask is None:
            mask = self._need_cache()
        if not need_input_grad:
            return None
        grad_output *= mask
        return grad_output
