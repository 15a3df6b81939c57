"""Blocks through PyTorch (deepnet/interop.py): a deepnet ``Sequential`` is a nested
``torch.nn.Sequential``; ``Residual``, ``Concatenate`` and ``Add`` are deepnet's
``TorchResidual``, ``TorchConcatenate`` and ``TorchAdd``.  Exported modules compute the same
function and the same gradients; imported back, weights, statistics and outputs are identical."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

import deepnet as dn

torch = pytest.importorskip("torch")
from deepnet.interop import (TorchAdd, TorchConcatenate, TorchResidual, from_torch,  # noqa: E402
                             to_torch, to_torch_state_dict)


def _image_block_net(dtype: str, dropout: float = 0.25) -> dn.Network:
    """Images through a residual stage with a stride-2 projection shortcut, BatchNorm and
    dropout inside, channels concatenated, two branches added, a nested Sequential (the
    convolutions before BatchNorm have no bias: its gradient would be zero up to rounding)."""
    block = dn.Sequential(dn.Conv2D(2, 4, 3, stride=2, padding=1, bias=False), dn.BatchNorm(4), dn.ReLU(),
                          dn.Dropout(dropout), dn.Conv2D(4, 4, 3, padding=1))
    shortcut = dn.Sequential(dn.Conv2D(2, 4, 1, stride=2, bias=False), dn.BatchNorm(4))
    layers = [dn.Conv2D(1, 2, 3, padding=1),
              dn.Residual(block, shortcut),
              dn.Concatenate(dn.Conv2D(4, 3, 1), dn.Sequential(dn.Conv2D(4, 2, 3, padding=1), dn.Tanh())),
              dn.Residual(dn.Sequential(dn.BatchNorm(5), dn.Conv2D(5, 5, 1))),
              dn.GlobalAvgPool2D(),
              dn.Add(dn.Dense(5, 3), dn.Sequential(dn.Dense(5, 3), dn.Sigmoid())),
              dn.Dense(3, 3)]
    return dn.Network(layers, seed=0, dtype=dtype, loss="xent", optimizer=dn.SGD(0.1, momentum=0.9),
                      input_shape=(1, 8, 8))


def _images(dtype: str, n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 1, 8, 8)).astype(dtype), rng.integers(0, 3, n)


def _trained(dtype: str) -> tuple[dn.Network, np.ndarray]:
    net = _image_block_net(dtype)
    X, y = _images(dtype)
    net.fit(X, y, epochs=2, batch_size=6)          # weights and running statistics move
    return net, X


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("float64", 1e-12)])
def test_a_block_network_goes_to_pytorch_and_back_bit_identically(dtype, tol):
    net, X = _trained(dtype)
    module = to_torch(net)
    assert [type(m) for m in module][1:4] == [TorchResidual, TorchConcatenate, TorchResidual]
    assert type(module[1].block) is torch.nn.Sequential and type(module[1].block[1]) is torch.nn.BatchNorm2d
    assert type(module[5]) is TorchAdd and next(module.parameters()).dtype == getattr(torch, dtype)
    assert set(module.state_dict()) == set(to_torch_state_dict(net))
    want = dn.to_host(net.predict(X))
    with torch.no_grad():
        got = module(torch.from_numpy(X)).numpy()
    assert np.abs(got - want).max() <= tol * np.abs(want).max()

    back = from_torch(module)
    assert back.dtype_name == dtype
    assert [type(layer).__name__ for layer in back.layers] == [type(layer).__name__ for layer in net.layers]
    for name, w in net.get_weights().items():
        np.testing.assert_array_equal(back.get_weights()[name], w)
        assert back.get_weights()[name].dtype == w.dtype
    for top, again in zip(net.layers, back.layers):
        for k, v in top.state_arrays().items():
            np.testing.assert_array_equal(again.state_arrays()[k], v)
    np.testing.assert_array_equal(dn.to_host(back.predict(X)), want)


def test_torch_autograd_through_the_export_gives_deepnets_explicit_backward():
    """float64, training mode (BatchNorm on batch statistics, dropout off so both draw the
    same function): ∂(Σ G·y)/∂θ and ∂/∂x from torch's autograd equal deepnet's backward."""
    net = _image_block_net("float64", dropout=0.0)
    X, _ = _images("float64")
    G = np.random.default_rng(2).normal(size=(len(X), 3))
    net.zero_grad()
    net.forward(X, training=True)
    e = G
    for layer in reversed(net.layers):
        e = layer.backward(e, True)

    module = to_torch(net).train()
    x = torch.from_numpy(X.copy()).requires_grad_(True)
    (module(x) * torch.from_numpy(G)).sum().backward()

    def close(a: np.ndarray, b: np.ndarray, what: str) -> None:
        assert np.abs(a - b).max() <= 1e-12 * np.abs(b).max(), what

    close(x.grad.numpy(), dn.to_host(e), "input")
    grads = {k: v.grad.numpy() for k, v in module.named_parameters()}
    params = net.parameters()
    assert len(grads) == len(params) == 24
    for name, p in params.items():
        head, last = name.rsplit(".", 1)
        close(grads[f"{head}.{ {'gamma': 'weight', 'beta': 'bias'}.get(last, last)}"], dn.to_host(p.grad), name)


def test_an_exported_block_module_pickles_as_deepnet_interop_classes():
    net, X = _trained("float32")
    module = pickle.loads(pickle.dumps(to_torch(net)))
    assert type(module[1]).__module__ == "deepnet.interop" and type(module[1]) is TorchResidual
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(X)).numpy(), net.predict(X), rtol=1e-5, atol=1e-6)


def test_modules_written_in_pytorch_import_as_blocks():
    nn = torch.nn
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 6),
                           TorchResidual(nn.Sequential(nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 6))),
                           TorchConcatenate(nn.Linear(6, 2), nn.Sequential(nn.Linear(6, 3), nn.Tanh())),
                           TorchAdd(nn.Linear(5, 3), nn.Linear(5, 3)))
    module.train()(torch.randn(16, 4))                     # running statistics move
    module.eval()
    net = from_torch(module)
    assert [type(layer).__name__ for layer in net.layers] == ["Dense", "Residual", "Concatenate", "Add"]
    np.testing.assert_array_equal(net.layers[1].block.layers[0].state_arrays()["running_mean"],
                                  module[1].block[0].running_mean.numpy())
    X = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(net.predict(X), module(torch.from_numpy(X)).numpy(), rtol=1e-5, atol=1e-6)


def test_what_cannot_be_exchanged_is_refused_in_one_line():
    nn = torch.nn
    d = dn.Dense(4, 4)
    shared = dn.Network([dn.Dense(3, 4), dn.Residual(dn.Sequential(d, dn.Tanh(), d))], seed=0)
    with pytest.raises(ValueError, match=r"layer 1 \(Residual\): the Dense at block.0 is the same object as at "
                                         r"block.2; a layer shared inside a block has no PyTorch export") as err:
        to_torch(shared)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"layer 1 \(Residual\): the Dense"):
        to_torch_state_dict(shared)

    lin = nn.Linear(4, 4)
    with pytest.raises(ValueError, match=r"module 1.block.2 \(Linear\) is the same module object as module "
                                         r"1.block.0: a shared module has no deepnet import"):
        from_torch(nn.Sequential(nn.Linear(3, 4), TorchResidual(nn.Sequential(lin, nn.Tanh(), lin))))

    class Own(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match=r"module 1.block.1 \(.*Own\) has no deepnet equivalent") as err:
        from_torch(nn.Sequential(nn.Linear(3, 4), TorchResidual(nn.Sequential(nn.Tanh(), Own()))))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"module 2.1 \(BatchNorm1d\): momentum=None"):
        from_torch(nn.Sequential(nn.Linear(3, 4), nn.Tanh(),
                                 TorchAdd(nn.Linear(4, 4), nn.BatchNorm1d(4, momentum=None))))
    with pytest.raises(ValueError, match=r"TorchConcatenate: dim must be a positive integer"):
        TorchConcatenate(nn.Linear(3, 4), dim=-1)


def test_deepnet_imports_without_pytorch_and_names_it_for_the_torch_classes():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import deepnet, deepnet.interop as i\n"
            "try:\n    i.TorchResidual\nexcept ModuleNotFoundError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("deepnet.interop.TorchResidual needs PyTorch, which is not installed: pip install")
