"""A run's data on its backend: inputs and targets checked once, never copied needlessly.

A float32 host array the caller passes is used in place on a host backend (no defensive
copy); other inputs are converted once.  Targets become what the loss works on (labels or
rows) plus integer labels for accuracy.
"""

from __future__ import annotations

from typing import Any

from ..backend import Array, Ops, to_device, to_host
from ..backend.host import as_host_inputs, as_host_targets
from ..errors import ShapeError
from ..losses import Loss


def device_inputs(ops: Ops, X: Any, shape: int | tuple[int, ...], dtype: str, where: str) -> Array:
    """X checked ((n, *shape); an int: rows of that width; finite) and on ``ops`` in ``dtype``."""
    if ops.owns(X) and not ops.host_arrays:   # already on the device: check it there
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if tuple(int(d) for d in X.shape[1:]) != shape or X.ndim < 2:
            want = (f"the first layer expects inputs of width {shape[0]}" if len(shape) == 1 else
                    f"inputs X must have shape (n, {', '.join(map(str, shape))})")
            raise ShapeError(f"{where}: {want}, got X of shape {tuple(X.shape)}")
        if not bool(to_host(ops.all_finite(X))):
            raise ValueError(f"{where}: X contains non-finite values (NaN or inf)")
        return to_device(X, ops, dtype=dtype)
    return to_device(as_host_inputs(X, shape, where), ops, dtype=dtype)


def host_inputs(X: Any, shape: int | tuple[int, ...], dtype: str, where: str) -> Any:
    """X checked and kept on the host in ``dtype`` (for streaming; no copy when it already is)."""
    return as_host_inputs(X, shape, where).astype(dtype, copy=False)


def input_shape_for(net: Any, X: Any, where: str) -> int | tuple[int, ...]:
    """The per-sample shape ``net`` takes for data X (:meth:`TrainedModel.inputs_shape
    <deepnet.protocols.TrainedModel.inputs_shape>`: a :class:`~deepnet.Network` infers it from
    the data while it has none)."""
    shape = getattr(X, "shape", None)          # a user's array, or a list
    return net.inputs_shape(tuple(int(d) for d in (shape if shape is not None else to_host(X).shape)), where)


def device_targets(ops: Ops, y: Any, n: int, width: int, dtype: str, loss: Loss, where: str) -> tuple[Array, Array]:
    """(targets for the loss, integer labels for accuracy), both on ``ops``."""
    host = as_host_targets(y, n, width, where, allow_labels=loss.accepts_labels)
    if host.ndim == 1:
        labels = to_device(host, ops, dtype="int64")
        return loss.label_targets(ops, labels, width, ops.dtype(dtype)), labels   # target rows built once, where the loss wants them
    targets = to_device(host, ops, dtype=dtype)
    return targets, to_device(host.argmax(axis=1), ops, dtype="int64")
