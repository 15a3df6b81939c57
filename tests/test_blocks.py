"""Blocks of layers (deepnet/layers/combinators.py) through the public Layer protocol: names,
shared parameters, save/load, checkpoints, the captured step, data-parallel hooks, summaries.
The layer contract of every combinator (gradients on every backend) is in test_layer_harness.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

import deepnet as dn
from deepnet.backend.numpy_ops import NumpyOps
from deepnet.checkpoint import Checkpointer
from deepnet.diagnostics import GradientFlow
from deepnet.distributed import LocalCommunicator
from deepnet.errors import ModelFileError
from deepnet.gradcheck import check_layer
from deepnet.io import load_model, save_model
from deepnet.layers import Layer
from deepnet.model_files import read_tensors
from deepnet.testing import check_layer_contract
from tests.test_graphs import _Eager, _Rebinds, _same_run, fresh_warnings  # noqa: F401  (a fixture)


def _data(n: int = 48, d: int = 6, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, k, n)


def _block_net(seed: int = 0, backend: str = "numpy") -> dn.Network:
    """Dense, a residual block with BatchNorm and dropout inside, a branch pair, a Dense head."""
    inner = dn.Sequential(dn.Dense(8, 8), dn.BatchNorm(8), dn.Tanh(), dn.Dropout(0.25), dn.Dense(8, 8))
    branches = dn.Concatenate(dn.Dense(8, 3), dn.Sequential(dn.Dense(8, 2), dn.Tanh()))
    layers = [dn.Dense(6, 8), dn.Residual(inner), branches,
              dn.Add(dn.Dense(5, 3), dn.Dense(5, 3))]
    return dn.Network(layers, seed=seed, backend=backend, loss="xent", optimizer=dn.SGD(0.1, momentum=0.9))


def test_parameters_are_named_by_their_place_in_the_tree():
    net = _block_net()
    names = list(net.parameters())
    assert names[:6] == ["0.weight", "0.bias", "1.block.0.weight", "1.block.0.bias",
                         "1.block.1.gamma", "1.block.1.beta"]
    assert "2.1.0.weight" in names and "3.1.bias" in names
    assert all(p.name == k for k, p in net.parameters().items())
    assert list(net.layers[1].sublayers()) == ["block"]
    assert [path for path, _ in net.layers[1].walk()] == ["block", "block.0", "block.1", "block.2", "block.3",
                                                         "block.4"]


def test_a_layer_used_twice_adds_both_uses_to_one_gradient(backend):
    """Sequential(d, tanh, d): ∂f/∂W of the shared d is the sum over both calls (finite differences)."""
    d = dn.Dense(4, 4)
    block = dn.Sequential(d, dn.Tanh(), d)
    block.initialize(np.random.default_rng(0))
    assert list(block.parameters()) == ["0.weight", "0.bias"]          # one parameter, listed once
    x = np.random.default_rng(1).normal(size=(3, 4))
    report = check_layer(block, x)
    assert set(report.checked) == {"input", "0.weight", "0.bias"}
    branches = dn.Add(d, dn.Sequential(dn.Tanh(), d))
    check_layer(branches, x)


def test_the_harness_checks_a_block_with_a_shared_layer(backend):
    def make() -> dn.Residual:
        d = dn.Dense(5, 5)
        return dn.Residual(dn.Sequential(d, dn.Tanh(), d))

    report = check_layer_contract(make, np.random.default_rng(2).normal(size=(4, 5)), skip=["round_trip"])
    assert "accumulation" in report.passed and "gradient" in report.passed


def test_saving_a_shared_layer_is_refused_in_one_line(tmp_path):
    d = dn.Dense(6, 6)
    net = dn.Network([dn.Sequential(d, dn.Tanh(), d)])
    with pytest.raises(ModelFileError, match=r"one layer object at '0' and '2'.*shared layers") as err:
        save_model(net, tmp_path / "m.npz")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "m.npz").exists()


def test_a_block_network_saves_and_loads_with_nested_entries(tmp_path):
    net = _block_net()
    X, y = _data()
    net.fit(X, y, epochs=2, batch_size=16)
    path = save_model(net, tmp_path / "m.npz")
    _, header = read_tensors(path)
    entry = header["layers"][1]
    assert entry["type"] == "Residual" and entry["class"] == "deepnet.layers.combinators.Residual"
    inner = entry["config"]["block"]
    assert inner["class"] == "deepnet.layers.combinators.Sequential"
    assert [e["type"] for e in inner["config"]["layers"]] == ["Dense", "BatchNorm", "Tanh", "Dropout", "Dense"]
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))
    state = net.layers[1].state_arrays()
    assert sorted(state) == ["block.1.running_mean", "block.1.running_var"]
    for k, v in loaded.layers[1].state_arrays().items():
        np.testing.assert_array_equal(v, state[k])


def test_a_nested_entry_naming_a_class_not_defined_is_refused(tmp_path):
    net = _block_net()
    path = save_model(net, tmp_path / "m.npz")
    tensors, header = read_tensors(path)
    header["layers"][1]["config"]["block"]["config"]["layers"][2] = {"type": "system", "class": "os.system",
                                                                     "config": {}}
    from deepnet.model_files import write_tensors

    bad = write_tensors(tmp_path / "bad.npz", tensors, {k: v for k, v in header.items()
                                                        if k not in ("checksum", "tensors")})
    with pytest.raises(ModelFileError, match="layer 1 \\(Residual\\)") as err:
        load_model(bad)
    assert "\n" not in str(err.value)


def test_resume_of_a_block_network_is_exact(tmp_path):
    """Dropout draws and BatchNorm statistics inside blocks resume bit for bit."""
    X, y = _data()
    ref = _block_net()
    ref.fit(X, y, epochs=3, batch_size=16)
    first = _block_net()
    first.fit(X, y, epochs=2, batch_size=16, checkpoint=Checkpointer(tmp_path))
    again = _block_net(seed=5)
    again.fit(X, y, epochs=3, batch_size=16, checkpoint=Checkpointer(tmp_path), resume=True)
    for k, v in ref.get_weights().items():
        np.testing.assert_array_equal(again.get_weights()[k], v, err_msg=k)
    for k, v in ref.layers[1].state_arrays().items():
        np.testing.assert_array_equal(again.layers[1].state_arrays()[k], v, err_msg=k)


def test_summary_shows_the_tree():
    text = _block_net().summary()
    lines = text.splitlines()
    row = next(line for line in lines if line.startswith("1.block.1 "))
    assert "BatchNorm(n_features=8" in row and "gamma(8,)" in row
    assert any(line.startswith("2.1.0 ") and "Dense(n_in=8, n_out=2" in line for line in lines)
    assert next(line for line in lines if line.startswith("1 ")).split()[1] == "Residual"


def test_blocks_in_the_captured_step_train_as_the_plain_loop(backend):
    _same_run(backend, lambda: dn.SGD(0.05, momentum=0.9),
              extra=lambda: (dn.Residual(dn.Sequential(dn.Dense(16, 16), dn.BatchNorm(16), dn.Dropout(0.3))),))


def test_a_rebinding_layer_inside_a_block_is_found(fresh_warnings):
    from tests.test_graphs import _data as graph_data, _net

    X, y = graph_data()
    with pytest.raises(dn.BackendError, match="replaced its 'block.0.total'"):
        _net(NumpyOps(), dn.Adam(), extra=(dn.Residual(dn.Sequential(_Rebinds(), dn.Tanh())),)).fit(
            X, y, batch_size=32, graphs="on")


def test_a_block_is_capturable_only_if_every_layer_inside_is():
    from deepnet.training.captured import capture_obstacles

    block = dn.Residual(dn.Sequential(dn.Dense(4, 4), _Eager()))
    assert not block.capturable and dn.Residual(dn.Dense(4, 4)).capturable
    net = dn.Network([block], loss="mse", optimizer="sgd")
    reasons = capture_obstacles(net, check_finite="off", streamed=False, batch_hooks=[], mode="step")
    assert reasons == ["layer 0 (Residual), its block.1 (_Eager), sets capturable = False"]


def test_data_parallel_hooks_reach_batchnorm_inside_blocks():
    X, y = _data()
    net = _block_net()
    assert net.layers[1].uses_batch_statistics and not net.layers[2].uses_batch_statistics
    seen = []

    class Watch(dn.Callback):
        def on_epoch_begin(self, net, epoch, logs=None):
            seen.append(net.layers[1].block.layers[1].sync)

    ref = _block_net()
    ref.fit(X, y, epochs=2, batch_size=16)
    net.fit(X, y, epochs=2, batch_size=16, communicator=LocalCommunicator(), sync_batchnorm=True, callbacks=[Watch()])
    assert seen and all(isinstance(s, LocalCommunicator) for s in seen)
    assert net.layers[1].block.layers[1].sync is None                    # the run is over
    for k, v in ref.get_weights().items():                                # one rank: the plain run
        np.testing.assert_allclose(net.get_weights()[k], v, rtol=1e-6, atol=1e-7, err_msg=k)


def test_a_custom_layer_with_set_sync_declares_batch_statistics():
    class Synced(Layer):
        def set_sync(self, comm):
            self.comm = comm

    assert Synced().uses_batch_statistics and not dn.Dense(2, 2).uses_batch_statistics
    assert dn.Sequential(dn.Tanh(), Synced()).uses_batch_statistics


def test_diagnostics_name_the_weights_inside_blocks():
    X, y = _data()
    net = _block_net()
    net.diagnostics = GradientFlow()
    net.fit(X, y, epochs=1, batch_size=16)
    assert {"1.block.0.weight", "1.block.4.weight", "2.1.0.weight"} <= set(net.diagnostics.weight_names)


def test_to_torch_exports_blocks_as_torch_modules_deepnet_provides():
    """Residual, Concatenate, Add and Sequential export (no longer refused: details in
    test_torch_blocks.py); a program's own container class is still refused in one line."""
    pytest.importorskip("torch")
    from deepnet.interop import TorchAdd, TorchConcatenate, TorchResidual, to_torch

    module = to_torch(_block_net())
    assert [type(m) for m in module][1:] == [TorchResidual, TorchConcatenate, TorchAdd]

    class Pair(Layer):
        def __init__(self) -> None:
            super().__init__()
            self.add_layer("a", dn.Dense(8, 8))

        def forward(self, x, training=False):
            return self.sublayers()["a"].forward(x, training)

    net = dn.Network([dn.Dense(6, 8), dn.Residual(dn.Sequential(dn.Tanh(), Pair())), dn.Dense(8, 3)], seed=0)
    with pytest.raises(ValueError, match=r"layer 1 \(Residual\) at block.1 \(Pair\) has no PyTorch equivalent") as err:
        to_torch(net)
    assert "\n" not in str(err.value)


