"""Sliding windows over NCHW images: the geometry of ``ops.unfold`` / ``ops.fold`` (im2col / col2im).

A :class:`Window` says how a kernel of ``kh × kw`` taps slides over an image: stride
``(sh, sw)``, zero padding ``(top, bottom, left, right)`` and dilation ``(dh, dw)``.  With it,

* ``ops.unfold(x, win)`` turns ``x`` of shape (N, C, H, W) into ``cols`` of shape
  (N·OH·OW, C·kh·kw): row r = (n, oh, ow), column (c, i, j), both in C order, and
  ``cols[r, (c, i, j)] = x_pad[n, c, oh·sh + i·dh, ow·sw + j·dw]`` (0 where that is padding);
* ``ops.fold(cols, x.shape, win)`` is its adjoint (transpose): each entry of ``cols`` is
  added back to the pixel it was read from, overlaps summed, padding dropped.

This module holds only the geometry (pure Python, no array library): the maths is in each
backend's ``Ops``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any


def _as_int(name: str, value: Any, least: int) -> int:
    """``value`` as a Python int ≥ ``least`` (TypeError / ValueError naming ``name`` if not)."""
    if isinstance(value, bool):
        raise TypeError(f"Window.{name}: expected an int, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"Window.{name}: expected an int, got {type(value).__name__} {value!r}") from None
    if v < least:
        raise ValueError(f"Window.{name}: expected an int >= {least}, got {v}")
    return v


def _pair(name: str, v: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(v, tuple | list):
        if len(v) != 2:
            raise ValueError(f"Window.of: {name} expected an int or 2 ints, got {v!r}")
        return v[0], v[1]
    return v, v


@dataclass(frozen=True)
class Window:
    """A sliding window over NCHW images: kernel (kh, kw), stride (sh, sw), padding (top, bottom, left, right), dilation (dh, dw)."""

    kh: int
    kw: int
    sh: int = 1
    sw: int = 1
    pt: int = 0
    pb: int = 0
    pl: int = 0
    pr: int = 0
    dh: int = 1
    dw: int = 1

    def __post_init__(self) -> None:
        for name in ("kh", "kw", "sh", "sw", "dh", "dw"):
            object.__setattr__(self, name, _as_int(name, getattr(self, name), 1))
        for name in ("pt", "pb", "pl", "pr"):
            object.__setattr__(self, name, _as_int(name, getattr(self, name), 0))

    @classmethod
    def of(cls, kernel: int | tuple[int, int], stride: int | tuple[int, int] = 1,
           padding: int | tuple[int, int] | tuple[int, int, int, int] = 0,
           dilation: int | tuple[int, int] = 1) -> Window:
        """A window from PyTorch-style arguments: ints or (h, w) pairs; ``padding`` also
        (top, bottom, left, right)."""
        kh, kw = _pair("kernel", kernel)
        sh, sw = _pair("stride", stride)
        dh, dw = _pair("dilation", dilation)
        if isinstance(padding, tuple | list) and len(padding) == 4:
            pt, pb, pl, pr = padding
        else:
            ph, pw = _pair("padding", padding)
            pt, pb, pl, pr = ph, ph, pw, pw
        return cls(kh, kw, sh, sw, pt, pb, pl, pr, dh, dw)

    @property
    def extent(self) -> tuple[int, int]:
        """The dilated kernel's reach in pixels: (dh·(kh−1)+1, dw·(kw−1)+1)."""
        return self.dh * (self.kh - 1) + 1, self.dw * (self.kw - 1) + 1

    @property
    def padded(self) -> bool:
        """Whether any side is padded."""
        return bool(self.pt or self.pb or self.pl or self.pr)

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        """(OH, OW) for an h × w image; ValueError if the window does not fit the padded image."""
        eh, ew = self.extent
        hp, wp = h + self.pt + self.pb, w + self.pl + self.pr
        if h < 1 or w < 1 or eh > hp or ew > wp:
            raise ValueError(f"window of {self.kh}x{self.kw} (dilated extent {eh}x{ew}) does not fit the "
                             f"{h}x{w} image padded to {hp}x{wp}")
        return (hp - eh) // self.sh + 1, (wp - ew) // self.sw + 1

    def spans(self, h: int, w: int) -> list[tuple[int, int, slice, slice, slice, slice]]:
        """For each kernel tap (i, j) in C order: (i, j, output rows, output columns, image rows,
        image columns), the slices pairing the outputs (oh, ow) whose tap (i, j) reads a real
        pixel (not padding) with those pixels: ``x[..., rows, cols]`` is the tap's plane of
        ``cols[(n, oh, ow), (c, i, j)]`` over the output slices.  Taps reading only padding have
        empty slices."""
        oh_n, ow_n = self.out_size(h, w)
        rows = [_span(i * self.dh - self.pt, self.sh, oh_n, h) for i in range(self.kh)]
        cols = [_span(j * self.dw - self.pl, self.sw, ow_n, w) for j in range(self.kw)]
        return [(i, j, ro, co, ri, ci) for i, (ro, ri) in enumerate(rows) for j, (co, ci) in enumerate(cols)]


def _span(offset: int, stride: int, n_out: int, size: int) -> tuple[slice, slice]:
    """The outputs o in [0, n_out) with 0 <= o·stride + offset < size, as a slice of outputs and
    the matching slice of pixels."""
    first = max(0, -(offset // stride))                  # ceil(−offset / stride), at least 0
    last = min(n_out, (size - 1 - offset) // stride + 1)
    if last <= first:
        return slice(0, 0), slice(0, 0)
    start = first * stride + offset
    return slice(first, last), slice(start, start + (last - first - 1) * stride + 1, stride)


def check_image(x: Any, what: str = "unfold") -> tuple[int, int, int, int]:
    """``x.shape`` as (N, C, H, W); ValueError unless ``x`` is 4-D."""
    if len(x.shape) != 4:
        raise ValueError(f"{what}: expected a 4-D (N, C, H, W) array, got shape {tuple(x.shape)}")
    n, c, h, w = (int(d) for d in x.shape)
    return n, c, h, w


def check_cols(cols: Any, x_shape: tuple[int, ...], win: Window) -> tuple[int, int, int, int, int, int]:
    """(N, C, H, W, OH, OW) for folding ``cols`` back to ``x_shape``; ValueError on a mismatch."""
    if len(x_shape) != 4:
        raise ValueError(f"fold: expected x_shape (N, C, H, W), got {tuple(x_shape)}")
    n, c, h, w = (int(d) for d in x_shape)
    oh, ow = win.out_size(h, w)
    want = (n * oh * ow, c * win.kh * win.kw)
    if tuple(cols.shape) != want:
        raise ValueError(f"fold: expected cols of shape {want} (N*OH*OW, C*kh*kw) for x_shape {(n, c, h, w)}, "
                         f"got {tuple(cols.shape)}")
    return n, c, h, w, oh, ow


class TableCache:
    """A small bounded cache (cleared when full) of per-shape tables, e.g. unfold's index tables."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._d: dict[Any, Any] = {}

    def get(self, key: Any, build: Any) -> Any:
        """The table for ``key``, built by ``build()`` on a miss."""
        v = self._d.get(key)
        if v is None:
            if len(self._d) >= self.size:
                self._d.clear()
            v = self._d[key] = build()
        return v

    def __len__(self) -> int:
        return len(self._d)
