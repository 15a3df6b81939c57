"""Export a network to ONNX (opset 17 by default), the format deployment runtimes read.

``net.to_onnx("model.onnx")`` (or ``deepnet export model.npz model.onnx``) writes the network in
evaluation form: one input ``"input"`` of shape (batch, *net.input_shape) with a named batch
dimension ``"batch"``, one output ``"output"``.  Dropout and the augmentation layers are the
identity (RandomCrop: its centred crop), BatchNorm uses its running statistics.  Every built-in
layer is exported; BatchNorm, LayerNorm and GELU are written as the elementwise operations
deepnet computes (so outputs agree to float32 rounding), the rest as the matching ONNX operator.

A layer of one's own exports itself by defining ``to_onnx(self, graph, x) -> str``: ``x`` is the
name of its input in the graph, the return value the name of its output, and ``graph`` an
:class:`OnnxGraph` (``graph.op(...)`` adds a node, ``graph.constant(...)`` a constant,
``graph.param(self, "weight")`` a parameter's values, ``graph.layer(child, x)`` a child
layer).  A layer that is neither built in nor defines it is refused by name.

Needs the optional ``onnx`` package (``pip install 'deepnet[onnx]'``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .backend import to_host
from .layers import (ELU, GELU, Add, AvgPool2D, BatchNorm, Concatenate, Conv2D, Dense, Dropout, Flatten,
                     GlobalAvgPool2D, Identity, LayerNorm, LeakyReLU, MaxPool2D, RandomCrop, RandomFlip,
                     RandomShift, ReLU, Reshape, Residual, Sequential, Sigmoid, Softmax, Softplus, Tanh)
from .layers.base import Layer
from .model_files import atomic_write
from .version import __version__

#: the ONNX opset written by default (LayerNormalization-era runtimes: ONNX Runtime ≥ 1.13,
#: TensorRT 8.6, OpenVINO 2022.3, PyTorch's exporter default)
DEFAULT_OPSET = 17
#: √(2/π) of GELU's tanh form (deepnet.layers.GELU)
_GELU_C = 0.7978845608028654
#: the IR version matching opset 17
_IR_VERSION = 8


class OnnxExportError(ValueError):
    """A network (or one of its layers) that cannot be written to ONNX, with the reason."""


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ModuleNotFoundError("ONNX export needs the onnx package: pip install 'deepnet[onnx]'",
                                  name="onnx") from None
    return onnx


class OnnxGraph:
    """The graph being built: nodes, constants (initializers) and the per-sample shape of each value."""

    def __init__(self, dtype: Any, opset: int = DEFAULT_OPSET) -> None:
        self.onnx = _onnx()
        self.dtype, self.opset = np.dtype(dtype), int(opset)
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        #: per-sample shapes of the values whose shape is known (without the batch axis)
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._names: set[str] = set()
        self._params: dict[int, str] = {}
        #: the path of the layer being exported (e.g. "3.block.0"): the prefix of the names it adds
        self.path = "layer"

    def fresh(self, hint: str) -> str:
        """A value name not used yet, from ``hint``."""
        name, k = hint, 1
        while name in self._names:
            k += 1
            name = f"{hint}_{k}"
        self._names.add(name)
        return name

    def constant(self, value: Any, hint: str = "const", dtype: Any = None) -> str:
        """A constant (initializer) holding ``value``, in the network's float dtype unless ``dtype``."""
        array = np.asarray(value, dtype=self.dtype if dtype is None else dtype)
        name = self.fresh(f"{self.path}.{hint}")
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def param(self, layer: Layer, key: str) -> str:
        """Parameter ``key`` of ``layer`` as a constant (a shared parameter: one constant)."""
        p = layer.parameters()[key]
        if id(p) not in self._params:
            self._params[id(p)] = self.constant(to_host(p.data), key)
        return self._params[id(p)]

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        """Add node ``op_type`` on ``inputs`` (value names; "" for an omitted optional one); its output's name."""
        out = self.fresh(f"{self.path}.{op_type}")
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def reduce_mean(self, x: str, axes: list[int], keepdims: int = 1) -> str:
        """ReduceMean over ``axes`` (an attribute up to opset 17, an input from 18)."""
        if self.opset >= 18:
            return self.op("ReduceMean", x, self.constant(axes, "axes", np.int64), keepdims=keepdims)
        return self.op("ReduceMean", x, axes=axes, keepdims=keepdims)

    def layer(self, layer: Layer, x: str, path: str | None = None) -> str:
        """Export ``layer`` on input ``x``; the name of its output."""
        outer = self.path
        self.path = path or f"{outer}.{type(layer).__name__}"
        try:
            out = _export_one(self, layer, x)
        finally:
            self.path = outer
        shape = self.shapes.get(x)
        if shape is not None:
            self.shapes[out] = tuple(int(d) for d in layer.output_shape(shape))
        return out


# ---------------------------------------------------------------------------- the layers
def _refuse(layer: Layer, reason: str) -> OnnxExportError:
    return OnnxExportError(f"{layer.name} cannot be exported to ONNX: {reason}")


