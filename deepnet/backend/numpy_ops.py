"""NumPy backend: the generic operations plus in-place fast paths (``out=``)."""

from __future__ import annotations

import os
from itertools import chain
from typing import Any

import numpy as np

from .ops import Array, DeviceRNG, Ops, _store


class _NumpyRNG(DeviceRNG):
    """On the CPU the device generator is a NumPy generator drawing in place."""

    def uniform(self, shape: tuple[int, ...], dtype: Any) -> Array:
        return self._gen.random(shape, dtype=np.dtype(dtype))


_NUMBA_MIN_SIZE = 1024   # one parameter alone: below this NumPy's passes cost less than a compiled call
_NUMBA_LARGE_MIN = 16384  # ReLU forward: from here one compiled pass beats np.maximum
_NUMBA_SMALL_MAX = 4096  # activations up to this size: one compiled call beats several ufunc calls
_MKL_MIN_WORK = 1 << 17    # multiply-adds below which np.dot beats a ctypes call into MKL


def _load_numba() -> Any:
    """The compiled kernels, or None when numba is missing or disabled (DEEPNET_NUMBA=0)."""
    import os

    if os.environ.get("DEEPNET_NUMBA", "1") == "0":
        return None
    try:
        from . import numba_kernels
    except ImportError:
        return None
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


