"""Layers on batches of NCHW images: elementwise layers take any rank, BatchNorm is channel-wise
on images, and a network walks per-sample shapes from rows to images and back."""

from __future__ import annotations

import numpy as np
import pytest

import deepnet as dn
from deepnet.gradcheck import check_layer
from deepnet.layers import BatchNorm, Dropout


def _x(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape)


def _layer(layer, backend):
    layer.to(backend, "float64")
    if not layer.initialized:
        layer.initialize(np.random.default_rng(0))
    return layer


@pytest.mark.parametrize("make", [dn.ReLU, dn.Sigmoid, dn.Tanh, lambda: dn.LeakyReLU(0.1), dn.ELU, dn.GELU],
                         ids=["relu", "sigmoid", "tanh", "leaky", "elu", "gelu"])
def test_activations_take_images(backend, make):
    report = check_layer(_layer(make(), backend), dn.to_device(_x((2, 3, 4, 5)), backend, dtype="float64"))
    assert report.checked["input"] > 0          # check_layer raises GradCheckError on a mismatch


def test_dropout_takes_images(backend):
    layer = _layer(Dropout(0.4), backend)
    x = dn.to_device(np.ones((2, 3, 4, 5)), backend, dtype="float64")
    y = dn.to_host(layer.forward(x, training=True))
    assert y.shape == (2, 3, 4, 5) and set(np.unique(y)) <= {0.0, 1 / 0.6}
    np.testing.assert_array_equal(dn.to_host(layer.backward(dn.to_device(np.ones((2, 3, 4, 5)), backend,
                                                                           dtype="float64"))), y)


