"""The one seam between deepnet and array libraries.

Everything that touches NumPy, CuPy or the strict Array-API namespace lives under
``deepnet.backend``.  Layers, losses and optimizers only ever see an :class:`Ops`
object (``layer.ops``) and its array namespace ``ops.xp``.

Choosing a backend::

    DEEPNET_BACKEND=cupy python train.py        # environment variable
    deepnet.set_backend("cupy")                 # for the current thread/context
    with deepnet.use_backend("strict"): ...     # scoped, restored on exit

Arrays cross between host (NumPy) and device only through :func:`to_device` and
:func:`to_host`.  Any Array-API namespace becomes a backend with :func:`register_backend`.
"""

from .core import (
    Array,
    BackendError,
    Ops,
    available_backends,
    backend_of,
    get_backend,
    get_ops,
    host_rng,
    register_backend,
    registered_backends,
    set_backend,
    to_device,
    to_host,
    use_backend,
)

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
