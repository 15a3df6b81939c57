"""ops.unfold / ops.fold (im2col / col2im) on every backend, against naive loops.

The geometry is :class:`deepnet.backend.windows.Window`; unfold is checked element by
element against a Python-loop reference, fold as unfold's adjoint (<unfold(x), c> =
<x, fold(c)>) and against its own loop reference.  The fused CUDA kernels cannot run on the
CuPy-shaped backend (its evaluator has no loops); their C source is compiled with g++ here and
checked against the same references.

Micro benchmark (not a test; numbers in the NumpyOps comment):
``python tests/test_windows.py`` times unfold+fold for N=64, C=32, 13x13, 3x3.
"""

from __future__ import annotations

import ctypes
import itertools
import re
import shutil
import subprocess

import numpy as np
import pytest

import deepnet
from deepnet.backend import cupy_kernels, to_device, to_host
from deepnet.backend.numpy_ops import NumpyOps
from deepnet.backend.ops import Ops
from deepnet.backend.windows import Window

KERNELS = [(1, 1), (3, 3), (2, 3), (5, 5)]
STRIDES = [1, 2, 3]
DILATIONS = [1, 2]
PADDINGS = [(0, 0, 0, 0), (1, 1, 1, 1), (2, 2, 2, 2), (0, 1, 1, 0)]
BATCHES = [(1, 1), (4, 3)]          # (N, C)
SIZES = [(7, 5), (4, 6)]


def make_window(kernel: tuple[int, int], stride: int, pad: tuple[int, int, int, int], dil: int) -> Window:
    return Window(kernel[0], kernel[1], stride, stride, *pad, dil, dil)


def naive_unfold(x: np.ndarray, win: Window) -> np.ndarray:
    """cols[(n, oh, ow), (c, i, j)] = x_pad[n, c, oh·sh + i·dh, ow·sw + j·dw], by loops, in float64."""
    n, c, h, w = x.shape
    oh, ow = win.out_size(h, w)
    out = np.zeros((n * oh * ow, c * win.kh * win.kw))
    for b, p, q, ch, i, j in itertools.product(range(n), range(oh), range(ow), range(c), range(win.kh), range(win.kw)):
        y, xx = p * win.sh + i * win.dh - win.pt, q * win.sw + j * win.dw - win.pl
        if 0 <= y < h and 0 <= xx < w:
            out[(b * oh + p) * ow + q, (ch * win.kh + i) * win.kw + j] = x[b, ch, y, xx]
    return out


def naive_fold(cols: np.ndarray, shape: tuple[int, int, int, int], win: Window) -> np.ndarray:
    """Each cols entry added to the pixel it was read from, by loops, in float64."""
    n, c, h, w = shape
    oh, ow = win.out_size(h, w)
    out = np.zeros(shape)
    for b, p, q, ch, i, j in itertools.product(range(n), range(oh), range(ow), range(c), range(win.kh), range(win.kw)):
        y, xx = p * win.sh + i * win.dh - win.pt, q * win.sw + j * win.dw - win.pl
        if 0 <= y < h and 0 <= xx < w:
            out[b, ch, y, xx] += cols[(b * oh + p) * ow + q, (ch * win.kh + i) * win.kw + j]
    return out


def cases(kernel: tuple[int, int], stride: int, dil: int):
    """(window, x shape) for every padding, batch and image size with this kernel, stride and
    dilation, and whether the window fits."""
    for pad, (n, c), (h, w) in itertools.product(PADDINGS, BATCHES, SIZES):
        win = make_window(kernel, stride, pad, dil)
        try:
            win.out_size(h, w)
            fits = True
        except ValueError:
            fits = False
        yield win, (n, c, h, w), fits


def on(ops: Ops, a: np.ndarray) -> object:
    return to_device(a, ops)


grid = pytest.mark.parametrize("kernel,stride,dil", list(itertools.product(KERNELS, STRIDES, DILATIONS)))


