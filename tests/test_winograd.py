"""Conv2D through Winograd F(2×2, 3×3) (NumbaOps.winograd_conv): the same convolution as the
im2col path (float64, to rounding) for every padding, odd and even output sizes, with and
without bias, in chunks of samples; the float64 gradient check; float32 error against a float64
reference; and what it keeps for backward (the input alone)."""

from __future__ import annotations

import numpy as np
import pytest

import deepnet as dn
from deepnet import check_layer
from deepnet.backend.windows import Window

numba_ops = pytest.importorskip("deepnet.backend.numba_ops", exc_type=ImportError)


def _kernel_ops(min_channels: int = 1, chunk_bytes: int | None = None):
    try:
        ops = numba_ops.NumbaOps()
    except ImportError:
        pytest.skip("numba is not installed (pip install 'deepnet[fast]')")
    ops.winograd_min_channels = min_channels
    if chunk_bytes is not None:
        ops.winograd_chunk_bytes = chunk_bytes
    return ops


def _run(ops, x, dy, c_out, padding, bias, dtype="float64"):
    """(y, ẽ, ∂f/∂W, ∂f/∂b, the layer) of one forward and backward pass on ``ops``."""
    layer = dn.Conv2D(x.shape[1], c_out, 3, padding=padding, bias=bias)
    layer.to(ops, dtype)
    layer.initialize(np.random.default_rng(0))
    y = layer.forward(x.astype(dtype), training=True)
    dx = layer.backward(dy.astype(dtype))
    params = layer.parameters()
    return y, dx, params["weight"].grad, params["bias"].grad if bias else None, layer


CASES = [  # (input shape, output channels, padding)
    ((2, 3, 7, 9), 4, 1),              # odd output: the last tile half outside
    ((3, 2, 6, 8), 5, "same"),
    ((2, 4, 9, 8), 3, 0),              # valid: 7×6
    ((1, 2, 4, 3), 2, [2, 1]),         # padding larger than the kernel's half
    ((2, 3, 3, 3), 2, 0),              # one output pixel
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape,c_out,padding", CASES)
def test_winograd_is_the_same_convolution_as_im2col(shape, c_out, padding, bias):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape)
    win_ops, plain_ops = _kernel_ops(), _kernel_ops(min_channels=10**6)
    out_shape = dn.Conv2D(shape[1], c_out, 3, padding=padding).output_shape(shape[1:])
    dy = rng.standard_normal((shape[0], *out_shape))
    got, want = _run(win_ops, x, dy, c_out, padding, bias), _run(plain_ops, x, dy, c_out, padding, bias)
    assert got[4].cached[2].x is not None and want[4].cached[0] is None    # both keep the input, no colsᵀ
    for a, b in zip(got[:4], want[:4]):
        if b is not None:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_winograd_keeps_only_the_input_and_takes_that_path():
    ops = _kernel_ops()
    layer = dn.Conv2D(3, 4, 3, padding=1)
    layer.to(ops, "float64")
    layer.initialize(np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 5))
    layer.forward(x, training=True)
    cols_t, _, kept = layer.cached
    assert cols_t is None and kept.x is x                       # no colsᵀ: the input itself
    assert layer.forward(x, training=False).shape == (2, 4, 5, 5) and layer.cached is None


def test_winograd_applies_to_3x3_stride_1_undilated_ungrouped_convolutions_with_channels():
    ops = _kernel_ops(min_channels=8)
    assert ops.winograd_conv_applies(Window.of(3, 1, 1), 8, 16, 1)
    assert not ops.winograd_conv_applies(Window.of(3, 1, 1), 4, 16, 1)       # too few channels
    assert not ops.winograd_conv_applies(Window.of(3, 2, 1), 8, 16, 1)       # stride 2
    assert not ops.winograd_conv_applies(Window.of(3, 1, 2, 2), 8, 16, 1)    # dilated
    assert not ops.winograd_conv_applies(Window.of(5, 1, 2), 8, 16, 1)       # 5×5
    assert not ops.winograd_conv_applies(Window.of(3, 1, 1), 8, 16, 2)       # groups
    from deepnet.backend.numpy_ops import NumpyOps

    assert not NumpyOps().winograd_conv_applies(Window.of(3, 1, 1), 64, 64, 1)


