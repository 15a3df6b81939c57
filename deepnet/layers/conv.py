"""Convolution and pooling over NCHW images: x has shape (n, C, H, W), one sample per index n.

Every layer here is written against the public protocol only: ``self.ops`` (``unfold``,
``fold``, ``linear``, ``gemm``, ``sum_rows``, ``add_bias_``) and ``self.ops.xp``.  A window
(kernel kh × kw, stride, padding, dilation) is a :class:`~deepnet.backend.windows.Window`;
``ops.unfold(x, win)`` lays its patches out as rows (im2col):

    cols = unfold(x)          shape (n·OH·OW, C·kh·kw), row (n, oh, ow), column (c, i, j)

so a convolution is the Dense layer's product on those rows, ``Y = cols · W₂ᵀ (+ b)``, and
``ops.fold`` (col2im, the adjoint of unfold: overlapping entries summed) hands the error
down.  Shapes of one sample: ``output_shape((C, H, W))``; OH = ⌊(H + pt + pb − dh·(kh−1) − 1)/sh⌋ + 1,
likewise OW.
"""

from __future__ import annotations

import math
import operator
from typing import Any, ClassVar, NamedTuple

from ..backend import Array
from ..backend.ops import store
from ..backend.windows import Window
from ..errors import ShapeError
from ..initializers import get_initializer
from .base import Layer


# ---------------------------------------------------------------------------- helpers
def _pair(layer: str, what: str, value: Any, least: int) -> tuple[int, int]:
    """An int or a pair of ints (list or tuple), each ≥ ``least``, as a tuple; ValueError if not."""
    items = list(value) if isinstance(value, (list, tuple)) else [value, value]
    ok = len(items) == 2
    out = []
    for v in items if ok else []:
        try:
            iv = operator.index(v)
        except TypeError:
            ok = False
            break
        if isinstance(v, bool) or iv < least:
            ok = False
            break
        out.append(iv)
    if not ok:
        raise ValueError(f"{layer}: {what} must be an int >= {least} or a pair of them, got {value!r}")
    return out[0], out[1]


def _image_shape(layer: Any, x: Array, channels: int | None = None) -> tuple[int, int, int, int]:
    """x.shape as (n, C, H, W); a one-line ShapeError for anything but 4-D NCHW (with ``channels``)."""
    if getattr(x, "ndim", None) != 4:
        want = f"(n, {channels}, H, W)" if channels is not None else "(n, C, H, W)"
        raise ShapeError(f"{layer.name} expects NCHW images {want}, got an input of shape "
                         f"{tuple(getattr(x, 'shape', ()))}")
    n, c, h, w = (int(d) for d in x.shape)
    if channels is not None and c != channels:
        raise ShapeError(f"{layer.name} expects {channels} input channels, got an input of shape {(n, c, h, w)}")
    return n, c, h, w


def _sample_shape(layer: Any, in_shape: tuple[int, ...], channels: int | None = None) -> tuple[int, int, int]:
    """A per-sample shape as (C, H, W); one-line ShapeError otherwise."""
    shape = tuple(int(d) for d in in_shape)
    if len(shape) != 3:
        raise ShapeError(f"{layer.name} expects per-sample images (C, H, W), got per-sample shape {shape}: "
                         "put Reshape before it")
    if channels is not None and shape[0] != channels:
        raise ShapeError(f"{layer.name} expects {channels} input channels, got per-sample shape {shape}")
    return shape[0], shape[1], shape[2]


def _out_hw(layer: Any, win: Window, h: int, w: int) -> tuple[int, int]:
    """(OH, OW) for an h × w image; a one-line ShapeError when the window does not fit."""
    eh, ew = win.extent
    hp, wp = h + win.pt + win.pb, w + win.pl + win.pr
    if eh > hp or ew > wp:
        pad = f" padded to {hp}x{wp}" if win.padded else ""
        raise ShapeError(f"{layer.name}: the {eh}x{ew} window is larger than the {h}x{w} image{pad}")
    return win.out_size(h, w)