def test_batchnorm_on_images_is_per_channel(backend):
    """Statistics per channel over batch and pixels: the same as torch.nn.BatchNorm2d (training
    and evaluation, running averages with deepnet's momentum 0.9 = torch's 0.1), and its gradients."""
    torch = pytest.importorskip("torch")
    x = _x((4, 3, 5, 2))
    bn = _layer(BatchNorm(3), backend)
    ref = torch.nn.BatchNorm2d(3, momentum=0.1, eps=1e-5).double().train()
    y = dn.to_host(bn.forward(dn.to_device(x, backend, dtype="float64"), training=True))
    np.testing.assert_allclose(y, ref(torch.from_numpy(x)).detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(dn.to_host(bn.running_var), ref.running_var.numpy(), atol=1e-12)
    ref.eval()
    y = dn.to_host(bn.forward(dn.to_device(x, backend, dtype="float64")))
    np.testing.assert_allclose(y, ref(torch.from_numpy(x)).detach().numpy(), atol=1e-12)
    report = check_layer(_layer(BatchNorm(3), backend), dn.to_device(x, backend, dtype="float64"))
    assert set(report.checked) == {"input", "gamma", "beta"}


def test_batchnorm_shape_errors():
    bn = _layer(BatchNorm(3), "numpy")
    with pytest.raises(dn.ShapeError, match=r"BatchNorm\(3\) expects rows \(n, 3\) or images \(n, 3, H, W\), "
                                            r"got an input of shape \(2, 4, 5, 5\)"):
        bn.forward(np.zeros((2, 4, 5, 5)))
    with pytest.raises(dn.ShapeError, match=r"Softmax works on rows"):
        dn.Softmax().output_shape((3, 4, 4))


def test_elementwise_layers_refuse_a_batch_of_scalars():
    with pytest.raises(dn.ShapeError, match=r"ReLU expects a batch \(n, \.\.\.\) of rank 2 or more, got an input "
                                            r"of shape \(5,\)"):
        _layer(dn.ReLU(), "numpy").forward(np.zeros(5))


def test_a_convolutional_network_goes_to_pytorch_and_back():
    """to_torch gives torch.nn.Conv2d / BatchNorm2d / MaxPool2d / ... computing the same function;
    from_torch rebuilds the same deepnet network."""
    torch = pytest.importorskip("torch")
    from deepnet.interop import from_torch, to_torch

    layers = [dn.Reshape([1, 12, 10]), dn.Conv2D(1, 4, 3, padding="same"), dn.BatchNorm(4), dn.ReLU(),
              dn.MaxPool2D(2), dn.Conv2D(4, 6, [2, 3], stride=[1, 2], dilation=[2, 1], padding=[1, 0], groups=2),
              dn.AvgPool2D(2, stride=1, padding=1), dn.GlobalAvgPool2D(), dn.Dense(6, 3)]
    net = dn.Network(layers, seed=0)
    X = np.random.default_rng(0).random((5, 120), dtype=np.float32)
    net.fit(X, np.arange(5) % 3, epochs=1, batch_size=5, loss="xent", optimizer="adam")   # running statistics move
    module = to_torch(net)
    kinds = [type(m).__name__ for m in module]
    assert kinds[:5] == ["Unflatten", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] and kinds[-1] == "Linear"
    want = dn.to_host(net.predict(X))
    np.testing.assert_allclose(module(torch.from_numpy(X)).detach().numpy(), want, rtol=1e-5, atol=1e-6)
    back = from_torch(module)
    np.testing.assert_array_equal(dn.to_host(back.predict(X)), want)
    assert [type(layer).__name__ for layer in back.layers] == [type(layer).__name__ for layer in layers]


def test_network_shape_errors_name_the_layer():
    with pytest.raises(dn.ShapeError, match=r"layer 2 \(Dense\): Dense expects inputs of width 16, got per-sample "
                                            r"shape \(4, 2, 2\): put Flatten before it"):
        dn.Network([dn.Reshape([1, 4, 4]), dn.Conv2D(1, 4, 3), dn.Dense(16, 2)])
    with pytest.raises(dn.ShapeError, match=r"the last layer outputs per-sample shape \(4, 2, 2\).*end with Flatten"):
        dn.Network([dn.Reshape([1, 4, 4]), dn.Conv2D(1, 4, 3)])
    net = dn.Network([dn.Reshape([1, 4, 4]), dn.Conv2D(1, 4, 3), dn.BatchNorm(4), dn.Flatten(), dn.Dense(16, 2)])
    assert (net.input_width, net.output_width) == (16, 2) and "(n, 4, 2, 2)" in net.summary()


def test_a_convolutional_run_resumes_exactly(tmp_path):
    """Checkpoints and resume cover the image layers: stopped inside epoch 2 and resumed, the
    same weights (and BatchNorm statistics) as one uninterrupted run."""
    from deepnet.callbacks import Callback

    def make():
        return dn.Network([dn.Reshape([1, 6, 6]), dn.Conv2D(1, 3, 3, padding="same"), dn.BatchNorm(3), dn.ReLU(),
                           dn.MaxPool2D(2), dn.Flatten(), dn.Dropout(0.2), dn.Dense(27, 3)],
                          seed=4, loss="xent", optimizer=dn.Adam(1e-2))

    class StopAt(Callback):
        def on_batch_end(self, net, step, logs):
            if step == 7:
                net.stop_training = True

    rng = np.random.default_rng(0)
    X, y = rng.random((40, 36), dtype=np.float32), rng.integers(0, 3, 40)
    ref = make()
    ref.fit(X, y, epochs=3, batch_size=8)
    run = make()
    run.fit(X, y, epochs=3, batch_size=8, callbacks=[StopAt()], checkpoint=tmp_path)
    again = make()
    again.fit(X, y, epochs=3, batch_size=8, checkpoint=tmp_path, resume=True)
    w0, w1 = ref.get_weights(), again.get_weights()
    for k in w0:
        np.testing.assert_array_equal(dn.to_host(w0[k]), dn.to_host(w1[k]), err_msg=k)
    np.testing.assert_array_equal(dn.to_host(ref.layers[2].running_var), dn.to_host(again.layers[2].running_var))


def test_backward_visits_layers_below_the_first_trained_one_unless_they_only_hand_errors_down():
    """A Reshape (or Dropout, ReLU, ...) below the first layer with parameters is skipped; a
    layer that may have side effects in backward (the default) is still called."""
    calls = []

    class Probe(dn.Layer):
        def forward(self, x, training=False):
            self._cache = True
            return x * 1.0

        def backward(self, grad_output, need_input_grad=True):
            calls.append(need_input_grad)
            return grad_output if need_input_grad else None

    X, y = np.random.default_rng(0).random((8, 4), dtype=np.float32), np.arange(8) % 2
    net = dn.Network([Probe(), dn.Dense(4, 3), dn.ReLU(), dn.Dense(3, 2)], loss="xent", optimizer="sgd")
    net.fit(X, y, epochs=1, batch_size=4)
    assert net.lowest_trained == 0 and calls == [False, False]
    cnn = dn.Network([dn.Reshape([1, 2, 2]), dn.Conv2D(1, 2, 2), dn.Flatten(), dn.Dense(2, 2)])
    mlp = dn.Network([dn.Dropout(0.2), dn.Dense(4, 2)])
    assert cnn.lowest_trained == 1 and mlp.lowest_trained == 1


def test_from_torch_refuses_what_deepnet_cannot_compute():
    torch = pytest.importorskip("torch")
    from deepnet.interop import from_torch

    nn = torch.nn
    for module, what in [(nn.Sequential(nn.Unflatten(1, (1, 4, 4)), nn.AvgPool2d(2, divisor_override=1), nn.Flatten(),
                                        nn.Linear(4, 2)), "divisor_override"),
                         (nn.Sequential(nn.Unflatten(1, (2, 2, 2)), nn.BatchNorm2d(2, track_running_stats=False),
                                        nn.Flatten(), nn.Linear(8, 2)), "track_running_stats=False"),
                         (nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, affine=False)), "affine=False")]:
        with pytest.raises(ValueError, match=what):
            from_torch(module)