def test_a_residual_whose_block_changes_the_shape_needs_a_projection():
    with pytest.raises(dn.ShapeError, match=r"Residual: the block \(Dense\) outputs per-sample shape \(3,\), but "
                                            r"the input has shape \(4,\): give a projection shortcut"):
        dn.Network([dn.Dense(2, 4), dn.Residual(dn.Dense(4, 3))])
    with pytest.raises(TypeError, match="Sequential: layer 1 must be a deepnet Layer, got int"):
        dn.Sequential(dn.Dense(2, 2), 3)
    with pytest.raises(TypeError, match="Sequential: layer 1 must be a deepnet Layer, got list"):
        dn.Sequential(dn.Dense(2, 2), [dn.ReLU()])


def test_sequential_takes_its_layers_as_arguments_or_as_one_list():
    X, _ = _data()
    a = dn.Network([dn.Sequential(dn.Dense(X.shape[1], 3), dn.Tanh())], seed=1, dtype="float64")
    b = dn.Network([dn.Sequential([dn.Dense(X.shape[1], 3), dn.Tanh()])], seed=1, dtype="float64")
    assert repr(a.layers[0]) == repr(b.layers[0]) == "Sequential(Dense(n_in=%d, n_out=3, bias=True, init='glorot'), Tanh())" % X.shape[1]
    np.testing.assert_array_equal(a.predict(X), b.predict(X))