class _PoolWindow:
    """Shared part of the windowed poolings (a mixin, so that it is no registered layer of its own):
    settings, shapes, and each channel's windows through unfold on (n·C, 1, H, W)."""

    backward_free = True

    name: str
    ops: Any

    def __init__(self, pool_size: int | list[int], stride: int | list[int] | None = None,
                 padding: int | list[int] = 0) -> None:
        super().__init__()
        name = type(self).__name__
        self.pool_size = _pair(name, "pool_size", pool_size, 1)
        self.stride = self.pool_size if stride is None else _pair(name, "stride", stride, 1)
        self.padding = _pair(name, "padding", padding, 0)
        (kh, kw), (ph, pw) = self.pool_size, self.padding
        if 2 * ph > kh or 2 * pw > kw:
            raise ValueError(f"{name}: padding {list(self.padding)} must be at most half the pool size "
                             f"{list(self.pool_size)}")
        self.window = Window.of(self.pool_size, self.stride, self.padding)

    def get_config(self) -> dict[str, Any]:
        return {"pool_size": list(self.pool_size), "stride": list(self.stride), "padding": list(self.padding)}

    def input_spec(self) -> tuple[int | None, ...] | None:
        return (None, None, None)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = _sample_shape(self, in_shape)
        return (c, *_out_hw(self, self.window, h, w))

    def _unfold(self, x: Array) -> tuple[Array, tuple[int, int, int, int], tuple[int, int]]:
        """(cols (n·C·OH·OW, kh·kw), x's shape, (OH, OW)): each channel's windows as rows."""
        n, c, h, w = _image_shape(self, x)
        oh, ow = _out_hw(self, self.window, h, w)
        cols = self.ops.unfold(self.ops.xp.reshape(x, (n * c, 1, h, w)), self.window)
        return cols, (n, c, h, w), (oh, ow)

    def _fold(self, dcols: Array, shape: tuple[int, int, int, int]) -> Array:
        """The error at the input, (n, C, H, W), from the error at each window entry."""
        n, c, h, w = shape
        return self.ops.xp.reshape(self.ops.fold(dcols, (n * c, 1, h, w), self.window), (n, c, h, w))

    # Tiles: windows that neither overlap nor need padding (stride == pool_size, padding 0, the
    # common case) skip unfold/fold.  Window entry k = (i, j) of every window is one strided
    # view x[:, :, i::sh, j::sw] cropped to OH·sh × OW·sw (floor: the last rows/columns that fill
    # no window are read by none and get gradient 0), so pooling is elementwise work on kh·kw
    # views of shape (n, C, OH, OW), and backward writes each view's share into a zeros array.
    # MaxPool2D(2) on (128, 32, 26, 26) float32, NumPy, 1 thread: forward + backward ~2.5x
    # faster than unfold/fold (tests/test_pool_fast.py compares the two paths bit for bit).
    #: False: always the unfold/fold path (the tests compare the two)
    tiles_fast_path: bool = True

    def _tiled(self) -> bool:
        """Whether this pooling runs on tiles (see above) rather than unfold/fold."""
        kh, kw = self.pool_size
        return (self.tiles_fast_path and self.stride == self.pool_size and self.padding == (0, 0)
                and kh * kw > 1)

    def _tiles(self, oh: int, ow: int) -> list[tuple[slice, slice]]:
        """Window entry k = i·kw + j (row-major) as the (rows, columns) slices of its view."""
        (kh, kw), (sh, sw) = self.pool_size, self.stride
        return [(slice(i, i + sh * (oh - 1) + 1, sh), slice(j, j + sw * (ow - 1) + 1, sw))
                for i in range(kh) for j in range(kw)]

    def _untile(self, planes: Any, shape: tuple[int, int, int, int], out_hw: tuple[int, int],
                dtype: Any) -> Array:
        """(n, C, H, W) zeros with plane k written into view k (disjoint: the adjoint of reading
        them); ``planes`` may be a generator, so that one plane at a time exists."""
        out = self.ops.zeros(shape, dtype=dtype)
        for (ri, ci), plane in zip(self._tiles(*out_hw), planes):
            out[:, :, ri, ci] = plane
        return out


