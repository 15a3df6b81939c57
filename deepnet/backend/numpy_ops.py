"""NumPy backend: the generic operations plus in-place fast paths (``out=``), pure NumPy.

The compiled kernels are a subclass (``numba_ops.NumbaOps``), the matrix products an
object given at construction (``products``: NumPy's ``np.dot`` or oneMKL).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from .counter_rng import CounterRNG, PhiloxKernel
from .memory import DeviceMemory
from .ops import Array, DeviceRNG, Ops, check_cols_t, is_one, store
from .products import BLAS_NAMES, NumpyProducts, products_named
from .windows import Window, check_cols, check_image


class _NumpyRNG(DeviceRNG):
    """On the CPU the device generator is a NumPy generator drawing in place."""

    def uniform(self, shape: tuple[int, ...], dtype: Any) -> Array:
        return self._gen.random(shape, dtype=np.dtype(dtype))


def _generator_kind(state: Any) -> str | None:
    """Which generator wrote a device-generator state (``DeviceRNG.get_state()``): ``"numpy"``
    (a NumPy bit generator's state: :class:`_NumpyRNG`, the generic ``DeviceRNG``), ``"philox"``
    (:class:`CounterRNG`, or cuRAND's ``{"cupy_seed": s}`` that it takes over), or None."""
    if isinstance(state, dict):
        if "bit_generator" in state:
            return "numpy"
        if "philox_key" in state or set(state) == {"cupy_seed"}:
            return "philox"
    return None


class HostMemory(DeviceMemory):
    """The host is the device: staging makes an array contiguous (no copy when it is)."""

    def stage(self, host: Any) -> Any:
        return np.asarray(host, order="C")    # keeps a 0-d array 0-d


class NumpyOps(Ops):
    """The NumPy backend's maths, pure NumPy.  ``products`` computes the matrix products
    (default: ``DEEPNET_BLAS``, read here; ``"numpy"`` if unset)."""

    name = "numpy"
    host_arrays = True
    memory_type = HostMemory
    # CNN preset's first convolution (1 → 32, 3×3, batch 128, 1 thread): forward 2.0 → 0.6 ms,
    # ∂f/∂W 2.7 → 0.6 ms, sample by sample against one product and a transpose
    per_sample_products = True

    def __init__(self, products: NumpyProducts | None = None) -> None:
        super().__init__(np)
        if products is None:
            name = os.environ.get("DEEPNET_BLAS", "numpy").strip().lower() or "numpy"
            if name not in BLAS_NAMES:
                raise ValueError(f"DEEPNET_BLAS must be 'numpy' or 'mkl', got {name!r}")
            products = products_named(name)
        #: computes gemm, linear and sum_rows (see :meth:`set_blas`)
        self.products: NumpyProducts = products
        self._zero_cache: dict[tuple, np.ndarray] = {}
        self._rows_cache: dict[int, np.ndarray] = {}
        self._ones_cache: dict[tuple, np.ndarray] = {}

    def from_host(self, host: Any) -> Array:
        return np.array(host, copy=True)

    def to_host(self, a: Array) -> np.ndarray:
        return a

    def owns(self, a: Any) -> bool:
        return isinstance(a, np.ndarray)

    def astype(self, a: Array, dtype: Any) -> Array:
        return a.astype(dtype, copy=False)

    # ------------------------------------------------------------------ BLAS choice
    @property
    def blas(self) -> str:
        """Which library computes the matrix products: ``"numpy"`` or ``"mkl"``."""
        return self.products.name

    def set_blas(self, name: str) -> None:
        """Compute matrix products with NumPy (``"numpy"``) or Intel oneMKL (``"mkl"``,
        needs ``pip install 'deepnet[mkl]'``; raises :class:`MklUnavailable` if missing)."""
        name = name.strip().lower()
        if name not in BLAS_NAMES:
            raise ValueError(f"set_blas: expected 'numpy' or 'mkl', got {name!r}")
        if name != self.products.name:
            self.products = products_named(name)   # loads first: a missing library leaves the choice unchanged

    def gemm(self, a: Array, b: Array, *, trans_a: bool = False, trans_b: bool = False,
             out: Array | None = None, accumulate: bool = False) -> Array:
        return self.products.gemm(a.T if trans_a else a, b.T if trans_b else b, out, accumulate)

    def linear(self, x: Array, w: Array) -> Array:
        return self.products.linear(x, w)

    def training_layout(self, w: Array, batch_size: int, input_grad: bool) -> Array:
        # The first layer (no ẽ) computes only y = x Wᵀ and ∂f/∂W = δᵀ x (never ẽ = δ W).
        # With W column-major, x Wᵀ is a plain row-major product and ∂f/∂W is written as
        # xᵀ δ: 10-30% less time in OpenBLAS from batches of ~16 rows on (measured for 784
        # inputs and 50-512 outputs); for 1-2 rows the row-major layout is faster.
        if input_grad or w.ndim != 2 or w.shape[0] == 1:
            return w
        if batch_size >= 16:
            return w if w.flags.f_contiguous else np.asfortranarray(w)
        return w if w.flags.c_contiguous else np.ascontiguousarray(w)

    def set_at_(self, dst: Array, index: Array, value: Array) -> Array:
        dst[index] = value             # a scatter of one element at a device index (no read)
        return dst

    def take_rows(self, a: Array, idx: Array, out: Array | None = None) -> Array:
        # mode="clip" lets NumPy gather straight into ``out`` (mode="raise" buffers the whole
        # result first: 3x slower for a batch of 64 MNIST rows); ``idx`` are valid indices
        if out is None:
            return a.take(idx, axis=0)
        return a.take(idx, axis=0, out=out, mode="clip")

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
            return store(a.sum(axis=0), out, accumulate)
        return self.products.column_sums(a, self._ones(a.shape[0], a.dtype), out, accumulate)

    def sum_squares(self, a: Array) -> Array:
        flat = a.reshape(-1)
        return np.asarray(np.dot(flat, flat))

    def sigmoid(self, x: Array) -> Array:
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

    def relu(self, x: Array) -> Array:
        # against a zero array of the same shape: several times faster than a scalar 0
        return np.maximum(x, self._zeros_like(x))

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

    # Sliding windows: a loop over the kh·kw kernel taps (never over samples or pixels), each
    # one strided copy (unfold) or add (fold) between the image in NHWC order and the tap's
    # plane of cols, whose C index is then the fastest-moving on both sides.  N=64, C=32,
    # 13x13, 3x3, padding 1, float32, 2-core AMD EPYC (shared, so ±50%), best of 60
    # interleaved: unfold 5.2 ms against 8.8 ms for sliding_window_view + one reshape copy and
    # 8.2 ms for as_strided + one copy into the cols layout (whose inner loops are kw long);
    # fold 4.0 ms against 9.7 ms adding NCHW planes.  ``python tests/test_windows.py`` re-times.
    def unfold(self, x: Array, win: Window) -> Array:
        """im2col (see :meth:`Ops.unfold`): x copied once to a reused NHWC buffer, then one strided
        copy per kernel tap into the (N, OH, OW, C, kh, kw) result (zeros first if padded)."""
        n, c, h, w = check_image(x)
        oh, ow = win.out_size(h, w)
        kh, kw = win.kh, win.kw
        taps = win.spans(h, w)
        full = all(ro == slice(0, oh) and co == slice(0, ow) for _, _, ro, co, _, _ in taps)
        out = (np.empty if full else np.zeros)((n, oh, ow, c, kh, kw), x.dtype)
        if kh * kw == 1:                       # one tap: straight from NCHW
            _, _, ro, co, ri, ci = taps[0]
            out[:, ro, co, :, 0, 0] = x[:, :, ri, ci].transpose(0, 2, 3, 1)
            return out.reshape(n * oh * ow, c)
        nhwc = self._window_buffer((n, h, w, c), x.dtype)   # reused: C contiguous for every tap's copy
        np.copyto(nhwc, x.transpose(0, 2, 3, 1))
        for i, j, ro, co, ri, ci in taps:
            if ro.stop > ro.start and co.stop > co.start:
                out[:, ro, co, :, i, j] = nhwc[:, ri, ci, :]
        return out.reshape(n * oh * ow, c * kh * kw)

    def fold(self, cols: Array, x_shape: tuple[int, int, int, int], win: Window) -> Array:
        """col2im (see :meth:`Ops.fold`): one strided ``np.add`` per kernel tap into an NHWC
        accumulator, then one copy to NCHW."""
        n, c, h, w, oh, ow = check_cols(cols, x_shape, win)
        acc = np.zeros((n, h, w, c), cols.dtype)      # NHWC: each tap adds C-contiguous rows
        planes = cols.reshape(n, oh, ow, c, win.kh, win.kw)
        for i, j, ro, co, ri, ci in win.spans(h, w):
            if ro.stop > ro.start and co.stop > co.start:
                dst = acc[:, ri, ci, :]
                np.add(dst, planes[:, ro, co, :, i, j], out=dst)
        out = np.empty((n, c, h, w), cols.dtype)
        np.copyto(out, acc.transpose(0, 3, 1, 2))
        return out

    # The transposed layout (Conv2D's): the patches' long axis (n, oh, ow) is contiguous, so
    # each tap is one strided copy (unfold_t) or add (fold_t) of (C, N, OH, OW) planes whose inner
    # runs are image rows.  N=128, C=32, 13x13, 3x3, float32, 1 thread, 2-core AMD EPYC under
    # load, median of 40 interleaved: unfold_t 8.6 ms (unfold 37 ms), fold_t 18 ms (fold 43 ms);
    # the channel-major copy first beats copying each tap from the transposed NCHW view (11 ms),
    # adding straight into NCHW beats a channel-major accumulator and a final copy (21 ms).
    def unfold_t(self, x: Array, win: Window) -> Array:
        """im2col transposed (see :meth:`Ops.unfold_t`): x copied once, zero-padded, to a reused
        channel-major (C, N, Hp, Wp) buffer, then one strided copy per kernel tap into the
        (C, kh, kw, N, OH, OW) result."""
        n, c, h, w = check_image(x, "unfold_t")
        oh, ow = win.out_size(h, w)
        kh, kw, sh, sw, pt, pl = win.kh, win.kw, win.sh, win.sw, win.pt, win.pl
        hp, wp = h + pt + win.pb, w + pl + win.pr
        xc = self._window_buffer((c, n, hp, wp), x.dtype, "unfold_t")
        if win.padded:                          # the border: zeros (the buffer is shared by shape)
            xc[:, :, :pt], xc[:, :, pt + h:], xc[:, :, :, :pl], xc[:, :, :, pl + w:] = 0, 0, 0, 0
        np.copyto(xc[:, :, pt:pt + h, pl:pl + w], x.transpose(1, 0, 2, 3))
        out = np.empty((c, kh, kw, n, oh, ow), x.dtype)
        for i in range(kh):
            for j in range(kw):
                r0, c0 = i * win.dh, j * win.dw
                out[:, i, j] = xc[:, :, r0:r0 + (oh - 1) * sh + 1:sh, c0:c0 + (ow - 1) * sw + 1:sw]
        return out.reshape(c * kh * kw, n * oh * ow)

    def fold_t(self, cols_t: Array, x_shape: tuple[int, int, int, int], win: Window) -> Array:
        """col2im transposed (see :meth:`Ops.fold_t`): one strided ``np.add`` per kernel tap,
        clipped to the image, straight into the NCHW result viewed channel-major."""
        n, c, h, w, oh, ow = check_cols_t(cols_t, x_shape, win)
        out = np.zeros((n, c, h, w), cols_t.dtype)
        acc = out.transpose(1, 0, 2, 3)
        taps = cols_t.reshape(c, win.kh, win.kw, n, oh, ow)
        for i, j, ro, co, ri, ci in win.spans(h, w):
            if ro.stop > ro.start and co.stop > co.start:
                dst = acc[:, :, ri, ci]
                np.add(dst, taps[:, i, j, :, ro, co], out=dst)
        return out

    def _thread_buffers(self, name: str = "windows") -> dict[Any, Array]:
        """This thread's scratch arrays called ``name`` (a dict kept per backend object and thread)."""
        attr = f"_{name}_local"
        local = self.__dict__.get(attr)
        if local is None:
            local = self.__dict__.setdefault(attr, threading.local())
        return local.__dict__.setdefault("bufs", {})

    def _window_buffer(self, shape: tuple[int, ...], dtype: Any, tag: str = "") -> Array:
        """A scratch array of ``shape``, reused by this thread for the same ``tag`` (unfold's NHWC
        copy of the input, unfold_t's channel-major one)."""
        bufs = self._thread_buffers()
        key = (tag, shape, np.dtype(dtype).char)
        buf = bufs.get(key)
        if buf is None:
            if len(bufs) >= 8:
                bufs.clear()
            buf = bufs[key] = np.empty(shape, dtype)
        return buf

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
        g *= lr
        w -= g
        return w

    def momentum_update_(self, w: Array, g: Array, v: Array, lr: float, mu: float,
                         nesterov: bool) -> Array:
        v *= mu
        v += g
        if nesterov:
            g += v * mu
            g *= lr
        else:
            np.multiply(v, lr, out=g)
        w -= g
        return w

    def adam_update_(self, w: Array, g: Array, m: Array, v: Array, lr_t: float, beta1: float,
                     beta2: float, eps_hat: float, decay: float) -> Array:
        m -= g                          # m ← β₁m + (1−β₁)g  =  β₁(m − g) + g
        m *= beta1
        m += g
        g *= g
        g *= 1.0 - beta2
        v *= beta2
        v += g
        if not is_one(decay):
            w *= decay
        np.sqrt(v, out=g)
        g += eps_hat
        np.divide(m, g, out=g)
        g *= lr_t
        w -= g
        return w

    def rmsprop_update_(self, w: Array, g: Array, s: Array, lr: float, rho: float, eps: float) -> Array:
        s *= rho
        t = np.multiply(g, g, out=np.empty_like(g))    # an array even for a 0-d g (NumPy gives a scalar)
        t *= 1.0 - rho
        s += t
        np.sqrt(s, out=t)
        t += eps
        np.divide(g, t, out=g)
        g *= lr
        w -= g
        return w

    # ------------------------------------------------------------------ random numbers
    def device_rng(self, seed: int) -> DeviceRNG:
        """NumPy's generator, drawing in place.  Without numba the Philox generator exists only
        in Array-API operations, 7-14x slower for a 256x2048 float32 mask (6.9-13.7 ms against
        0.95 ms, best of 40, 2-core x86-64 shared with other work, 2026-12-07;
        ``python tests/test_counter_rng.py``); NumbaOps draws Philox through its compiled loop."""
        return _NumpyRNG(self, seed)

    def _philox_kernel(self) -> PhiloxKernel | None:
        """The fill a :class:`CounterRNG` made here draws through (None: the Array-API version)."""
        return None

    def resume_device_rng(self, rng: DeviceRNG, state: dict) -> DeviceRNG:
        """Continue with the kind of generator that wrote ``state``: a NumPy generator's state
        (every NumPy-backend checkpoint written before the Philox generator) restores into
        :class:`_NumpyRNG`, a Philox state into :class:`CounterRNG` (same bits as where it was
        written), whichever :meth:`device_rng` makes; anything else goes to ``rng.set_state``."""
        kind = _generator_kind(state)
        if kind == "numpy" and not isinstance(rng, _NumpyRNG):
            rng = _NumpyRNG(self, 0)
        elif kind == "philox" and not isinstance(rng, CounterRNG):
            rng = CounterRNG(self, 0, kernel=self._philox_kernel())
        rng.set_state(state)
        return rng