@grid
def test_unfold_matches_loops(backend, rng, kernel, stride, dil):
    checked = 0
    for win, shape, fits in cases(kernel, stride, dil):
        x = rng.standard_normal(shape)
        if not fits:
            with pytest.raises(ValueError, match="does not fit"):
                backend.unfold(on(backend, x), win)
            continue
        got = to_host(backend.unfold(on(backend, x), win))
        np.testing.assert_array_equal(got, naive_unfold(x, win), err_msg=str((win, shape)))
        checked += 1
    assert checked


@grid
def test_fold_is_the_adjoint(backend, rng, kernel, stride, dil):
    for win, shape, fits in cases(kernel, stride, dil):
        if not fits:
            continue
        oh, ow = win.out_size(*shape[2:])
        x = rng.standard_normal(shape)
        c = rng.standard_normal((shape[0] * oh * ow, shape[1] * win.kh * win.kw))
        u = to_host(backend.unfold(on(backend, x), win))
        f = to_host(backend.fold(on(backend, c), shape, win))
        assert f.shape == shape and f.dtype == np.float64
        lhs, rhs = float(np.vdot(u, c)), float(np.vdot(x, f))
        assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs)), (win, shape, lhs, rhs)


@pytest.mark.parametrize("win,shape", [
    (Window(3, 3), (2, 3, 7, 5)),
    (Window(3, 3, 2, 2, 1, 1, 1, 1), (1, 2, 7, 5)),
    (Window(2, 3, 3, 2, 0, 1, 1, 0, 2, 1), (3, 1, 7, 5)),
    (Window(5, 5, 1, 1, 2, 2, 2, 2, 2, 2), (1, 3, 7, 5)),
    (Window(1, 1, 2, 2), (2, 2, 5, 5)),            # pixels no window reads fold to 0
    (Window(3, 3, 3, 3, 2, 2, 2, 2), (1, 1, 4, 4)),   # taps reading only padding
])
def test_fold_matches_loops(backend, rng, win, shape):
    oh, ow = win.out_size(*shape[2:])
    c = rng.standard_normal((shape[0] * oh * ow, shape[1] * win.kh * win.kw))
    got = to_host(backend.fold(on(backend, c), shape, win))
    np.testing.assert_allclose(got, naive_fold(c, shape, win), rtol=1e-13, atol=1e-13)


def test_generic_path_on_numpy_matches_numpy_backend(rng):
    """The Array-API implementation (Ops over NumPy) equals NumpyOps' strided one bit for bit (unfold)."""
    generic, fast = Ops(np), NumpyOps()
    for kernel, stride, dil in itertools.product(KERNELS, STRIDES, DILATIONS):
        for win, shape, fits in cases(kernel, stride, dil):
            if fits:
                x = rng.standard_normal(shape)
                np.testing.assert_array_equal(generic.unfold(x, win), fast.unfold(x, win))
                c = fast.unfold(rng.standard_normal(shape), win)
                np.testing.assert_allclose(generic.fold(c, shape, win), fast.fold(c, shape, win), rtol=1e-13,
                                           atol=1e-13)


def test_float32_stays_float32(backend, rng):
    win = Window(3, 3, 2, 2, 1, 1, 1, 1)
    x = on(backend, rng.standard_normal((2, 3, 7, 5)).astype(np.float32))
    cols = backend.unfold(x, win)
    assert backend.dtype_name(cols.dtype) == "float32"
    assert tuple(cols.shape) == (2 * 4 * 3, 27)
    back = backend.fold(cols, (2, 3, 7, 5), win)
    assert backend.dtype_name(back.dtype) == "float32" and tuple(back.shape) == (2, 3, 7, 5)
    ref = naive_fold(naive_unfold(to_host(x).astype(np.float64), win), (2, 3, 7, 5), win)
    np.testing.assert_allclose(to_host(back), ref, rtol=1e-5, atol=1e-5)