# ---------------------------------------------------------------------------- Conv2D
class Conv2D(Layer):
    """2-D convolution (cross-correlation, like ``torch.nn.Conv2d``) of NCHW images.

    ``weight`` W has shape (O, C/groups, kh, kw) and ``bias`` b shape (O,), as in PyTorch.
    ``padding``: an int, a pair (ph, pw) (zeros on both sides), ``"valid"`` (none) or
    ``"same"`` (stride 1 only: output H × W = input H × W; the total padding dh·(kh−1) is
    split with the odd pixel at the bottom/right, as TensorFlow and PyTorch do).

    Forward, with cols = unfold(x) (n·OH·OW, C·kh·kw) and W₂ = W reshaped (O, C·kh·kw):
    Y = cols · W₂ᵀ (+ b), rows (n, oh, ow), then transposed to (n, O, OH, OW).  Backward, with
    δ = ∂f/∂y transposed to rows Δ (n·OH·OW, O):

    * ∂f/∂W₂ += Δᵀ · cols      (the derivation's δ · aᵀ, one column of a per output pixel)
    * ∂f/∂b += Σ_rows Δ
    * ẽ = fold(Δ · W₂)         (Wᵀ·δ per patch, each patch's error added back to its pixels)

    Computed in the transposed layout, the same values: colsᵀ = ``ops.unfold_t(x)``
    (C·kh·kw, n·OH·OW) and Δᵀ (O, n·OH·OW), so Yᵀ = W₂ · colsᵀ, ∂f/∂W₂ += Δᵀ · (colsᵀ)ᵀ,
    ∂f/∂b += row sums of Δᵀ and ẽ = ``ops.fold_t``(W₂ᵀ · Δᵀ): the patches' long axis is
    contiguous, so the unfold/fold are kh·kw strided copies of whole image rows (NumPy 3-4x
    faster than the row layout's) and NCHW ↔ Δᵀ is a transpose of (n, O) blocks.
    With groups g, channels and outputs split into g equal blocks, one product per block.
    Memory: training keeps x, and backward unfolds it again (``keep_patches = True``: it keeps
    colsᵀ, kh·kw/(sh·sw) times the size of x, the im2col cost, for one ``unfold_t`` less).
    Where ``ops.per_sample_products`` (NumPy), the same products run sample by sample on views of
    colsᵀ: y_n = W₂ · cols_nᵀ is NCHW at once, ∂f/∂W₂ += Σ_n δ_n · cols_n needs no Δᵀ copy.

    Where ``ops.winograd_conv_applies`` (3×3, stride 1, the NumPy backend with numba, enough
    channels), the backend computes the same convolution by Winograd F(2×2, 3×3) (fewer
    multiplications, no colsᵀ): ``ops.winograd_conv`` and ``ops.winograd_conv_backward``, and
    training keeps only x.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | list[int],
                 stride: int | list[int] = 1, padding: int | str | list[int] = 0,
                 dilation: int | list[int] = 1, bias: bool = True, groups: int = 1, init: str = "he") -> None:
        super().__init__()
        for label, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Conv2D: {label} must be a positive integer, got {v!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2D: groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _pair("Conv2D", "kernel_size", kernel_size, 1)
        self.stride = _pair("Conv2D", "stride", stride, 1)
        self.dilation = _pair("Conv2D", "dilation", dilation, 1)
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Conv2D: padding must be 'same', 'valid', an int or a pair, got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"Conv2D: padding='same' needs stride 1, got stride {list(self.stride)}")
            self.padding: str | tuple[int, int] = padding
            th, tw = (dh * (kh - 1), dw * (kw - 1)) if padding == "same" else (0, 0)
            pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)       # the odd pixel at bottom/right
        else:
            self.padding = _pair("Conv2D", "padding", padding, 0)
            pads = (self.padding[0], self.padding[0], self.padding[1], self.padding[1])
        self.window = Window.of(self.kernel_size, self.stride, pads, self.dilation)
        self.bias = bool(bias)
        self.init = init
        get_initializer(init)  # validate early

    def initialize(self, rng: Any) -> None:
        kh, kw = self.kernel_size
        fan_in = self.in_channels // self.groups * kh * kw
        w = get_initializer(self.init)(rng, (self.out_channels, fan_in))    # fan-in C/g·kh·kw
        self.add_param("weight", w.reshape(self.out_channels, self.in_channels // self.groups, kh, kw))
        if self.bias:
            self.add_param("bias", w[:, 0] * 0.0)

    def get_config(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
                "dilation": list(self.dilation), "bias": self.bias, "groups": self.groups, "init": self.init}

    def input_spec(self) -> tuple[int | None, ...] | None:
        return (self.in_channels, None, None)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        _, h, w = _sample_shape(self, in_shape, self.in_channels)
        return (self.out_channels, *_out_hw(self, self.window, h, w))

    def _blocks(self) -> list[tuple[slice, slice]]:
        """Per group: (its outputs: rows of W₂, columns of Δ; its inputs: columns of cols and of ∂f/∂cols)."""
        g = self.groups
        og, ck = self.out_channels // g, self.in_channels // g * self.kernel_size[0] * self.kernel_size[1]
        return [(slice(k * og, (k + 1) * og), slice(k * ck, (k + 1) * ck)) for k in range(g)]

    #: the most bytes of unfolded patches a forward pass keeps (or a backward pass builds) at
    #: once: a batch whose patches would take more is convolved in chunks of samples, and
    #: backward unfolds each chunk again instead of keeping them (memory for time)
    max_patch_bytes: ClassVar[int] = 256 << 20
    #: True: training keeps colsᵀ for backward (kh·kw/(sh·sw) times x); False (default): it keeps
    #: x, as PyTorch does, and backward unfolds it again (one more ``unfold_t``: ResNet-20's
    #: stride-2 convolutions kept 23 MiB of patches at batch 128, the simple CNN's first 3 MiB)
    keep_patches: ClassVar[bool] = False

    def _chunk(self, n: int, c: int, oh: int, ow: int, itemsize: int) -> int:
        """Samples per chunk: all n when their patches fit in :attr:`max_patch_bytes`."""
        per_sample = c * self.kernel_size[0] * self.kernel_size[1] * oh * ow * itemsize
        return max(1, min(n, self.max_patch_bytes // max(per_sample, 1)))

    def _convolve(self, x: Array, oh: int, ow: int) -> tuple[Array, Array]:
        """(y of shape (n, O, OH, OW), colsᵀ) for the images x."""
        ops, xp = self.ops, self.ops.xp
        n, o = int(x.shape[0]), self.out_channels
        cols_t = ops.unfold_t(x, self.window)                               # (C·kh·kw, n·OH·OW)
        w2 = xp.reshape(self._params["weight"].data, (o, -1))              # W₂: (O, C/g·kh·kw)
        if self.groups == 1 and ops.per_sample_products:                   # y_n = W₂ · cols_nᵀ, NCHW at once
            y = xp.reshape(xp.matmul(w2, _per_sample(xp, cols_t, n)), (n, o, oh, ow))
        else:
            if self.groups == 1:
                y_t = ops.gemm(w2, cols_t)                                  # Yᵀ = W₂ · colsᵀ
            else:
                y_t = ops.empty((o, n * oh * ow), dtype=cols_t.dtype)
                for oi, ci in self._blocks():
                    ops.gemm(w2[oi, :], cols_t[ci, :], out=y_t[oi, :])
            y = ops.empty((n, o, oh, ow), dtype=x.dtype)
            y[...] = xp.permute_dims(xp.reshape(y_t, (o, n, oh, ow)), (1, 0, 2, 3))   # → NCHW
        if self.bias:
            y += xp.reshape(self._params["bias"].data, (1, o, 1, 1))       # + b (one per output channel)
        return y, cols_t

    def forward(self, x: Array, training: bool = False) -> Array:
        ops, xp = self.ops, self.ops.xp
        n, c, h, w = _image_shape(self, x, self.in_channels)
        oh, ow = _out_hw(self, self.window, h, w)
        o = self.out_channels
        if ops.winograd_conv_applies(self.window, c, o, self.groups):     # the backend's F(2×2, 3×3)
            y = ops.winograd_conv(x, self._params["weight"].data, self.window)
            if self.bias:
                y += xp.reshape(self._params["bias"].data, (1, o, 1, 1))
            self._cache = (None, (n, c, h, w), _WinogradInput(x)) if training else None
            return y
        m = self._chunk(n, c, oh, ow, _ITEMSIZE.get(ops.dtype_name(x.dtype), 8))
        if m >= n:
            y, cols_t = self._convolve(x, oh, ow)
        else:
            y = ops.empty((n, o, oh, ow), dtype=x.dtype)
            for s in range(0, n, m):                                        # chunks: the patches are large
                e = min(s + m, n)
                y[s:e, ...], cols_t = self._convolve(x[s:e, ...], oh, ow)
        if not training:
            self._cache = None
        elif m >= n and self.keep_patches:
            self._cache = (cols_t, (n, c, h, w), None)
        else:                                                               # backward unfolds x again
            self._cache = (None, (n, c, h, w), (x, m))
        return y

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        cols_t, x_shape, chunked = self._need_cache()
        if chunked is None:
            return self._backward_chunk(cols_t, x_shape, grad_output, need_input_grad, False)
        if isinstance(chunked, _WinogradInput):
            return self._backward_winograd(chunked.x, grad_output, need_input_grad)
        x, m = chunked
        n = x_shape[0]
        if m >= n:                                                          # one chunk: the whole batch
            return self._backward_chunk(self.ops.unfold_t(x, self.window), x_shape, grad_output,
                                        need_input_grad, False)
        dx = self.ops.empty(x_shape, dtype=grad_output.dtype) if need_input_grad else None
        for s in range(0, n, m):
            e = min(s + m, n)
            xs = x[s:e, ...]
            part = self._backward_chunk(self.ops.unfold_t(xs, self.window), (e - s, *x_shape[1:]),
                                        grad_output[s:e, ...], need_input_grad, s > 0)
            if dx is not None:
                dx[s:e, ...] = part
        return dx

    def _backward_winograd(self, x: Array, grad_output: Array, need_input_grad: bool) -> Array | None:
        """∂f/∂W, ∂f/∂b and ẽ through the backend's Winograd convolution (x: the kept input)."""
        params = self._params
        gw, acc = params["weight"].grad_target()
        dx = self.ops.winograd_conv_backward(grad_output, x, params["weight"].data, self.window, gw, acc,
                                             need_input_grad)
        if self.bias:
            gb, acc = params["bias"].grad_target()
            store(self.ops.xp.sum(grad_output, axis=(0, 2, 3)), gb, acc)      # ∂f/∂b += Σ_(n, oh, ow) δ
        return dx

    def _backward_chunk(self, cols_t: Array, x_shape: tuple[int, ...], grad_output: Array, need_input_grad: bool,
                        more: bool) -> Array | None:
        """∂f/∂W₂ += Δᵀ·cols, ∂f/∂b += Σ Δ and ẽ = fold(Δ·W₂) for one chunk of samples
        (``more``: a later chunk, which adds to the gradients the first one wrote)."""
        ops, xp = self.ops, self.ops.xp
        n, o, oh, ow = (int(d) for d in grad_output.shape)
        params = self._params
        gw, acc = params["weight"].grad_target()
        acc = acc or more
        gw2 = xp.reshape(gw, (o, -1))                                       # a view of the grad buffer
        per_sample = self.groups == 1 and ops.per_sample_products
        if per_sample:                                                      # ∂f/∂W₂ += Σ_n δ_n · cols_n
            delta = xp.reshape(grad_output, (n, o, oh * ow))
            cols_n = xp.permute_dims(_per_sample(xp, cols_t, n), (0, 2, 1))
            store(xp.sum(xp.matmul(delta, cols_n), axis=0), gw2, acc)
            if self.bias:
                gb, acc_b = params["bias"].grad_target()
                store(xp.sum(delta, axis=(0, 2)), gb, acc_b or more)       # ∂f/∂b += Σ_(n, oh, ow) δ
            if not need_input_grad:
                return None
        delta_t = ops.empty((o, n, oh, ow), dtype=grad_output.dtype)
        delta_t[...] = xp.permute_dims(grad_output, (1, 0, 2, 3))
        delta_t = xp.reshape(delta_t, (o, n * oh * ow))                     # Δᵀ: columns (n, oh, ow)
        if not per_sample:
            if self.groups == 1:
                ops.gemm(delta_t, cols_t, trans_b=True, out=gw2, accumulate=acc)     # ∂f/∂W₂ += Δᵀ cols
            else:
                for oi, ci in self._blocks():
                    ops.gemm(delta_t[oi, :], cols_t[ci, :], trans_b=True, out=gw2[oi, :], accumulate=acc)
            if self.bias:
                gb, acc_b = params["bias"].grad_target()
                ops.sum_rows(xp.matrix_transpose(delta_t), out=gb, accumulate=acc_b or more)   # ∂f/∂b += Σ_rows Δ
            if not need_input_grad:
                return None
        w2 = xp.reshape(params["weight"].data, (o, -1))
        if self.groups == 1:
            dcols_t = ops.gemm(w2, delta_t, trans_a=True)                   # (Δ · W₂)ᵀ = W₂ᵀ · Δᵀ
        else:
            dcols_t = ops.empty((int(cols_t.shape[0]), n * oh * ow), dtype=delta_t.dtype)
            for oi, ci in self._blocks():
                ops.gemm(w2[oi, :], delta_t[oi, :], trans_a=True, out=dcols_t[ci, :])
        return ops.fold_t(dcols_t, x_shape, self.window)                    # ẽ = fold(Δ · W₂)


