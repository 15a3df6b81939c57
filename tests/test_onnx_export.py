"""ONNX export: each model passes onnx.checker and gives deepnet's outputs in ONNX Runtime."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import deepnet as dn
from deepnet.io import load_network, save_model
from deepnet.layers.base import Layer
from deepnet.onnx_export import OnnxExportError, onnx_model
from deepnet.presets import cnn_layers, mlp_layers, resnet_layers, seed_layers
from tests.conftest import mnist_dir, requires_mnist

onnx = pytest.importorskip("onnx", reason="ONNX export needs the onnx package (pip install 'deepnet[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="running the exported models needs onnxruntime (deepnet[onnx])")


def run_onnx(model, X):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": X})[0]


def assert_same_outputs(net, X, input_shape=None, tol=1e-5):
    """checker passes; ONNX Runtime's outputs equal deepnet's (evaluation mode) to ``tol``."""
    model = onnx_model(net, input_shape=input_shape)
    onnx.checker.check_model(model, full_check=True)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    want = net.predict(X)
    got = run_onnx(model, X)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    return model


def calibrate_batchnorm(net, X):
    """Running statistics from a batch of real data (as after training), so activations keep their scale."""
    norms = [layer for _, layer in _walk(net) if isinstance(layer, dn.BatchNorm)]
    saved = [bn.momentum for bn in norms]
    for bn in norms:
        bn.momentum = 0.0
    net.forward(net.ops.xp.asarray(X), training=True)
    net.clear_cache()
    for bn, m in zip(norms, saved):
        bn.momentum = m


def _walk(net):
    for i, layer in enumerate(net.layers):
        yield from layer.walk(str(i))


# ---------------------------------------------------------------------------- real MNIST
@pytest.fixture(scope="module")
def mnist():
    from deepnet.datasets import load_dataset
    data = load_dataset("mnist", str(mnist_dir()), download=False)
    return data.X_train[:2000].astype(np.float32), data.y_train[:2000], data.X_test[:500].astype(np.float32)


@requires_mnist
def test_mlp_on_mnist(mnist):
    X, y, Xt = mnist
    net = dn.Network(mlp_layers("784-64-32-10", activation="tanh") + [dn.Softmax()], seed=0,
                     loss="mse", optimizer=dn.Adam(0.003))
    net.fit(X, y, epochs=2, batch_size=50)
    assert_same_outputs(net, Xt)


@requires_mnist
def test_cnn_preset_on_mnist(mnist):
    X, y, Xt = mnist
    net = dn.Network(cnn_layers((28, 28), 10, channels=(8, 16), batchnorm=True), seed=0, loss="xent",
                     optimizer=dn.Adam(0.003))
    net.fit(X[:600], y[:600], epochs=1, batch_size=60)
    assert_same_outputs(net, Xt[:200])


@requires_mnist
def test_resnet_preset_on_mnist(mnist):
    X, _, Xt = mnist
    net = dn.Network(resnet_layers((28, 28), 10), seed=0)        # ResNet-20
    calibrate_batchnorm(net, X[:256])
    assert_same_outputs(net, Xt[:64])


@requires_mnist
def test_seed_network_with_its_own_export(mnist):
    """The notebook's preset layer (a Dense subclass) exports through its to_onnx method."""
    _, _, Xt = mnist
    assert_same_outputs(dn.Network(seed_layers(shortcut=True), seed=0), Xt[:100])


# ---------------------------------------------------------------------------- each layer kind
IMG = (3, 9, 10)

