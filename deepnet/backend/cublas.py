"""cuBLAS through ctypes on deepnet's own handle: matrix products that a CUDA graph can capture.

CuPy refuses every cuBLAS call while a stream is capturing (``NotImplementedError: calling
cuBLAS API during stream capture is currently unsupported``), yet cuBLAS itself captures fine
on a handle bound to the capturing stream with a workspace of its own.  :class:`Cublas` is
that handle: :meth:`Cublas.gemm` multiplies 2-D CuPy arrays given as views (row-major, or
column-major such as ``w.T``) without copying them, in float32 (``cublasSgemm_v2``), float64
(``cublasDgemm_v2``), TF32 or bfloat16 (``cublasGemmEx``), on the current CuPy stream.

The library is found the way CuPy 14 finds it (:func:`load_cublas`); ``Cublas(cupy, lib=...)``
takes any object with the same functions (the CuPy-shaped test backend passes
:class:`~deepnet.backend.cublas_shaped.FakeCublasLib`, cuBLAS emulated with NumPy).
Pointers, handles and host scalars are passed as integer addresses.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

import numpy as np

from ..errors import BackendError
from .cuda_setup import cuda_libraries_hint

Array = Any

# Enum values, as NVIDIA's headers define them:
# * cublas_api.h (cuBLAS 13.4, CUBLAS_VER_MAJOR 13; copy in github.com/wesleyrparsons/WesChat12,
#   cublas_api.h): ``typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, ... } cublasOperation_t``;
#   ``CUBLAS_POINTER_MODE_HOST = 0``; ``CUBLAS_GEMM_DEFAULT = -1`` (cublasGemmAlgo_t);
#   ``CUBLAS_COMPUTE_32F = 68``, ``CUBLAS_COMPUTE_32F_FAST_TF32 = 77`` (cublasComputeType_t);
#   ``CUBLAS_STATUS_SUCCESS = 0`` ... ``CUBLAS_STATUS_LICENSE_ERROR = 16`` (cublasStatus_t).
# * library_types.h (CUDA 13, ``typedef enum cudaDataType_t``): ``CUDA_R_32F = 0``,
#   ``CUDA_R_64F = 1``, ``CUDA_R_16BF = 14 /* real as a nv_bfloat16 */``.
CUBLAS_OP_N = 0
CUBLAS_OP_T = 1
CUBLAS_POINTER_MODE_HOST = 0
CUBLAS_GEMM_DEFAULT = -1
CUBLAS_COMPUTE_32F = 68
CUBLAS_COMPUTE_32F_FAST_TF32 = 77
CUDA_R_32F = 0
CUDA_R_64F = 1
CUDA_R_16BF = 14

#: cublasStatus_t names (cublas_api.h), for error messages
STATUS_NAMES = {0: "CUBLAS_STATUS_SUCCESS", 1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED",
                7: "CUBLAS_STATUS_INVALID_VALUE", 8: "CUBLAS_STATUS_ARCH_MISMATCH",
                11: "CUBLAS_STATUS_MAPPING_ERROR", 13: "CUBLAS_STATUS_EXECUTION_FAILED",
                14: "CUBLAS_STATUS_INTERNAL_ERROR", 15: "CUBLAS_STATUS_NOT_SUPPORTED",
                16: "CUBLAS_STATUS_LICENSE_ERROR"}

#: the precisions :meth:`Cublas.gemm` takes (float32 operands; float64 ones take "float32" only)
PRECISIONS = ("float32", "tf32", "bf16")
#: bytes of the handle's own workspace (cuBLAS would otherwise allocate one, which capture forbids)
WORKSPACE_BYTES = 32 << 20

_P, _I = ctypes.c_void_p, ctypes.c_int
#: argtypes of the functions used (cublas_api.h); every pointer, host scalars included, as void*
SIGNATURES: dict[str, list[Any]] = {
    "cublasCreate_v2": [_P],
    "cublasDestroy_v2": [_P],
    "cublasSetStream_v2": [_P, _P],
    "cublasSetWorkspace_v2": [_P, _P, ctypes.c_size_t],
    "cublasSetPointerMode_v2": [_P, _I],
    "cublasSgemm_v2": [_P, _I, _I, _I, _I, _I, _P, _P, _I, _P, _I, _P, _P, _I],
    "cublasDgemm_v2": [_P, _I, _I, _I, _I, _I, _P, _P, _I, _P, _I, _P, _P, _I],
    "cublasGemmEx": [_P, _I, _I, _I, _I, _I, _P, _P, _I, _I, _P, _I, _I, _P, _P, _I, _I, _I, _I],
}

#: float32 bits -> bfloat16 bits, round to nearest even; NaN stays a (quiet) NaN.  Plain C that
#: CuPy compiles and the CuPy-shaped backend evaluates; one kernel, so it captures into a graph.
BF16_KERNEL = ("y = (u & 2147483647) > 2139095040 ? ((u >> 16) | 64) "
               ": ((u + 32767 + ((u >> 16) & 1)) >> 16)")


def load_cublas() -> ctypes.CDLL:
    """libcublas as CuPy 14 finds it (``cuda.pathfinder``: NVIDIA wheels, conda, the system),
    else through ``ctypes.util.find_library``; :class:`BackendError` when neither has it."""
    reasons = []
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib     # CuPy 14's own finder
        return ctypes.CDLL(load_nvidia_dynamic_lib("cublas").abs_path)
    except ImportError:
        reasons.append("cuda.pathfinder is not installed")
    except Exception as err:                  # DynamicLibNotFoundError and kin, OSError
        reasons.append(f"cuda.pathfinder: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
    name = ctypes.util.find_library("cublas")
    if name is not None:
        try:
            return ctypes.CDLL(name)
        except OSError as err:
            reasons.append(f"{name}: {err}")
    else:
        reasons.append("ctypes.util.find_library('cublas') found nothing")
    raise BackendError("cuBLAS (libcublas) is needed for captured or mixed-precision products but was not found "
                       f"({'; '.join(reasons)}); install CuPy's CUDA libraries: {cuda_libraries_hint()}")


def layout(x: Array) -> tuple[bool, int] | None:
    """How cuBLAS can read 2-D ``x`` without a copy: (column-major, leading dimension in
    elements), or None (strides it cannot express).  A row-major r×c array is the
    column-major c×r matrix xᵀ; rows may be padded (ld > c), as in a slice of columns."""
    rows, cols = x.shape
    item = x.itemsize
    s0, s1 = x.strides
    if s0 % item or s1 % item:
        return None
    s0, s1 = s0 // item, s1 // item
    if cols <= 1 or s1 == 1:                 # row-major
        ld = s0 if rows > 1 else max(1, cols)
        if ld >= max(1, cols):
            return False, ld
    if rows <= 1 or s0 == 1:                 # column-major
        ld = s1 if cols > 1 else max(1, rows)
        if ld >= max(1, rows):
            return True, ld
    return None


class Cublas:
    """One cuBLAS handle with its own 32 MiB workspace, in host pointer mode, that follows
    CuPy's current stream (so calls made while a stream captures land in its graph).

    Buffers it makes for an operand (a bfloat16 copy, a copy of a view cuBLAS cannot read)
    are kept, one per role, shape and layout, and reused: a captured graph keeps reading
    the same addresses, and stream order makes the reuse safe.
    """

    def __init__(self, cupy: Any, lib: Any = None) -> None:
        """``cupy``: the CuPy namespace; ``lib``: libcublas (:func:`load_cublas` when None) or
        an object with the same functions."""
        self.xp = cupy
        self.lib = load_cublas() if lib is None else lib
        if isinstance(self.lib, ctypes.CDLL):
            for name, argtypes in SIGNATURES.items():
                fn = getattr(self.lib, name)
                fn.argtypes, fn.restype = argtypes, ctypes.c_int
        handle = ctypes.c_void_p()
        self._call("cublasCreate_v2", ctypes.addressof(handle))
        self.handle: int = handle.value or 0
        #: the handle's workspace: kept alive as long as the handle (and any graph using it)
        with cupy.cuda.using_allocator(cupy.get_default_memory_pool().malloc):   # never a graph's private pool
            self.workspace = cupy.empty((WORKSPACE_BYTES,), dtype=cupy.uint8)
        self._call("cublasSetPointerMode_v2", self.handle, CUBLAS_POINTER_MODE_HOST)
        self._bind_stream()
        self._to_bf16 = cupy.ElementwiseKernel("uint32 u", "uint16 y", BF16_KERNEL, "deepnet_float32_to_bfloat16")
        self._buffers: dict[tuple, Array] = {}

    # ------------------------------------------------------------------ plumbing
    def _call(self, name: str, *args: Any) -> None:
        status = getattr(self.lib, name)(*args)
        if status != 0:
            raise BackendError(f"{name} failed: expected CUBLAS_STATUS_SUCCESS, got "
                               f"{STATUS_NAMES.get(int(status), 'unknown status')} ({int(status)})")

    def _bind_stream(self) -> None:
        """Bind the handle to CuPy's current stream; cublasSetStream resets the workspace to
        cuBLAS's own pool, so ours is set again after it."""
        self._call("cublasSetStream_v2", self.handle, self.xp.cuda.get_current_stream().ptr)
        self._call("cublasSetWorkspace_v2", self.handle, self.workspace.data.ptr, WORKSPACE_BYTES)

    def close(self) -> None:
        """Destroy the handle (idempotent); the object is unusable afterwards."""
        if getattr(self, "handle", 0):
            handle, self.handle = self.handle, 0
            self._call("cublasDestroy_v2", handle)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:       # interpreter shutdown, library already gone
            pass

    def _buffer(self, role: str, shape: tuple[int, ...], dtype: Any, col_major: bool) -> Array:
        key = (role, shape, np.dtype(dtype).str, col_major)
        buf = self._buffers.get(key)
        if buf is None:
            # from CuPy's default pool even inside a graph's private pool: this cache outlives any
            # one graph, and a block it holds is never handed to anyone else while it is cached
            with self.xp.cuda.using_allocator(self.xp.get_default_memory_pool().malloc):
                buf = self.xp.empty(shape, dtype=dtype, order="F" if col_major else "C")
            self._buffers[key] = buf
        return buf

    def _readable(self, x: Array, role: str, bf16: bool) -> tuple[Array, bool, int]:
        """``x`` as cuBLAS reads it: (array, column-major, ld); a bfloat16 copy when ``bf16``,
        a contiguous copy when its strides do not fit cuBLAS."""
        lay = layout(x)
        if bf16:
            col = lay is not None and lay[0]
            buf = self._buffer(role + "-bf16", x.shape, self.xp.uint16, col)
            self._to_bf16(x.view(self.xp.uint32), buf)
            x, lay = buf, layout(buf)
        elif lay is None:
            buf = self._buffer(role + "-copy", x.shape, x.dtype, False)
            buf[...] = x
            x, lay = buf, layout(buf)
        assert lay is not None
        return x, lay[0], lay[1]

    # ------------------------------------------------------------------ the product
    def gemm(self, a: Array, b: Array, out: Array | None = None, accumulate: bool = False,
             precision: str = "float32") -> Array:
        """C = a·b for 2-D CuPy arrays (m×k and k×n, row- or column-major views), written into
        ``out`` (``accumulate``: added to it) or a new row-major array, on the current stream.

        ``precision``: "float32" (exact cublasSgemm; float64 operands: cublasDgemm), "tf32"
        (TF32 tensor cores, float32 accumulation) or "bf16" (operands rounded to bfloat16,
        float32 accumulation and result); the last two take float32 operands only.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError(f"Cublas.gemm multiplies 2-D arrays, got {a.ndim}-D and {b.ndim}-D")
        (m, k), (k2, n) = a.shape, b.shape
        if k != k2:
            raise ValueError(f"Cublas.gemm: a is {m}x{k}, so b must have {k} rows, got {b.shape}")
        dtype = np.dtype(a.dtype)
        if np.dtype(b.dtype) != dtype or dtype not in (np.float32, np.float64):
            raise TypeError(f"Cublas.gemm takes two float32 or two float64 arrays, got {a.dtype} and {b.dtype}")
        if dtype == np.float64 and precision != "float32":
            raise ValueError(f"precision {precision!r} applies to float32 operands, got float64 ones")
        xp = self.xp
        if out is None:
            out, accumulate = xp.empty((m, n), dtype=dtype), False
        elif tuple(out.shape) != (m, n) or np.dtype(out.dtype) != dtype:
            raise ValueError(f"Cublas.gemm: out must be {m}x{n} {dtype}, got {tuple(out.shape)} {out.dtype}")
        if m == 0 or n == 0:
            return out
        if k == 0:
            if not accumulate:
                out.fill(0)
            return out
        out_lay = layout(out)
        target = out
        if out_lay is None:               # strides cuBLAS cannot write: compute aside, then store
            target = self._buffer("out", (m, n), dtype, False)
            if accumulate:
                target[...] = out
            out_lay = layout(target)
            assert out_lay is not None
        out_col, ldc = out_lay
        bf16 = precision == "bf16"
        a, a_col, lda = self._readable(a, "a", bf16)
        b, b_col, ldb = self._readable(b, "b", bf16)
        # cuBLAS is column-major.  A column-major C (m×n) is C = op(a)·op(b); a row-major C is
        # the column-major Cᵀ (n×m) = bᵀ·aᵀ.  An operand stored as wanted is OP_N, else OP_T.
        if out_col:
            first, f_col, ldf, second, s_col, lds, rows, cols = a, a_col, lda, b, b_col, ldb, m, n
        else:
            first, f_col, ldf, second, s_col, lds, rows, cols = b, b_col, ldb, a, a_col, lda, n, m
        op_f = CUBLAS_OP_N if f_col == out_col else CUBLAS_OP_T
        op_s = CUBLAS_OP_N if s_col == out_col else CUBLAS_OP_T
        self._bind_stream()
        scalar = ctypes.c_double if dtype == np.float64 else ctypes.c_float
        alpha, beta = scalar(1.0), scalar(1.0 if accumulate else 0.0)
        pa, pb = ctypes.addressof(alpha), ctypes.addressof(beta)
        fp, sp, cp = first.data.ptr, second.data.ptr, target.data.ptr
        if dtype == np.float64:
            self._call("cublasDgemm_v2", self.handle, op_f, op_s, rows, cols, k, pa, fp, ldf, sp, lds, pb, cp, ldc)
        elif precision == "float32":
            self._call("cublasSgemm_v2", self.handle, op_f, op_s, rows, cols, k, pa, fp, ldf, sp, lds, pb, cp, ldc)
        else:
            in_type = CUDA_R_16BF if bf16 else CUDA_R_32F
            compute = CUBLAS_COMPUTE_32F if bf16 else CUBLAS_COMPUTE_32F_FAST_TF32
            self._call("cublasGemmEx", self.handle, op_f, op_s, rows, cols, k, pa, fp, in_type, ldf,
                       sp, in_type, lds, pb, cp, CUDA_R_32F, ldc, compute, CUBLAS_GEMM_DEFAULT)
        if target is not out:
            out[...] = target
        return out
