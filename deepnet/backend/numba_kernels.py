"""One-pass optimizer updates for the NumPy backend, compiled with numba (optional).

The pure-NumPy updates in ``numpy_ops`` need 4–12 passes over each parameter; these do
one.  They compute the same formulas element by element (IEEE arithmetic, no fastmath).
Compiled lazily on first use and cached on disk.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def sgd(w: Any, g: Any, lr: float) -> None:  # pragma: no cover - compiled
    for i in range(w.size):
        w[i] -= lr * g[i]


@numba.njit(cache=True, nogil=True)
def momentum(w: Any, g: Any, v: Any, lr: float, mu: float, nesterov: bool) -> None:  # pragma: no cover
    for i in range(w.size):
        vi = mu * v[i] + g[i]
        v[i] = vi
        if nesterov:
            w[i] -= lr * (g[i] + mu * vi)
        else:
            w[i] -= lr * vi


@numba.njit(cache=True, nogil=True)
def adam(w: Any, g: Any, m: Any, v: Any, lr_t: float, b1: float, b2: float, eps_hat: float,
         decay: float) -> None:  # pragma: no cover - compiled
    for i in range(w.size):
        gi = g[i]
        mi = b1 * m[i] + (1.0 - b1) * gi
        vi = b2 * v[i] + (1.0 - b2) * gi * gi
        m[i] = mi
        v[i] = vi
        w[i] = w[i] * decay - lr_t * mi / (np.sqrt(vi) + eps_hat)