def test_results_are_fresh_arrays(backend, rng):
    """unfold/fold never hand back (a view of) their input or a reused buffer."""
    win = Window(3, 3, 1, 1, 1, 1, 1, 1)
    x = rng.standard_normal((2, 2, 5, 5))
    a = backend.unfold(on(backend, x), win)
    a_host = np.array(to_host(a), copy=True)
    backend.unfold(on(backend, 2 * x), win)          # a second call must not overwrite the first result
    np.testing.assert_array_equal(to_host(a), a_host)


# ------------------------------------------------------------------ the transposed layout (unfold_t / fold_t)
@grid
def test_unfold_t_is_unfold_transposed(backend, rng, kernel, stride, dil):
    for win, shape, fits in cases(kernel, stride, dil):
        x = rng.standard_normal(shape)
        if not fits:
            with pytest.raises(ValueError, match="does not fit"):
                backend.unfold_t(on(backend, x), win)
            continue
        got = to_host(backend.unfold_t(on(backend, x), win))
        np.testing.assert_array_equal(got, naive_unfold(x, win).T, err_msg=str((win, shape)))


@grid
def test_fold_t_is_fold_transposed_and_the_adjoint(backend, rng, kernel, stride, dil):
    for win, shape, fits in cases(kernel, stride, dil):
        if not fits:
            continue
        oh, ow = win.out_size(*shape[2:])
        x = rng.standard_normal(shape)
        c = rng.standard_normal((shape[1] * win.kh * win.kw, shape[0] * oh * ow))
        f = to_host(backend.fold_t(on(backend, c), shape, win))
        assert f.shape == shape and f.dtype == np.float64
        np.testing.assert_allclose(f, naive_fold(c.T, shape, win), rtol=1e-13, atol=1e-13, err_msg=str((win, shape)))
        u = to_host(backend.unfold_t(on(backend, x), win))
        lhs, rhs = float(np.vdot(u, c)), float(np.vdot(x, f))
        assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs)), (win, shape, lhs, rhs)


def test_transposed_layout_float32_fresh_and_errors(backend, rng):
    win = Window(3, 3, 2, 2, 1, 1, 1, 1)
    x = rng.standard_normal((2, 3, 7, 5)).astype(np.float32)
    a = backend.unfold_t(on(backend, x), win)
    assert backend.dtype_name(a.dtype) == "float32" and tuple(a.shape) == (27, 2 * 4 * 3)
    a_host = np.array(to_host(a), copy=True)
    backend.unfold_t(on(backend, 2 * x), win)           # no reused buffer handed back
    np.testing.assert_array_equal(to_host(a), a_host)
    back = backend.fold_t(a, (2, 3, 7, 5), win)
    assert backend.dtype_name(back.dtype) == "float32" and tuple(back.shape) == (2, 3, 7, 5)
    ref = naive_fold(naive_unfold(x.astype(np.float64), win), (2, 3, 7, 5), win)
    np.testing.assert_allclose(to_host(back), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"unfold_t: expected a 4-D \(N, C, H, W\) array, got shape \(5, 5\)"):
        backend.unfold_t(on(backend, np.zeros((5, 5))), win)
    with pytest.raises(ValueError, match=r"fold_t: expected cols_t of shape \(18, 18\) .* got \(9, 18\)"):
        backend.fold_t(on(backend, np.zeros((9, 18))), (2, 2, 5, 5), Window(3, 3))


def test_transposed_generic_path_on_numpy_matches_numpy_backend(rng):
    generic, fast = Ops(np), NumpyOps()
    for kernel, stride, dil in itertools.product(KERNELS, STRIDES, DILATIONS):
        for win, shape, fits in cases(kernel, stride, dil):
            if fits:
                x = rng.standard_normal(shape)
                np.testing.assert_array_equal(generic.unfold_t(x, win), fast.unfold_t(x, win))
                c = fast.unfold_t(rng.standard_normal(shape), win)
                np.testing.assert_allclose(generic.fold_t(c, shape, win), fast.fold_t(c, shape, win), rtol=1e-13,
                                           atol=1e-13)