CASES = {
    "dense": ([dn.Dense(12, 5)], (12,)),
    "dense-no-bias": ([dn.Dense(12, 5, bias=False)], (12,)),
    "identity": ([dn.Identity()], (12,)),
    "sigmoid": ([dn.Sigmoid()], (12,)),
    "tanh": ([dn.Tanh()], (12,)),
    "relu": ([dn.ReLU()], (12,)),
    "softmax": ([dn.Dense(12, 6), dn.Softmax()], (12,)),
    "leaky-relu": ([dn.LeakyReLU(0.2)], (12,)),
    "gelu": ([dn.GELU()], (12,)),
    "elu": ([dn.ELU(0.7)], (12,)),
    "softplus": ([dn.Softplus()], (12,)),
    "dropout": ([dn.Dropout(0.5)], (12,)),
    "batchnorm-rows": ([dn.BatchNorm(12)], (12,)),
    "batchnorm-images": ([dn.BatchNorm(3)], IMG),
    "layernorm": ([dn.LayerNorm(12)], (12,)),
    "conv": ([dn.Conv2D(3, 4, 3)], IMG),
    "conv-stride2-pad": ([dn.Conv2D(3, 4, 3, stride=2, padding=1)], IMG),
    "conv-rect": ([dn.Conv2D(3, 4, (3, 2), stride=(1, 2), padding=(2, 1))], IMG),
    "conv-same": ([dn.Conv2D(3, 4, 4, padding="same")], IMG),
    "conv-dilation": ([dn.Conv2D(3, 4, 3, dilation=2, padding=1)], IMG),
    "conv-groups": ([dn.Conv2D(4, 6, 3, groups=2, bias=False)], (4, 9, 10)),
    "conv-depthwise": ([dn.Conv2D(4, 4, 3, groups=4, padding=1)], (4, 9, 10)),
    "maxpool": ([dn.MaxPool2D(2)], IMG),
    "maxpool-overlap-pad": ([dn.MaxPool2D(3, stride=2, padding=1)], IMG),
    "avgpool": ([dn.AvgPool2D(2)], IMG),
    "avgpool-pad": ([dn.AvgPool2D(3, stride=2, padding=1)], IMG),
    "global-avgpool": ([dn.GlobalAvgPool2D()], IMG),
    "flatten": ([dn.Flatten()], IMG),
    "reshape": ([dn.Reshape([3, 2, 2])], (12,)),
    "random-crop-center": ([dn.RandomCrop((6, 7))], IMG),
    "random-crop-same": ([dn.RandomCrop(padding=2)], IMG),
    "random-shift": ([dn.RandomShift(2)], IMG),
    "random-flip": ([dn.RandomFlip("both")], IMG),
    "sequential": ([dn.Sequential(dn.Dense(12, 8), dn.ReLU(), dn.Dense(8, 4))], (12,)),
    "residual-identity": ([dn.Residual(dn.Sequential(dn.Dense(12, 12), dn.Tanh()))], (12,)),
    "residual-projection": ([dn.Residual(dn.Sequential(dn.Conv2D(3, 4, 3, stride=2, padding=1), dn.BatchNorm(4)),
                                         dn.Conv2D(3, 4, 1, stride=2))], IMG),
    "concatenate-features": ([dn.Concatenate(dn.Dense(12, 3), dn.Sequential(dn.Dense(12, 2), dn.ReLU()))], (12,)),
    "concatenate-channels": ([dn.Concatenate(dn.Conv2D(3, 2, 1), dn.Conv2D(3, 3, 3, padding=1))], IMG),
    "add-branches": ([dn.Add(dn.Dense(12, 4), dn.Dense(12, 4), dn.Dense(12, 4))], (12,)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_layer_kind(case, rng):
    layers, shape = CASES[case]
    out = shape
    for layer in layers:
        out = layer.output_shape(out)
    net = dn.Network(layers + ([dn.Flatten()] if len(out) > 1 else []), seed=3, input_shape=shape)
    X = rng.normal(size=(7, *shape)).astype(np.float32)
    if any(isinstance(layer, dn.BatchNorm) for _, layer in _walk(net)):
        calibrate_batchnorm(net, rng.normal(1.0, 2.0, size=(16, *shape)).astype(np.float32))
    assert_same_outputs(net, X)


def test_shared_layer_is_one_constant(rng):
    shared = dn.Dense(6, 6)
    net = dn.Network([dn.Sequential(shared, dn.Tanh(), shared)], seed=0, input_shape=(6,))
    model = assert_same_outputs(net, rng.normal(size=(4, 6)).astype(np.float32))
    assert sum(1 for t in model.graph.initializer if t.name.endswith("weight")) == 1


# ---------------------------------------------------------------------------- user layers, refusals
class Scale(Layer):
    """y = x·s with one learned s per feature, and its own ONNX export."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def initialize(self, rng) -> None:
        self.add_param("s", rng.normal(size=self.n))

    def get_config(self):
        return {"n": self.n}

    def forward(self, x, training=False):
        self._cache = x if training else None
        return x * self.parameters()["s"].data

    def backward(self, grad_output, need_input_grad=True):
        x = self._need_cache()
        self.parameters()["s"].grad += self.ops.xp.sum(grad_output * x, axis=0)
        return grad_output * self.parameters()["s"].data if need_input_grad else None

    def to_onnx(self, graph, x):
        return graph.op("Mul", x, graph.param(self, "s"))


class NoExport(Scale):
    to_onnx = None          # a layer of one's own without an export


def test_user_layer_exports_itself(rng):
    net = dn.Network([dn.Dense(5, 4), Scale(4), dn.ReLU()], seed=0, input_shape=(5,))
    assert_same_outputs(net, rng.normal(size=(6, 5)).astype(np.float32))


def test_user_layer_without_export_is_refused_by_name(rng):
    net = dn.Network([dn.Dense(5, 4), dn.Sequential(dn.ReLU(), NoExport(4))], seed=0, input_shape=(5,))
    with pytest.raises(OnnxExportError) as info:
        net.to_onnx("unused.onnx")
    msg = str(info.value)
    assert "\n" not in msg and "layer 1 (Sequential)" in msg and "NoExport" in msg and "to_onnx" in msg


def test_network_without_input_shape_needs_one(tmp_path, rng):
    net = dn.Network([dn.Conv2D(1, 2, 3), dn.Flatten()], seed=0)
    with pytest.raises(OnnxExportError, match="input_shape="):
        net.to_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    path = net.to_onnx(tmp_path / "m.onnx", input_shape=(1, 6, 6))
    X = rng.normal(size=(3, 1, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(onnx.load(path), X), net.predict(X), rtol=1e-5, atol=1e-5)


def test_opset_is_checked_and_written(tmp_path):
    net = dn.Network([dn.Dense(3, 2), dn.LayerNorm(2)], seed=0)
    assert onnx_model(net).opset_import[0].version == 17
    model = onnx_model(net, opset=18)            # ReduceMean's axes become an input
    onnx.checker.check_model(model)
    X = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(run_onnx(model, X), net.predict(X), rtol=1e-5, atol=1e-5)
    with pytest.raises(OnnxExportError, match="opset"):
        net.to_onnx(tmp_path / "m.onnx", opset=9)


# ---------------------------------------------------------------------------- deepnet export
def test_cli_export(tmp_path, capsys, rng):
    from deepnet.cli import main
    net = dn.Network(cnn_layers((8, 8), 4, channels=(2, 3)), seed=0, input_shape=(64,))
    save_model(net, tmp_path / "model.npz")
    out = tmp_path / "model.onnx"
    assert main(["export", str(tmp_path / "model.npz"), str(out)]) == 0
    assert "input 'input' (batch, 64)" in capsys.readouterr().out
    model = onnx.load(out)
    onnx.checker.check_model(model)
    X = rng.random((5, 64), dtype=np.float32)
    np.testing.assert_allclose(run_onnx(model, X), net.predict(X), rtol=1e-5, atol=1e-5)
    before = out.read_bytes()
    assert main(["export", str(tmp_path / "model.npz"), str(out)]) == 1          # never replaced unasked
    assert "exists: give --force" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["export", str(tmp_path / "model.npz"), str(out), "--force"]) == 0


def test_cli_export_after_train(tmp_path, capsys, rng):
    """The command line's own model file (trained on the digits) and a checkpoint, exported and run."""
    from deepnet.cli import main
    run = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--model", "cnn", "--checkpoint-every", "5", "--out", str(run),
                 "--quiet"]) == 0
    X = rng.random((9, 64), dtype=np.float32)
    for source in (run / "model.npz", run / "checkpoints" / "best.npz"):
        target = tmp_path / f"{source.stem}.onnx"
        assert main(["export", str(source), str(target)]) == 0
        np.testing.assert_allclose(run_onnx(onnx.load(target), X), load_network(source).predict(X),
                                   rtol=1e-5, atol=1e-5)


def test_cli_export_without_onnx_says_what_to_install(tmp_path, capsys, monkeypatch):
    from deepnet.cli import main
    save_model(dn.Network([dn.Dense(3, 2)], seed=0), tmp_path / "model.npz")
    monkeypatch.setitem(sys.modules, "onnx", None)          # as if not installed
    assert main(["export", str(tmp_path / "model.npz"), str(tmp_path / "m.onnx")]) == 1
    assert "ONNX export needs the onnx package: pip install 'deepnet[onnx]'" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
