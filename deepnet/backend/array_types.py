"""What every module of the backend may name without importing :mod:`deepnet.backend.ops`:
the array type and the part of a backend its companions (``ops.graphs``, ``ops.memory``) use.

:class:`~deepnet.backend.ops.Ops` satisfies :class:`BackendCore`; ``ops.py`` imports the
companions, so they type against this protocol instead of importing ``Ops`` back.
"""

from __future__ import annotations

from typing import Any, Protocol

#: a backend's array (``numpy.ndarray``, ``cupy.ndarray``, an array-api-strict array, ...)
Array = Any


class BackendCore(Protocol):
    """A backend as its graph and memory companions see it."""

    #: the backend's registered name (``"numpy"``, ``"cupy"``, ...), for messages
    name: str
    #: the backend's array namespace (``numpy``, ``cupy``, ``array_api_strict``)
    xp: Any

    def from_host(self, host: Any) -> Array:
        """A device array holding a host array's values."""
        ...

    def to_host(self, a: Array) -> Any:
        """A host (NumPy) array holding a device array's values."""
        ...
