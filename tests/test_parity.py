"""Backend parity by the criteria of benchmarks/gpu_parity.py, small enough for every run:
(a) float64 end to end ≤ 10⁻¹² and (b) float32 one step at a time along NumPy's trajectory
≤ 10⁻⁵ (relative difference: max|a - b| / max|a| per tensor), for NumPy against the strict
backend, the CuPy-shaped backend (fused and generic kernels), PyTorch registered as a user
would, and CuPy itself on a GPU.  Criterion (c) (one epoch, test accuracy) runs in
scripts/gpu_check.sh.  A planted bug shows that (b) sees a 0.1% gradient error that the
final weights of a float32 run could not tell from chaos."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from deepnet.backend import Ops
from deepnet.backend.ops import store

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("gpu_parity", ROOT / "benchmarks" / "gpu_parity.py")
gp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gp)

SPEC, BATCH, STEPS_A, STEPS_B = "64-32-16-10", 16, 40, 8
(X, Y), _ = gp.synthetic(STEPS_A * BATCH, 0, n_features=64)

BACKENDS = [  # (id, backend, kernels: "fused", "generic" or None for the backend's only ones, marks)
    ("strict", "strict", None, []),
    ("cupy-shaped-fused", "cupy-shaped", "fused", [pytest.mark.cupy_shaped]),
    ("cupy-shaped-generic", "cupy-shaped", "generic", [pytest.mark.cupy_shaped]),
    ("torch", "torch", None, [pytest.mark.torch]),
    ("cupy-fused", "cupy", "fused", [pytest.mark.cupy]),
    ("cupy-generic", "cupy", "generic", [pytest.mark.cupy]),
]


def _variants(backend, kernels):
    """The one (label, backend) of gp.kernel_variants to compare: the fused or the generic class."""
    variants = gp.kernel_variants(backend)
    if kernels is None:
        assert len(variants) == 1, variants
        return variants
    chosen = [v for v in variants if v[0] == kernels]
    assert len(chosen) == 1, variants
    return chosen


@pytest.mark.parametrize("backend, kernels", [pytest.param(b, k, id=i, marks=m) for i, b, k, m in BACKENDS])
def test_float64_end_to_end_matches_numpy(backend, kernels):
    res = gp.criterion_a("numpy", backend, X, Y, steps=STEPS_A, batch=BATCH, spec=SPEC,
                         variants=_variants(backend, kernels))
    assert res["ok"], res
    assert res["threshold"] == 1e-12


@pytest.mark.parametrize("backend, kernels, optimizer", [
    pytest.param(b, k, opt, id=f"{i}-{opt}", marks=m)
    for i, b, k, m in BACKENDS for opt in ("momentum", "adam")])
def test_float32_one_step_matches_numpy(backend, kernels, optimizer):
    res = gp.criterion_b("numpy", backend, X, Y, steps=STEPS_B, batch=BATCH, spec=SPEC, optimizers=(optimizer,),
                         variants=_variants(backend, kernels))
    assert res["ok"], res
    assert res["threshold"] == 1e-5


def test_relative_difference_is_max_abs_difference_over_max_abs_reference():
    a = np.array([[1.0, -4.0], [2.0, 0.5]])
    b = a + np.array([[0.0, 0.02], [0.0, -0.01]])
    assert gp.rel_diff(a, b) == pytest.approx(0.02 / 4.0)
    assert gp.rel_diff(np.zeros(3), np.zeros(3)) == 0.0
    assert gp.rel_diff(np.zeros(3), np.ones(3)) == np.inf
    assert gp.rel_diff(np.ones(3), np.ones(4)) == np.inf


class _WeightGradientTooLarge(Ops):
    """A planted bug, for this test only: the generic backend on NumPy, except that every
    weight gradient (∂f/∂W = ẽᵀx, the product Dense computes with ``trans_a``) is 0.1% too large."""

    def gemm(self, a, b, *, trans_a=False, trans_b=False, out=None, accumulate=False):
        res = super().gemm(a, b, trans_a=trans_a, trans_b=trans_b)
        return store(res * 1.001 if trans_a else res, out, accumulate)


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_one_step_parity_catches_a_planted_gradient_error(optimizer):
    healthy = Ops(np, name="generic-numpy")
    planted = _WeightGradientTooLarge(np, name="planted-bug")
    kw = dict(steps=STEPS_B, batch=BATCH, spec=SPEC, optimizers=(optimizer,))
    good = gp.criterion_b("numpy", healthy, X, Y, **kw)
    bad = gp.criterion_b("numpy", planted, X, Y, **kw)
    assert good["ok"] and good["figure"] < 1e-6, good
    assert not bad["ok"] and bad["figure"] > 1e-4, bad          # 0.1% in g shows as >10x the threshold
    assert bad["runs"][f"generic/{optimizer}"]["worst_tensor"].startswith(("velocity", "m ", "v ", "weight"))
