"""Network: a sequential stack of layers trained by explicit backpropagation.

Forward applies the layers in order.  Backward walks them in reverse, handing each
layer the error from the layer above and passing the error it returns (ẽ) to the layer
below, which is the derivation's hidden-layer step applied L times.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .backend import Array, Ops, get_backend, get_ops, host_rng, to_device, to_host
from .backend.host import host_concat
from .checkpoint import Checkpointer
from .errors import NonFiniteError, ShapeError
from .training import FitSettings, History, Trainer
from .training.data import device_inputs, device_targets
from .training.evaluation import evaluate_batches
from .layers.base import Layer, Parameter
from .losses import Loss, get_loss
from .onnx_export import DEFAULT_OPSET, export_onnx
from .optimizers import Optimizer, get_optimizer


class Network:
    """A sequential stack of :class:`~deepnet.layers.Layer` objects.

    ``seed`` seeds the run's single host generator: initial weights are drawn from it
    on the host (so every backend starts from the same network), and so are shuffles.

    ``input_shape``: one sample's shape, e.g. ``(1, 28, 28)`` for a network that takes
    (n, 1, 28, 28) images; needed only where no layer decides it (a first ``Conv2D`` knows its
    channels, not the image size), and otherwise taken from the first data given to
    ``fit``/``predict``/``evaluate`` (:meth:`inputs_shape`).  A network starting with
    ``Dense`` or ``Reshape`` takes rows (n, k), as it always has.

    Every component computes on the network's backend, and gets it one way: the network
    hands it over when it takes the component (layers: ``layer.to(ops)``; the loss and the
    optimizer: ``bind(ops)`` when assigned to :attr:`loss` / :attr:`optimizer`) and again
    when it moves (:meth:`to`).
    """

    def __init__(self, layers: Sequence[Layer], seed: int | None = 0, backend: str | Ops | None = None,
                 dtype: str = "float32", loss: str | Loss | None = None,
                 optimizer: str | Optimizer | None = None,
                 input_shape: Sequence[int] | None = None) -> None:
        layers = list(layers)
        if not layers:
            raise ValueError("Network needs at least one layer, got an empty list")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Network: layer {i} must be a deepnet Layer, got {type(layer).__name__}")
        _refuse_shared_across(layers)
        self.layers = layers
        self.ops = get_backend() if backend is None else get_ops(backend)
        self.dtype_name = Ops.dtype_name(dtype)
        if self.dtype_name not in ("float32", "float64", "float16"):
            raise ValueError(f"Network: dtype must be float32, float64 or float16, got {dtype!r}")
        self.seed = seed
        self.rng = host_rng(seed)
        self._loss: Loss | None = None
        self._optimizer: Optimizer | None = None
        self.loss = loss             # type: ignore[assignment]  (the setters resolve names and bind)
        self.optimizer = optimizer   # type: ignore[assignment]
        self.stop_training = False
        #: set with ``stop_training`` by a callback that ends the run for good (e.g. early
        #: stopping): checkpoints record it, and resuming such a run trains nothing
        self.stop_reason: str | None = None
        self.diagnostics: Any = None
        self.step_count = 0
        #: what a run or a loaded model file noted about the model (``deepnet.io.load_model``)
        self.metadata: dict[str, Any] = {}
        for layer in layers:
            was_initialized = layer.initialized     # kept by Layer: add_param sets it
            layer.to(self.ops, self.dtype_name)
            if not was_initialized:
                layer.initialize(self.rng)
                layer.initialized = True            # reused in another Network: keeps its parameters
        #: the per-sample shape of the inputs: (k,) for rows, (C, H, W) for images; None until
        #: the first data fixes it when no layer decides it (a network starting with Conv2D)
        self.input_shape: tuple[int, ...] | None = None
        #: where :attr:`input_shape` came from: "layers", "input_shape=" or "the first data"
        self.input_shape_source = "layers"
        self.output_width: int | None = None
        if input_shape is not None:         # walked from it through every layer
            self._set_input_shape(_shape_argument(input_shape), "Network")
            self.input_shape_source = "input_shape="
        else:
            self.output_width = self._check_widths()
            self.input_shape = self._declared_input_shape()
        self._params = self._collect_params()
        self._param_list = list(self._params.values())
        self._lowest_trained = self._backward_floor()
        #: called with each layer's index as backward finishes it (data-parallel training
        #: starts reducing gradients then); None: nothing is called
        self.backward_hook: Any = None
        self._replica = 0
        self._device_seed: int | None = None
        self._device_rng = None
        self._give_rng()

    # ------------------------------------------------------------------ structure
    def _check_widths(self) -> int | None:
        """The output width, walking the per-sample shapes (``Layer.input_shape`` /
        ``Layer.output_shape``) from the first layer that declares its input shape: rows (k,)
        or NCHW images (C, H, W) inside; a network gives rows.  When the input shape comes
        with the data, the walk starts after the last layer whose output depends on it
        (convolution, pooling, Flatten); None: the output width too waits for the data."""
        known = self._declared_input_shape() is not None
        begin = 0 if known else self.data_shaped_layers()
        shape: tuple[int, ...] | None = None
        for i, layer in enumerate(self.layers[begin:], begin):
            want = layer.input_shape()
            if want is not None and shape is not None and tuple(shape) != tuple(want):
                refusal = _refusal(layer, shape)            # None: it takes it (BatchNorm(C) on (C, H, W) images)
                if refusal is not None and len(want) == 1 == len(shape):
                    raise ShapeError(f"Network: layer {i} ({layer.name}) expects inputs of width {want[0]}, "
                                     f"but the layers before it produce width {shape[0]}")
                if refusal is not None:
                    raise ShapeError(f"Network: layer {i} ({layer.name}): {refusal}")
            if shape is None and want is None:
                continue
            try:
                shape = tuple(layer.output_shape(tuple(want) if shape is None else shape))
            except ShapeError as err:
                raise ShapeError(f"Network: layer {i} ({layer.name}): {err}") from None
        if shape is None and (known or begin == 0):
            raise ValueError("Network: cannot infer the output width; the stack needs a layer that declares its "
                             "input size (Dense, or Reshape to start a convolutional network)")
        if shape is None:
            return None
        if len(shape) != 1:
            raise ShapeError(f"Network: the last layer outputs per-sample shape {shape}, but a network outputs "
                             "rows (n, k): end with Flatten (or GlobalAvgPool2D) and a Dense layer")
        return shape[0]

    def data_shaped_layers(self) -> int:
        """How many layers from the first see shapes that depend on the input's: up to the
        last one whose output does (convolution, pooling, Flatten), when the layers do not
        decide the input shape."""
        return 1 + max((i for i, layer in enumerate(self.layers) if _opens_shape(layer)), default=-1)

    def _declared_input_shape(self) -> tuple[int, ...] | None:
        """The input shape the layers decide alone: that of the first layer declaring a whole
        shape (``Layer.input_spec``) when every layer before it keeps its input's shape
        (activations, dropout); None when it depends on the data (a first Conv2D, pooling or
        Flatten: the images' height and width are not written anywhere)."""
        for layer in self.layers:
            spec = layer.input_spec()
            if spec is not None:
                return tuple(int(d) for d in spec) if None not in spec else None
            if not _keeps_shape(layer):
                return None
        return None

    @property
    def input_width(self) -> int | None:
        """Values per sample (the width of rows; C·H·W for images); None until known."""
        return None if self.input_shape is None else math.prod(self.input_shape)

    def _set_input_shape(self, shape: tuple[int, ...], where: str, data: tuple[int, ...] | None = None) -> None:
        """Fix the per-sample input shape after walking it through every layer (errors name
        the layer and the shapes; ``data``: the shape of the data it comes from)."""
        first = self.layers[0]
        spec = first.input_spec()
        given = data if data is not None else ("n", *shape)
        if spec is not None and (len(spec) != len(shape) or any(w is not None and w != d for w, d in zip(spec, shape))) \
                and _refusal(first, shape) is not None:      # BatchNorm(C) first takes (C, H, W) images too
            raise ShapeError(f"{where}: {_first_layer_refuses(first, spec, given)}")
        out = shape
        for i, layer in enumerate(self.layers):
            try:
                out = tuple(int(d) for d in layer.output_shape(out))
            except ShapeError as err:
                raise ShapeError(f"{where}: inputs {_dims(given)} do not fit layer {i} ({layer.name}): {err}") from None
        if len(out) != 1 or (self.output_width is not None and out != (self.output_width,)):
            raise ShapeError(f"{where}: inputs {_dims(given)} give outputs of shape (n, {', '.join(map(str, out))}), "
                             f"but a network outputs rows (n, {self.output_width or 'k'}): end with Flatten "
                             "(or GlobalAvgPool2D) and a Dense layer")
        self.input_shape, self.output_width = shape, out[0]

    def inputs_shape(self, shape: Sequence[int], where: str) -> tuple[int, ...]:
        """The per-sample input shape for data of ``shape`` (n, ...): the network's own, or,
        while it has none, the data's, checked through every layer and kept from then on
        (as a Keras model is built by its first call).  A mismatch raises a one-line ShapeError
        naming the layer and both shapes."""
        shape = tuple(int(d) for d in shape)
        own = self.input_shape
        if own is None:
            if len(shape) < 2:
                raise ShapeError(f"{where}: inputs X must be a batch (n, ...) of samples, got shape {shape}")
            self._set_input_shape(shape[1:], where, shape)
            self.input_shape_source = "the first data"
            return shape[1:]
        if shape[1:] == own or shape == own or (len(own) == 1 and len(shape) <= 2):
            return own                  # rows: as_host_inputs words a mismatch of width as it always has
        layer = self.layers[0]
        spec = layer.input_spec()
        if spec is not None and tuple(spec) == own:
            raise ShapeError(f"{where}: {_first_layer_refuses(layer, spec, shape)}")
        source = {"input_shape=": " (its input_shape)", "the first data": " (from the first data it was given)"}
        raise ShapeError(f"{where}: the network takes inputs {_dims(('n', *own))}{source.get(self.input_shape_source, '')}, "
                         f"got X of shape {_dims(shape)}{_reshape_hint(own, shape)}")

    def _collect_params(self) -> dict[str, Parameter]:
        params: dict[str, Parameter] = {}
        for i, layer in enumerate(self.layers):
            for name, p in layer.parameters().items():
                p.name = f"{i}.{name}"
                params[p.name] = p
        return params

    def _backward_floor(self) -> int:
        """The lowest layer backward calls: the first one with parameters, unless a layer below
        it must see the error (``Layer.backward_free`` False); layers below are skipped."""
        for i, layer in enumerate(self.layers):
            if layer.parameters() or not layer.backward_free:
                return i
        return 0

    @property
    def lowest_trained(self) -> int:
        """Index of the lowest layer backward calls (with ``need_input_grad=False``): no input
        error is computed there, so the backend may lay out its parameters for that
        (``Ops.training_layout``)."""
        return self._lowest_trained

    def parameters(self) -> dict[str, Parameter]:
        """All parameters by stable name ``"<layer index>.<name>"`` (e.g. ``"0.weight"``)."""
        return self._params

    @property
    def n_params(self) -> int:
        return sum(math.prod(p.shape) for p in self._params.values())

    def zero_grad(self) -> None:
        """Mark every ∂f/∂θ stale: the next backward pass writes instead of adding."""
        for p in self._param_list:
            p.zero_grad()

    def get_weights(self) -> dict[str, Any]:
        """Host (NumPy) copies of every parameter, by name."""
        return {name: to_host(p.data).copy() for name, p in self._params.items()}

    def set_weights(self, weights: dict[str, Any]) -> None:
        """Load host arrays by name; shapes must match exactly."""
        missing = set(self._params) - set(weights)
        extra = set(weights) - set(self._params)
        if missing or extra:
            raise KeyError(f"set_weights: missing {sorted(missing)}, unexpected {sorted(extra)}")
        for name, p in self._params.items():
            w = weights[name]
            if tuple(w.shape) != p.shape:
                raise ShapeError(f"set_weights: parameter {name} has shape {p.shape}, got {tuple(w.shape)}")
        # converted (and copied) first: a value may alias another parameter (e.g. swapping two)
        values = {name: to_device(weights[name], self.ops, dtype=self.dtype_name, copy=True) for name in self._params}
        for name, p in self._params.items():
            p.assign(values[name])

    def _give_rng(self) -> None:
        """Hand the run's device generator to layers that draw random numbers (dropout)."""
        for layer in self.layers:
            if layer.stochastic:
                layer.set_rng(self.device_rng())

    def to(self, backend: str | Ops) -> Network:
        """Move the whole network (and its optimizer state) to another backend, in place.

        Dropout masks after the move come from a generator on the new backend, seeded
        from the run's host generator."""
        ops = get_ops(backend)
        for layer in self.layers:
            layer.to(ops, self.dtype_name)
        self.ops = ops
        self._device_rng = self._device_seed = None
        self._give_rng()
        self.loss, self.optimizer = self._loss, self._optimizer      # bound to the new backend
        return self

    @property
    def loss(self) -> Loss | None:
        """The loss ``fit`` and ``evaluate`` use, bound to this network's backend."""
        return self._loss

    @loss.setter
    def loss(self, value: str | Loss | None) -> None:
        self._loss = None if value is None else get_loss(value).bind(self.ops)

    @property
    def optimizer(self) -> Optimizer | None:
        """The optimizer ``fit`` uses, bound to this network's backend (its state moves with it)."""
        return self._optimizer

    @optimizer.setter
    def optimizer(self, value: str | Optimizer | None) -> None:
        self._optimizer = None if value is None else get_optimizer(value).bind(self.ops)

    def summary(self) -> str:
        """A readable table: layers, output shapes and parameter counts."""
        rows = [("#", "layer", "output", "parameters")]
        shape: tuple[int, ...] | None = self.input_shape
        begin = 0 if shape is not None else self.data_shaped_layers()
        for i, layer in enumerate(self.layers):
            if shape is None and i >= begin and layer.input_shape() is not None:
                shape = tuple(layer.input_shape())      # the shapes before it depend on the data
            shape = None if shape is None else tuple(layer.output_shape(shape))
            n = sum(math.prod(p.shape) for p in layer.parameters().values())
            shapes = ", ".join(f"{k}{p.shape}" for k, p in layer.parameters().items())
            out_shape = "(n, ?)" if shape is None else f"(n, {', '.join(map(str, shape))})"
            if not layer.sublayers():
                rows.append((str(i), repr(layer), out_shape, f"{n:,}" + (f"  {shapes}" if shapes else "")))
                continue
            rows.append((str(i), layer.name, out_shape, f"{n:,}"))
            for path, sub in layer.walk():          # a block: its tree, one row per layer inside
                depth = path.count(".") + 1
                label = sub.name if sub.sublayers() else repr(sub)
                own = {k: p for k, p in sub.parameters().items()} if not sub.sublayers() else {}
                m = sum(math.prod(p.shape) for p in sub.parameters().values())
                detail = ", ".join(f"{k}{p.shape}" for k, p in own.items())
                rows.append((f"{i}.{path}", "  " * depth + label, "", f"{m:,}" + (f"  {detail}" if detail else "")))
        w = [max(len(r[c]) for r in rows) for c in range(4)]
        line = "-" * (sum(w) + 6)
        given = "(n, ?): from the first data" if self.input_shape is None else f"(n, {', '.join(map(str, self.input_shape))})"
        out = [f"Network on {self.ops.name}, {self.dtype_name}, input {given}", line]
        for j, r in enumerate(rows):
            out.append("  ".join(r[c].ljust(w[c]) for c in range(4)).rstrip())
            if j == 0:
                out.append(line)
        out += [line, f"total parameters: {self.n_params:,}"]
        return "\n".join(out)

    def __repr__(self) -> str:
        return f"Network({self.layers!r}, backend={self.ops.name!r})"

    # ------------------------------------------------------------------ passes
    def forward(self, x: Array, training: bool = False) -> Array:
        """z = g(A … g(B x)): apply every layer in order."""
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    __call__ = forward

    def backward(self, grad_output: Array) -> None:
        """Walk the layers in reverse: each receives the error from above, accumulates its
        gradients and hands ẽ down.  The lowest layer that needs it (:attr:`lowest_trained`)
        computes no input error; layers below it only hand errors down
        (``Layer.backward_free``) and are not visited."""
        layers = self.layers
        diag, hook = self.diagnostics, self.backward_hook
        if diag is None and hook is None:
            low = self._lowest_trained
            for i in range(len(layers) - 1, low, -1):
                grad_output = layers[i].backward(grad_output, True)
            layers[low].backward(grad_output, False)
            return
        if diag is None:
            low = self._lowest_trained
            for i in range(len(layers) - 1, low - 1, -1):
                grad_output = layers[i].backward(grad_output, i > low)
                hook(i)
            return
        for i, layer in enumerate(layers):            # blocks record the error reaching each layer inside
            layer.record_errors(diag.record_error, f"{i}.")
        try:
            for i in range(len(layers) - 1, -1, -1):
                diag.record_error(i, grad_output)
                grad_output = layers[i].backward(grad_output, i > 0)
                if hook is not None:
                    hook(i)
        finally:
            for layer in layers:
                layer.record_errors(None)
        diag.record_grads(self._params)

    def clear_cache(self) -> None:
        for layer in self.layers:
            layer.clear_cache()

    # ------------------------------------------------------------------ training
    def fit(self, X: Any, y: Any, settings: FitSettings | None = None, **options: Any) -> History:
        """Train with mini-batch gradient descent; return the per-epoch :class:`History`.

        ``settings``: a :class:`~deepnet.training.FitSettings`, or its options as keywords
        (``epochs``, ``batch_size``, ``loss``, ``optimizer``, ``validation_data``,
        ``callbacks``, ``checkpoint``, ``resume``, ``graphs``, ``communicator``, ...: each is
        described there).  Every option is checked before anything changes.
        """
        run = FitSettings.of(settings, options)
        run.check_for(self)             # before a checkpoint folder is made (Trainer checks again: it is public)
        if isinstance(run.checkpoint, (str, os.PathLike)):       # a folder
            run = replace(run, checkpoint=Checkpointer(run.checkpoint))
        return Trainer(self, run).fit(X, y)

    # ------------------------------------------------------------------ inference
    def evaluate(self, X: Any, y: Any, batch_size: int = 1024, loss: str | Loss | None = None) -> dict[str, float]:
        """Mean loss and accuracy over ``(X, y)`` in evaluation mode."""
        loss_fn = get_loss(loss) if loss is not None else self.loss
        if loss_fn is not None:
            loss_fn.bind(self.ops)
        Xd = device_inputs(self.ops, X, self.inputs_shape(_shape_of(X), "evaluate"), self.dtype_name, "evaluate")
        Td, Ld = device_targets(self.ops, y, int(Xd.shape[0]), self.output_width, self.dtype_name,
                                loss_fn or get_loss("xent"), "evaluate")
        return evaluate_batches(self, loss_fn, Xd, Td, Ld, batch_size, self.ops.dtype(self.dtype_name))

    def predict(self, X: Any, batch_size: int = 1024) -> Any:
        """Network outputs z for every row of ``X``, as a NumPy array."""
        Xd = device_inputs(self.ops, X, self.inputs_shape(_shape_of(X), "predict"), self.dtype_name, "predict")
        n = int(Xd.shape[0])
        outs = [to_host(self.forward(Xd[s:min(s + batch_size, n), ...], False)) for s in range(0, n, batch_size)]
        return host_concat(outs)

    def predict_classes(self, X: Any, batch_size: int = 1024) -> Any:
        """The index of the largest output for every row of ``X`` (NumPy int64)."""
        return self.predict(X, batch_size).argmax(axis=1)

    def to_onnx(self, path: str | os.PathLike[str], *, input_shape: Sequence[int] | None = None,
                opset: int = DEFAULT_OPSET) -> Path:
        """Write the network in evaluation form to ``path`` as ONNX (needs ``deepnet[onnx]``):
        input ``"input"`` of shape (batch, *input_shape), output ``"output"``; see :mod:`deepnet.onnx_export`."""
        return export_onnx(self, path, input_shape=input_shape, opset=opset)

    def device_rng_state(self) -> dict[str, Any] | None:
        """The state of the run's device generator, or None if none was drawn from yet."""
        return None if self._device_rng is None else self._device_rng.get_state()

    def set_device_rng_state(self, state: dict[str, Any]) -> None:
        """Continue the run's device generator from ``state`` (:meth:`device_rng_state`'s dict,
        e.g. a checkpoint's); the backend may swap in the kind of generator that wrote it
        (``Ops.resume_device_rng``), which the layers that draw then use."""
        rng = self.ops.resume_device_rng(self.device_rng(), state)
        if rng is not self._device_rng:
            self._device_rng = rng
            self._give_rng()

    def device_rng(self) -> Any:
        """The run's generator on the backend (dropout masks), seeded from the host one (a
        data-parallel rank r > 0 mixes r into that seed: its own stream, see :meth:`set_replica`)."""
        if self._device_rng is None:
            if self._device_seed is None:
                self._device_seed = int(self.rng.integers(2**63 - 1))
            self._device_rng = self.ops.device_rng((self._device_seed + _REPLICA_STRIDE * self._replica) % 2**63)
        return self._device_rng

    @property
    def replica(self) -> int:
        """The rank this network trains as in a data-parallel run (0 otherwise)."""
        return self._replica

    def set_replica(self, rank: int) -> None:
        """Train as rank ``rank`` of a data-parallel run: dropout masks from a stream of this
        rank's own (rank 0 keeps the single-process stream; the host generator, which draws
        the shuffles, is left as it is)."""
        if not isinstance(rank, int) or rank < 0:
            raise ValueError(f"set_replica: rank must be a non-negative integer, got {rank!r}")
        if rank == self._replica:
            return
        self._replica = rank
        if self._device_rng is not None:
            self._device_rng = None
            self._give_rng()


#: the seed of rank r's dropout stream is the run's seed + r·stride (mod 2⁶³): the golden
#: ratio's 64-bit constant, so ranks' seeds are far apart
_REPLICA_STRIDE = 0x9E3779B97F4A7C15


def _refusal(layer: Layer, shape: tuple[int, ...]) -> str | None:
    """Why ``layer`` does not take per-sample inputs of ``shape`` (None: it does, besides its
    declared input shape)."""
    try:
        layer.output_shape(shape)
    except ShapeError as err:
        return str(err)
    return None


def _keeps_shape(layer: Layer) -> bool:
    """Whether ``layer`` gives back the shape it is given (rows, and images unless it takes
    rows only): an activation or dropout does, Flatten does not."""
    try:
        if tuple(layer.output_shape((6,))) != (6,):
            return False
    except ShapeError:
        return False
    try:
        return tuple(layer.output_shape((3, 5, 7))) == (3, 5, 7)
    except ShapeError:
        return True                     # rows only (Softmax)


def _opens_shape(layer: Layer) -> bool:
    """Whether ``layer``'s output shape depends on sizes no layer declares (a convolution or
    pooling of images of any size, Flatten)."""
    spec = layer.input_spec()
    return (spec is not None and None in spec) or (spec is None and not _keeps_shape(layer))


def _shape_argument(shape: Any) -> tuple[int, ...]:
    """``input_shape=`` as a tuple of positive ints (one sample's shape, without the batch axis)."""
    dims = list(shape) if isinstance(shape, (list, tuple)) else None
    if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"Network: input_shape must be one sample's shape, a non-empty tuple of positive ints "
                         f"such as (1, 28, 28), got {shape!r}")
    return tuple(int(d) for d in dims)


