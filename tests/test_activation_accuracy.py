"""Every activation, forward and backward, in float32 against a float64 reference (issue 13).

For x ∈ [−50, 50] (a grid plus the points where the old ½·tanh(x/2)+½ sigmoid failed:
−10, −15, −18, −20), on every backend, and on the NumPy backend with and without its
numba kernels (NumbaOps, NumpyOps), at array sizes on both sides of every size threshold
in ``numba_ops`` (``_NUMBA_*``: read from the module, so a new threshold is covered
without editing this file).  Each activation goes through its layer (``layer.forward(x, training=True)``
then ``layer.backward(dy)``), as training does.

Tolerances come from float32's precision, ε = 2⁻²³ ≈ 1.2e-7:

* forward: ``|got − ref| ≤ rtol·|ref| + TINY`` with rtol = 4ε (≈ 5e-7) for every
  activation whose float32 evaluation is a few correctly rounded operations (sigmoid in
  the two-branch form, tanh, ELU, softplus, softmax's exponentials, ...).  The relative
  bound holds down to the smallest normal float32, TINY ≈ 1.18e-38: outputs below it are
  subnormal and may lose digits or be flushed to zero (FTZ/DAZ modes, GPUs), which the
  absolute TINY allows.  In [−50, 50] the sigmoid's smallest output is σ(−50) ≈ 2e-22,
  far above TINY, so its whole tail is held to 4ε relative (the old form returned 0
  from x ≈ −17); softmax rows spread over 100 do reach subnormals.
* softmax: its exponent x − max x is rounded once, which costs |x − max|·ε/2 relative,
  so its rtol grows with |x − max| (exp's condition number).
* backward of an activation that keeps its output y (sigmoid, tanh, ReLU, ELU,
  softmax): g′ is computed from y, and y is only known to the forward tolerance; the
  error that inherits, |h′(y)|·err(y)·|dy| with h(y) = g′(g⁻¹(y)), is allowed on top
  of 8ε relative.  It matters where g′ is tiny and y saturates at 1 or −1 (sigmoid for
  x ≳ 17: y rounds to 1 and g′ to 0, true value ≤ 4e-8·|dy|); it does not hide the
  negative sigmoid tail, where y ≈ e^x is small and known to 4ε relative.
* GELU (tanh form): written as ½x(1 + tanh u) it would cancel in 1 + tanh u for x < 0;
  deepnet computes the same function as x·σ(2u), whose error is relative but grows with
  |u| (σ(2u) ≈ e^{2u} inherits u's rounding); the tolerance allows ε·|x|·(1 + |u|(1 − tanh²u))
  absolutely, and ``test_gelu_relative_accuracy_for_negative_x`` checks 1e-5 relative where
  the cancelling form lost every digit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import deepnet as dn
from deepnet import to_device, to_host
from deepnet.backend import numba_ops

EPS = float(np.finfo(np.float32).eps)      # 2⁻²³
TINY = float(np.finfo(np.float32).tiny)    # smallest normal float32, ≈ 1.18e-38
RTOL_FWD = 4 * EPS
RTOL_BWD = 8 * EPS
HARD_POINTS = [-50.0, -20.0, -18.0, -15.0, -10.0, -1.0, -1e-3, -0.0, 0.0, 1e-3, 1.0, 10.0, 15.0, 18.0, 20.0, 50.0]
GELU_C = 0.7978845608028654  # √(2/π)


def thresholds() -> list[int]:
    """Every ``_NUMBA_*`` size threshold of the NumPy backend's compiled kernels."""
    return sorted({v for k, v in vars(numba_ops).items() if k.startswith("_NUMBA_") and isinstance(v, int)})


def sizes() -> list[int]:
    out = {50}                                   # one sample of a 50-unit layer (batch 1)
    for t in thresholds():
        out.update((t - 1, t, t + 1))
    return sorted(out)


def shape_for(n: int) -> tuple[int, int]:
    """A 2-D (rows, columns) shape of exactly n elements, as square as n allows."""
    rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return rows, n // rows


