"""Losses: values against NumPy references, float64 gradient checks, label forms."""

from __future__ import annotations

import numpy as np
import pytest

import deepnet as dn
from deepnet import check_loss, to_device, to_host


def _logsoftmax(z):
    s = z - z.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def test_sum_of_squares_is_the_seed_loss(backend, rng):
    z = rng.random((3, 4))
    y = rng.random((3, 4))
    loss = dn.SumOfSquares(reduction="sum")
    f, g = loss.forward_backward(to_device(z, dtype="float64"), to_device(y, dtype="float64"))
    np.testing.assert_allclose(float(to_host(f)), ((z - y) ** 2).sum(), rtol=1e-12)
    np.testing.assert_allclose(to_host(g), 2 * (z - y), rtol=1e-12)   # gradient 2e


def test_mean_reduction_averages_over_batch(backend, rng):
    z, y = rng.random((5, 3)), rng.random((5, 3))
    f = dn.SumOfSquares()(to_device(z, dtype="float64"), to_device(y, dtype="float64"))
    np.testing.assert_allclose(float(to_host(f)), ((z - y) ** 2).sum() / 5, rtol=1e-12)
    f = dn.MeanSquaredError()(to_device(z, dtype="float64"), to_device(y, dtype="float64"))
    np.testing.assert_allclose(float(to_host(f)), ((z - y) ** 2).mean(), rtol=1e-12)


def test_labels_become_seed_targets(backend):
    z = np.full((2, 3), 0.5)
    f = dn.SumOfSquares()(to_device(z, dtype="float64"), to_device(np.array([0, 2]), dtype="int64"))
    t = np.array([[0.99, 0.01, 0.01], [0.01, 0.01, 0.99]])
    np.testing.assert_allclose(float(to_host(f)), ((z - t) ** 2).sum() / 2, rtol=1e-12)


def test_cross_entropy_reference_and_label_forms(backend, rng):
    z = rng.normal(size=(6, 4)) * 3
    labels = np.array([0, 3, 1, 1, 2, 0])
    onehot = np.eye(4)[labels]
    ce = dn.SoftmaxCrossEntropy()
    ref = -_logsoftmax(z)[np.arange(6), labels].mean()
    fl, gl = ce.forward_backward(to_device(z, dtype="float64"), to_device(labels, dtype="int64"))
    fo, go = ce.forward_backward(to_device(z, dtype="float64"), to_device(onehot, dtype="float64"))
    np.testing.assert_allclose(float(to_host(fl)), ref, rtol=1e-12)
    np.testing.assert_allclose(float(to_host(fo)), ref, rtol=1e-12)
    np.testing.assert_allclose(to_host(gl), to_host(go), atol=1e-14)
    np.testing.assert_allclose(to_host(gl), (np.exp(_logsoftmax(z)) - onehot) / 6, atol=1e-14)


def test_cross_entropy_is_stable_for_huge_logits(backend):
    z = np.array([[1000.0, 0.0, -1000.0], [-5000.0, 5000.0, 0.0]], np.float32)
    f, g = dn.SoftmaxCrossEntropy().forward_backward(to_device(z), to_device(np.array([0, 0]), dtype="int64"))
    f = float(to_host(f))
    assert np.isfinite(f) and abs(f - 5000.0) < 1e-2       # (0 + 10000)/2
    assert np.all(np.isfinite(to_host(g)))
    assert to_host(g).dtype == np.float32


@pytest.mark.parametrize("loss", [dn.SumOfSquares(), dn.MeanSquaredError(), dn.SoftmaxCrossEntropy(),
                                  dn.SumOfSquares(reduction="sum")], ids=repr)
@pytest.mark.parametrize("targets", ["labels", "rows"])
def test_loss_gradient_check(backend, rng, loss, targets):
    z = rng.normal(size=(4, 3))
    y = np.array([0, 2, 1, 1]) if targets == "labels" else rng.dirichlet(np.ones(3), size=4)
    report = check_loss(loss, z, y)
    assert report.max_abs_error["z"] < 1e-7