def _shape_of(X: Any) -> tuple[int, ...]:
    """The shape of user data (anything array-like)."""
    shape = getattr(X, "shape", None)
    return tuple(int(d) for d in (shape if shape is not None else to_host(X).shape))


def _dims(shape: Sequence[Any]) -> str:
    return f"({', '.join(map(str, shape))})"


def _reshape_hint(own: tuple[int, ...], data: tuple[int, ...]) -> str:
    """How to give data of ``data``'s values in shape ``own``, when the counts agree."""
    if len(data) < 2 or math.prod(data[1:]) != math.prod(own):
        return ""
    if len(own) == 1:
        return ": flatten the data (X.reshape(len(X), -1))"
    return f": reshape the data (X.reshape(len(X), {', '.join(map(str, own))}))"


def _first_layer_refuses(layer: Layer, spec: Sequence[int | None], data: tuple[Any, ...]) -> str:
    """Why the first layer cannot take data of shape ``data`` (n, ...), in the user's terms."""
    sample = data[1:]
    got = f"rows {_dims(data)}" if len(sample) == 1 else f"X of shape {_dims(data)}"
    if len(spec) == 3 and spec[1] is None:          # images of any size
        c = spec[0]
        want = "(n, C, H, W) images" + ("" if c is None else f" with C={c}")
        if len(sample) == 1:
            guess = _image_guess(int(sample[0]), c)
            return (f"the network's first layer {layer.name} expects {want}, got {got}: reshape the data "
                    f"(X.reshape(len(X), {guess[1:-1]})) or start the network with Reshape({guess})")
        return f"the network's first layer {layer.name} expects {want}, got {got}"
    if None not in spec:
        hint = _reshape_hint(tuple(int(d) for d in spec), data) if isinstance(data[0], int) else ""   # type: ignore[arg-type]
        if len(spec) == 1 and len(sample) > 1 and not hint:
            hint = f": give rows of {spec[0]} values"
        what = f"rows (n, {spec[0]})" if len(spec) == 1 else f"inputs {_dims(('n', *spec))}"
        return f"the network's first layer {layer.name} takes {what}, got {got}{hint}"
    return f"the network's first layer {layer.name} expects inputs {_dims(['n', *('?' if d is None else d for d in spec)])}, got {got}"


def _image_guess(width: int, channels: int | None) -> str:
    """(C, H, W) for rows of ``width`` values when they are square images, else "(C, H, W)"."""
    c = channels or 1
    side = math.isqrt(width // c) if width % c == 0 else 0
    if side and c * side * side == width:
        return f"({c}, {side}, {side})"
    return f"({c if channels else 'C'}, H, W)"


def _refuse_shared_across(layers: list[Layer]) -> None:
    """One layer object at two places of the stack (not inside one block, which hands each call
    its own cache) would be updated twice and backward would read the wrong call's cache."""
    seen: dict[int, str] = {}
    for i, top in enumerate(layers):
        for path, layer in [("", top), *top.walk()]:
            where = f"layer {i}" + (f" ({top.name}) at {path}" if path else f" ({top.name})")
            if id(layer) in seen:
                raise ValueError(f"Network: {where} is the same {layer.name} object as {seen[id(layer)]}: use a "
                                 "layer at one place of the stack, or share it inside one block (e.g. Sequential)")
            seen[id(layer)] = where