def inputs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 x over [−50, 50] (grid plus HARD_POINTS, shuffled) and an error dy, shape ``shape_for(n)``."""
    rng = np.random.default_rng(seed + n)
    x = np.linspace(-50.0, 50.0, n).astype(np.float32)
    k = min(n, len(HARD_POINTS))
    x[:k] = np.asarray(HARD_POINTS[:k], np.float32)
    x = rng.permutation(x).reshape(shape_for(n))
    dy = rng.standard_normal(x.shape).astype(np.float32)
    return x, dy


# --------------------------------------------------------------------------- float64 references
def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _gelu_u(x):
    return GELU_C * (x + 0.044715 * x ** 3)


def _gelu(x):
    return 0.5 * x * (1.0 + np.tanh(_gelu_u(x)))


def _gelu_grad(x):
    t = np.tanh(_gelu_u(x))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 3 * 0.044715 * x * x)


SLOPE, ALPHA = 0.01, 1.0

# name -> (layer factory, forward g(x), g'(x) (elementwise; None: softmax),
#          for layers that keep y: |h'(y)| where h(y) = g'(g⁻¹(y)), else None)
ACTIVATIONS = {
    "Identity": (dn.Identity, lambda x: x, lambda x: np.ones_like(x), lambda y: np.zeros_like(y)),
    "Sigmoid": (dn.Sigmoid, _sigmoid, lambda x: _sigmoid(x) * _sigmoid(-x), lambda y: np.abs(1.0 - 2.0 * y)),
    "Tanh": (dn.Tanh, np.tanh, lambda x: 1.0 / np.cosh(x) ** 2, lambda y: np.abs(2.0 * y)),
    "ReLU": (dn.ReLU, lambda x: np.maximum(x, 0.0), lambda x: (x > 0).astype(np.float64), lambda y: np.zeros_like(y)),
    "LeakyReLU": (lambda: dn.LeakyReLU(SLOPE), lambda x: np.where(x > 0, x, SLOPE * x),
                  lambda x: np.where(x > 0, 1.0, SLOPE), None),
    "ELU": (lambda: dn.ELU(ALPHA), lambda x: np.where(x > 0, x, ALPHA * np.expm1(np.minimum(x, 0.0))),
            lambda x: np.where(x > 0, 1.0, ALPHA * np.exp(np.minimum(x, 0.0))), lambda y: (y <= 0).astype(np.float64)),
    "Softplus": (dn.Softplus, lambda x: np.logaddexp(0.0, x), _sigmoid, None),
    "GELU": (dn.GELU, _gelu, _gelu_grad, None),
    "Softmax": (dn.Softmax, _softmax, None, None),
}


def test_every_activation_is_covered():
    """A new activation in layers/activations.py must get a reference here."""
    from deepnet.layers import activations

    base = activations.Activation
    defined = {name for name, obj in vars(activations).items()
               if isinstance(obj, type) and issubclass(obj, base) and obj is not base}
    assert defined == set(ACTIVATIONS), f"activations without a reference here: {sorted(defined - set(ACTIVATIONS))}"


def tolerances(name: str, x: np.ndarray, dy: np.ndarray, y_ref: np.ndarray,
               g_ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(forward, backward) absolute tolerances per element, from float32 precision (module docstring)."""
    ax, ady = np.abs(x), np.abs(dy)
    if name == "Softmax":
        spread = np.abs(x - x.max(axis=1, keepdims=True))
        rtol = RTOL_FWD * (1.0 + spread)
        tol_f = rtol * np.abs(y_ref) + TINY
        # JVP y∘(dy − s), s = Σ_j dy_j y_j: the row sum's rounding (k terms), y's own error,
        # and the cancellation in dy − s
        k = x.shape[1]
        s_abs = (np.abs(dy) * y_ref).sum(axis=1, keepdims=True)
        s = (dy * y_ref).sum(axis=1, keepdims=True)
        tol_b = (RTOL_BWD * np.abs(g_ref)
                 + y_ref * (k * EPS * s_abs + 2 * EPS * (ady + np.abs(s)))
                 + rtol * y_ref * (np.abs(dy - s) + s_abs) + TINY)
        return tol_f, tol_b
    if name == "GELU":
        u = _gelu_u(x)
        t = np.tanh(u)
        du = GELU_C * (1.0 + 3 * 0.044715 * x * x)
        # t = tanh u in float32 is off by δt ≈ ε(1 + |u|(1 − t²)) (its rounding, and u's
        # propagated); 1 + t and 1 − t² carry δt absolutely, and the backward multiplies
        # 1 − t² by |x|·u′
        dt = RTOL_FWD * (1.0 + np.abs(u) * (1.0 - t * t))
        tol_f = RTOL_FWD * np.abs(y_ref) + ax * dt + TINY
        tol_b = RTOL_BWD * np.abs(g_ref) + ady * dt * (1.0 + ax * du) + TINY
        return tol_f, tol_b
    tol_f = RTOL_FWD * np.abs(y_ref) + TINY
    tol_b = RTOL_BWD * np.abs(g_ref) + TINY
    dh = ACTIVATIONS[name][3]
    if dh is not None:                 # backward from y: inherits y's allowed error
        tol_b = tol_b + dh(y_ref) * tol_f * ady
    return tol_f, tol_b


def _worst(what: str, got: np.ndarray, ref: np.ndarray, tol: np.ndarray, x: np.ndarray) -> str:
    excess = np.abs(got - ref) - tol
    i = np.unravel_index(np.argmax(excess), got.shape)
    rel = abs(got[i] - ref[i]) / abs(ref[i]) if ref[i] != 0 else float("inf")
    return (f"{what}: {int((excess > 0).sum())} elements off; worst at x = {x[i]!r}: got {got[i]!r}, "
            f"float64 reference {ref[i]!r} (relative error {rel:.3g}, tolerance {tol[i]:.3g})")


