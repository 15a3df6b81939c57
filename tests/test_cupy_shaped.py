"""The CuPy-shaped backend guards the GPU code path in CI: CuPy's real signatures, CuPy's
refusals (host arrays, implicit conversion), counted host syncs, and the fused kernels'
C source evaluated, so none of it needs a GPU."""

from __future__ import annotations

import re

import numpy as np
import pytest

import deepnet as dn
from deepnet.backend import get_ops, to_device, to_host
from deepnet.presets import mlp_layers

pytestmark = pytest.mark.cupy_shaped


@pytest.fixture
def ops():
    return get_ops("cupy-shaped")


def test_calls_cupy_does_not_accept_are_refused_as_on_a_gpu(ops):
    xp = ops.xp
    with pytest.raises(TypeError, match="zeros\\(\\) got an unexpected keyword argument 'device'"):
        xp.zeros((2, 3), dtype=xp.float32, device=None)
    with pytest.raises(TypeError, match="asarray\\(\\) got an unexpected keyword argument 'device'"):
        xp.asarray(np.zeros(2), device="cpu")
    with pytest.raises(TypeError, match="Wrong arguments \\['where'\\] for ufunc exp"):
        xp.exp(to_device(np.zeros(2), ops), where=True)
    with pytest.raises(AttributeError, match="module 'cupy' has no attribute 'no_such_function'"):
        xp.no_such_function
    assert xp.zeros((2, 3), dtype=xp.float32).shape == (2, 3)


def test_host_arrays_and_implicit_conversion_are_refused(ops):
    a = to_device(np.arange(4, dtype=np.float32), ops)
    with pytest.raises(TypeError, match="does not mix device arrays with NumPy arrays"):
        a + np.ones(4, np.float32)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(a)
    with pytest.raises(TypeError, match="Unsupported type"):
        ops.xp.maximum(a, np.zeros(4, np.float32))
    b = a * 2.0 + 1.0                                    # Python scalars are fine
    assert isinstance(b, ops.xp.ndarray) and b.dtype == np.float32
    np.testing.assert_array_equal(to_host(np.exp(a)), np.exp(np.arange(4, dtype=np.float32)))   # NEP 13


def test_every_read_back_is_counted(ops):
    syncs = ops.xp.host_syncs
    a = to_device(np.arange(4, dtype=np.float32), ops)
    syncs.reset()
    s = ops.xp.sum(a)
    assert isinstance(s, ops.xp.ndarray) and s.ndim == 0        # reductions stay on the device
    float(s), bool(s > 0), s.item(), to_host(a), int(ops.xp.argmax(a))
    assert syncs.by_kind == {"float": 1, "bool": 1, "item": 1, "get": 1, "int": 1} and syncs.count == 5


def _train(ops, layers, steps_per_epoch, epochs=1, **fit):
    rng = np.random.default_rng(0)
    n = 8 * steps_per_epoch
    X = rng.normal(size=(n, 6)).astype(np.float32)
    y = rng.integers(0, 3, n)
    net = dn.Network(layers(), seed=0, backend=ops)
    ops.xp.host_syncs.reset()
    net.fit(X, y, epochs=epochs, batch_size=8, **fit)
    return ops.xp.host_syncs.count, ops.xp.host_syncs.uploads


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"])
@pytest.mark.parametrize("loss", ["xent", "sse", "mse"])
def test_no_host_sync_in_a_training_step(ops, optimizer, loss):
    """The same syncs (one read per epoch) whether an epoch has 4 steps or 12, and no upload
    per step: the GPU never waits for Python inside an epoch."""
    make_opt = {"sgd": lambda: dn.SGD(0.1), "momentum": lambda: dn.SGD(0.1, momentum=0.9),
                "nesterov": lambda: dn.SGD(0.1, momentum=0.9, nesterov=True), "adam": lambda: dn.Adam(1e-3),
                "adamw": lambda: dn.AdamW(1e-3, weight_decay=0.01), "rmsprop": lambda: dn.RMSProp(1e-3)}[optimizer]

    def layers():
        return [dn.Dense(6, 16), dn.ReLU(), dn.Dropout(0.2), dn.BatchNorm(16), dn.Dense(16, 16), dn.Tanh(),
                dn.LayerNorm(16), dn.Dense(16, 3)] + ([dn.Sigmoid()] if loss != "xent" else [])

    short = _train(ops, layers, 4, epochs=2, loss=loss, optimizer=make_opt())
    long = _train(ops, layers, 12, epochs=2, loss=loss, optimizer=make_opt())
    assert short == long, f"syncs/uploads grow with the number of steps: {short} vs {long}"
    assert short[0] == 2                        # one combined read of the epoch's totals, per epoch


