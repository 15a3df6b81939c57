"""Exchange weights with PyTorch's ``torch.nn.Sequential`` (PyTorch optional).

deepnet's Dense weights are (n_out, n_in) like ``torch.nn.Linear`` and parameters are
named ``"<layer index>.<name>"`` like a ``Sequential``'s state dict, so a stack maps
layer for layer.  :func:`to_torch_state_dict` needs no PyTorch (NumPy arrays keyed as
PyTorch expects); :func:`to_torch` builds the module and :func:`from_torch` builds a deepnet
network from a ``Sequential``: both need PyTorch (``pip install torch``) and say so if it is
missing.

BatchNorm momentum: deepnet's is the weight of the old running value, PyTorch's the weight
of the new batch value (deepnet 0.9 = PyTorch 0.1; deepnet 1.0 = PyTorch 0.0, frozen
statistics); PyTorch's ``momentum=None`` (cumulative average) is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import layers as deepnet_layers
from .backend import to_host
from .classnames import is_builtin_name, qualified_name
from .network import Network

# deepnet layer -> (torch.nn class name, constructor kwargs from the deepnet layer)
_TO_TORCH: dict[str, Any] = {
    "Dense": lambda L: ("Linear", {"in_features": L.n_in, "out_features": L.n_out, "bias": L.bias}),
    "ReLU": lambda L: ("ReLU", {}),
    "Sigmoid": lambda L: ("Sigmoid", {}),
    "Tanh": lambda L: ("Tanh", {}),
    "LeakyReLU": lambda L: ("LeakyReLU", {"negative_slope": L.slope}),
    "Softmax": lambda L: ("Softmax", {"dim": 1}),
    "Identity": lambda L: ("Identity", {}),
    "GELU": lambda L: ("GELU", {"approximate": "tanh"}),
    "ELU": lambda L: ("ELU", {"alpha": L.alpha}),
    "Softplus": lambda L: ("Softplus", {}),
    "Dropout": lambda L: ("Dropout", {"p": L.p}),
    "BatchNorm": lambda L: ("BatchNorm1d", {"num_features": L.n_in, "eps": L.eps,
                                            "momentum": torch_bn_momentum(L.momentum)}),
    "LayerNorm": lambda L: ("LayerNorm", {"normalized_shape": L.n_in, "eps": L.eps}),
    "Conv2D": lambda L: ("Conv2d", {"in_channels": L.in_channels, "out_channels": L.out_channels,
                                    "kernel_size": tuple(L.kernel_size), "stride": tuple(L.stride),
                                    "padding": L.padding if isinstance(L.padding, str) else tuple(L.padding),
                                    "dilation": tuple(L.dilation), "groups": L.groups, "bias": L.bias}),
    "MaxPool2D": lambda L: ("MaxPool2d", {"kernel_size": tuple(L.pool_size), "stride": tuple(L.stride),
                                          "padding": tuple(L.padding)}),
    "AvgPool2D": lambda L: ("AvgPool2d", {"kernel_size": tuple(L.pool_size), "stride": tuple(L.stride),
                                          "padding": tuple(L.padding), "count_include_pad": True}),
    "Flatten": lambda L: ("Flatten", {}),
    "Reshape": lambda L: ("Unflatten", {"dim": 1, "unflattened_size": tuple(L.shape)}),
}
#: a layer that becomes several torch modules (no parameters): (torch.nn class name, kwargs) each
_TO_TORCH_SEQUENCE: dict[str, Any] = {
    "GlobalAvgPool2D": lambda L: [("AdaptiveAvgPool2d", {"output_size": 1}), ("Flatten", {})],
}
_RENAME = {"gamma": "weight", "beta": "bias"}


def _complement(m: float) -> float:
    """1 − m, rounded to 15 significant digits so that 1 − 0.9 is 0.1, not 0.09999999999999998."""
    return float(f"{1.0 - float(m):.15g}")


def torch_bn_momentum(deepnet_momentum: float) -> float:
    """PyTorch's BatchNorm ``momentum`` for a deepnet one.  deepnet's momentum is the weight
    of the old running value (running ← m·running + (1 − m)·batch), PyTorch's the weight of
    the new batch value, so deepnet 0.9 is PyTorch 0.1 and deepnet 1.0 (frozen statistics)
    is PyTorch 0.0."""
    m = float(deepnet_momentum)
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"BatchNorm momentum must be in [0, 1], got {m!r}")
    return _complement(m)


def deepnet_bn_momentum(torch_momentum: float | None, where: str = "BatchNorm1d") -> float:
    """deepnet's BatchNorm ``momentum`` for a PyTorch one (the inverse of :func:`torch_bn_momentum`):
    PyTorch 0.1 → 0.9, 0.0 (frozen running statistics) → 1.0.  PyTorch's ``momentum=None``
    (a cumulative moving average over all batches) has no deepnet equivalent and is refused."""
    if torch_momentum is None:
        raise ValueError(f"{where}: momentum=None (cumulative moving average) has no deepnet equivalent; "
                         "deepnet's BatchNorm keeps an exponential moving average (set a momentum in [0, 1])")
    m = float(torch_momentum)
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"{where}: momentum must be in [0, 1], got {m!r}")
    return _complement(m)


def torch_modules(net: Any) -> list[Any]:
    """The ``torch.nn`` class name and arguments for each layer, in order (a list of them for a
    layer that becomes a small ``Sequential``, e.g. GlobalAvgPool2D).  BatchNorm becomes
    ``BatchNorm2d`` where it sees images, ``BatchNorm1d`` on rows."""
    out: list[Any] = []
    shape: tuple[int, ...] | None = net.input_shape if hasattr(net, "input_shape") else (net.input_width,)
    for i, layer in enumerate(net.layers):
        if shape is None and layer.input_shape() is not None and i >= net.data_shaped_layers():
            shape = tuple(layer.input_shape())
        kind = _builtin_kind(layer)
        many = _TO_TORCH_SEQUENCE.get(kind)
        make = _TO_TORCH.get(kind)
        if many is None and make is None:
            raise ValueError(f"layer {i} ({layer.name}) has no PyTorch equivalent")
        entry = many(layer) if many is not None else make(layer)
        if kind == "BatchNorm" and shape is None:
            raise ValueError(f"layer {i} ({layer.name}): whether it is BatchNorm1d or BatchNorm2d depends on the "
                             "input shape, not known yet: give Network(input_shape=...) or run the network on data first")
        if kind == "BatchNorm" and len(shape) == 3:
            entry = ("BatchNorm2d", entry[1])
        out.append(entry)
        shape = None if shape is None else tuple(layer.output_shape(shape))
    return out


def _builtin_kind(layer: Any) -> str:
    """The short name of a built-in layer's class; a program's own class of the same short
    name (e.g. its own ``GELU``) is not the built-in, so it keeps its qualified name."""
    name = qualified_name(type(layer))
    return type(layer).__name__ if is_builtin_name(name) else name


def _torch_kind(module: Any) -> str:
    """The class name of a ``torch.nn`` module; another class keeps its qualified name."""
    name = qualified_name(type(module))
    return type(module).__name__ if name.startswith("torch.") else name


def _module(torch: Any, entry: Any) -> Any:
    if isinstance(entry, list):
        return torch.nn.Sequential(*(getattr(torch.nn, cls)(**kw) for cls, kw in entry))
    cls, kw = entry
    return getattr(torch.nn, cls)(**kw)


def to_torch_state_dict(net: Any) -> dict[str, np.ndarray]:
    """Weights keyed as ``torch.nn.Sequential(*modules).state_dict()`` expects (NumPy)."""
    torch_modules(net)  # refuse unsupported layers early
    sd: dict[str, np.ndarray] = {}
    for i, layer in enumerate(net.layers):
        for name, p in layer.parameters().items():
            sd[f"{i}.{_RENAME.get(name, name)}"] = to_host(p.data).copy()
        for name, v in layer.state_arrays().items():
            sd[f"{i}.{name}"] = v
        if _builtin_kind(layer) == "BatchNorm":
            sd[f"{i}.num_batches_tracked"] = np.array(0, dtype=np.int64)
    return sd


#: what to install for :func:`to_torch` and :func:`from_torch` (PyTorch is not a dependency)
TORCH_HINT = "pip install torch (CPU builds: pip install torch --index-url https://download.pytorch.org/whl/cpu)"


def _torch(what: str) -> Any:
    """The ``torch`` module, or a one-line error naming what needs it and how to install it."""
    try:
        import torch
    except ImportError:
        raise ModuleNotFoundError(f"deepnet.interop.{what} needs PyTorch, which is not installed: {TORCH_HINT}",
                                  name="torch") from None
    return torch


def to_torch(net: Any) -> Any:
    """A ``torch.nn.Sequential`` computing the same function, weights loaded (float32); needs
    PyTorch (:func:`to_torch_state_dict` does not)."""
    torch = _torch("to_torch")

    modules = [_module(torch, entry) for entry in torch_modules(net)]
    seq = torch.nn.Sequential(*modules)
    state = {k: torch.from_numpy(np.asarray(v, order="C")) for k, v in to_torch_state_dict(net).items()}
    seq.load_state_dict(state)
    return seq.eval()


def from_torch(module: Any, seed: int = 0, backend: str | None = None) -> Any:
    """Build a deepnet :class:`~deepnet.Network` from a ``torch.nn.Sequential`` (needs PyTorch)."""
    torch = _torch("from_torch")
    if not isinstance(module, torch.nn.Sequential):
        raise TypeError(f"from_torch: expected a torch.nn.Sequential, got {type(module).__name__}")
    layers: list[Any] = []
    for i, m in enumerate(module):
        cls = _torch_kind(m)
        if cls == "Linear":
            layers.append(deepnet_layers.Dense(m.in_features, m.out_features, bias=m.bias is not None))
        elif cls in ("ReLU", "Sigmoid", "Tanh", "Identity", "Softplus"):
            layers.append(getattr(deepnet_layers, cls)())
        elif cls == "LeakyReLU":
            layers.append(deepnet_layers.LeakyReLU(m.negative_slope))
        elif cls == "ELU":
            layers.append(deepnet_layers.ELU(m.alpha))
        elif cls == "GELU":
            if m.approximate != "tanh":
                raise ValueError(f"module {i}: deepnet's GELU is the tanh form; got approximate={m.approximate!r}")
            layers.append(deepnet_layers.GELU())
        elif cls == "Softmax":
            layers.append(deepnet_layers.Softmax())
        elif cls == "Dropout":
            layers.append(deepnet_layers.Dropout(m.p))
        elif cls in ("BatchNorm1d", "BatchNorm2d") and not (m.affine and m.track_running_stats):
            raise ValueError(f"module {i} ({cls}): affine=False or track_running_stats=False has no deepnet "
                             "equivalent (deepnet's BatchNorm has γ, β and running statistics)")
        elif cls == "BatchNorm1d":
            momentum = deepnet_bn_momentum(m.momentum, f"module {i} (BatchNorm1d)")
            layers.append(deepnet_layers.BatchNorm(m.num_features, momentum=momentum, eps=m.eps))
        elif cls == "LayerNorm":
            layers.append(deepnet_layers.LayerNorm(int(m.normalized_shape[0]), eps=m.eps))
        elif cls == "BatchNorm2d":
            momentum = deepnet_bn_momentum(m.momentum, f"module {i} (BatchNorm2d)")
            layers.append(deepnet_layers.BatchNorm(m.num_features, momentum=momentum, eps=m.eps))
        elif cls == "Conv2d":
            if m.padding_mode != "zeros":
                raise ValueError(f"module {i} (Conv2d): padding_mode={m.padding_mode!r}; deepnet pads with zeros")
            layers.append(deepnet_layers.Conv2D(m.in_channels, m.out_channels, list(m.kernel_size),
                                                stride=list(m.stride), dilation=list(m.dilation),
                                                padding=m.padding if isinstance(m.padding, str) else list(m.padding),
                                                groups=m.groups, bias=m.bias is not None))
        elif cls in ("MaxPool2d", "AvgPool2d"):
            pair = (lambda v: [v, v] if isinstance(v, int) else list(v))
            if getattr(m, "ceil_mode", False) or (cls == "MaxPool2d" and pair(m.dilation) != [1, 1]):
                raise ValueError(f"module {i} ({cls}): ceil_mode and dilation have no deepnet equivalent")
            if cls == "AvgPool2d" and (not m.count_include_pad or m.divisor_override is not None):
                raise ValueError(f"module {i} (AvgPool2d): count_include_pad=False or divisor_override has no "
                                 "deepnet equivalent")
            make = deepnet_layers.MaxPool2D if cls == "MaxPool2d" else deepnet_layers.AvgPool2D
            layers.append(make(pair(m.kernel_size), stride=pair(m.stride), padding=pair(m.padding)))
        elif cls == "Sequential" and [_torch_kind(c) for c in m] == ["AdaptiveAvgPool2d", "Flatten"] \
                and m[0].output_size in (1, (1, 1)):
            layers.append(deepnet_layers.GlobalAvgPool2D())          # what to_torch writes for it
        elif cls == "Flatten":
            if m.start_dim != 1 or m.end_dim != -1:
                raise ValueError(f"module {i} (Flatten): only start_dim=1, end_dim=-1 maps to deepnet's Flatten")
            layers.append(deepnet_layers.Flatten())
        elif cls == "Unflatten":
            if m.dim != 1:
                raise ValueError(f"module {i} (Unflatten): only dim=1 maps to deepnet's Reshape")
            layers.append(deepnet_layers.Reshape(list(m.unflattened_size)))
        else:
            raise ValueError(f"module {i} ({cls}) has no deepnet equivalent")
    net = Network(layers, seed=seed, backend=backend)
    sd = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    weights = {}
    for name in net.parameters():
        idx, pname = name.split(".", 1)
        weights[name] = sd[f"{idx}.{_RENAME.get(pname, pname)}"]
    net.set_weights(weights)
    for i, layer in enumerate(net.layers):
        if layer.uses_batch_statistics:
            layer.load_state_arrays({k: sd[f"{i}.{k}"] for k in ("running_mean", "running_var") if f"{i}.{k}" in sd})
    return net