def test_unfold_t_scratch_border_stays_zero(rng):
    """NumpyOps reuses its padded channel-major scratch per shape: a padded call after an unpadded
    one of the same padded shape must still see zeros in the border."""
    ops = NumpyOps()
    big = rng.standard_normal((2, 3, 7, 7))
    ops.unfold_t(big, Window(3, 3))                     # fills a (3, 2, 7, 7) scratch entirely
    small = rng.standard_normal((2, 3, 5, 5))
    win = Window(3, 3, 1, 1, 1, 1, 1, 1)                # the same (3, 2, 7, 7) scratch, border zeroed
    np.testing.assert_array_equal(ops.unfold_t(small, win), naive_unfold(small, win).T)


# ------------------------------------------------------------------ errors and the Window type
def test_out_size():
    assert Window(3, 3).out_size(7, 5) == (5, 3)
    assert Window(3, 3, 2, 2, 1, 1, 1, 1).out_size(7, 5) == (4, 3)
    assert Window(2, 3, 3, 2, 0, 1, 1, 0, 2, 1).out_size(7, 5) == (2, 2)
    assert Window(3, 3, dh=2, dw=2).extent == (5, 5)
    assert Window.of(3, stride=2, padding=1) == Window(3, 3, 2, 2, 1, 1, 1, 1)
    assert Window.of((2, 3), padding=(0, 1, 1, 0), dilation=(2, 1)) == Window(2, 3, 1, 1, 0, 1, 1, 0, 2, 1)


@pytest.mark.parametrize("win,h,w,text", [
    (Window(5, 5), 4, 6, "window of 5x5 (dilated extent 5x5) does not fit the 4x6 image padded to 4x6"),
    (Window(3, 3, dh=3, dw=1, pt=1, pb=1), 4, 6, "window of 3x3 (dilated extent 7x3) does not fit the 4x6 image "
                                                  "padded to 6x6"),
])
def test_window_too_large_is_a_one_line_error(backend, win, h, w, text):
    with pytest.raises(ValueError) as err:
        win.out_size(h, w)
    assert str(err.value) == text and "\n" not in str(err.value)
    with pytest.raises(ValueError, match=re.escape(text)):
        backend.unfold(on(backend, np.zeros((1, 1, h, w))), win)
    with pytest.raises(ValueError, match=re.escape(text)):
        backend.fold(on(backend, np.zeros((1, 1))), (1, 1, h, w), win)


def test_bad_shapes_are_one_line_errors(backend):
    win = Window(3, 3)
    with pytest.raises(ValueError, match=r"unfold: expected a 4-D \(N, C, H, W\) array, got shape \(5, 5\)"):
        backend.unfold(on(backend, np.zeros((5, 5))), win)
    with pytest.raises(ValueError, match=r"fold: expected cols of shape \(18, 18\) .* got \(18, 9\)"):
        backend.fold(on(backend, np.zeros((18, 9))), (2, 2, 5, 5), win)


@pytest.mark.parametrize("kwargs,err,text", [
    ({"kh": 0, "kw": 3}, ValueError, "Window.kh: expected an int >= 1, got 0"),
    ({"kh": 3, "kw": 3, "sh": 0}, ValueError, "Window.sh: expected an int >= 1, got 0"),
    ({"kh": 3, "kw": 3, "pl": -1}, ValueError, "Window.pl: expected an int >= 0, got -1"),
    ({"kh": 3.0, "kw": 3}, TypeError, "Window.kh: expected an int, got float 3.0"),
    ({"kh": True, "kw": 3}, TypeError, "Window.kh: expected an int, got True"),
])
def test_window_validates_its_fields(kwargs, err, text):
    with pytest.raises(err, match=re.escape(text)):
        Window(**kwargs)


