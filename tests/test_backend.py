"""Backend selection, scoping, lazy CuPy import, transfers and seeded initial weights."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest

import deepnet as dn
from deepnet.backend import BackendError, get_backend, get_ops, set_backend, to_device, to_host, use_backend
from deepnet.backend.cupy_ops import CupyOps, FusedCupyOps
from deepnet.backend.cupy_shaped import CupyShapedOps, FusedCupyShapedOps
from deepnet.backend.numba_ops import NumbaOps
from deepnet.backend.numpy_ops import NumpyOps
from deepnet.backend.ops import Ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_py(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": ROOT, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=60)


def test_default_is_numpy():
    out = run_py("import deepnet; print(deepnet.get_backend().name)", DEEPNET_BACKEND="")
    assert out.stdout.strip() == "numpy", out.stderr


def test_environment_variable_selects_backend():
    out = run_py("import deepnet; print(deepnet.get_backend().name)", DEEPNET_BACKEND="strict")
    assert out.stdout.strip() == "strict", out.stderr


def test_importing_deepnet_never_imports_cupy():
    out = run_py("import sys, deepnet; import deepnet.backend.cupy_ops; "
                 "print('cupy' in sys.modules, 'cupy_backends' in sys.modules)")
    assert out.stdout.strip() == "False False", out.stderr


def test_backend_classes_import_without_their_libraries():
    """The backend modules come with deepnet; numba, CuPy and array-api-strict only when an
    instance is made."""
    out = run_py("import sys, deepnet, deepnet.backend.numba_ops, deepnet.backend.cupy_shaped; "
                 "print(sorted(m for m in ('numba', 'cupy', 'array_api_strict') if m in sys.modules))")
    assert out.stdout.strip() == "[]", out.stderr


def test_numpy_backend_has_compiled_kernels_unless_turned_off():
    pytest.importorskip("numba")
    code = "import deepnet; print(type(deepnet.get_backend()).__name__)"
    assert run_py(code, DEEPNET_BACKEND="").stdout.strip() == "NumbaOps"
    assert run_py(code, DEEPNET_BACKEND="", DEEPNET_NUMBA="0").stdout.strip() == "NumpyOps"


def test_use_backend_is_scoped_and_restored():
    before = get_backend()
    with use_backend("strict") as ops:
        assert get_backend() is ops and ops.name == "strict"
        with use_backend("numpy"):
            assert get_backend().name == "numpy"
        assert get_backend().name == "strict"
    assert get_backend() is before


@pytest.mark.parametrize("env", [None, "numpy", "strict"])
def test_set_backend_does_not_leak_into_other_threads(monkeypatch, env):
    """Another thread sees its own default (DEEPNET_BACKEND, else numpy), never this thread's
    choice, which is always a backend other than that default."""
    if env is None:
        monkeypatch.delenv("DEEPNET_BACKEND", raising=False)
    else:
        monkeypatch.setenv("DEEPNET_BACKEND", env)
    default = env or "numpy"
    chosen = "numpy" if default == "strict" else "strict"
    seen = {}

    def worker():
        seen["thread"] = get_backend().name

    with use_backend(default):
        token_ops = set_backend(chosen)
        assert get_backend() is token_ops and token_ops.name == chosen
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert get_backend() is token_ops                # the other thread did not change ours either
    assert seen["thread"] == default, f"set_backend({chosen!r}) leaked into another thread"


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(BackendError, match=r"unknown backend 'tpu': expected one of numpy, cupy, strict, cupy-shaped"):
        get_ops("tpu")
    with pytest.raises(BackendError, match="unknown backend"):
        dn.Network([dn.Dense(2, 2)], backend="jax")


def _gpu_present() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001  (no CuPy, no driver, no device: all mean "no GPU")
        return False


@pytest.mark.skipif(_gpu_present(), reason="a GPU is present: the cupy backend is available")
def test_missing_cupy_or_gpu_says_what_and_how():
    try:
        import cupy  # noqa: F401
    except ImportError:
        want = r"needs CuPy, which is not installed.*pip install 'deepnet\[cuda12\]'"
    else:
        want = r"CuPy is installed but no (usable CUDA GPU was found \(.+\)|CUDA GPU is present)"
    with pytest.raises(BackendError, match=want):
        get_ops("cupy")
    assert re.search(want, dn.available_backends()["cupy"])         # the reason itself, not just the name


def test_available_backends_reports_reasons():
    report = dn.available_backends()
    assert report["numpy"] == "available"
    assert report["strict"] == "available"
    assert report["cupy"] == "available" or re.search(r"CuPy is installed but no .*GPU|needs CuPy.*pip install",
                                                      report["cupy"])


def test_transfers_round_trip(backend):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    d = to_device(x)
    assert backend.owns(d)
    back = to_host(d)
    assert isinstance(back, np.ndarray) and back.dtype == np.float32
    np.testing.assert_array_equal(back, x)
    assert to_host(to_device(x, dtype="float64")).dtype == np.float64


def test_strict_backend_refuses_numpy_idioms():
    ops = get_ops("strict")
    a = to_device(np.ones((2, 3), np.float32), ops)
    with pytest.raises(RuntimeError, match=r"Can't convert array on the .*device1.* device to a NumPy array"):
        np.asarray(a)                 # no implicit conversion off the fake device
    with pytest.raises(TypeError):
        a * np.float64(2.0)           # NumPy scalars would silently promote


def test_same_seed_same_initial_network_on_every_backend():
    def weights(name):
        with use_backend(name):
            net = dn.Network([dn.Dense(6, 4), dn.ReLU(), dn.Dense(4, 2)], seed=42)
            return net.get_weights()

    a, b = weights("numpy"), weights("strict")
    assert list(a) == list(b) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    c = dn.Network([dn.Dense(6, 4), dn.ReLU(), dn.Dense(4, 2)], seed=43).get_weights()
    assert not np.array_equal(a["0.weight"], c["0.weight"])


def _public_methods(cls):
    return {n: m for n, m in vars(cls).items() if callable(m) and not n.startswith("__")}


@pytest.mark.parametrize("cls", [NumpyOps, NumbaOps, CupyOps, FusedCupyOps, CupyShapedOps, FusedCupyShapedOps],
                         ids=lambda c: c.__name__)
def test_backend_overrides_keep_the_generic_signature(cls):
    """Every fused/compiled/in-place override must be callable exactly like the generic method
    (checked without a GPU or numba: the classes import without CuPy and numba)."""
    for name, method in _public_methods(cls).items():
        generic = getattr(Ops, name, None)
        if generic is None or name.startswith("_"):
            continue
        def params(f):
            return [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]

        assert params(method) == params(generic), name


def test_network_moves_between_backends(rng):
    net = dn.Network([dn.Dense(3, 4), dn.Tanh(), dn.Dense(4, 2)], seed=0, optimizer=dn.Adam(), loss="xent")
    X = rng.normal(size=(8, 3)).astype(np.float32)
    y = np.array([0, 1] * 4)
    net.fit(X, y, epochs=1, batch_size=4)
    ref = net.predict(X)
    net.to("strict")
    assert all(get_ops("strict").owns(p.data) for p in net.parameters().values())
    assert all(get_ops("strict").owns(v) for st in net.optimizer.state.values() for v in st.values())
    np.testing.assert_allclose(net.predict(X), ref, rtol=1e-6)
    net.fit(X, y, epochs=1, batch_size=4)       # keeps training there
    net.to("numpy")
    assert isinstance(net.parameters()["0.weight"].data, np.ndarray)


def test_a_registered_backend_owns_its_arrays_with_a_device_given_as_a_string():
    """register_backend with Ops(xp, device="cpu"): the namespace's own device object is used,
    so the backend owns its arrays, and autograd tensors are taken detached."""
    torch = pytest.importorskip("torch")
    xp = pytest.importorskip("array_api_compat.torch")
    dn.backend.register_backend("torch-cpu-string", lambda: dn.backend.Ops(xp, device="cpu", name="torch-cpu-string"),
                                replace=True)
    ops = get_ops("torch-cpu-string")
    a = to_device(np.ones((2, 3), np.float32), ops)
    assert ops.owns(a)
    net = dn.Network([dn.Dense(3, 2)], seed=0, backend=ops, loss="xent", optimizer="sgd")
    X = torch.ones((4, 3), requires_grad=True)
    net.fit(X, np.array([0, 1, 0, 1]), epochs=1, batch_size=2)
    assert not any(p.data.requires_grad for p in net.parameters().values())
    assert net.predict(np.ones((1, 3), np.float32)).shape == (1, 2)


def test_zeros_like_keeps_shape_dtype_and_layout(backend):
    a = to_device(np.arange(12.0).reshape(3, 4), backend, dtype="float32")
    z = backend.zeros_like(a)
    assert backend.owns(z) and z.shape == (3, 4) and backend.dtype_name(z.dtype) == "float32"
    assert not np.any(to_host(z))
    f = backend.zeros_like(np.asfortranarray(np.ones((3, 4), np.float32))) if backend.host_arrays else None
    assert f is None or f.flags.f_contiguous


def test_training_layout(backend):
    """Same shape and values always; on NumPy the first layer's weight (no input error) is
    column-major from batch 16 on and row-major below, other parameters keep their layout."""
    w = to_device(np.arange(12.0).reshape(3, 4), backend, dtype="float32")
    for batch in (1, 16, 64):
        for input_grad in (False, True):
            laid = backend.training_layout(w, batch, input_grad)
            np.testing.assert_array_equal(to_host(laid), to_host(w))
    if backend.host_arrays:
        assert backend.training_layout(w, 16, False).flags.f_contiguous
        assert backend.training_layout(np.asfortranarray(w), 8, False).flags.c_contiguous
        assert backend.training_layout(w, 64, True) is w
        assert backend.training_layout(w[:1], 64, False).flags.c_contiguous      # one row: as is
    else:
        assert backend.training_layout(w, 64, False) is w


def test_memory_companion(backend):
    """ops.memory: stage/ready give the device array; a CPU backend keeps data resident and has no
    device to describe, a GPU one (cupy, cupy-shaped) names its device."""
    mem = backend.memory
    X = np.arange(6.0, dtype=np.float32).reshape(3, 2)
    assert mem.stream_rows_for(X, 2) is None or not backend.cheap_sync
    staged = mem.ready(mem.stage(X))
    assert backend.owns(staged)
    np.testing.assert_array_equal(to_host(staged), X)
    assert backend.memory_info() == mem.info()
    backend.release_memory()
    if backend.cheap_sync:
        assert mem.info() == {}
        with pytest.raises(NotImplementedError, match="has no GPU"):
            mem.describe()
    else:
        assert "name" in mem.describe()


def test_removed_switches_say_what_replaced_them():
    """ops.use_numba / ops.use_fused were documented switches: setting one now must not
    silently do nothing (it would leave the compiled or fused kernels on)."""
    ops = get_ops("numpy")
    with pytest.raises(AttributeError, match="use_numba was removed: .*NumpyOps"):
        ops.use_numba = False
    with pytest.raises(AttributeError, match="use_fused was removed: .*CupyOps"):
        ops.use_fused = False
    assert not hasattr(ops, "use_numba")


def test_a_registered_backend_whose_package_is_missing_is_reported_not_raised(monkeypatch):
    """A user's backend (torch through array-api-compat, say) on a machine without its package:
    available_backends() reports why, and get_ops() raises a BackendError naming backend and package."""
    from deepnet.backend import core

    def factory():
        import deepnet_test_no_such_package  # noqa: F401

    monkeypatch.setitem(core._FACTORIES, "needs-missing", factory)
    report = dn.available_backends()
    assert report["numpy"] == "available"
    assert re.search(r"backend 'needs-missing' .*needs deepnet_test_no_such_package", report["needs-missing"])
    with pytest.raises(BackendError, match="needs deepnet_test_no_such_package, which could not be imported"):
        get_ops("needs-missing")