def _per_sample(xp: Any, cols_t: Array, n: int) -> Array:
    """colsᵀ (C·kh·kw, n·OH·OW) viewed per sample: (n, C·kh·kw, OH·OW), each a matrix the
    products take without a copy."""
    return xp.permute_dims(xp.reshape(cols_t, (int(cols_t.shape[0]), n, -1)), (1, 0, 2))


class _WinogradInput(NamedTuple):
    """What a Conv2D computed by ``ops.winograd_conv`` keeps for backward: its input."""

    x: Array


#: bytes per element of the float dtypes (the Array API's dtypes do not say)
_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


# ---------------------------------------------------------------------------- pooling
class MaxPool2D(_PoolWindow, Layer):
    """y = the maximum over each pool_size window of each channel (stride defaults to pool_size).

    Padding counts as −∞, so it never wins (``padding`` is at most half the pool size, so
    every window holds a pixel).  Backward routes δ to the arg-max of its window, added up
    where windows overlap: ẽ = fold(onehot(argmax) ∘ δ).  Ties: the first maximal position
    of the window in row-major order (top-left first) wins and gets all of δ.

    Tiles (stride == pool_size, padding 0): y = a balanced tree of ``maximum`` over the kh·kw
    views; the arg-max (a small integer per window) = the first view equal to y; backward writes
    where(arg == k, δ, 0) into view k.  The same maxima, tie rule and routing as unfold/fold,
    bit for bit, except in degenerate windows: a window holding NaN gives y = NaN on both paths
    but routes δ to its last position (unfold: its first NaN), and a tie of −0.0 with +0.0 may
    give y the other zero's sign.

    A backend with ``ops.max_pool_kernel`` computes the same (the unfold path's maxima, tie and
    NaN rules, bit for bit) in one compiled pass: ``ops.max_pool`` / ``ops.max_pool_backward``.
    """

    #: False: the array paths (tiles or unfold) even where the backend has a kernel (the tests compare them)
    kernel_path: bool = True

    def forward(self, x: Array, training: bool = False) -> Array:
        if self.ops.max_pool_kernel and self.kernel_path:                   # the backend's one pass
            shape = _image_shape(self, x)
            _out_hw(self, self.window, shape[2], shape[3])
            y, arg = self.ops.max_pool(x, self.window)
            self._cache = (arg, shape, "kernel") if training else None
            return y
        if self._tiled():
            return self._forward_tiles(x, training)
        ops, xp = self.ops, self.ops.xp
        cols, shape, (oh, ow) = self._unfold(x)                             # (n·C·OH·OW, kh·kw)
        n, c, h, w = shape
        win = self.window
        if win.padded:                                                      # padding entries → −∞
            real = ops.unfold(ops.full((1, 1, h, w), 1.0, dtype=cols.dtype), win) > 0.5   # (OH·OW, K)
            cols = xp.reshape(xp.where(real, xp.reshape(cols, (n * c, oh * ow, -1)),
                                       ops.full((1, 1), -math.inf, dtype=cols.dtype)), (n * c * oh * ow, -1))
        arg = xp.argmax(cols, axis=1)                                       # the first maximum wins
        y = xp.take_along_axis(cols, xp.reshape(arg, (-1, 1)), axis=1)      # (NumPy: 2x faster than max)
        self._cache = (arg, shape, None) if training else None
        return xp.reshape(y, (n, c, oh, ow))

    def _forward_tiles(self, x: Array, training: bool) -> Array:
        xp = self.ops.xp
        shape = _image_shape(self, x)
        oh, ow = _out_hw(self, self.window, shape[2], shape[3])
        views = [x[:, :, ri, ci] for ri, ci in self._tiles(oh, ow)]        # kh·kw of (n, C, OH, OW)
        level = views
        while len(level) > 1:                                               # y = max over the views
            level = [xp.maximum(level[m], level[m + 1]) if m + 1 < len(level) else level[m]
                     for m in range(0, len(level), 2)]
        y = level[0]
        self._cache = None
        if training:                                                        # arg = the first view equal to y
            k = len(views)
            ks = self.ops.arange(k, dtype=xp.int8 if k <= 127 else xp.int32)
            arg = xp.where(views[k - 2] == y, ks[k - 2], ks[k - 1])
            for m in range(k - 3, -1, -1):
                arg = xp.where(views[m] == y, ks[m], arg)
            self._cache = (arg, shape, (oh, ow))
        return y

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        arg, shape, tiles = self._need_cache()
        if not need_input_grad:
            return None
        if tiles == "kernel":
            return self.ops.max_pool_backward(grad_output, arg, shape, self.window)
        xp = self.ops.xp
        k = self.pool_size[0] * self.pool_size[1]
        if tiles is not None:                                               # δ into view arg, 0 elsewhere
            d = grad_output + 0.0                                           # −0 → +0, as fold's zeros + δ gives
            zero = self.ops.zeros((1, 1, 1, 1), dtype=grad_output.dtype)
            ks = self.ops.arange(k, dtype=arg.dtype)
            return self._untile((xp.where(arg == ks[m], d, zero) for m in range(k)), shape, tiles,
                                grad_output.dtype)
        hit = xp.reshape(arg, (-1, 1)) == xp.reshape(self.ops.arange(k, dtype=arg.dtype), (1, k))
        zero = self.ops.zeros((1, 1), dtype=grad_output.dtype)
        dcols = xp.where(hit, xp.reshape(grad_output, (-1, 1)), zero)       # δ at the arg-max, 0 elsewhere
        return self._fold(dcols, shape)


