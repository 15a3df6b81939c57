"""NumPy backend: the generic operations plus in-place fast paths (``out=``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .ops import Array, DeviceRNG, Ops


class _NumpyRNG(DeviceRNG):
    """On the CPU the device generator is a NumPy generator drawing in place."""

    def uniform(self, shape: tuple[int, ...], dtype: Any) -> Array:
        return self._gen.random(shape, dtype=np.dtype(dtype))


class NumpyOps(Ops):
    name = "numpy"

    def __init__(self) -> None:
        super().__init__(np)

    def from_host(self, host: Any) -> Array:
        return np.array(host, copy=True)

    def to_host(self, a: Array) -> np.ndarray:
        return a

    def owns(self, a: Any) -> bool:
        return isinstance(a, np.ndarray)

    def astype(self, a: Array, dtype: Any) -> Array:
        return a.astype(dtype, copy=False)

    def gemm(self, a: Array, b: Array, *, trans_a: bool = False, trans_b: bool = False,
             out: Array | None = None, accumulate: bool = False) -> Array:
        at = a.T if trans_a else a
        bt = b.T if trans_b else b
        if trans_a and not trans_b and a.shape[0] == 1:
            # ∂f/∂A for one sample is the outer product δ·z̃ᵀ: a broadcast multiply beats
            # matmul, which does not use BLAS for a column times a row.
            if out is None:
                return np.multiply(at, bt)
            if accumulate:
                out += at * bt
            else:
                np.multiply(at, bt, out=out)
            return out
        if out is None:
            return np.matmul(at, bt)
        if accumulate:
            out += np.matmul(at, bt)
        else:
            np.matmul(at, bt, out=out)
        return out

    def sum_rows(self, a: Array, *, out: Array | None = None, accumulate: bool = False) -> Array:
        if out is None:
            return a.sum(axis=0)
        if accumulate:
            out += a.sum(axis=0)
        elif a.shape[0] == 1:
            out[...] = a[0]
        else:
            np.sum(a, axis=0, out=out)
        return out

    def sum_squares(self, a: Array) -> Array:
        flat = a.reshape(-1)
        return np.asarray(np.dot(flat, flat))

    def sigmoid(self, x: Array) -> Array:
        y = np.multiply(x, 0.5)
        np.tanh(y, out=y)
        y *= 0.5
        y += 0.5
        return y

    def relu(self, x: Array) -> Array:
        return np.maximum(x, 0, dtype=x.dtype)

    def relu_backward_(self, dy: Array, y: Array) -> Array:
        dy *= y > 0
        return dy

    def softmax_cross_entropy(self, logits: Array, target: Array, scale: float) -> tuple[Array, Array]:
        if target.ndim != 1:
            return super().softmax_cross_entropy(logits, target, scale)
        z = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(z)
        s = p.sum(axis=1, keepdims=True)
        rows = np.arange(z.shape[0])
        loss = (np.log(s[:, 0]).sum() - z[rows, target].sum()) * scale
        p *= scale / s
        p[rows, target] -= scale
        return np.asarray(loss, dtype=logits.dtype), p

    def sgd_update_(self, w: Array, g: Array, lr: float) -> Array:
        w -= lr * g if g.size < 4096 else np.multiply(g, lr, out=_scratch(g))
        return w

    def momentum_update_(self, w: Array, g: Array, v: Array, lr: float, mu: float,
                         nesterov: bool) -> Array:
        v *= mu
        v += g
        t = _scratch(g)
        if nesterov:
            np.multiply(v, mu, out=t)
            t += g
            t *= lr
        else:
            np.multiply(v, lr, out=t)
        w -= t
        return w

    def adam_update_(self, w: Array, g: Array, m: Array, v: Array, lr: float, beta1: float,
                     beta2: float, eps: float, step: int, decoupled_wd: float = 0.0) -> Array:
        c2 = (1.0 - beta2 ** step) ** 0.5
        lr_t = lr * c2 / (1.0 - beta1 ** step)
        t = _scratch(g)
        m *= beta1
        np.multiply(g, 1.0 - beta1, out=t)
        m += t
        v *= beta2
        np.multiply(g, g, out=t)
        t *= 1.0 - beta2
        v += t
        if decoupled_wd:
            w *= 1.0 - lr * decoupled_wd
        np.sqrt(v, out=t)
        t += eps * c2
        np.divide(m, t, out=t)
        t *= lr_t
        w -= t
        return w

    def device_rng(self, seed: int) -> DeviceRNG:
        return _NumpyRNG(self, seed)


_scratch_buffers: dict[tuple[tuple[int, ...], str], np.ndarray] = {}


def _scratch(like: np.ndarray) -> np.ndarray:
    """A reusable buffer shaped like ``like`` for optimizer temporaries.

    Its contents are meaningless between calls; callers use it within one method and
    never return it.  The update functions run on one thread per parameter, so sharing
    is safe for sequential training loops.
    """
    key = (like.shape, like.dtype.str)
    buf = _scratch_buffers.get(key)
    if buf is None:
        buf = _scratch_buffers[key] = np.empty_like(like)
    return buf
