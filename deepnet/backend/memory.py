"""A backend's device companion, ``ops.memory``: memory, streaming and device facts, apart
from its maths.

The generic :class:`DeviceMemory` keeps the data resident, copies synchronously and has no
device to describe; the CuPy backend's companion (``cupy_ops.CupyMemory``) reads CuPy's
memory pool and streams chunks through pinned host buffers on a side CUDA stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .array_types import Array, BackendCore


class DeviceMemory:
    """Memory and transfers of one backend (``ops.memory``)."""

    def __init__(self, ops: BackendCore) -> None:
        self.ops = ops

    def stream_rows_for(self, host_X: Any, batch_size: int) -> int | None:
        """Rows per streamed chunk if ``host_X`` should not be moved whole (None: resident)."""
        return None

    def stage(self, host: Any) -> Any:
        """Start copying a host array to the device; :meth:`ready` returns the device array.
        Generic: a synchronous copy."""
        return self.ops.from_host(np.asarray(host, order="C"))

    def ready(self, staged: Any) -> Array:
        """The device array of a :meth:`stage` result, usable by the computation."""
        return staged

    def host_buffer(self, n: int, dtype: Any) -> np.ndarray:
        """A flat host array of ``n`` values to stage device arrays through (page-locked on GPUs)."""
        return np.empty(n, dtype)

    def download(self, dev: Array, host: np.ndarray) -> None:
        """host ← dev (``host`` flat, of dev's size), complete when this returns."""
        host[...] = np.reshape(np.asarray(self.ops.to_host(dev)), -1)

    def upload(self, host: np.ndarray, dev: Array) -> None:
        """dev ← host (flat, of dev's size), in place; ``host`` may be reused when this returns."""
        dev[...] = self.ops.xp.reshape(self.ops.from_host(host), tuple(dev.shape))

    def synchronize(self) -> None:
        """Wait until the device has finished the work queued so far (nothing to wait for here)."""

    def device_count(self) -> int:
        """GPUs this process can use (0: a CPU backend)."""
        return 0

    def use_device(self, index: int) -> int | None:
        """Make GPU ``index`` mod (GPUs here) this thread's current device and return its index
        (None: a backend without GPUs, nothing to choose)."""
        return None

    def info(self) -> dict[str, Any]:
        """Device memory: pool used and cached bytes, device free and total (GPU backends)."""
        return {}

    def release(self) -> None:
        """Return cached, unused device memory to the driver (GPU backends)."""

    def describe(self) -> dict[str, Any]:
        """Name and memory of the device (GPU backends); raises on CPU backends."""
        raise NotImplementedError(f"backend {self.ops.name!r} has no GPU")
