"""The NumPy backend with numba-compiled kernels (``NumbaOps``): the same functions as
:class:`~deepnet.backend.numpy_ops.NumpyOps`, faster where measured.

Each override takes the compiled kernel (``numba_kernels``) where its size threshold and
the arrays' layout allow, else the pure-NumPy method it overrides.  The registered
``numpy`` backend is a ``NumbaOps`` when numba imports and ``DEEPNET_NUMBA`` is not "0".
"""

from __future__ import annotations

import threading
from itertools import chain
from types import ModuleType
from typing import Any

import numpy as np

from .counter_rng import CounterRNG, PhiloxKernel
from .numpy_ops import NumpyOps
from .ops import Array, DeviceRNG, check_cols_t
from .products import NumpyProducts
from .windows import Window, check_image

_NUMBA_MIN_SIZE = 1024   # one parameter alone: below this NumPy's passes cost less than a compiled call
_NUMBA_LARGE_MIN = 16384  # ReLU forward: from here one compiled pass beats np.maximum
_NUMBA_SMALL_MAX = 4096  # activations up to this size: one compiled call beats several ufunc calls
# (the fourth, numba_kernels.PARALLEL_MIN_SIZE, picks the threaded update kernels)
_WINDOW_THREADED_MIN = 1 << 18   # window kernels: from here numba's threads split the planes
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_MULTI_MIN_PARAMS = 3    # multi-tensor updates: typed lists pay off from 3 parameters on


def load_window_kernels() -> ModuleType:
    """The compiled sliding-window kernels, ``deepnet.backend.numba_windows`` (numba at its top)."""
    from . import numba_windows      # an optional package's wrapper (tests/test_architecture.py)

    return numba_windows


def load_kernels() -> ModuleType:
    """The compiled kernels, ``deepnet.backend.numba_kernels``.  That module imports numba
    (about 0.5 s) at its top, so it is loaded when a NumbaOps is made, never when deepnet
    is imported; ImportError without numba."""
    from . import numba_kernels      # an optional package's wrapper (tests/test_architecture.py)

    return numba_kernels


_TINY: dict[Any, Any] = {}


def _tiny(t: Any) -> Any:
    """The smallest normal number of scalar type ``t``, as a ``t`` (cached: np.finfo costs ~1 µs)."""
    v = _TINY.get(t)
    if v is None:
        v = _TINY[t] = t(np.finfo(t).tiny)
    return v


_CONST: dict[tuple, Any] = {}


def _const(t: Any, value: float) -> Any:
    """``t(value)``, cached: kernels take their constants in the arrays' dtype."""
    key = (t, value)
    v = _CONST.get(key)
    if v is None:
        v = _CONST[key] = t(value)
    return v


def _flat_views(arrays: tuple[Array, ...]) -> tuple[Array, ...] | None:
    """1-D views of arrays that share one shape, dtype and contiguous layout (all row-major
    or all column-major), element i of each being the same entry; None otherwise (then a
    flat view could be a copy, and an in-place kernel would write into the copy)."""
    a0 = arrays[0]
    shape, dtype = a0.shape, a0.dtype
    c_order = f_order = True
    for a in arrays:                   # a plain loop: this runs for every update call
        if a.shape != shape or a.dtype != dtype:
            return None
        flags = a.flags
        c_order = c_order and flags.c_contiguous
        f_order = f_order and flags.f_contiguous
    if c_order:
        return tuple([a.reshape(-1) for a in arrays])
    if f_order:
        return tuple([a.T.reshape(-1) for a in arrays])
    return None


def _pairs(win: Window) -> bool:
    """The 2×2 window with stride 2 and no padding (its own compiled kernels)."""
    return (win.kh, win.kw, win.sh, win.sw, win.padded) == (2, 2, 2, 2, False)


def _same_rows(a: Array, b: Array) -> bool:
    """Both row-major, one shape and dtype: an elementwise kernel may walk them flat."""
    return a.flags.c_contiguous and b.flags.c_contiguous and a.shape == b.shape and a.dtype == b.dtype


