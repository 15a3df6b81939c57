"""The Layer protocol: explicit forward and backward passes, named parameters."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, ClassVar

from ..backend import Array, Ops, get_backend, get_ops, host_rng, to_device, to_host, use_backend
from ..classnames import ClassLookupError, ClassRegistry, qualified_name
from ..errors import ShapeError


class Parameter:
    """A trainable array θ (:attr:`data`) and its accumulated gradient ∂f/∂θ (:attr:`grad`).

    The gradient buffer always matches ``data`` in shape, dtype, memory layout and backend
    (assigning ``data`` reallocates it when they change).  It is zeroed lazily: :meth:`zero_grad`
    only marks it stale and the next backward pass writes into it instead of adding,
    so no pass over memory is spent on zeroing.  Reading :attr:`grad` is always correct,
    and ``p.grad += g`` accumulates: after :meth:`zero_grad` it leaves exactly g.
    A backward pass that writes with a backend operation asks :meth:`grad_target` where to
    write; :meth:`assign` replaces the values of θ keeping its buffer and memory layout
    (the backend chooses the layout, see ``Ops.training_layout``).
    """

    __slots__ = ("name", "_data", "_grad", "_fresh")

    def __init__(self, name: str, data: Array) -> None:
        self.name = name
        self._data = data
        self._grad = _zeros_like(data)
        self._fresh = True

    @property
    def data(self) -> Array:
        return self._data

    @data.setter
    def data(self, value: Array) -> None:
        old = self._data
        self._data = value
        if (type(value) is not type(old) or value.shape != old.shape or value.dtype != old.dtype
                or getattr(value, "strides", None) != getattr(old, "strides", None)
                or getattr(value, "device", None) != getattr(old, "device", None)):
            self._grad = _zeros_like(value)
            self._fresh = True

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.shape)

    @property
    def has_grad(self) -> bool:
        """Whether a backward pass wrote ∂f/∂θ since :meth:`zero_grad` (else it is zero)."""
        return not self._fresh

    def assign(self, value: Array) -> None:
        """θ ← value, written into the existing buffer (same backend; layout kept)."""
        shape = tuple(getattr(value, "shape", ()))
        if shape != self.shape:
            raise ShapeError(f"Parameter {self.name!r}: expected values of shape {self.shape}, got shape {shape}")
        self._data[...] = value
        self._fresh = True

    @property
    def grad(self) -> Array:
        """∂f/∂(this parameter), accumulated over backward passes since :meth:`zero_grad`."""
        if self._fresh:
            self._grad[...] = 0.0
            self._fresh = False
        return self._grad

    @grad.setter
    def grad(self, value: Array | float) -> None:
        # ``p.grad += g`` reads the (zeroed if stale) buffer, adds in place and assigns the
        # same buffer back; any other value is copied into the buffer, which keeps its
        # dtype, layout and backend
        if value is self._grad:
            self._fresh = False
            return
        shape = getattr(value, "shape", None)
        if shape is not None and tuple(shape) != self.shape:
            raise ShapeError(f"Parameter {self.name!r}: grad must have shape {self.shape}, "
                             f"got shape {tuple(shape)}")
        self._grad[...] = value
        self._fresh = False

    def data_and_grad(self) -> tuple[Array, Array]:
        """(θ, ∂f/∂θ) for an update: the gradient zeroed if no backward pass wrote it."""
        if self._fresh:
            self._grad[...] = 0.0
            self._fresh = False
        return self._data, self._grad

    def grad_target(self) -> tuple[Array, bool]:
        """(buffer, accumulate): where a backward pass writes its contribution."""
        acc = not self._fresh
        self._fresh = False
        return self._grad, acc

    def zero_grad(self) -> None:
        self._fresh = True

    @property
    def grad_buffer(self) -> Array:
        """The array backward writes ∂f/∂θ into (as it is: not zeroed, however stale)."""
        return self._grad

    def share_grad(self, buffer: Array) -> None:
        """Keep ∂f/∂θ in ``buffer`` from now on (e.g. a view into one flat array of every
        gradient, reduced across processes in one call); its shape, dtype and memory layout
        must be θ's.  A gradient written since :meth:`zero_grad` is carried over."""
        if (tuple(buffer.shape) != self.shape or buffer.dtype != self._data.dtype
                or getattr(buffer, "strides", None) != getattr(self._data, "strides", None)):
            raise ShapeError(f"Parameter {self.name!r}: a gradient buffer must have shape {self.shape}, dtype "
                             f"{self._data.dtype} and θ's layout; got shape {tuple(buffer.shape)}, dtype {buffer.dtype}")
        if buffer is self._grad:
            return
        if not self._fresh:
            buffer[...] = self._grad
        self._grad = buffer

    def __repr__(self) -> str:
        return f"Parameter({self.name!r}, shape={self.shape})"


