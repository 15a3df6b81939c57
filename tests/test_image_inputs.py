"""Images in directly: fit/predict/evaluate take (n, C, H, W) arrays; the input shape comes
from the layers, from ``Network(input_shape=)`` or from the first data; the Reshape-first
path (rows in) is unchanged."""

from __future__ import annotations

import numpy as np
import pytest

import deepnet as dn
from deepnet.callbacks import Callback
from deepnet.io import load_model, load_network, read_tensors, save_model
from deepnet.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Reshape
from tests.conftest import mnist_dir, requires_mnist


def _issue_net(**kw) -> dn.Network:
    """The network of issue 24, written the natural way."""
    return dn.Network([Conv2D(1, 16, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(2704, 10)], **kw)


def _images(n: int, shape=(1, 28, 28), k: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape), dtype=np.float32), rng.integers(0, k, n)


def _small(first=(), backend=None, **kw) -> dn.Network:
    """A small CNN on 1×8×8 images; ``first``: layers before it (Reshape for rows)."""
    layers = [*first, Conv2D(1, 4, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(36, 3)]
    return dn.Network(layers, seed=3, backend=backend, loss="xent", optimizer=dn.Adam(1e-2), **kw)


def _values(net: dn.Network) -> list[np.ndarray]:
    return [dn.to_host(v) for v in net.get_weights().values()]


# ---------------------------------------------------------------- the user's path
def test_the_issues_network_trains_on_images():
    X, y = _images(64)
    net = _issue_net(loss="xent", optimizer="adam")
    hist = net.fit(X, y, epochs=1, batch_size=16, validation_data=(X[:16], y[:16]))
    assert net.input_shape == (1, 28, 28) and net.input_width == 784 and net.output_width == 10
    assert np.isfinite(hist.history["loss"][0]) and "val_loss" in hist.history
    assert net.predict(X).shape == (64, 10)
    assert net.predict_classes(X[:5]).shape == (5,)
    assert set(net.evaluate(X, y)) == {"loss", "accuracy"}
    assert net.predict(X[0]).shape == (1, 10)              # one image, without the batch axis
    assert "input (n, 1, 28, 28)" in net.summary() and "(n, 16, 13, 13)" in net.summary()


@requires_mnist
def test_the_issues_network_learns_real_mnist_images():
    """A few hundred real MNIST digits as (n, 1, 28, 28) views of the rows, one epoch."""
    from deepnet.datasets.mnist import load_mnist_folder

    (X, y), (Xt, yt) = load_mnist_folder(mnist_dir())
    images, test = X[:512].reshape(-1, 1, 28, 28), Xt[:500].reshape(-1, 1, 28, 28)
    assert np.shares_memory(images, X)                      # a view: no copy of the data set
    net = _issue_net(loss="xent", optimizer=dn.Adam(3e-3))
    net.fit(images, y[:512], epochs=2, batch_size=32)
    assert net.evaluate(test, yt[:500])["accuracy"] > 0.6   # chance: 0.1


def test_images_train_exactly_as_rows_through_reshape(backend):
    """The same network without Reshape, given the images, trains bit for bit as the Reshape-first
    one given the rows: shuffled batches, validation data, predict and evaluate."""
    X, y = _images(96, (1, 8, 8), k=3)
    rows = X.reshape(len(X), -1)
    a = _small(backend=backend)
    b = _small((Reshape([1, 8, 8]),), backend=backend)
    ha = a.fit(X, y, epochs=2, batch_size=16, validation_data=(X[:32], y[:32]))
    hb = b.fit(rows, y, epochs=2, batch_size=16, validation_data=(rows[:32], y[:32]))
    for wa, wb in zip(_values(a), _values(b)):
        np.testing.assert_array_equal(wa, wb)
    drop = lambda h: {k: v for k, v in h.history.items() if k != "time"}     # noqa: E731
    assert drop(ha) == drop(hb)
    np.testing.assert_array_equal(a.predict(X), b.predict(rows))
    assert a.evaluate(X, y) == b.evaluate(rows, y)


def test_images_on_the_device_and_streamed_from_the_host_train_as_resident_host_images():
    X, y = _images(96, (1, 8, 8), k=3)
    ref = _small()
    ref.fit(X, y, epochs=2, batch_size=16)
    streamed = _small()
    streamed.fit(X, y, epochs=2, batch_size=16, stream_chunk_rows=32)
    for wa, wb in zip(_values(ref), _values(streamed)):
        np.testing.assert_array_equal(wa, wb)
    from deepnet.backend import get_ops

    ops = get_ops("strict")
    on_device = _small(backend=ops)
    on_device.fit(dn.to_device(X, ops), y, epochs=2, batch_size=16)
    for wa, wb in zip(_values(ref), _values(on_device)):
        np.testing.assert_allclose(wa, wb, rtol=1e-6, atol=1e-7)


def test_input_shape_given_once():
    net = _issue_net(input_shape=(1, 28, 28))
    assert net.input_shape == (1, 28, 28) and "input (n, 1, 28, 28)" in net.summary()
    assert net.predict(_images(4)[0]).shape == (4, 10)
    with pytest.raises(dn.ShapeError) as err:
        _issue_net(input_shape=(1, 32, 32))
    assert str(err.value) == ("Network: inputs (n, 1, 32, 32) do not fit layer 4 (Dense): Dense expects inputs of "
                              "width 2704, got per-sample shape (3600,)")
    with pytest.raises(ValueError, match=r"input_shape must be one sample's shape, a non-empty tuple of positive ints "
                                         r"such as \(1, 28, 28\), got 784"):
        _issue_net(input_shape=784)


def test_the_reshape_first_path_is_unchanged(tmp_path):
    net = dn.Network([Reshape([1, 28, 28]), Conv2D(1, 16, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(2704, 10)])
    assert (net.input_shape, net.input_width) == ((784,), 784)
    assert net.summary().splitlines()[0] == "Network on numpy, float32, input (n, 784)"
    X = _images(8)[0].reshape(8, 784)
    assert net.predict(X).shape == (8, 10)
    with pytest.raises(dn.ShapeError, match=r"^predict: the first layer expects inputs of width 784, got X of shape "
                                            r"\(8, 783\)$"):
        net.predict(X[:, :783])
    save_model(net, tmp_path / "rows.npz")
    _, header = read_tensors(tmp_path / "rows.npz")
    assert "input_shape" not in header                      # rows networks write the header they always have


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("make, X, says", [
    (_issue_net, np.zeros((5, 784), np.float32),
     "fit: the network's first layer Conv2D expects (n, C, H, W) images with C=1, got rows (5, 784): reshape the "
     "data (X.reshape(len(X), 1, 28, 28)) or start the network with Reshape((1, 28, 28))"),
    (lambda: dn.Network([Conv2D(3, 16, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(2704, 10)]),
     np.zeros((5, 1, 28, 28), np.float32),
     "fit: the network's first layer Conv2D expects (n, C, H, W) images with C=3, got X of shape (5, 1, 28, 28)"),
    (lambda: dn.Network([Conv2D(1, 16, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(2000, 10)]),
     np.zeros((5, 1, 28, 28), np.float32),
     "fit: inputs (5, 1, 28, 28) do not fit layer 4 (Dense): Dense expects inputs of width 2000, got per-sample "
     "shape (2704,)"),
    (lambda: dn.Network([Dense(784, 10)]), np.zeros((5, 1, 28, 28), np.float32),
     "fit: the network's first layer Dense takes rows (n, 784), got X of shape (5, 1, 28, 28): flatten the data "
     "(X.reshape(len(X), -1))"),
    (lambda: dn.Network([Reshape([1, 28, 28]), Conv2D(1, 16, 3), Flatten(), Dense(10816, 10)]),
     np.zeros((5, 1, 28, 28), np.float32),
     "fit: the network's first layer Reshape takes rows (n, 784), got X of shape (5, 1, 28, 28): flatten the data "
     "(X.reshape(len(X), -1))"),
    (lambda: _issue_net(input_shape=(1, 28, 28)), np.zeros((5, 1, 27, 27), np.float32),
     "fit: the network takes inputs (n, 1, 28, 28) (its input_shape), got X of shape (5, 1, 27, 27)"),
], ids=["rows-to-conv", "channels", "dense-width", "images-to-dense", "images-to-reshape", "other-size"])
def test_errors_name_the_layer_and_the_shapes_given(make, X, says):
    net = make()
    net.loss, net.optimizer = "xent", "sgd"
    with pytest.raises(dn.ShapeError) as err:
        net.fit(X, np.zeros(len(X), np.int64))
    assert str(err.value) == says


def test_the_first_data_fixes_the_input_shape():
    net = _issue_net()
    assert net.input_shape is None and net.output_width == 10
    assert "input (n, ?): from the first data" in net.summary()
    net.predict(_images(3)[0])
    assert net.input_shape == (1, 28, 28)
    with pytest.raises(dn.ShapeError) as err:
        net.predict(np.zeros((2, 784), np.float32))
    assert str(err.value) == ("predict: the network takes inputs (n, 1, 28, 28) (from the first data it was given), "
                              "got X of shape (2, 784): reshape the data (X.reshape(len(X), 1, 28, 28))")


def test_images_with_a_non_finite_value_are_refused_naming_it():
    X, y = _images(6, (1, 8, 8), k=3)
    X[4, 0, 2, 5] = np.nan
    with pytest.raises(ValueError, match=r"X contains 1 non-finite value\(s\) \(NaN or inf\); the first is "
                                         r"X\[4, 0, 2, 5\] = nan"):
        _small().fit(X, y)


# ---------------------------------------------------------------- what follows the data
class _StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, net, step, logs):
        if step == self.step:
            net.stop_training = True


def test_save_load_and_resume_of_a_network_given_images(tmp_path):
    X, y = _images(96, (1, 8, 8), k=3)
    ref = _small()
    ref.fit(X, y, epochs=2, batch_size=16)
    save_model(ref, tmp_path / "m.npz")
    _, header = read_tensors(tmp_path / "m.npz")
    assert header["input_shape"] == [1, 8, 8]
    back = load_model(tmp_path / "m.npz")
    assert back.input_shape == (1, 8, 8)
    np.testing.assert_array_equal(back.predict(X), ref.predict(X))

    stopped = _small()
    stopped.fit(X, y, epochs=2, batch_size=16, checkpoint=tmp_path / "ck", callbacks=[_StopAt(8)])
    resumed = _small()
    resumed.fit(X, y, epochs=2, batch_size=16, checkpoint=tmp_path / "ck", resume=True)
    for wa, wb in zip(_values(ref), _values(resumed)):
        np.testing.assert_array_equal(wa, wb)
    from deepnet.checkpoint import Checkpointer

    last = load_network(Checkpointer(tmp_path / "ck").last_path())
    assert last.input_shape == (1, 8, 8)
    np.testing.assert_array_equal(last.predict(X), ref.predict(X))


@pytest.mark.cupy_shaped
@pytest.mark.parametrize("graphs", ["on", "epoch"])
def test_the_captured_step_gathers_images_into_its_fixed_buffers(graphs):
    """A captured step (or epoch) on the CuPy-shaped backend: images, shuffled, train as the
    plain loop does."""
    shaped = pytest.importorskip("deepnet.backend.cupy_shaped")
    try:
        shaped.FusedCupyShapedOps()
    except dn.BackendError as err:
        pytest.skip(str(err))
    X, y = _images(96, (1, 8, 8), k=3)
    runs = []
    for mode in ("off", graphs):
        net = _small(backend=shaped.FusedCupyShapedOps())
        net.fit(X, y, epochs=2, batch_size=16, graphs=mode, check_finite="off")
        runs.append(_values(net))
    for wa, wb in zip(*runs):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)


def test_one_rank_with_a_communicator_trains_images_as_without():
    from deepnet.distributed import LocalCommunicator

    X, y = _images(96, (1, 8, 8), k=3)
    plain, local = _small(), _small()
    plain.fit(X, y, epochs=2, batch_size=16)
    local.fit(X, y, epochs=2, batch_size=16, communicator=LocalCommunicator())
    for wa, wb in zip(_values(plain), _values(local)):
        np.testing.assert_array_equal(wa, wb)


def test_to_torch_and_from_torch_with_image_inputs():
    torch = pytest.importorskip("torch")
    from deepnet.interop import from_torch, to_torch

    X, y = _images(32, (1, 8, 8), k=3)
    net = _small()
    net.fit(X, y, epochs=1, batch_size=16)
    module = to_torch(net)
    with torch.no_grad():
        out = module(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(out, net.predict(X), rtol=1e-5, atol=1e-5)
    back = from_torch(module)
    np.testing.assert_allclose(back.predict(X), net.predict(X), rtol=1e-6, atol=1e-6)
    assert back.input_shape == (1, 8, 8)


def test_deepnet_predict_gives_rows_of_a_file_to_a_model_that_takes_images(tmp_path, capsys, monkeypatch):
    """``deepnet predict`` reads rows (files hold rows) and hands them to a network saved from
    Python that takes images, viewed in its input shape."""
    from deepnet.cli import main

    X, y = _images(32, (1, 8, 8), k=3)
    net = _small()
    net.fit(X, y, epochs=1, batch_size=16)
    save_model(net, tmp_path / "m.npz")
    np.save(tmp_path / "rows.npy", X[:4].reshape(4, -1))
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "m.npz", "rows.npy"]) == 0
    got = [int(line.split("\t")[1]) for line in capsys.readouterr().out.splitlines()]
    assert got == net.predict_classes(X[:4]).tolist()


def test_a_model_saved_before_it_saw_data_evaluates_on_its_data_sets_images_and_predict_says_why_not(
        tmp_path, capsys):
    """No input shape recorded: ``evaluate`` views the data set's rows as (n, 1, H, W) images;
    ``predict`` (no data set to ask) refuses in one line and never names a width of None."""
    from deepnet.cli import main
    from deepnet.datasets import load_dataset

    layers = lambda: [Conv2D(1, 4, 3), ReLU(), Flatten(), Dense(144, 10)]     # noqa: E731
    save_model(dn.Network(layers(), seed=0, loss="xent"), tmp_path / "m.npz")
    assert main(["evaluate", str(tmp_path / "m.npz")]) == 0
    data = load_dataset("digits", seed=0)
    want = dn.Network(layers(), seed=0, loss="xent").evaluate(data.X_test.reshape(-1, 1, 8, 8), data.y_test)
    assert f"accuracy {100 * want['accuracy']:.2f}%" in capsys.readouterr().out
    np.save(tmp_path / "rows.npy", data.X_test[:3])
    assert main(["predict", str(tmp_path / "m.npz"), str(tmp_path / "rows.npy")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"deepnet: error: {tmp_path / 'm.npz'} records no input shape") and "None" not in err
    save_model(dn.Network(layers(), seed=0), tmp_path / "d.npz", extra={"image_shape": [8, 8], "scale": "unit"})
    assert main(["predict", str(tmp_path / "d.npz"), str(tmp_path / "rows.npy")]) == 0
    got = [int(line.split("\t")[1]) for line in capsys.readouterr().out.splitlines()]
    assert got == dn.Network(layers(), seed=0).predict_classes(data.X_test[:3].reshape(-1, 1, 8, 8)).tolist()


def test_any_per_sample_shape_through_flatten(backend):
    """(n, 4, 4) arrays into a network starting with Flatten: its input shape comes from the data."""
    rng = np.random.default_rng(2)
    X, y = rng.random((48, 4, 4), dtype=np.float32), rng.integers(0, 3, 48)
    net = dn.Network([Flatten(), Dense(16, 3)], seed=1, backend=backend, loss="xent", optimizer="sgd")
    rows = dn.Network([Dense(16, 3)], seed=1, backend=backend, loss="xent", optimizer="sgd")
    net.fit(X, y, epochs=2, batch_size=8)
    rows.fit(X.reshape(48, 16), y, epochs=2, batch_size=8)
    assert net.input_shape == (4, 4)
    for wa, wb in zip(_values(net), _values(rows)):
        np.testing.assert_array_equal(wa, wb)


def test_images_are_used_in_place_not_copied():
    """float32 images on a host backend reach the training loop as the caller's array."""
    from deepnet.backend import get_ops
    from deepnet.training.data import device_inputs

    X = _images(16, (1, 8, 8))[0]
    assert np.shares_memory(device_inputs(get_ops("numpy"), X, (1, 8, 8), "float32", "fit"), X)


def test_a_network_starting_with_batchnorm_takes_images_given_input_shape():
    from deepnet.layers import BatchNorm

    X, y = _images(32, (1, 8, 8), k=3)
    net = dn.Network([BatchNorm(1), Conv2D(1, 4, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(36, 3)],
                     input_shape=(1, 8, 8), loss="xent", optimizer="sgd")
    net.fit(X, y, epochs=1, batch_size=16)
    assert net.input_shape == (1, 8, 8) and net.predict(X).shape == (32, 3)
