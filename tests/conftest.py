"""Shared fixtures: every backend-dependent test runs on NumPy and on the strict
Array-API namespace, and on CuPy where a GPU is present (skipped with the reason)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path

import numpy as np
import pytest

import deepnet
from deepnet.backend import BackendError, get_ops

# The interrupt tests press Ctrl-C as a user at a terminal would.  A test run started in the
# background of a shell without job control (``cmd &``, ``nohup``) inherits SIGINT ignored, and
# fit rightly leaves an ignored signal alone; give the tests (and the processes they start,
# which inherit the disposition) Python's own handler back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

def _torch_ops():
    """PyTorch (CPU) as a user adds it: any Array-API namespace through the public register_backend."""
    import array_api_compat.torch as xp

    return deepnet.backend.Ops(xp, device=xp.asarray(0).device, name="torch")


deepnet.backend.register_backend("torch", _torch_ops, replace=True)

BACKENDS = ["numpy", "strict", pytest.param("cupy-shaped", marks=pytest.mark.cupy_shaped),
            pytest.param("torch", marks=pytest.mark.torch), pytest.param("cupy", marks=pytest.mark.cupy)]



def _reason(name: str) -> str | None:
    try:
        get_ops(name)
    except BackendError as err:
        missing = isinstance(err.__cause__, ImportError) and name == "torch"   # _torch_ops could not import
        return f"{err} (pip install array-api-compat torch)" if missing else str(err)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for marker, name, what in (("cupy", "cupy", "CuPy backend"), ("cupy_shaped", "cupy-shaped", "CuPy-shaped backend"),
                               ("torch", "torch", "PyTorch backend")):
        if not any(item.get_closest_marker(marker) for item in items):
            continue
        reason = _reason(name)
        if reason is None:
            continue
        skip = pytest.mark.skip(reason=f"{what} unavailable: {reason}")
        for item in items:
            if item.get_closest_marker(marker):
                item.add_marker(skip)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest):
    """Run the test with this backend selected (scoped: restored afterwards)."""
    with deepnet.use_backend(request.param) as ops:
        yield ops


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def mnist_dir() -> Path | None:
    """The real MNIST folder if the environment points at one (DEEPNET_MNIST)."""
    path = os.environ.get("DEEPNET_MNIST")
    return Path(path) if path and Path(path).is_dir() else None


requires_mnist = pytest.mark.skipif(mnist_dir() is None, reason="set DEEPNET_MNIST to the MNIST folder")


@pytest.fixture(params=["numpy-kernels", "compiled-kernels"])
def numpy_kernels(request):
    """A NumPy backend of its own: pure NumPy (NumpyOps), and with numba's compiled kernels
    (NumbaOps: optimizer updates, small sigmoids, ReLU, bias add, softmax cross-entropy) where
    numba is installed.  Nothing shared is changed."""
    from deepnet.backend.numba_ops import NumbaOps
    from deepnet.backend.numpy_ops import NumpyOps

    if request.param == "numpy-kernels":
        return NumpyOps()
    try:
        return NumbaOps()
    except ImportError:
        pytest.skip("numba is not installed (pip install 'deepnet[fast]')")


@contextlib.contextmanager
def no_network():
    """Any connection beyond this machine fails: no test may need the internet."""
    real = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("localhost", "127.0.0.1", "::1") and self.family != socket.AF_UNIX:
            raise OSError(f"the test tried to reach {address!r}: no test may need the internet")
        return real(self, address)

    socket.socket.connect = connect
    try:
        yield
    finally:
        socket.socket.connect = real
