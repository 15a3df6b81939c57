"""Dropout, normalization, schedules, callbacks, metrics and gradient-flow diagnostics."""

from __future__ import annotations

import numpy as np
import pytest

import deepnet as dn
from deepnet import metrics as M
from deepnet import to_device, to_host
from deepnet.diagnostics import GradientFlow
from deepnet.presets import mlp_layers
from deepnet.schedules import (LearningRateScheduler, ReduceLROnPlateau, cosine, exponential_decay, get_schedule,
                               linear_warmup, step_decay)


def xor_data(rng, n=200):
    X = rng.normal(size=(n, 2)).astype(np.float32)
    return X, ((X[:, 0] * X[:, 1]) > 0).astype(np.int64)


# ---------------------------------------------------------------- dropout
def test_dropout_rate_scaling_and_evaluation(backend):
    layer = dn.Dropout(0.25, seed=3)
    layer.to(backend)
    x = to_device(np.ones((200, 50), np.float32))
    y = to_host(layer.forward(x, training=True))
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    np.testing.assert_array_equal(to_host(layer.forward(x, training=False)), 1.0)
    y2 = to_host(layer.forward(x, training=True))          # a fresh mask: x = 1, so y2 is the mask itself
    assert not np.array_equal(y2 != 0, kept)
    dx = to_host(layer.backward(to_device(np.ones((200, 50), np.float32))))
    np.testing.assert_array_equal(dx, y2)                   # ∂f/∂x = δ ∘ m: 0 or 1/(1 − p), as in forward
    np.testing.assert_allclose(dx[y2 != 0], 1 / 0.75, rtol=1e-6)


def test_dropout_masks_follow_the_run_seed(rng):
    X, y = xor_data(rng)

    def train(seed):
        net = dn.Network([dn.Dense(2, 16), dn.ReLU(), dn.Dropout(0.5), dn.Dense(16, 2)], seed=seed,
                         loss="xent", optimizer=dn.SGD(0.1))
        net.fit(X, y, epochs=2, batch_size=10)
        return net.get_weights()["0.weight"]

    np.testing.assert_array_equal(train(5), train(5))
    assert not np.array_equal(train(5), train(6))


def test_dropout_backward_uses_the_forward_mask(backend, rng):
    layer = dn.Dropout(0.5, seed=1)
    layer.to(backend)
    x = rng.normal(size=(8, 6)).astype(np.float32)
    y = to_host(layer.forward(to_device(x), training=True))
    mask = (y != 0) / (1 - 0.5)                              # m = [u ≥ p]/(1 − p): 0 or 2
    assert 0 < (y != 0).sum() < y.size
    np.testing.assert_allclose(y, x * mask, rtol=1e-6)
    g = rng.normal(size=(8, 6)).astype(np.float32)           # backward may overwrite its argument
    dx = to_host(layer.backward(to_device(g.copy())))
    np.testing.assert_allclose(dx, g * mask, rtol=1e-6)      # the same mask, scaled, not only its zeros


def test_dropout_rejects_bad_rate():
    with pytest.raises(ValueError, match=r"Dropout: p must be in \[0, 1\), got 1.0"):
        dn.Dropout(1.0)


# ---------------------------------------------------------------- normalization
def test_batchnorm_training_statistics_and_running_averages(backend, rng):
    bn = dn.BatchNorm(4, momentum=0.9)
    bn.to(backend)
    bn.initialize(rng)
    x = rng.normal(3.0, 2.0, size=(64, 4))
    y = to_host(bn.forward(to_device(x.astype(np.float32)), training=True))
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(0), 1, atol=1e-3)
    np.testing.assert_allclose(to_host(bn.running_mean), 0.1 * x.mean(0), rtol=1e-4)
    np.testing.assert_allclose(to_host(bn.running_var), 0.9 + 0.1 * x.var(0, ddof=1), rtol=1e-4)
    ev = to_host(bn.forward(to_device(x.astype(np.float32)), training=False))
    np.testing.assert_allclose(ev, (x - 0.1 * x.mean(0)) / np.sqrt(0.9 + 0.1 * x.var(0, ddof=1) + 1e-5), rtol=1e-4)


def test_batchnorm_needs_two_samples():
    bn = dn.BatchNorm(3)
    bn.initialize(np.random.default_rng(0))
    with pytest.raises(ValueError, match="BatchNorm needs at least 2 values per feature in a training batch, got 1"):
        bn.forward(np.zeros((1, 3), np.float32), training=True)


