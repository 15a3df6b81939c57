"""The NumPy backend with numba-compiled kernels (``NumbaOps``): the same functions as
:class:`~deepnet.backend.numpy_ops.NumpyOps`, faster where measured.

Each override takes the compiled kernel (``numba_kernels``) where its size threshold and
the arrays' layout allow, else the pure-NumPy method it overrides.  The registered
``numpy`` backend is a ``NumbaOps`` when numba imports and ``DEEPNET_NUMBA`` is not "0".
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from types import ModuleType
from typing import Any, Callable

import numpy as np

from .cblas import one_thread_here
from .counter_rng import CounterRNG, PhiloxKernel
from .numpy_ops import NumpyOps
from .ops import Array, DeviceRNG
from .products import NumpyProducts
from .windows import Window, check_image

_NUMBA_MIN_SIZE = 1024   # one parameter alone: below this NumPy's passes cost less than a compiled call
_NUMBA_LARGE_MIN = 16384  # ReLU forward: from here one compiled pass beats np.maximum
_NUMBA_SMALL_MAX = 4096  # activations up to this size: one compiled call beats several ufunc calls
# (the fourth, numba_kernels.PARALLEL_MIN_SIZE, picks the threaded update kernels)
_MULTI_MIN_PARAMS = 3    # multi-tensor updates: typed lists pay off from 3 parameters on


def load_window_kernels() -> ModuleType:
    """The compiled sliding-window kernels, ``deepnet.backend.numba_windows`` (numba at its top)."""
    from . import numba_windows      # an optional package's wrapper (tests/test_architecture.py)

    return numba_windows


def load_norm_kernels() -> ModuleType:
    """The compiled BatchNorm kernels, ``deepnet.backend.numba_norm`` (numba at its top)."""
    from . import numba_norm         # an optional package's wrapper (tests/test_architecture.py)

    return numba_norm


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


def _tile_stack(rows: int, t: int, dtype: Any, buffer: Array) -> Array:
    """A (16, rows, t) stack of Winograd tiles in ``buffer`` (flat, :func:`_tile_stack_size`
    elements at least) whose 16 blocks (each C-contiguous) start 256 bytes apart modulo 4096:
    the transforms touch all 16 at once, and blocks a multiple of 4 KiB apart would share the
    L1 cache's sets (measured: 10x slower, e.g. rows 64, t 1008)."""
    block = rows * t
    item = np.dtype(dtype).itemsize
    pad = ((256 - block * item % 4096) % 4096) // item
    return buffer[:16 * (block + pad)].reshape(16, block + pad)[:, :block].reshape(16, rows, t)


def _tile_stack_size(rows: int, t: int) -> int:
    """Elements a :func:`_tile_stack` of (16, rows, t) takes (at most)."""
    return 16 * (rows * t + 1024)


def _pairs(win: Window) -> bool:
    """The 2×2 window with stride 2 and no padding (its own compiled kernels)."""
    return (win.kh, win.kw, win.sh, win.sw, win.padded) == (2, 2, 2, 2, False)


def _same_rows(a: Array, b: Array) -> bool:
    """Both row-major, one shape and dtype: an elementwise kernel may walk them flat."""
    return a.flags.c_contiguous and b.flags.c_contiguous and a.shape == b.shape and a.dtype == b.dtype