def check_activation(name: str, ops, n: int) -> None:
    factory, g, dg, _ = ACTIVATIONS[name]
    x32, dy32 = inputs(n)
    x, dy = x32.astype(np.float64), dy32.astype(np.float64)
    y_ref = g(x)
    g_ref = dy * dg(x) if dg is not None else y_ref * (dy - (dy * y_ref).sum(axis=1, keepdims=True))
    tol_f, tol_b = tolerances(name, x, dy, y_ref, g_ref)

    layer = factory().to(ops)
    y_dev = layer.forward(to_device(x32, ops), training=True)
    gx_dev = layer.backward(to_device(dy32, ops))
    y, gx = to_host(y_dev), to_host(gx_dev)
    where = f"{name} on {ops.name} ({type(ops).__name__}), {n} elements {x32.shape}"
    assert y.dtype == np.float32 and gx.dtype == np.float32, f"{where}: float32 in gave {y.dtype}/{gx.dtype}"
    y64, gx64 = y.astype(np.float64), gx.astype(np.float64)
    assert np.all(np.abs(y64 - y_ref) <= tol_f), _worst(f"{where}, forward", y64, y_ref, tol_f, x32)
    assert np.all(np.abs(gx64 - g_ref) <= tol_b), _worst(f"{where}, backward", gx64, g_ref, tol_b, x32)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_accuracy_on_every_backend(backend, name):
    """Every backend, at sizes on both sides of each NumPy dispatch threshold."""
    for n in sizes():
        check_activation(name, backend, n)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_accuracy_numpy_with_and_without_numba(numpy_kernels, name):
    """The NumPy backend's compiled (numba) and pure-NumPy kernels, on both sides of each threshold."""
    for n in sizes():
        check_activation(name, numpy_kernels, n)


def test_sizes_straddle_every_threshold():
    """The sizes tested include t − 1, t and t + 1 for each ``_NUMBA_*`` threshold t."""
    ts = thresholds()
    names = {k for k in vars(numba_ops) if k.startswith("_NUMBA_")}
    assert {"_NUMBA_MIN_SIZE", "_NUMBA_SMALL_MAX", "_NUMBA_LARGE_MIN"} <= names
    for t in ts:
        assert {t - 1, t, t + 1} <= set(sizes())
        for n in (t - 1, t, t + 1):
            assert math.prod(shape_for(n)) == n


@pytest.mark.parametrize("x", [-10.0, -15.0, -18.0, -20.0, -50.0])
def test_sigmoid_tail_at_the_issue_points(backend, x):
    """Issue 13's points, in an array of 65,536 (the large-array path) and of 1 element:
    the old form gave relative errors 2e-4, 2.6%, 96%, 100% (exactly 0) and 100%."""
    expected = 1.0 / (1.0 + math.exp(-x))
    for n in (1, 1 << 16):
        y = to_host(backend.sigmoid(to_device(np.full((1, n), x, np.float32), backend)))
        assert y.dtype == np.float32
        assert np.all(np.abs(y.astype(np.float64) / expected - 1.0) <= RTOL_FWD), (n, y[0, 0], expected)


def test_sigmoid_subnormal_tail_and_specials(backend):
    """Below x ≈ −87.3, σ(x) < TINY is subnormal: digits are lost gradually (no relative bound) and
    FTZ hardware may flush it to 0; it never goes negative, NaN or non-monotone.  ±inf give 1 and 0,
    NaN stays NaN, and σ(±0) = ½."""
    x32 = np.concatenate([np.linspace(-120.0, -80.0, 401), [-np.inf, np.inf, np.nan, -0.0, 0.0]]).astype(np.float32)
    for n in (x32.size, 1 << 13):                       # both sides of _NUMBA_SMALL_MAX
        xs = np.resize(x32, n) if n > x32.size else x32
        y = to_host(backend.sigmoid(to_device(xs.reshape(1, -1), backend))).reshape(-1)[: x32.size]
        ref = _sigmoid(x32[:-5].astype(np.float64))
        body = y[:-5].astype(np.float64)
        assert np.all(body >= 0) and np.all(np.diff(body) >= 0)
        assert np.all(np.abs(body - ref) <= RTOL_FWD * ref + TINY)
        assert y[-5] == 0.0 and y[-4] == 1.0 and np.isnan(y[-3]) and y[-2] == 0.5 and y[-1] == 0.5


def test_numpy_sigmoid_keeps_dtype_and_input(numpy_kernels):
    """The NumPy sigmoid (both paths) keeps float32 in float32 and float64 in float64, and does
    not write into its input."""
    for n in (64, 1 << 14):
        x32, _ = inputs(n)
        keep = x32.copy()
        assert numpy_kernels.sigmoid(x32).dtype == np.float32 and np.array_equal(x32, keep)
        x64 = x32.astype(np.float64)
        np.testing.assert_allclose(numpy_kernels.sigmoid(x64), _sigmoid(x64), rtol=1e-15, atol=0)


def test_gelu_relative_accuracy_for_negative_x():
    """½x(1 + tanh u) cancels for x < 0; deepnet computes the same function as x·σ(2u)."""
    x32 = np.array([[-3.0, -4.0, -5.0, -6.0]], np.float32)
    y = to_host(dn.GELU().forward(to_device(x32)))
    ref = _gelu(x32.astype(np.float64))
    np.testing.assert_allclose(y, ref, rtol=1e-5)