def test_layernorm_normalizes_each_row(backend, rng):
    ln = dn.LayerNorm(6)
    ln.to(backend)
    ln.initialize(rng)
    y = to_host(ln.forward(to_device(rng.normal(5, 3, size=(4, 6)).astype(np.float32))))
    np.testing.assert_allclose(y.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(1), 1, atol=1e-3)


def test_batchnorm_network_trains_and_round_trips(tmp_path, rng):
    from deepnet.io import load_model, save_model

    X, y = xor_data(rng, 400)
    net = dn.Network([dn.Dense(2, 32), dn.BatchNorm(32), dn.ReLU(), dn.Dense(32, 2)], seed=0)
    hist = net.fit(X, y, epochs=15, batch_size=32, loss="xent", optimizer=dn.Adam(0.01))
    assert hist["accuracy"][-1] > 0.9
    loaded = load_model(save_model(net, tmp_path / "bn.npz"))
    np.testing.assert_allclose(loaded.predict(X), net.predict(X), rtol=1e-6)
    np.testing.assert_array_equal(to_host(loaded.layers[1].running_var), to_host(net.layers[1].running_var))


# ---------------------------------------------------------------- schedules & callbacks
def test_schedule_values():
    assert [step_decay(1.0, 2, 0.5)(e) for e in range(5)] == [1, 1, 0.5, 0.5, 0.25]
    assert exponential_decay(2.0, 0.5)(3) == 0.25
    c = cosine(1.0, 10, 0.1)
    assert c(0) == 1.0 and abs(c(10) - 0.1) < 1e-12 and abs(c(5) - 0.55) < 1e-12 and c(20) == c(10)
    w = linear_warmup(1.0, 4, then=cosine(1.0, 6))
    assert [round(w(e), 3) for e in range(5)] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert get_schedule("warmup-cosine", 0.1, 20)(19) < 0.01
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        get_schedule("linear", 0.1, 5)


def test_scheduler_and_plateau_change_the_learning_rate(rng):
    X, y = xor_data(rng)
    net = dn.Network(mlp_layers("2-8-2", "tanh"), seed=0)
    hist = net.fit(X, y, epochs=4, batch_size=50, loss="xent", optimizer=dn.SGD(0.1),
                   callbacks=[LearningRateScheduler(step_decay(0.1, 1, 0.5))])
    np.testing.assert_allclose(hist["lr"], [0.1, 0.05, 0.025, 0.0125])
    plateau = ReduceLROnPlateau("loss", factor=0.5, patience=1, min_delta=10.0)   # never "improves" enough
    hist = net.fit(X, y, epochs=3, batch_size=50, optimizer=dn.SGD(0.1), callbacks=[plateau])
    assert hist["lr"][-1] < 0.1


def test_per_step_warmup(rng):
    X, y = xor_data(rng, 100)
    net = dn.Network(mlp_layers("2-4-2", "tanh"), seed=0)
    seen = []
    rec = dn.LambdaCallback(on_batch_end=lambda n, step, logs: seen.append(n.optimizer.lr))
    net.fit(X, y, epochs=2, batch_size=10, loss="xent", optimizer=dn.SGD(1.0),
            callbacks=[LearningRateScheduler(linear_warmup(1.0, 2.0), per_step=True), rec])
    assert len(seen) == 20 and seen[10] < seen[19] <= 1.0


def test_early_stopping_restores_the_best_weights(rng):
    X, y = xor_data(rng)
    net = dn.Network(mlp_layers("2-16-2", "tanh"), seed=0)
    stop = dn.EarlyStopping("val_accuracy", patience=2)
    snapshots = []
    rec = dn.LambdaCallback(on_epoch_end=lambda n, e, logs: snapshots.append((logs["val_accuracy"], n.get_weights())))
    hist = net.fit(X, y, epochs=200, batch_size=20, loss="xent", optimizer=dn.SGD(2.0),
                   validation_data=(X[:50], y[:50]), callbacks=[rec, stop])
    assert len(hist["loss"]) < 200 and stop.stopped_epoch is not None
    best_acc, best_w = snapshots[stop.best_epoch]
    assert best_acc == max(a for a, _ in snapshots)
    for k, v in net.get_weights().items():
        np.testing.assert_array_equal(v, best_w[k])


def test_user_callback_sees_every_hook(rng):
    X, y = xor_data(rng, 40)
    calls = []

    class Recorder(dn.Callback):
        def on_train_begin(self, net, logs): calls.append("train_begin")
        def on_epoch_begin(self, net, epoch, logs): calls.append(f"epoch_begin{epoch}")
        def on_batch_begin(self, net, step, logs): calls.append("b")
        def on_batch_end(self, net, step, logs): calls.append("B")
        def on_epoch_end(self, net, epoch, logs): calls.append(f"epoch_end{epoch}")
        def on_train_end(self, net, logs): calls.append("train_end")

    dn.Network(mlp_layers("2-4-2", "relu"), seed=0).fit(X, y, epochs=2, batch_size=20, loss="xent",
                                                         optimizer="sgd", callbacks=[Recorder()])
    assert calls == ["train_begin", "epoch_begin0", "b", "B", "b", "B", "epoch_end0",
                     "epoch_begin1", "b", "B", "b", "B", "epoch_end1", "train_end"]


# ---------------------------------------------------------------- metrics
def test_metrics_on_the_device(backend):
    scores = to_device(np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5], [0.3, 0.3, 0.4]], np.float32))
    labels = to_device(np.array([2, 0, 0, 1]), dtype="int64")
    ops = backend
    assert float(to_host(M.accuracy(ops, scores, labels))) == 0.25
    assert float(to_host(M.top_k_accuracy(ops, scores, labels, 2))) == 0.75   # ties count as in
    conf = M.confusion_matrix(ops, labels, ops.argmax_rows(scores), 3)
    np.testing.assert_array_equal(to_host(conf), [[1, 0, 1], [0, 0, 1], [0, 1, 0]])
    per = to_host(M.per_class_accuracy(ops, conf))
    np.testing.assert_allclose(per, [0.5, 0.0, 0.0])


# ---------------------------------------------------------------- gradient flow
def test_gradient_flow_flags_vanishing_error_in_deep_sigmoid_nets(rng):
    X = rng.random((64, 20)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    deep = dn.Network(mlp_layers("20-" + "-".join(["32"] * 10) + "-3", "sigmoid", init="normal"), seed=0)
    deep.diagnostics = GradientFlow()
    deep.fit(X, y, epochs=2, batch_size=16, loss="xent", optimizer=dn.SGD(0.1))
    rec = deep.diagnostics.records()
    assert len(rec["error_norm"]) == 2 and len(rec["error_norm"][0]) == len(deep.layers)
    assert len(rec["grad_norm"][0]) == 11
    assert rec["error_norm"][-1][-1] / rec["error_norm"][-1][0] > 1e3
    assert any("vanishing gradients" in w for w in deep.diagnostics.warnings())
    relu = dn.Network(mlp_layers("20-" + "-".join(["32"] * 10) + "-3", "relu"), seed=0)
    relu.diagnostics = GradientFlow()
    relu.fit(X, y, epochs=2, batch_size=16, loss="xent", optimizer=dn.SGD(0.05))
    assert relu.diagnostics.warnings() == []


def test_dropout_with_zero_rate_is_the_identity_in_training(backend, rng):
    layer = dn.Dropout(0.0)
    layer.to(backend)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_array_equal(to_host(layer.forward(to_device(x), training=True)), x)
    np.testing.assert_array_equal(to_host(layer.backward(to_device(x.copy()))), x)


def test_every_callback_hook_is_declared_on_callback():
    """``on_epoch_totals`` is a declared hook: LambdaCallback takes it and fit calls it with the
    epoch's totals before on_epoch_end; an unknown hook is a one-line error naming the hooks."""
    from deepnet.callbacks import HOOKS, Callback, LambdaCallback

    assert all(callable(getattr(Callback(), h)) for h in HOOKS)
    seen = []
    cb = LambdaCallback(on_epoch_totals=lambda net, epoch, totals: seen.append(("totals", epoch, totals["seen"])),
                        on_epoch_end=lambda net, epoch, logs: seen.append(("end", epoch)))
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(12, 3)).astype(np.float32), rng.integers(0, 2, 12)
    net = dn.Network([dn.layers.Dense(3, 2)], loss="xent", optimizer="sgd")
    net.fit(X, y, epochs=2, batch_size=4, callbacks=[cb])
    assert seen == [("totals", 0, 12), ("end", 0), ("totals", 1, 12), ("end", 1)]
    with pytest.raises(ValueError, match="unknown hook 'on_epoch_total': expected one of on_train_begin"):
        LambdaCallback(on_epoch_total=print)
