"""Data augmentation as layers: random crops/shifts and flips of NCHW images.

Active in training (a new draw per sample each step, from the network's device generator,
so a seed gives the same augmentations and a resumed run continues the same stream), the
identity in evaluation.  Backward hands the error through the transpose of the same
per-sample gather, so a layer behind them (or a gradient check) sees the true gradient.
"""

from __future__ import annotations

from typing import Any

from ..backend import Array
from .base import Layer, ShapeError
from .draws import RandomDraws


class RandomCrop(RandomDraws, Layer):
    """Pad NCHW images with ``padding`` zeros on every side, then crop ``size`` = (h, w) at a
    random place per sample (default size: the input's, i.e. a random shift by up to
    ``padding`` pixels each way).  Evaluation: the centred crop (the identity when ``size`` is
    the input's).

    y[n, c, i, j] = x[n, c, i + t_n − p, j + l_n − p] (0 outside x) with t_n, l_n uniform in
    0 … H + 2p − h and 0 … W + 2p − w.  Backward scatters the error back into the padded
    frame and drops the padding: ẽ[n, c, a, b] = δ[n, c, a − t_n + p, b − l_n + p] (0 outside δ).
    """

    step_scratch = ("_top", "_left")     # a new draw each step, read only by that step's backward

    def __init__(self, size: int | list[int] | None = None, padding: int = 0, seed: int = 0) -> None:
        super().__init__()
        self._start_draws(seed)
        self.size = None if size is None else _pair(f"{type(self).__name__}: size", size, 1)
        if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
            raise ValueError(f"{type(self).__name__}: padding must be an int ≥ 0, got {padding!r}")
        self.padding = int(padding)
        self._top: Array | None = None
        self._left: Array | None = None

    def get_config(self) -> dict[str, Any]:
        return {"size": None if self.size is None else list(self.size), "padding": self.padding}

    def _forget_draw(self) -> None:
        self._top = self._left = None

    def _out_hw(self, h: int, w: int) -> tuple[int, int]:
        oh, ow = (h, w) if self.size is None else self.size
        p = self.padding
        if oh > h + 2 * p or ow > w + 2 * p:
            raise ShapeError(f"{self.name}: crop size {oh}x{ow} is larger than the {h}x{w} input padded by {p} "
                             f"({h + 2 * p}x{w + 2 * p})")
        return oh, ow

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = _sample_shape(self, in_shape)
        return (c, *self._out_hw(h, w))

    def forward(self, x: Array, training: bool = False) -> Array:
        n, c, h, w = _image_shape(self, x)
        oh, ow = self._out_hw(h, w)
        p, xp = self.padding, self.ops.xp
        if not training:
            self._cache = None
            if (oh, ow) == (h, w):
                return self.ops.copy(x)
            t, left = (h - oh) // 2, (w - ow) // 2
            return xp.asarray(x[:, :, t:t + oh, left:left + ow], copy=True)
        if not (self._frozen and self._top is not None and int(self._top.shape[0]) == n):
            u = self._uniform((n, 2))
            self._top = self._integers(u[:, 0], h + 2 * p - oh + 1) - p
            self._left = self._integers(u[:, 1], w + 2 * p - ow + 1) - p
        self._cache = (self._top, self._left, (h, w))
        return self.ops.crop_at(x, self._top, self._left, (oh, ow))

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        top, left, hw = self._need_cache()
        if not need_input_grad:
            return None
        return self.ops.crop_at(grad_output, -top, -left, hw)


class RandomShift(RandomCrop):
    """Shift NCHW images by a random whole number of pixels in −``max_shift`` … ``max_shift``
    along each axis, per sample, filling with zeros (``RandomCrop(padding=max_shift)``)."""

    def __init__(self, max_shift: int = 2, seed: int = 0) -> None:
        if not isinstance(max_shift, int) or isinstance(max_shift, bool) or max_shift < 0:
            raise ValueError(f"RandomShift: max_shift must be an int ≥ 0, got {max_shift!r}")
        super().__init__(None, padding=max_shift, seed=seed)
        self.max_shift = self.padding

    def get_config(self) -> dict[str, Any]:
        return {"max_shift": self.max_shift}