def test_moving_a_block_network_moves_every_layer_inside():
    net = _block_net()
    X, _ = _data()
    before = net.predict(X)
    net.to("strict")
    inner = net.layers[1].block.layers
    assert all(layer.ops is net.ops for layer in inner)
    assert inner[1].running_mean is not None and net.ops.owns(inner[1].running_mean)
    np.testing.assert_allclose(net.predict(X), before, rtol=1e-5, atol=1e-6)


def test_entries_round_trip_through_json():
    net = _block_net()
    entry = json.loads(json.dumps(net.layers[2].get_config()))
    rebuilt = type(net.layers[2]).from_config(entry)
    assert [type(b).__name__ for b in rebuilt.branches] == ["Dense", "Sequential"]


def test_checkpointing_a_shared_layer_is_refused_before_training(tmp_path):
    d = dn.Dense(6, 6)
    net = dn.Network([dn.Sequential(d, dn.Tanh(), d), dn.Dense(6, 3)], loss="xent", optimizer="sgd")
    before = net.get_weights()
    X, y = _data()
    with pytest.raises(ModelFileError, match=r"cannot checkpoint layer 0 \(Sequential\).*shared layers") as err:
        net.fit(X, y, epochs=1, batch_size=16, checkpoint=Checkpointer(tmp_path))
    assert "\n" not in str(err.value) and net.step_count == 0
    for k, v in before.items():
        np.testing.assert_array_equal(net.get_weights()[k], v)


