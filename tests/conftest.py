"""Shared fixtures: every backend-dependent test runs on NumPy and on the strict
Array-API namespace, and on CuPy where a GPU is present (skipped with the reason)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import deepnet
from deepnet.backend import BackendError, get_ops

BACKENDS = ["numpy", "strict", pytest.param("cupy", marks=pytest.mark.cupy)]


def _cupy_reason() -> str | None:
    try:
        get_ops("cupy")
    except BackendError as err:
        return str(err)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("cupy") for item in items):
        return
    reason = _cupy_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"CuPy backend unavailable: {reason}")
    for item in items:
        if item.get_closest_marker("cupy"):
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
    """The NumPy backend with its pure-NumPy kernels, and with its numba-compiled ones where numba
    is installed (optimizer updates, small sigmoids, ReLU backward, softmax cross-entropy)."""
    from deepnet.backend.numpy_ops import _load_numba

    ops = get_ops("numpy")
    if request.param == "compiled-kernels" and _load_numba() is None:
        pytest.skip("numba is not installed (pip install 'deepnet[fast]')")
    ops.use_numba = request.param == "compiled-kernels"
    yield ops
    ops.use_numba = True