def _zeros_like(data: Array) -> Array:
    """A gradient buffer of θ's shape, dtype, memory layout and backend (its values do not
    matter: it is zeroed lazily).  An array even for a 0-d θ, where NumPy's ``data * 0.0``
    is a scalar that cannot be written in place."""
    g = data * 0.0
    if not hasattr(g, "__setitem__"):
        g = data.copy()
    return g


class Layer:
    """Base class of every layer.

    A layer maps a batch ``x`` of shape ``(n, n_in)`` (rows are samples) to ``y`` and
    back-propagates: :meth:`backward` receives the error ∂f/∂y from the layer above,
    adds its parameter gradients to ``param.grad`` and returns ∂f/∂x for the layer
    below (the derivation's ẽ).  It may overwrite the error it receives.

    Subclasses implement :meth:`forward` and :meth:`backward`; layers with parameters
    also implement :meth:`initialize` and register arrays with :meth:`add_param`.
    :meth:`get_config` returns the constructor arguments (plain data) so that
    checkpoints rebuild the layer without code from the file.

    :attr:`initialized` is kept by the base class: :meth:`add_param` sets it, and
    ``Network`` sets it after calling :meth:`initialize`, so a layer reused in another
    network keeps its parameters.  Setting it to False asks for fresh parameters.

    A layer may contain layers (a block): it declares each with :meth:`add_layer`, and the
    base class forwards the whole protocol to them (every hook below has a default here, so
    a container forwards a known list):

    * parameters and gradients: :meth:`parameters` names a child's ``"<child>.<name>"``
      (``"block.0.weight"``), each parameter once even when a layer is used twice;
      :meth:`zero_grad`; :meth:`to` (backend, dtype); :meth:`initialize` (children not yet
      initialized, in declaration order, from the same host generator);
    * layer state kept across steps but not trained: :meth:`state_arrays` /
      :meth:`load_state_arrays` (BatchNorm running statistics), keyed ``"<child>.<key>"``;
    * randomness: :attr:`stochastic`, :meth:`set_rng`, :meth:`freeze_randomness` (dropout);
    * data-parallel: :attr:`uses_batch_statistics`, :meth:`set_sync` (synchronized BatchNorm);
    * what backward needs: :attr:`cached` (read and restored by a container that calls a layer
      twice in one step, so a shared layer accumulates both calls' gradients), :meth:`clear_cache`;
    * diagnostics: :meth:`record_errors` (the error reaching each layer inside a block);
    * flags: :attr:`capturable` (a CUDA graph may capture the step: checked for every layer in
      the tree), :attr:`compiled_kind` (the CPU's compiled step), :attr:`backward_free`,
      :attr:`any_layout` (memory layout), ``step_scratch``;
    * export: :attr:`to_onnx` (a layer that is not built in writes its own ONNX nodes).

    Training or evaluation is the ``training`` argument of :meth:`forward`, which a container
    passes on.  :meth:`walk` lists the tree (diagnostics, summaries, the captured-step checks).
    """

    #: every layer class by qualified name (``module.QualName``), filled by ``__init_subclass__``;
    #: model files name layers through it (:mod:`deepnet.classnames`)
    registry: ClassVar[ClassRegistry] = ClassRegistry("layer")

    #: True when the layer reads its parameters only through backend products (``ops.linear``,
    #: ``ops.gemm`` with ``out=``), so the backend may store them in whatever memory layout is
    #: fastest (``Dense``: column-major W as the first layer on NumPy).  Default: row-major kept.
    any_layout: ClassVar[bool] = False

    #: whether a CUDA graph may capture this layer's training forward and backward: they do
    #: the same device work every step, through ``ops`` and ``ops.xp`` only, and keep state
    #: that lasts from one step to the next in arrays updated in place (``a[...] = ...``,
    #: ``a += ...``), never in Python numbers or rebound attributes (a replay runs no Python).
    #: deepnet checks what it can (docs/custom-layers.md); set False to always run eagerly.
    capturable: ClassVar[bool] = True
    #: what the CPU's compiled step (``fit(graphs=...)`` on NumPy with numba) knows this layer as
    #: ("dense", "sigmoid", ...: its forward and backward are written out there too); None: the
    #: run keeps the plain loop.  Honoured only when declared by the class that defines the
    #: layer's forward and backward (a subclass overriding them is not what the code computes)
    compiled_kind: ClassVar[str | None] = None
    #: array attributes a step may rebind because only that step reads them (besides ``_cache``)
    step_scratch: ClassVar[tuple[str, ...]] = ()
    #: True for a layer whose backward only hands the error down (no parameters, no side
    #: effects): below the lowest layer with parameters the network then need not call it
    #: (``Reshape``, ``Flatten``, pooling, dropout, the built-in activations).  False (the
    #: default, e.g. a layer that records its gradients): always called.
    backward_free: ClassVar[bool] = False
    #: the input width the layer requires (``Dense``: its ``n_in``), set by its constructor;
    #: None (the default): any width, or not a rows layer (:meth:`input_shape` reads it)
    n_in: int | None = None
    #: ONNX export of a layer deepnet does not know: a method ``to_onnx(graph, x) -> y`` adding
    #: the layer's nodes to ``graph`` (:class:`deepnet.onnx_export.OnnxGraph`) from the value
    #: named ``x`` and returning its output's name (docs/after-training.md); None: built-in or
    #: not exportable
    to_onnx: ClassVar[Callable[..., str] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Layer.registry.add(cls)
        if "arrange_as_first_layer" in cls.__dict__:
            warnings.warn(f"{cls.__name__}.arrange_as_first_layer is no longer called: the backend chooses "
                          "parameter layouts for layers with any_layout = True (docs/custom-layers.md)",
                          UserWarning, stacklevel=2)

    def __init__(self) -> None:
        self.ops: Ops = get_backend()
        self.dtype: Any = self.ops.float32
        self._params: dict[str, Parameter] = {}
        self._cache: Any = None
        self._initialized = False
        self._layers: dict[str, Layer] = {}

    @property
    def initialized(self) -> bool:
        """Whether the parameters exist (``Network`` then does not call :meth:`initialize`)."""
        return self._initialized

    @initialized.setter
    def initialized(self, value: bool) -> None:
        self._initialized = bool(value)
        if not value:                      # a block asks for fresh parameters of every layer inside
            for child in self._unique_children():
                child.initialized = False

    # -- to implement ---------------------------------------------------------------
    def forward(self, x: Array, training: bool = False) -> Array:
        """Compute the output; with ``training=True`` keep what backward needs."""
        raise NotImplementedError

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        """Accumulate parameter gradients from ∂f/∂y and return ∂f/∂x (ẽ)."""
        raise NotImplementedError

    def initialize(self, rng: Any) -> None:
        """Draw initial parameters on the host with ``rng`` (a NumPy Generator).  Default:
        initialize the children that are not yet initialized, in declaration order."""
        for child in self._unique_children():
            if not child.initialized:
                child.initialize(rng)
                child.initialized = True
        self.initialized = True

    # -- blocks: layers inside a layer ------------------------------------------------
    def add_layer(self, name: str, layer: Layer) -> Layer:
        """Declare ``layer`` as a child named ``name`` (its parameters are ``"<name>.<param>"``);
        returns it.  The same layer object may be declared under two names (shared parameters)."""
        if not isinstance(layer, Layer):
            raise TypeError(f"{self.name}.add_layer({name!r}, ...): expected a deepnet Layer, "
                            f"got {type(layer).__name__}")
        if not isinstance(name, str) or not name or "." in name or "/" in name:
            raise ValueError(f"{self.name}.add_layer: the name must be a non-empty string without '.' or '/', "
                             f"got {name!r}")
        if name in self._layers:
            raise ValueError(f"{self.name}.add_layer: a child named {name!r} is already declared")
        if layer is self:
            raise ValueError(f"{self.name}.add_layer({name!r}, ...): a layer cannot contain itself")
        self._layers[name] = layer
        return layer

    def sublayers(self) -> dict[str, Layer]:
        """The declared children by name, in declaration order (empty for a plain layer)."""
        return dict(self._layers)

    def walk(self, prefix: str = "") -> list[tuple[str, Layer]]:
        """(path, layer) for every layer below this one, depth first in declaration order
        (``"block.0"``); a layer declared twice appears once, at its first path."""
        out: list[tuple[str, Layer]] = []
        seen: set[int] = set()

        def visit(layer: Layer, path: str) -> None:
            for name, child in layer._layers.items():
                if id(child) in seen:
                    continue
                seen.add(id(child))
                sub = f"{path}{name}"
                out.append((sub, child))
                visit(child, sub + ".")

        visit(self, prefix)
        return out

    def _unique_children(self) -> list[Layer]:
        seen: set[int] = set()
        out = []
        for child in self._layers.values():
            if id(child) not in seen:
                seen.add(id(child))
                out.append(child)
        return out

    # -- hooks other parts of deepnet call (defaults; a container forwards them) ----------
    @property
    def stochastic(self) -> bool:
        """Whether forward draws random numbers in training (then the network hands it its
        device generator with :meth:`set_rng`).  Default: whether any child does."""
        return any(c.stochastic for c in self._layers.values())

    def set_rng(self, rng: Any) -> None:
        """Draw random numbers from this device generator (done by ``Network``)."""
        for child in self._unique_children():
            if child.stochastic:
                child.set_rng(rng)

    def freeze_randomness(self, frozen: bool) -> None:
        """Reuse the last random draw in every training forward (gradient checks)."""
        for child in self._unique_children():
            child.freeze_randomness(frozen)

    @property
    def uses_batch_statistics(self) -> bool:
        """Whether training normalizes with statistics of the batch, so that data-parallel
        training may synchronize them (:meth:`set_sync`).  Default: a layer that defines its own
        ``set_sync``, or a container with such a child."""
        return (type(self).set_sync is not Layer.set_sync
                or any(c.uses_batch_statistics for c in self._layers.values()))

    def set_sync(self, comm: Any) -> None:
        """Sum batch statistics over ``comm``'s ranks (None: this process's batch only)."""
        for child in self._unique_children():
            child.set_sync(comm)

    def state_arrays(self) -> dict[str, Any]:
        """Host copies of arrays kept across steps that are not parameters (BatchNorm running
        statistics), by name; a child's as ``"<child>.<key>"``.  Default: the children's."""
        out: dict[str, Any] = {}
        for path, child in self._named_unique_children():
            for k, v in child.state_arrays().items():
                out[f"{path}.{k}"] = v
        return out

    def load_state_arrays(self, arrays: dict[str, Any]) -> None:
        """Restore what :meth:`state_arrays` returned (keys not given are left as they are)."""
        for path, child in self._named_unique_children():
            mine = {k[len(path) + 1:]: v for k, v in arrays.items() if k.startswith(path + ".")}
            if mine:
                child.load_state_arrays(mine)

    def _named_unique_children(self) -> list[tuple[str, Layer]]:
        seen: set[int] = set()
        out = []
        for name, child in self._layers.items():
            if id(child) not in seen:
                seen.add(id(child))
                out.append((name, child))
        return out

    def record_errors(self, record: Any, prefix: str = "") -> None:
        """Diagnostics: a block calls ``record(path, error)`` with the error each layer inside it
        receives in backward (``prefix``: this layer's path and a dot, e.g. ``"1."``; ``record``
        None: stop).  Default: handed to the children."""
        for name, child in self._named_unique_children():
            child.record_errors(record, f"{prefix}{name}.")

    @classmethod
    def from_config(cls, config: dict[str, Any], classes: Any = None) -> Layer:
        """Rebuild a layer from :meth:`get_config` data.  Default: ``cls(**config)``; a
        container rebuilds its children from their nested entries with :func:`build_layer`
        (``classes``: as in :func:`deepnet.io.load_model`)."""
        return cls(**config)

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments as plain data: ``type(self)(**get_config())`` rebuilds
        the layer.  Default: none (saving checks that this is enough)."""
        return {}

    def output_width(self, n_in: int) -> int:
        """Width of the output for an input of width ``n_in`` (default: unchanged)."""
        return n_in

    def input_shape(self) -> tuple[int, ...] | None:
        """The per-sample input shape this layer requires, when it alone decides it (``Dense``:
        (n_in,); ``Reshape``: its input width), so a network that starts with it knows its
        input width; None: any (activations, dropout, convolutions of any image size).
        Default: (n_in,) for a layer that sets :attr:`n_in`."""
        return None if self.n_in is None else (int(self.n_in),)

    def input_spec(self) -> tuple[int | None, ...] | None:
        """What this layer declares about its per-sample input, None standing for a size it
        leaves open: ``Conv2D(1, 16, 3)`` takes images (1, None, None), pooling (None, None,
        None); None: nothing (an activation).  A network that starts with a layer declaring
        a partial shape takes the rest from its first data (or ``Network(input_shape=)``),
        and words its errors with it.  Default: :meth:`input_shape`."""
        return self.input_shape()

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The per-sample output shape for a per-sample input shape (rows (n, k) have shape
        (k,); NCHW images (C, H, W)).  Raises :class:`ShapeError` for an input the layer cannot
        take.  Default: :meth:`output_width` for rows; any other shape unchanged (an
        elementwise layer).  Layers that change the shape of images override this."""
        want = self.input_shape()
        if want is not None and tuple(in_shape) != want:
            raise ShapeError(f"{self.name} expects inputs of shape {want}, got per-sample shape {tuple(in_shape)}")
        if len(in_shape) == 1:
            return (self.output_width(in_shape[0]),)
        return tuple(in_shape)

    def check_config(self, trial: bool | None = None) -> dict[str, Any]:
        """:meth:`get_config`, checked to rebuild this layer: plain data that the constructor
        accepts, giving the same parameter names and shapes; a layer without its own
        ``get_config`` must not hold a constructor setting that differs from the default.
        Saving a model runs this first.  Raises ``ValueError`` naming what is missing.
        ``trial``: rebuild a copy to compare (default: for every layer not defined in
        deepnet itself, whose layers are tested to rebuild)."""
        cls = type(self)
        name = cls.__name__
        shared = _shared_paths(self)
        if shared:
            raise ValueError(f"{name} uses one layer object at {' and '.join(shared)}: saving shared layers "
                             "is not supported (the file would rebuild two separate layers)")
        for path, child in self._named_unique_children():
            try:
                child.check_config(trial)
            except ValueError as err:
                raise ValueError(f"{name}: child {path!r}: {err}") from None
        cfg = self.get_config()
        if not isinstance(cfg, dict) or not all(isinstance(k, str) for k in cfg):
            raise ValueError(f"{name}.get_config() must return a dict of constructor arguments, "
                             f"got {_short(cfg)}")
        bad = [f"{k}={_short(v)} ({type(v).__name__})" for k, v in cfg.items() if not _is_plain(v)]
        if bad:
            raise ValueError(f"{name}.get_config() must return plain data (int, float, str, bool, None or "
                             f"lists of them), got {', '.join(bad)}")
        if cls.get_config is Layer.get_config:
            dropped = _dropped_settings(self, cfg)
            if dropped:
                raise ValueError(f"{name} has no get_config(), so saving would lose {', '.join(dropped)}: "
                                 f"define get_config() returning the constructor arguments")
        if not (trial if trial is not None else not cls.__module__.startswith("deepnet.")):
            return cfg
        with use_backend("numpy"):         # the trial rebuild allocates nothing on a device
            try:
                rebuilt = cls.from_config(cfg)
                if self.initialized:
                    rebuilt.initialize(host_rng(0))
            except Exception as err:  # noqa: BLE001  (user code: any failure means "cannot rebuild")
                hint = ("" if cls.get_config is not Layer.get_config
                        else "; define get_config() returning the constructor arguments")
                raise ValueError(f"{name}(**{cfg!r}) cannot rebuild the layer from get_config(): "
                                 f"{type(err).__name__}: {' '.join(str(err).split())}{hint}") from None
        want = {k: p.shape for k, p in self.parameters().items()}
        got = {k: p.shape for k, p in rebuilt.parameters().items()} if self.initialized else want
        if got != want:
            raise ValueError(f"{name}(**{cfg!r}) rebuilds parameters {got}, but the layer has {want}: "
                             f"get_config() must return every constructor argument")
        return cfg

    # -- shared machinery -----------------------------------------------------------
    @property
    def name(self) -> str:
        return type(self).__name__

    def add_param(self, name: str, host_value: Any) -> Parameter:
        """Register a parameter from a host (NumPy) array; it is moved to ``self.ops``.

        Returns the :class:`Parameter` (the same object when ``name`` already exists, so a
        layer may keep it as an attribute) and marks the layer initialized."""
        data = to_device(host_value, self.ops, dtype=self.ops.dtype_name(self.dtype), copy=True)
        p = self._params.get(name)
        if p is None:
            p = self._params[name] = Parameter(name, data)
        else:
            p.data = data
        self._initialized = True
        return p

    def parameters(self) -> dict[str, Parameter]:
        """Named parameters in a stable order (the order they were added), then each child's
        as ``"<child>.<name>"``; a parameter reached twice (a shared layer) is listed once."""
        if not self._layers:
            return self._params
        out = dict(self._params)
        seen = {id(p) for p in out.values()}
        for name, child in self._layers.items():
            for k, p in child.parameters().items():
                if id(p) not in seen:
                    seen.add(id(p))
                    out[f"{name}.{k}"] = p
        return out

    def zero_grad(self) -> None:
        for p in self.parameters().values():
            p.zero_grad()

    def clear_cache(self) -> None:
        """Drop what the last training forward kept for backward (the children's too)."""
        self._cache = None
        for child in self._unique_children():
            child.clear_cache()

    @property
    def cached(self) -> Any:
        """What the last training forward kept for backward (``self._cache``; None if nothing).
        A container that calls a layer twice in one step reads it after each call and assigns it
        back before the matching backward, so backward must read only this."""
        return self._cache

    @cached.setter
    def cached(self, value: Any) -> None:
        self._cache = value

    def to(self, backend: str | Ops | None = None, dtype: Any = None) -> Layer:
        """Move parameters (and their gradients) to another backend and/or dtype, in place."""
        ops = self.ops if backend is None else get_ops(backend)
        name = self.ops.dtype_name(self.dtype if dtype is None else dtype)
        for p in self._params.values():
            p.data = to_device(p.data if ops is self.ops else to_host(p.data), ops, dtype=name, copy=True)
        self.ops = ops
        self.dtype = ops.dtype(name)
        self._cache = None
        self._on_moved()
        for child in self._unique_children():
            child.to(ops, name)
        return self

    def _on_moved(self) -> None:
        """Hook for layers that hold non-parameter arrays (e.g. running statistics)."""

    def _need_cache(self) -> Any:
        cache = self._cache
        if cache is None:
            raise RuntimeError(
                f"{self.name}.backward called without a training forward pass: call "
                f"forward(x, training=True) first (evaluation mode keeps nothing for backward)")
        return cache

    def _check_input(self, x: Array, n_in: int | None, any_rank: bool = False) -> None:
        """One-line errors for an input that is not a batch of rows of width ``n_in`` (``any_rank``:
        a batch of any rank ≥ 2, for elementwise layers)."""
        if any_rank:
            if getattr(x, "ndim", 0) < 2:
                raise ShapeError(f"{self.name} expects a batch (n, ...) of rank 2 or more, got an input of shape "
                                 f"{tuple(getattr(x, 'shape', ()))}")
            return
        if getattr(x, "ndim", None) != 2:
            raise ShapeError(
                f"{self.name} expects a 2-D batch (n, {n_in if n_in is not None else 'features'}), "
                f"got an input of shape {tuple(getattr(x, 'shape', ()))}")
        if n_in is not None and x.shape[1] != n_in:
            raise ShapeError(
                f"{self.name} expects inputs of width {n_in}, got shape {tuple(x.shape)}")

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())

    def __repr__(self) -> str:
        return f"{self.name}({self.extra_repr()})"


