"""Each optimizer's steps match its update equations written out here, on every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest

import deepnet as dn
from deepnet import to_device, to_host
from deepnet.backend.numba_ops import NumbaOps
from deepnet.backend.numpy_ops import NumpyOps
from deepnet.layers.base import Parameter
from tests.numba_types import compiled_types


def make_param(w, g, ops):
    p = Parameter("0.weight", to_device(w, ops, dtype="float64", copy=True))
    gt, _ = p.grad_target()
    gt[...] = to_device(g, ops, dtype="float64")
    return p


def run_steps(opt, w0, grads, ops):
    p = make_param(w0, grads[0], ops)
    params = {"0.weight": p}
    out = []
    for g in grads:
        gt, _ = p.grad_target()
        gt[...] = to_device(g, ops, dtype="float64")
        opt.step(params, ops)
        p.zero_grad()
        out.append(to_host(p.data).copy())
    return out


def reference(name, w, grads, **kw):
    lr = kw.get("lr")
    w = w.copy()
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    out = []
    for t, g in enumerate(grads, start=1):
        g = g + kw.get("wd", 0.0) * w
        if name == "sgd":
            w = w - lr * g
        elif name == "momentum":
            m = kw["mu"] * m + g
            w = w - lr * (g + kw["mu"] * m if kw.get("nesterov") else m)
        elif name in ("adam", "adamw"):
            b1, b2, eps = 0.9, 0.999, 1e-8
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
            if name == "adamw":
                w = w - lr * kw["decay"] * w
            w = w - lr * mhat / (np.sqrt(vhat) + eps)
        elif name == "rmsprop":
            v = 0.9 * v + 0.1 * g * g
            w = w - lr * g / (np.sqrt(v) + 1e-8)
        out.append(w.copy())
    return out


CASES = {
    "sgd": (lambda: dn.SGD(lr=0.1), dict(lr=0.1)),
    "sgd+l2": (lambda: dn.SGD(lr=0.1, weight_decay=0.01), dict(lr=0.1, wd=0.01)),
    "momentum": (lambda: dn.Momentum(lr=0.05, momentum=0.9), dict(lr=0.05, mu=0.9)),
    "nesterov": (lambda: dn.SGD(lr=0.05, momentum=0.8, nesterov=True), dict(lr=0.05, mu=0.8, nesterov=True)),
    "adam": (lambda: dn.Adam(lr=0.01), dict(lr=0.01)),
    "adamw": (lambda: dn.AdamW(lr=0.01, weight_decay=0.1), dict(lr=0.01, decay=0.1)),
    "rmsprop": (lambda: dn.RMSProp(lr=0.01), dict(lr=0.01)),
}


@pytest.mark.parametrize("shape", [(4, 3), (64, 80), (300, 256)], ids=["small", "serial", "parallel"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_numpy_update_kernels_match_equations(numpy_kernels, rng, case, shape, monkeypatch):
    if shape == (300, 256) and isinstance(numpy_kernels, NumbaOps):
        from deepnet.backend import numba_kernels  # the parallel loops, without a 1M-element test array

        monkeypatch.setattr(numba_kernels, "PARALLEL_MIN_SIZE", 50_000)
    factory, kw = CASES[case]
    name = case.split("+")[0].replace("nesterov", "momentum")
    w0 = rng.normal(size=shape)
    grads = [rng.normal(size=shape) for _ in range(4)]
    got = run_steps(factory(), w0, grads, numpy_kernels)
    for t, (a, b) in enumerate(zip(got, reference(name, w0, grads, **kw), strict=True)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"step {t + 1}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_optimizer_steps_match_equations(backend, rng, case):
    factory, kw = CASES[case]
    name = case.split("+")[0].replace("nesterov", "momentum")
    w0 = rng.normal(size=(4, 3))
    grads = [rng.normal(size=(4, 3)) for _ in range(4)]
    got = run_steps(factory(), w0, grads, backend)
    want = reference(name, w0, grads, **kw)
    for t, (a, b) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"step {t + 1}")


def test_clip_norm_scales_to_the_global_norm(backend, rng):
    g1, g2 = rng.normal(size=(3, 2)) * 10, rng.normal(size=(2,)) * 10
    norm = math.sqrt((g1 ** 2).sum() + (g2 ** 2).sum())
    p1 = make_param(np.zeros((3, 2)), g1, backend)
    p2 = make_param(np.zeros(2), g2, backend)
    dn.SGD(lr=1.0, clip_norm=1.0).step({"a": p1, "b": p2}, backend)
    np.testing.assert_allclose(to_host(p1.data), -g1 / (norm + 1e-6), rtol=1e-9)
    np.testing.assert_allclose(to_host(p2.data), -g2 / (norm + 1e-6), rtol=1e-9)


def test_max_norm_caps_each_units_incoming_weights(backend, rng):
    w = rng.normal(size=(5, 4)) * 3
    p = make_param(w, np.zeros_like(w), backend)
    dn.SGD(lr=0.1, max_norm=1.0).step({"w": p}, backend)
    norms = np.linalg.norm(to_host(p.data), axis=1)
    assert np.all(norms <= 1.0 + 1e-6)
    small = make_param(w * 0.01, np.zeros_like(w), backend)
    dn.SGD(lr=0.1, max_norm=1.0).step({"w": small}, backend)
    np.testing.assert_allclose(to_host(small.data), w * 0.01)


def test_state_dict_round_trip(rng):
    opt = dn.Adam(lr=0.01)
    p = make_param(rng.normal(size=(3, 3)), rng.normal(size=(3, 3)), dn.get_backend())
    opt.step({"0.weight": p}, dn.get_backend())
    sd = opt.state_dict()
    opt2 = dn.Adam(lr=0.5)
    opt2.load_state_dict(sd, dn.get_backend())
    assert opt2.lr == 0.01 and opt2.iterations == 1
    np.testing.assert_array_equal(opt2.state["0.weight"]["m"], opt.state["0.weight"]["m"])


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="learning rate must be positive and finite, got -1"):
        dn.SGD(lr=-1)
    with pytest.raises(ValueError, match="momentum must be in"):
        dn.SGD(momentum=1.5)
    with pytest.raises(ValueError, match="nesterov=True needs momentum"):
        dn.SGD(nesterov=True)
    with pytest.raises(ValueError, match="beta2 must be in"):
        dn.Adam(beta2=1.0)


@pytest.mark.parametrize("shape", [(1, 50), (64, 30), (100, 100)], ids=["batch1", "small", "large"])
def test_numpy_sigmoid_paths_agree(numpy_kernels, rng, shape):
    """The compiled small-array sigmoid (numba) and the pure-NumPy one compute the same function."""
    x = (rng.normal(size=shape) * 4).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    y = numpy_kernels.sigmoid(x)
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-x.astype(np.float64))), rtol=2e-6, atol=1e-7)
    assert y.dtype == np.float32
    d = numpy_kernels.sigmoid_backward_(dy.copy(), y)
    np.testing.assert_allclose(d, dy * y * (1 - y), rtol=1e-6, atol=1e-8)


def test_compiled_kernels_stay_in_float32():
    """A float32 update must run in float32: a Python literal such as ``1 - b1`` in a numba
    loop silently promotes every element to float64 (2.8x slower Adam, measured)."""
    pytest.importorskip("numba")
    from deepnet.backend import numba_kernels as nk

    f = np.float32
    a = np.ones(8, f)
    calls = {
        nk._sgd: (a, a.copy(), f(0.1)),
        nk._momentum: (a, a.copy(), a.copy(), f(0.1), f(0.9), False, f(1e-38)),
        nk._adam: (a, a.copy(), a.copy(), a.copy(), *(f(x) for x in (1e-3, 0.9, 0.999, 0.1, 1e-3, 1e-8, 1.0, 1e-38))),
        nk._sigmoid: (a, a.copy(), f(1.0)),
        nk._sigmoid_backward: (a, a.copy(), f(1.0)),
        nk._relu_backward: (a, a.copy(), f(0.0)),
        nk._relu: (a, a.copy(), f(0.0)),
        nk._add_bias: (a.reshape(2, 4).copy(), np.ones(4, f)),
    }   # (_softmax_xent sums its per-row losses in float64 on purpose; its rows stay float32)
    for fn, args in calls.items():
        types, _ = compiled_types(fn, *args)
        assert not any("float64" in t for t in types), f"{fn.__name__} computes in float64: {sorted(types)}"


def test_compiled_updates_flush_subnormal_state_to_zero(numpy_kernels):
    """Decaying optimizer state must not sink into subnormals (100x slower arithmetic):
    the compiled updates flush it to zero; the pure-NumPy path may keep it (same function
    to within 1e-38)."""
    tiny = np.finfo(np.float32).tiny
    for opt in (dn.SGD(lr=0.1, momentum=0.9), dn.Adam(lr=0.1)):
        p = Parameter("w", np.ones(4096, np.float32))
        p.grad[...] = 1e-3
        opt.step({"w": p}, numpy_kernels)
        for _ in range(900):                 # gradient now exactly zero: the state only decays
            p.grad[...] = 0.0
            opt.step({"w": p}, numpy_kernels)
        counts = {}
        for name, st in opt.state["w"].items():
            assert st.dtype == np.float32
            counts[name] = int(((np.abs(st) < tiny) & (st != 0)).sum())
        if isinstance(numpy_kernels, NumbaOps):
            assert sum(counts.values()) == 0, f"{type(opt).__name__}: subnormal state {counts}"
        else:          # the setup does reach subnormals (without the flush)
            assert max(counts.values()) == 4096, counts


@pytest.mark.parametrize("case", ["sgd", "momentum", "nesterov", "adam", "adamw"])
def test_multi_tensor_update_matches_per_parameter_updates(rng, case, monkeypatch):
    """One compiled call for many parameters (NumPy backend + numba) computes what the
    per-parameter NumPy updates compute: mixed sizes (one large enough for the parallel
    kernel), a float64 parameter among float32 ones, a parameter no backward reached, and
    arrays rebound between steps (the cached lists must follow)."""
    pytest.importorskip("numba")
    from deepnet.backend import numba_kernels

    monkeypatch.setattr(numba_kernels, "PARALLEL_MIN_SIZE", 5000)
    factory, _ = CASES[case]
    shapes = [(3,), (40, 30), (100, 60), (7, 5), (13,)]
    dtypes = [np.float32, np.float32, np.float32, np.float64, np.float32]
    w0 = [rng.normal(size=s).astype(d) for s, d in zip(shapes, dtypes, strict=True)]
    results = []
    for ops in (NumbaOps(), NumpyOps()):            # compiled multi-tensor, and NumPy per parameter
        params = {f"p{i}": Parameter(f"p{i}", w.copy()) for i, w in enumerate(w0)}
        opt = factory()
        for step in range(4):
            for i, p in enumerate(params.values()):
                if i != 4 or step == 2:          # p4 gets a gradient only at step 2
                    p.grad[...] = np.sin(np.arange(p.data.size) * (step + 1.0) + i).reshape(p.shape)
            if step == 2:                          # rebind one parameter: caches must notice
                params["p1"].data = params["p1"].data.copy()
            opt.step(params, ops)
            for p in params.values():
                p.zero_grad()
        results.append([p.data.copy() for p in params.values()])
    for i, (a, b) in enumerate(zip(*results, strict=True)):
        assert a.dtype == b.dtype == dtypes[i]
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6, err_msg=f"parameter {i} ({case})")


@pytest.mark.parametrize("layouts", ["FFFF", "FFCC", "FCFC"])
def test_updates_are_correct_for_any_memory_layout(numpy_kernels, rng, layouts):
    """Column-major weights (the NumPy backend's first layer) with slots of the same or
    another layout: the compiled kernels take only matching layouts, the rest goes the
    NumPy way; the numbers are the same either way."""
    shape = (64, 50)
    base = [rng.normal(size=shape).astype(np.float32) for _ in range(4)]
    base[3] = np.abs(base[3])                  # v, a second moment, is never negative
    ref = [a.copy() for a in base]
    lr, b1, b2, eps, t = 0.01, 0.9, 0.999, 1e-8, 3
    c2 = math.sqrt(1 - b2 ** t)
    scalars = (lr * c2 / (1 - b1 ** t), b1, b2, eps * c2, 1.0)     # η_t, β₁, β₂, ε̂, d (no decay)
    numpy_kernels.adam_update_(*ref, *scalars)
    arrs = [np.asfortranarray(a) if L == "F" else a.copy() for a, L in zip(base, layouts, strict=True)]
    numpy_kernels.adam_update_(*arrs, *scalars)
    for name, a, b in zip("wgmv", arrs, ref, strict=True):
        if name != "g":                        # g is scratch space
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)   # float32 rounding
