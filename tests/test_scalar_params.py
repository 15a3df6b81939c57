"""A layer with a 0-d parameter (a PReLU's single α) trains, checks, saves and resumes on
every backend, and gives exactly what the same layer gives with a one-element α of shape (1,)."""

from __future__ import annotations

import numpy as np
import pytest

import deepnet as dn
from deepnet.checkpoint import Checkpointer
from deepnet.diagnostics import GradientFlow
from deepnet.distributed.communicator import LocalCommunicator
from deepnet.io import load_model, save_model


class ScalarPReLU(dn.Layer):
    """y = x for x > 0, α x otherwise; α of shape ``shape`` (``[]``: one 0-d α), broadcast."""

    def __init__(self, shape: list[int] | None = None, alpha: float = 0.25) -> None:
        super().__init__()
        self.shape = [] if shape is None else list(shape)
        self.alpha0 = float(alpha)

    def get_config(self) -> dict:
        return {"shape": self.shape, "alpha": self.alpha0}

    def initialize(self, rng) -> None:
        self.alpha = self.add_param("alpha", np.full(tuple(self.shape), self.alpha0))

    def forward(self, x, training=False):
        xp = self.ops.xp
        pos = x > 0
        self._cache = (x, pos) if training else None
        return xp.where(pos, x, self.alpha.data * x)

    def backward(self, grad_output, need_input_grad=True):
        x, pos = self._need_cache()
        xp = self.ops.xp
        neg = xp.where(pos, xp.zeros_like(x), grad_output * x)      # ∂f/∂α = Σ δ x over x ≤ 0
        self.alpha.grad += xp.reshape(xp.sum(neg), tuple(self.alpha.shape))
        if not need_input_grad:
            return None
        return xp.where(pos, grad_output, grad_output * self.alpha.data)


def _data(n: int = 96):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y = ((X[:, 0] - X[:, 1]) > 0).astype(np.int64)
    return X, y


def _net(shape, backend=None, dtype="float32"):
    return dn.Network([dn.Dense(4, 6), ScalarPReLU(shape), dn.Dense(6, 2)], seed=0, backend=backend, dtype=dtype)


OPTIMIZERS = {
    "sgd": lambda: dn.SGD(0.1),
    "nesterov": lambda: dn.SGD(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: dn.Adam(0.01),
    "adamw": lambda: dn.AdamW(0.01),
    "rmsprop": lambda: dn.RMSProp(0.01),
    "adam-clip": lambda: dn.Adam(0.01, clip_norm=0.5),
    "sgd-decay-maxnorm": lambda: dn.SGD(0.1, weight_decay=1e-3, max_norm=2.0),
}


def _train(shape, opt, backend=None, **fit):
    X, y = _data()
    net = _net(shape, backend)
    net.fit(X, y, epochs=2, batch_size=16, loss="xent", optimizer=OPTIMIZERS[opt](), **fit)
    return net


def _alpha(net) -> np.ndarray:
    return dn.to_host(net.layers[1].alpha.data)


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_a_0d_parameter_trains_like_a_one_element_one_on_every_backend(backend, opt):
    scalar, vector = _train([], opt), _train([1], opt)
    a = _alpha(scalar)
    assert a.shape == () and scalar.layers[1].alpha.grad.shape == ()      # stays 0-d through fit
    assert float(a) != 0.25                                                  # and was trained
    np.testing.assert_allclose(a.reshape(1), _alpha(vector), rtol=1e-6, atol=1e-7)
    for k, w in vector.get_weights().items():
        np.testing.assert_allclose(scalar.get_weights()[k].reshape(w.shape), w, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("opt", ["sgd", "nesterov", "adam", "adamw", "rmsprop"])
def test_a_0d_parameter_takes_the_numpy_and_compiled_multi_tensor_kernels(numpy_kernels, opt):
    scalar, vector = _train([], opt, numpy_kernels), _train([1], opt, numpy_kernels)
    assert _alpha(scalar).shape == ()
    np.testing.assert_allclose(_alpha(scalar).reshape(1), _alpha(vector), rtol=1e-6, atol=1e-7)


def test_a_0d_parameter_is_reduced_through_the_flat_gradient_buffer(backend):
    scalar = _train([], "adam", communicator=LocalCommunicator())
    vector = _train([1], "adam", communicator=LocalCommunicator())
    assert _alpha(scalar).shape == ()
    np.testing.assert_allclose(_alpha(scalar).reshape(1), _alpha(vector), rtol=1e-6, atol=1e-7)


def test_a_0d_parameter_passes_the_layer_contract(backend):
    x = np.random.default_rng(0).normal(size=(5, 3)) + 0.05       # away from the kink at 0
    dn.check_layer_contract(lambda: ScalarPReLU([]), x)         # gradient, accumulation, round trip, ...
    report = dn.check_layer(ScalarPReLU([]), x)
    assert "alpha" in str(report)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_a_0d_parameter_survives_a_model_file(tmp_path, suffix):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    net = _train([], "adam")
    path = tmp_path / f"m{suffix}"
    save_model(net, path)
    loaded = load_model(path)
    a = dn.to_host(loaded.layers[1].alpha.data)
    assert a.shape == () and a == _alpha(net)
    X, _ = _data()
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))


def test_a_0d_parameter_and_its_optimizer_slots_resume_from_a_checkpoint(tmp_path):
    X, y = _data()
    whole = _net([])
    whole.fit(X, y, epochs=3, batch_size=16, loss="xent", optimizer=dn.Adam(0.01))
    part = _net([])
    part.fit(X, y, epochs=2, batch_size=16, loss="xent", optimizer=dn.Adam(0.01), checkpoint=Checkpointer(tmp_path))
    resumed = _net([])
    resumed.fit(X, y, epochs=3, batch_size=16, loss="xent", optimizer=dn.Adam(0.01), checkpoint=Checkpointer(tmp_path),
                resume=True)
    assert resumed.optimizer.state["1.alpha"]["m"].shape == ()
    for k, w in whole.get_weights().items():
        np.testing.assert_array_equal(resumed.get_weights()[k], w)


def test_gradient_flow_diagnostics_record_a_layer_with_a_0d_parameter():
    X, y = _data()
    net = _net([])
    net.diagnostics = GradientFlow()
    net.fit(X, y, epochs=1, batch_size=16, loss="xent", optimizer=dn.Adam(0.01, clip_norm=0.1))
    records = net.diagnostics.records()
    assert records["layer_names"] == ["0:Dense", "1:ScalarPReLU", "2:Dense"]
    assert all(np.isfinite(v) for v in records["error_norm"][-1])
