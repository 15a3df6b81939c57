"""Every built-in layer: forward against a plain NumPy reference, float64 gradient
check, float32 in gives float32 out, non-contiguous input, evaluation keeps nothing,
every parameter's gradient accumulates.  The whole layer contract, on every backend,
is checked by deepnet.testing.check_layer_contract (tests/test_layer_harness.py)."""

from __future__ import annotations

import numpy as np
import pytest

import deepnet as dn
from deepnet import check_layer, to_device, to_host


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# name -> (factory, NumPy reference of forward given (layer, x))
LAYERS = {
    "Dense": (lambda: dn.Dense(5, 3), lambda L, x: x @ L.W.T + L.b),
    "Dense-nobias": (lambda: dn.Dense(5, 3, bias=False), lambda L, x: x @ L.W.T),
    "Sigmoid": (dn.Sigmoid, lambda L, x: _sigmoid(x)),
    "Tanh": (dn.Tanh, lambda L, x: np.tanh(x)),
    "ReLU": (dn.ReLU, lambda L, x: np.maximum(x, 0)),
    "LeakyReLU": (lambda: dn.LeakyReLU(0.1), lambda L, x: np.where(x > 0, x, 0.1 * x)),
    "Softmax": (dn.Softmax, lambda L, x: _softmax(x)),
    "Identity": (dn.Identity, lambda L, x: x),
    "GELU": (dn.GELU, lambda L, x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))),
    "ELU": (lambda: dn.ELU(0.7), lambda L, x: np.where(x > 0, x, 0.7 * (np.exp(x) - 1))),
    "Softplus": (dn.Softplus, lambda L, x: np.log1p(np.exp(x))),
    # in evaluation: running statistics (initially mean 0, variance 1), γ = 1, β = 0
    "BatchNorm": (lambda: dn.BatchNorm(5), lambda L, x: x / np.sqrt(1 + 1e-5)),
    "LayerNorm": (lambda: dn.LayerNorm(5),
                  lambda L, x: (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)),
    "Dropout": (lambda: dn.Dropout(0.3), lambda L, x: x),          # identity in evaluation
}


def build(factory):
    layer = factory()
    layer.to(dn.get_backend())
    if not layer.initialized:
        layer.initialize(np.random.default_rng(7))
    params = {k: to_host(p.data) for k, p in layer.parameters().items()}
    layer.W = params.get("weight")
    layer.b = params.get("bias")
    return layer