def test_validation_adds_one_read_per_epoch(ops):
    def layers():
        return mlp_layers("6-16-3", "relu")

    rng = np.random.default_rng(1)
    val = (rng.normal(size=(40, 6)).astype(np.float32), rng.integers(0, 3, 40))
    syncs, _ = _train(ops, layers, 5, epochs=3, loss="xent", optimizer="adam", validation_data=val)
    assert syncs == 3 * 2


# ---------------------------------------------------------------- the kernel evaluator
def test_elementwise_kernel_evaluates_c_source(ops):
    ek = ops.xp.ElementwiseKernel
    k = ek("T x, T a, bool flag", "T y, T z",
           "y = x > T(0) && flag ? a * x : -x / T(2); z = z + y * y; z -= sqrt(fabs(x)) * 1e-1f",
           "test_kernel")
    x = np.array([-2.0, -0.5, 0.0, 1.5, 3.0], np.float32)
    y = to_device(np.zeros(5, np.float32), ops)
    z = to_device(np.ones(5, np.float32), ops)
    k(to_device(x, ops), np.float32(3.0), True, y, z)
    want_y = np.where((x > 0) & True, 3.0 * x, -x / 2).astype(np.float32)
    np.testing.assert_allclose(to_host(y), want_y, rtol=1e-6)
    np.testing.assert_allclose(to_host(z), 1 + want_y ** 2 - np.sqrt(np.abs(x)) * 0.1, rtol=1e-6)
    assert to_host(y).dtype == np.float32
    with pytest.raises(TypeError, match="Wrong number of arguments"):
        k(to_device(x, ops))
    with pytest.raises(TypeError, match="Unsupported type"):
        k(x, np.float32(1), True, y, z)