def test_window_takes_numpy_ints_and_hashes():
    win = Window(np.int64(3), np.int32(3), sh=np.int64(2))
    assert win == Window(3, 3, 2) and type(win.kh) is int and hash(win) == hash(Window(3, 3, 2))


# ------------------------------------------------------------------ CuPy-shaped: no host syncs
@pytest.mark.cupy_shaped
def test_no_host_syncs_after_the_first_call(rng):
    with deepnet.use_backend("cupy-shaped") as ops:
        win = Window(3, 3, 2, 2, 1, 1, 1, 1)
        x = to_device(rng.standard_normal((2, 3, 7, 5)).astype(np.float32), ops)
        cols = ops.unfold(x, win)
        ops.fold(cols, (2, 3, 7, 5), win)
        ops.xp.host_syncs.reset()
        for _ in range(3):
            cols = ops.unfold(x, win)
            back = ops.fold(cols, (2, 3, 7, 5), win)
        assert ops.xp.host_syncs.count == 0, ops.xp.host_syncs
        assert ops.xp.host_syncs.uploads == 0, ops.xp.host_syncs     # index tables stay cached on the device
        assert isinstance(cols, ops.xp.ndarray) and isinstance(back, ops.xp.ndarray)


@pytest.mark.cupy_shaped
def test_transposed_no_host_syncs_after_the_first_call(rng):
    with deepnet.use_backend("cupy-shaped") as ops:
        win = Window(3, 3, 2, 2, 1, 1, 1, 1)
        x = to_device(rng.standard_normal((2, 3, 7, 5)).astype(np.float32), ops)
        ops.fold_t(ops.unfold_t(x, win), (2, 3, 7, 5), win)
        ops.xp.host_syncs.reset()
        for _ in range(3):
            cols_t = ops.unfold_t(x, win)
            back = ops.fold_t(cols_t, (2, 3, 7, 5), win)
        assert ops.xp.host_syncs.count == 0 and ops.xp.host_syncs.uploads == 0, ops.xp.host_syncs
        assert isinstance(cols_t, ops.xp.ndarray) and isinstance(back, ops.xp.ndarray)