#: RandomFlip modes -> the image axes they may flip
_FLIP_AXES = {"horizontal": (3,), "vertical": (2,), "both": (3, 2)}


class RandomFlip(RandomDraws, Layer):
    """Mirror NCHW images, each sample with probability 1/2: ``"horizontal"`` (left-right),
    ``"vertical"`` (top-bottom) or ``"both"`` (each axis decided on its own).  Evaluation: the
    identity.  A flip is its own transpose, so backward flips the error of the same samples.
    (Not for digits or text, whose mirror images are other symbols.)"""

    step_scratch = ("_flips",)

    def __init__(self, mode: str = "horizontal", seed: int = 0) -> None:
        super().__init__()
        self._start_draws(seed)
        if mode not in _FLIP_AXES:
            raise ValueError(f"RandomFlip: mode must be one of {', '.join(map(repr, _FLIP_AXES))}, got {mode!r}")
        self.mode = mode
        self._flips: Array | None = None

    def get_config(self) -> dict[str, Any]:
        return {"mode": self.mode}

    def _forget_draw(self) -> None:
        self._flips = None

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return _sample_shape(self, in_shape)

    def forward(self, x: Array, training: bool = False) -> Array:
        n = _image_shape(self, x)[0]
        if not training:
            self._cache = None
            return self.ops.copy(x)
        axes = _FLIP_AXES[self.mode]
        if not (self._frozen and self._flips is not None and int(self._flips.shape[0]) == n):
            self._flips = self._uniform((n, len(axes))) < 0.5
        self._cache = self._flips
        return self._apply(x, self._flips)

    def _apply(self, x: Array, flips: Array) -> Array:
        xp = self.ops.xp
        n = int(x.shape[0])
        for k, axis in enumerate(_FLIP_AXES[self.mode]):        # at most two axes, never the samples
            x = xp.where(xp.reshape(flips[:, k], (n, 1, 1, 1)), xp.flip(x, axis=axis), x)
        return x

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        flips = self._need_cache()
        if not need_input_grad:
            return None
        return self._apply(grad_output, flips)


def _image_shape(layer: Layer, x: Array) -> tuple[int, int, int, int]:
    """x.shape as (n, C, H, W); a one-line ShapeError naming that shape for anything else (rows)."""
    if getattr(x, "ndim", None) != 4:
        raise ShapeError(f"{layer.name} expects NCHW images (n, C, H, W), got an input of shape "
                         f"{tuple(getattr(x, 'shape', ()))}")
    n, c, h, w = (int(d) for d in x.shape)
    return n, c, h, w


def _sample_shape(layer: Layer, in_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """A per-sample shape as (C, H, W); a one-line ShapeError otherwise."""
    shape = tuple(int(d) for d in in_shape)
    if len(shape) != 3:
        raise ShapeError(f"{layer.name} expects per-sample images (C, H, W), got per-sample shape {shape}: "
                         "put Reshape before it")
    return shape[0], shape[1], shape[2]


def _pair(what: str, value: Any, least: int) -> tuple[int, int]:
    """An int or a pair of ints ≥ ``least`` as (h, w); a one-line ValueError otherwise."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(items) == 1:
        items = items * 2
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= least for v in items):
        raise ValueError(f"{what} must be an int ≥ {least} or a pair of them, got {value!r}")
    return int(items[0]), int(items[1])


def augmentation_layers(spec: str) -> list[Layer]:
    """The layers of a comma-separated spec (the command line's ``--augment``): ``shift<N>``
    (``RandomShift(N)``), ``flip`` (horizontal) and ``vflip`` (vertical) ``RandomFlip``s, in
    order; e.g. ``"shift2"`` for digits, ``"shift4,flip"`` for photographs."""
    layers: list[Layer] = []
    for item in (s.strip() for s in str(spec).split(",")):
        if item.startswith("shift") and item[5:].isdigit() and int(item[5:]) >= 1:
            layers.append(RandomShift(int(item[5:])))
        elif item in ("flip", "vflip"):
            layers.append(RandomFlip("horizontal" if item == "flip" else "vertical"))
        else:
            raise ValueError(f"--augment {spec}: expected comma-separated shift<N> (N ≥ 1 pixels), flip or vflip, "
                             f"got {item!r}")
    return layers
