"""CuPy backend: the generic operations on the GPU (``CupyOps``) and, as a subclass, the
same with fused elementwise kernels (``FusedCupyOps``, the registered ``cupy`` backend).

CuPy is imported only when this backend is first asked for, never when deepnet is
imported, so machines without CUDA import deepnet without touching it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import BackendError
from . import cupy_kernels
from .counter_rng import CounterRNG, build_philox_kernel
from .cuda_setup import check_memory_limit
from .cupy_products import CupyProducts
from .graphs import CudaGraphs
from .memory import DeviceMemory
from .ops import Array, DeviceRNG, Ops, check_cols_t
from .windows import Window, check_cols, check_image

INSTALL_HINT = ("install CuPy for your CUDA version: pip install 'deepnet[cuda12]' "
                "or pip install 'deepnet[cuda13]'")


def _import_cupy() -> Any:
    try:
        import cupy
    except ImportError as err:
        raise BackendError(f"the 'cupy' backend needs CuPy, which is not installed; {INSTALL_HINT}") from err
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDARuntimeError, driver missing, ...
        raise BackendError(f"CuPy is installed but no usable CUDA GPU was found ({err})") from err
    if count < 1:
        raise BackendError("CuPy is installed but no CUDA GPU is present")
    return cupy


class CupyMemory(DeviceMemory):
    """The GPU's memory: CuPy's pool, and streaming through pinned host buffers with the
    copies on a side stream."""

    def __init__(self, ops: Ops) -> None:
        super().__init__(ops)
        self._copy_stream: Any = None

    def info(self) -> dict[str, Any]:
        cp = self.ops.xp
        pool = cp.get_default_memory_pool()
        free, total = cp.cuda.runtime.memGetInfo()
        return {"pool_used_bytes": int(pool.used_bytes()), "pool_cached_bytes": int(pool.total_bytes() - pool.used_bytes()),
                "pool_limit_bytes": int(pool.get_limit()), "free_bytes": int(free), "total_bytes": int(total)}

    def release(self) -> None:
        cp = self.ops.xp
        cp.get_default_memory_pool().free_all_blocks()
        cp.get_default_pinned_memory_pool().free_all_blocks()

    def describe(self) -> dict[str, Any]:
        cp = self.ops.xp
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        return {"name": name, **self.info()}

    def stream_rows_for(self, host_X: Any, batch_size: int) -> int | None:
        nbytes = getattr(host_X, "nbytes", 0)        # resident once: batches are gathered, never a shuffled copy
        if nbytes < 0.6 * self.info()["free_bytes"]:
            return None
        row = max(1, host_X.nbytes // max(1, host_X.shape[0]))
        rows = max(batch_size, int(0.1 * self.info()["free_bytes"] // row) // batch_size * batch_size)
        return rows

    def host_buffer(self, n: int, dtype: Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        mem = self.ops.xp.cuda.alloc_pinned_memory(max(1, n * dtype.itemsize))
        return np.frombuffer(mem, dtype, n)           # the array keeps the page-locked block alive

    def download(self, dev: Array, host: np.ndarray) -> None:
        dev.get(out=host.reshape(tuple(dev.shape)))   # waits for the compute stream, then the copy

    def upload(self, host: np.ndarray, dev: Array) -> None:
        dev.set(host.reshape(tuple(dev.shape)))
        self.synchronize()          # the copy reads ``host``: done before the caller reuses it

    def synchronize(self) -> None:
        self.ops.xp.cuda.get_current_stream().synchronize()

    def device_count(self) -> int:
        return int(self.ops.xp.cuda.runtime.getDeviceCount())

    def use_device(self, index: int) -> int:
        """Make GPU ``index`` mod (GPUs here) this thread's current device; returns its index."""
        cuda = self.ops.xp.cuda
        gpu = index % max(1, int(cuda.runtime.getDeviceCount()))
        cuda.Device(gpu).use()
        return gpu

    def stage(self, host: Any) -> Any:
        cp = self.ops.xp
        if self._copy_stream is None:
            self._copy_stream = cp.cuda.Stream(non_blocking=True)
        src = np.asarray(host, order="C")
        pinned_mem = cp.cuda.alloc_pinned_memory(src.nbytes)
        pinned = np.frombuffer(pinned_mem, src.dtype, src.size).reshape(src.shape)
        pinned[...] = src
        compute = cp.cuda.get_current_stream()
        dev = cp.empty(src.shape, src.dtype)       # from the compute stream's pool, so never reused under it
        self._copy_stream.wait_event(compute.record())   # start after the compute stream's queued work
        dev.set(pinned, stream=self._copy_stream)
        return dev, self._copy_stream.record(), pinned_mem

    def ready(self, staged: Any) -> Array:
        """The staged array, usable on the compute stream.  Waits (once per chunk, on the host)
        for its copy, which was issued a chunk earlier: only then may its pinned buffer go."""
        dev, event, _pinned = staged
        self.ops.xp.cuda.get_current_stream().wait_event(event)
        event.synchronize()
        return dev