def test_fused_kernels_follow_the_update_equations(ops, rng):
    """Each fused kernel against its equation written here in float64 NumPy."""
    k = ops._k
    g, w0, m0, v0 = (rng.normal(size=50) for _ in range(4))
    v0 = np.abs(v0)
    dev = lambda a: to_device(a, ops, dtype="float64", copy=True)  # noqa: E731

    w = dev(w0)
    k.sgd(dev(g), 0.1, w)
    np.testing.assert_allclose(to_host(w), w0 - 0.1 * g, rtol=1e-14)
    for nesterov in (False, True):
        w, v = dev(w0), dev(m0)
        k.momentum(dev(g), 0.1, 0.9, nesterov, w, v)
        v1 = 0.9 * m0 + g
        np.testing.assert_allclose(to_host(v), v1, rtol=1e-14)
        np.testing.assert_allclose(to_host(w), w0 - 0.1 * (g + 0.9 * v1 if nesterov else v1), rtol=1e-14)
    w, m, v = dev(w0), dev(m0), dev(v0)
    lr, b1, b2, eps, step, wd = 1e-2, 0.9, 0.999, 1e-8, 3, 0.05
    c2 = np.sqrt(1 - b2 ** step)                      # the optimizer's η_t, ε̂ and d (Adam.step_scalars)
    ops.adam_update_(w, dev(g), m, v, lr * c2 / (1 - b1 ** step), b1, b2, eps * c2, 1 - lr * wd)
    m1, v1 = b1 * m0 + (1 - b1) * g, b2 * v0 + (1 - b2) * g * g
    m_hat, v_hat = m1 / (1 - b1 ** step), v1 / (1 - b2 ** step)
    np.testing.assert_allclose(to_host(w), w0 * (1 - lr * wd) - lr * m_hat / (np.sqrt(v_hat) + eps), rtol=1e-12)
    y, dy = rng.random(50), rng.normal(size=50)
    for name, deriv in (("sigmoid_bwd", y * (1 - y)), ("tanh_bwd", 1 - y * y), ("relu_bwd", (y - 0.5 > 0) * 1.0)):
        out = dev(np.zeros(50))
        yy = y - 0.5 if name == "relu_bwd" else y
        getattr(k, name)(dev(yy), dev(dy), out)
        np.testing.assert_allclose(to_host(out), dy * deriv, rtol=1e-14, err_msg=name)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_loss_is_found_at_the_epoch_end_naming_its_batch(ops):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 6)).astype(np.float32)
    X[21, 2] = np.float32(3e38)                          # batch 3 of 8 overflows
    y = rng.integers(0, 3, 64)
    kw = {"epochs": 1, "batch_size": 8, "shuffle": False, "loss": "xent", "optimizer": dn.SGD(0.1)}
    with pytest.raises(dn.NonFiniteError) as on_numpy:       # checked before each update
        dn.Network(mlp_layers("6-16-3", "relu"), seed=0).fit(X, y, **kw)
    batch = re.search(r"epoch 1, batch (\d+) \(step", str(on_numpy.value))[1]
    net = dn.Network(mlp_layers("6-16-3", "relu"), seed=0, backend=ops)
    with pytest.raises(dn.NonFiniteError, match=rf"epoch 1, batch {batch}: the loss of this batch was NaN or inf "
                                                r"\(found at the epoch's end"):
        net.fit(X, y, **kw)
    with pytest.raises(ValueError, match="check_finite='skip' decides on the host at every step"):
        net.fit(X, y, epochs=1, batch_size=8, loss="xent", optimizer=dn.SGD(0.1), check_finite="skip")


def test_hand_written_stubs_keep_cupys_signatures(ops):
    """The stubs written by hand bind like the real CuPy functions wherever CuPy's are introspectable."""
    import inspect

    cupy = pytest.importorskip("cupy")
    checked = 0
    for name in ("asarray", "array", "asnumpy"):
        try:
            real = inspect.signature(getattr(cupy, name))
        except (TypeError, ValueError):
            continue
        mine = inspect.signature(getattr(ops.xp, name))
        assert [(p.name, p.kind, p.default) for p in mine.parameters.values()] == \
            [(p.name, p.kind, p.default) for p in real.parameters.values()], name
        checked += 1
    assert checked >= 2


def test_kernels_refuse_what_cuda_would(ops):
    ek = ops.xp.ElementwiseKernel
    with pytest.raises(ValueError, match="Invalid kernel name"):
        ek("T x", "T y", "y = x", "bad-name")
    with pytest.raises(ValueError, match="assignment to the input parameter 'x'"):
        ek("T x", "T y", "x = x + T(1); y = x", "writes_input")
    k = ek("T x, T w", "T y", "y = x * w", "mixed")
    with pytest.raises(TypeError, match="Type is mismatched"):
        k(to_device(np.ones(3, np.float32), ops), to_device(np.ones(3, np.float64), ops),
          to_device(np.zeros(3, np.float32), ops))


def test_boolean_mask_indexing_counts_a_sync(ops):
    a = to_device(np.arange(6, dtype=np.float32), ops)
    ops.xp.host_syncs.reset()
    b = a[a > 2.0]
    assert ops.xp.host_syncs.by_kind == {"boolean mask": 1} and b.shape == (3,)
    assert a.max(0).shape == () and a.sum(0, ops.xp.float64).dtype == np.float64