def test_from_torch_reads_a_nested_sequential_as_a_block():
    torch = pytest.importorskip("torch")
    from deepnet.interop import from_torch

    module = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh()))
    net = from_torch(module)
    assert [type(layer).__name__ for layer in net.layers] == ["Dense", "Sequential"]
    np.testing.assert_array_equal(net.get_weights()["1.0.weight"], module[1][0].weight.detach().numpy())
    X = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(net.predict(X), module(torch.from_numpy(X)).numpy(), rtol=1e-5, atol=1e-6)


def test_diagnostics_record_the_error_reaching_each_layer_inside_a_block():
    X, y = _data()
    net = _block_net()
    net.diagnostics = GradientFlow()
    net.fit(X, y, epochs=2, batch_size=16)
    names = net.diagnostics.layer_names
    assert names[:2] == ["0:Dense", "1.block.0:Dense"]
    assert names.index("1.block.4:Dense") < names.index("1.block:Sequential") < names.index("1:Residual")
    assert {"2.0:Dense", "2.1.1:Tanh", "3.1:Dense", "3:Add"} <= set(names)
    assert len(net.diagnostics.error_norm) == 2 and all(len(row) == len(names) for row in net.diagnostics.error_norm)
    net.diagnostics = None                          # the blocks no longer record
    net.fit(X, y, epochs=1, batch_size=16)
    assert all(block._record is None for block in (net.layers[1], net.layers[1].block, net.layers[2]))


def test_a_block_keeps_trained_children_and_refreshes_them_when_asked():
    trained = dn.Dense(4, 4)
    dn.Network([trained], seed=1)
    w = dn.to_host(trained.parameters()["weight"].data).copy()
    block = dn.Residual(dn.Sequential(trained, dn.Tanh()))
    dn.Network([block], seed=2)                                          # reused: keeps its parameters
    np.testing.assert_array_equal(dn.to_host(trained.parameters()["weight"].data), w)
    block.initialized = False                                            # asks for fresh ones, inside too
    assert not trained.initialized
    dn.Network([block], seed=2)
    assert not np.array_equal(dn.to_host(trained.parameters()["weight"].data), w)


def test_one_layer_at_two_places_of_the_stack_is_refused():
    d = dn.Dense(4, 4)
    with pytest.raises(ValueError, match=r"Network: layer 2 \(Dense\) is the same Dense object as layer 0 \(Dense\)"):
        dn.Network([d, dn.Tanh(), d])
    with pytest.raises(ValueError, match=r"layer 1 \(Sequential\) at 1 is the same Dense object as layer 0"):
        dn.Network([d, dn.Sequential(dn.Tanh(), d)])
    dn.Network([dn.Sequential(d, dn.Tanh(), d)])                        # shared inside one block: fine


@pytest.mark.parametrize("block", [lambda: dn.Sequential(dn.Conv2D(1, 4, 3), dn.ReLU()),
                                   lambda: dn.Residual(dn.Sequential(dn.Conv2D(1, 4, 3), dn.ReLU()),
                                                       dn.Sequential(dn.Conv2D(1, 4, 3))),
                                   lambda: dn.Add(dn.Conv2D(1, 4, 3), dn.Conv2D(1, 4, 3))])
def test_rows_given_to_a_block_of_images_get_the_hint_a_first_conv2d_gives(block):
    """A block starting with Conv2D declares what Conv2D declares (``Layer.input_spec``): rows
    (n, 784) get "reshape the data", not an error from inside the block."""
    X, y = np.zeros((8, 784), np.float32), np.zeros(8, int)

    def message(first: Layer) -> str:
        net = dn.Network([first, dn.Flatten(), dn.Dense(2704, 10)], loss="xent", optimizer="sgd")
        with pytest.raises(dn.ShapeError) as err:
            net.fit(X, y, epochs=1)
        return str(err.value)

    got = message(block())
    want = message(dn.Conv2D(1, 4, 3)).replace("first layer Conv2D", f"first layer {type(block()).__name__}")
    assert got == want and "X.reshape(len(X), 1, 28, 28)" in got
