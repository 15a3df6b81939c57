"""deepnet.training: the epoch-batch iterator, one training step, and fit's memory.

The loop moved out of Network (issue 14); these pin what it must keep doing: a shuffled
epoch is exactly the steps on the permuted rows, a resumed epoch starts at its batch,
streamed batches equal resident ones, a refused step changes nothing, and fit adds no
copy of a float32 X.
"""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

import deepnet as dn
from deepnet.backend import get_ops, to_device, to_host
from deepnet.training import EpochBatches, train_step


def _net(seed: int = 0, backend: str = "numpy") -> dn.Network:
    return dn.Network([dn.Dense(6, 8), dn.Tanh(), dn.Dense(8, 3)], seed=seed, backend=backend,
                      loss="xent", optimizer=dn.SGD(0.1))


def test_a_shuffled_epoch_is_the_steps_on_the_permuted_rows(backend, rng):
    """fit's gather into a reused buffer gives each step exactly the rows (and their own
    targets) of the epoch's permutation, drawn from the network's generator."""
    X = rng.normal(size=(22, 6)).astype(np.float32)
    y = rng.integers(0, 3, 22)
    a, b = _net(backend=backend), _net(backend=backend)
    a.fit(X, y, epochs=2, batch_size=4)                       # batches 4,4,4,4,4,2
    for _ in range(2):
        perm = b.rng.permutation(len(X))
        b.fit(X[perm], y[perm], epochs=1, batch_size=4, shuffle=False)
    for k, v in a.get_weights().items():
        np.testing.assert_allclose(v, b.get_weights()[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_epoch_batches_in_order_gathered_and_streamed_give_the_same_rows(rng):
    ops = get_ops("numpy")
    X = rng.normal(size=(11, 3)).astype(np.float32)
    T = rng.integers(0, 3, 11)
    perm = rng.permutation(11)
    order = to_device(perm, ops, dtype="int64")
    resident = EpochBatches(ops, X, T, batch_size=3)
    streamed = EpochBatches(ops, X, T, batch_size=3, chunk_rows=6)
    assert resident.n_batches == 4
    for first in (0, 2):
        got = [(b.index, b.start, b.stop, to_host(b.x).copy(), to_host(b.t).copy())
               for b in resident.epoch(perm, order, first)]
        assert [g[0] for g in got] == list(range(first, 4))
        for (i, s, e, x, t), sb in zip(got, streamed.epoch(perm, order, first), strict=True):
            rows = perm[s:e]
            np.testing.assert_array_equal(x, X[rows])
            np.testing.assert_array_equal(t, T[rows])
            assert (sb.index, sb.start, sb.stop) == (i, s, e)
            np.testing.assert_array_equal(to_host(sb.x), X[rows])
            np.testing.assert_array_equal(to_host(sb.t), T[rows])
    in_order = [to_host(b.x) for b in resident.epoch(None, None, 1)]
    np.testing.assert_array_equal(np.concatenate(in_order), X[3:])
    assert np.shares_memory(next(iter(resident.epoch(None, None))).x, X)     # a slice, not a copy


def test_train_step_is_forward_loss_backward_update(rng):
    """One step equals the derivation done by hand with the layers' own passes; a step the
    guard refuses changes no weight and leaves no gradient behind."""
    X = rng.normal(size=(4, 6)).astype(np.float32)
    y = rng.integers(0, 3, 4)
    net, ref = _net(), _net()
    f, z = train_step(net, net.loss.bind(net.ops), net.optimizer, X, y)
    zr = ref.forward(X, True)
    fr, dz = ref.loss.bind(ref.ops).forward_backward(zr, y)
    ref.backward(dz)
    expected = {k: to_host(p.data) - 0.1 * to_host(p.grad) for k, p in ref.parameters().items()}
    np.testing.assert_allclose(float(f), float(fr), rtol=1e-6)
    np.testing.assert_allclose(to_host(z), to_host(zr), rtol=1e-6)
    for k, v in net.get_weights().items():
        np.testing.assert_allclose(v, expected[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert not any(p.has_grad for p in net.parameters().values())
    before = net.get_weights()
    assert train_step(net, net.loss, net.optimizer, X, y, accept=lambda f: False) is None
    for k, v in net.get_weights().items():
        np.testing.assert_array_equal(v, before[k])


def test_skip_policy_says_it_halved_the_learning_rate(rng):
    X = rng.normal(size=(8, 6)).astype(np.float32)
    X[:4] = 3e38                                     # finite, but the first batch's outputs overflow
    net = dn.Network([dn.Dense(6, 3)], seed=0, loss="xent", optimizer=dn.SGD(0.1))
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning, match=r"epoch 1, batch 1 is NaN or inf: step skipped, learning rate "
                                            r"halved to 0\.05"):
        net.fit(X, rng.integers(0, 3, 8), epochs=1, batch_size=4, shuffle=False, check_finite="skip")
    assert net.optimizer.lr == 0.05 and net.step_count == 1


@pytest.mark.parametrize("shuffle", [True, False])
def test_fit_adds_no_copy_of_a_float32_X(rng, shuffle):
    """Issue 14: fit used to add two copies of X when shuffling (one shuffled copy per epoch,
    the last one alive while the next was made) and a quarter copy for the finite check.
    Now it may add at most 0.25 copies beyond the model, optimizer state and batch buffers
    (NumPy reports its allocations to tracemalloc)."""
    X = rng.random((20000, 100)).astype(np.float32)          # 8 MB
    y = rng.integers(0, 3, 20000)
    net = dn.Network([dn.Dense(100, 16), dn.ReLU(), dn.Dense(16, 3)], seed=0, loss="xent",
                     optimizer=dn.SGD(0.1))
    net.fit(X[:256], y[:256], epochs=1, batch_size=128)      # first-use caches (numba, BLAS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tracemalloc.start()
        try:
            net.fit(X, y, epochs=2, batch_size=128, shuffle=shuffle)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    # labels, permutation and predictions: 3 int64 per row = 0.24 MB; batch buffers are small
    per_row_vectors = 4 * 8 * len(X)
    assert peak - per_row_vectors < 0.25 * X.nbytes, f"fit allocated {peak / X.nbytes:.2f} copies of X"


def _lr_by_step(net, step, logs):
    net.optimizer.lr = 0.1 / (step + 1)          # a per-batch schedule written by the user


def test_a_mid_epoch_checkpoint_is_saved_after_the_users_batch_hooks(rng, tmp_path):
    """Resuming from any step's checkpoint continues exactly: the checkpoint of a step is
    written after every callback (here a per-batch learning-rate schedule) saw that step."""
    from deepnet.checkpoint import Checkpointer

    X = rng.normal(size=(24, 6)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    a = _net()
    a.fit(X, y, epochs=2, batch_size=4, callbacks=[dn.LambdaCallback(on_batch_end=_lr_by_step)],
          checkpoint=Checkpointer(tmp_path / "a", every_steps=3, keep=10))
    mid = tmp_path / "a" / "ckpt-e0001-s00000009.npz"           # epoch 2, after its third batch
    assert mid.is_file()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / mid.name).write_bytes(mid.read_bytes())
    b = _net(seed=5)                                             # restored from the checkpoint
    b.fit(X, y, epochs=2, batch_size=4, callbacks=[dn.LambdaCallback(on_batch_end=_lr_by_step)],
          checkpoint=Checkpointer(tmp_path / "b", every_steps=3, keep=10), resume=True)
    for k, v in a.get_weights().items():
        np.testing.assert_array_equal(v, b.get_weights()[k], err_msg=k)


def test_a_non_finite_epoch_stops_before_validation_runs(rng):
    X = rng.normal(size=(8, 6)).astype(np.float32)
    net = _net()
    net.fit(X, rng.integers(0, 3, 8), epochs=1, batch_size=4)
    net.layers[0].parameters()["weight"].data[0, 0] = np.nan
    seen = []
    net.forward = lambda x, training=False, _f=net.forward: (seen.append(training), _f(x, training))[1]
    with np.errstate(all="ignore"), pytest.raises(dn.NonFiniteError, match="epoch 1, batch 1: the loss of this batch"):
        net.fit(X, rng.integers(0, 3, 8), epochs=1, batch_size=4, check_finite="off", validation_data=(X, y_of(X)))
    assert False not in seen                         # no evaluation pass over the validation data


def y_of(X):
    return np.zeros(len(X), dtype=np.int64)


def test_fit_with_a_bad_argument_changes_nothing(tmp_path):
    net = _net()
    loss, opt = net.loss, net.optimizer
    with pytest.raises(ValueError, match="epochs must be a non-negative integer"):
        net.fit(np.zeros((4, 6), np.float32), [0, 1, 2, 0], epochs=-1, loss="mse", optimizer="adam",
                checkpoint=tmp_path / "ckpt")
    assert net.loss is loss and net.optimizer is opt and not (tmp_path / "ckpt").exists()


def test_set_weights_can_swap_two_parameters(backend):
    net = dn.Network([dn.Dense(3, 3, bias=False), dn.Dense(3, 3, bias=False)], seed=0, backend=backend)
    w = net.get_weights()
    p = net.parameters()
    net.set_weights({"0.weight": p["1.weight"].data, "1.weight": p["0.weight"].data})
    np.testing.assert_array_equal(net.get_weights()["0.weight"], w["1.weight"])
    np.testing.assert_array_equal(net.get_weights()["1.weight"], w["0.weight"])


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("stream", [None, 8])
def test_training_on_rows_by_index_equals_training_on_their_copy(rng, shuffle, stream):
    """The validation split by indices (Trainer(rows=, validation_rows=), what the CLI uses):
    the same run, metrics and checkpoint fingerprint as fit on the copies X[rows], X[val]."""
    from deepnet.training import Trainer
    from deepnet.training.settings import run_settings

    X = rng.normal(size=(30, 6)).astype(np.float32)
    y = rng.integers(0, 3, 30)
    rows, val = rng.permutation(30)[:22], rng.permutation(30)[22:]
    a, b = _net(), _net()
    ha = a.fit(X[rows], y[rows], epochs=2, batch_size=4, shuffle=shuffle, validation_data=(X[val], y[val]),
               stream_chunk_rows=stream)
    hb = Trainer(b, epochs=2, batch_size=4, shuffle=shuffle, validation_data=(X, y), validation_rows=val,
                 rows=rows, stream_chunk_rows=stream).fit(X, y)
    for k, v in a.get_weights().items():
        np.testing.assert_array_equal(v, b.get_weights()[k], err_msg=k)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(ha[key], hb[key], rtol=1e-6, err_msg=key)
    labels = to_device(y[rows], b.ops, dtype="int64")
    assert run_settings(b, X, labels, labels, 2, 4, shuffle, rows) == \
        run_settings(a, X[rows], labels, labels, 2, 4, shuffle)


def test_bad_rows_are_refused_in_one_line(rng):
    from deepnet.training import Trainer

    X = rng.normal(size=(5, 6)).astype(np.float32)
    with pytest.raises(dn.ShapeError, match=r"fit: row indices must lie in 0\.\.4, got values in 0\.\.7"):
        Trainer(_net(), epochs=1, batch_size=2, rows=[0, 7]).fit(X, np.zeros(5, np.int64))
    with pytest.raises(ValueError, match="validation_rows needs validation_data"):
        Trainer(_net(), epochs=1, batch_size=2, validation_rows=[0])


def test_validation_rows_of_a_streamed_X_upload_only_those_rows(rng, monkeypatch):
    """Streaming is for data that does not fit on the device: the validation split by
    indices must then send only the validation rows there, not all of X."""
    import deepnet.training.trainer as trainer_module
    from deepnet.training import Trainer

    uploads = []
    real = trainer_module.device_inputs

    def spy(ops, X, *args):
        uploads.append((args[-1], tuple(X.shape)))
        return real(ops, X, *args)

    monkeypatch.setattr(trainer_module, "device_inputs", spy)
    X = rng.normal(size=(30, 6)).astype(np.float32)
    y = rng.integers(0, 3, 30)
    rows, val = rng.permutation(30)[:22], rng.permutation(30)[22:]
    # the strict backend's arrays are not host arrays: a streamed X stays on the host
    Trainer(_net(backend="strict"), epochs=1, batch_size=4, validation_data=(X, y), validation_rows=val,
            rows=rows, stream_chunk_rows=8).fit(X, y)
    assert uploads == [("fit(validation_data)", (8, 6))]


def test_the_network_hands_its_backend_to_every_component():
    """One way to get a backend: the network binds its layers, loss and optimizer when it
    takes them and again when it moves; the optimizer steps on the bound backend."""
    net = dn.Network([dn.Dense(3, 2)], seed=0, loss="xent", optimizer="adam")
    assert net.optimizer.ops is net.ops and net.loss.ops_for(to_device(np.zeros((1, 2), np.float32))) is net.ops
    net.fit(np.ones((4, 3), np.float32), [0, 1, 0, 1], epochs=1, batch_size=2)
    net.to("strict")
    strict = get_ops("strict")
    assert net.optimizer.ops is strict and all(strict.owns(a) for st in net.optimizer.state.values()
                                               for a in st.values())
    assert all(layer.ops is strict for layer in net.layers)
    net.optimizer = "sgd"                            # a name is resolved and bound like an object
    assert isinstance(net.optimizer, dn.SGD) and net.optimizer.ops is strict
    net.loss = "mse"
    assert isinstance(net.loss, dn.MeanSquaredError)
    with pytest.raises(ValueError, match="SGD.step: no backend: give ops, or bind the optimizer first"):
        dn.SGD(0.1).step(net.parameters())
