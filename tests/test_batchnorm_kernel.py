"""BatchNorm of NCHW images through the backend's compiled passes (NumbaOps.batch_norm_train and
its backward) against the array path (NumpyOps), float64 and float32: outputs, running
averages, ∂f/∂γ, ∂f/∂β (accumulated over passes) and ẽ; the float64 gradient check."""

from __future__ import annotations

import numpy as np
import pytest

import deepnet as dn
from deepnet import check_layer
from deepnet.backend.numpy_ops import NumpyOps

numba_ops = pytest.importorskip("deepnet.backend.numba_ops", exc_type=ImportError)


def _kernel_ops():
    try:
        return numba_ops.NumbaOps()
    except ImportError:
        pytest.skip("numba is not installed (pip install 'deepnet[fast]')")


def _passes(ops, x, dys, dtype, need_input_grad=True):
    """Outputs, errors and the state after one forward and backward per error in ``dys``."""
    layer = dn.BatchNorm(x.shape[1], momentum=0.7, eps=1e-3)
    layer.to(ops, dtype)
    layer.initialize(np.random.default_rng(0))
    layer.parameters()["gamma"].data[...] = np.linspace(0.5, 2.0, x.shape[1])
    layer.parameters()["beta"].data[...] = np.linspace(-1.0, 1.0, x.shape[1])
    out = []
    for dy in dys:                                   # no zero_grad between: ∂f/∂γ, ∂f/∂β add up
        y = layer.forward(x.astype(dtype), training=True)
        out.append((y, layer.backward(dy.astype(dtype).copy(), need_input_grad)))
    p = layer.parameters()
    return out, [p["gamma"].grad.copy(), p["beta"].grad.copy(), layer.running_mean.copy(), layer.running_var.copy()]


SHAPES = [(4, 3, 5, 6), (2, 5, 1, 1), (1, 2, 3, 7), (8, 16, 9, 9)]


def _data(shape):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape) * 3.0 + 5.0                # off-centre: μ matters
    return x, [rng.standard_normal(shape) for _ in range(2)]


def _flat(run):
    (passes, state) = run
    return [a for pair in passes for a in pair] + state


@pytest.mark.parametrize("shape", SHAPES)
def test_batchnorm_kernel_matches_the_array_path_in_float64(shape):
    x, dys = _data(shape)
    for a, b in zip(_flat(_passes(_kernel_ops(), x, dys, "float64")), _flat(_passes(NumpyOps(), x, dys, "float64"))):
        assert a.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


@pytest.mark.parametrize("shape", SHAPES)
def test_batchnorm_kernel_float32_error_is_at_most_the_array_paths(shape):
    """Against the float64 result: the kernel's float32 error is within a few times the float32
    array path's (2 values per channel, (2, 5, 1, 1), make ẽ a difference of near-equal terms)."""
    x, dys = _data(shape)
    ref = _flat(_passes(NumpyOps(), x, dys, "float64"))
    got = _flat(_passes(_kernel_ops(), x, dys, "float32"))
    peer = _flat(_passes(NumpyOps(), x, dys, "float32"))
    for a, p, r in zip(got, peer, ref):
        assert a.dtype == np.float32
        scale = np.abs(r).max()
        assert np.abs(a - r).max() <= 4 * np.abs(p - r).max() + 1e-6 * scale


def test_batchnorm_kernel_without_input_gradient_and_on_a_strided_input():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 6, 4, 5)).transpose(0, 1, 3, 2)      # not C-contiguous
    dy = rng.standard_normal(x.shape)
    (pair,), state = _passes(_kernel_ops(), x, [dy], "float64", need_input_grad=False)
    (pair0,), state0 = _passes(NumpyOps(), x, [dy], "float64", need_input_grad=False)
    assert pair[1] is None and pair0[1] is None
    np.testing.assert_allclose(pair[0], pair0[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(state, state0):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_batchnorm_kernel_keeps_the_input_not_xhat_and_passes_the_gradient_check():
    layer = dn.BatchNorm(3)
    layer.to(_kernel_ops(), "float64")
    layer.initialize(np.random.default_rng(0))
    x = np.random.default_rng(5).standard_normal((4, 3, 3, 2))
    layer.forward(x, training=True)
    assert layer.cached.x is x
    layer.clear_cache()
    check_layer(layer, x)
