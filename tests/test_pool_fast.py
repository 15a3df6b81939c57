"""MaxPool2D/AvgPool2D's tiles fast path (stride == pool_size, padding 0: strided views instead of
unfold/fold) against the unfold path, bit for bit, forward and backward, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

from deepnet.backend import to_device, to_host
from deepnet.gradcheck import check_layer
from deepnet.layers.conv import AvgPool2D, MaxPool2D

CASES = [  # (pool size, input shape): odd sizes leave rows/columns in no window
    (2, (3, 2, 7, 5)),
    (3, (2, 3, 8, 7)),
    (2, (1, 1, 4, 4)),                  # batch 1
    ([2, 3], (2, 2, 7, 8)),
    (4, (1, 2, 9, 11)),                 # 16 entries: NumPy's eight running sums
]


def _both(backend, cls, pool, x, g, dtype):
    """(y, ẽ) from the tiles path and from the unfold path, as host arrays."""
    out = []
    for fast in (True, False):
        layer = cls(pool)
        layer.tiles_fast_path = fast
        layer.kernel_path = False                   # on every backend: tiles against unfold
        assert layer._tiled() is fast
        xd = to_device(x, backend, dtype=dtype, copy=True)
        y = layer.forward(xd, training=True)
        assert y.dtype == xd.dtype
        dx = layer.backward(to_device(g, backend, dtype=dtype, copy=True))
        assert dx.dtype == xd.dtype and tuple(dx.shape) == x.shape
        out.append((to_host(y), to_host(dx)))
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("pool,shape", CASES)
def test_tiles_match_unfold_bit_for_bit(backend, cls, pool, shape, dtype, rng):
    layer = cls(pool)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 0, :2] = [-0.0, 0.0]                     # signed zeros reach fold's "0 + δ" too
    g = rng.standard_normal((shape[0], *layer.output_shape(shape[1:]))).astype(dtype)
    g[0, 0, 0, 0] = -0.0
    (y, dx), (y0, dx0) = _both(backend, cls, pool, x, g, dtype)
    if cls is AvgPool2D and backend.name.startswith(("cupy", "torch")):   # their sums have orders of their own
        tol = 1e-6 if dtype == "float32" else 1e-14
        np.testing.assert_allclose(y, y0, rtol=tol, atol=tol * np.abs(x).max())
    else:
        np.testing.assert_array_equal(y.view(f"u{y.itemsize}"), y0.view(f"u{y0.itemsize}"))
    np.testing.assert_array_equal(dx.view(f"u{dx.itemsize}"), dx0.view(f"u{dx0.itemsize}"))
    kh, kw = layer.pool_size
    oh, ow = y.shape[2:]
    assert not dx[:, :, oh * kh:, :].any() and not dx[:, :, :, ow * kw:].any()   # dropped rows/columns


@pytest.mark.parametrize("pool,shape", [(2, (1, 1, 7, 5)), (3, (2, 2, 8, 7))])
def test_max_tiles_ties_go_to_the_first_position(backend, pool, shape):
    x = np.full(shape, 1.5, np.float32)              # every window a tie
    x[:, :, 1::pool, 1::pool] = 2.0                  # ... except where (1, 1) of a window is bigger
    layer = MaxPool2D(pool)
    g = np.arange(1, 1 + np.prod((shape[0], *layer.output_shape(shape[1:]))), dtype=np.float32)
    g = g.reshape((shape[0], *layer.output_shape(shape[1:])))
    (y, dx), (y0, dx0) = _both(backend, MaxPool2D, pool, np.full(shape, 1.5, np.float32), g, "float32")
    oh, ow = y.shape[2:]
    want = np.zeros(shape, np.float32)
    want[:, :, 0:oh * pool:pool, 0:ow * pool:pool] = g            # constant: the top-left entry wins
    np.testing.assert_array_equal(dx, want)
    np.testing.assert_array_equal(dx0, want)
    (y, dx), (y0, dx0) = _both(backend, MaxPool2D, pool, x, g, "float32")
    np.testing.assert_array_equal(y, np.full(y.shape, 2.0, np.float32))
    np.testing.assert_array_equal(dx, dx0)


def test_max_tiles_keep_nan(backend):
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 1] = np.nan
    layer = MaxPool2D(2)
    y = to_host(layer.forward(to_device(x, backend, dtype="float32")))
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 0, 1:, :]).any() and not np.isnan(y[0, 0, :, 1:]).any()


def test_tiles_only_where_windows_neither_overlap_nor_pad():
    assert MaxPool2D(2)._tiled() and AvgPool2D([2, 3])._tiled() and MaxPool2D(3, stride=3)._tiled()
    assert not MaxPool2D(3, stride=2)._tiled() and not MaxPool2D(2, padding=1)._tiled()
    assert not AvgPool2D(1)._tiled()


@pytest.mark.parametrize("make,shape", [(lambda: MaxPool2D(2), (2, 2, 7, 5)), (lambda: MaxPool2D(3), (1, 2, 8, 7)),
                                        (lambda: AvgPool2D(2), (2, 2, 7, 5)), (lambda: AvgPool2D([3, 2]), (1, 1, 8, 7))])
def test_tiles_gradient_check(backend, make, shape, rng):
    x = rng.permutation(np.prod(shape)).reshape(shape) * 0.1      # distinct values: no ties within eps
    check_layer(make(), to_device(x, backend, dtype="float64"))


# The backend's compiled max-pool (ops.max_pool_kernel: NumbaOps) against both array paths.
KERNEL_CASES = [  # (pool size, stride, padding, input shape)
    (2, None, 0, (3, 2, 8, 6)),          # the 2×2 stride-2 kernel
    (2, None, 0, (2, 3, 7, 5)),          # ... odd sizes: the last row/column in no window
    (3, None, 0, (2, 2, 8, 7)),          # the general kernel, tiles
    ([2, 3], [1, 2], 0, (2, 2, 7, 8)),   # overlapping windows
    (3, 2, 1, (2, 3, 9, 8)),             # padding: −∞, never the maximum
    ([3, 2], 1, [1, 0], (1, 2, 5, 6)),
]


def _pool_paths(pool, stride, padding, x, g, kernel_ops):
    """(y, ẽ) from the kernel, from the tiles path (the unfold path where the window has no
    tiles) and from the unfold path."""
    from deepnet.backend.numpy_ops import NumpyOps

    out = []
    for ops, tiles in ((kernel_ops, True), (NumpyOps(), True), (NumpyOps(), False)):
        layer = MaxPool2D(pool, stride=stride, padding=padding)
        layer.ops, layer.tiles_fast_path = ops, tiles
        y = layer.forward(x, training=True)
        out.append((y, layer.backward(g.copy())))
    return out


def _same_bits(a, b):
    np.testing.assert_array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("pool,stride,padding,shape", KERNEL_CASES)
def test_max_pool_kernel_matches_the_array_paths(numpy_kernels, pool, stride, padding, shape, dtype, rng):
    if not numpy_kernels.max_pool_kernel:
        pytest.skip("this backend has no max-pool kernel")
    layer = MaxPool2D(pool, stride=stride, padding=padding)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 0, :2] = [-0.0, 0.0]
    x[-1, -1, 1, :] = 0.25                                  # ties: the first position wins
    g = rng.standard_normal((shape[0], *layer.output_shape(shape[1:]))).astype(dtype)
    g[0, 0, 0, 0] = -0.0
    overlap = layer.stride != layer.pool_size
    for nan in (False, True):
        if nan:                                             # the tiles path routes NaN its own way
            x[0, -1, 2, 1] = x[0, -1, 3, 2] = np.nan        # the first NaN of a window wins
        (yk, dk), (yt, dt), (yu, du) = _pool_paths(pool, stride, padding, x, g, numpy_kernels)
        for y, d in ((yu, du),) if nan else ((yt, dt), (yu, du)):
            _same_bits(yk, y)
            if overlap:    # a pixel several windows route to: its δs are added in another order
                np.testing.assert_allclose(dk, d, rtol=1e-6, atol=0)
            else:
                _same_bits(dk, d)
    assert yk.dtype == x.dtype and dk.dtype == x.dtype and dk.shape == x.shape


def test_max_pool_kernel_gradient_check(numpy_kernels, rng):
    for pool, stride, padding, shape in KERNEL_CASES:
        x = rng.permutation(np.prod(shape)).reshape(shape) * 0.1
        layer = MaxPool2D(pool, stride=stride, padding=padding)
        layer.ops = numpy_kernels
        check_layer(layer, x.astype(np.float64))
