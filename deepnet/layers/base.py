"""The Layer protocol: explicit forward and backward passes, named parameters."""

from __future__ import annotations

from typing import Any, ClassVar

from ..backend import Array, Ops, get_backend, to_device, to_host


class ShapeError(ValueError):
    """An input's shape or value does not fit the layer or loss it was given to."""


class Parameter:
    """A trainable array and its accumulated gradient ∂f/∂(array).

    The gradient buffer always matches ``data`` in shape, dtype, memory layout and backend
    (assigning ``data`` reallocates it when they change).  It is zeroed lazily: :meth:`zero_grad`
    only marks it stale and the next backward pass writes into it instead of adding,
    so no pass over memory is spent on zeroing.  Reading :attr:`grad` is always correct.
    """

    __slots__ = ("name", "_data", "_grad", "_fresh")

    def __init__(self, name: str, data: Array) -> None:
        self.name = name
        self._data = data
        self._grad = data * 0.0
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
            self._grad = value * 0.0
            self._fresh = True

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.shape)

    @property
    def grad(self) -> Array:
        """∂f/∂(this parameter), accumulated over backward passes since :meth:`zero_grad`."""
        if self._fresh:
            self._grad[...] = 0.0
            self._fresh = False
        return self._grad

    def grad_target(self) -> tuple[Array, bool]:
        """(buffer, accumulate): where a backward pass writes its contribution."""
        acc = not self._fresh
        self._fresh = False
        return self._grad, acc

    def zero_grad(self) -> None:
        self._fresh = True

    def __repr__(self) -> str:
        return f"Parameter({self.name!r}, shape={self.shape})"


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
    """

    #: registry of layer classes by name, filled by ``__init_subclass__``
    registry: ClassVar[dict[str, type[Layer]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Layer.registry[cls.__name__] = cls

    def __init__(self) -> None:
        self.ops: Ops = get_backend()
        self.dtype: Any = self.ops.float32
        self._params: dict[str, Parameter] = {}
        self._cache: Any = None
        self.initialized = False

    # -- to implement ---------------------------------------------------------------
    def forward(self, x: Array, training: bool = False) -> Array:
        """Compute the output; with ``training=True`` keep what backward needs."""
        raise NotImplementedError

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        """Accumulate parameter gradients from ∂f/∂y and return ∂f/∂x (ẽ)."""
        raise NotImplementedError

    def initialize(self, rng: Any) -> None:
        """Draw initial parameters on the host with ``rng`` (a NumPy Generator)."""
        self.initialized = True

    def get_config(self) -> dict[str, Any]:
        return {}

    def output_width(self, n_in: int) -> int:
        """Width of the output for an input of width ``n_in`` (default: unchanged)."""
        return n_in

    # -- shared machinery -----------------------------------------------------------
    @property
    def name(self) -> str:
        return type(self).__name__

    def add_param(self, name: str, host_value: Any) -> Parameter:
        """Register a parameter from a host (NumPy) array; it is moved to ``self.ops``."""
        data = to_device(host_value, self.ops, dtype=self.ops.dtype_name(self.dtype), copy=True)
        p = self._params.get(name)
        if p is None:
            p = self._params[name] = Parameter(name, data)
        else:
            p.data = data
        return p

    def parameters(self) -> dict[str, Parameter]:
        """Named parameters in a stable order (the order they were added)."""
        return self._params

    def zero_grad(self) -> None:
        for p in self._params.values():
            p.zero_grad()

    def clear_cache(self) -> None:
        """Drop what the last training forward kept for backward."""
        self._cache = None

    def to(self, backend: str | Ops | None = None, dtype: Any = None) -> Layer:
        """Move parameters (and their gradients) to another backend and/or dtype, in place."""
        from ..backend import get_ops

        ops = self.ops if backend is None else get_ops(backend)
        name = self.ops.dtype_name(self.dtype if dtype is None else dtype)
        for p in self._params.values():
            p.data = to_device(p.data if ops is self.ops else to_host(p.data), ops, dtype=name, copy=True)
        self.ops = ops
        self.dtype = ops.dtype(name)
        self._cache = None
        self._on_moved()
        return self

    def arrange_as_first_layer(self, batch_size: int) -> bool:
        """Called by :meth:`Network.fit` on its first layer, whose input error is never
        computed: a layer may let the backend store its weights in the layout fastest for
        the products it still needs at this batch size.  Returns whether an array was
        replaced.  Default: nothing."""
        return False

    def _on_moved(self) -> None:
        """Hook for layers that hold non-parameter arrays (e.g. running statistics)."""

    def _need_cache(self) -> Any:
        cache = self._cache
        if cache is None:
            raise RuntimeError(
                f"{self.name}.backward called without a training forward pass: call "
                f"forward(x, training=True) first (evaluation mode keeps nothing for backward)")
        return cache

    def _check_input(self, x: Array, n_in: int | None) -> None:
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
