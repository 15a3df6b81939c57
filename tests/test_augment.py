"""Augmentation layers (RandomCrop, RandomShift, RandomFlip): what they compute, their
backward, evaluation as the identity, the refusal of rows, reproducible draws from the
network's generator, exact resume from a checkpoint and the captured step.  The layer
contract on every backend is in tests/test_layer_harness.py (IMAGE_BUILTIN)."""

from __future__ import annotations

import numpy as np
import pytest

import deepnet as dn
from deepnet import GradCheckError, check_layer, to_device, to_host
from deepnet.checkpoint import Checkpointer
from deepnet.io import load_model, save_model
from tests.test_graphs import _same_run


def images(n=6, c=2, h=5, w=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, c, h, w)).astype(np.float32)


def crop_reference(x, top, left, size, pad):
    """Pad by ``pad``, crop ``size`` at (top + pad, left + pad) per sample (a plain loop)."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = size
    return np.stack([xp[i, :, t + pad:t + pad + oh, s + pad:s + pad + ow] for i, (t, s) in enumerate(zip(top, left))])


@pytest.mark.parametrize("make, size", [(lambda: dn.RandomShift(2), (5, 4)),
                                        (lambda: dn.RandomCrop([3, 4], padding=1), (3, 4))])
def test_crop_is_the_padded_crop_at_the_drawn_offsets(backend, make, size):
    layer = make()
    layer.to(backend)
    x = images(n=40)
    y = to_host(layer.forward(to_device(x), training=True))
    top, left = to_host(layer._top), to_host(layer._left)
    pad = layer.padding
    assert y.shape == (40, 2, *size)
    np.testing.assert_array_equal(y, crop_reference(x, top, left, size, pad))
    # every offset the padding allows is drawn (40 samples, at most 5 values per axis)
    assert set(top.tolist()) == set(range(-pad, 5 + pad - size[0] + 1))
    assert set(left.tolist()) == set(range(-pad, 4 + pad - size[1] + 1))
    # backward: the error scattered into the padded frame, the padding cropped off
    dy = np.random.default_rng(1).normal(size=y.shape).astype(np.float32)
    want = np.zeros((40, 2, 5 + 2 * pad, 4 + 2 * pad), np.float32)
    for i, (t, s) in enumerate(zip(top, left)):
        want[i, :, t + pad:t + pad + size[0], s + pad:s + pad + size[1]] = dy[i]
    got = to_host(layer.backward(to_device(dy)))
    np.testing.assert_array_equal(got, want[:, :, pad:pad + 5, pad:pad + 4])


@pytest.mark.parametrize("mode, axes", [("horizontal", (3,)), ("vertical", (2,)), ("both", (3, 2))])
def test_flip_mirrors_about_half_the_samples(backend, mode, axes):
    layer = dn.RandomFlip(mode)
    layer.to(backend)
    x = images(n=400)
    y = to_host(layer.forward(to_device(x), training=True))
    flips = to_host(layer._flips)
    assert flips.shape == (400, len(axes))
    assert 0.4 < flips.mean() < 0.6
    want = x.copy()
    for k, axis in enumerate(axes):
        want = np.where(flips[:, k].reshape(-1, 1, 1, 1), np.flip(want, axis=axis), want)
    np.testing.assert_array_equal(y, want)
    dy = np.random.default_rng(2).normal(size=y.shape).astype(np.float32)
    dx = to_host(layer.backward(to_device(dy)))
    # a flip is its own transpose: <flip(x), dy> = <x, flip(dy)>
    np.testing.assert_allclose(np.sum(y * dy), np.sum(x * dx), rtol=1e-5)


@pytest.mark.parametrize("make", [lambda: dn.RandomShift(2), lambda: dn.RandomFlip("both"),
                                  lambda: dn.RandomCrop(padding=1)])
def test_evaluation_is_the_identity(backend, make):
    layer = make()
    layer.to(backend)
    x = images()
    np.testing.assert_array_equal(to_host(layer.forward(to_device(x), training=False)), x)


def test_evaluation_of_a_smaller_crop_is_the_centre():
    x = images(h=6, w=6)
    np.testing.assert_array_equal(dn.RandomCrop([4, 2]).forward(x, training=False), x[:, :, 1:5, 2:4])


@pytest.mark.parametrize("make", [lambda: dn.RandomShift(2), dn.RandomFlip,
                                  lambda: dn.RandomCrop([3, 3], padding=1)])
def test_rows_are_refused_naming_the_image_shape(make):
    layer = make()
    name = type(layer).__name__
    with pytest.raises(dn.ShapeError,
                       match=rf"^{name} expects NCHW images \(n, C, H, W\), got an input of shape \(4, 784\)$"):
        layer.forward(np.zeros((4, 784), np.float32), training=True)
    with pytest.raises(dn.ShapeError,
                       match=rf"^{name} expects per-sample images \(C, H, W\), got per-sample shape \(784,\)"):
        layer.output_shape((784,))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError,
                       match=r"^RandomFlip: mode must be one of 'horizontal', 'vertical', 'both', got 'diagonal'$"):
        dn.RandomFlip("diagonal")
    with pytest.raises(ValueError, match=r"^RandomShift: max_shift must be an int ≥ 0, got -1$"):
        dn.RandomShift(-1)
    with pytest.raises(ValueError, match=r"^RandomCrop: padding must be an int ≥ 0, got 1.5$"):
        dn.RandomCrop(padding=1.5)
    with pytest.raises(ValueError, match=r"^RandomCrop: size must be an int ≥ 1 or a pair of them, got \[0, 3\]$"):
        dn.RandomCrop([0, 3])
    with pytest.raises(dn.ShapeError,
                       match=r"^RandomCrop: crop size 8x3 is larger than the 5x4 input padded by 1 \(7x6\)$"):
        dn.RandomCrop([8, 3], padding=1).forward(images(), training=True)


# ---------------------------------------------------------------- a wrong backward is caught
class _ShiftForgetsToNegate(dn.RandomShift):
    def backward(self, grad_output, need_input_grad=True):
        top, left, hw = self._need_cache()
        return self.ops.crop_at(grad_output, top, left, hw)      # the same shift again, not its transpose


class _FlipPassesThrough(dn.RandomFlip):
    def backward(self, grad_output, need_input_grad=True):
        self._need_cache()
        return grad_output                                       # forgets to flip the error back


@pytest.mark.parametrize("wrong", [lambda: _ShiftForgetsToNegate(2), lambda: _FlipPassesThrough("both")])
def test_gradient_check_catches_a_wrong_backward(wrong):
    x = images(n=8).astype(np.float64)
    with pytest.raises(GradCheckError):
        check_layer(wrong(), x)


# ---------------------------------------------------------------- inside a network
def digits(n=240, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 36), dtype=np.float32), rng.integers(0, 3, n)


def image_net(seed=1):
    return dn.Network([dn.Reshape([1, 6, 6]), dn.RandomShift(1), dn.RandomFlip("vertical"),
                       dn.Conv2D(1, 4, 3, padding=1), dn.ReLU(), dn.Flatten(), dn.Dense(144, 3)],
                      seed=seed, loss="xent", optimizer=dn.Adam(0.01))


def test_the_network_generator_draws_and_a_seed_repeats_the_augmentations():
    X, y = digits()
    a, b, c = image_net(seed=1), image_net(seed=1), image_net(seed=2)
    for net in (a, b, c):
        net.fit(X, y, epochs=2, batch_size=16)
    assert a.layers[1].rng is a.device_rng() and a.layers[2].rng is a.device_rng()
    for k, v in a.get_weights().items():
        np.testing.assert_array_equal(b.get_weights()[k], v)
    assert to_host(a.layers[1]._top).tolist() != to_host(c.layers[1]._top).tolist()
    # augmentation changes training: without it the same seed trains to other weights
    plain = dn.Network([dn.Reshape([1, 6, 6]), dn.Conv2D(1, 4, 3, padding=1), dn.ReLU(), dn.Flatten(),
                        dn.Dense(144, 3)], seed=1, loss="xent", optimizer=dn.Adam(0.01))
    plain.fit(X, y, epochs=2, batch_size=16)
    conv_weight = [list(net.get_weights().values())[0] for net in (plain, a)]
    assert conv_weight[0].shape == conv_weight[1].shape and not np.array_equal(*conv_weight)


def test_predict_and_evaluate_do_not_augment():
    X, y = digits()
    net = image_net()
    net.fit(X, y, epochs=1, batch_size=16)
    p1, p2 = net.predict(X), net.predict(X)
    np.testing.assert_array_equal(p1, p2)
    stripped = dn.Network([dn.Reshape([1, 6, 6]), *net.layers[3:]])
    np.testing.assert_array_equal(stripped.predict(X), p1)


def test_stop_mid_epoch_and_resume_is_bit_identical(tmp_path):
    """The augmentation stream resumes where it stopped, as dropout's does."""
    X, y = digits()
    ref = image_net()
    ref.fit(X, y, epochs=3, batch_size=16)

    class StopAt(dn.Callback):
        def on_batch_end(self, net, step, logs):
            if step == 22:                      # epoch 2, batch 8 of 15
                net.stop_training = True

    image_net().fit(X, y, epochs=3, batch_size=16, callbacks=[StopAt()],
                    checkpoint=Checkpointer(tmp_path, every_steps=5))
    resumed = image_net()
    resumed.fit(X, y, epochs=3, batch_size=16, checkpoint=Checkpointer(tmp_path, every_steps=5), resume=True)
    for k, v in ref.get_weights().items():
        np.testing.assert_array_equal(resumed.get_weights()[k], v)


