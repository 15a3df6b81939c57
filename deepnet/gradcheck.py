"""Numerical gradient checks: the public way to verify a layer's or loss's backward.

Both helpers compare the analytic gradients against central finite differences
(f(θ+ε) − f(θ−ε)) / 2ε computed in float64, on whatever backend the layer lives on::

    from deepnet import check_layer
    report = check_layer(MyLayer(4, 3), x)      # raises GradCheckError on a mismatch
    print(report)

For a layer, the scalar checked is L = Σ r ∘ layer(x) with a fixed random r, so
∂L/∂y = r is what backward receives; both ∂L/∂x and every ∂L/∂θ are checked.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as _host  # the checker works on host copies; it is a test utility, not a layer

from .backend import get_backend, get_ops, host_rng, to_device, to_host
from .layers.base import Layer
from .losses import Loss


class GradCheckError(AssertionError):
    """Analytic and numerical gradients disagree."""


@dataclass
class GradCheckReport:
    """Largest differences found, per checked quantity."""

    name: str
    max_abs_error: dict[str, float] = field(default_factory=dict)
    max_rel_error: dict[str, float] = field(default_factory=dict)
    checked: dict[str, int] = field(default_factory=dict)
    #: quantities not checked, with the reason (e.g. the input, when it holds integer indices)
    skipped: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"gradient check of {self.name}: passed"]
        for k in self.max_abs_error:
            lines.append(f"  {k}: {self.checked[k]} entries, max abs error {self.max_abs_error[k]:.2e}, "
                         f"max rel error {self.max_rel_error[k]:.2e}")
        lines += [f"  {k}: not checked: {why}" for k, why in self.skipped.items()]
        return "\n".join(lines)


def _pick(n: int, max_checks: int | None, rng: Any) -> Any:
    if max_checks is None or n <= max_checks:
        return _host.arange(n)
    return _host.sort(rng.choice(n, size=max_checks, replace=False))


def _compare(report: GradCheckReport, key: str, analytic: Any, numeric: Any, idx: Any,
             rtol: float, atol: float) -> list[str]:
    a = _host.asarray(analytic, dtype=_host.float64).reshape(-1)[idx]
    nu = _host.asarray(numeric, dtype=_host.float64)
    err = _host.abs(a - nu)
    report.checked[key] = int(idx.size)
    report.max_abs_error[key] = float(err.max()) if err.size else 0.0
    report.max_rel_error[key] = float((err / _host.maximum(_host.abs(nu), 1e-12)).max()) if err.size else 0.0
    bad = _host.nonzero(err > atol + rtol * _host.abs(nu))[0]
    return [f"{key}[flat {int(idx[j])}]: analytic {a[j]:.8g}, numerical {nu[j]:.8g}" for j in bad[:5]]


def check_layer(layer: Layer, x: Any, *, training: bool = True, eps: float = 1e-6, rtol: float = 1e-5,
                atol: float = 1e-8, seed: int = 0, max_checks: int | None = 200) -> GradCheckReport:
    """Check ``layer.backward`` against finite differences in float64.

    ``layer`` is not modified (a float64 copy is checked).  ``x`` is a host or device
    array of inputs.  Integer inputs (indices, e.g. for an embedding) are passed as they are
    and only the parameters are checked: indices have no gradient, so backward is called with
    ``need_input_grad=False`` and the report says the input was not checked.  Stochastic
    layers (``layer.stochastic``) are checked with their random mask frozen.  ``max_checks``
    limits how many entries of x and of each parameter are perturbed (chosen at random,
    reproducibly).
    Returns a :class:`GradCheckReport`; raises :class:`GradCheckError` on a mismatch.
    """
    rng = host_rng(seed)
    lay = copy.deepcopy(layer)
    ops = lay.ops
    if not lay.initialized:
        lay.initialize(host_rng(seed + 1))
    lay.to(ops, "float64")
    if lay.stochastic:
        lay.freeze_randomness(True)
    x_host = _host.array(to_host(x))
    integer = x_host.dtype.kind in "iub"     # indices: passed as they are, no gradient w.r.t. them
    if not integer:
        x_host = x_host.astype(_host.float64)
    x_dtype = None if integer else "float64"

    def run(xh: Any) -> Any:        # a fresh copy each time: a layer that writes into its input cannot move x
        return lay.forward(to_device(xh, ops, dtype=x_dtype, copy=True), training)

    y = to_host(run(x_host))
    r = rng.standard_normal(y.shape)

    def scalar(xh: Any) -> float:
        return float(_host.sum(to_host(run(xh)) * r))

    lay.zero_grad()
    run(x_host)
    dx = lay.backward(to_device(r.copy(), ops, dtype="float64"), not integer)
    analytic = {} if integer else {"input": to_host(dx)}
    for name, p in lay.parameters().items():
        analytic[name] = to_host(p.grad).copy()

    report = GradCheckReport(lay.name)
    failures: list[str] = []
    if integer:
        report.skipped["input"] = f"{x_host.dtype} inputs are indices, which have no gradient"
    else:
        failures += _check_input(report, scalar, x_host, analytic["input"], eps, rtol, atol, max_checks, rng)

    for name, p in lay.parameters().items():
        base = _host.array(to_host(p.data), dtype=_host.float64)
        idx = _pick(base.size, max_checks, rng)
        num = []
        for i in idx:
            vals = []
            for sign in (1.0, -1.0):
                w = base.copy()
                w.reshape(-1)[i] += sign * eps
                p.data = to_device(w, ops, dtype="float64")
                vals.append(scalar(x_host))
            num.append((vals[0] - vals[1]) / (2 * eps))
        p.data = to_device(base, ops, dtype="float64")
        failures += _compare(report, name, analytic[name], num, idx, rtol, atol)

    if failures:
        raise GradCheckError(f"gradient check of {lay.name} failed:\n  " + "\n  ".join(failures))
    return report


def _check_input(report: GradCheckReport, scalar: Any, x_host: Any, analytic: Any, eps: float, rtol: float,
                 atol: float, max_checks: int | None, rng: Any) -> list[str]:
    """∂L/∂x from backward against central differences of L in each picked entry of x."""
    idx = _pick(x_host.size, max_checks, rng)
    num = []
    for i in idx:
        xp_, xm = x_host.copy(), x_host.copy()
        xp_.reshape(-1)[i] += eps
        xm.reshape(-1)[i] -= eps
        num.append((scalar(xp_) - scalar(xm)) / (2 * eps))
    return _compare(report, "input", analytic, num, idx, rtol, atol)


def check_loss(loss: Loss, z: Any, y: Any, *, eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-8,
               backend: str | None = None) -> GradCheckReport:
    """Check ``loss``'s ∂f/∂z against finite differences of f in float64.

    ``y`` may be integer labels or target rows; it is passed to the loss unchanged.
    """
    ops = get_ops(backend) if backend is not None else get_backend()
    z_host = _host.array(to_host(z), dtype=_host.float64)
    y_host = to_host(y)
    y_dev = to_device(y_host, ops, dtype="int64" if y_host.dtype.kind in "iu" else "float64")

    def f(zh: Any) -> float:
        return float(to_host(loss(to_device(zh, ops, dtype="float64"), y_dev)))

    grad = to_host(loss.gradient(to_device(z_host, ops, dtype="float64"), y_dev))
    idx = _host.arange(z_host.size)
    num = []
    for i in idx:
        zp, zm = z_host.copy(), z_host.copy()
        zp.reshape(-1)[i] += eps
        zm.reshape(-1)[i] -= eps
        num.append((f(zp) - f(zm)) / (2 * eps))
    report = GradCheckReport(loss.name)
    failures = _compare(report, "z", grad, num, idx, rtol, atol)
    if failures:
        raise GradCheckError(f"gradient check of {loss.name} failed:\n  " + "\n  ".join(failures))
    return report