class NumpyOps(Ops):
    name = "numpy"
    host_arrays = True

    def __init__(self) -> None:
        super().__init__(np)
        self._numba: Any = False          # not looked for yet: numba is imported on first use
        self.use_numba = True
        # matrix products: NumPy (OpenBLAS in its wheels) unless oneMKL is asked for; the
        # library is loaded on first use, never at import
        self._blas_name = os.environ.get("DEEPNET_BLAS", "numpy").strip().lower() or "numpy"
        if self._blas_name not in ("numpy", "mkl"):
            raise ValueError(f"DEEPNET_BLAS must be 'numpy' or 'mkl', got {self._blas_name!r}")
        self._mkl: Any = None
        self._zero_cache: dict[tuple, np.ndarray] = {}
        self._rows_cache: dict[int, np.ndarray] = {}
        self._ones_cache: dict[tuple, np.ndarray] = {}
        self._multi_cache: dict[tuple, tuple] = {}

    def _kernels(self, *arrays: Array) -> tuple[Any, tuple[Array, ...]]:
        """(numba kernels, flat views of ``arrays``) for an update, or (None, ()) for the
        pure-NumPy path."""
        w = arrays[0]
        if not self.use_numba or w.size < _NUMBA_MIN_SIZE:
            return None, ()
        if len(arrays) == 2 and w.flags.c_contiguous and arrays[1].flags.c_contiguous and \
                arrays[1].shape == w.shape and arrays[1].dtype == w.dtype:
            flat = (w.reshape(-1), arrays[1].reshape(-1))       # plain SGD, the batch-1 hot path
        else:
            flat = _flat_views(arrays)
        if flat is None:
            return None, ()
        if self._numba is False:
            self._numba = _load_numba()
        return self._numba, flat

    def from_host(self, host: Any) -> Array:
        return np.array(host, copy=True)

    def to_host(self, a: Array) -> np.ndarray:
        return a

    def owns(self, a: Any) -> bool:
        return isinstance(a, np.ndarray)

    def stage(self, host: Any) -> Any:
        return np.ascontiguousarray(host)

    def astype(self, a: Array, dtype: Any) -> Array:
        return a.astype(dtype, copy=False)

    # ------------------------------------------------------------------ BLAS choice
    @property
    def blas(self) -> str:
        """Which library computes the matrix products: ``"numpy"`` or ``"mkl"``."""
        return self._blas_name

    def set_blas(self, name: str) -> None:
        """Compute matrix products with NumPy (``"numpy"``) or Intel oneMKL (``"mkl"``,
        needs ``pip install 'deepnet[mkl]'``; raises :class:`MklUnavailable` if missing)."""
        name = name.strip().lower()
        if name not in ("numpy", "mkl"):
            raise ValueError(f"set_blas: expected 'numpy' or 'mkl', got {name!r}")
        if name == "mkl":
            self._mkl_lib()            # load first: a missing library leaves the choice unchanged
        self._blas_name = name

    def _mkl_lib(self) -> Any:
        if self._mkl is None:
            from .mkl_blas import MklBlas

            self._mkl = MklBlas()
        return self._mkl

    def gemm(self, a: Array, b: Array, *, trans_a: bool = False, trans_b: bool = False,
             out: Array | None = None, accumulate: bool = False) -> Array:
        # np.dot goes to BLAS for every 2-D case, including the batch-1 outer product
        # δ·z̃ᵀ (k = 1), for which np.matmul falls back to a slow loop.
        at = a.T if trans_a else a
        bt = b.T if trans_b else b
        if self._blas_name == "mkl" and at.ndim == 2 == bt.ndim and \
                at.shape[0] * at.shape[1] * bt.shape[1] >= _MKL_MIN_WORK:
            mkl = self._mkl_lib()
            if out is None:
                res = np.empty((at.shape[0], bt.shape[1]), np.result_type(at, bt))
                if mkl.gemm(at, bt, res, 0.0):
                    return res
            elif mkl.gemm(at, bt, out, 1.0 if accumulate else 0.0):
                return out
        if out is None:
            return np.dot(at, bt)
        if accumulate:
            out += np.dot(at, bt)
        elif out.flags.c_contiguous:
            np.dot(at, bt, out=out)
        else:                    # column-major out (the first layer's ∂f/∂W): outᵀ = op(b)ᵀ op(a)ᵀ
            np.dot(bt.T, at.T, out=out.T)
        return out

    def linear(self, x: Array, w: Array) -> Array:
        if self._blas_name == "mkl":
            return self.gemm(x, w, trans_b=True)
        return np.dot(x, w.T)      # w column-major (first layer): wᵀ is row-major, a plain NN product

    def first_layer_weight(self, w: Array, batch_size: int) -> Array:
        # The first layer computes only y = x Wᵀ and ∂f/∂W = δᵀ x (never ẽ = δ W).  With W
        # column-major, x Wᵀ is a plain row-major product and ∂f/∂W is written as xᵀ δ:
        # 10-30% less time in OpenBLAS from batches of ~16 rows on (measured for 784 inputs
        # and 50-512 outputs); for 1-2 rows the row-major layout is faster.
        if w.ndim != 2 or w.shape[0] == 1:
            return w
        if batch_size >= 16:
            return w if w.flags.f_contiguous else np.asfortranarray(w)
        return w if w.flags.c_contiguous else np.ascontiguousarray(w)

    def argmax_rows(self, a: Array) -> Array:
        return a.argmax(axis=1)

    def sum_rows(self, a: Array, *, out: Array | None = None, accumulate: bool = False) -> Array:
        if out is None:
            return a.sum(axis=0)
        if a.shape[0] == 1:
            if accumulate:
                out += a[0]
            else:
                out[...] = a[0]
            return out
        if a.ndim != 2 or a.dtype != out.dtype or not out.flags.c_contiguous:
            return _store(a.sum(axis=0), out, accumulate)
        if self._blas_name == "mkl" and self._mkl_lib().column_sums(a, self._ones(a.shape[0], a.dtype), out,
                                                                    1.0 if accumulate else 0.0):
            return out
        # 1ᵀ·a through BLAS (gemv): 2-4x faster than np.sum(axis=0) for error rows
        ones = self._ones(a.shape[0], a.dtype)
        if accumulate:
            out += np.dot(ones, a)
        else:
            np.dot(ones, a, out=out)
        return out

    def sum_squares(self, a: Array) -> Array:
        flat = a.reshape(-1)
        return np.asarray(np.dot(flat, flat))

    def _compiled(self, a: Array, b: Array) -> Any:
        """Compiled elementwise kernels for two contiguous arrays of one shape and dtype, any size."""
        if not (self.use_numba and a.flags.c_contiguous and b.flags.c_contiguous and a.shape == b.shape
                and a.dtype == b.dtype):
            return None
        if self._numba is False:
            self._numba = _load_numba()
        return self._numba

    def _small_kernels(self, a: Array) -> Any:
        """Compiled elementwise kernels for small contiguous arrays (call overhead regime)."""
        if not self.use_numba or a.size > _NUMBA_SMALL_MAX or not a.flags.c_contiguous:
            return None
        if self._numba is False:
            self._numba = _load_numba()
        return self._numba

    def sigmoid(self, x: Array) -> Array:
        k = self._small_kernels(x)
        if k is not None:
            y = np.empty_like(x)
            k.elementwise["sigmoid"](x.reshape(-1), y.reshape(-1), _const(x.dtype.type, 1.0))
            return y
        # Two-branch form without a branch or masked store: with e = e^(−|x|),
        # σ(x) = n/(1+e) where n = 1 for x ≥ 0 and e otherwise, i.e. n = max(e, [x ≥ 0])
        # (e ≤ 1).  Relative error a few ulp for all x (½·tanh(x/2)+½ returned 0 from
        # x ≈ −17 in float32); two arrays and a mask, one exp, no tanh: 64×1024 float32 in
        # 150-235 µs against 200-295 µs for the tanh form (2-core AMD EPYC, NumPy 2.4.6).
        e = np.abs(x)
        np.negative(e, out=e)
        np.exp(e, out=e)
        y = np.maximum(e, x >= 0, dtype=x.dtype)
        e += 1.0
        y /= e
        return y

    def sigmoid_backward_(self, dy: Array, y: Array) -> Array:
        k = self._small_kernels(dy)
        if k is not None and y.flags.c_contiguous:
            k.elementwise["sigmoid_backward"](dy.reshape(-1), y.reshape(-1), _const(dy.dtype.type, 1.0))
            return dy
        dy *= y * (1.0 - y)
        return dy

    def relu(self, x: Array) -> Array:
        if x.size >= _NUMBA_LARGE_MIN:
            k = self._compiled(x, x)
            if k is not None:             # one read of x (1.5x faster from ~16K elements)
                y = np.empty_like(x)
                k.elementwise["relu"](x.reshape(-1), y.reshape(-1), _const(x.dtype.type, 0.0))
                return y
        # against a zero array of the same shape: several times faster than a scalar 0
        return np.maximum(x, self._zeros_like(x))

    def add_bias_(self, y: Array, b: Array) -> Array:
        if y.ndim == 2 and y.shape[0] > 1 and b.ndim == 1 and y.dtype == b.dtype and b.flags.c_contiguous:
            k = self._compiled(y, y)
            if k is not None:             # one in-place pass, 2x faster than the broadcast add
                k.elementwise["add_bias"](y, b)
                return y
        y += b
        return y

    def _zeros_like(self, x: Array) -> Array:
        """A cached, read-only array of zeros shaped like ``x`` (never written to)."""
        key = (x.shape, x.dtype.char)
        z = self._zero_cache.get(key)
        if z is None:
            if len(self._zero_cache) > 32:
                self._zero_cache.clear()
            z = self._zero_cache[key] = np.zeros(x.shape, x.dtype)
            z.flags.writeable = False
        return z

    def relu_backward_(self, dy: Array, y: Array) -> Array:
        k = self._compiled(dy, y)
        if k is not None:                 # one pass; 3-4x faster than the boolean mask
            k.elementwise["relu_backward"](dy.reshape(-1), y.reshape(-1), _const(dy.dtype.type, 0.0))
            return dy
        dy *= y > 0
        return dy

    def squared_error(self, z: Array, y: Array, scale: float) -> tuple[Array, Array]:
        e = np.subtract(z, y)
        flat = e.reshape(-1)
        if scale == 1.0:
            loss = np.dot(flat, flat)
            e *= 2.0
        else:
            loss = np.dot(flat, flat) * scale
            e *= 2.0 * scale
        return loss, e

    def softmax_cross_entropy(self, logits: Array, target: Array, scale: float) -> tuple[Array, Array]:
        if target.ndim != 1:
            return super().softmax_cross_entropy(logits, target, scale)
        k = self._compiled(logits, logits)
        if k is not None and target.dtype.kind in "iu":      # one compiled pass over the rows
            grad = np.empty_like(logits)
            t = logits.dtype.type
            loss = k.elementwise["softmax_xent"](logits, target, t(scale), grad)
            return np.asarray(loss, dtype=logits.dtype), grad
        n = logits.shape[0]
        rows = self._rows(n)
        m = logits.max(axis=1, keepdims=True)
        p = np.subtract(logits, m)
        picked = p[rows, target]                       # z_y − max z
        np.exp(p, out=p)
        s = p.sum(axis=1, keepdims=True)
        loss = (np.log(s).sum() - picked.sum()) * scale
        p *= scale / s
        p[rows, target] -= scale                      # scale · (softmax(z) − one_hot(y))
        return np.asarray(loss, dtype=logits.dtype), p

    def _ones(self, n: int, dtype: Any) -> Array:
        key = (n, np.dtype(dtype).char)
        r = self._ones_cache.get(key)
        if r is None:
            if len(self._ones_cache) > 8:
                self._ones_cache.clear()
            r = self._ones_cache[key] = np.ones(n, dtype)
            r.flags.writeable = False
        return r

    def _rows(self, n: int) -> Array:
        r = self._rows_cache.get(n)
        if r is None:
            if len(self._rows_cache) > 8:
                self._rows_cache.clear()
            r = self._rows_cache[n] = np.arange(n)
        return r

    # Optimizer kernels: the gradient buffer g is consumed by the update and used as the
    # scratch space, so no temporary is allocated and only w, g (and the slots) are touched.
    def sgd_update_(self, w: Array, g: Array, lr: float) -> Array:
        k, flat = self._kernels(w, g)
        if k is not None:
            t = w.dtype.type
            k.kernel("sgd", w.size)(*flat, t(lr))
            return w
        g *= lr
        w -= g
        return w

    def momentum_update_(self, w: Array, g: Array, v: Array, lr: float, mu: float,
                         nesterov: bool) -> Array:
        k, flat = self._kernels(w, g, v)
        if k is not None:
            t = w.dtype.type
            k.kernel("momentum", w.size)(*flat, t(lr), t(mu), nesterov, _tiny(w.dtype.type))
            return w
        v *= mu
        v += g
        if nesterov:
            g += v * mu
            g *= lr
        else:
            np.multiply(v, lr, out=g)
        w -= g
        return w

    def adam_update_(self, w: Array, g: Array, m: Array, v: Array, lr: float, beta1: float,
                     beta2: float, eps: float, step: int, decoupled_wd: float = 0.0) -> Array:
        c2 = (1.0 - beta2 ** step) ** 0.5
        lr_t = lr * c2 / (1.0 - beta1 ** step)
        k, flat = self._kernels(w, g, m, v)
        if k is not None:
            t = w.dtype.type
            k.kernel("adam", w.size)(*flat, t(lr_t), t(beta1),
                                     t(beta2), t(1.0 - beta1), t(1.0 - beta2), t(eps * c2), t(1.0 - lr * decoupled_wd),
                                     _tiny(w.dtype.type))
            return w
        m -= g                          # m ← β₁m + (1−β₁)g  =  β₁(m − g) + g
        m *= beta1
        m += g
        g *= g
        g *= 1.0 - beta2
        v *= beta2
        v += g
        if decoupled_wd:
            w *= 1.0 - lr * decoupled_wd
        np.sqrt(v, out=g)
        g += eps * c2
        np.divide(m, g, out=g)
        g *= lr_t
        w -= g
        return w

    def rmsprop_update_(self, w: Array, g: Array, s: Array, lr: float, rho: float, eps: float) -> Array:
        s *= rho
        t = np.multiply(g, g)
        t *= 1.0 - rho
        s += t
        np.sqrt(s, out=t)
        t += eps
        np.divide(g, t, out=g)
        g *= lr
        w -= g
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
        if self._numba is False:
            self._numba = _load_numba()
        k, ws = self._numba, groups[0]
        dtype = ws[0].dtype if ws else None
        batched, rest = [], []
        views = []
        for i, w in enumerate(ws):
            flat = None
            if k is not None and w.size < k.PARALLEL_MIN_SIZE and w.dtype == dtype:
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
        if not self.use_numba or len(ws) < 3:    # typed lists pay off from 3 parameters on
            return super().sgd_update_many_(ws, gs, lr)
        lists, rest, t = self._multi((ws, gs))
        if lists is not None:
            self._numba.many["sgd"](*lists, t(lr))
        for i in rest:
            self.sgd_update_(ws[i], gs[i], lr)

    def momentum_update_many_(self, ws: list[Array], gs: list[Array], vs: list[Array], lr: float, mu: float,
                              nesterov: bool) -> None:
        if not self.use_numba or len(ws) < 3:    # typed lists pay off from 3 parameters on
            return super().momentum_update_many_(ws, gs, vs, lr, mu, nesterov)
        lists, rest, t = self._multi((ws, gs, vs))
        if lists is not None:
            self._numba.many["momentum"](*lists, t(lr), t(mu), nesterov, _tiny(t))
        for i in rest:
            self.momentum_update_(ws[i], gs[i], vs[i], lr, mu, nesterov)

    def adam_update_many_(self, ws: list[Array], gs: list[Array], ms: list[Array], vs: list[Array], lr: float,
                          beta1: float, beta2: float, eps: float, step: int, decoupled_wd: float = 0.0) -> None:
        if not self.use_numba or len(ws) < 3:    # typed lists pay off from 3 parameters on
            return super().adam_update_many_(ws, gs, ms, vs, lr, beta1, beta2, eps, step, decoupled_wd)
        lists, rest, t = self._multi((ws, gs, ms, vs))
        if lists is not None:
            c2 = (1.0 - beta2 ** step) ** 0.5
            lr_t = lr * c2 / (1.0 - beta1 ** step)
            self._numba.many["adam"](*lists, t(lr_t), t(beta1), t(beta2), t(1.0 - beta1), t(1.0 - beta2),
                                     t(eps * c2), t(1.0 - lr * decoupled_wd), _tiny(t))
        for i in rest:
            self.adam_update_(ws[i], gs[i], ms[i], vs[i], lr, beta1, beta2, eps, step, decoupled_wd)

    def device_rng(self, seed: int) -> DeviceRNG:
        return _NumpyRNG(self, seed)