class CupyOps(Ops):
    """The generic operations on a CUDA GPU through CuPy (no fused kernels: see
    :class:`FusedCupyOps`)."""

    name = "cupy"
    cheap_sync = False
    memory_type = CupyMemory
    graphs_type = CudaGraphs

    def __init__(self, cupy: Any = None) -> None:
        """``cupy``: the CuPy module (imported here, checking for a GPU, when not given; the
        CuPy-shaped test backend passes its own namespace).  A ``CUPY_GPU_MEMORY_LIMIT`` CuPy
        cannot read is refused here, not at CuPy's first allocation."""
        xp = _import_cupy() if cupy is None else cupy
        check_memory_limit()
        super().__init__(xp)
        #: computes gemm and linear: cupy.matmul eagerly, deepnet's cuBLAS handle under stream
        #: capture or at a reduced precision (``CupyProducts.with_precision``)
        self.products: CupyProducts = CupyProducts(self.xp)

    def gemm(self, a: Array, b: Array, *, trans_a: bool = False, trans_b: bool = False,
             out: Array | None = None, accumulate: bool = False) -> Array:
        return self.products.gemm(a.T if trans_a else a, b.T if trans_b else b, out, accumulate)

    def linear(self, x: Array, w: Array) -> Array:
        return self.products.linear(x, w)

    def from_host(self, host: Any) -> Array:
        try:
            return self.xp.asarray(host)
        except self.xp.cuda.memory.OutOfMemoryError:
            raise self.out_of_memory(getattr(host, "nbytes", 0), "copying data to the GPU") from None

    def out_of_memory(self, needed: int, what: str) -> MemoryError:
        info = self.memory.info()
        return MemoryError(
            f"GPU out of memory while {what}: needed {needed / 2**20:,.1f} MiB more, "
            f"{info['free_bytes'] / 2**20:,.1f} MiB free of {info['total_bytes'] / 2**20:,.1f} MiB "
            f"(pool: {info['pool_used_bytes'] / 2**20:,.1f} MiB used, {info['pool_cached_bytes'] / 2**20:,.1f} MiB cached). "
            "Use a smaller batch, fit(..., stream_chunk_rows=...), or CUPY_GPU_MEMORY_LIMIT.")

    def to_host(self, a: Array) -> Any:
        return self.xp.asnumpy(a)

    def set_at_(self, dst: Array, index: Array, value: Array) -> Array:
        dst[index] = value             # a scatter of one element at a device index (no read)
        return dst

    def take_rows(self, a: Array, idx: Array, out: Array | None = None) -> Array:
        """``cupy.take`` gathers straight into ``out`` (one kernel, no allocation)."""
        return self.xp.take(a, idx, axis=0, out=out)

    def owns(self, a: Any) -> bool:
        return isinstance(a, self.xp.ndarray)

    def astype(self, a: Array, dtype: Any) -> Array:
        return a.astype(dtype, copy=False)

    def device_rng(self, seed: int) -> DeviceRNG:
        """Philox4x32-10 keyed by ``seed`` with its counter on the device (cuRAND is refused
        under stream capture; this generator is captured, and its state is exact)."""
        return CounterRNG(self, seed)


