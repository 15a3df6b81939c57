"""cuBLAS emulated with NumPy, for the CuPy-shaped test backend: :class:`FakeCublasLib` has the
functions :class:`~deepnet.backend.cublas.Cublas` calls, with cuBLAS's argument conventions
(column-major matrices at raw addresses with leading dimensions, OP_N/OP_T, host scalars
behind pointers, cudaDataType and compute type enums) and cuBLAS's status codes.

It reads and writes memory only through the addresses it is given (a CuPy-shaped array's
``.data.ptr`` is its NumPy buffer), so a wrong m, n, k, leading dimension or transpose gives
a wrong product or an error here, as it would on a GPU.  bfloat16 operands are read from
their 16-bit storage; TF32 rounds float32 inputs to 10 mantissa bits.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from .cublas import (CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_OP_N, CUBLAS_OP_T,
                     CUBLAS_POINTER_MODE_HOST, CUDA_R_16BF, CUDA_R_32F)

SUCCESS, NOT_INITIALIZED, INVALID_VALUE, NOT_SUPPORTED = 0, 1, 7, 15
#: cublasComputeType_t values not defined in cublas.py (cublas_api.h)
CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_COMPUTE_32F_FAST_16BF = 69, 75


def matrix_at(ptr: int, dtype: Any, rows: int, cols: int, ld: int) -> np.ndarray:
    """The column-major rows×cols matrix at address ``ptr`` with leading dimension ``ld``
    (elements), as a writable NumPy view of that memory."""
    dtype = np.dtype(dtype)
    if rows == 0 or cols == 0:
        return np.empty((rows, cols), dtype)
    count = (cols - 1) * ld + rows
    flat = np.frombuffer((ctypes.c_char * (count * dtype.itemsize)).from_address(ptr), dtype=dtype, count=count)
    return np.lib.stride_tricks.as_strided(flat, shape=(rows, cols), strides=(dtype.itemsize, ld * dtype.itemsize))


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values stored as uint16 -> float32 (exact: the high half of a float32)."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def round_to_tf32(x: np.ndarray) -> np.ndarray:
    """float32 -> the nearest TF32 value (10 mantissa bits, ties to even), as float32."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    r = (u + np.uint32(0xFFF) + ((u >> np.uint32(13)) & np.uint32(1))) & np.uint32(0xFFFFE000)
    finite = (u & np.uint32(0x7F800000)) != np.uint32(0x7F800000)
    return np.where(finite, r, u).view(np.float32)


