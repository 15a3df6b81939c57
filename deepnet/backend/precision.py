"""Precision of the matrix products: float32, TF32 or bfloat16 operands, float32 results.

Mixed precision as the products' business: parameters stay float32 (the master weights),
every product of a step (x·Wᵀ, δᵀx, δW) reads its operands rounded to the chosen format and
accumulates in float32, everything else (activations' derivatives, the loss, the update) is
float32.  bfloat16 keeps float32's 8 exponent bits, so gradients do not underflow as in
float16 and no loss scaling is needed (float16 is not offered).  On a GPU the products run
on tensor cores through cuBLAS (``cupy_products``); on the CPU :class:`RoundedProducts`
computes the same function (operands rounded, then a float32 product), so a bf16 run can be
tested, and its accuracy checked, without a GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any

#: the products' precisions ``fit(precision=...)`` and ``deepnet train --precision`` take
PRECISIONS = ("float32", "tf32", "bf16")
#: mantissa bits kept by each format (float32 keeps 23)
MANTISSA_BITS = {"tf32": 10, "bf16": 7}


def check_precision(precision: Any) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    return precision


def round_mantissa(a: np.ndarray, bits: int) -> np.ndarray:
    """A float32 copy of ``a`` rounded to ``bits`` mantissa bits, to nearest, ties to even
    (what converting to bfloat16, ``bits`` = 7, does; TF32 keeps 10).  Infinities and NaNs
    stay what they are; a value that rounds past the largest finite one becomes ±inf, as in
    the narrow format."""
    drop = 23 - bits
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    half = np.uint32((1 << (drop - 1)) - 1)
    out = u + (half + ((u >> np.uint32(drop)) & np.uint32(1)))
    out &= np.uint32((0xFFFFFFFF << drop) & 0xFFFFFFFF)
    special = (u & np.uint32(0x7F800000)) == np.uint32(0x7F800000)     # inf / NaN: unchanged
    out = np.where(special, u, out)
    return out.view(np.float32)


class RoundedProducts:
    """A NumPy products provider whose operands are rounded to ``precision`` first
    (float32 accumulation): the CPU's version of TF32 / bfloat16 products."""

    def __init__(self, inner: Any, precision: str) -> None:
        self.inner = inner
        self.precision = check_precision(precision)
        self.bits = MANTISSA_BITS[precision]
        self.name = inner.name

    def with_precision(self, precision: str) -> Any:
        return self.inner.with_precision(precision)

    def _r(self, a: Array) -> Array:
        if a.dtype != np.float32:
            raise TypeError(f"precision={self.precision!r} products take float32 operands, got {a.dtype}")
        r = round_mantissa(a, self.bits)
        return r if a.flags.c_contiguous or not a.flags.f_contiguous else np.asfortranarray(r)

    def gemm(self, a: Array, b: Array, out: Array | None, accumulate: bool) -> Array:
        return self.inner.gemm(self._r(a), self._r(b), out, accumulate)

    def linear(self, x: Array, w: Array) -> Array:
        return self.inner.gemm(self._r(x), self._r(w.T), None, False)

    def stacked_gemm(self, a: Array, b: Array, out: Array, accumulate: bool) -> Array:
        return self.inner.stacked_gemm(round_mantissa(a, self.bits), round_mantissa(b, self.bits), out, accumulate)

    def column_sums(self, a: Array, ones: Array, out: Array, accumulate: bool) -> Array:
        return self.inner.column_sums(a, ones, out, accumulate)       # a sum, not a product: float32