def inputs(rng, n=4, width=5):
    x = rng.normal(size=(n, width))
    # keep ReLU-like kinks away from 0 so finite differences are meaningful
    return np.where(np.abs(x) < 0.05, 0.3, x)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_forward_matches_reference(backend, rng, name):
    factory, ref = LAYERS[name]
    layer = build(factory)
    x = inputs(rng).astype(np.float32)
    y = layer.forward(to_device(x), training=False)
    np.testing.assert_allclose(to_host(y), ref(layer, x.astype(np.float64)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_gradient_check_float64(backend, rng, name):
    layer = build(LAYERS[name][0])
    report = check_layer(layer, inputs(rng))
    assert report.max_abs_error["input"] < 1e-6
    assert set(report.checked) == {"input", *layer.parameters()}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_float32_in_float32_out(backend, rng, name):
    layer = build(LAYERS[name][0])
    x = to_device(inputs(rng).astype(np.float32))
    y = layer.forward(x, training=True)
    dx = layer.backward(to_device(np.ones(tuple(y.shape), np.float32)))
    assert to_host(y).dtype == np.float32
    assert to_host(dx).dtype == np.float32
    for p in layer.parameters().values():
        assert to_host(p.grad).dtype == np.float32


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_non_contiguous_input(rng, name):
    factory, ref = LAYERS[name]
    layer = build(factory)
    if getattr(layer, "stochastic", False):
        layer.freeze_randomness(True)
    wide = inputs(rng, n=4, width=10).astype(np.float32)
    x = wide[:, ::2]                       # a strided view, not C-contiguous
    assert not x.flags.c_contiguous
    np.testing.assert_allclose(layer.forward(x, training=False),
                               ref(layer, np.ascontiguousarray(x).astype(np.float64)), rtol=1e-5, atol=1e-6)
    y = layer.forward(np.ascontiguousarray(x), training=True)
    dy = rng.normal(size=y.shape).astype(np.float32)
    dx = layer.backward(dy.copy())
    for variant in (x, np.asfortranarray(x)):
        np.testing.assert_allclose(layer.forward(variant, training=True), y, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(layer.backward(dy.copy()), dx, rtol=1e-5, atol=1e-6)
    check_layer(layer, x.T.copy().T)        # Fortran-ordered float64 copy


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_evaluation_keeps_nothing(backend, rng, name):
    layer = build(LAYERS[name][0])
    x = to_device(inputs(rng).astype(np.float32))
    layer.forward(x, training=True)
    layer.forward(x, training=False)
    assert layer._cache is None
    with pytest.raises(RuntimeError, match="without a training forward"):
        layer.backward(to_device(np.ones((4, layer.output_width(5)), np.float32)))


def test_backward_without_forward_names_layer():
    layer = dn.Dense(3, 2)
    layer.initialize(np.random.default_rng(0))
    with pytest.raises(RuntimeError, match=r"Dense\.backward called without a training forward"):
        layer.backward(np.ones((1, 2), np.float32))


def test_wrong_input_width_names_layer_and_shapes():
    layer = dn.Dense(784, 50)
    layer.initialize(np.random.default_rng(0))
    with pytest.raises(dn.ShapeError, match=r"Dense expects inputs of width 784, got shape \(2, 100\)"):
        layer.forward(np.zeros((2, 100), np.float32))
    with pytest.raises(dn.ShapeError, match=r"2-D batch"):
        layer.forward(np.zeros((784,), np.float32))


@pytest.mark.parametrize("name", ["BatchNorm", "Dense", "Dense-nobias", "LayerNorm"])
def test_gradients_accumulate_until_zeroed(backend, rng, name):
    """Every parameter, not only the weight: two backward passes give twice one; zero_grad restarts.
    (deepnet.testing.check_layer_contract checks this for every layer, tests/test_layer_harness.py.)"""
    layer = build(LAYERS[name][0])
    x = inputs(rng).astype(np.float32)
    dy = rng.normal(size=(4, layer.output_width(5))).astype(np.float32)

    def step():
        layer.forward(to_device(x), training=True)
        layer.backward(to_device(dy.copy()))

    layer.zero_grad()
    step()
    once = {k: to_host(p.grad).copy() for k, p in layer.parameters().items()}
    assert set(once) == set(layer.parameters()) and once
    step()
    for k, p in layer.parameters().items():
        np.testing.assert_allclose(to_host(p.grad), 2 * once[k], rtol=1e-5, atol=1e-6, err_msg=k)
    layer.zero_grad()
    for k, p in layer.parameters().items():
        np.testing.assert_array_equal(to_host(p.grad), 0, err_msg=k)
    if name == "Dense":
        np.testing.assert_allclose(once["weight"], dy.T @ x, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(once["bias"], dy.sum(axis=0), rtol=1e-5, atol=1e-6)


def test_dense_weight_shape_is_n_out_by_n_in():
    layer = dn.Dense(784, 50, bias=False)
    layer.initialize(np.random.default_rng(0))
    assert layer.parameters()["weight"].shape == (50, 784)
    assert list(layer.parameters()) == ["weight"]


def test_gradcheck_catches_a_wrong_backward(rng):
    class BrokenSquare(dn.Layer):
        def forward(self, x, training=False):
            self._cache = x if training else None
            return x * x

        def backward(self, grad_output, need_input_grad=True):
            x = self._need_cache()
            return grad_output * x  # should be 2x

    with pytest.raises(dn.GradCheckError, match=r"(?s)BrokenSquare.*input\[flat"):
        check_layer(BrokenSquare(), rng.normal(size=(2, 3)))


def test_gradcheck_leaves_layer_untouched(rng):
    layer = build(LAYERS["Dense"][0])
    before = to_host(layer.parameters()["weight"].data).copy()
    check_layer(layer, inputs(rng))
    after = layer.parameters()["weight"].data
    assert after.dtype == np.float32
    np.testing.assert_array_equal(after, before)


@pytest.mark.parametrize("init", ["normal", "glorot", "glorot_normal", "he", "he_uniform"])
def test_initializer_statistics(init):
    layer = dn.Dense(400, 300, init=init)
    layer.initialize(np.random.default_rng(0))
    w = layer.parameters()["weight"].data
    std = {"normal": 1 / np.sqrt(400), "glorot": np.sqrt(2 / 700), "glorot_normal": np.sqrt(2 / 700),
           "he": np.sqrt(2 / 400), "he_uniform": np.sqrt(2 / 400)}[init]
    assert abs(w.std() - std) / std < 0.02
    assert abs(w.mean()) < 0.01 * std * 10


def test_unknown_initializer_is_refused():
    with pytest.raises(ValueError, match="unknown initializer 'zeros'"):
        dn.Dense(3, 2, init="zeros")


@pytest.mark.parametrize("shape", [(1, 5), (64, 128), (256, 300)])
def test_numpy_relu_backward_and_bias_sum_paths_agree(numpy_kernels, rng, shape):
    """ReLU backward and Σ_rows (bias gradient) through the compiled / BLAS paths and plain NumPy."""
    y = np.maximum(rng.normal(size=shape), 0).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    got = numpy_kernels.relu_backward_(dy.copy(), y)
    np.testing.assert_array_equal(got, dy * (y > 0))
    out = np.full(shape[1], 0.5, np.float32)
    numpy_kernels.sum_rows(got, out=out, accumulate=True)
    np.testing.assert_allclose(out, 0.5 + got.astype(np.float64).sum(axis=0), rtol=1e-5, atol=1e-5)
    numpy_kernels.sum_rows(got, out=out)
    np.testing.assert_allclose(out, got.astype(np.float64).sum(axis=0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 3), (64, 128), (128, 300)])
def test_numpy_relu_forward_and_bias_paths_agree(numpy_kernels, rng, shape):
    x = rng.normal(size=shape).astype(np.float32)
    b = rng.normal(size=shape[1]).astype(np.float32)
    y = numpy_kernels.relu(x)
    assert y is not x and y.dtype == np.float32
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    got = numpy_kernels.add_bias_(x.copy(), b)
    np.testing.assert_array_equal(got, x + b)


def test_layer_declares_n_in_and_a_user_layer_without_it_still_saves():
    """``Layer.n_in`` is declared (None: any width), so ``input_shape`` reads it without a probe;
    a user's layer taking an ``n_in`` it does not keep is not reported as dropping it."""
    class Scale(dn.layers.Layer):
        def __init__(self, n_in: int = 4) -> None:
            super().__init__()
            self.width = n_in

        def forward(self, x, training=False):
            return x * 2.0

    assert dn.layers.Layer.n_in is None and Scale().input_shape() is None
    assert dn.layers.Dense(5, 2).input_shape() == (5,)
    assert Scale().check_config(trial=True) == {}