class AvgPool2D(_PoolWindow, Layer):
    """y = the mean over each pool_size window of each channel (stride defaults to pool_size).

    Padding zeros count in the mean (every window divides by kh·kw, PyTorch's default
    ``count_include_pad=True``).  Backward: each window entry gets δ/(kh·kw), ẽ = fold of them.

    Tiles (stride == pool_size, padding 0): y = the sum of the kh·kw views, added in the order
    of NumPy's ``sum`` over a row of kh·kw (so bit for bit the unfold path's result on NumPy
    and strict; CuPy's and PyTorch's reduction orders are their own), times 1/(kh·kw); backward writes
    δ·(1/(kh·kw)) into every view.
    """

    def forward(self, x: Array, training: bool = False) -> Array:
        if self._tiled():
            shape = _image_shape(self, x)
            oh, ow = _out_hw(self, self.window, shape[2], shape[3])
            views = [x[:, :, ri, ci] for ri, ci in self._tiles(oh, ow)]
            self._cache = (shape, (oh, ow)) if training else None
            return (self._pairwise_sum(views) + 0.0) * (1.0 / len(views))
        cols, shape, (oh, ow) = self._unfold(x)
        n, c, _, _ = shape
        k = self.pool_size[0] * self.pool_size[1]
        y = self.ops.xp.sum(cols, axis=1) * (1.0 / k)
        self._cache = (shape, None) if training else None
        return self.ops.xp.reshape(y, (n, c, oh, ow))

    @classmethod
    def _pairwise_sum(cls, terms: list[Array]) -> Array:
        """Σ terms in NumPy's pairwise order for a contiguous row (numpy's pairwise_sum: under 8
        terms one after another, up to 128 eight running sums, beyond that halves); the caller
        adds 0.0 last, as NumPy's reduction starts from +0.0."""
        n = len(terms)
        if n < 8:
            total = terms[0] + 0.0
            for t in terms[1:]:
                total = total + t
            return total
        if n <= 128:
            r, i = list(terms[:8]), 8
            while i < n - n % 8:
                r = [r[m] + terms[i + m] for m in range(8)]
                i += 8
            total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
            for t in terms[i:]:
                total = total + t
            return total
        half = n // 2 - (n // 2) % 8
        return cls._pairwise_sum(terms[:half]) + cls._pairwise_sum(terms[half:])

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        shape, tiles = self._need_cache()
        if not need_input_grad:
            return None
        xp = self.ops.xp
        k = self.pool_size[0] * self.pool_size[1]
        if tiles is not None:                                               # δ/(kh·kw) into every view
            share = grad_output * self.ops.full((1, 1, 1, 1), 1.0 / k, dtype=grad_output.dtype) + 0.0
            return self._untile((share for _ in range(k)), shape, tiles, grad_output.dtype)
        dcols = xp.reshape(grad_output, (-1, 1)) * self.ops.full((1, k), 1.0 / k, dtype=grad_output.dtype)
        return self._fold(dcols, shape)


