"""MaxPool2D for the NumPy backend, compiled with numba (optional): one pass over each
(n, c) plane where NumPy needs a pass per window entry.

y is each window's maximum, ``arg`` the row-major index i·kw + j of its first maximum (a NaN
beats any number and the first NaN wins: ``np.argmax``'s rule, so the unfold path's bits), one
small integer per window; backward writes δ + 0 at that position and 0 elsewhere (−0 → +0, as
the array paths' zeros + δ give), adding where windows overlap.  The comparisons are selects,
not branches (random data would mispredict every other one), and the 2×2 stride-2 window of
nearly every CNN has kernels of its own whose four taps LLVM vectorizes over the row: on
(4096, 26, 26) float32, 1 thread, 2-core AMD EPYC, forward with arg-max 0.93 ms against
6.5 ms for the general kernel's loops over taps and 10.5 ms for the NumPy tiles path.

Serial kernels: numba's threaded loops (``prange``, workqueue layer) measured no faster on 2
cores for these memory-bound passes, and the Winograd convolution runs chunks of samples on
threads of its own (``NumbaOps._over_chunks``).  Constants come in the arrays' dtype: a Python
float in the loop would promote float32 work to float64.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from .numba_kernels import compile_cached


def _max_pool(x: Any, y: Any, arg: Any, kh: int, kw: int, sh: int, sw: int, pt: int,
              pl: int) -> None:  # pragma: no cover - compiled
    """Any window: per plane p and window (oh, ow), over the real pixels (padding never wins)."""
    planes, h, w = x.shape
    oh_n, ow_n = y.shape[1], y.shape[2]
    for p in range(planes):
        img = x[p]
        for oh in range(oh_n):
            r0 = oh * sh - pt
            for ow in range(ow_n):
                q0 = ow * sw - pl
                best = img[max(r0, 0), max(q0, 0)]
                k_best = -1
                for i in range(max(0, -r0), min(kh, h - r0)):
                    for j in range(max(0, -q0), min(kw, w - q0)):
                        v = img[r0 + i, q0 + j]
                        take = (k_best < 0) | (v > best) | ((v != v) & (best == best))
                        best = v if take else best
                        k_best = i * kw + j if take else k_best
                y[p, oh, ow] = best
                arg[p, oh, ow] = k_best


def _max_pool_backward(dy: Any, arg: Any, dx: Any, kw: int, sh: int, sw: int, pt: int, pl: int,
                       zero: Any) -> None:  # pragma: no cover - compiled
    """Any window: dx = zeros, then δ added at each window's arg-max pixel."""
    planes, h, w = dx.shape
    oh_n, ow_n = dy.shape[1], dy.shape[2]
    for p in range(planes):
        plane = dx[p]
        for r in range(h):
            for q in range(w):
                plane[r, q] = zero
        for oh in range(oh_n):
            for ow in range(ow_n):
                k = arg[p, oh, ow]
                i = k // kw
                plane[oh * sh - pt + i, ow * sw - pl + (k - i * kw)] += dy[p, oh, ow]


def _max_pool_2x2(x: Any, y: Any, arg: Any) -> None:  # pragma: no cover - compiled
    """The 2×2 window, stride 2, no padding: taps 0 1 / 2 3 compared in that order."""
    planes = x.shape[0]
    oh_n, ow_n = y.shape[1], y.shape[2]
    k1, k2, k3 = arg.dtype.type(1), arg.dtype.type(2), arg.dtype.type(3)
    for p in range(planes):
        img, yp, ap = x[p], y[p], arg[p]
        for oh in range(oh_n):
            top, bottom, yr, ar = img[2 * oh], img[2 * oh + 1], yp[oh], ap[oh]
            for ow in range(ow_n):
                best = top[2 * ow]
                kb = k1 - k1
                v = top[2 * ow + 1]
                t = (v > best) | ((v != v) & (best == best))
                best, kb = (v, k1) if t else (best, kb)
                v = bottom[2 * ow]
                t = (v > best) | ((v != v) & (best == best))
                best, kb = (v, k2) if t else (best, kb)
                v = bottom[2 * ow + 1]
                t = (v > best) | ((v != v) & (best == best))
                best, kb = (v, k3) if t else (best, kb)
                yr[ow] = best
                ar[ow] = kb


def _max_pool_2x2_backward(dy: Any, arg: Any, dx: Any, zero: Any) -> None:  # pragma: no cover - compiled
    """The 2×2 window, stride 2, no padding: zeros (rows and columns no window reads, for odd
    H or W, included), then δ + 0 written at each window's arg-max pixel."""
    planes, h, w = dx.shape
    oh_n, ow_n = dy.shape[1], dy.shape[2]
    for p in range(planes):
        plane, dp, ap = dx[p], dy[p], arg[p]
        for r in range(h):
            for q in range(w):
                plane[r, q] = zero
        for oh in range(oh_n):
            for ow in range(ow_n):
                k = ap[oh, ow]
                plane[2 * oh + (k >> 1), 2 * ow + (k & 1)] = dp[oh, ow] + zero


