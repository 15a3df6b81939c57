"""Exchange weights with PyTorch's ``torch.nn.Sequential`` (PyTorch optional).

deepnet's Dense weights are (n_out, n_in) like ``torch.nn.Linear`` and parameters are
named ``"<layer index>.<name>"`` like a ``Sequential``'s state dict, so a stack maps
layer for layer.  :func:`to_torch_state_dict` needs no PyTorch (NumPy arrays keyed as
PyTorch expects); :func:`to_torch` builds the module and :func:`from_torch` builds a deepnet
network from a ``Sequential``: both need PyTorch (``pip install torch``) and say so if it is
missing.

Blocks map child for child: a deepnet ``Sequential`` is a nested ``torch.nn.Sequential``;
``Residual``, ``Concatenate`` and ``Add`` become :class:`TorchResidual`,
:class:`TorchConcatenate` and :class:`TorchAdd`, small ``torch.nn.Module`` classes defined
here on first use (so that deepnet imports without PyTorch), their children named as
deepnet names them (``"1.block.0.weight"`` in both).

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


def torch_modules(net: Network) -> list[Any]:
    """The ``torch.nn`` class name and arguments for each layer, in order (a list of them for a
    layer that becomes a ``Sequential``: GlobalAvgPool2D, a deepnet ``Sequential``).  BatchNorm
    becomes ``BatchNorm2d`` where it sees images, ``BatchNorm1d`` on rows.  Blocks become
    deepnet's own modules: ``("TorchResidual", {"block": ..., "shortcut": ...})``,
    ``("TorchConcatenate", {"branches": [...], "dim": axis})``, ``("TorchAdd", {"branches": [...]})``."""
    out: list[Any] = []
    shape: tuple[int, ...] | None = net.input_shape
    for i, layer in enumerate(net.layers):
        if shape is None and layer.input_shape() is not None and i >= net.data_shaped_layers():
            shape = tuple(layer.input_shape())
        out.append(_entry(layer, shape, f"layer {i} ({layer.name})", ""))
        shape = None if shape is None else tuple(layer.output_shape(shape))
    return out


#: deepnet's blocks, exported as a ``torch.nn.Sequential`` or one of deepnet's torch modules
_BLOCKS = ("Sequential", "Residual", "Concatenate", "Add")


def _entry(layer: Any, shape: tuple[int, ...] | None, top: str, path: str) -> Any:
    """The torch entry of ``layer`` (at ``path`` inside the network's layer ``top``) for
    per-sample inputs of ``shape`` (None: not known)."""
    where = f"{top} at {path} ({layer.name})" if path else top
    kind = _builtin_kind(layer)
    if kind in _BLOCKS:
        shared = _shared(layer)
        if shared:
            raise ValueError(f"{where}: the {shared[2]} at {shared[0]} is the same object as at {shared[1]}; "
                             "a layer shared inside a block has no PyTorch export (use separate layers)")
        return _block_entry(kind, layer, shape, top, path)
    many = _TO_TORCH_SEQUENCE.get(kind)
    make = _TO_TORCH.get(kind)
    if many is None and make is None:
        raise ValueError(f"{where} has no PyTorch equivalent")
    entry = many(layer) if many is not None else make(layer)
    if kind == "BatchNorm" and shape is None:
        raise ValueError(f"{where}: whether it is BatchNorm1d or BatchNorm2d depends on the "
                         "input shape, not known yet: give Network(input_shape=...) or run the network on data first")
    if kind == "BatchNorm" and len(shape) == 3:  # type: ignore[arg-type]
        entry = ("BatchNorm2d", entry[1])
    return entry


def _block_entry(kind: str, layer: Any, shape: tuple[int, ...] | None, top: str, path: str) -> Any:
    """A block's entry, its children's entries nested (named as deepnet names them)."""
    def child(name: str, c: Any, s: tuple[int, ...] | None) -> Any:
        return _entry(c, s, top, f"{path}.{name}" if path else name)

    if kind == "Sequential":
        out = []
        for j, c in enumerate(layer.layers):
            out.append(child(str(j), c, shape))
            shape = None if shape is None else tuple(c.output_shape(shape))
        return out
    if kind == "Residual":
        short = None if layer.shortcut is None else child("shortcut", layer.shortcut, shape)
        return ("TorchResidual", {"block": child("block", layer.block, shape), "shortcut": short})
    branches = [child(str(j), b, shape) for j, b in enumerate(layer.branches)]
    if kind == "Concatenate":
        return ("TorchConcatenate", {"branches": branches, "dim": layer.axis})
    return ("TorchAdd", {"branches": branches})


def _shared(layer: Any) -> tuple[str, str, str] | None:
    """(first path, second path, name) of a layer object reached twice below ``layer``."""
    first: dict[int, str] = {}
    for path, c in _all_paths(layer, ""):
        if id(c) in first:
            return first[id(c)], path, c.name
        first[id(c)] = path
    return None


def _all_paths(layer: Any, prefix: str) -> list[tuple[str, Any]]:
    """(path, layer) below ``layer``, a layer declared twice at each of its paths."""
    out: list[tuple[str, Any]] = []
    for name, c in layer.sublayers().items():
        out.append((prefix + name, c))
        out.extend(_all_paths(c, f"{prefix}{name}."))
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
    """The torch module of an entry of :func:`torch_modules`."""
    if isinstance(entry, list):
        return torch.nn.Sequential(*(_module(torch, e) for e in entry))
    cls, kw = entry
    own = _torch_classes(torch)
    if cls == "TorchResidual":
        short = kw["shortcut"]
        return own[cls](_module(torch, kw["block"]), None if short is None else _module(torch, short))
    if cls in ("TorchConcatenate", "TorchAdd"):
        extra = {"dim": kw["dim"]} if cls == "TorchConcatenate" else {}
        return own[cls](*(_module(torch, e) for e in kw["branches"]), **extra)
    return getattr(torch.nn, cls)(**kw)


def to_torch_state_dict(net: Network) -> dict[str, np.ndarray]:
    """Weights keyed as the module :func:`to_torch` builds expects (NumPy; ``"0.weight"``, and
    inside blocks ``"1.block.0.weight"``)."""
    torch_modules(net)  # refuse unsupported layers early
    sd: dict[str, np.ndarray] = {}
    for i, layer in enumerate(net.layers):
        _layer_arrays(layer, f"{i}.", sd)
    return sd


def _layer_arrays(layer: Any, prefix: str, sd: dict[str, np.ndarray]) -> None:
    """Add ``layer``'s weights and statistics to ``sd``, a block's by its children's paths."""
    kind = _builtin_kind(layer)
    if kind in _BLOCKS:
        for name, c in layer.sublayers().items():
            _layer_arrays(c, f"{prefix}{name}.", sd)
        return
    for name, p in layer.parameters().items():
        sd[prefix + _RENAME.get(name, name)] = to_host(p.data).copy()
    for name, v in layer.state_arrays().items():
        sd[prefix + name] = v
    if kind == "BatchNorm":
        sd[prefix + "num_batches_tracked"] = np.array(0, dtype=np.int64)


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


#: deepnet's torch modules, defined on first use (PyTorch is optional)
_TORCH_CLASSES: dict[str, Any] = {}
_TORCH_NAMES = ("TorchResidual", "TorchConcatenate", "TorchAdd")


def _torch_classes(torch: Any) -> dict[str, Any]:
    """``TorchResidual``, ``TorchConcatenate`` and ``TorchAdd``: ``torch.nn.Module`` classes
    computing deepnet's ``Residual``, ``Concatenate`` and ``Add``, children named as deepnet
    names them (so state dict keys match deepnet's parameter names)."""
    if _TORCH_CLASSES:
        return _TORCH_CLASSES

    class TorchResidual(torch.nn.Module):  # type: ignore[misc,name-defined]
        """y = block(x) + shortcut(x), the shortcut the identity when None (deepnet's ``Residual``)."""

        def __init__(self, block: Any, shortcut: Any = None) -> None:
            super().__init__()
            self.block = block
            self.shortcut = shortcut

        def forward(self, x: Any) -> Any:
            return self.block(x) + (x if self.shortcut is None else self.shortcut(x))

    class _Branches(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self, *branches: Any) -> None:
            super().__init__()
            if not branches:
                raise ValueError(f"{type(self).__name__} needs at least one branch, got none")
            for i, b in enumerate(branches):
                self.add_module(str(i), b)

    class TorchConcatenate(_Branches):
        """Branches on the same input, outputs concatenated on ``dim`` (deepnet's ``Concatenate``)."""

        def __init__(self, *branches: Any, dim: int = 1) -> None:
            super().__init__(*branches)
            if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
                raise ValueError(f"TorchConcatenate: dim must be a positive integer (1: features or channels), "
                                 f"got {dim!r}")
            self.dim = dim

        def forward(self, x: Any) -> Any:
            return torch.cat([b(x) for b in self.children()], dim=self.dim)

        def extra_repr(self) -> str:
            return f"dim={self.dim}"

    class TorchAdd(_Branches):
        """Branches on the same input, outputs summed in order (deepnet's ``Add``)."""

        def forward(self, x: Any) -> Any:
            branches = list(self.children())
            y = branches[0](x)
            for b in branches[1:]:
                y = y + b(x)
            return y

    for cls in (TorchResidual, TorchConcatenate, TorchAdd):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__     # picklable as deepnet.interop.<name>
    _TORCH_CLASSES.update(TorchResidual=TorchResidual, TorchConcatenate=TorchConcatenate, TorchAdd=TorchAdd)
    return _TORCH_CLASSES


def __getattr__(name: str) -> Any:
    """``deepnet.interop.TorchResidual`` etc., defined when first asked for (they need PyTorch)."""
    if name in _TORCH_NAMES:
        return _torch_classes(_torch(name))[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_DTYPES = ("float32", "float64", "float16")


def to_torch(net: Network, dtype: str | None = None) -> Any:
    """A ``torch.nn.Sequential`` computing the same function, weights and BatchNorm statistics
    loaded, in evaluation mode; blocks become a nested ``Sequential``, :class:`TorchResidual`,
    :class:`TorchConcatenate` or :class:`TorchAdd`.  ``dtype``: the module's (default: the
    network's, float32 unless it was built otherwise).  Needs PyTorch
    (:func:`to_torch_state_dict` does not)."""
    torch = _torch("to_torch")
    name = net.dtype_name if dtype is None else dtype
    if name not in _DTYPES:
        raise ValueError(f"to_torch: dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    modules = [_module(torch, entry) for entry in torch_modules(net)]
    seq = torch.nn.Sequential(*modules).to(getattr(torch, name))
    state = {k: torch.from_numpy(np.asarray(v, order="C")) for k, v in to_torch_state_dict(net).items()}
    seq.load_state_dict(state)
    return seq.eval()


def from_torch(module: Any, seed: int = 0, backend: str | None = None, dtype: str | None = None) -> Any:
    """Build a deepnet :class:`~deepnet.Network` from a ``torch.nn.Sequential`` (needs PyTorch):
    nested ``Sequential`` modules become deepnet ``Sequential`` blocks, :class:`TorchResidual`,
    :class:`TorchConcatenate` and :class:`TorchAdd` deepnet's ``Residual``, ``Concatenate`` and
    ``Add``.  ``dtype``: the network's (default: that of the module's parameters)."""
    torch = _torch("from_torch")
    if not isinstance(module, torch.nn.Sequential):
        raise TypeError(f"from_torch: expected a torch.nn.Sequential, got {type(module).__name__}")
    if len(module) == 0:
        raise ValueError("from_torch: the Sequential is empty; a network needs at least one layer")
    _refuse_shared_modules(module)
    name = dtype or _module_dtype(module)
    if name not in _DTYPES:
        raise ValueError(f"from_torch: dtype must be one of {', '.join(_DTYPES)}, got {name!r}")
    sources: dict[int, Any] = {}
    layers = [_from_module(torch, m, str(key), sources) for key, m in module.named_children()]
    net = Network(layers, seed=seed, backend=backend, dtype=name)
    weights: dict[str, Any] = {}
    for i, top in enumerate(net.layers):
        for path, layer in [("", top), *top.walk()]:
            m = sources.get(id(layer))
            if m is None:
                continue
            prefix = f"{i}.{path}." if path else f"{i}."
            sd = {k: v.detach().cpu().numpy() for k, v in m.state_dict().items()}
            for pname in layer.parameters():
                weights[prefix + pname] = sd[_RENAME.get(pname, pname)]
            if layer.uses_batch_statistics:
                layer.load_state_arrays({k: sd[k] for k in ("running_mean", "running_var") if k in sd})
    net.set_weights(weights)
    return net


def _module_dtype(module: Any) -> str:
    """The dtype name of a module's first floating parameter (float32 when it has none)."""
    for p in module.parameters():
        if p.is_floating_point():
            return str(p.dtype).removeprefix("torch.")
    return "float32"


def _refuse_shared_modules(module: Any) -> None:
    """One torch module at two places would become two deepnet layers with their own weights."""
    first: dict[int, str] = {}

    def visit(m: Any, prefix: str) -> None:
        for name, c in m._modules.items():
            if c is None:
                continue
            path = prefix + name
            if id(c) in first:
                raise ValueError(f"module {path} ({type(c).__name__}) is the same module object as module "
                                 f"{first[id(c)]}: a shared module has no deepnet import (use separate modules)")
            first[id(c)] = path
            visit(c, path + ".")

    visit(module, "")


def _from_module(torch: Any, m: Any, where: str, sources: dict[int, Any]) -> Any:
    """The deepnet layer for torch module ``m`` (at ``where``, e.g. ``"1.block.0"``); a layer
    that holds weights or statistics is recorded in ``sources`` with the module they come from."""
    own = _torch_classes(torch)
    if type(m) is own["TorchResidual"]:
        block = _from_module(torch, m.block, f"{where}.block", sources)
        short = None if m.shortcut is None else _from_module(torch, m.shortcut, f"{where}.shortcut", sources)
        return deepnet_layers.Residual(block, short)
    if type(m) in (own["TorchConcatenate"], own["TorchAdd"]):
        branches = [_from_module(torch, b, f"{where}.{k}", sources) for k, b in m.named_children()]
        if type(m) is own["TorchAdd"]:
            return deepnet_layers.Add(*branches)
        return deepnet_layers.Concatenate(*branches, axis=m.dim)
    cls = _torch_kind(m)
    if cls == "Sequential" and [_torch_kind(c) for c in m] == ["AdaptiveAvgPool2d", "Flatten"] \
            and m[0].output_size in (1, (1, 1)):
        return deepnet_layers.GlobalAvgPool2D()          # what to_torch writes for it
    if cls == "Sequential":
        if len(m) == 0:
            raise ValueError(f"module {where} (Sequential) is empty; a deepnet Sequential needs at least one layer")
        return deepnet_layers.Sequential(*(_from_module(torch, c, f"{where}.{k}", sources)
                                           for k, c in m.named_children()))
    layer = _leaf_from_module(m, cls, where)
    if m.state_dict():
        sources[id(layer)] = m
    return layer


#: torch.nn modules without settings whose deepnet layer has the same name
_SAME_NAMED: dict[str, type[deepnet_layers.Layer]] = {
    "ReLU": deepnet_layers.ReLU, "Sigmoid": deepnet_layers.Sigmoid, "Tanh": deepnet_layers.Tanh,
    "Identity": deepnet_layers.Identity, "Softplus": deepnet_layers.Softplus}


def _leaf_from_module(m: Any, cls: str, where: str) -> Any:
    """The deepnet layer for a ``torch.nn`` module that holds no modules (``cls``: its class)."""
    i = where                                       # "1", or "1.block.0" inside a block
    if cls == "Linear":
        return deepnet_layers.Dense(m.in_features, m.out_features, bias=m.bias is not None)
    if cls in _SAME_NAMED:
        return _SAME_NAMED[cls]()
    if cls == "LeakyReLU":
        return deepnet_layers.LeakyReLU(m.negative_slope)
    if cls == "ELU":
        return deepnet_layers.ELU(m.alpha)
    if cls == "GELU":
        if m.approximate != "tanh":
            raise ValueError(f"module {i}: deepnet's GELU is the tanh form; got approximate={m.approximate!r}")
        return deepnet_layers.GELU()
    if cls == "Softmax":
        return deepnet_layers.Softmax()
    if cls == "Dropout":
        return deepnet_layers.Dropout(m.p)
    if cls in ("BatchNorm1d", "BatchNorm2d"):
        if not (m.affine and m.track_running_stats):
            raise ValueError(f"module {i} ({cls}): affine=False or track_running_stats=False has no deepnet "
                             "equivalent (deepnet's BatchNorm has γ, β and running statistics)")
        momentum = deepnet_bn_momentum(m.momentum, f"module {i} ({cls})")
        return deepnet_layers.BatchNorm(m.num_features, momentum=momentum, eps=m.eps)
    if cls == "LayerNorm":
        return deepnet_layers.LayerNorm(int(m.normalized_shape[0]), eps=m.eps)
    if cls == "Conv2d":
        if m.padding_mode != "zeros":
            raise ValueError(f"module {i} (Conv2d): padding_mode={m.padding_mode!r}; deepnet pads with zeros")
        return deepnet_layers.Conv2D(m.in_channels, m.out_channels, list(m.kernel_size),
                                     stride=list(m.stride), dilation=list(m.dilation),
                                     padding=m.padding if isinstance(m.padding, str) else list(m.padding),
                                     groups=m.groups, bias=m.bias is not None)
    if cls in ("MaxPool2d", "AvgPool2d"):
        pair = (lambda v: [v, v] if isinstance(v, int) else list(v))
        if getattr(m, "ceil_mode", False) or (cls == "MaxPool2d" and pair(m.dilation) != [1, 1]):
            raise ValueError(f"module {i} ({cls}): ceil_mode and dilation have no deepnet equivalent")
        if cls == "AvgPool2d" and (not m.count_include_pad or m.divisor_override is not None):
            raise ValueError(f"module {i} (AvgPool2d): count_include_pad=False or divisor_override has no "
                             "deepnet equivalent")
        make = deepnet_layers.MaxPool2D if cls == "MaxPool2d" else deepnet_layers.AvgPool2D
        return make(pair(m.kernel_size), stride=pair(m.stride), padding=pair(m.padding))
    if cls == "Flatten":
        if m.start_dim != 1 or m.end_dim != -1:
            raise ValueError(f"module {i} (Flatten): only start_dim=1, end_dim=-1 maps to deepnet's Flatten")
        return deepnet_layers.Flatten()
    if cls == "Unflatten":
        if m.dim != 1:
            raise ValueError(f"module {i} (Unflatten): only dim=1 maps to deepnet's Reshape")
        return deepnet_layers.Reshape(list(m.unflattened_size))
    raise ValueError(f"module {i} ({cls}) has no deepnet equivalent")
