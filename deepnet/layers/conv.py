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
from typing import Any

from ..backend import Array
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

    With groups g, channels and outputs split into g equal blocks, one product per block.
    Memory: training keeps cols, kh·kw/(sh·sw) times the size of x (the im2col cost).
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

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        _, h, w = _sample_shape(self, in_shape, self.in_channels)
        return (self.out_channels, *_out_hw(self, self.window, h, w))

    def _blocks(self) -> list[tuple[slice, slice]]:
        """Per group: (its outputs: rows of W₂, columns of Δ; its inputs: columns of cols and of ∂f/∂cols)."""
        g = self.groups
        og, ck = self.out_channels // g, self.in_channels // g * self.kernel_size[0] * self.kernel_size[1]
        return [(slice(k * og, (k + 1) * og), slice(k * ck, (k + 1) * ck)) for k in range(g)]

    def forward(self, x: Array, training: bool = False) -> Array:
        ops, xp = self.ops, self.ops.xp
        n, c, h, w = _image_shape(self, x, self.in_channels)
        oh, ow = _out_hw(self, self.window, h, w)
        o = self.out_channels
        cols = ops.unfold(x, self.window)                                   # (n·OH·OW, C·kh·kw)
        w2 = xp.reshape(self._params["weight"].data, (o, -1))              # W₂: (O, C/g·kh·kw)
        if self.groups == 1:
            rows = ops.linear(cols, w2)                                     # Y = cols · W₂ᵀ
        else:
            rows = xp.concat([ops.linear(cols[:, ci], w2[oi, :]) for oi, ci in self._blocks()], axis=1)
        if self.bias:
            ops.add_bias_(rows, self._params["bias"].data)                 # + b
        y = ops.empty((n, o, oh, ow), dtype=rows.dtype)
        y[...] = xp.permute_dims(xp.reshape(rows, (n, oh, ow, o)), (0, 3, 1, 2))   # rows → NCHW (one copy)
        self._cache = (cols, (n, c, h, w)) if training else None
        return y

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        cols, x_shape = self._need_cache()
        ops, xp = self.ops, self.ops.xp
        n, o, oh, ow = (int(d) for d in grad_output.shape)
        delta = ops.empty((n, oh, ow, o), dtype=grad_output.dtype)
        delta[...] = xp.permute_dims(grad_output, (0, 2, 3, 1))
        delta = xp.reshape(delta, (n * oh * ow, o))                         # Δ: rows (n, oh, ow)
        params = self._params
        gw, acc = params["weight"].grad_target()
        gw2 = xp.reshape(gw, (o, -1))                                       # a view of the grad buffer
        if self.groups == 1:
            ops.gemm(delta, cols, trans_a=True, out=gw2, accumulate=acc)     # ∂f/∂W₂ += Δᵀ cols
        else:
            for oi, ci in self._blocks():
                ops.gemm(delta[:, oi], cols[:, ci], trans_a=True, out=gw2[oi, :], accumulate=acc)
        if self.bias:
            gb, acc = params["bias"].grad_target()
            ops.sum_rows(delta, out=gb, accumulate=acc)                     # ∂f/∂b += Σ_rows Δ
        if not need_input_grad:
            return None
        w2 = xp.reshape(params["weight"].data, (o, -1))
        if self.groups == 1:
            dcols = ops.gemm(delta, w2)                                     # Δ · W₂
        else:
            dcols = xp.concat([ops.gemm(delta[:, oi], w2[oi, :]) for oi, _ in self._blocks()], axis=1)
        return ops.fold(dcols, x_shape, self.window)                        # ẽ = fold(Δ · W₂)


# ---------------------------------------------------------------------------- pooling
class MaxPool2D(_PoolWindow, Layer):
    """y = the maximum over each pool_size window of each channel (stride defaults to pool_size).

    Padding counts as −∞, so it never wins (``padding`` is at most half the pool size, so
    every window holds a pixel).  Backward routes δ to the arg-max of its window, added up
    where windows overlap: ẽ = fold(onehot(argmax) ∘ δ).  Ties: the first maximal position
    of the window in row-major order (top-left first) wins and gets all of δ.
    """

    def forward(self, x: Array, training: bool = False) -> Array:
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
        self._cache = (arg, shape) if training else None
        return xp.reshape(y, (n, c, oh, ow))

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        arg, shape = self._need_cache()
        if not need_input_grad:
            return None
        xp = self.ops.xp
        k = self.pool_size[0] * self.pool_size[1]
        hit = xp.reshape(arg, (-1, 1)) == xp.reshape(self.ops.arange(k, dtype=arg.dtype), (1, k))
        zero = self.ops.zeros((1, 1), dtype=grad_output.dtype)
        dcols = xp.where(hit, xp.reshape(grad_output, (-1, 1)), zero)       # δ at the arg-max, 0 elsewhere
        return self._fold(dcols, shape)


class AvgPool2D(_PoolWindow, Layer):
    """y = the mean over each pool_size window of each channel (stride defaults to pool_size).

    Padding zeros count in the mean (every window divides by kh·kw, PyTorch's default
    ``count_include_pad=True``).  Backward: each window entry gets δ/(kh·kw), ẽ = fold of them.
    """

    def forward(self, x: Array, training: bool = False) -> Array:
        cols, shape, (oh, ow) = self._unfold(x)
        n, c, _, _ = shape
        k = self.pool_size[0] * self.pool_size[1]
        y = self.ops.xp.sum(cols, axis=1) * (1.0 / k)
        self._cache = shape if training else None
        return self.ops.xp.reshape(y, (n, c, oh, ow))

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        shape = self._need_cache()
        if not need_input_grad:
            return None
        xp = self.ops.xp
        k = self.pool_size[0] * self.pool_size[1]
        dcols = xp.reshape(grad_output, (-1, 1)) * self.ops.full((1, k), 1.0 / k, dtype=grad_output.dtype)
        return self._fold(dcols, shape)


class GlobalAvgPool2D(Layer):
    """(n, C, H, W) → (n, C): y = the mean of each channel's H·W pixels; ẽ = δ/(H·W) at every pixel."""

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
