"""CuPy backend: generic operations on the GPU plus fused elementwise kernels.

CuPy is imported only when this backend is first asked for, never when deepnet is
imported, so machines without CUDA import deepnet without touching it.
"""

from __future__ import annotations

from typing import Any

from .ops import Array, DeviceRNG, Ops

INSTALL_HINT = ("install CuPy for your CUDA version: pip install 'deepnet[cuda12]' "
                "or pip install 'deepnet[cuda13]'")


def _import_cupy() -> Any:
    from .core import BackendError

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


class _CupyRNG(DeviceRNG):
    """CuPy's own generator: masks are drawn on the GPU, seeded from the host run."""

    def __init__(self, ops: Ops, seed: int) -> None:
        self.ops = ops
        self._seed = seed
        self._gen = ops.xp.random.default_rng(seed)

    def uniform(self, shape: tuple[int, ...], dtype: Any) -> Array:
        return self._gen.random(shape, dtype=dtype)

    def get_state(self) -> dict:
        # CuPy generators expose no portable state; record the seed only.
        return {"cupy_seed": self._seed}

    def set_state(self, state: dict) -> None:
        self._seed = int(state.get("cupy_seed", self._seed))
        self._gen = self.ops.xp.random.default_rng(self._seed)


class CupyOps(Ops):
    name = "cupy"
    cheap_sync = False

    def __init__(self, cupy: Any = None) -> None:
        """``cupy``: the CuPy module (imported here, checking for a GPU, when not given; the
        CuPy-shaped test backend passes its own namespace)."""
        cupy = _import_cupy() if cupy is None else cupy
        super().__init__(cupy)
        from . import cupy_kernels

        self._k = cupy_kernels.build(cupy)
        self.use_fused = True

    def from_host(self, host: Any) -> Array:
        try:
            return self.xp.asarray(host)
        except self.xp.cuda.memory.OutOfMemoryError:
            raise self.out_of_memory(getattr(host, "nbytes", 0), "copying data to the GPU") from None

    def out_of_memory(self, needed: int, what: str) -> MemoryError:
        info = self.memory_info()
        return MemoryError(
            f"GPU out of memory while {what}: needed {needed / 2**20:,.1f} MiB more, "
            f"{info['free_bytes'] / 2**20:,.1f} MiB free of {info['total_bytes'] / 2**20:,.1f} MiB "
            f"(pool: {info['pool_used_bytes'] / 2**20:,.1f} MiB used, {info['pool_cached_bytes'] / 2**20:,.1f} MiB cached). "
            "Use a smaller batch, fit(..., stream_chunk_rows=...), or CUPY_GPU_MEMORY_LIMIT.")

    # -- memory ---------------------------------------------------------------
    def memory_info(self) -> dict[str, Any]:
        pool = self.xp.get_default_memory_pool()
        free, total = self.xp.cuda.runtime.memGetInfo()
        return {"pool_used_bytes": int(pool.used_bytes()), "pool_cached_bytes": int(pool.total_bytes() - pool.used_bytes()),
                "pool_limit_bytes": int(pool.get_limit()), "free_bytes": int(free), "total_bytes": int(total)}

    def release_memory(self) -> None:
        self.xp.get_default_memory_pool().free_all_blocks()
        self.xp.get_default_pinned_memory_pool().free_all_blocks()

    def device_info(self) -> dict[str, Any]:
        props = self.xp.cuda.runtime.getDeviceProperties(self.xp.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        return {"name": name, **self.memory_info()}

    # -- streaming: pinned host buffers, copies on a side stream -----------------
    def stream_rows_for(self, host_X: Any, batch_size: int) -> int | None:
        nbytes = getattr(host_X, "nbytes", 0) * 2          # inputs plus their shuffled copy
        if nbytes < 0.6 * self.memory_info()["free_bytes"]:
            return None
        row = max(1, host_X.nbytes // max(1, host_X.shape[0]))
        rows = max(batch_size, int(0.1 * self.memory_info()["free_bytes"] // row) // batch_size * batch_size)
        return rows

    def stage(self, host: Any) -> Any:
        import numpy as np

        cp = self.xp
        if not hasattr(self, "_copy_stream"):
            self._copy_stream = cp.cuda.Stream(non_blocking=True)
        src = np.ascontiguousarray(host)
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
        self.xp.cuda.get_current_stream().wait_event(event)
        event.synchronize()
        return dev

    def to_host(self, a: Array) -> Any:
        return self.xp.asnumpy(a)

    def owns(self, a: Any) -> bool:
        return isinstance(a, self.xp.ndarray)

    def astype(self, a: Array, dtype: Any) -> Array:
        return a.astype(dtype, copy=False)

    # Fused kernels: one pass over memory each; ``use_fused = False`` forces the generic path.
    def sigmoid_backward_(self, dy: Array, y: Array) -> Array:
        if not self.use_fused:
            return super().sigmoid_backward_(dy, y)
        self._k.sigmoid_bwd(y, dy, dy)
        return dy

    def relu_backward_(self, dy: Array, y: Array) -> Array:
        if not self.use_fused:
            return super().relu_backward_(dy, y)
        self._k.relu_bwd(y, dy, dy)
        return dy

    def tanh_backward_(self, dy: Array, y: Array) -> Array:
        if not self.use_fused:
            return super().tanh_backward_(dy, y)
        self._k.tanh_bwd(y, dy, dy)
        return dy

    def sgd_update_(self, w: Array, g: Array, lr: float) -> Array:
        if not self.use_fused:
            return super().sgd_update_(w, g, lr)
        self._k.sgd(g, w.dtype.type(lr), w)
        return w

    def momentum_update_(self, w: Array, g: Array, v: Array, lr: float, mu: float,
                         nesterov: bool) -> Array:
        if not self.use_fused:
            return super().momentum_update_(w, g, v, lr, mu, nesterov)
        t = w.dtype.type
        self._k.momentum(g, t(lr), t(mu), bool(nesterov), w, v)
        return w

    def adam_update_(self, w: Array, g: Array, m: Array, v: Array, lr: float, beta1: float,
                     beta2: float, eps: float, step: int, decoupled_wd: float = 0.0) -> Array:
        if not self.use_fused:
            return super().adam_update_(w, g, m, v, lr, beta1, beta2, eps, step, decoupled_wd)
        c2 = (1.0 - beta2 ** step) ** 0.5
        t = w.dtype.type
        self._k.adam(g, t(lr * c2 / (1.0 - beta1 ** step)), t(beta1), t(beta2), t(1.0 - beta1), t(1.0 - beta2),
                     t(eps * c2), t(1.0 - lr * decoupled_wd), w, m, v)
        return w

    def device_rng(self, seed: int) -> DeviceRNG:
        return _CupyRNG(self, seed)