@pytest.mark.parametrize("need_input_grad", [True, False])
def test_winograd_in_chunks_of_samples_is_the_same(need_input_grad):
    rng = np.random.default_rng(2)
    x, dy = rng.standard_normal((5, 3, 6, 7)), rng.standard_normal((5, 4, 6, 7))
    whole, chunks = _kernel_ops(), _kernel_ops(chunk_bytes=1)   # one sample per chunk
    w = rng.standard_normal((4, 3, 3, 3))
    win = Window.of(3, 1, 1)
    y0, y1 = whole.winograd_conv(x, w, win), chunks.winograd_conv(x, w, win)
    np.testing.assert_allclose(y1, y0, rtol=1e-13, atol=1e-13)
    g0, g1 = np.full(w.shape, 0.5), np.full(w.shape, 0.5)       # accumulate: added to what is there
    d0 = whole.winograd_conv_backward(dy, x, w, win, g0, True, need_input_grad)
    d1 = chunks.winograd_conv_backward(dy, x, w, win, g1, True, need_input_grad)
    np.testing.assert_allclose(g1, g0, rtol=1e-12, atol=1e-12)
    g2 = np.zeros(w.shape)
    whole.winograd_conv_backward(dy, x, w, win, g2, False, False)
    np.testing.assert_allclose(g0, g2 + 0.5, rtol=1e-12, atol=1e-12)
    if need_input_grad:
        np.testing.assert_allclose(d1, d0, rtol=1e-12, atol=1e-12)
    else:
        assert d0 is None and d1 is None


@pytest.mark.parametrize("padding,bias", [(1, True), (0, False), ([0, 2], True)])
def test_winograd_passes_the_gradient_check(padding, bias):
    layer = dn.Conv2D(3, 2, 3, padding=padding, bias=bias)
    layer.to(_kernel_ops(chunk_bytes=1), "float64")            # chunks of one sample, too
    check_layer(layer, np.random.default_rng(4).standard_normal((2, 3, 6, 5)))


def test_winograd_float32_error_is_that_of_a_float32_convolution():
    """|y32 − y64| / max|y64| of Winograd in float32 stays within a few float32 roundings of the
    products' length (C·9 = 576 terms), as the im2col path's does."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 64, 9, 9))
    dy = rng.standard_normal((4, 32, 9, 9))
    ref = _run(_kernel_ops(min_channels=10**6), x, dy, 32, 1, True)
    for ops in (_kernel_ops(), _kernel_ops(min_channels=10**6)):
        got = _run(ops, x, dy, 32, 1, True, "float32")
        for a, b in zip(got[:3], ref[:3]):
            assert a.dtype == np.float32
            err = np.abs(a - b).max() / np.abs(b).max()
            assert err < 2e-6, err


def test_winograd_tile_blocks_are_contiguous_and_apart_in_the_cache_sets():
    buf = np.empty(numba_ops._tile_stack_size(64, 1008), np.float32)
    v = numba_ops._tile_stack(64, 1008, np.float32, buf)
    assert v.shape == (16, 64, 1008) and np.shares_memory(v, buf)
    assert all(v[k].flags.c_contiguous for k in range(16))
    assert v.strides[0] % 4096 == 256


class _TwoThreads:
    """The window kernels' module, saying numba has 2 threads (so chunks go to the pool)."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        return getattr(self._module, name)

    @staticmethod
    def threads():
        return 2


def test_winograd_chunk_threads_use_the_callers_products():
    """Chunks run on worker threads; the products provider a ``using_products`` block set (here
    bf16-rounded operands) is the caller's context's, and reaches them."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 8, 6, 6)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    win = Window.of(3, 1, 1)
    pooled, inline = _kernel_ops(chunk_bytes=1), _kernel_ops()
    pooled._w = _TwoThreads(pooled._w)
    out = {}
    for name, ops in (("pooled", pooled), ("inline", inline)):
        with ops.using_products(ops.products.with_precision("bf16")):
            out[name] = ops.winograd_conv(x, w, win)
    plain = inline.winograd_conv(x, w, win)
    np.testing.assert_allclose(out["pooled"], out["inline"], rtol=1e-6, atol=1e-5)
    assert np.abs(out["pooled"] - plain).max() > 1e-3            # rounded operands: not the float32 result
