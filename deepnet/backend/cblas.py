"""Where compiled code finds a CBLAS ``?gemm``: the address of NumPy's own BLAS entry point (or
oneMKL's), for :mod:`deepnet.backend.numba_steps` to call without Python in between.

NumPy's wheels bundle OpenBLAS with its CBLAS symbols renamed (``scipy_cblas_sgemm64_``:
64-bit integers); other builds export ``cblas_sgemm`` (32-bit integers).  Calling the very
library NumPy uses keeps one BLAS thread pool in the process: a second OpenBLAS (SciPy's,
which numba's ``np.dot`` would call) keeps its own threads spinning beside NumPy's on a small
machine.  ``DEEPNET_BLAS=mkl`` gives oneMKL's ``cblas_?gemm`` (32-bit integers).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

import numpy as np

#: entry-point names tried in NumPy's BLAS, with their integer width
_NAMES = (("scipy_cblas_{t}gemm64_", 64), ("cblas_{t}gemm64_", 64), ("cblas_{t}gemm", 32))
_FOUND: dict[str, tuple[int, int, int] | None] = {}


def _numpy_libraries() -> list[Path]:
    """The BLAS libraries a NumPy wheel bundles (``numpy.libs``, ``numpy/.dylibs``)."""
    here = Path(np.__file__).resolve().parent
    out: list[Path] = []
    for folder in (here.parent / "numpy.libs", here / ".dylibs"):
        if folder.is_dir():
            out += sorted(p for p in folder.iterdir() if "blas" in p.name.lower())
    return out


def _lookup(lib: Any) -> tuple[int, int, int] | None:
    """(sgemm address, dgemm address, integer bits) exported by ``lib``, or None."""
    for name, bits in _NAMES:
        try:
            s = getattr(lib, name.format(t="s"))
            d = getattr(lib, name.format(t="d"))
        except AttributeError:
            continue
        return ctypes.cast(s, ctypes.c_void_p).value or 0, ctypes.cast(d, ctypes.c_void_p).value or 0, bits
    return None


def numpy_gemm() -> tuple[int, int, int] | None:
    """(sgemm, dgemm, integer bits) of the BLAS NumPy calls, or None when it cannot be found."""
    if "numpy" not in _FOUND:
        found = None
        for path in _numpy_libraries():
            try:
                found = _lookup(ctypes.CDLL(str(path)))
            except OSError:
                continue
            if found is not None:
                break
        if found is None and os.name != "nt":
            found = _lookup(ctypes.CDLL(None))       # a NumPy linked against a system CBLAS
        _FOUND["numpy"] = found
    return _FOUND["numpy"]


def mkl_gemm(path: str) -> tuple[int, int, int]:
    """(sgemm, dgemm, 32) of oneMKL's library at ``path``."""
    if path not in _FOUND:
        _FOUND[path] = _lookup(ctypes.CDLL(path))
    found = _FOUND[path]
    if found is None:
        raise OSError(f"{path} exports no cblas_sgemm")
    return found


def one_thread_here() -> bool:
    """Make BLAS calls from the calling thread run on that thread alone (OpenBLAS's
    ``openblas_set_num_threads_local``, in NumPy's own OpenBLAS); False where this BLAS has no
    per-thread setting.  For threads that each run their own products side by side: BLAS
    threads of their own would fight them for the cores (measured: ResNet-20 training step on
    2 cores, 2 threads of Winograd chunks, 496 ms with OpenBLAS's threads against 295 ms)."""
    for path in _numpy_libraries():
        try:
            lib = ctypes.CDLL(str(path))
            setter = lib.openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
        setter(1)
        return True
    return False
