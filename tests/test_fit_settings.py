"""FitSettings: fit's options written out once, checked once, taken by fit and the Trainer."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

import deepnet as dn
from deepnet.training import FitSettings, Trainer


def _net(seed: int = 0) -> dn.Network:
    return dn.Network([dn.Dense(6, 8), dn.Tanh(), dn.Dense(8, 3)], seed=seed, loss="xent", optimizer=dn.SGD(0.1))


def _data(rng, n=30):
    return rng.normal(size=(n, 6)).astype(np.float32), rng.integers(0, 3, n)


def _same_weights(a: dn.Network, b: dn.Network) -> None:
    for k, v in a.get_weights().items():
        np.testing.assert_array_equal(v, b.get_weights()[k], err_msg=k)


def test_settings_given_as_an_object_train_as_the_same_keywords(rng):
    X, y = _data(rng)
    a, b = _net(), _net()
    ha = a.fit(X, y, epochs=2, batch_size=4, optimizer=dn.Adam(0.01), validation_data=(X, y))
    hb = b.fit(X, y, settings=FitSettings(epochs=2, batch_size=4, optimizer=dn.Adam(0.01), validation_data=(X, y)))
    _same_weights(a, b)
    assert ha.history["loss"] == hb.history["loss"] and ha.history["val_loss"] == hb.history["val_loss"]
    assert dn.FitSettings is FitSettings


def test_an_unknown_option_is_named_with_the_closest_one_and_the_valid_ones(rng):
    X, y = _data(rng)
    net = _net()
    with pytest.raises(TypeError, match=r"^fit: unknown option 'epoch' \(did you mean 'epochs'\?\); the options "
                                        r"are epochs, batch_size, .*late_signal_raises$"):
        net.fit(X, y, epoch=2)
    with pytest.raises(TypeError, match=r"^fit: unknown option 'checkpointer' \(did you mean 'checkpoint'\?\)"):
        net.fit(X, y, checkpointer=None)          # (Trainer still takes its old keyword, with a warning)


def test_settings_and_options_together_are_refused(rng):
    X, y = _data(rng)
    with pytest.raises(TypeError, match=r"^fit: give settings= or options \(epochs\), not both$"):
        _net().fit(X, y, settings=FitSettings(batch_size=4), epochs=2)


def test_a_bad_option_is_refused_by_the_settings_before_anything_changes(rng):
    X, y = _data(rng)
    with pytest.raises(ValueError, match=r"^fit: batch_size must be a positive integer, got 0$"):
        FitSettings(batch_size=0)
    net = _net()
    before, opt = net.get_weights(), net.optimizer
    with pytest.raises(ValueError, match=r"^fit: batch_size must be a positive integer, got 0$"):
        net.fit(X, y, batch_size=0, optimizer=dn.Adam())
    assert net.optimizer is opt
    _same_weights(net, _net())
    assert before.keys() == net.get_weights().keys()
    settings = FitSettings(epochs=1, batch_size=4)
    with pytest.raises(Exception):
        settings.epochs = 3           # frozen: checked once, never changed after


def test_rows_and_validation_rows_through_fit_are_the_run_on_their_copies(rng):
    X, y = _data(rng)
    rows, val = rng.permutation(30)[:22], rng.permutation(30)[22:]
    a, b = _net(), _net()
    ha = a.fit(X[rows], y[rows], epochs=2, batch_size=4, validation_data=(X[val], y[val]))
    hb = b.fit(X, y, epochs=2, batch_size=4, validation_data=(X, y), rows=rows, validation_rows=val)
    _same_weights(a, b)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(ha[key], hb[key], rtol=1e-6, err_msg=key)


class _SignalAtTheEnd(dn.Callback):
    """SIGINT to this process after the run's last step."""

    def on_train_end(self, net, logs):
        os.kill(os.getpid(), signal.SIGINT)


def test_a_late_signal_is_kept_for_the_caller_with_late_signal_raises_false(rng):
    X, y = _data(rng)
    history = _net().fit(X, y, epochs=1, batch_size=8, callbacks=[_SignalAtTheEnd()], late_signal_raises=False)
    assert history.late_signal == "SIGINT" and len(history["loss"]) == 1
    with pytest.raises(KeyboardInterrupt):      # the default: it reaches its handler when fit returns
        _net().fit(X, y, epochs=1, batch_size=8, callbacks=[_SignalAtTheEnd()])


def test_a_trainer_takes_the_loss_and_optimizer_it_is_given_and_refuses_a_folder(tmp_path):
    """``Trainer`` is public: its ``loss=``/``optimizer=`` replace the model's (as fit's do), a
    folder as ``checkpoint`` is refused in one line (only fit makes the Checkpointer), and the
    old keyword ``checkpointer=`` still works with a deprecation warning."""
    from deepnet.checkpoint import Checkpointer

    net = _net()
    Trainer(net, epochs=1, batch_size=8, optimizer=dn.Adam(0.05), loss="mse")
    assert isinstance(net.optimizer, dn.Adam) and net.optimizer.lr == 0.05
    assert type(net.loss).__name__ == "MeanSquaredError"
    with pytest.raises(TypeError, match=r"^Trainer: checkpoint must be a deepnet.checkpoint.Checkpointer .*got str 'ck'$"):
        Trainer(net, epochs=1, checkpoint="ck")
    with pytest.warns(DeprecationWarning, match=r"checkpoint=\.\.\."):
        t = Trainer(net, epochs=1, checkpointer=Checkpointer(tmp_path / "ck"))
    assert t.checkpointer.directory == tmp_path / "ck"
