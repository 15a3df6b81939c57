"""The NumPy backend's optional oneMKL matrix products (``deepnet[mkl]``, ``DEEPNET_BLAS=mkl``).

Skipped with a message where the ``mkl`` package is not installed; CI installs it.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import deepnet as dn
from deepnet.backend import get_ops
from deepnet.backend.mkl_blas import MklBlas, MklUnavailable
from deepnet.backend.products import MklProducts, NumpyProducts


def numpy_backend(**kw):
    """A NumPy backend of its own, of the registered one's class (compiled kernels or not):
    nothing shared is changed."""
    return type(get_ops("numpy"))(**kw)


def _mkl_or_skip() -> MklBlas:
    try:
        return MklBlas()
    except MklUnavailable as exc:
        pytest.skip(f"oneMKL unavailable: {exc}")


@pytest.fixture
def mkl_ops():
    ops = numpy_backend(products=MklProducts(_mkl_or_skip()))
    assert ops.blas == "mkl"
    return ops


def _layout(a, order):
    return np.asfortranarray(a) if order == "F" else np.ascontiguousarray(a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(64, 96, 80), (3, 4, 5)], ids=["mkl-sized", "numpy-sized"])
def test_gemm_matches_numpy_for_every_layout(mkl_ops, rng, dtype, shape):
    m, k, n = shape
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for trans_a, trans_b, la, lb, lo, acc in itertools.product((False, True), (False, True), "CF", "CF",
                                                              ("C", "F", None), (False, True)):
        if lo is None and acc:
            continue
        a = _layout(rng.normal(size=(k, m) if trans_a else (m, k)).astype(dtype), la)
        b = _layout(rng.normal(size=(n, k) if trans_b else (k, n)).astype(dtype), lb)
        want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
        out = None if lo is None else _layout(rng.normal(size=(m, n)).astype(dtype), lo)
        if acc:
            want = want + out
        got = mkl_ops.gemm(a, b, trans_a=trans_a, trans_b=trans_b, out=out, accumulate=acc)
        assert got.dtype == dtype and got.shape == (m, n)
        if out is not None:
            assert got is out
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 10,
                                   err_msg=f"trans_a={trans_a} trans_b={trans_b} a {la} b {lb} out {lo} acc {acc}")


def test_linear_and_bias_sums_match_numpy(mkl_ops, rng):
    x = rng.normal(size=(128, 300)).astype(np.float32)
    w = rng.normal(size=(70, 300)).astype(np.float32)
    np.testing.assert_allclose(mkl_ops.linear(x, w), x @ w.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mkl_ops.linear(x, np.asfortranarray(w)), x @ w.T, rtol=1e-4, atol=1e-4)
    out = np.ones(300, np.float32)
    mkl_ops.sum_rows(x, out=out, accumulate=True)
    np.testing.assert_allclose(out, 1 + x.astype(np.float64).sum(axis=0), rtol=1e-4, atol=1e-4)
    mkl_ops.sum_rows(x, out=out)
    np.testing.assert_allclose(out, x.astype(np.float64).sum(axis=0), rtol=1e-4, atol=1e-4)


def test_training_with_mkl_matches_numpy(rng, monkeypatch):
    """Same network, same batches: OpenBLAS and oneMKL products give the same training
    to float32 rounding (and the MKL run really went through MKL)."""
    _mkl_or_skip()
    calls = []
    real_gemm = MklBlas.gemm

    def counting_gemm(self, *args):
        done = real_gemm(self, *args)
        calls.append(done)
        return done

    monkeypatch.setattr(MklBlas, "gemm", counting_gemm)
    _train_on_both_blas(rng, graphs="off")      # the eager products
    assert sum(calls) == 2 * 8 * 2          # the first layer's y and ∂W (the second is below MIN_WORK)


def _train_on_both_blas(rng, graphs: str, check_ops=lambda ops: None) -> None:
    """Train one network with NumPy's BLAS and with oneMKL (``check_ops(ops)`` before each run)
    and assert the two agree to float32 rounding."""
    X = rng.random((512, 200)).astype(np.float32)
    y = rng.integers(0, 10, 512)
    results = {}
    for blas in ("numpy", "mkl"):
        ops = numpy_backend()
        ops.set_blas(blas)
        check_ops(ops)
        net = dn.Network([dn.Dense(200, 128), dn.ReLU(), dn.Dense(128, 10)], seed=3, backend=ops,
                         loss="xent", optimizer=dn.Adam(1e-3))
        hist = net.fit(X, y, epochs=2, batch_size=64, shuffle=True, graphs=graphs)
        results[blas] = (net.get_weights(), hist["loss"])
    for name, a in results["numpy"][0].items():
        np.testing.assert_allclose(results["mkl"][0][name], a, rtol=1e-3, atol=1e-4, err_msg=name)
    np.testing.assert_allclose(results["mkl"][1], results["numpy"][1], rtol=1e-4)


def test_the_compiled_step_calls_mkl_when_asked(rng):
    """With ``set_blas("mkl")`` the compiled step (fit(graphs=...) with numba) calls oneMKL's
    cblas_sgemm, not NumPy's, and trains as the OpenBLAS run does to float32 rounding."""
    _mkl_or_skip()
    pytest.importorskip("numba", reason="the compiled step needs numba")
    from deepnet.backend import cblas

    def calls_the_asked_blas(ops):
        kern = ops.step_compiler()
        if kern is None:
            pytest.skip("this NumPy backend compiles no steps")
        table = kern.blas(ops)
        expected = cblas.mkl_gemm(ops.products.lib.path) if ops.blas == "mkl" else cblas.numpy_gemm()
        assert tuple(int(v) for v in table) == tuple(expected)
        if ops.blas == "mkl":
            assert int(table[0]) != cblas.numpy_gemm()[0]

    _train_on_both_blas(rng, graphs="epoch", check_ops=calls_the_asked_blas)


def test_missing_mkl_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPNET_MKL_LIB", str(tmp_path / "libmkl_rt.so.missing"))
    monkeypatch.delenv("DEEPNET_BLAS", raising=False)
    with pytest.raises(MklUnavailable, match="could not load oneMKL from"):
        MklBlas()
    fresh = numpy_backend()                # a separate backend object: the shared one stays untouched
    with pytest.raises(MklUnavailable):
        fresh.set_blas("mkl")
    assert fresh.blas == "numpy" and isinstance(fresh.products, NumpyProducts)
    monkeypatch.setenv("DEEPNET_BLAS", "mkl")          # read, and the library loaded, at creation
    with pytest.raises(MklUnavailable):
        numpy_backend()


def test_blas_choice_is_validated(monkeypatch):
    cls = type(get_ops("numpy"))
    monkeypatch.setenv("DEEPNET_BLAS", "atlas")
    with pytest.raises(ValueError, match="DEEPNET_BLAS must be 'numpy' or 'mkl', got 'atlas'"):
        cls()
    monkeypatch.delenv("DEEPNET_BLAS")
    with pytest.raises(ValueError, match="expected 'numpy' or 'mkl'"):
        cls().set_blas("openblas")