class FakeCublasLib:
    """The cuBLAS functions :class:`~deepnet.backend.cublas.Cublas` uses, computed with NumPy.

    :attr:`handles` holds each live handle's state (stream, workspace, pointer mode);
    :attr:`calls` logs every product as ``(function, {handle state at the call, and the
    call's transa, transb, m, n, k, lda, ldb, ldc})``.
    """

    def __init__(self) -> None:
        self.handles: dict[int, dict[str, Any]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._next = 0x1000

    # ------------------------------------------------------------------ helpers
    def cublasCreate_v2(self, handle_ptr: int) -> int:   # noqa: N802  (cuBLAS's names)
        if not handle_ptr:
            return INVALID_VALUE
        self._next += 0x10
        self.handles[self._next] = {"stream": 0, "workspace": None, "workspace_bytes": 0,
                                    "pointer_mode": CUBLAS_POINTER_MODE_HOST}
        ctypes.c_void_p.from_address(handle_ptr).value = self._next
        return SUCCESS

    def cublasDestroy_v2(self, handle: int) -> int:   # noqa: N802
        return SUCCESS if self.handles.pop(handle, None) is not None else NOT_INITIALIZED

    def cublasSetStream_v2(self, handle: int, stream: int | None) -> int:   # noqa: N802
        state = self.handles.get(handle)
        if state is None:
            return NOT_INITIALIZED
        state["stream"] = int(stream or 0)
        state["workspace"], state["workspace_bytes"] = None, 0     # as cuBLAS: back to its own pool
        return SUCCESS

    def cublasSetWorkspace_v2(self, handle: int, workspace: int, size: int) -> int:   # noqa: N802
        state = self.handles.get(handle)
        if state is None:
            return NOT_INITIALIZED
        if size and not workspace:
            return INVALID_VALUE
        state["workspace"], state["workspace_bytes"] = workspace, int(size)
        return SUCCESS

    def cublasSetPointerMode_v2(self, handle: int, mode: int) -> int:   # noqa: N802
        state = self.handles.get(handle)
        if state is None:
            return NOT_INITIALIZED
        if mode not in (0, 1):
            return INVALID_VALUE
        state["pointer_mode"] = mode
        return SUCCESS

    # ------------------------------------------------------------------ products
    def cublasSgemm_v2(self, handle: int, transa: int, transb: int, m: int, n: int, k: int, alpha: int,  # noqa: N802
                       A: int, lda: int, B: int, ldb: int, beta: int, C: int, ldc: int) -> int:  # noqa: N803
        return self._gemm("cublasSgemm_v2", handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc,
                          np.float32, np.float32, np.float32, ctypes.c_float, None)

    def cublasDgemm_v2(self, handle: int, transa: int, transb: int, m: int, n: int, k: int, alpha: int,  # noqa: N802
                       A: int, lda: int, B: int, ldb: int, beta: int, C: int, ldc: int) -> int:  # noqa: N803
        return self._gemm("cublasDgemm_v2", handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc,
                          np.float64, np.float64, np.float64, ctypes.c_double, None)

    def cublasGemmEx(self, handle: int, transa: int, transb: int, m: int, n: int, k: int, alpha: int,  # noqa: N802
                     A: int, Atype: int, lda: int, B: int, Btype: int, ldb: int, beta: int,  # noqa: N803
                     C: int, Ctype: int, ldc: int, computeType: int, algo: int) -> int:  # noqa: N803
        """The combinations deepnet uses: float32 in and out with compute 32F, 32F_PEDANTIC or
        32F_FAST_TF32; bfloat16 in, float32 out, compute 32F.  Others: NOT_SUPPORTED."""
        if Ctype != CUDA_R_32F or Atype != Btype:
            return NOT_SUPPORTED
        if Atype == CUDA_R_32F and computeType in (CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_PEDANTIC):
            storage, tf32 = np.float32, False
        elif Atype == CUDA_R_32F and computeType == CUBLAS_COMPUTE_32F_FAST_TF32:
            storage, tf32 = np.float32, True
        elif Atype == CUDA_R_16BF and computeType in (CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_16BF):
            storage, tf32 = np.uint16, False
        else:
            return NOT_SUPPORTED
        convert = bf16_to_float32 if storage == np.uint16 else round_to_tf32 if tf32 else None
        return self._gemm("cublasGemmEx", handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc,
                          storage, storage, np.float32, ctypes.c_float, convert)

    def _gemm(self, name: str, handle: int, transa: int, transb: int, m: int, n: int, k: int, alpha: int,
              a_ptr: int, lda: int, b_ptr: int, ldb: int, beta: int, c_ptr: int, ldc: int,
              a_type: Any, b_type: Any, c_type: Any, scalar: Any, convert: Any) -> int:
        """C ← α·op(A)·op(B) + β·C, column-major, as cuBLAS defines it."""
        state = self.handles.get(handle)
        if state is None:
            return NOT_INITIALIZED
        if state["pointer_mode"] != CUBLAS_POINTER_MODE_HOST:
            return NOT_SUPPORTED            # device-side scalars are not emulated
        if transa not in (CUBLAS_OP_N, CUBLAS_OP_T) or transb not in (CUBLAS_OP_N, CUBLAS_OP_T):
            return INVALID_VALUE            # (OP_C on real data equals OP_T; deepnet never passes it)
        a_rows, a_cols = (m, k) if transa == CUBLAS_OP_N else (k, m)
        b_rows, b_cols = (k, n) if transb == CUBLAS_OP_N else (n, k)
        if min(m, n, k) < 0 or lda < max(1, a_rows) or ldb < max(1, b_rows) or ldc < max(1, m):
            return INVALID_VALUE
        self.calls.append((name, {**state, "transa": transa, "transb": transb, "m": m, "n": n, "k": k,
                                  "lda": lda, "ldb": ldb, "ldc": ldc}))
        if m == 0 or n == 0:
            return SUCCESS
        al, be = scalar.from_address(alpha).value, scalar.from_address(beta).value
        c = matrix_at(c_ptr, c_type, m, n, ldc)
        if k == 0 or al == 0:
            res = np.zeros((m, n))
        else:
            a = matrix_at(a_ptr, a_type, a_rows, a_cols, lda)
            b = matrix_at(b_ptr, b_type, b_rows, b_cols, ldb)
            if convert is not None:
                a, b = convert(a), convert(b)
            a = a if transa == CUBLAS_OP_N else a.T
            b = b if transb == CUBLAS_OP_N else b.T
            res = al * (a.astype(np.float64) @ b.astype(np.float64))
        if be != 0:                          # β = 0: C is not read (NaN in it does not propagate)
            res = res + be * c.astype(np.float64)
        c[...] = res.astype(c_type)
        return SUCCESS
