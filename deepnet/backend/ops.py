"""Generic array operations, written only against the Python Array API standard.

:class:`Ops` is the reference implementation every backend inherits.  Backends override
hot paths with in-place versions (``NumpyOps``: pure NumPy) and, in subclasses of those,
compiled or fused kernels (``NumbaOps``, ``FusedCupyOps``) that must keep the generic
method's signature and compute the same function; the test suite checks each class.
Memory, streaming and device facts live apart from the maths, in ``ops.memory``
(:class:`~deepnet.backend.memory.DeviceMemory`).  Conventions:

* methods ending in ``_`` update their first argument in place and return it;
* ``out=``/``accumulate=`` let callers write into a preallocated buffer
  (``accumulate=True`` adds to it, which is how layers accumulate ∂f/∂A);
* scalars are Python floats, so float32 arrays stay float32.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from .array_types import Array as Array      # re-exported: the backend modules name it from here
from .graphs import StepGraphs
from .memory import DeviceMemory
from .windows import TableCache, Window, check_cols, check_image


def is_one(v: Any) -> bool:
    """Whether a scalar argument is the Python number 1 (a device scalar never counts as
    one: comparing it would read it back to the host)."""
    return isinstance(v, (int, float)) and v == 1.0


def store(res: Array, out: Array | None, accumulate: bool) -> Array:
    """Return ``res``, or write it into ``out`` (``accumulate``: add to it) and return ``out``."""
    if out is None:
        return res
    if accumulate:
        out += res
    else:
        out[...] = res
    return out


def check_cols_t(cols_t: Array, x_shape: tuple[int, ...], win: Window) -> tuple[int, int, int, int, int, int]:
    """(N, C, H, W, OH, OW) for ``fold_t(cols_t, x_shape, win)``; ValueError on a mismatch."""
    if len(x_shape) != 4:
        raise ValueError(f"fold_t: expected x_shape (N, C, H, W), got {tuple(x_shape)}")
    n, c, h, w = (int(d) for d in x_shape)
    oh, ow = win.out_size(h, w)
    want = (c * win.kh * win.kw, n * oh * ow)
    if tuple(cols_t.shape) != want:
        raise ValueError(f"fold_t: expected cols_t of shape {want} (C*kh*kw, N*OH*OW) for x_shape {(n, c, h, w)}, "
                         f"got {tuple(cols_t.shape)}")
    return n, c, h, w, oh, ow


class DeviceRNG:
    """Random numbers drawn where the arrays live, seeded from the run's host generator.

    The generic version draws on the host with NumPy and transfers; backends with a
    device generator override :meth:`Ops.device_rng`.
    """

    def __init__(self, ops: Ops, seed: int) -> None:
        import numpy as np  # host-side generator, only for the generic fallback

        self.ops = ops
        self._gen = np.random.default_rng(seed)

    def uniform(self, shape: tuple[int, ...], dtype: Any) -> Array:
        """Uniform [0, 1) numbers of ``shape`` on the device."""
        host = self._gen.random(shape, dtype="float32" if self.ops.dtype_name(dtype) == "float32" else "float64")
        return self.ops.from_host(host)

    def get_state(self) -> dict:
        return self._gen.bit_generator.state

    def set_state(self, state: dict) -> None:
        self._gen.bit_generator.state = state


class _Removed:
    """A switch that no longer exists: reading or setting it says what replaced it."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        raise AttributeError(f"ops.{self.name} was removed: {self.message}")

    def __set__(self, obj: Any, value: Any) -> None:
        raise AttributeError(f"ops.{self.name} was removed: {self.message}")