def test_save_and_load_a_model_with_augmentation(tmp_path):
    X, y = digits()
    net = dn.Network([dn.Reshape([1, 6, 6]), dn.RandomCrop([5, 5], padding=1), dn.RandomShift(2),
                      dn.RandomFlip("both"), dn.Flatten(), dn.Dense(25, 3)], seed=0, loss="xent",
                     optimizer=dn.SGD(0.1))
    net.fit(X, y, epochs=1, batch_size=32)
    loaded = load_model(save_model(net, tmp_path / "aug.npz"))
    assert [type(L) for L in loaded.layers] == [type(L) for L in net.layers]
    assert [L.get_config() for L in loaded.layers] == [L.get_config() for L in net.layers]
    assert loaded.layers[1].get_config() == {"size": [5, 5], "padding": 1}
    assert loaded.layers[2].get_config() == {"max_shift": 2}
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))


def test_captured_step_trains_exactly_as_the_plain_loop(backend):
    """Augmentation between layers (so its backward runs) in the captured step."""
    _same_run(backend, lambda: dn.SGD(0.05, momentum=0.9),
              extra=lambda: (dn.Reshape([1, 4, 4]), dn.RandomShift(1), dn.RandomFlip("both"), dn.Flatten()))


# ---------------------------------------------------------------- the command line
def test_cli_trains_a_cnn_with_augmentation_and_resumes_it(tmp_path, capsys):
    from deepnet.cli import main

    out = str(tmp_path / "run")
    args = ["train", "--model", "cnn", "--dataset", "digits", "--augment", "shift1,vflip", "--batch-size", "64",
            "--out", out, "--quiet"]
    assert main([*args, "--epochs", "1", "--checkpoint-every", "5"]) == 0
    net = load_model(tmp_path / "run" / "model.npz")
    assert [type(L).__name__ for L in net.layers[:3]] == ["Reshape", "RandomShift", "RandomFlip"]
    assert net.layers[1].max_shift == 1 and net.layers[2].mode == "vertical"
    # resuming takes the recorded augmentation over, and refuses another one
    assert main(["train", "--epochs", "2", "--resume", "--out", out, "--quiet"]) == 0
    assert [type(L).__name__ for L in load_model(tmp_path / "run" / "model.npz").layers[1:3]] == ["RandomShift",
                                                                                                "RandomFlip"]
    assert main(["train", "--epochs", "3", "--resume", "--augment", "shift2", "--out", out, "--quiet"]) != 0
    assert "--augment" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--augment", "shift2"], "--augment shift2: augmentation layers take images, so they need --model cnn"),
    (["--model", "cnn", "--augment", "shift2,zoom"],
     "--augment shift2,zoom: expected comma-separated shift<N> (N ≥ 1 pixels), flip or vflip, got 'zoom'"),
])
def test_cli_refuses_augmentation_it_cannot_do(tmp_path, capsys, argv, message):
    from deepnet.cli import main

    assert main(["train", "--epochs", "1", "--out", str(tmp_path), *argv]) != 0
    assert message in capsys.readouterr().err
