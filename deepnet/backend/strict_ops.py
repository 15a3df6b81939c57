"""A test backend over ``array_api_strict`` on its fake non-CPU device.

Running the suite here proves that layers, losses and optimizers use nothing but the
Array API standard: NumPy-only idioms, implicit host conversion and silent float64 all
fail loudly.
"""

from __future__ import annotations

from typing import Any

from ..errors import BackendError
from .ops import Array, Ops


class StrictOps(Ops):
    name = "strict"

    def __init__(self) -> None:
        try:
            import array_api_strict as xp
        except ImportError as err:
            raise BackendError(
                "the 'strict' test backend needs array-api-strict: pip install 'deepnet[test]'"
            ) from err
        super().__init__(xp, xp.Device("device1"))
        self._cpu = xp.Device("CPU_DEVICE")

    def to_host(self, a: Array) -> Any:
        return super().to_host(a.to_device(self._cpu))   # DLPack, from the (fake) device's CPU copy