# ------------------------------------------------------------------ the fused CUDA kernels, as C++
def _compile_kernels(tmp_path) -> ctypes.CDLL:
    """The CUDA kernels' bodies in a C++ loop over ``i`` (T = double, raw arrays as pointers)."""
    ck = cupy_kernels
    params = ", ".join(f"int {p.split()[1]}" for p in ck.WINDOW_PARAMS.split(","))
    src = "#include <cstddef>\ntypedef double T;\n"
    for name, inp, outp, body in (("unfold", "x", "cols", ck.UNFOLD_SOURCE), ("fold", "cols", "dx", ck.FOLD_SOURCE)):
        src += (f'extern "C" void {name}(const T* {inp}, {params}, T* out_, ptrdiff_t size_) {{\n'
                f"  for (ptrdiff_t i = 0; i < size_; ++i) {{ T& {outp} = out_[i];\n{body}\n  }}\n}}\n")
    (tmp_path / "k.cpp").write_text(src)
    subprocess.run(["g++", "-O1", "-Wall", "-Werror", "-shared", "-fPIC", "-o", str(tmp_path / "k.so"),
                    str(tmp_path / "k.cpp")], check=True, capture_output=True, text=True)
    return ctypes.CDLL(str(tmp_path / "k.so"))


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ to run the CUDA kernels' C source on the CPU")
def test_cuda_kernel_source_as_cpp(tmp_path, rng):
    lib = _compile_kernels(tmp_path)
    dptr = ctypes.POINTER(ctypes.c_double)

    def call(fn, inp: np.ndarray, out: np.ndarray, shape, win: Window) -> np.ndarray:
        n, c, h, w = shape
        oh, ow = win.out_size(h, w)
        ints = [c, h, w, oh, ow, win.kh, win.kw, win.sh, win.sw, win.pt, win.pl, win.dh, win.dw]
        fn(np.ascontiguousarray(inp).ctypes.data_as(dptr), *map(ctypes.c_int, ints), out.ctypes.data_as(dptr),
           ctypes.c_ssize_t(out.size))
        return out

    for kernel, stride, dil in itertools.product(KERNELS, STRIDES, DILATIONS):
        for win, shape, fits in cases(kernel, stride, dil):
            if not fits:
                continue
            oh, ow = win.out_size(*shape[2:])
            x = rng.standard_normal(shape)
            cols = call(lib.unfold, x, np.full((shape[0] * oh * ow, shape[1] * win.kh * win.kw), np.nan), shape, win)
            np.testing.assert_array_equal(cols, naive_unfold(x, win), err_msg=str((win, shape)))
            c = rng.standard_normal(cols.shape)
            back = call(lib.fold, c, np.full(shape, np.nan), shape, win)
            np.testing.assert_allclose(back, naive_fold(c, shape, win), rtol=1e-13, atol=1e-13,
                                       err_msg=str((win, shape)))


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ to run the CUDA kernels' C source on the CPU")
def test_cuda_transposed_kernel_source_as_cpp(tmp_path, rng):
    """The unfold_t / fold_t kernels' bodies in a C++ loop over ``i`` (T = double)."""
    ck = cupy_kernels
    params = ", ".join(f"int {p.split()[1]}" for p in ck.WINDOW_T_PARAMS.split(","))
    src = "#include <cstddef>\ntypedef double T;\n"
    for name, inp, outp, body in (("unfold_t", "x", "cols_t", ck.UNFOLD_T_SOURCE),
                                  ("fold_t", "cols_t", "dx", ck.FOLD_T_SOURCE)):
        src += (f'extern "C" void {name}(const T* {inp}, {params}, T* out_, ptrdiff_t size_) {{\n'
                f"  for (ptrdiff_t i = 0; i < size_; ++i) {{ T& {outp} = out_[i];\n{body}\n  }}\n}}\n")
    (tmp_path / "kt.cpp").write_text(src)
    subprocess.run(["g++", "-O1", "-Wall", "-Werror", "-shared", "-fPIC", "-o", str(tmp_path / "kt.so"),
                    str(tmp_path / "kt.cpp")], check=True, capture_output=True, text=True)
    lib = ctypes.CDLL(str(tmp_path / "kt.so"))
    dptr = ctypes.POINTER(ctypes.c_double)

    def call(fn, inp: np.ndarray, out: np.ndarray, shape, win: Window) -> np.ndarray:
        n, c, h, w = shape
        oh, ow = win.out_size(h, w)
        ints = [n, c, h, w, oh, ow, win.kh, win.kw, win.sh, win.sw, win.pt, win.pl, win.dh, win.dw]
        fn(np.ascontiguousarray(inp).ctypes.data_as(dptr), *map(ctypes.c_int, ints), out.ctypes.data_as(dptr),
           ctypes.c_ssize_t(out.size))
        return out

    for kernel, stride, dil in itertools.product(KERNELS, STRIDES, DILATIONS):
        for win, shape, fits in cases(kernel, stride, dil):
            if not fits:
                continue
            oh, ow = win.out_size(*shape[2:])
            x = rng.standard_normal(shape)
            cols_t = call(lib.unfold_t, x, np.full((shape[1] * win.kh * win.kw, shape[0] * oh * ow), np.nan),
                          shape, win)
            np.testing.assert_array_equal(cols_t, naive_unfold(x, win).T, err_msg=str((win, shape)))
            c = rng.standard_normal(cols_t.shape)
            back = call(lib.fold_t, c, np.full(shape, np.nan), shape, win)
            np.testing.assert_allclose(back, naive_fold(c.T, shape, win), rtol=1e-13, atol=1e-13,
                                       err_msg=str((win, shape)))


