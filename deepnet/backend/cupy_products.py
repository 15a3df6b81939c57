"""Matrix products of the CuPy backend, as an object (``CupyOps.products``), with the interface
of :class:`~deepnet.backend.products.NumpyProducts`: ``gemm(a, b, out, accumulate)`` with the
operands already transposed as views, and ``linear(x, w)`` = x·Wᵀ.

Eager float32 (and float64) products go to ``cupy.matmul``.  While CuPy's current stream is
capturing a CUDA graph, where CuPy refuses cuBLAS, and for the reduced precisions ("tf32",
"bf16"), they go to deepnet's own cuBLAS handle (:class:`~deepnet.backend.cublas.Cublas`).
"""

from __future__ import annotations

import copy
from typing import Any

from .cublas import PRECISIONS, Cublas

Array = Any


class _CublasSlot:
    """The one :class:`Cublas` a provider and those made from it by ``with_precision`` share,
    created on first use."""

    def __init__(self, cupy: Any, lib: Any) -> None:
        self.xp, self.lib = cupy, lib
        self.cublas: Cublas | None = None

    def get(self) -> Cublas:
        if self.cublas is None:
            self.cublas = Cublas(self.xp, lib=self.lib)
        return self.cublas


class CupyProducts:
    """a·b and x·Wᵀ on the GPU: ``cupy.matmul`` eagerly in float32/float64, :class:`Cublas`
    under stream capture or at a reduced ``precision``."""

    name = "cublas"

    def __init__(self, cupy: Any, precision: str = "float32", *, lib: Any = None) -> None:
        """``cupy``: the CuPy namespace; ``precision``: one of :data:`~deepnet.backend.cublas.PRECISIONS`;
        ``lib``: what :class:`Cublas` calls (libcublas, found when first needed, if None)."""
        self.xp = cupy
        self.precision = _checked(precision)
        self._slot = _CublasSlot(cupy, lib)

    def with_precision(self, precision: str) -> CupyProducts:
        """A provider computing at ``precision`` ("float32", "tf32" or "bf16"), sharing this
        one's cuBLAS handle."""
        other = copy.copy(self)
        other.precision = _checked(precision)
        return other

    @property
    def cublas(self) -> Cublas:
        """The shared cuBLAS handle (created, loading libcublas, on first use)."""
        return self._slot.get()

    def prepare_capture(self) -> None:
        """Before a capture, on the stream that will capture: make deepnet's cuBLAS handle (loading
        libcublas) and run one small product through it at this provider's precision, so that
        cuBLAS's lazy initialisation (its handle, its per-stream state) happens eagerly and never
        inside the graph.  :class:`~deepnet.errors.BackendError` when cuBLAS cannot be loaded or
        the handle cannot be made or used."""
        xp = self.xp
        one = xp.ones((2, 2), dtype=xp.float32)
        self.cublas.gemm(one, one, None, False, self.precision)

    def capturing(self) -> bool:
        """Whether CuPy's current stream is capturing a graph (so CuPy's cuBLAS calls would fail)."""
        return bool(self.xp.cuda.get_current_stream().is_capturing())

    def gemm(self, a: Array, b: Array, out: Array | None, accumulate: bool) -> Array:
        """a·b, written into (``accumulate``: added to) ``out`` when given."""
        if self.precision != "float32" or self.capturing():
            return self.cublas.gemm(a, b, out, accumulate, self.precision)
        xp = self.xp
        if out is None:
            return xp.matmul(a, b)
        if accumulate:
            out += xp.matmul(a, b)
        elif out.flags.c_contiguous:
            xp.matmul(a, b, out=out)
        elif out.flags.f_contiguous:      # column-major out (the first layer's ∂f/∂W): outᵀ = bᵀ aᵀ
            xp.matmul(b.T, a.T, out=out.T)
        else:
            out[...] = xp.matmul(a, b)
        return out

    def linear(self, x: Array, w: Array) -> Array:
        """x·Wᵀ (W of shape (n_out, n_in), in either layout)."""
        return self.gemm(x, w.T, None, False)


def _checked(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision
