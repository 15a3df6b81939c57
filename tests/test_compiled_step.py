"""The compiled CPU step (fit(graphs=...) on NumPy with numba): it trains as the plain loop does
(float64 to 1e-12 over epochs, float32 one step at a time), the grouping of steps into calls
changes nothing, it resumes mid-epoch exactly, and whatever it cannot run is said."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import deepnet as dn
from deepnet.backend import to_host
from deepnet.callbacks import Callback
from deepnet.checkpoint import Checkpointer
from deepnet.training import compiled
from deepnet.training.captured import GraphCaptureWarning

pytest.importorskip("numba", reason="the compiled step needs numba (the fast extra)")


@pytest.fixture(autouse=True)
def compiled_steps(monkeypatch):
    """The steps each compiled call ran, in order (a test asserts the compiled path ran)."""
    done: list[int] = []
    real = compiled.CompiledRun._call

    def spy(self, first, count):
        before = self.net.step_count
        try:
            return real(self, first, count)
        finally:
            done.append(self.net.step_count - before)

    monkeypatch.setattr(compiled.CompiledRun, "_call", spy)
    return done


def _data(n: int = 96, d: int = 12, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, d), dtype=np.float32), rng.integers(0, k, n)


NETS = {
    # the mission's network: sigmoid, no biases, sum of squares, plain SGD, batch 1
    "seed": (lambda: [dn.Dense(12, 6, bias=False), dn.Sigmoid(), dn.Dense(6, 4, bias=False), dn.Sigmoid()],
             dict(loss=dn.SumOfSquares(reduction="sum"), batch_size=1), lambda: dn.SGD(0.1)),
    "relu-momentum": (lambda: [dn.Dense(12, 16), dn.ReLU(), dn.Dense(16, 4)],
                      dict(loss="xent", batch_size=8), lambda: dn.Momentum(0.05)),
    "tanh-nesterov-mse": (lambda: [dn.Dense(12, 16), dn.Tanh(), dn.Dense(16, 8), dn.Identity(), dn.Dense(8, 4)],
                          dict(loss="mse", batch_size=16), lambda: dn.SGD(0.05, momentum=0.9, nesterov=True)),
    "adam-batch1": (lambda: [dn.Dense(12, 16), dn.ReLU(), dn.Dense(16, 4)],
                    dict(loss="xent", batch_size=1), lambda: dn.Adam(1e-2)),
    "adamw-excluding-biases": (lambda: [dn.Dense(12, 16), dn.Sigmoid(), dn.Dense(16, 4)],
                               dict(loss="xent", batch_size=10),
                               lambda: dn.AdamW(1e-2, weight_decay=0.1, weight_decay_exclude="bias")),
    "dropout-adam": (lambda: [dn.Dense(12, 16), dn.ReLU(), dn.Dropout(0.3), dn.Dense(16, 8), dn.Sigmoid(),
                               dn.Dropout(0.5), dn.Dense(8, 4)],
                     dict(loss="xent", batch_size=8), lambda: dn.Adam(1e-2)),
    "sgd-batch-32-short-last": (lambda: [dn.Dense(12, 16), dn.ReLU(), dn.Dense(16, 4)],
                                dict(loss="xent", batch_size=36), lambda: dn.SGD(0.1)),
}


def _train(name: str, graphs: str, dtype: str = "float32", epochs: int = 2, **extra):
    layers, fit, opt = NETS[name]
    net = dn.Network(layers(), seed=4, dtype=dtype, optimizer=opt())
    X, y = _data()
    h = net.fit(X, y, epochs=epochs, graphs=graphs, verbose=0, **fit, **extra)
    return net, h


def _weights(net: dn.Network) -> dict[str, np.ndarray]:
    return {k: to_host(v) for k, v in net.get_weights().items()}


def _plain_and_compiled(make_net, X, y, compiled: str = "epoch", **fit) -> tuple[dict, dict]:
    """The weights after ``fit`` in the plain loop and with ``graphs=compiled``, from one recipe."""
    out = []
    for graphs in ("off", compiled):
        net = make_net()
        net.fit(X, y, graphs=graphs, **fit)
        out.append(_weights(net))
    return out[0], out[1]


def _assert_close(got: dict, want: dict, **tol) -> None:
    for k in want:
        np.testing.assert_allclose(got[k], want[k], err_msg=k, **tol)


@pytest.mark.parametrize("shuffle", [True, False], ids=["gathered", "read-in-place"])
@pytest.mark.parametrize("name", sorted(NETS))
def test_the_compiled_step_trains_as_the_plain_loop_in_float64(name, shuffle, compiled_steps):
    """Shuffled batches are gathered; without shuffling, a batch of consecutive rows is read
    where it lies in X."""
    plain, hp = _train(name, "off", "float64", shuffle=shuffle)
    assert not compiled_steps
    comp, hc = _train(name, "epoch", "float64", shuffle=shuffle)
    n_full = 96 // NETS[name][1]["batch_size"]
    assert sum(compiled_steps) == 2 * n_full            # every full batch of both epochs, compiled
    for k, w in _weights(plain).items():
        np.testing.assert_allclose(_weights(comp)[k], w, rtol=1e-11, atol=1e-13, err_msg=k)
    np.testing.assert_allclose(hc.history["loss"], hp.history["loss"], rtol=1e-11)
    assert hc.history["accuracy"] == hp.history["accuracy"]
    assert comp.step_count == plain.step_count and comp.optimizer.iterations == plain.optimizer.iterations


@pytest.mark.parametrize("name", sorted(NETS))
def test_one_compiled_step_matches_one_plain_step_in_float32(name, compiled_steps):
    """One batch, one step, from the same weights: the same to float32 rounding."""
    layers, fit, opt = NETS[name]
    X, y = _data(n=fit["batch_size"])
    plain, comp = _plain_and_compiled(lambda: dn.Network(layers(), seed=4, optimizer=opt()), X, y, compiled="on",
                                      epochs=1, verbose=0, **fit)
    assert compiled_steps == [1]
    _assert_close(comp, plain, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["seed", "relu-momentum", "adamw-excluding-biases", "dropout-adam"])
def test_how_steps_are_grouped_into_calls_changes_nothing(name, monkeypatch, compiled_steps):
    """graphs="on" (a call per step), "epoch" (runs), and runs cut every 5 steps: bit-identical."""
    runs = [_weights(_train(name, "on")[0])]
    assert set(compiled_steps) == {1}
    compiled_steps.clear()
    runs.append(_weights(_train(name, "epoch")[0]))
    assert max(compiled_steps) > 3
    compiled_steps.clear()
    monkeypatch.setattr(compiled.CompiledRun, "_per_call", lambda self: 5)
    runs.append(_weights(_train(name, "epoch")[0]))
    assert max(compiled_steps) == 5 and min(compiled_steps) < 5
    for other in runs[1:]:
        for k, w in runs[0].items():
            np.testing.assert_array_equal(other[k], w, err_msg=k)


class _StopAt(Callback):
    """Stop the run after ``at`` batches of the second epoch (a per-batch callback: one call per step)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_batch_end(self, net, step, logs):
        if net.step_count == self.at:
            net.stop_training = True


def test_a_run_stopped_mid_epoch_resumes_exactly(tmp_path, compiled_steps):
    X, y = _data()
    fit = dict(epochs=3, batch_size=8, loss="xent", graphs="auto", verbose=0)
    ref = dn.Network([dn.Dense(12, 16), dn.ReLU(), dn.Dropout(0.3), dn.Dense(16, 4)], seed=4, optimizer=dn.Adam(1e-2))
    ref.fit(X, y, **fit)
    net = dn.Network([dn.Dense(12, 16), dn.ReLU(), dn.Dropout(0.3), dn.Dense(16, 4)], seed=4, optimizer=dn.Adam(1e-2))
    ckpt = Checkpointer(tmp_path, every_steps=1)
    net.fit(X, y, callbacks=[_StopAt(17)], checkpoint=ckpt, **fit)
    assert net.step_count == 17
    again = dn.Network([dn.Dense(12, 16), dn.ReLU(), dn.Dropout(0.3), dn.Dense(16, 4)], seed=4, optimizer=dn.Adam(1e-2))
    again.fit(X, y, checkpoint=Checkpointer(tmp_path), resume=True, **fit)
    assert again.step_count == ref.step_count
    assert sum(compiled_steps) == 3 * 12 * 2          # the reference's 36 steps, then 17 and 19
    for k, w in _weights(ref).items():
        np.testing.assert_array_equal(_weights(again)[k], w, err_msg=k)


def test_a_per_batch_schedule_and_callbacks_see_every_compiled_step(compiled_steps):
    seen = []

    class Losses(Callback):
        def on_batch_end(self, net, step, logs):
            seen.append((step, float(logs["loss"]), net.optimizer.lr))
            net.optimizer.lr = net.optimizer.lr * 0.5       # η changes between calls

    X, y = _data()
    runs = []
    for graphs in ("off", "auto"):
        seen.clear()
        net = dn.Network([dn.Dense(12, 16), dn.ReLU(), dn.Dense(16, 4)], seed=4, dtype="float64",
                         optimizer=dn.SGD(0.2, momentum=0.9))
        net.fit(X, y, epochs=1, batch_size=16, loss="xent", graphs=graphs, verbose=0, callbacks=[Losses()])
        runs.append((list(seen), _weights(net)))
    (s0, w0), (s1, w1) = runs
    assert compiled_steps == [1] * 6
    assert [b for b, _, _ in s1] == [b for b, _, _ in s0] and len(s1) == 6
    np.testing.assert_allclose([f for _, f, _ in s1], [f for _, f, _ in s0], rtol=1e-12)
    for k in w0:
        np.testing.assert_allclose(w1[k], w0[k], rtol=1e-12, err_msg=k)


def test_auto_says_once_why_a_network_trains_in_the_plain_loop():
    X, y = _data()
    net = dn.Network([dn.Dense(12, 16), dn.LeakyReLU(), dn.Dense(16, 4)], seed=4)
    with pytest.warns(GraphCaptureWarning, match=r"without a compiled step because layer 1 \(LeakyReLU\) has no compiled form"):
        net.fit(X, y, epochs=1, batch_size=8, loss="xent", optimizer="sgd", graphs="auto", verbose=0)


def test_a_subclass_that_overrides_forward_is_not_compiled_as_its_parent():
    class Doubled(dn.Dense):
        def forward(self, x, training=False):
            return super().forward(x, training) * 2.0

        def backward(self, grad_output, need_input_grad=True):
            return super().backward(grad_output * 2.0, need_input_grad)

    obstacles = compiled.compile_obstacles(
        dn.Network([Doubled(12, 4)], seed=0, loss="xent", optimizer="sgd"), labels_as_targets=True,
        check_finite="raise", streamed=False, batch_hooks=[], mode="auto")
    assert obstacles == ["layer 0 (Doubled) has no compiled form"]


def test_a_frozen_draw_is_not_compiled():
    drop = dn.Dropout(0.5)
    frozen = dn.Network([dn.Dense(12, 8), drop, dn.Dense(8, 4)], seed=0, loss="xent", optimizer="sgd")
    drop.freeze_randomness(True)
    kw = dict(labels_as_targets=True, check_finite="raise", streamed=False, batch_hooks=[], mode="auto")
    assert compiled.compile_obstacles(frozen, **kw) == ["layer 1 (Dropout) reuses a frozen draw (freeze_randomness, "
                                                        "for gradient checks)"]


def test_what_the_compiled_step_cannot_run_is_named():
    net = dn.Network([dn.Dense(12, 4)], seed=0, loss="xent", optimizer=dn.Adam(clip_norm=1.0))
    got = compiled.compile_obstacles(net, labels_as_targets=False, check_finite="skip", streamed=True,
                                     batch_hooks=["Printer"], mode="epoch", precision="bf16")
    text = " | ".join(got)
    for part in ("check_finite='skip'", "streamed", "precision 'bf16'", "given target rows",
                 "transforms its gradients (ClipNorm)", "callbacks run at every batch"):
        assert part in text


def test_the_compiled_step_stops_at_a_nan_loss_naming_the_step_and_layer(compiled_steps):
    """A row that overflows the forward pass (finite, 3e38) in batch 6: the same error as the
    plain loop gives, the step not applied."""
    X, y = _data()
    X[40] = 3e38
    errors = []
    for graphs in ("off", "epoch"):
        net = dn.Network([dn.Dense(12, 16), dn.ReLU(), dn.Dense(16, 4)], seed=4)
        with pytest.raises(dn.NonFiniteError, match=r"epoch 1, batch 6 \(step 6\).*first non-finite layer: layer") as err:
            net.fit(X, y, epochs=1, batch_size=8, loss="xent", optimizer="sgd", shuffle=False, graphs=graphs,
                    verbose=0)
        errors.append(str(err.value))
        assert net.step_count == 5
        assert np.isfinite(_weights(net)["0.weight"]).all()        # the step with the overflow was not applied
    assert compiled_steps == [5]
    assert errors[0] == errors[1]


def test_a_parameter_replaced_between_epochs_is_trained_not_the_old_one(compiled_steps):
    class Reinit(Callback):
        def on_epoch_end(self, net, epoch, logs=None):
            p = net.parameters()["0.weight"]
            p.data = p.data * 0.5                           # a new array

    X, y = _data()
    plain, comp = _plain_and_compiled(
        lambda: dn.Network([dn.Dense(12, 16), dn.ReLU(), dn.Dense(16, 4)], seed=4, dtype="float64",
                           optimizer=dn.SGD(0.1)),
        X, y, epochs=3, batch_size=8, loss="xent", verbose=0, callbacks=[Reinit()])
    assert sum(compiled_steps) == 3 * 12
    _assert_close(comp, plain, rtol=1e-12)


def test_flatten_first_takes_image_batches(compiled_steps):
    rng = np.random.default_rng(0)
    X, y = rng.random((40, 1, 3, 4), dtype=np.float32), rng.integers(0, 3, 40)
    plain, comp = _plain_and_compiled(
        lambda: dn.Network([dn.Flatten(), dn.Dense(12, 8), dn.ReLU(), dn.Dense(8, 3)], seed=1, dtype="float64",
                           input_shape=(1, 3, 4)),
        X.astype(np.float64), y, epochs=2, batch_size=8, loss="xent", optimizer="adam", verbose=0)
    assert sum(compiled_steps) == 2 * 5
    _assert_close(comp, plain, rtol=1e-12)


def test_adam_on_a_parameter_of_a_million_weights_agrees(compiled_steps):
    """From 1M elements the eager update runs over the cores; the compiled one in one thread."""
    rng = np.random.default_rng(1)
    X, y = rng.random((16, 1024), dtype=np.float32), rng.integers(0, 4, 16)
    plain, comp = _plain_and_compiled(
        lambda: dn.Network([dn.Dense(1024, 1024), dn.ReLU(), dn.Dense(1024, 4)], seed=2, optimizer=dn.Adam(1e-3)),
        X, y, compiled="on", epochs=1, batch_size=16, loss="xent")
    assert compiled_steps == [1]
    _assert_close(comp, plain, rtol=2e-6, atol=1e-7)


def test_auto_keeps_the_plain_loop_where_the_products_are_the_step(compiled_steps, monkeypatch):
    """graphs="auto" compiles small steps only (measured: large ones are no faster compiled);
    "epoch" compiles at any size."""
    X, y = _data()
    for graphs, expected in (("auto", []), ("epoch", [12])):
        monkeypatch.setattr(compiled, "AUTO_MAX_WORK", 8 * 16 * 4)           # below this network's 8 × 276
        net = dn.Network([dn.Dense(12, 16), dn.ReLU(), dn.Dense(16, 4)], seed=4)
        with warnings.catch_warnings():
            warnings.simplefilter("error")                              # a size is not an obstacle: nothing said
            net.fit(X, y, epochs=1, batch_size=8, loss="xent", optimizer="sgd", graphs=graphs)
        assert compiled_steps == expected