# ------------------------------------------------------------------ micro benchmark (not a test)
def _best_of(fns: dict, rounds: int = 60) -> dict:
    """Best time (ms) of each function, measured in interleaved rounds (fair under a noisy load)."""
    import time

    best = dict.fromkeys(fns, float("inf"))
    for f in fns.values():
        f()
    for _ in range(rounds):
        for name, f in fns.items():
            t0 = time.perf_counter()
            f()
            best[name] = min(best[name], (time.perf_counter() - t0) * 1e3)
    return best


def _bench(framework: str = "numpy") -> None:           # pragma: no cover
    """unfold + fold for N=64, C=32, 13x13, 3x3 (float32): deepnet's NumPy backend against loop-free
    NumPy references, then PyTorch's F.unfold/F.fold with 2 threads in a process of its own."""
    import subprocess
    import sys

    from numpy.lib.stride_tricks import sliding_window_view

    n, c, h, w = 64, 32, 13, 13
    x = np.random.default_rng(0).standard_normal((n, c, h, w), dtype=np.float32)
    if framework == "torch":
        import torch

        torch.set_num_threads(2)
        xt = torch.from_numpy(x)
        for pad in (0, 1):
            ut = torch.nn.functional.unfold(xt, (3, 3), padding=pad)
            t = _best_of({"unfold": lambda pad=pad: torch.nn.functional.unfold(xt, (3, 3), padding=pad),
                          "fold": lambda pad=pad, ut=ut: torch.nn.functional.fold(ut, (h, w), (3, 3), padding=pad)})
            print(f"  padding {pad}: torch {torch.__version__} (2 threads)  unfold {t['unfold']:6.2f}  fold {t['fold']:6.2f}")
        return
    ops = NumpyOps()
    print(f"N={n} C={c} {h}x{w}, kernel 3x3, stride 1, float32: ms, best of 60 interleaved rounds")
    for pad in (0, 1):
        win = Window.of(3, padding=pad)
        oh, ow = win.out_size(h, w)
        hp, wp = h + 2 * pad, w + 2 * pad
        cols = ops.unfold(x, win)
        a = [np.arange(k).reshape([-1 if d == i else 1 for d in range(6)]) for i, k in enumerate((n, oh, ow, c, 3, 3))]
        index = (a[0] * c * hp * wp + a[3] * hp * wp + (a[1] + a[4]) * wp + a[2] + a[5]).reshape(-1)

        def ref_unfold(pad: int = pad, oh: int = oh, ow: int = ow) -> np.ndarray:
            xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
            v = sliding_window_view(xp, (3, 3), axis=(2, 3))          # n c oh ow kh kw
            return v.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * 9)

        def ref_fold(cols: np.ndarray = cols, index: np.ndarray = index, hp: int = hp, wp: int = wp,
                     pad: int = pad) -> np.ndarray:
            out = np.zeros(n * c * hp * wp, cols.dtype)
            np.add.at(out, index, cols.reshape(-1))                      # scatter-add through an index table
            return out.reshape(n, c, hp, wp)[:, :, pad:pad + h, pad:pad + w]

        assert np.array_equal(ref_unfold(), cols)
        assert np.allclose(ref_fold(), ops.fold(cols, x.shape, win), atol=1e-4)
        t = _best_of({"unfold": lambda win=win: ops.unfold(x, win), "ref_unfold": ref_unfold,
                      "fold": lambda win=win, cols=cols: ops.fold(cols, x.shape, win), "ref_fold": ref_fold})
        print(f"  padding {pad}: deepnet unfold {t['unfold']:6.2f}  fold {t['fold']:6.2f}  | "
              f"sliding_window_view + copy {t['ref_unfold']:6.2f}, np.add.at fold {t['ref_fold']:6.2f}")
    try:
        import torch  # noqa: F401
    except ImportError:
        print("  (PyTorch not installed: no comparison)")
        return
    subprocess.run([sys.executable, __file__, "torch"], check=True)


if __name__ == "__main__":                              # pragma: no cover
    import sys

    _bench(*sys.argv[1:2])