def _is_plain(value: Any) -> bool:
    """Whether ``value`` survives a JSON model header unchanged (lists, not tuples)."""
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return isinstance(value, float) or type(value) in (bool, int, str, type(None))


def _dropped_settings(layer: Layer, cfg: dict[str, Any]) -> list[str]:
    """Constructor arguments left out of ``cfg`` whose same-named attribute is not the default."""
    import inspect

    try:
        params = inspect.signature(type(layer)).parameters.values()
    except (TypeError, ValueError):
        return []
    out = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in cfg or not hasattr(layer, p.name):
            continue                      # not kept as a same-named attribute: nothing to compare
        if p.name in vars(Layer) and p.name not in vars(layer):
            continue                      # a hook's default (``n_in``), not a setting the layer kept
        value = getattr(layer, p.name)
        try:
            same = p.default is not p.empty and bool(value == p.default)
        except Exception:  # noqa: BLE001  (e.g. an array: cannot tell, so not the default)
            same = False
        if not same:
            out.append(f"{p.name}={_short(value)}")
    return out


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters (for one-line errors)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _shared_paths(layer: Layer) -> list[str]:
    """Two paths of the first layer object reached twice below ``layer`` (empty: none)."""
    first: dict[int, str] = {}

    def visit(node: Layer, path: str) -> list[str]:
        for name, child in node.sublayers().items():
            sub = f"{path}{name}"
            if id(child) in first:
                return [repr(first[id(child)]), repr(sub)]
            first[id(child)] = sub
            found = visit(child, sub + ".")
            if found:
                return found
        return []

    return visit(layer, "")


def layer_entry(layer: Layer) -> dict[str, Any]:
    """A layer as plain data: short type name, qualified class name (``module.QualName``) and
    its :meth:`~Layer.get_config` (a container's nests its children's entries)."""
    return {"type": type(layer).__name__, "class": qualified_name(type(layer)), "config": layer.get_config()}


def build_layer(entry: Any, classes: Any = None) -> Layer:
    """Rebuild a layer from :func:`layer_entry` data, among the layer classes this program
    defines (never by importing anything).  Raises ``ValueError`` naming what is wrong."""
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
        raise ValueError(f"malformed layer entry {_short(entry)}")
    try:
        cls, note = Layer.registry.resolve(entry["type"], entry.get("class"), classes)
    except ClassLookupError as err:
        raise ValueError(str(err)) from None
    if note is not None:
        warnings.warn(note, UserWarning, stacklevel=2)
    cfg = entry.get("config", {})
    if not isinstance(cfg, dict) or not _is_plain(cfg):
        raise ValueError(f"{entry['type']}: settings must be plain data, got {_short(cfg)}")
    try:
        return cls.from_config(cfg, classes)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{entry['type']}: bad settings {_short(cfg)}: {' '.join(str(err).split())}") from None