def _export_one(g: OnnxGraph, layer: Layer, x: str) -> str:
    if layer.to_onnx is not None:       # the layer's own export (Layer.to_onnx)
        return layer.to_onnx(g, x)
    fn = _EXPORTS.get(type(layer))
    if fn is None:
        raise _refuse(layer, "it is not a built-in layer and defines no to_onnx(graph, x) method "
                             "(see deepnet.onnx_export, docs/after-training.md)")
    return fn(g, layer, x)


def _dense(g: OnnxGraph, layer: Any, x: str) -> str:
    inputs = [x, g.param(layer, "weight")] + ([g.param(layer, "bias")] if layer.bias else [])
    return g.op("Gemm", *inputs, transB=1)


def _unary(op_type: str) -> Callable[[OnnxGraph, Any, str], str]:
    return lambda g, layer, x: g.op(op_type, x)


def _gelu(g: OnnxGraph, layer: Any, x: str) -> str:
    # deepnet's form: x·σ(2c(x + 0.044715x³)), c = √(2/π), in the same order of operations
    x3 = g.op("Mul", g.op("Mul", x, x), x)
    u = g.op("Add", x, g.op("Mul", x3, g.constant(0.044715, "k")))
    return g.op("Mul", g.op("Sigmoid", g.op("Mul", u, g.constant(2 * _GELU_C, "2c"))), x)


def _normalize(g: OnnxGraph, x: str, mu: str, inv_std: str, gamma: str, beta: str) -> str:
    """y = (x − μ)·(1/σ)·γ + β, as deepnet's BatchNorm and LayerNorm compute it."""
    return g.op("Add", g.op("Mul", g.op("Mul", g.op("Sub", x, mu), inv_std), gamma), beta)


def _batchnorm(g: OnnxGraph, layer: Any, x: str) -> str:
    shape = g.shapes.get(x)
    if shape is None:
        raise _refuse(layer, "the shape of its input is unknown (give the network input_shape=)")
    b = (layer.n_in,) + (1,) * (len(shape) - 1)          # per channel of images, per feature of rows
    host = {k: np.asarray(to_host(v), dtype=g.dtype) for k, v in
            (("mean", layer.running_mean), ("var", layer.running_var))}
    inv_std = (g.dtype.type(1.0) / np.sqrt(host["var"] + g.dtype.type(layer.eps))).astype(g.dtype)
    gamma = np.asarray(to_host(layer.parameters()["gamma"].data), dtype=g.dtype)
    beta = np.asarray(to_host(layer.parameters()["beta"].data), dtype=g.dtype)
    return _normalize(g, x, g.constant(host["mean"].reshape(b), "running_mean"),
                      g.constant(inv_std.reshape(b), "inv_std"), g.constant(gamma.reshape(b), "gamma"),
                      g.constant(beta.reshape(b), "beta"))


def _layernorm(g: OnnxGraph, layer: Any, x: str) -> str:
    mu = g.reduce_mean(x, [1])
    d = g.op("Sub", x, mu)
    var = g.reduce_mean(g.op("Mul", d, d), [1])
    inv_std = g.op("Div", g.constant(1.0, "one"), g.op("Sqrt", g.op("Add", var, g.constant(layer.eps, "eps"))))
    return g.op("Add", g.op("Mul", g.op("Mul", d, inv_std), g.param(layer, "gamma")), g.param(layer, "beta"))


def _conv(g: OnnxGraph, layer: Any, x: str) -> str:
    w = layer.window
    inputs = [x, g.param(layer, "weight")] + ([g.param(layer, "bias")] if layer.bias else [])
    return g.op("Conv", *inputs, kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                pads=[w.pt, w.pl, w.pb, w.pr], dilations=list(layer.dilation), group=layer.groups)


def _pool(op_type: str, **extra: Any) -> Callable[[OnnxGraph, Any, str], str]:
    def export(g: OnnxGraph, layer: Any, x: str) -> str:
        w = layer.window
        return g.op(op_type, x, kernel_shape=list(layer.pool_size), strides=list(layer.stride),
                    pads=[w.pt, w.pl, w.pb, w.pr], **extra)
    return export


def _reshape(g: OnnxGraph, layer: Any, x: str) -> str:
    return g.op("Reshape", x, g.constant([0, *layer.shape], "shape", np.int64))     # 0: the batch, as given


def _crop(g: OnnxGraph, layer: Any, x: str) -> str:
    """Evaluation: the centred crop (the identity when the crop keeps the size)."""
    shape = g.shapes.get(x)
    if shape is None:
        raise _refuse(layer, "the shape of its input is unknown (give the network input_shape=)")
    _, h, w = shape
    oh, ow = (h, w) if layer.size is None else layer.size
    if (oh, ow) == (h, w):
        return g.op("Identity", x)
    t, left = (h - oh) // 2, (w - ow) // 2
    return g.op("Slice", x, g.constant([t, left], "starts", np.int64), g.constant([t + oh, left + ow], "ends", np.int64),
                g.constant([2, 3], "axes", np.int64))


