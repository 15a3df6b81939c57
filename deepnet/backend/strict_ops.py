"""A test backend over ``array_api_strict`` on its fake non-CPU device.

Running the suite here proves that layers, losses and optimizers use nothing but the
Array API standard: NumPy-only idioms, implicit host conversion and silent float64 all
fail loudly.
"""

from __future__ import annotations

from typing import Any

from ..errors import BackendError
from .ops import Array, Ops


#: creation functions that place a new array on the default (CPU) device unless given ``device=``
_CREATION = frozenset({"zeros", "ones", "empty", "full", "arange", "eye", "linspace"})


class _OnDeviceNamespace:
    """``array_api_strict`` whose creation functions refuse to run without ``device=``.

    Without it the new array would land on the CPU while the backend's arrays live on its
    (fake) device, and the first operation mixing them would fail far from the cause
    ("Arrays from two different devices ... can not be combined").  On a GPU backend the same
    code would compute on the wrong device, so the error is raised where the array is made."""

    def __init__(self, xp: Any, device: Any) -> None:
        self._xp, self._device = xp, device

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._xp, name)
        if name not in _CREATION:
            setattr(self, name, attr)             # found directly from now on
            return attr
        hint = f"self.ops.{_OPS_CALL[name]}" if name in _OPS_CALL else ""
        if name in ("zeros", "ones", "empty", "full"):
            hint += f" (or xp.{name}_like(x) from an array you have)"
        device = self._device

        def create(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("device") is None:
                raise BackendError(f"xp.{name}(...) without device= makes an array on the CPU, not on the backend's "
                                   f"device {device}: create it through the backend{', ' + hint + ',' if hint else ''} "
                                   f"or pass device=self.ops.device")
            return attr(*args, **kwargs)

        return create

    def __repr__(self) -> str:
        return f"<array_api_strict on {self._device}>"


#: the Ops method to use instead of a creation function
_OPS_CALL = {"zeros": "zeros(shape, dtype)", "ones": "full(shape, 1.0, dtype)", "empty": "empty(shape, dtype)",
             "full": "full(shape, value, dtype)", "arange": "arange(n, dtype)"}


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
        self.xp = _OnDeviceNamespace(xp, self.device)    # xp.zeros(...) without device=: a clear error at once
        self._cpu = xp.Device("CPU_DEVICE")

    def to_host(self, a: Array) -> Any:
        return super().to_host(a.to_device(self._cpu))   # DLPack, from the (fake) device's CPU copy
