"""Backend registry, scoped selection and the two host/device transfer functions."""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..errors import BackendError
from .cupy_ops import FusedCupyOps
from .cupy_shaped import FusedCupyShapedOps
from .numba_ops import NumbaOps
from .numpy_ops import NumpyOps
from .ops import Ops
from .strict_ops import StrictOps

#: Type alias for an array of whichever backend is in use (NumPy, CuPy, strict).
Array = Any

__all__ = [
    "Array",
    "BackendError",
    "Ops",
    "available_backends",
    "backend_of",
    "get_backend",
    "get_ops",
    "host_rng",
    "register_backend",
    "registered_backends",
    "set_backend",
    "to_device",
    "to_host",
    "use_backend",
]



#: backend name -> factory making its (one, shared) :class:`Ops`; see :func:`register_backend`
_FACTORIES: dict[str, Callable[[], Ops]] = {}
_ALIASES: dict[str, str] = {}
_instances: dict[str, Ops] = {}
_instances_lock = threading.Lock()
# None means "not chosen in this context": fall back to DEEPNET_BACKEND, then numpy.
_current: contextvars.ContextVar[Ops | None] = contextvars.ContextVar("deepnet_backend", default=None)


def register_backend(name: str, factory: Callable[[], Ops], *, aliases: tuple[str, ...] = (),
                     replace: bool = False) -> None:
    """Make ``factory`` (called once, on first use) the backend ``name``.

    ``factory`` returns an :class:`Ops`, e.g. ``Ops(array_api_compat.torch, device="cpu",
    name="torch")`` for any Array-API namespace; subclass :class:`Ops` only to override hot
    paths.  Registering an existing name needs ``replace=True``.
    """
    if not isinstance(name, str) or not name.strip():
        raise BackendError(f"register_backend: name must be a non-empty string, got {name!r}")
    key = name.strip().lower()
    if not callable(factory):
        raise BackendError(f"register_backend({key!r}): factory must be callable, got {type(factory).__name__}")
    with _instances_lock:
        if key in _FACTORIES and not replace:
            raise BackendError(f"backend {key!r} is already registered (pass replace=True to replace it)")
        _FACTORIES[key] = factory
        _instances.pop(key, None)
        for alias in aliases:
            _ALIASES[alias.strip().lower()] = key