class Ops:
    """Array operations of one backend; ``xp`` is its array namespace.

    ``Ops(xp, device, name=...)`` works for any namespace that follows the Array API
    standard (e.g. ``array_api_compat.torch``); backends subclass it only to override hot
    paths.  Only arguments every supported namespace accepts are passed: ``device=`` goes
    to creation functions only when ``device`` is given (CuPy's ``zeros`` has no such
    argument).  What a backend can do is asked through its capabilities, never its name:

    * :attr:`host_arrays`: its arrays are NumPy arrays in host memory;
    * :attr:`cheap_sync`: reading a value back to Python costs no wait for a device
      (False on GPUs, where the training loop then avoids per-step reads);
    * :attr:`max_pool_kernel`: :meth:`max_pool` and :meth:`max_pool_backward` are one compiled
      pass (MaxPool2D then calls them rather than composing array operations);
    * :attr:`batch_norm_kernel`: :meth:`batch_norm_train` and :meth:`batch_norm_train_backward`
      are compiled passes (BatchNorm of images in training then calls them);
    * :attr:`per_sample_products`: ``xp.matmul`` of a matrix with a stack of strided matrices is
      one BLAS product per matrix, without copies (Conv2D then multiplies sample by sample and
      gets NCHW at once, rather than one product and a transpose: NumPy; not CuPy, whose matmul
      a captured CUDA graph cannot hold).
    """

    name = "generic"
    host_arrays = False
    cheap_sync = True
    max_pool_kernel = False
    batch_norm_kernel = False
    per_sample_products = False
    #: the class of :attr:`memory`, the backend's device companion
    memory_type: type[DeviceMemory] = DeviceMemory
    #: the class of :attr:`graphs`, the backend's step-capture companion
    graphs_type: type[StepGraphs] = StepGraphs
    use_numba = _Removed("the plain NumPy maths are deepnet.backend.numpy_ops.NumpyOps(), the compiled "
                         "kernels deepnet.backend.numba_ops.NumbaOps(); DEEPNET_NUMBA=0 picks the first")
    use_fused = _Removed("the plain CuPy maths are deepnet.backend.cupy_ops.CupyOps(), the fused kernels "
                         "FusedCupyOps() (the registered 'cupy')")

    def __init__(self, xp: Any, device: Any = None, name: str | None = None) -> None:
        self.xp = xp
        self.device = device
        if name is not None:
            self.name = name
        #: keyword arguments that place a new array on this backend's device
        self.on_device: dict[str, Any] = {} if device is None else {"device": device}
        self.float32 = xp.float32
        self.float64 = xp.float64
        self.int64 = xp.int64
        self.bool = xp.bool
        probe = xp.zeros((0,), dtype=xp.float32, **self.on_device)
        #: the type of this backend's arrays (ownership is decided by type and device)
        self.array_type: type = type(probe)
        if device is not None:          # the namespace's own device object ("cpu" -> torch.device("cpu"))
            self.device = probe.device
            self.on_device = {"device": self.device}
        info = getattr(xp, "__array_namespace_info__", None)
        #: whether the device computes in float64 (some GPUs do not); host reads use float32 if not
        self.has_float64 = True if info is None else "float64" in info().dtypes(device=self.device)
        #: memory, streaming and device facts (apart from the maths)
        self.memory: DeviceMemory = self.memory_type(self)
        #: capture and replay of a training step (CUDA graphs where the backend has them)
        self.graphs: StepGraphs = self.graphs_type(self)
        self._products: Any = None
        self._products_scope: contextvars.ContextVar[Any] = contextvars.ContextVar(f"deepnet_products_{id(self)}",
                                                                                  default=None)

    @property
    def products(self) -> Any:
        """What computes this backend's matrix products (NumPy, oneMKL, CuPy/cuBLAS; None when the
        generic maths do), or the provider a :meth:`using_products` block set in this thread
        or context."""
        scoped = self._products_scope.get()
        return self._products if scoped is None else scoped

    @products.setter
    def products(self, value: Any) -> None:
        self._products = value

    @contextlib.contextmanager
    def using_products(self, provider: Any) -> Iterator[Any]:
        """Compute the matrix products with ``provider`` inside the block, in this thread or
        context only (``fit(precision=...)``: other threads and later code keep theirs)."""
        token = self._products_scope.set(provider)
        try:
            yield provider
        finally:
            self._products_scope.reset(token)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def __deepcopy__(self, memo: dict) -> Ops:
        return self  # one shared Ops per backend; copying a layer keeps its backend

    # ------------------------------------------------------------------ host <-> device
    def from_host(self, host: Any) -> Array:
        """Copy a NumPy array onto this backend (use :func:`deepnet.backend.to_device`)."""
        return self.xp.asarray(host, copy=True, **self.on_device)

    def to_host(self, a: Array) -> Any:
        """Copy an array of this backend to a NumPy array (use :func:`deepnet.backend.to_host`):
        through DLPack, the Array API's exchange protocol (host-memory arrays only; device
        backends override this)."""
        import numpy as np

        return np.array(np.from_dlpack(a), copy=True)

    def owns(self, a: Any) -> bool:
        """True when ``a`` is an array of this backend (its array type, on its device)."""
        return isinstance(a, self.array_type) and (self.device is None or a.device == self.device)

    def read_scalars(self, values: list[Array]) -> list[float]:
        """0-d device values as Python floats, in one read (one wait for the device)."""
        if not values:
            return []
        xp = self.xp
        dt = self.float64 if self.has_float64 else self.float32
        return [float(v) for v in self.to_host(xp.stack([xp.astype(v, dt) for v in values])).tolist()]

    # ------------------------------------------------------------------ creation / dtypes
    def dtype(self, spec: Any) -> Any:
        """The backend dtype for a NumPy dtype, a name like ``"float32"`` or a backend dtype."""
        name = self.dtype_name(spec)
        try:
            return getattr(self.xp, name)
        except AttributeError:
            raise TypeError(f"backend {self.name!r} has no dtype {name!r}") from None

    @staticmethod
    def dtype_name(dtype: Any) -> str:
        name = getattr(dtype, "name", None)
        if isinstance(name, str):
            return name
        if isinstance(dtype, str):
            return dtype
        text = str(dtype)  # array_api_strict.float32, <class 'numpy.float32'>
        for cand in ("float16", "bfloat16", "float32", "float64", "int32", "int64", "uint8", "bool"):
            if cand in text:
                return cand
        return text

    def zeros(self, shape: tuple[int, ...], dtype: Any = None) -> Array:
        return self.xp.zeros(shape, dtype=self.float32 if dtype is None else dtype, **self.on_device)

    def zeros_like(self, a: Array) -> Array:
        """Zeros of ``a``'s shape, dtype and memory layout (NumPy keeps a column-major one)."""
        return self.xp.zeros_like(a)

    def same_layout(self, a: Array, b: Array) -> bool:
        """Whether two arrays of one shape lie in memory the same way (same strides; arrays
        without strides count as the same)."""
        return getattr(a, "strides", None) == getattr(b, "strides", None)

    def empty(self, shape: tuple[int, ...], dtype: Any = None) -> Array:
        return self.xp.empty(shape, dtype=self.float32 if dtype is None else dtype, **self.on_device)

    def full(self, shape: tuple[int, ...], value: float, dtype: Any = None) -> Array:
        return self.xp.full(shape, value, dtype=self.float32 if dtype is None else dtype, **self.on_device)

    def arange(self, n: int, dtype: Any = None) -> Array:
        return self.xp.arange(n, dtype=self.int64 if dtype is None else dtype, **self.on_device)

    def astype(self, a: Array, dtype: Any) -> Array:
        return self.xp.astype(a, dtype)

    def copy(self, a: Array) -> Array:
        return self.xp.asarray(a, copy=True)

    def assign_(self, dst: Array, src: Array) -> Array:
        dst[...] = src
        return dst

    def fill_(self, dst: Array, value: float) -> Array:
        dst[...] = value
        return dst

    # ------------------------------------------------------------------ linear algebra
    def gemm(self, a: Array, b: Array, *, trans_a: bool = False, trans_b: bool = False,
             out: Array | None = None, accumulate: bool = False) -> Array:
        """``op(a) · op(b)``; written into (or, with ``accumulate``, added to) ``out``."""
        xp = self.xp
        res = xp.matmul(xp.matrix_transpose(a) if trans_a else a,
                        xp.matrix_transpose(b) if trans_b else b)
        return store(res, out, accumulate)

    def linear(self, x: Array, w: Array) -> Array:
        """x · wᵀ: a batch of rows x through weights w shaped (n_out, n_in)."""
        return self.xp.matmul(x, self.xp.matrix_transpose(w))

    def training_layout(self, w: Array, batch_size: int, input_grad: bool) -> Array:
        """``w`` (same shape and values) in the memory layout fastest for training at this
        batch size, for a parameter of a layer whose input error ẽ is computed
        (``input_grad``) or not (the first layer).  Generic: as is."""
        return w

    def add_bias_(self, y: Array, b: Array) -> Array:
        """y ← y + b, with b broadcast over the batch rows."""
        y += b
        return y

    def sum_rows(self, a: Array, *, out: Array | None = None, accumulate: bool = False) -> Array:
        """Σ over the batch (axis 0): the bias gradient from the error rows."""
        return store(self.xp.sum(a, axis=0), out, accumulate)

    def sum(self, a: Array) -> Array:
        """Σ of all elements as a 0-d device array (no host sync)."""
        return self.xp.sum(a)

    def sum_squares(self, a: Array) -> Array:
        """Σ a² as a 0-d device array."""
        return self.xp.sum(a * a)

    def all_finite(self, a: Array) -> Array:
        return self.xp.all(self.xp.isfinite(a))

    def take_rows(self, a: Array, idx: Array, out: Array | None = None) -> Array:
        """The rows ``a[idx]`` (``idx`` valid row indices on this backend).  ``out``: a buffer of
        the result's shape the backend may gather into (and return) instead of allocating;
        generic: a new array (the Array API's ``take`` has no ``out``)."""
        return self.xp.take(a, idx, axis=0)

    def set_at_(self, dst: Array, index: Array, value: Array) -> Array:
        """dst[i] ← value for the one device index in ``index`` (shape (1,)), without reading it
        on the host.  Generic: a pass over ``dst`` (the Array API has no integer-array
        assignment); NumPy and CuPy scatter the one element."""
        xp = self.xp
        dst[...] = xp.where(self.arange(dst.shape[0]) == index, value, dst)
        return dst

    def argmax_rows(self, a: Array) -> Array:
        return self.xp.argmax(a, axis=1)

    def count_equal(self, a: Array, b: Array) -> Array:
        """Number of equal elements, as a 0-d device integer."""
        return self.xp.sum(self.xp.astype(a == b, self.int64))

    def one_hot(self, labels: Array, k: int, on: float = 1.0, off: float = 0.0,
                dtype: Any = None) -> Array:
        xp = self.xp
        hit = xp.reshape(labels, (-1, 1)) == xp.reshape(self.arange(k, labels.dtype), (1, -1))
        out = xp.astype(hit, self.float32 if dtype is None else dtype)   # Python scalars: no upload
        if on != 1.0 or off != 0.0:
            out *= on - off
            out += off
        return out

    # ------------------------------------------------------------------ per-sample crops
    def crop_at(self, x: Array, top: Array, left: Array, size: tuple[int, int]) -> Array:
        """y[n, c, i, j] = x[n, c, top[n] + i, left[n] + j], or 0 where that lies outside x.

        ``x``: NCHW images; ``top``, ``left``: integer arrays (n,) on this backend (any sign);
        ``size``: (h, w) of y.  One gather for the whole batch (no loop over samples).  Its
        transpose is itself with the offsets negated: ``crop_at(dy, -top, -left, x's (H, W))``."""
        xp = self.xp
        n, c, h, w = (int(d) for d in x.shape)
        oh, ow = (int(s) for s in size)
        itype = self.int64
        rows = xp.reshape(self.arange(oh, itype), (1, oh)) + xp.reshape(xp.astype(top, itype), (n, 1))
        cols = xp.reshape(self.arange(ow, itype), (1, ow)) + xp.reshape(xp.astype(left, itype), (n, 1))
        in_r, in_c = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
        zero = xp.zeros_like(rows)
        local = (xp.reshape(xp.where(in_r, rows, zero), (n, 1, oh, 1)) * w
                 + xp.reshape(xp.where(in_c, cols, xp.zeros_like(cols)), (n, 1, 1, ow)))
        base = (xp.reshape(self.arange(n, itype) * (c * h * w), (n, 1, 1, 1))
                + xp.reshape(self.arange(c, itype) * (h * w), (1, c, 1, 1)))
        idx = xp.reshape(base + local, (-1,))
        vals = xp.reshape(xp.take(xp.reshape(x, (-1,)), idx, axis=0), (n, c, oh, ow))
        inside = xp.reshape(in_r, (n, 1, oh, 1)) & xp.reshape(in_c, (n, 1, 1, ow))
        return xp.where(inside, vals, xp.zeros_like(vals))

    # ------------------------------------------------------------------ sliding windows (im2col)
    def unfold(self, x: Array, win: Window) -> Array:
        """im2col: ``x`` (N, C, H, W) → cols (N·OH·OW, C·kh·kw), row (n, oh, ow), column (c, i, j),
        ``cols[r, (c,i,j)] = x_pad[n, c, oh·sh + i·dh, ow·sw + j·dw]`` (0 in the padding).

        Generic: zero-pad by slice assignment, then one ``take`` per call on the images
        flattened to rows, through an int64 index table built (on the device, with Array-API
        arithmetic) once per (C, H, W, window) and cached."""
        xp = self.xp
        n, c, h, w = check_image(x)
        oh, ow = win.out_size(h, w)
        hp, wp = h + win.pt + win.pb, w + win.pl + win.pr
        if win.padded:
            xpad = xp.zeros((n, c, hp, wp), dtype=x.dtype, **self.on_device)
            xpad[:, :, win.pt:win.pt + h, win.pl:win.pl + w] = x
        else:
            xpad = x
        idx = self._window_tables().get(("unfold", c, h, w, win), lambda: self._unfold_index(c, hp, wp, oh, ow, win))
        cols = xp.take(xp.reshape(xpad, (n, c * hp * wp)), idx, axis=1)
        return xp.reshape(cols, (n * oh * ow, c * win.kh * win.kw))

    def fold(self, cols: Array, x_shape: tuple[int, int, int, int], win: Window) -> Array:
        """col2im, the adjoint of :meth:`unfold`: cols (N·OH·OW, C·kh·kw) → (N, C, H, W), each entry
        added to the pixel it was read from (overlaps summed, padding dropped).

        Generic: a loop over the kh·kw kernel taps (never over samples or pixels); each adds
        its plane of ``cols`` to a strided slice of the output, clipped to the image."""
        xp = self.xp
        n, c, h, w, oh, ow = check_cols(cols, x_shape, win)
        out = xp.zeros((n, c, h, w), dtype=cols.dtype, **self.on_device)
        taps = xp.permute_dims(xp.reshape(cols, (n, oh, ow, c, win.kh, win.kw)), (4, 5, 0, 3, 1, 2))
        for i, j, ro, co, ri, ci in win.spans(h, w):
            if ro.stop > ro.start and co.stop > co.start:
                out[:, :, ri, ci] += taps[i, j, :, :, ro, co]
        return out

    def unfold_t(self, x: Array, win: Window) -> Array:
        """im2col transposed: ``x`` (N, C, H, W) → cols_t (C·kh·kw, N·OH·OW), row (c, i, j), column
        (n, oh, ow), both in C order; as values ``unfold(x, win).T`` (a contiguous array).  The
        layout of ``W₂ · cols_t`` (Conv2D): the patches' long axis is the product's inner one.

        Generic: zero-pad, view the image channel-major (C, N, Hp, Wp), and copy its kh·kw
        strided slices (one per kernel tap) into the (C, kh, kw, N, OH, OW) result."""
        xp = self.xp
        n, c, h, w = check_image(x, "unfold_t")
        oh, ow = win.out_size(h, w)
        if win.padded:
            xpad = xp.zeros((n, c, h + win.pt + win.pb, w + win.pl + win.pr), dtype=x.dtype, **self.on_device)
            xpad[:, :, win.pt:win.pt + h, win.pl:win.pl + w] = x
        else:
            xpad = x
        xc = xp.permute_dims(xpad, (1, 0, 2, 3))
        out = xp.empty((c, win.kh, win.kw, n, oh, ow), dtype=x.dtype, **self.on_device)
        for i in range(win.kh):
            for j in range(win.kw):
                r0, c0 = i * win.dh, j * win.dw
                out[:, i, j, ...] = xc[:, :, r0:r0 + (oh - 1) * win.sh + 1:win.sh, c0:c0 + (ow - 1) * win.sw + 1:win.sw]
        return xp.reshape(out, (c * win.kh * win.kw, n * oh * ow))

    def fold_t(self, cols_t: Array, x_shape: tuple[int, int, int, int], win: Window) -> Array:
        """col2im transposed, the adjoint of :meth:`unfold_t`: cols_t (C·kh·kw, N·OH·OW) →
        (N, C, H, W); as values ``fold(cols_t.T, x_shape, win)``.

        Generic: one strided add per kernel tap (never per sample or pixel), clipped to the image."""
        xp = self.xp
        n, c, h, w, oh, ow = check_cols_t(cols_t, x_shape, win)
        out = xp.zeros((n, c, h, w), dtype=cols_t.dtype, **self.on_device)
        taps = xp.reshape(cols_t, (c, win.kh, win.kw, n, oh, ow))
        for i, j, ro, co, ri, ci in win.spans(h, w):
            if ro.stop > ro.start and co.stop > co.start:
                out[:, :, ri, ci] += xp.permute_dims(taps[:, i, j, :, ro, co], (1, 0, 2, 3))
        return out

    def max_pool(self, x: Array, win: Window) -> tuple[Array, Array]:
        """(y, arg) of MaxPool2D on NCHW ``x``: y the maximum of each window (padding never wins),
        arg the row-major index i·kw + j of its first maximum (a NaN wins), an integer array of
        y's shape, for :meth:`max_pool_backward`.  Only where :attr:`max_pool_kernel` is True."""
        raise NotImplementedError(f"the {self.name} backend has no max-pool kernel (max_pool_kernel is False)")

    def max_pool_backward(self, dy: Array, arg: Array, x_shape: tuple[int, int, int, int], win: Window) -> Array:
        """ẽ of MaxPool2D: zeros of ``x_shape`` with δ added at each window's arg-max pixel."""
        raise NotImplementedError(f"the {self.name} backend has no max-pool kernel (max_pool_kernel is False)")

    def batch_norm_train(self, x: Array, gamma: Array, beta: Array, eps: float) -> tuple[Array, Array, Array, Array]:
        """(y, μ, σ², s) of BatchNorm in training on NCHW ``x``: per channel c over its N·H·W values,
        μ and σ² (biased), s = 1/√(σ² + ε), y = γ (x − μ) s + β.  Only where :attr:`batch_norm_kernel`."""
        raise NotImplementedError(f"the {self.name} backend has no BatchNorm kernel (batch_norm_kernel is False)")

    def batch_norm_train_backward(self, dy: Array, x: Array, mean: Array, inv_std: Array, gamma: Array,
                                  dgamma: Array, dbeta: Array, need_input_grad: bool) -> Array | None:
        """Backward of :meth:`batch_norm_train` from the kept x, μ and s: ∂f/∂γ += Σ δ x̂ into
        ``dgamma``, ∂f/∂β += Σ δ into ``dbeta``; returns ẽ = γ s (δ − Σδ/m − x̂ Σδx̂/m) (written over
        ``dy`` where it is contiguous), None unless ``need_input_grad``."""
        raise NotImplementedError(f"the {self.name} backend has no BatchNorm kernel (batch_norm_kernel is False)")

    def winograd_conv_applies(self, win: Window, c_in: int, c_out: int, groups: int) -> bool:
        """Whether Conv2D runs this convolution through :meth:`winograd_conv` (False: im2col)."""
        return False

    def winograd_conv(self, x: Array, w: Array, win: Window) -> Array:
        """y (N, O, OH, OW) of the 3×3 stride-1 convolution of x (N, C, H, W) with w (O, C, 3, 3),
        without bias, by Winograd F(2×2, 3×3); only where :meth:`winograd_conv_applies`."""
        raise NotImplementedError(f"the {self.name} backend has no Winograd convolution")

    def winograd_conv_backward(self, dy: Array, x: Array, w: Array, win: Window, gw: Array, accumulate: bool,
                               need_input_grad: bool) -> Array | None:
        """∂f/∂w written (``accumulate``: added) into ``gw``; returns ẽ = ∂f/∂x (None unless
        ``need_input_grad``), for :meth:`winograd_conv`."""
        raise NotImplementedError(f"the {self.name} backend has no Winograd convolution")

    def _window_tables(self) -> TableCache:
        """This backend's cache of window index tables (created on first use)."""
        cache = self.__dict__.get("_windows_cache")
        if cache is None:
            cache = self.__dict__["_windows_cache"] = TableCache()
        return cache

    def _unfold_index(self, c: int, hp: int, wp: int, oh: int, ow: int, win: Window) -> Array:
        """Flat int64 indices into one padded image (C·Hp·Wp values) in unfold's (oh, ow, c, i, j)
        order, computed on the device (no upload)."""
        xp = self.xp

        def axis(n: int, step: int, dim: int) -> Array:
            shape = [1] * 5
            shape[dim] = n
            return xp.reshape(self.arange(n) * step, tuple(shape))

        idx = (axis(oh, win.sh * wp, 0) + axis(ow, win.sw, 1) + axis(c, hp * wp, 2)
               + axis(win.kh, win.dh * wp, 3) + axis(win.kw, win.dw, 4))
        return xp.reshape(idx, (-1,))

    # ------------------------------------------------------------------ activations
    # Each forward returns a new array (its input is never modified).  Each backward
    # takes the error from above (∂f/∂output) and may overwrite it with ∂f/∂input.
    def sigmoid(self, x: Array) -> Array:
        """g(x) = 1/(1+e^{-x}) in the stable two-branch form: with e = e^{−|x|} (never
        overflows), 1/(1+e) for x ≥ 0 and e/(1+e) for x < 0.  Accurate to a few ulp in
        float32 over the whole range: tiny outputs keep their relative precision (the
        ½·tanh(x/2)+½ form lost it: 96% error at x = −18, exactly 0 at −20) until they
        become subnormal (x < −87.3 in float32, see tests/test_activation_accuracy.py)."""
        xp = self.xp
        e = xp.exp(-xp.abs(x))
        d = e + 1.0
        return xp.where(x >= 0, 1.0 / d, e / d)

    def sigmoid_backward_(self, dy: Array, y: Array) -> Array:
        """dy ∘ z ∘ (1 − z), the derivation's e ∘ z ∘ (1 − z)."""
        dy *= y * (1.0 - y)
        return dy

    def tanh(self, x: Array) -> Array:
        return self.xp.tanh(x)

    def tanh_backward_(self, dy: Array, y: Array) -> Array:
        dy *= 1.0 - y * y
        return dy

    def relu(self, x: Array) -> Array:
        return self.xp.maximum(x, self.xp.zeros_like(x))

    def relu_backward_(self, dy: Array, y: Array) -> Array:
        dy *= self.xp.astype(y > 0, dy.dtype)
        return dy

    def leaky_relu(self, x: Array, slope: float) -> Array:
        return self.xp.where(x > 0, x, x * slope)

    def leaky_relu_backward_(self, dy: Array, x: Array, slope: float) -> Array:
        dy *= self.xp.where(x > 0, self.xp.ones_like(x), self.xp.full_like(x, slope))
        return dy

    def softmax(self, x: Array) -> Array:
        xp = self.xp
        e = xp.exp(x - xp.max(x, axis=1, keepdims=True))
        e /= xp.sum(e, axis=1, keepdims=True)
        return e

    def softmax_backward_(self, dy: Array, y: Array) -> Array:
        """Jacobian-vector product of softmax: y ∘ (dy − Σ_j dy_j y_j)."""
        xp = self.xp
        s = xp.sum(dy * y, axis=1, keepdims=True)
        dy -= s
        dy *= y
        return dy

    def log_softmax(self, x: Array) -> Array:
        xp = self.xp
        s = x - xp.max(x, axis=1, keepdims=True)
        s -= xp.log(xp.sum(xp.exp(s), axis=1, keepdims=True))
        return s

    # ------------------------------------------------------------------ losses
    def softmax_cross_entropy(self, logits: Array, target: Array, scale: float) -> tuple[Array, Array]:
        """Fused, stable softmax cross-entropy.

        ``target`` holds integer labels (shape (n,)) or probability rows (shape (n, k)).
        Returns ``(scale · Σ −log p_target, scale · (p − y))`` with p = softmax(logits),
        computed through log-sum-exp so no exponential overflows.
        """
        xp = self.xp
        logp = self.log_softmax(logits)
        p = xp.exp(logp)
        if target.ndim == 1:
            picked = xp.take_along_axis(logp, xp.reshape(target, (-1, 1)), axis=1)
            loss = -xp.sum(picked) * scale
            grad = p - self.one_hot(target, logits.shape[1], dtype=logits.dtype)
        else:
            loss = -xp.sum(target * logp) * scale
            grad = p * xp.sum(target, axis=1, keepdims=True) - target
        grad *= scale
        return loss, grad

    def squared_error(self, z: Array, y: Array, scale: float) -> tuple[Array, Array]:
        """``(scale · Σ (z − y)², scale · 2e)`` with e = z − y."""
        e = z - y
        loss = self.xp.sum(e * e) * scale
        e *= 2.0 * scale
        return loss, e

    # ------------------------------------------------------------------ optimizer kernels
    def sgd_update_(self, w: Array, g: Array, lr: float) -> Array:
        """w ← w − η g."""
        w -= g * lr
        return w

    def momentum_update_(self, w: Array, g: Array, v: Array, lr: float, mu: float,
                         nesterov: bool) -> Array:
        """v ← μ v + g;  w ← w − η v  (Nesterov: w ← w − η (g + μ v))."""
        v *= mu
        v += g
        if nesterov:
            w -= (g + v * mu) * lr
        else:
            w -= v * lr
        return w

    def adam_update_(self, w: Array, g: Array, m: Array, v: Array, lr_t: float, beta1: float,
                     beta2: float, eps_hat: float, decay: float) -> Array:
        """One Adam step with the bias correction folded into ``lr_t`` and ``eps_hat``
        (computed once per step by the optimizer, see ``Adam.step_scalars``):

        m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  w ← d·w − η_t m / (√v + ε̂)

        with η_t = η √(1−β₂ᵗ)/(1−β₁ᵗ), ε̂ = ε √(1−β₂ᵗ) and d = ``decay`` = 1 − ηλ for
        decoupled weight decay (AdamW; 1.0: none, no multiply).
        """
        m *= beta1
        m += g * (1.0 - beta1)
        v *= beta2
        v += (g * g) * (1.0 - beta2)
        if not is_one(decay):
            w *= decay
        w -= m / (self.xp.sqrt(v) + eps_hat) * lr_t
        return w

    def rmsprop_update_(self, w: Array, g: Array, s: Array, lr: float, rho: float, eps: float) -> Array:
        """s ← ρ s + (1−ρ) g²;  w ← w − η g / (√s + ε)."""
        s *= rho
        s += (g * g) * (1.0 - rho)
        w -= g / (self.xp.sqrt(s) + eps) * lr
        return w

    def adam_scalars_(self, t: Array, lr: Array, lr_t: Array, eps_hat: Array, decay: Array | None,
                      beta1: float, beta2: float, eps: float, weight_decay: float) -> None:
        """Adam's per-step scalars of step ``t`` on the device (for a captured step, whose
        kernel arguments are frozen), as ``Adam.step_scalars`` computes them on the host: with
        c₂ = √(1−β₂ᵗ), η_t ← η c₂/(1−β₁ᵗ), ε̂ ← c₂ ε and, given ``decay``, d ← 1 − ηλ.  ``t``
        and ``lr`` are 0-d arrays in float64 where the device has it; the outputs are 0-d
        arrays in the parameters' dtype."""
        xp = self.xp
        c2 = xp.sqrt(1.0 - beta2 ** t)
        lr_t[...] = xp.astype(lr * c2 / (1.0 - beta1 ** t), lr_t.dtype)
        eps_hat[...] = xp.astype(c2 * eps, eps_hat.dtype)
        if decay is not None:
            decay[...] = xp.astype(1.0 - lr * weight_decay, decay.dtype)

    # Multi-tensor forms: one call for all parameters of a network.  Generic: a loop over the
    # one-parameter kernels; the NumPy backend compiles the loop (one dispatch per step).
    def sgd_update_many_(self, ws: list[Array], gs: list[Array], lr: float) -> None:
        for w, g in zip(ws, gs, strict=True):
            self.sgd_update_(w, g, lr)

    def momentum_update_many_(self, ws: list[Array], gs: list[Array], vs: list[Array], lr: float, mu: float,
                              nesterov: bool) -> None:
        for w, g, v in zip(ws, gs, vs, strict=True):
            self.momentum_update_(w, g, v, lr, mu, nesterov)

    def adam_update_many_(self, ws: list[Array], gs: list[Array], ms: list[Array], vs: list[Array], lr_t: float,
                          beta1: float, beta2: float, eps_hat: float, decay: float) -> None:
        for w, g, m, v in zip(ws, gs, ms, vs, strict=True):
            self.adam_update_(w, g, m, v, lr_t, beta1, beta2, eps_hat, decay)

    # ------------------------------------------------------------------ memory (ops.memory)
    def memory_info(self) -> dict[str, Any]:
        """Device memory figures (GPU backends): ``self.memory.info()``."""
        return self.memory.info()

    def release_memory(self) -> None:
        """Return cached, unused device memory to the driver: ``self.memory.release()``."""
        self.memory.release()

    def device_info(self) -> dict[str, Any]:
        """Name and memory of the device (GPU backends; raises on CPU ones): ``self.memory.describe()``."""
        return self.memory.describe()

    # ------------------------------------------------------------------ compiled training steps
    def step_compiler(self) -> Any:
        """The kernels of the compiled training step (``fit(graphs=...)`` on the CPU:
        :mod:`deepnet.backend.numba_steps` where numba is installed), or None: this backend has
        none (its graphs, if any, are ``self.graphs``)."""
        return None

    # ------------------------------------------------------------------ random numbers
    def device_rng(self, seed: int) -> DeviceRNG:
        """A generator on this backend seeded from the run's host generator."""
        return DeviceRNG(self, seed)

    def resume_device_rng(self, rng: DeviceRNG, state: dict) -> DeviceRNG:
        """The generator that continues a run from ``state`` (``get_state()`` of the run's
        generator, e.g. a checkpoint's): ``rng`` with the state set.  A backend that runs more
        than one kind of generator returns one of the kind that wrote ``state``."""
        rng.set_state(state)
        return rng