class FusedCupyOps(CupyOps):
    """CupyOps with one CUDA kernel (``cupy_kernels``) per elementwise backward and
    optimizer update: one pass over memory each.  The registered ``cupy`` backend."""

    def __init__(self, cupy: Any = None) -> None:
        super().__init__(cupy)
        self._k = cupy_kernels.build(self.xp)
        self._philox: Any = None

    def device_rng(self, seed: int) -> DeviceRNG:
        """:class:`CounterRNG` drawing through one fused Philox kernel (bit-identical to the
        Array-API version the other CuPy backends use)."""
        if self._philox is None:
            self._philox = build_philox_kernel(self.xp)
        return CounterRNG(self, seed, kernel=self._philox)

    #: unfold/fold through the fused window kernels (``cupy_kernels.build_windows``); False: the
    #: generic Array-API path (the CuPy-shaped backend, whose evaluator cannot run their loops)
    fused_windows = True

    def _window_kernels(self) -> Any:
        k = self.__dict__.get("_windows_k")
        if k is None:
            k = self.__dict__["_windows_k"] = cupy_kernels.build_windows(self.xp)
        return k

    @staticmethod
    def _window_args(c: int, h: int, w: int, oh: int, ow: int, win: Window) -> tuple:
        return tuple(np.int32(v) for v in (c, h, w, oh, ow, win.kh, win.kw, win.sh, win.sw, win.pt, win.pl,
                                           win.dh, win.dw))

    def unfold(self, x: Array, win: Window) -> Array:
        """One kernel: each element of cols computes the pixel it copies (0 in the padding)."""
        if not self.fused_windows:
            return super().unfold(x, win)
        n, c, h, w = check_image(x)
        oh, ow = win.out_size(h, w)
        cols = self.xp.empty((n * oh * ow, c * win.kh * win.kw), dtype=x.dtype)
        self._window_kernels().unfold(self.xp.ascontiguousarray(x), *self._window_args(c, h, w, oh, ow, win), cols)
        return cols

    def fold(self, cols: Array, x_shape: tuple[int, int, int, int], win: Window) -> Array:
        """One kernel, a gather: each pixel sums the entries of cols read from it (no atomics)."""
        if not self.fused_windows:
            return super().fold(cols, x_shape, win)
        n, c, h, w, oh, ow = check_cols(cols, x_shape, win)
        dx = self.xp.empty((n, c, h, w), dtype=cols.dtype)
        self._window_kernels().fold(self.xp.ascontiguousarray(cols), *self._window_args(c, h, w, oh, ow, win), dx)
        return dx

    def unfold_t(self, x: Array, win: Window) -> Array:
        """One kernel: each element of cols_t computes the pixel it copies (0 in the padding)."""
        if not self.fused_windows:
            return super().unfold_t(x, win)
        n, c, h, w = check_image(x, "unfold_t")
        oh, ow = win.out_size(h, w)
        cols_t = self.xp.empty((c * win.kh * win.kw, n * oh * ow), dtype=x.dtype)
        self._window_kernels().unfold_t(self.xp.ascontiguousarray(x), np.int32(n),
                                        *self._window_args(c, h, w, oh, ow, win), cols_t)
        return cols_t

    def fold_t(self, cols_t: Array, x_shape: tuple[int, int, int, int], win: Window) -> Array:
        """One kernel, a gather: each pixel sums the entries of cols_t read from it (no atomics)."""
        if not self.fused_windows:
            return super().fold_t(cols_t, x_shape, win)
        n, c, h, w, oh, ow = check_cols_t(cols_t, x_shape, win)
        dx = self.xp.empty((n, c, h, w), dtype=cols_t.dtype)
        self._window_kernels().fold_t(self.xp.ascontiguousarray(cols_t), np.int32(n),
                                      *self._window_args(c, h, w, oh, ow, win), dx)
        return dx

    def _arg(self, t: Any, v: Any) -> Any:
        """A kernel's scalar argument: a number (Python or NumPy) as type ``t``; a 0-d device
        array (a captured step's per-step value, in the parameters' dtype) as it is, read by the
        kernel on the device."""
        return v if isinstance(v, self.xp.ndarray) else t(v)

    def sigmoid_backward_(self, dy: Array, y: Array) -> Array:
        self._k.sigmoid_bwd(y, dy, dy)
        return dy

    def relu_backward_(self, dy: Array, y: Array) -> Array:
        self._k.relu_bwd(y, dy, dy)
        return dy

    def tanh_backward_(self, dy: Array, y: Array) -> Array:
        self._k.tanh_bwd(y, dy, dy)
        return dy

    def sgd_update_(self, w: Array, g: Array, lr: float) -> Array:
        self._k.sgd(g, self._arg(w.dtype.type, lr), w)
        return w

    def momentum_update_(self, w: Array, g: Array, v: Array, lr: float, mu: float,
                         nesterov: bool) -> Array:
        t = w.dtype.type
        self._k.momentum(g, self._arg(t, lr), t(mu), bool(nesterov), w, v)
        return w

    def adam_update_(self, w: Array, g: Array, m: Array, v: Array, lr_t: float, beta1: float,
                     beta2: float, eps_hat: float, decay: float) -> Array:
        t = w.dtype.type
        self._k.adam(g, self._arg(t, lr_t), t(beta1), t(beta2), t(1.0 - beta1), t(1.0 - beta2),
                     self._arg(t, eps_hat), self._arg(t, decay), w, m, v)
        return w