class NumbaOps(NumpyOps):
    """NumpyOps plus numba's compiled kernels (``kernels``: default ``numba_kernels``)."""

    max_pool_kernel = True

    def __init__(self, products: NumpyProducts | None = None, kernels: ModuleType | None = None) -> None:
        super().__init__(products)
        self._k: ModuleType = load_kernels() if kernels is None else kernels
        self._w: ModuleType = load_window_kernels()
        self._multi_cache: dict[tuple, tuple] = {}

    # ------------------------------------------------------------------ max-pooling
    def _window_kernel(self, name: str, size: int) -> Any:
        """The kernel ``name``, threaded for large arrays on the main thread (numba's workqueue
        pool takes one caller at a time)."""
        if size >= _WINDOW_THREADED_MIN and threading.current_thread() is threading.main_thread():
            return self._w.threaded[name]
        return self._w.serial[name]

    def max_pool(self, x: Array, win: Window) -> tuple[Array, Array]:
        n, c, h, w = check_image(x, "max_pool")
        oh, ow = win.out_size(h, w)
        if win.dh != 1 or win.dw != 1:
            raise ValueError(f"max_pool: expected an undilated window, got dilation {(win.dh, win.dw)}")
        xs = np.ascontiguousarray(x).reshape(n * c, h, w)
        y = np.empty((n, c, oh, ow), x.dtype)
        arg = np.empty((n, c, oh, ow), np.int8 if win.kh * win.kw <= 127 else np.int32)
        ys, args = y.reshape(n * c, oh, ow), arg.reshape(n * c, oh, ow)
        if _pairs(win):
            self._window_kernel("max_pool_2x2", x.size)(xs, ys, args)
        else:
            self._window_kernel("max_pool", x.size)(xs, ys, args, win.kh, win.kw, win.sh, win.sw, win.pt, win.pl)
        return y, arg

    def max_pool_backward(self, dy: Array, arg: Array, x_shape: tuple[int, int, int, int], win: Window) -> Array:
        n, c, h, w = (int(d) for d in x_shape)
        oh, ow = int(dy.shape[2]), int(dy.shape[3])
        dx = np.empty((n, c, h, w), dy.dtype)
        dys, args, dxs = np.ascontiguousarray(dy).reshape(n * c, oh, ow), arg.reshape(n * c, oh, ow), dx.reshape(n * c, h, w)
        zero = _const(dy.dtype.type, 0.0)
        if _pairs(win):
            self._window_kernel("max_pool_2x2_backward", dx.size)(dys, args, dxs, zero)
        else:
            self._window_kernel("max_pool_backward", dx.size)(dys, args, dxs, win.kw, win.sh, win.sw, win.pt,
                                                              win.pl, zero)
        return dx

    # ------------------------------------------------------------------ random numbers
    def device_rng(self, seed: int) -> DeviceRNG:
        """:class:`CounterRNG` (Philox4x32-10) drawing through ``numba_kernels.philox_fill``: the
        bits of the CuPy backends' generator for the same seed, which a compiled training step
        can draw from as well (``philox_fill(out, rng.counter, *rng.key_words())``)."""
        return CounterRNG(self, seed, kernel=self._philox_kernel())

    def _philox_kernel(self) -> PhiloxKernel:
        """The compiled fill (:meth:`_philox_into`)."""
        return self._philox_into

    def _philox_into(self, out: Array, counter: Array, k0: Any, k1: Any) -> None:
        """``philox_fill`` for any ``out``: a C-contiguous one is filled through its flat view,
        another through a flat buffer copied in (its values in flat C order)."""
        if out.flags.c_contiguous:
            self._k.philox_fill(out.reshape(-1), counter, k0, k1)
            return
        flat = np.empty(out.size, dtype=out.dtype)
        self._k.philox_fill(flat, counter, k0, k1)
        out[...] = flat.reshape(out.shape)

    def _update_views(self, *arrays: Array) -> tuple[Array, ...] | None:
        """Flat views of a one-parameter update's arrays for its compiled kernel, or None
        for NumPy's passes (below ``_NUMBA_MIN_SIZE``, or layouts the kernel cannot take)."""
        w = arrays[0]
        if w.size < _NUMBA_MIN_SIZE:
            return None
        if len(arrays) == 2 and w.flags.c_contiguous and arrays[1].flags.c_contiguous and \
                arrays[1].shape == w.shape and arrays[1].dtype == w.dtype:
            return (w.reshape(-1), arrays[1].reshape(-1))        # plain SGD, the batch-1 hot path
        return _flat_views(arrays)

    # ------------------------------------------------------------------ activations, losses
    def sigmoid(self, x: Array) -> Array:
        if x.size <= _NUMBA_SMALL_MAX and x.flags.c_contiguous:
            y = np.empty_like(x)
            self._k.elementwise["sigmoid"](x.reshape(-1), y.reshape(-1), _const(x.dtype.type, 1.0))
            return y
        return super().sigmoid(x)

    def sigmoid_backward_(self, dy: Array, y: Array) -> Array:
        if dy.size <= _NUMBA_SMALL_MAX and dy.flags.c_contiguous and y.flags.c_contiguous:
            self._k.elementwise["sigmoid_backward"](dy.reshape(-1), y.reshape(-1), _const(dy.dtype.type, 1.0))
            return dy
        return super().sigmoid_backward_(dy, y)

    def relu(self, x: Array) -> Array:
        if x.size >= _NUMBA_LARGE_MIN and x.flags.c_contiguous:   # one read of x (1.5x faster from ~16K elements)
            y = np.empty_like(x)
            self._k.elementwise["relu"](x.reshape(-1), y.reshape(-1), _const(x.dtype.type, 0.0))
            return y
        return super().relu(x)

    def relu_backward_(self, dy: Array, y: Array) -> Array:
        if _same_rows(dy, y):             # one pass; 3-4x faster than the boolean mask
            self._k.elementwise["relu_backward"](dy.reshape(-1), y.reshape(-1), _const(dy.dtype.type, 0.0))
            return dy
        return super().relu_backward_(dy, y)

    def add_bias_(self, y: Array, b: Array) -> Array:
        if y.ndim == 2 and y.shape[0] > 1 and b.ndim == 1 and y.dtype == b.dtype and b.flags.c_contiguous \
                and y.flags.c_contiguous:  # one in-place pass, 2x faster than the broadcast add
            self._k.elementwise["add_bias"](y, b)
            return y
        return super().add_bias_(y, b)

    def softmax_cross_entropy(self, logits: Array, target: Array, scale: float) -> tuple[Array, Array]:
        if target.ndim == 1 and target.dtype.kind in "iu" and logits.flags.c_contiguous:
            grad = np.empty_like(logits)                  # one compiled pass over the rows
            loss = self._k.elementwise["softmax_xent"](logits, target, logits.dtype.type(scale), grad)
            return np.asarray(loss, dtype=logits.dtype), grad
        return super().softmax_cross_entropy(logits, target, scale)

    def step_compiler(self) -> ModuleType:
        """The compiled training step (``deepnet.backend.numba_steps``, loaded on first use)."""
        from . import numba_steps

        return numba_steps

    # ------------------------------------------------------------------ optimizer updates
    def sgd_update_(self, w: Array, g: Array, lr: float) -> Array:
        flat = self._update_views(w, g)
        if flat is None:
            return super().sgd_update_(w, g, lr)
        self._k.kernel("sgd", w.size)(*flat, w.dtype.type(lr))
        return w

    def momentum_update_(self, w: Array, g: Array, v: Array, lr: float, mu: float,
                         nesterov: bool) -> Array:
        flat = self._update_views(w, g, v)
        if flat is None:
            return super().momentum_update_(w, g, v, lr, mu, nesterov)
        t = w.dtype.type
        self._k.kernel("momentum", w.size)(*flat, t(lr), t(mu), nesterov, _tiny(t))
        return w

    def adam_update_(self, w: Array, g: Array, m: Array, v: Array, lr_t: float, beta1: float,
                     beta2: float, eps_hat: float, decay: float) -> Array:
        flat = self._update_views(w, g, m, v)
        if flat is None:
            return super().adam_update_(w, g, m, v, lr_t, beta1, beta2, eps_hat, decay)
        t = w.dtype.type
        self._k.kernel("adam", w.size)(*flat, t(lr_t), t(beta1), t(beta2), t(1.0 - beta1), t(1.0 - beta2),
                                       t(eps_hat), t(decay), _tiny(t))
        return w

    # Multi-tensor updates: every parameter below the parallel size goes into one compiled
    # call over typed lists (built once per set of arrays, cached); large parameters get the
    # parallel one-parameter kernel; anything the compiled code cannot take (mixed dtypes,
    # non-contiguous) the NumPy path.
    def _multi(self, groups: tuple[list[Array], ...]) -> tuple[Any, list[int], Any]:
        """(typed lists or None, indices of the parameters left over, scalar type)."""
        key = tuple(map(id, chain.from_iterable(groups)))
        hit = self._multi_cache.get(key)
        if hit is not None:
            return hit[0], hit[1], hit[2]
        k, ws = self._k, groups[0]
        dtype = ws[0].dtype if ws else None
        batched, rest = [], []
        views = []
        for i, w in enumerate(ws):
            flat = None
            if w.size < k.PARALLEL_MIN_SIZE and w.dtype == dtype:
                flat = _flat_views(tuple(grp[i] for grp in groups))
            if flat is None:
                rest.append(i)
            else:
                batched.append(i)
                views.append(flat)
        lists = tuple(k.typed_list([v[j] for v in views]) for j in range(len(groups))) if batched else None
        if len(self._multi_cache) >= 4:
            self._multi_cache.clear()
        # The typed lists hold views of the batched arrays, so their ids cannot be reused by
        # other arrays while the entry lives; the others are looked up by index in the
        # caller's lists on every call.  Nothing else is kept alive (a stale entry holds
        # only parameters below the parallel size).
        self._multi_cache[key] = (lists, rest, None if dtype is None else dtype.type)
        return lists, rest, None if dtype is None else dtype.type

    def sgd_update_many_(self, ws: list[Array], gs: list[Array], lr: float) -> None:
        if len(ws) < _MULTI_MIN_PARAMS:
            return super().sgd_update_many_(ws, gs, lr)
        lists, rest, t = self._multi((ws, gs))
        if lists is not None:
            self._k.many["sgd"](*lists, t(lr))
        for i in rest:
            self.sgd_update_(ws[i], gs[i], lr)

    def momentum_update_many_(self, ws: list[Array], gs: list[Array], vs: list[Array], lr: float, mu: float,
                              nesterov: bool) -> None:
        if len(ws) < _MULTI_MIN_PARAMS:
            return super().momentum_update_many_(ws, gs, vs, lr, mu, nesterov)
        lists, rest, t = self._multi((ws, gs, vs))
        if lists is not None:
            self._k.many["momentum"](*lists, t(lr), t(mu), nesterov, _tiny(t))
        for i in rest:
            self.momentum_update_(ws[i], gs[i], vs[i], lr, mu, nesterov)

    def adam_update_many_(self, ws: list[Array], gs: list[Array], ms: list[Array], vs: list[Array], lr_t: float,
                          beta1: float, beta2: float, eps_hat: float, decay: float) -> None:
        if len(ws) < _MULTI_MIN_PARAMS:
            return super().adam_update_many_(ws, gs, ms, vs, lr_t, beta1, beta2, eps_hat, decay)
        lists, rest, t = self._multi((ws, gs, ms, vs))
        if lists is not None:
            self._k.many["adam"](*lists, t(lr_t), t(beta1), t(beta2), t(1.0 - beta1), t(1.0 - beta2),
                                 t(eps_hat), t(decay), _tiny(t))
        for i in rest:
            self.adam_update_(ws[i], gs[i], ms[i], vs[i], lr_t, beta1, beta2, eps_hat, decay)