def threads() -> int:
    """numba's thread count for parallel loops started from this thread (``numba.set_num_threads``)."""
    return int(numba.get_num_threads())


_FUNCS = (_max_pool, _max_pool_backward, _max_pool_2x2, _max_pool_2x2_backward)
#: name → compiled kernel (serial: it runs on the calling thread)
serial = {f.__name__[1:]: compile_cached(f) for f in _FUNCS}


# ---------------------------------------------------------------------- Winograd F(2×2, 3×3)
# Transforms of one tile (Lavin & Gray 2016): a 4×4 input tile d gives V = Bᵀ d B, a 4×4
# tile m of Σ_c U ⊙ V gives the 2×2 output Aᵀ m A; their adjoints hand the error back,
# ∂f/∂m = A ∂f/∂Y Aᵀ and ∂f/∂d = B ∂f/∂V Bᵀ, with
#     Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1],   Aᵀ = [1 1 1 0; 0 1 −1 −1].
# Tile t = (n, th, tw) reads the padded input at rows 2·th − pt …+3, columns 2·tw − pl …+3
# (zero outside the image) and writes outputs 2·th, 2·th + 1 × 2·tw, 2·tw + 1 (those that exist).
@numba.njit(inline="always")
def _bt_rows(d0: Any, d1: Any, d2: Any, d3: Any) -> Any:  # pragma: no cover - compiled
    """Bᵀ applied to the four entries of one column of a tile."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


def _winograd_input(x: Any, v: Any, pt: int, pl: int, th_n: int, tw_n: int,
                    zero: Any) -> None:  # pragma: no cover - compiled
    """v[4i + j, c, t] = (Bᵀ d B)[i, j] for the 4×4 tile d of x[n, c] at tile t = (n, th, tw):
    each image plane is first copied into a zero-padded one the tiles read without bounds tests."""
    n_img, c_in, h, w = x.shape
    hh, ww = 2 * th_n + 2, 2 * tw_n + 2
    for c in range(c_in):
        img = np.empty((hh, ww), x.dtype)
        for n in range(n_img):
            src = x[n, c]
            for r in range(hh):
                for q in range(ww):
                    img[r, q] = src[r - pt, q - pl] if 0 <= r - pt < h and 0 <= q - pl < w else zero
            for th in range(th_n):
                r = 2 * th
                for tw in range(tw_n):
                    q = 2 * tw
                    t = (n * th_n + th) * tw_n + tw
                    # e = Bᵀ d column by column (e[i][j]: row i, column j), then V = e B row by row
                    e00, e10, e20, e30 = _bt_rows(img[r, q], img[r + 1, q], img[r + 2, q], img[r + 3, q])
                    e01, e11, e21, e31 = _bt_rows(img[r, q + 1], img[r + 1, q + 1], img[r + 2, q + 1],
                                                  img[r + 3, q + 1])
                    e02, e12, e22, e32 = _bt_rows(img[r, q + 2], img[r + 1, q + 2], img[r + 2, q + 2],
                                                  img[r + 3, q + 2])
                    e03, e13, e23, e33 = _bt_rows(img[r, q + 3], img[r + 1, q + 3], img[r + 2, q + 3],
                                                  img[r + 3, q + 3])
                    v[0, c, t], v[1, c, t], v[2, c, t], v[3, c, t] = _bt_rows(e00, e01, e02, e03)
                    v[4, c, t], v[5, c, t], v[6, c, t], v[7, c, t] = _bt_rows(e10, e11, e12, e13)
                    v[8, c, t], v[9, c, t], v[10, c, t], v[11, c, t] = _bt_rows(e20, e21, e22, e23)
                    v[12, c, t], v[13, c, t], v[14, c, t], v[15, c, t] = _bt_rows(e30, e31, e32, e33)


@numba.njit(inline="always")
def _at_rows(m0: Any, m1: Any, m2: Any, m3: Any) -> Any:  # pragma: no cover - compiled
    """Aᵀ applied to four entries: (m0 + m1 + m2, m1 − m2 − m3)."""
    return m0 + m1 + m2, m1 - m2 - m3


def _winograd_output(m: Any, y: Any, th_n: int, tw_n: int) -> None:  # pragma: no cover - compiled
    """y[n, o, 2·th + a, 2·tw + b] = (Aᵀ m A)[a, b] for the 4×4 tile m[:, o, t] (cropped to y)."""
    n_img, o_n, oh_n, ow_n = y.shape
    for o in range(o_n):
        for n in range(n_img):
            out = y[n, o]
            for th in range(th_n):
                r = 2 * th
                for tw in range(tw_n):
                    t = (n * th_n + th) * tw_n + tw
                    q = 2 * tw                           # s = Aᵀ m column by column, then Y = s A
                    s00, s10 = _at_rows(m[0, o, t], m[4, o, t], m[8, o, t], m[12, o, t])
                    s01, s11 = _at_rows(m[1, o, t], m[5, o, t], m[9, o, t], m[13, o, t])
                    s02, s12 = _at_rows(m[2, o, t], m[6, o, t], m[10, o, t], m[14, o, t])
                    s03, s13 = _at_rows(m[3, o, t], m[7, o, t], m[11, o, t], m[15, o, t])
                    y00, y01 = _at_rows(s00, s01, s02, s03)
                    y10, y11 = _at_rows(s10, s11, s12, s13)
                    out[r, q] = y00
                    if q + 1 < ow_n:
                        out[r, q + 1] = y01
                    if r + 1 < oh_n:
                        out[r + 1, q] = y10
                        if q + 1 < ow_n:
                            out[r + 1, q + 1] = y11


@numba.njit(inline="always")
def _a_rows(a: Any, b: Any) -> Any:  # pragma: no cover - compiled
    """A applied to two entries: (a, a + b, a − b, −b)."""
    return a, a + b, a - b, -b


def _winograd_output_adjoint(dy: Any, dm: Any, th_n: int, tw_n: int, zero: Any) -> None:  # pragma: no cover
    """dm[:, o, t] = A δ Aᵀ for the 2×2 error tile δ of dy[n, o] at t (0 beyond the image)."""
    n_img, o_n, oh_n, ow_n = dy.shape
    for o in range(o_n):
        for n in range(n_img):
            err = dy[n, o]
            for th in range(th_n):
                r = 2 * th
                below = r + 1 < oh_n
                for tw in range(tw_n):
                    t = (n * th_n + th) * tw_n + tw
                    q = 2 * tw
                    right = q + 1 < ow_n
                    a = err[r, q]
                    b = err[r, q + 1] if right else zero
                    c = err[r + 1, q] if below else zero
                    d = err[r + 1, q + 1] if below and right else zero
                    p0, p1, p2, p3 = _a_rows(a, c)       # p = A δ column by column, then dm = p Aᵀ
                    u0, u1, u2, u3 = _a_rows(b, d)
                    dm[0, o, t], dm[1, o, t], dm[2, o, t], dm[3, o, t] = _a_rows(p0, u0)
                    dm[4, o, t], dm[5, o, t], dm[6, o, t], dm[7, o, t] = _a_rows(p1, u1)
                    dm[8, o, t], dm[9, o, t], dm[10, o, t], dm[11, o, t] = _a_rows(p2, u2)
                    dm[12, o, t], dm[13, o, t], dm[14, o, t], dm[15, o, t] = _a_rows(p3, u3)


@numba.njit(inline="always")
def _b_rows(v0: Any, v1: Any, v2: Any, v3: Any) -> Any:  # pragma: no cover - compiled
    """B applied to four entries: (v0, v1 − v2 + v3, v1 + v2 − v0, −v3)."""
    return v0, v1 - v2 + v3, v1 + v2 - v0, -v3


def _winograd_input_adjoint(dv: Any, dx: Any, pt: int, pl: int, th_n: int, tw_n: int,
                            zero: Any) -> None:  # pragma: no cover - compiled
    """dx[n, c] = Σ over tiles of B dv[:, c, t] Bᵀ added at the tile's pixels (padding dropped),
    through one padded plane per (n, c) that stays in the cache."""
    n_img, c_in, h, w = dx.shape
    hh, ww = 2 * th_n + 2, 2 * tw_n + 2
    for c in range(c_in):
        acc = np.empty((hh, ww), dx.dtype)
        for n in range(n_img):
            for r in range(hh):
                for q in range(ww):
                    acc[r, q] = zero
            for th in range(th_n):
                r = 2 * th
                for tw in range(tw_n):
                    t = (n * th_n + th) * tw_n + tw
                    q = 2 * tw                           # g = B dv column by column, then B g Bᵀ row by row
                    g00, g10, g20, g30 = _b_rows(dv[0, c, t], dv[4, c, t], dv[8, c, t], dv[12, c, t])
                    g01, g11, g21, g31 = _b_rows(dv[1, c, t], dv[5, c, t], dv[9, c, t], dv[13, c, t])
                    g02, g12, g22, g32 = _b_rows(dv[2, c, t], dv[6, c, t], dv[10, c, t], dv[14, c, t])
                    g03, g13, g23, g33 = _b_rows(dv[3, c, t], dv[7, c, t], dv[11, c, t], dv[15, c, t])
                    for i, (a0, a1, a2, a3) in enumerate(((g00, g01, g02, g03), (g10, g11, g12, g13),
                                                          (g20, g21, g22, g23), (g30, g31, g32, g33))):
                        b0, b1, b2, b3 = _b_rows(a0, a1, a2, a3)
                        row = acc[r + i]
                        row[q] += b0
                        row[q + 1] += b1
                        row[q + 2] += b2
                        row[q + 3] += b3
            out = dx[n, c]
            for r in range(h):
                for q in range(w):
                    out[r, q] = acc[r + pt, q + pl] if r + pt < hh and q + pl < ww else zero


_WINOGRAD = (_winograd_input, _winograd_output, _winograd_output_adjoint, _winograd_input_adjoint)
serial.update({f.__name__[1:]: compile_cached(f) for f in _WINOGRAD})