def test_loss_float32_stays_float32(backend, rng):
    z = to_device(rng.normal(size=(4, 3)).astype(np.float32))
    for loss in (dn.SumOfSquares(), dn.MeanSquaredError(), dn.SoftmaxCrossEntropy()):
        f, g = loss.forward_backward(z, to_device(np.array([0, 2, 1, 1]), dtype="int64"))
        assert to_host(g).dtype == np.float32
        assert to_host(f).dtype == np.float32


def test_loss_shape_errors():
    z = np.zeros((4, 3), np.float32)
    with pytest.raises(dn.ShapeError, match=r"4 outputs but 5 labels"):
        dn.SoftmaxCrossEntropy()(z, np.zeros(5, np.int64))
    with pytest.raises(dn.ShapeError, match=r"expects targets of shape \(4, 3\), got \(4, 2\)"):
        dn.SumOfSquares()(z, np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        dn.SumOfSquares(reduction="avg")


@pytest.mark.parametrize("shape", [(1, 3), (64, 10), (300, 257)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_softmax_xent_paths_agree(numpy_kernels, rng, shape, dtype):
    """Labels through the compiled kernel (numba) and the pure-NumPy one: same f and ∂f/∂z."""
    z = (rng.normal(size=shape) * 5).astype(dtype)
    labels = rng.integers(0, shape[1], shape[0])
    loss, grad = numpy_kernels.softmax_cross_entropy(z, labels, 1.0 / shape[0])
    z64 = z.astype(np.float64)
    logp = z64 - z64.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    want = -logp[np.arange(shape[0]), labels].mean()
    p = np.exp(logp)
    p[np.arange(shape[0]), labels] -= 1
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert loss.dtype == dtype and grad.dtype == dtype
    np.testing.assert_allclose(float(loss), want, rtol=tol)
    np.testing.assert_allclose(grad, p / shape[0], rtol=tol * 10, atol=tol / 10)


def test_numpy_softmax_xent_refuses_labels_out_of_range(numpy_kernels):
    with pytest.raises(IndexError):
        numpy_kernels.softmax_cross_entropy(np.zeros((2, 3), np.float32), np.array([0, 3]), 0.5)


def test_labels_become_seed_targets_and_gradient(backend):
    """Labels become the seed's 0.99/0.01 target rows, on for the label's column only (z ≠ 0.5,
    so swapping on and off changes both f and ∂f/∂z)."""
    z = np.array([[0.2, 0.7, 0.4], [0.9, 0.1, 0.3]])
    labels = np.array([0, 2])
    t = np.array([[0.99, 0.01, 0.01], [0.01, 0.01, 0.99]])
    f, g = dn.SumOfSquares().forward_backward(to_device(z, dtype="float64"), to_device(labels, dtype="int64"))
    np.testing.assert_allclose(float(to_host(f)), ((z - t) ** 2).sum() / 2, rtol=1e-12)
    np.testing.assert_allclose(to_host(g), 2 * (z - t) / 2, rtol=1e-12)
    one_hot = backend.one_hot(to_device(labels, dtype="int64"), 3, 0.99, 0.01, dtype=backend.float64)
    np.testing.assert_array_equal(to_host(one_hot), t)


def test_loss_declares_its_hooks_with_defaults():
    """``capturable`` and ``targets``/``label_targets`` are declared on Loss: the training loop
    calls them on any loss, a user's included, instead of asking whether they exist."""
    class Hinge(dn.losses.Loss):          # a user's loss taking labels as they are
        def forward_backward(self, z, y):
            return self.ops_for(z).softmax_cross_entropy(z, y, 1.0)

    ops = dn.backend.get_ops("numpy")
    labels = to_device(np.array([2, 0, 1]), ops, dtype="int64")
    assert Hinge().capturable and dn.losses.SoftmaxCrossEntropy().capturable
    assert Hinge().label_targets(ops, labels, 3, ops.float32) is labels
    rows = to_host(dn.losses.SumOfSquares().label_targets(ops, labels, 3, ops.float32))
    np.testing.assert_allclose(rows, [[0.01, 0.01, 0.99], [0.99, 0.01, 0.01], [0.01, 0.99, 0.01]], rtol=1e-6)
    assert rows.dtype == np.float32
