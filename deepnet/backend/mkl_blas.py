"""Matrix products through Intel oneMKL for the NumPy backend (optional, ``deepnet[mkl]``).

NumPy's wheels bring OpenBLAS.  On Intel CPUs oneMKL's ``sgemm`` is often much faster for
the shapes of MLP training (measured on a 2-core Xeon: 1.5x for 128x512x512).  PyTorch's
CPU builds use MKL, so without it deepnet would race PyTorch with a slower engine.  This
module calls MKL's CBLAS entry points (``cblas_?gemm``, ``cblas_?gemv``) on NumPy arrays
through ctypes, without copies: a row- or column-major operand is passed with the
matching transpose flag, and ``accumulate`` becomes β = 1 (no temporary).

Opt in with ``DEEPNET_BLAS=mkl`` or ``deepnet.backend.get_ops("numpy").set_blas("mkl")``
after ``pip install "deepnet[mkl]"``.  Nothing is loaded until then.  Everything the
products need stays in MKL while training, so NumPy's OpenBLAS threads stay asleep; MKL
keeps its own thread pool (``MKL_NUM_THREADS``, or threadpoolctl, sets its size).
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

from ..errors import BackendError

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


class MklUnavailable(BackendError):
    """oneMKL was asked for but its library could not be found or loaded (a
    :class:`~deepnet.BackendError`, so ``deepnet info`` reports it as the backend's reason)."""


def _library_path() -> str:
    """Where libmkl_rt is: $DEEPNET_MKL_LIB, else the files of the ``mkl`` distribution."""
    explicit = os.environ.get("DEEPNET_MKL_LIB")
    if explicit:
        return explicit
    try:
        import importlib.metadata as md

        dist = md.distribution("mkl")
    except Exception as exc:  # PackageNotFoundError, or a broken install
        raise MklUnavailable("oneMKL is not installed: pip install 'deepnet[mkl]' "
                             "(or set DEEPNET_MKL_LIB to libmkl_rt)") from exc
    for f in dist.files or ():
        name = os.path.basename(str(f))
        if name.startswith(("libmkl_rt.so", "mkl_rt")) and (".so" in name or name.endswith(".dll")):
            return str(dist.locate_file(f))
    raise MklUnavailable("the 'mkl' package is installed but holds no libmkl_rt; reinstall it or set DEEPNET_MKL_LIB")


class MklBlas:
    """The few CBLAS calls the NumPy backend needs, on float32 and float64 arrays."""

    #: below this many multiply-adds np.dot is as fast (ctypes costs ~2 µs per call)
    MIN_WORK = 1 << 17

    def __init__(self, path: str | None = None) -> None:
        path = path or _library_path()
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise MklUnavailable(f"could not load oneMKL from {path}: {exc}") from exc
        self.path = path
        self._lib = lib
        i, p = ctypes.c_int, ctypes.c_void_p
        self._gemm = {}
        self._gemv = {}
        for dt, ctype, prefix in ((np.float32, ctypes.c_float, "s"), (np.float64, ctypes.c_double, "d")):
            gemm = getattr(lib, f"cblas_{prefix}gemm")
            gemm.restype = None
            gemm.argtypes = [i, i, i, i, i, i, ctype, p, i, p, i, ctype, p, i]
            gemv = getattr(lib, f"cblas_{prefix}gemv")
            gemv.restype = None
            gemv.argtypes = [i, i, i, i, ctype, p, i, p, i, ctype, p, i]
            self._gemm[np.dtype(dt)] = gemm
            self._gemv[np.dtype(dt)] = gemv

    def set_num_threads(self, n: int) -> None:
        self._lib.MKL_Set_Num_Threads(ctypes.c_int(int(n)))

    def get_max_threads(self) -> int:
        self._lib.MKL_Get_Max_Threads.restype = ctypes.c_int
        return int(self._lib.MKL_Get_Max_Threads())

    @staticmethod
    def _operand(a: np.ndarray) -> tuple[int, int] | None:
        """(transpose flag, leading dimension) to read 2-D ``a`` as a row-major matrix."""
        if a.flags.c_contiguous:
            return _NO_TRANS, max(a.shape[1], 1)
        if a.flags.f_contiguous:
            return _TRANS, max(a.shape[0], 1)
        return None

    def gemm(self, a: np.ndarray, b: np.ndarray, out: np.ndarray, beta: float) -> bool:
        """out ← a·b + β·out for 2-D arrays (any of a, b row- or column-major; out
        row-major or column-major).  Returns False, touching nothing, when the arrays do not
        fit (dtype, layout, size): the caller then uses NumPy."""
        if not (a.ndim == b.ndim == out.ndim == 2) or not (a.dtype == b.dtype == out.dtype):
            return False
        fn = self._gemm.get(a.dtype)
        m, k = a.shape
        n = b.shape[1]
        if fn is None or b.shape[0] != k or out.shape != (m, n) or m * n * k < self.MIN_WORK:
            return False
        if not out.flags.c_contiguous:
            if not out.flags.f_contiguous:
                return False
            a, b, out = b.T, a.T, out.T          # column-major out: outᵀ = bᵀ aᵀ
            m, n = n, m
        oa, ob = self._operand(a), self._operand(b)
        if oa is None or ob is None:
            return False
        fn(_ROW_MAJOR, oa[0], ob[0], m, n, k, 1.0, a.ctypes.data, oa[1], b.ctypes.data, ob[1], beta,
           out.ctypes.data, max(n, 1))
        return True

    def column_sums(self, a: np.ndarray, ones: np.ndarray, out: np.ndarray, beta: float) -> bool:
        """out ← onesᵀ·a + β·out (Σ over the rows of a row-major 2-D ``a``; ``ones`` holds
        a.shape[0] ones of a's dtype)."""
        if (a.ndim != 2 or a.dtype != out.dtype or not a.flags.c_contiguous or not out.flags.c_contiguous
                or out.shape != (a.shape[1],) or a.size < 4096):
            return False
        fn = self._gemv.get(a.dtype)
        if fn is None:
            return False
        fn(_ROW_MAJOR, _TRANS, a.shape[0], a.shape[1], 1.0, a.ctypes.data, a.shape[1], ones.ctypes.data, 1, beta,
           out.ctypes.data, 1)
        return True