class GlobalAvgPool2D(Layer):
    """(n, C, H, W) → (n, C): y = the mean of each channel's H·W pixels; ẽ = δ/(H·W) at every pixel."""

    backward_free = True

    def input_spec(self) -> tuple[int | None, ...] | None:
        return (None, None, None)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (_sample_shape(self, in_shape)[0],)

    def forward(self, x: Array, training: bool = False) -> Array:
        shape = _image_shape(self, x)
        self._cache = shape if training else None
        return self.ops.xp.mean(x, axis=(2, 3))

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        n, c, h, w = self._need_cache()
        if not need_input_grad:
            return None
        return (self.ops.xp.reshape(grad_output, (n, c, 1, 1))
                * self.ops.full((1, 1, h, w), 1.0 / (h * w), dtype=grad_output.dtype))


# ---------------------------------------------------------------------------- shapes
class Flatten(Layer):
    """(n, d₁, …, d_k) → (n, d₁·…·d_k) in C order (NCHW: channel, then row, then column); ẽ = δ reshaped back."""

    backward_free = True
    compiled_kind = "flatten"

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(int(d) for d in in_shape),)

    def forward(self, x: Array, training: bool = False) -> Array:
        if getattr(x, "ndim", 0) < 2:
            raise ShapeError(f"Flatten expects a batch (n, ...) of at least 2 dimensions, got an input of "
                             f"shape {tuple(getattr(x, 'shape', ()))}")
        shape = tuple(int(d) for d in x.shape)
        self._cache = shape if training else None
        return self.ops.xp.reshape(x, (shape[0], math.prod(shape[1:])))

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        shape = self._need_cache()
        return self.ops.xp.reshape(grad_output, shape) if need_input_grad else None


