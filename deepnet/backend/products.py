"""Matrix products of the NumPy backend, as an object given to it (``NumpyOps(products=...)``).

:class:`NumpyProducts` computes them with ``np.dot`` (OpenBLAS in NumPy's wheels);
:class:`MklProducts` with Intel oneMKL (``mkl_blas``) where a product is large enough to
gain, else as NumPy does.  ``DEEPNET_BLAS=numpy|mkl`` picks one when the backend is
created; ``ops.set_blas(name)`` swaps it.  Operands arrive already transposed as the
product needs (views: ``a.T`` of a row-major array is column-major).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .mkl_blas import MklBlas
from .precision import RoundedProducts, check_precision

Array = Any

#: the names ``DEEPNET_BLAS`` and ``set_blas`` take
BLAS_NAMES = ("numpy", "mkl")


class NumpyProducts:
    """a·b, x·Wᵀ and 1ᵀ·a through ``np.dot``."""

    name = "numpy"
    #: the operands' precision (see :mod:`~deepnet.backend.precision`)
    precision = "float32"

    def with_precision(self, precision: str) -> Any:
        """This provider with products in ``precision`` ("float32": itself)."""
        return self if check_precision(precision) == "float32" else RoundedProducts(self, precision)

    def gemm(self, a: Array, b: Array, out: Array | None, accumulate: bool) -> Array:
        """a·b, written into (``accumulate``: added to) ``out`` when given."""
        # np.dot goes to BLAS for every 2-D case, including the batch-1 outer product
        # δ·z̃ᵀ (k = 1), for which np.matmul falls back to a slow loop.
        if out is None:
            return np.dot(a, b)
        if accumulate:
            out += np.dot(a, b)
        elif out.flags.c_contiguous:
            np.dot(a, b, out=out)
        else:                    # column-major out (the first layer's ∂f/∂W): outᵀ = bᵀ aᵀ
            np.dot(b.T, a.T, out=out.T)
        return out

    def linear(self, x: Array, w: Array) -> Array:
        """x·Wᵀ (W column-major, the first layer: Wᵀ is row-major, a plain NN product)."""
        return np.dot(x, w.T)

    def stacked_gemm(self, a: Array, b: Array, out: Array, accumulate: bool) -> Array:
        """out[k] ← a[k]·b[k] (``accumulate``: added) for stacks of matrices (3-D), one call:
        ``np.matmul`` takes BLAS for each pair (16 products of a Winograd convolution without
        16 Python calls)."""
        if accumulate:
            out += np.matmul(a, b)
        else:
            np.matmul(a, b, out=out)
        return out

    def column_sums(self, a: Array, ones: Array, out: Array, accumulate: bool) -> Array:
        """out ← 1ᵀ·a (``accumulate``: out + 1ᵀ·a) for row-major 2-D ``a`` and ``out`` of its
        dtype; ``ones`` holds a.shape[0] ones.  Through BLAS (gemv): 2-4x faster than
        np.sum(axis=0) for error rows."""
        if accumulate:
            out += np.dot(ones, a)
        else:
            np.dot(ones, a, out=out)
        return out


class MklProducts(NumpyProducts):
    """The products through oneMKL's CBLAS (loaded here: :class:`~deepnet.backend.mkl_blas.MklUnavailable`
    if missing); those below :attr:`MIN_WORK` multiply-adds, and operands MKL cannot take
    without a copy, go to NumPy."""

    name = "mkl"
    #: multiply-adds below which np.dot beats a ctypes call into MKL
    MIN_WORK = 1 << 17

    def __init__(self, lib: MklBlas | None = None) -> None:
        self.lib = MklBlas() if lib is None else lib

    def gemm(self, a: Array, b: Array, out: Array | None, accumulate: bool) -> Array:
        if a.ndim == 2 == b.ndim and a.shape[0] * a.shape[1] * b.shape[1] >= self.MIN_WORK:
            if out is None:
                res = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
                if self.lib.gemm(a, b, res, 0.0):
                    return res
            elif self.lib.gemm(a, b, out, 1.0 if accumulate else 0.0):
                return out
        return super().gemm(a, b, out, accumulate)

    def linear(self, x: Array, w: Array) -> Array:
        return self.gemm(x, w.T, None, False)

    def stacked_gemm(self, a: Array, b: Array, out: Array, accumulate: bool) -> Array:
        for k in range(a.shape[0]):             # each pair through MKL where large enough
            self.gemm(a[k], b[k], out[k], accumulate)
        return out

    def column_sums(self, a: Array, ones: Array, out: Array, accumulate: bool) -> Array:
        if self.lib.column_sums(a, ones, out, 1.0 if accumulate else 0.0):
            return out
        return super().column_sums(a, ones, out, accumulate)


def products_named(name: str) -> NumpyProducts:
    """The provider called ``name`` (one of :data:`BLAS_NAMES`); "mkl" loads oneMKL."""
    return MklProducts() if name == "mkl" else NumpyProducts()
