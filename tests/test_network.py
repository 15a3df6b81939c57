"""Network: the derivation step by step, fit/evaluate/predict, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import deepnet as dn
from deepnet import to_device, to_host
from deepnet.presets import mlp_layers, parse_spec, seed_network


def test_one_hidden_layer_matches_the_derivation_step_by_step(backend, rng):
    """Per-sample training of 6-5-3 (sigmoid, no bias, f = Σ(z − y)², SGD) equals the
    update equations written out by hand:
        ∂f/∂A = 2 (e ∘ z ∘ (1 − z)) · z̃ᵀ,  ẽ = Aᵀ (e ∘ z ∘ (1 − z)),  ∂f/∂B = 2 (ẽ ∘ z̃ ∘ (1 − z̃)) · xᵀ
    """
    net = dn.Network([dn.Dense(6, 5, bias=False, init="normal"), dn.Sigmoid(),
                      dn.Dense(5, 3, bias=False, init="normal"), dn.Sigmoid()],
                     seed=3, dtype="float64", loss=dn.SumOfSquares(on=0.99, off=0.01), optimizer=dn.SGD(lr=0.1))
    w = net.get_weights()
    B, A = w["0.weight"], w["2.weight"]
    X = rng.random((7, 6))
    labels = rng.integers(0, 3, size=7)
    g = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    for i in range(7):
        x = X[i][:, None]                               # column vectors as in the derivation
        y = np.full((3, 1), 0.01)
        y[labels[i]] = 0.99
        z_tilde = g(B @ x)
        z = g(A @ z_tilde)
        e = z - y
        dA = 2 * (e * z * (1 - z)) @ z_tilde.T
        e_tilde = A.T @ (e * z * (1 - z))
        dB = 2 * (e_tilde * z_tilde * (1 - z_tilde)) @ x.T
        A = A - 0.1 * dA
        B = B - 0.1 * dB
        net.fit(X[i:i + 1], labels[i:i + 1], epochs=1, batch_size=1, shuffle=False)
        got = net.get_weights()
        np.testing.assert_allclose(got["2.weight"], A, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got["0.weight"], B, rtol=1e-10, atol=1e-12)


def test_batch_one_over_an_epoch_equals_sequential_steps(rng):
    X = rng.random((5, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0])
    a = seed_like(4, 3)
    b = seed_like(4, 3)
    a.fit(X, y, epochs=1, batch_size=1, shuffle=False)
    for i in range(5):
        b.fit(X[i:i + 1], y[i:i + 1], epochs=1, batch_size=1, shuffle=False)
    for k, v in a.get_weights().items():
        np.testing.assert_array_equal(v, b.get_weights()[k])


def seed_like(n_in, n_out):
    return dn.Network([dn.Dense(n_in, 5, bias=False, init="normal"), dn.Sigmoid(),
                       dn.Dense(5, n_out, bias=False, init="normal"), dn.Sigmoid()],
                      seed=0, loss=dn.SumOfSquares(), optimizer=dn.SGD(0.1))


def test_mean_batch_gradient_is_the_average_of_per_sample_gradients(backend, rng):
    X = rng.normal(size=(6, 4))
    y = np.array([0, 1, 2, 1, 0, 2])
    net = dn.Network([dn.Dense(4, 3), dn.Tanh(), dn.Dense(3, 3)], seed=0, dtype="float64", loss="xent")
    Xd, yd = to_device(X, dtype="float64"), to_device(y, dtype="int64")

    def grads(xs, ys):
        net.zero_grad()
        z = net.forward(xs, training=True)
        _, dz = net.loss.forward_backward(z, ys)
        net.backward(dz)
        return {k: to_host(p.grad).copy() for k, p in net.parameters().items()}

    full = grads(Xd, yd)
    singles = [grads(Xd[i:i + 1, :], yd[i:i + 1]) for i in range(6)]
    for k in full:
        np.testing.assert_allclose(full[k], np.mean([s[k] for s in singles], axis=0), rtol=1e-10, atol=1e-12)


def test_fit_learns_and_returns_history(backend, rng):
    X = rng.normal(size=(300, 2)).astype(np.float32)
    y = ((X[:, 0] * X[:, 1]) > 0).astype(np.int64)      # XOR-like: needs the hidden layer
    net = dn.Network(mlp_layers("2-16-2", "tanh"), seed=1)
    hist = net.fit(X, y, epochs=30, batch_size=16, loss="xent", optimizer=dn.Adam(0.02),
                   validation_data=(X[:100], y[:100]))
    assert set(hist.history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "time"}
    assert len(hist["loss"]) == 30
    assert hist["loss"][-1] < hist["loss"][0] * 0.5
    assert hist["accuracy"][-1] > 0.9
    ev = net.evaluate(X, y)
    assert ev["accuracy"] > 0.9
    pred = net.predict(X)
    assert pred.shape == (300, 2) and pred.dtype == np.float32
    np.testing.assert_array_equal(net.predict_classes(X), pred.argmax(1))


def test_epoch_loss_is_the_mean_over_samples_with_a_partial_last_batch(rng):
    X = rng.normal(size=(10, 3)).astype(np.float32)
    y = rng.integers(0, 2, size=10)
    net = dn.Network([dn.Dense(3, 2)], seed=0, loss="xent", optimizer=dn.SGD(lr=1e-12))
    before = net.evaluate(X, y)["loss"]
    hist = net.fit(X, y, epochs=1, batch_size=4, shuffle=False)        # batches 4, 4, 2
    np.testing.assert_allclose(hist["loss"][0], before, rtol=1e-5)


def test_shuffling_is_seeded(rng):
    X = rng.normal(size=(50, 3)).astype(np.float32)
    y = rng.integers(0, 2, size=50)

    def train(seed):
        net = dn.Network([dn.Dense(3, 2)], seed=seed, loss="xent", optimizer=dn.SGD(0.1))
        net.fit(X, y, epochs=2, batch_size=5)
        return net.get_weights()["0.weight"]

    np.testing.assert_array_equal(train(1), train(1))
    assert not np.array_equal(train(1), train(2))


def test_deep_stack_and_summary():
    net = dn.Network(mlp_layers("784-256-128-64-10", "relu"), seed=0)
    text = net.summary()
    assert "Dense(n_in=784, n_out=256" in text and "(n, 10)" in text
    assert f"total parameters: {784 * 256 + 256 + 256 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10:,}" in text
    assert list(net.parameters())[:2] == ["0.weight", "0.bias"]


def test_parse_spec():
    assert parse_spec("784-128-64-10") == [784, 128, 64, 10]
    with pytest.raises(ValueError, match="expected sizes joined by '-'"):
        parse_spec("784-abc-10")
    with pytest.raises(ValueError, match="at least an input and an output"):
        parse_spec("784")


# ---------------------------------------------------------------- bad input
@pytest.fixture
def small():
    return dn.Network([dn.Dense(4, 3), dn.ReLU(), dn.Dense(3, 3)], seed=0, loss="xent", optimizer="sgd")


def test_wrong_input_width(small):
    with pytest.raises(dn.ShapeError, match=r"fit: the first layer expects inputs of width 4, got X of shape \(5, 7\)"):
        small.fit(np.zeros((5, 7), np.float32), np.zeros(5, np.int64))
    with pytest.raises(dn.ShapeError, match=r"predict: the first layer expects inputs of width 4"):
        small.predict(np.zeros((5, 3), np.float32))


def test_labels_out_of_range(small):
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2 for 3 outputs, got values in 0\.\.3"):
        small.fit(np.zeros((4, 4), np.float32), np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"got values in -1\.\.1"):
        small.fit(np.zeros((3, 4), np.float32), np.array([0, 1, -1]))


def test_label_shape_and_type(small):
    with pytest.raises(dn.ShapeError, match=r"targets y must have shape \(4, 3\), got \(4, 2\)"):
        small.fit(np.zeros((4, 4), np.float32), np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="labels y must be whole numbers"):
        small.fit(np.zeros((2, 4), np.float32), np.array([0.5, 1.0]))


def test_mismatched_batch_sizes(small):
    with pytest.raises(dn.ShapeError, match="X has 5 rows but y has 4 labels"):
        small.fit(np.zeros((5, 4), np.float32), np.zeros(4, np.int64))


def test_nan_in_inputs(small):
    X = np.zeros((3, 4), np.float32)
    X[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"X contains 1 non-finite value\(s\).*X\[1, 2\] = nan"):
        small.fit(X, np.zeros(3, np.int64))


def test_empty_network_and_non_layers():
    with pytest.raises(ValueError, match="at least one layer, got an empty list"):
        dn.Network([])
    with pytest.raises(TypeError, match="layer 1 must be a deepnet Layer, got str"):
        dn.Network([dn.Dense(2, 2), "relu"])


def test_layer_widths_must_chain():
    with pytest.raises(dn.ShapeError, match=r"layer 2 \(Dense\) expects inputs of width 5, but the layers before it produce width 4"):
        dn.Network([dn.Dense(3, 4), dn.ReLU(), dn.Dense(5, 2)])


def test_fit_without_loss_or_optimizer(rng):
    net = dn.Network([dn.Dense(2, 2)])
    with pytest.raises(ValueError, match="give a loss and an optimizer"):
        net.fit(np.zeros((2, 2), np.float32), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        net.fit(np.zeros((2, 2), np.float32), np.zeros(2, np.int64), loss="xent", optimizer="sgd", batch_size=0)


def test_seed_preset_structure():
    net = seed_network()
    assert [type(layer).__name__ for layer in net.layers] == ["Dense", "Sigmoid", "Dense", "Sigmoid"]
    assert [p.shape for p in net.parameters().values()] == [(50, 784), (10, 50)]
    w = net.get_weights()["0.weight"]
    assert abs(w.std() - 1 / 28) < 0.001


def test_weights_given_or_taken_never_alias_the_network(rng):
    """set_weights copies and get_weights copies: training never changes a saved dict."""
    net = dn.Network([dn.Dense(3, 2)], seed=0, loss="xent", optimizer=dn.SGD(0.5))
    saved = net.get_weights()
    given = {k: v.copy() for k, v in saved.items()}
    net.set_weights(given)
    X = rng.normal(size=(8, 3)).astype(np.float32)
    net.fit(X, rng.integers(0, 2, size=8), epochs=2, batch_size=2)
    for k in saved:
        np.testing.assert_array_equal(given[k], saved[k])
        assert not np.array_equal(net.get_weights()[k], saved[k])


def test_numpy_first_layer_weight_is_column_major_and_trains_the_same(rng, tmp_path):
    """On NumPy the first layer stores W column-major (x Wᵀ becomes a plain product); shape,
    values, training and checkpoints are unaffected: it trains like the strict backend, and
    a saved and resumed run keeps the layout with matching optimizer slots."""
    X = rng.random((96, 12)).astype(np.float32)
    y = rng.integers(0, 3, 96)

    def make(backend):
        return dn.Network([dn.Dense(12, 16), dn.ReLU(), dn.Dense(16, 3)], seed=4, backend=backend,
                          loss="xent", optimizer=dn.Adam(0.01))

    net = make("numpy")
    net.fit(X, y, epochs=1, batch_size=1, shuffle=False)        # batch 1: row-major is faster
    assert net.layers[0].parameters()["weight"].data.flags.c_contiguous
    net = make("numpy")
    net.fit(X, y, epochs=2, batch_size=16, shuffle=False)
    w = net.layers[0].parameters()["weight"]
    assert w.data.shape == (16, 12) and w.data.flags.f_contiguous and w.grad.flags.f_contiguous
    assert net.layers[2].parameters()["weight"].data.flags.c_contiguous
    ref = make("strict")
    ref.fit(X, y, epochs=2, batch_size=16, shuffle=False)
    for name, a in net.get_weights().items():
        np.testing.assert_allclose(a, ref.get_weights()[name], rtol=2e-5, atol=2e-6, err_msg=name)
    assert all(s.flags.f_contiguous for s in net.optimizer.state["0.weight"].values())

    from deepnet.io import load_model, save_model

    path = tmp_path / "m.npz"
    save_model(net, path)
    back = load_model(path)
    np.testing.assert_array_equal(back.get_weights()["0.weight"], net.get_weights()["0.weight"])
    net.fit(X, y, epochs=1, batch_size=2, shuffle=False)          # switching layout keeps training right
    ref.fit(X, y, epochs=1, batch_size=2, shuffle=False)
    assert net.layers[0].parameters()["weight"].data.flags.c_contiguous
    assert all(s.flags.c_contiguous for s in net.optimizer.state["0.weight"].values())
    for name, a in net.get_weights().items():
        np.testing.assert_allclose(a, ref.get_weights()[name], rtol=5e-5, atol=5e-6, err_msg=name)