class Reshape(Layer):
    """(n, features) → (n, *shape), e.g. rows of 784 pixels → images ``Reshape([1, 28, 28])``;
    ẽ = δ reshaped back to rows.  Starts a convolutional network (data sets are rows)."""

    backward_free = True

    def __init__(self, shape: list[int]) -> None:
        super().__init__()
        if not isinstance(shape, (list, tuple)) or not shape:
            raise ValueError(f"Reshape: shape must be a non-empty list of positive ints, got {shape!r}")
        dims = []
        for d in shape:
            if isinstance(d, bool) or not isinstance(d, int) or d < 1:
                raise ValueError(f"Reshape: shape must be a non-empty list of positive ints, got {shape!r}")
            dims.append(int(d))
        self.shape = tuple(dims)
        self.n_in = math.prod(dims)

    def get_config(self) -> dict[str, Any]:
        return {"shape": list(self.shape)}

    def input_shape(self) -> tuple[int, ...] | None:
        return (self.n_in,)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if tuple(int(d) for d in in_shape) != (self.n_in,):
            raise ShapeError(f"Reshape to {list(self.shape)} expects inputs of width {self.n_in}, "
                             f"got per-sample shape {tuple(in_shape)}")
        return self.shape

    def forward(self, x: Array, training: bool = False) -> Array:
        if getattr(x, "ndim", None) != 2 or int(x.shape[1]) != self.n_in:
            raise ShapeError(f"Reshape to {list(self.shape)} expects rows (n, {self.n_in}), got an input of "
                             f"shape {tuple(getattr(x, 'shape', ()))}")
        n = int(x.shape[0])
        self._cache = n if training else None
        return self.ops.xp.reshape(x, (n, *self.shape))

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        n = self._need_cache()
        return self.ops.xp.reshape(grad_output, (n, self.n_in)) if need_input_grad else None