class NumbaOps(NumpyOps):
    """NumpyOps plus numba's compiled kernels (``kernels``: default ``numba_kernels``)."""

    max_pool_kernel = True
    batch_norm_kernel = True

    def __init__(self, products: NumpyProducts | None = None, kernels: ModuleType | None = None) -> None:
        super().__init__(products)
        self._k: ModuleType = load_kernels() if kernels is None else kernels
        self._w: ModuleType = load_window_kernels()
        self._norm: ModuleType = load_norm_kernels()
        self._multi_cache: dict[tuple, tuple] = {}

    # ------------------------------------------------------------------ max-pooling
    # ------------------------------------------------------------------ BatchNorm of images
    def batch_norm_train(self, x: Array, gamma: Array, beta: Array, eps: float) -> tuple[Array, Array, Array, Array]:
        n, c = int(x.shape[0]), int(x.shape[1])
        xs = np.ascontiguousarray(x).reshape(n, c, -1)
        y = np.empty_like(xs)
        mean, var, inv_std = (np.empty(c, x.dtype) for _ in range(3))
        self._norm.serial["batch_norm"](xs, gamma, beta, float(eps), y, mean, var, inv_std)
        return y.reshape(x.shape), mean, var, inv_std

    def batch_norm_train_backward(self, dy: Array, x: Array, mean: Array, inv_std: Array, gamma: Array,
                                  dgamma: Array, dbeta: Array, need_input_grad: bool) -> Array | None:
        n, c = int(x.shape[0]), int(x.shape[1])
        dys = (dy if dy.flags.c_contiguous else np.ascontiguousarray(dy)).reshape(n, c, -1)
        xs = np.ascontiguousarray(x).reshape(n, c, -1)
        self._norm.serial["batch_norm_backward"](dys, xs, mean, inv_std, gamma, dgamma, dbeta,
                                                                       need_input_grad)
        return dys.reshape(x.shape) if need_input_grad else None

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
            self._w.serial["max_pool_2x2"](xs, ys, args)
        else:
            self._w.serial["max_pool"](xs, ys, args, win.kh, win.kw, win.sh, win.sw, win.pt, win.pl)
        return y, arg

    def max_pool_backward(self, dy: Array, arg: Array, x_shape: tuple[int, int, int, int], win: Window) -> Array:
        n, c, h, w = (int(d) for d in x_shape)
        oh, ow = int(dy.shape[2]), int(dy.shape[3])
        dx = np.empty((n, c, h, w), dy.dtype)
        dys, args, dxs = np.ascontiguousarray(dy).reshape(n * c, oh, ow), arg.reshape(n * c, oh, ow), dx.reshape(n * c, h, w)
        zero = _const(dy.dtype.type, 0.0)
        if _pairs(win):
            self._w.serial["max_pool_2x2_backward"](dys, args, dxs, zero)
        else:
            self._w.serial["max_pool_backward"](dys, args, dxs, win.kw, win.sh, win.sw, win.pt, win.pl, zero)
        return dx

    # ------------------------------------------------------------------ Winograd convolution
    # Conv2D's 3×3 stride-1 convolutions as Winograd F(2×2, 3×3): 16 products per 2×2 output tile
    # and channel pair where the direct convolution takes 36 (2.25× fewer multiplications), and no
    # im2col buffer (9× the input) nor col2im pass.  Per chunk of samples (``winograd_chunk_bytes``
    # of transformed tiles, so that they stay in the cache):
    #   V = Bᵀ d B per input tile (16, C, T),   M[ξ] = U[ξ] · V[ξ] (16 products),   y = Aᵀ M A;
    # backward, with ∂f/∂M = A δ Aᵀ: ∂f/∂U[ξ] += ∂f/∂M[ξ] · V[ξ]ᵀ, ∂f/∂V[ξ] = U[ξ]ᵀ · ∂f/∂M[ξ],
    # ∂f/∂x = Σ_tiles B ∂f/∂V Bᵀ, ∂f/∂g = Gᵀ ∂f/∂U G, where U = G g Gᵀ (numba_windows' kernels).
    # V is computed again in backward from the input the layer keeps (memory: the input alone).
    #: bytes of transformed tiles per chunk of samples
    winograd_chunk_bytes = 1 << 20
    #: fewer input or output channels than this: im2col (the products' inner size C is too short)
    winograd_min_channels = 8

    def winograd_conv_applies(self, win: Window, c_in: int, c_out: int, groups: int) -> bool:
        return ((win.kh, win.kw, win.sh, win.sw, win.dh, win.dw) == (3, 3, 1, 1, 1, 1) and groups == 1
                and min(c_in, c_out) >= self.winograd_min_channels)

    def _tiles(self, tag: str, rows: int, t: int, dtype: Any) -> Array:
        """A (16, rows, t) tile stack in this thread's scratch buffer ``tag``, grown as needed and
        reused by every convolution: fresh memory would be paged in on each call (measured: 2.6 ms
        of a 3.5 ms input transform of 4 MiB)."""
        bufs = self._thread_buffers("tiles")
        key, need = (tag, np.dtype(dtype).char), _tile_stack_size(rows, t)
        buf = bufs.get(key)
        if buf is None or buf.size < need:
            buf = bufs[key] = np.empty(need, dtype)
        return _tile_stack(rows, t, dtype, buf)

    def _winograd_plan(self, x: Array, c_out: int, win: Window) -> tuple[int, int, int, int, int]:
        """(OH, OW, TH, TW, samples per chunk) for the images x."""
        n, c, h, w = check_image(x, "winograd_conv")
        oh, ow = win.out_size(h, w)
        th, tw = (oh + 1) // 2, (ow + 1) // 2
        per_sample = 16 * max(c, c_out) * th * tw * x.dtype.itemsize
        return oh, ow, th, tw, max(1, min(n, self.winograd_chunk_bytes // per_sample))

    @staticmethod
    def _winograd_g(dtype: Any) -> Array:
        return np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype)

    def _winograd_weights(self, w: Array) -> Array:
        """U = G g Gᵀ of every (o, c) kernel, as (16, O, C): U[4i + j] the products' left factor
        (two plain products: a stacked matmul of O·C 3×3 kernels costs ~1 µs per kernel)."""
        g = self._winograd_g(w.dtype)
        o, c = w.shape[0], w.shape[1]
        gt = w.reshape(-1, 3) @ g.T                                   # g Gᵀ: rows (o, c, a), columns j
        u = g @ gt.reshape(o * c, 3, 4).transpose(1, 0, 2).reshape(3, -1)      # G (g Gᵀ): (i, (o, c, j))
        return np.ascontiguousarray(u.reshape(4, o, c, 4).transpose(0, 3, 1, 2)).reshape(16, o, c)

    def _winograd_weight_grad(self, du: Array, o: int, c: int) -> Array:
        """∂f/∂g = Gᵀ ∂f/∂U G for every (o, c), from ∂f/∂U (16, O, C), as (O, C, 3, 3)."""
        g = self._winograd_g(du.dtype)
        gtu = g.T @ du.reshape(4, -1)                                 # Gᵀ ∂f/∂U: (a, (j, o, c))
        dw = gtu.reshape(3, 4, o, c).transpose(0, 2, 3, 1).reshape(-1, 4) @ g      # (a, o, c) × b
        return dw.reshape(3, o, c, 3).transpose(1, 2, 0, 3)

    def _over_chunks(self, n: int, m: int, work: Callable[[int, int], None]) -> None:
        """``work(s, e)`` for every chunk [s, e) of n samples, m at a time: on numba's thread count
        of threads at once where that is above 1 and there are chunks enough (the kernels and the
        products release the GIL; each thread runs the serial kernels on its own chunks, which
        measured faster than threading each small kernel and product), else here in turn."""
        bounds = [(s, min(n, s + m)) for s in range(0, n, m)]
        workers = min(self._w.threads(), len(bounds))
        if workers <= 1 or threading.current_thread() is not threading.main_thread():
            for s, e in bounds:
                work(s, e)
            return
        size, pool = self.__dict__.get("_chunk_pool", (0, None))
        if pool is None or size != workers:
            if pool is not None:
                pool.shutdown(wait=False)
            pool = ThreadPoolExecutor(workers, thread_name_prefix="deepnet-chunks", initializer=one_thread_here)
            self.__dict__["_chunk_pool"] = (workers, pool)
        for future in [pool.submit(work, s, e) for s, e in bounds]:
            future.result()

    def winograd_conv(self, x: Array, w: Array, win: Window) -> Array:
        x = np.ascontiguousarray(x)
        n, c, o = x.shape[0], x.shape[1], w.shape[0]
        oh, ow, th, tw, m = self._winograd_plan(x, o, win)
        u = self._winograd_weights(w)
        y = np.empty((n, o, oh, ow), x.dtype)
        zero = _const(x.dtype.type, 0.0)
        products = self.products                # this context's (a worker thread's context has none)

        def chunk(s: int, e: int) -> None:
            t = (e - s) * th * tw
            v = self._tiles("input", c, t, x.dtype)
            self._w.serial["winograd_input"](x[s:e], v, win.pt, win.pl, th, tw, zero)
            prod = self._tiles("products", o, t, x.dtype)
            products.stacked_gemm(u, v, prod, False)                   # M[ξ] = U[ξ] · V[ξ]
            self._w.serial["winograd_output"](prod, y[s:e], th, tw)

        self._over_chunks(n, m, chunk)
        return y

    def winograd_conv_backward(self, dy: Array, x: Array, w: Array, win: Window, gw: Array, accumulate: bool,
                               need_input_grad: bool) -> Array | None:
        x, dy = np.ascontiguousarray(x), np.ascontiguousarray(dy)
        n, c, o = x.shape[0], x.shape[1], w.shape[0]
        oh, ow, th, tw, m = self._winograd_plan(x, o, win)
        u = self._winograd_weights(w)
        dus: dict[int, Array] = {}                                     # ∂f/∂U summed by each thread
        dx = np.empty(x.shape, x.dtype) if need_input_grad else None
        zero = _const(x.dtype.type, 0.0)
        products = self.products                # this context's (a worker thread's context has none)

        def chunk(s: int, e: int) -> None:
            t = (e - s) * th * tw
            dm = self._tiles("products", o, t, x.dtype)
            self._w.serial["winograd_output_adjoint"](dy[s:e], dm, th, tw, zero)
            v = self._tiles("input", c, t, x.dtype)
            self._w.serial["winograd_input"](x[s:e], v, win.pt, win.pl, th, tw, zero)
            du = dus.get(threading.get_ident())
            first = du is None
            if first:
                du = dus[threading.get_ident()] = np.empty((16, o, c), x.dtype)
            products.stacked_gemm(dm, v.transpose(0, 2, 1), du, not first)   # ∂f/∂U[ξ] += ∂f/∂M[ξ] V[ξ]ᵀ
            if dx is not None:                                         # ∂f/∂V[ξ] = U[ξ]ᵀ ∂f/∂M[ξ]
                products.stacked_gemm(u.transpose(0, 2, 1), dm, v, False)
                self._w.serial["winograd_input_adjoint"](v, dx[s:e], win.pt, win.pl, th, tw, zero)

        self._over_chunks(n, m, chunk)
        parts = list(dus.values())
        du = parts[0]
        for part in parts[1:]:
            du += part
        dw = self._winograd_weight_grad(du, o, c)                            # ∂f/∂g = Gᵀ ∂f/∂U G
        if accumulate:
            gw += dw
        else:
            gw[...] = dw
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
