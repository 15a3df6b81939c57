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

    def __init__(self) -> None:
        cupy = _import_cupy()
        super().__init__(cupy)
        from . import cupy_kernels

        self._k = cupy_kernels.build(cupy)
        self.use_fused = True

    def from_host(self, host: Any) -> Array:
        return self.xp.asarray(host)

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
        self._k.adam(g, t(lr * c2 / (1.0 - beta1 ** step)), t(beta1), t(beta2), t(eps * c2),
                     t(1.0 - lr * decoupled_wd), w, m, v)
        return w

    def device_rng(self, seed: int) -> DeviceRNG:
        return _CupyRNG(self, seed)