def registered_backends() -> tuple[str, ...]:
    """Names of every registered backend (available here or not)."""
    return tuple(_FACTORIES)


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise BackendError(f"backend name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _FACTORIES:
        raise BackendError(f"unknown backend {name!r}: expected one of {', '.join(_FACTORIES)}")
    return key


def _numpy_ops() -> Ops:
    """NumPy with numba's compiled kernels where numba imports and ``DEEPNET_NUMBA`` is not
    "0", else pure NumPy; the matrix products as ``DEEPNET_BLAS`` says."""
    if os.environ.get("DEEPNET_NUMBA", "1") != "0":
        try:
            return NumbaOps()
        except ImportError:                # numba is not installed
            pass
    return NumpyOps()


# The classes import their third-party libraries (numba, CuPy, array-api-strict) only when
# an instance is made, with a clear error where one is missing.
register_backend("numpy", _numpy_ops, aliases=("np", "cpu"))
register_backend("cupy", FusedCupyOps, aliases=("cp", "gpu", "cuda"))
register_backend("strict", StrictOps, aliases=("array_api_strict",))
register_backend("cupy-shaped", FusedCupyShapedOps, aliases=("cupy_shaped",))     # NumPy behind CuPy's signatures


def _make(key: str) -> Ops:
    """A new instance of backend ``key``: a factory that cannot import a package it needs (a
    user-registered one, say) is a :class:`BackendError` naming the backend and the package."""
    try:
        return _FACTORIES[key]()
    except ImportError as err:
        raise BackendError(f"backend {key!r} cannot be created here: it needs "
                           f"{err.name or 'a package'}, which could not be imported ({err})") from err


def get_ops(name: str | Ops) -> Ops:
    """Return the (shared) :class:`Ops` object for a backend name."""
    if isinstance(name, Ops):
        return name
    key = _canonical(name)
    ops = _instances.get(key)
    if ops is None:
        with _instances_lock:
            ops = _instances.get(key)
            if ops is None:
                ops = _make(key)
                if not isinstance(ops, Ops):
                    raise BackendError(f"backend {key!r}: its factory returned {type(ops).__name__}, expected an Ops")
                ops = _instances[key] = ops
    return ops


def get_backend() -> Ops:
    """The backend of the current context: set by :func:`use_backend`/:func:`set_backend`,
    else the ``DEEPNET_BACKEND`` environment variable, else NumPy."""
    ops = _current.get()
    if ops is None:
        ops = get_ops(os.environ.get("DEEPNET_BACKEND", "numpy") or "numpy")
    return ops


def set_backend(name: str | Ops) -> Ops:
    """Select a backend for the current thread or async context and return it."""
    ops = get_ops(name)
    _current.set(ops)
    return ops


@contextlib.contextmanager
def use_backend(name: str | Ops) -> Iterator[Ops]:
    """Use a backend inside a ``with`` block; the previous choice is restored on exit."""
    token = _current.set(get_ops(name))
    try:
        yield _current.get()
    finally:
        _current.reset(token)


def available_backends() -> dict[str, str]:
    """Map each backend name to ``"available"`` or the reason it is not.

    Probing CuPy here (and only here, never at import) may initialise CUDA.
    """
    out: dict[str, str] = {}
    for name in _FACTORIES:
        try:
            get_ops(name)
            out[name] = "available"
        except BackendError as err:
            out[name] = str(err)
    return out


def host_rng(seed: int | None) -> np.random.Generator:
    """The seeded host generator of a run (initial weights, shuffling, dropout on CPU)."""
    return np.random.default_rng(seed)


def to_device(x: Any, ops: Ops | str | None = None, dtype: Any = None, copy: bool = False) -> Array:
    """Move ``x`` (a NumPy array, a list, or an array of any backend) onto ``ops``.

    This and :func:`to_host` are the only places arrays cross between host and device.
    ``dtype`` is a NumPy dtype or a name such as ``"float32"``.  An array already on
    ``ops`` in that dtype is returned as is unless ``copy=True`` (parameters always copy,
    so they never alias an array the caller keeps).
    """
    ops = get_backend() if ops is None else get_ops(ops)
    if getattr(x, "requires_grad", False):   # an autograd tensor (PyTorch): deepnet computes its own gradients
        x = x.detach()
    if ops.owns(x):
        out = x if dtype is None else ops.astype(x, ops.dtype(dtype))
        return ops.copy(out) if copy and out is x else out
    host = to_host(x)
    if dtype is not None:
        host = host.astype(np.dtype(dtype), copy=False)
    return ops.from_host(np.asarray(host, order="C"))   # ascontiguousarray would make a 0-d array 1-d


def backend_of(a: Any) -> Ops:
    """The backend whose arrays ``a`` belongs to (by array type and device).

    Raises :class:`BackendError` when no backend in use owns it: never guesses."""
    if isinstance(a, np.ndarray):
        return get_ops("numpy")
    for ops in list(_instances.values()):
        if ops.owns(a):
            return ops
    raise BackendError(f"no deepnet backend in use owns an array of type {type(a).__module__}.{type(a).__name__}"
                       + (f" on device {a.device}" if hasattr(a, "device") else "")
                       + "; create it through a backend (deepnet.to_device) or register one (register_backend)")


def to_host(x: Any) -> np.ndarray:
    """Return ``x`` as a NumPy array, copying from the device if needed."""
    if isinstance(x, np.ndarray):
        return x
    for ops in list(_instances.values()):
        if ops.owns(x):
            return ops.to_host(x)
    mod = type(x).__module__.split(".")[0]
    if mod == "cupy":
        return get_ops("cupy").to_host(x)
    if mod == "array_api_strict":
        return get_ops("strict").to_host(x)
    return np.asarray(x)
