"""Initial weights, drawn on the host from the run's seeded generator.

Drawing on the host and then transferring means the same seed gives the same initial
network on every backend.  Each initializer takes ``rng`` (a ``numpy.random.Generator``)
and a weight shape ``(n_out, n_in)`` and returns a float64 host array.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Initializer = Callable[[Any, tuple[int, int]], Any]


def seed_normal(rng: Any, shape: tuple[int, int]) -> Any:
    """The seed's normal(0, 1/√n_in)."""
    return rng.normal(0.0, 1.0 / math.sqrt(shape[1]), size=shape)


def glorot_uniform(rng: Any, shape: tuple[int, int]) -> Any:
    """Glorot/Xavier uniform: U(−a, a), a = √(6 / (n_in + n_out))."""
    a = math.sqrt(6.0 / (shape[0] + shape[1]))
    return rng.uniform(-a, a, size=shape)


def glorot_normal(rng: Any, shape: tuple[int, int]) -> Any:
    """Glorot/Xavier normal: N(0, 2 / (n_in + n_out))."""
    return rng.normal(0.0, math.sqrt(2.0 / (shape[0] + shape[1])), size=shape)


def he_normal(rng: Any, shape: tuple[int, int]) -> Any:
    """He normal for ReLU: N(0, 2 / n_in)."""
    return rng.normal(0.0, math.sqrt(2.0 / shape[1]), size=shape)


def he_uniform(rng: Any, shape: tuple[int, int]) -> Any:
    """He uniform: U(−a, a), a = √(6 / n_in)."""
    a = math.sqrt(6.0 / shape[1])
    return rng.uniform(-a, a, size=shape)


INITIALIZERS: dict[str, Initializer] = {
    "normal": seed_normal,
    "seed": seed_normal,
    "glorot": glorot_uniform,
    "xavier": glorot_uniform,
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "he": he_normal,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
}


def get_initializer(name: str | Initializer) -> Initializer:
    if callable(name):
        return name
    try:
        return INITIALIZERS[name]
    except KeyError:
        raise ValueError(f"unknown initializer {name!r}: expected one of {sorted(INITIALIZERS)}") from None