def _sequential(g: OnnxGraph, layer: Any, x: str) -> str:
    for i, child in enumerate(layer.layers):
        x = g.layer(child, x, f"{g.path}.{i}")
    return x


def _residual(g: OnnxGraph, layer: Any, x: str) -> str:
    y = g.layer(layer.block, x, f"{g.path}.block")
    s = x if layer.shortcut is None else g.layer(layer.shortcut, x, f"{g.path}.shortcut")
    return g.op("Add", y, s)


def _branches(g: OnnxGraph, layer: Any, x: str) -> list[str]:
    return [g.layer(b, x, f"{g.path}.{i}") for i, b in enumerate(layer.branches)]


def _concatenate(g: OnnxGraph, layer: Any, x: str) -> str:
    return g.op("Concat", *_branches(g, layer, x), axis=layer.axis)


def _add(g: OnnxGraph, layer: Any, x: str) -> str:
    ys = _branches(g, layer, x)
    y = ys[0]
    for other in ys[1:]:
        y = g.op("Add", y, other)
    return y


_EXPORTS: dict[type, Callable[[OnnxGraph, Any, str], str]] = {
    Dense: _dense,
    Identity: _unary("Identity"), Sigmoid: _unary("Sigmoid"), Tanh: _unary("Tanh"), ReLU: _unary("Relu"),
    Softplus: _unary("Softplus"),
    Softmax: lambda g, layer, x: g.op("Softmax", x, axis=1),
    LeakyReLU: lambda g, layer, x: g.op("LeakyRelu", x, alpha=layer.slope),
    ELU: lambda g, layer, x: g.op("Elu", x, alpha=layer.alpha),
    GELU: _gelu,
    Dropout: _unary("Identity"), RandomFlip: _unary("Identity"), RandomCrop: _crop, RandomShift: _crop,
    BatchNorm: _batchnorm, LayerNorm: _layernorm,
    Conv2D: _conv, MaxPool2D: _pool("MaxPool"), AvgPool2D: _pool("AveragePool", count_include_pad=1),
    GlobalAvgPool2D: lambda g, layer, x: g.reduce_mean(x, [2, 3], keepdims=0),
    Flatten: lambda g, layer, x: g.op("Flatten", x, axis=1), Reshape: _reshape,
    Sequential: _sequential, Residual: _residual, Concatenate: _concatenate, Add: _add,
}


# ---------------------------------------------------------------------------- the network
def _input_shape(net: Any, input_shape: Any) -> tuple[int, ...]:
    shape = net.input_shape if input_shape is None else tuple(int(d) for d in input_shape)
    if shape is None:
        raise OnnxExportError("to_onnx: the network records no input shape (it has seen no data and its first "
                              f"layer {net.layers[0].name} does not fix one); give input_shape=, one sample's shape")
    return tuple(shape)


def onnx_model(net: Any, *, input_shape: Any = None, opset: int = DEFAULT_OPSET, batch_name: str = "batch") -> Any:
    """The network as an ``onnx.ModelProto`` (evaluation form; see the module's docstring)."""
    onnx = _onnx()
    if not isinstance(opset, int) or isinstance(opset, bool) or not 17 <= opset <= onnx.defs.onnx_opset_version():
        raise OnnxExportError(f"to_onnx: opset must be an int from 17 to {onnx.defs.onnx_opset_version()} "
                              f"(this onnx package's newest), got {opset!r}")
    shape = _input_shape(net, input_shape)
    dtype = np.dtype(net.dtype_name)
    g = OnnxGraph(dtype, opset)
    x = g.fresh("input")
    g.shapes[x] = shape
    for i, layer in enumerate(net.layers):
        try:
            x = g.layer(layer, x, f"{i}")
        except OnnxExportError as err:
            raise OnnxExportError(f"to_onnx: layer {i} ({layer.name}): {err}") from None
    out_shape = g.shapes.get(x)
    x = g.op("Identity", x)
    g.nodes[-1].output[0] = "output"
    elem = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    graph = onnx.helper.make_graph(
        g.nodes, "deepnet", [onnx.helper.make_tensor_value_info("input", elem, [batch_name, *shape])],
        [onnx.helper.make_tensor_value_info("output", elem, None if out_shape is None else [batch_name, *out_shape])],
        g.initializers)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)],
                                   producer_name="deepnet", producer_version=__version__)
    model.ir_version = max(_IR_VERSION, onnx.helper.find_min_ir_version_for([model.opset_import[0]]))
    return model


def export_onnx(net: Any, path: str | os.PathLike[str], *, input_shape: Any = None, opset: int = DEFAULT_OPSET,
                batch_name: str = "batch") -> Path:
    """Write ``net`` to ``path`` as ONNX, checked with ``onnx.checker``; returns the path."""
    onnx = _onnx()
    model = onnx_model(net, input_shape=input_shape, opset=opset, batch_name=batch_name)
    onnx.checker.check_model(model)
    path = Path(path)
    data = model.SerializeToString()
    atomic_write(path, lambda fh: fh.write(data))
    return path
