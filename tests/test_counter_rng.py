"""The counter-based generator (deepnet/backend/counter_rng.py): Philox4x32-10 against published
known answers, the documented counter layout, identical bits on every backend, a device-side
counter (no host round trip per draw), state round trips, uniformity, the fused kernel's
C source compiled by the host C compiler (its maths, without a GPU), and the numba-compiled
fill the NumPy backend draws through (``python tests/test_counter_rng.py`` times the three)."""

from __future__ import annotations

import ctypes
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from deepnet.backend import get_ops
from tests.numba_types import compiled_types
from deepnet.backend.counter_rng import (
    PHILOX_PREAMBLE,
    UNIFORM_OPERATIONS,
    CounterRNG,
    build_philox_kernel,
    philox4x32,
)

RNG_BACKENDS = ["numpy", "strict", pytest.param("cupy-shaped", marks=pytest.mark.cupy_shaped)]

# Philox4x32-10 known answers (counter[4], key[2] -> output[4], all hex uint32): the three
# "philox4x32 10" lines of Random123's tests/kat_vectors, as reproduced by D. E. Shaw Research
# in repository DEShawResearch/fs123, file core123/ut/ut_philox.cpp ("The KAT vectors are
# cut-and-pasted from the kat_vectors file in the original Random123 distribution"),
# test_kat_philox4x32, the three philox<4, uint32_t, 10> lines.
KAT_PHILOX4X32_10 = [
    ("00000000 00000000 00000000 00000000", "00000000 00000000", "6627e8d5 e169c58d bc57ac4c 9b00dbd8"),
    ("ffffffff ffffffff ffffffff ffffffff", "ffffffff ffffffff", "408f276d 41c83b0e a20bc7c6 6d5451fd"),
    ("243f6a88 85a308d3 13198a2e 03707344", "a4093822 299f31d0", "d16cfe09 94fdcceb 5001e420 24126ea1"),
]


def _words(text: str) -> list[int]:
    return [int(w, 16) for w in text.split()]


def _ops(name: str, monkeypatch: pytest.MonkeyPatch):
    ops = get_ops(name)
    if name == "cupy-shaped":
        # the CuPy-shaped namespace lists no unsigned dtypes beyond uint8 (reported): lend NumPy's,
        # which are CuPy's own (cupy.uint32 is numpy.uint32)
        for t in ("uint32", "uint64"):
            if getattr(ops.xp, t) is not getattr(np, t):
                monkeypatch.setattr(ops.xp, t, getattr(np, t))
    return ops


@pytest.fixture(params=RNG_BACKENDS)
def ops(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    return _ops(request.param, monkeypatch)


# ---------------------------------------------------------------------- an independent reference
def philox_scalar(ctr: list[int], key: list[int], rounds: int = 10) -> list[int]:
    """Philox4x32 on Python ints, straight from Salmon et al. 2011 (bump the key before every
    round but the first)."""
    m0, m1, w0, w1, mask = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85, 0xFFFFFFFF
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + w0) & mask, (k1 + w1) & mask
        p0, p1 = m0 * c0, m1 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & mask, p1 & mask, ((p0 >> 32) ^ c3 ^ k1) & mask, p0 & mask
    return [c0, c1, c2, c3]


def expected_uniforms(n: int, kind: str, key: tuple[int, int], draw: int) -> np.ndarray:
    """The documented layout, element by element: element e reads block e//4 (float32) or e//2
    (float64) with counter (block lo, block hi, draw lo, draw hi)."""
    out = []
    per = 4 if kind == "float32" else 2
    for e in range(n):
        b, j = divmod(e, per)
        x = philox_scalar([b & 0xFFFFFFFF, b >> 32, draw & 0xFFFFFFFF, draw >> 32], list(key))
        if kind == "float32":
            out.append((x[j] >> 8) * 2.0 ** -24)
        else:
            out.append((((x[2 * j] << 32) | x[2 * j + 1]) >> 11) * 2.0 ** -53)
    return np.array(out, dtype=kind)


def test_the_scalar_reference_meets_the_known_answers():
    for ctr, key, want in KAT_PHILOX4X32_10:
        assert philox_scalar(_words(ctr), _words(key)) == _words(want)


# ---------------------------------------------------------------------- philox4x32 on each backend
@pytest.mark.parametrize("keys_as", ["ints", "arrays"])
def test_philox4x32_known_answers(ops, keys_as: str):
    xp = ops.xp
    for ctr, key, want in KAT_PHILOX4X32_10:
        c = tuple(xp.asarray([w], dtype=xp.uint32, **ops.on_device) for w in _words(ctr))
        k = _words(key) if keys_as == "ints" else [xp.asarray([w], dtype=xp.uint32, **ops.on_device)
                                                    for w in _words(key)]
        got = [int(ops.to_host(w)[0]) for w in philox4x32(xp, c, tuple(k))]
        assert got == _words(want), f"philox4x32-10 {ctr} / {key}"


def test_philox4x32_vectorised_matches_the_scalar_reference(ops):
    xp = ops.xp
    host = np.random.default_rng(7).integers(0, 2**32, size=(4, 257), dtype=np.uint64).astype(np.uint32)
    key = (0x12345678, 0x9ABCDEF0)
    got = philox4x32(xp, tuple(ops.from_host(row) for row in host), key)
    got = np.stack([ops.to_host(w) for w in got])
    want = np.array([philox_scalar([int(v) for v in host[:, i]], list(key)) for i in range(host.shape[1])],
                    dtype=np.uint32).T
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------- the generator
@pytest.mark.parametrize("kind", ["float32", "float64"])
def test_draws_follow_the_documented_layout_on_every_backend(ops, kind: str):
    rng = CounterRNG(ops, seed=(5 << 32) | 1234)
    dt = ops.dtype(kind)
    first = ops.to_host(rng.uniform((3, 7), dt))       # 21 elements: a partial last block
    second = ops.to_host(rng.uniform((5,), dt))
    assert first.dtype == np.dtype(kind) and first.shape == (3, 7)
    np.testing.assert_array_equal(first.reshape(-1), expected_uniforms(21, kind, (1234, 5), draw=0))
    np.testing.assert_array_equal(second, expected_uniforms(5, kind, (1234, 5), draw=1))


def test_identical_bits_across_backends(monkeypatch: pytest.MonkeyPatch):
    names = ["numpy", "strict"]
    try:
        _ops("cupy-shaped", monkeypatch)
        names.append("cupy-shaped")
    except Exception:          # no cupy package: compared on the other two
        pass
    draws = {}
    for name in names:
        ops = _ops(name, monkeypatch)
        rng = CounterRNG(ops, seed=99)
        draws[name] = [ops.to_host(rng.uniform(shape, ops.dtype(kind)))
                       for shape, kind in (((64, 33), "float32"), ((1,), "float32"), ((10, 3), "float64"),
                                           ((2, 2, 5), "float32"))]
    ref = draws["numpy"]
    for name, got in draws.items():
        for a, b in zip(ref, got, strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_consecutive_draws_differ_and_the_counter_advances(ops):
    rng = CounterRNG(ops, seed=3)
    a = ops.to_host(rng.uniform((1000,), ops.float32))
    b = ops.to_host(rng.uniform((1000,), ops.float32))
    assert not np.array_equal(a, b)
    assert np.mean(a == b) < 0.01
    assert rng.get_state() == {"philox_key": [3, 0], "counter": 2}


def test_different_seeds_give_different_streams(ops):
    a = ops.to_host(CounterRNG(ops, seed=1).uniform((256,), ops.float32))
    b = ops.to_host(CounterRNG(ops, seed=2).uniform((256,), ops.float32))
    assert np.mean(a == b) < 0.01


@pytest.mark.cupy_shaped
def test_the_counter_advances_on_the_device_without_host_syncs(monkeypatch: pytest.MonkeyPatch):
    ops = _ops("cupy-shaped", monkeypatch)
    syncs = ops.xp.host_syncs
    rng = CounterRNG(ops, seed=11)
    counter = rng.counter
    out = ops.empty((4, 9), ops.float32)
    syncs.reset()
    for _ in range(3):
        rng.uniform((128, 17), ops.float32)
        rng.uniform((5,), ops.float64)
        rng.uniform_into(out)
    assert syncs.count == 0, syncs
    assert syncs.uploads == 0, syncs
    assert rng.counter is counter
    assert rng.get_state()["counter"] == 9       # read here, once


def test_state_round_trip_replays_the_draws_in_the_same_buffer(ops):
    rng = CounterRNG(ops, seed=2024)
    counter = rng.counter
    rng.uniform((10,), ops.float32)
    state = rng.get_state()
    assert state == {"philox_key": [2024, 0], "counter": 1}
    assert all(type(v) is int for v in (*state["philox_key"], state["counter"]))
    a = ops.to_host(rng.uniform((6, 5), ops.float32))
    b = ops.to_host(rng.uniform((4,), ops.float64))
    rng.set_state(state)
    assert rng.counter is counter
    np.testing.assert_array_equal(ops.to_host(rng.uniform((6, 5), ops.float32)), a)
    np.testing.assert_array_equal(ops.to_host(rng.uniform((4,), ops.float64)), b)
    other = CounterRNG(ops, seed=0)               # another generator takes the state, key included
    other.set_state(state)
    np.testing.assert_array_equal(ops.to_host(other.uniform((6, 5), ops.float32)), a)


def test_state_keeps_the_counter_address_on_numpy():
    ops = get_ops("numpy")
    rng = CounterRNG(ops, seed=5)
    before = rng.counter.__array_interface__["data"][0]
    rng.uniform((3,), ops.float32)
    rng.set_state({"philox_key": [5, 0], "counter": 2**40 + 3})
    rng.uniform((3,), ops.float32)
    assert rng.counter.__array_interface__["data"][0] == before
    assert rng.get_state()["counter"] == 2**40 + 4


def test_uniform_into_fills_the_same_values(ops):
    a, b = CounterRNG(ops, seed=8), CounterRNG(ops, seed=8)
    out = ops.empty((7, 3), ops.float64)
    assert a.uniform_into(out) is out
    np.testing.assert_array_equal(ops.to_host(out), ops.to_host(b.uniform((7, 3), ops.float64)))
    assert a.get_state() == b.get_state()


def test_float32_uniformity_over_a_million_draws(ops):
    u = ops.to_host(CounterRNG(ops, seed=123).uniform((1000, 1000), ops.float32))
    assert u.dtype == np.float32
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(float(u.mean(dtype=np.float64)) - 0.5) < 0.002
    counts = np.histogram(u, bins=64, range=(0.0, 1.0))[0]
    expected = u.size / 64
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 63 + 6 * np.sqrt(2 * 63), chi2          # 63 degrees of freedom, loose bound
    assert len(np.unique(u[:4096])) > 4000                # 24-bit values: very few repeats


def test_float64_draws(ops):
    u = ops.to_host(CounterRNG(ops, seed=321).uniform((20000,), ops.float64))
    assert u.dtype == np.float64
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01
    assert np.any((u * 2.0**24) % 1.0 != 0.0)             # more than 24 bits of resolution


def test_empty_draw_still_advances(ops):
    rng = CounterRNG(ops, seed=1)
    assert rng.uniform((0, 4), ops.float32).shape == (0, 4)
    assert rng.get_state()["counter"] == 1


def test_one_line_errors(ops):
    rng = CounterRNG(ops, seed=1)
    with pytest.raises(TypeError, match="float32 or float64"):
        rng.uniform((3,), ops.int64)
    for bad in ({}, {"philox_key": [1], "counter": 0}, {"philox_key": [1, 2], "counter": "x"},
                {"philox_key": [1, 2], "counter": -1}, {"philox_key": [2**32, 0], "counter": 0}):
        with pytest.raises(ValueError, match="CounterRNG.set_state") as err:
            rng.set_state(bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="seed"):
        CounterRNG(ops, seed=-1)
    with pytest.raises(TypeError, match="seed"):
        CounterRNG(ops, seed=1.5)


# ---------------------------------------------------------------------- the fused kernel's C source
def _host_c_kernels(tmp: Path) -> ctypes.CDLL:
    """The kernels' preamble and bodies inside plain C loops (``__umulhi`` as the product's high
    half), compiled by the host C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler on this machine")
    parts = ["#include <stddef.h>", "#define __device__", "#define __forceinline__ static inline",
             "static inline unsigned int __umulhi(unsigned int a, unsigned int b) "
             "{ return (unsigned int)(((unsigned long long)a * b) >> 32); }", PHILOX_PREAMBLE]
    for kind, ctype in (("float32", "float"), ("float64", "double")):
        parts.append(f"void uniform_{kind}(const unsigned long long *ctr, unsigned int k0, unsigned int k1, "
                     f"unsigned long long n, {ctype} *out, ptrdiff_t size) {{\n"
                     f"for (ptrdiff_t i = 0; i < size; ++i) {{\n{UNIFORM_OPERATIONS[kind]}\n}}\n}}")
    src, lib = tmp / "philox_kernels.c", tmp / "philox_kernels.so"
    src.write_text("\n".join(parts), encoding="utf-8")
    done = subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-o", str(lib), str(src)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return ctypes.CDLL(str(lib))


@pytest.mark.parametrize("kind", ["float32", "float64"])
def test_the_kernel_source_computes_the_same_bits(tmp_path: Path, kind: str):
    lib = _host_c_kernels(tmp_path)
    ops = get_ops("numpy")
    for seed, draw, n in ((77, 0, 1), (77, 5, 1023), ((0xDEADBEEF << 32) | 0x01234567, 2**40 + 9, 4097)):
        rng = CounterRNG(ops, seed=seed)
        rng.set_state({"philox_key": list(rng.key), "counter": draw})
        want = rng.uniform((n,), np.dtype(kind))
        ctr = np.array([draw], dtype=np.uint64)
        out = np.full(n, -1.0, dtype=kind)
        per = 4 if kind == "float32" else 2
        fn = getattr(lib, f"uniform_{kind}")
        fn(ctr.ctypes.data_as(ctypes.c_void_p), ctypes.c_uint(rng.key[0]), ctypes.c_uint(rng.key[1]),
           ctypes.c_ulonglong(n), out.ctypes.data_as(ctypes.c_void_p), ctypes.c_ssize_t(-(-n // per)))
        np.testing.assert_array_equal(out, want)


def test_the_cuda_launch_wrapper_draws_through_the_kernel_source(tmp_path: Path):
    """CudaPhilox (what build_philox_kernel returns) launches the kernel of ``out``'s dtype with
    one thread per block, then advances the counter: here with the kernels' C source compiled
    for the host standing in for CuPy's ElementwiseKernel."""
    from deepnet.backend.counter_rng import CudaPhilox
    from deepnet.backend.numpy_ops import NumpyOps

    lib = _host_c_kernels(tmp_path)
    launches = []

    def host_kernel(kind: str):
        fn = getattr(lib, f"uniform_{kind}")

        def launch(ctr, k0, k1, n, out, size):
            assert (type(k0), type(k1), type(n)) == (np.uint32, np.uint32, np.uint64)
            launches.append((kind, int(n), size))
            fn(ctr.ctypes.data_as(ctypes.c_void_p), ctypes.c_uint(int(k0)), ctypes.c_uint(int(k1)),
               ctypes.c_ulonglong(int(n)), out.ctypes.data_as(ctypes.c_void_p), ctypes.c_ssize_t(size))
        return launch

    ops = NumpyOps()
    seed = (0x01020304 << 32) | 0xA0B0C0D0
    fused = CounterRNG(ops, seed, kernel=CudaPhilox(float32=host_kernel("float32"), float64=host_kernel("float64")))
    plain = CounterRNG(ops, seed)
    for shape, kind in (((129, 7), "float32"), ((1,), "float32"), ((33, 3), "float64"), ((0, 5), "float64")):
        np.testing.assert_array_equal(fused.uniform(shape, np.dtype(kind)), plain.uniform(shape, np.dtype(kind)))
    assert launches == [("float32", 903, 226), ("float32", 1, 1), ("float64", 99, 50)]   # none for an empty draw
    assert fused.get_state() == plain.get_state() == {"philox_key": [0xA0B0C0D0, 0x01020304], "counter": 4}


@pytest.mark.cupy
def test_the_fused_kernel_matches_the_array_api_version_on_the_gpu():
    ops = get_ops("cupy")
    kernel = build_philox_kernel(ops.xp)
    fused, plain = CounterRNG(ops, seed=2**33 + 17, kernel=kernel), CounterRNG(ops, seed=2**33 + 17)
    for shape, kind in (((129, 7), "float32"), ((1,), "float32"), ((33, 3), "float64"), ((1000, 1000), "float32")):
        a = ops.to_host(fused.uniform(shape, ops.dtype(kind)))
        b = ops.to_host(plain.uniform(shape, ops.dtype(kind)))
        np.testing.assert_array_equal(a, b)
    out = ops.xp.empty((64, 8), dtype=ops.float32)[:, ::2]           # strided: flat C-order index
    fused.uniform_into(out)
    np.testing.assert_array_equal(ops.to_host(out), ops.to_host(plain.uniform((64, 4), ops.float32)))
    assert fused.get_state() == plain.get_state()


def test_a_checkpoint_from_before_counter_rng_resumes_as_it_did():
    """GPU checkpoints written with cuRAND recorded only {"cupy_seed": s}: resuming reseeds from s."""
    from deepnet.backend.numpy_ops import NumpyOps

    ops = NumpyOps()
    a, b = CounterRNG(ops, 5), CounterRNG(ops, 99)
    a.uniform((8,), ops.float32)
    a.set_state({"cupy_seed": 99})
    np.testing.assert_array_equal(a.uniform((8,), ops.float32), b.uniform((8,), ops.float32))
    with pytest.raises(ValueError, match="CounterRNG.set_state: expected"):
        a.set_state({"bit_generator": "PCG64", "state": {}})


# ---------------------------------------------------------------------- the compiled fill (numba)
@pytest.fixture
def nk():
    """deepnet.backend.numba_kernels (skipped without numba)."""
    pytest.importorskip("numba")
    from deepnet.backend import numba_kernels

    return numba_kernels


#: (seed, draw, n): n around multiples of 4 and 2 (partial last blocks), draws above 2³² and the
#: last one before the counter wraps, seeds whose two key words are both nonzero
FILL_CASES = [(77, 0, 1), (77, 5, 2), (77, 6, 3), (77, 7, 5), (77, 8, 6), (77, 9, 7), (77, 10, 1023),
              ((0xDEADBEEF << 32) | 0x01234567, 2**40 + 9, 4097), ((0xFFFFFFFF << 32) | 0xFFFFFFFE, 2**32, 9),
              ((1 << 32) | 1, 2**64 - 1, 10), ((12 << 32) | 34, 2**32 - 1, 0), (5, 3, 130)]


@pytest.mark.parametrize("kind", ["float32", "float64"])
def test_philox_fill_gives_the_array_api_bits(nk, kind: str):
    from deepnet.backend.numpy_ops import NumpyOps

    ops = NumpyOps()
    for seed, draw, n in FILL_CASES:
        ref = CounterRNG(ops, seed)
        ref.set_state({"philox_key": list(ref.key), "counter": draw})
        want = ref.uniform((n,), np.dtype(kind))
        out = np.full(n, -1.0, dtype=kind)
        counter = np.array([draw], dtype=np.uint64)
        nk.philox_fill(out, counter, *ref.key_words())
        where = f"seed {seed:#x}, draw {draw}, n {n}"
        np.testing.assert_array_equal(out, want, err_msg=where)
        if n <= 130:                                   # and the independent scalar reference
            np.testing.assert_array_equal(out, expected_uniforms(n, kind, ref.key, draw), err_msg=where)
        assert int(counter[0]) == ref.get_state()["counter"] == (draw + 1) % 2**64, where


def test_philox_fill_runs_inside_compiled_code(nk):
    """How a compiled training step draws its masks: ``philox_fill(mask, counter, k0, k1)`` from
    inside an njit function, with the key words as uint32."""
    import numba

    from deepnet.backend.numpy_ops import NumpyOps

    fill = nk.philox_fill

    @numba.njit
    def two_masks(a, b, counter, k0, k1):
        fill(a, counter, k0, k1)
        fill(b, counter, k0, k1)
        return counter[0]

    seed = (0x0BADCAFE << 32) | 0x12345678
    rng = CounterRNG(NumpyOps(), seed)
    a, b = np.empty(37, np.float32), np.empty(11, np.float64)
    counter = np.zeros(1, np.uint64)
    assert two_masks(a, b, counter, *rng.key_words()) == 2
    np.testing.assert_array_equal(a, rng.uniform((37,), np.float32))
    np.testing.assert_array_equal(b, rng.uniform((11,), np.float64))


def test_philox_fill_computes_in_unsigned_integers_and_float32(nk):
    """The float32 fill holds no float64 anywhere, and the Philox rounds stay uint64: numba types
    a uint64 mixed with an int64 (e.g. a literal) as float64."""
    f32, u64 = np.float32, np.uint64
    a, counter = np.zeros(9, f32), np.zeros(1, u64)
    calls = {
        nk._philox_fill: (a, counter, np.uint32(5), np.uint32(7)),
        nk._philox_f32: (a, u64(1), u64(2), u64(5), u64(7)),
        nk._philox_block.py_func: (u64(3), u64(1), u64(2), u64(5), u64(7)),
    }
    for fn, args in calls.items():
        types, signature = compiled_types(fn, *args)
        assert not any("float64" in t for t in types), f"{fn.__name__} computes in float64: {sorted(types)}"
        if fn is nk._philox_block.py_func:
            assert str(signature.return_type) == "UniTuple(uint64 x 4)"
            assert types <= {"uint64", "int64", "UniTuple(uint64 x 4)", "none", "bool", "pair<int64, bool>",
                             "range_iter_int64", "range_state_int64", "Function(<class 'range'>)",
                             "Literal[int](10)"}, sorted(types)          # int64: the round counter only


# ---------------------------------------------------------------------- the NumPy backend with numba
@pytest.fixture
def numba_ops(nk):
    from deepnet.backend.numba_ops import NumbaOps

    return NumbaOps()


def test_numba_backend_draws_philox_through_the_compiled_fill(numba_ops):
    from deepnet.backend.numpy_ops import NumpyOps

    seed = (3 << 32) | 99
    rng = numba_ops.device_rng(seed)
    assert isinstance(rng, CounterRNG) and rng.kernel is not None
    plain = CounterRNG(NumpyOps(), seed)                   # the Array-API version: the CuPy backends' bits
    for shape, kind in (((129, 7), "float32"), ((1,), "float32"), ((33, 3), "float64"), ((0, 4), "float32"),
                        ((2, 3, 5), "float32")):
        got = rng.uniform(shape, np.dtype(kind))
        assert got.shape == shape and got.dtype == np.dtype(kind)
        np.testing.assert_array_equal(got, plain.uniform(shape, np.dtype(kind)))
    strided = np.full((64, 8), -1.0, np.float32)[:, ::2]   # not contiguous: filled in flat C order
    assert rng.uniform_into(strided) is strided
    np.testing.assert_array_equal(strided, plain.uniform((64, 4), np.float32))
    out = np.empty((5, 6), np.float64)
    rng.uniform_into(out)
    np.testing.assert_array_equal(out, plain.uniform((5, 6), np.float64))
    assert rng.get_state() == plain.get_state() == {"philox_key": [99, 3], "counter": 7}


def _dropout_net(backend, seed: int = 3):
    import deepnet as dn

    return dn.Network([dn.Dropout(0.4)], seed=seed, backend=backend, input_shape=(50,))


def test_numba_backend_dropout_masks_follow_the_documented_layout(numba_ops):
    """Plain CPU dropout draws Philox: its mask is fixed by the run's seed and the counter layout."""
    x = np.ones((6, 50), np.float32)
    net = _dropout_net(numba_ops)
    first, second = net.forward(x, training=True), net.forward(x, training=True)
    state = net.device_rng_state()
    assert state["counter"] == 2
    key = tuple(state["philox_key"])
    for draw, y in enumerate((first, second)):
        u = expected_uniforms(x.size, "float32", key, draw).reshape(x.shape)
        np.testing.assert_array_equal(y, (u >= 0.4).astype(np.float32) * np.float32(1 / 0.6))
    again = _dropout_net(numba_ops)                        # the same seed: the same masks
    np.testing.assert_array_equal(again.forward(x, training=True), first)
    other = _dropout_net(numba_ops, seed=4)
    assert not np.array_equal(other.forward(x, training=True), first)


@pytest.mark.cupy_shaped
def test_cpu_dropout_draws_the_cupy_backends_masks(numba_ops, monkeypatch: pytest.MonkeyPatch):
    """The same seed gives the same dropout masks on the NumPy backend (compiled Philox) as on
    the CuPy code path (here CuPy's signatures over NumPy; on a GPU the fused kernel, pinned to
    the same bits by test_the_fused_kernel_matches_the_array_api_version_on_the_gpu)."""
    cupy_like = _ops("cupy-shaped", monkeypatch)
    x = np.random.default_rng(0).normal(size=(8, 50)).astype(np.float32)
    cpu, gpu = _dropout_net(numba_ops), _dropout_net(cupy_like)
    for _ in range(3):
        a = cpu.forward(x, training=True)
        b = cupy_like.to_host(gpu.forward(cupy_like.from_host(x), training=True))
        np.testing.assert_array_equal(a, b)
    assert cpu.device_rng_state() == gpu.device_rng_state()


# ---------------------------------------------------------------------- timing (not a test)
def _bench(rounds: int = 40) -> None:                     # pragma: no cover
    """One 256x2048 float32 mask draw, ms, best of ``rounds`` interleaved: NumPy's generator (the
    NumPy backend without numba), ``philox_fill`` (NumbaOps), the Array-API Philox."""
    import time

    from deepnet.backend import numba_kernels
    from deepnet.backend.numba_ops import NumbaOps
    from deepnet.backend.numpy_ops import NumpyOps

    shape, f32 = (256, 2048), np.float32
    numpy_gen = NumpyOps().device_rng(1)
    compiled = NumbaOps().device_rng(1)
    array_api = CounterRNG(NumpyOps(), 1)
    flat, counter, key = np.empty(math.prod(shape), f32), np.zeros(1, np.uint64), compiled.key_words()
    cases = {"NumPy generator (uniform)": lambda: numpy_gen.uniform(shape, f32),
             "philox_fill into a buffer": lambda: numba_kernels.philox_fill(flat, counter, *key),
             "NumbaOps CounterRNG (uniform)": lambda: compiled.uniform(shape, f32),
             "Array-API philox4x32 (uniform)": lambda: array_api.uniform(shape, f32)}
    for f in cases.values():                               # compile, warm the caches
        f()
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for name, f in cases.items():
            t = time.perf_counter()
            f()
            best[name] = min(best[name], time.perf_counter() - t)
    print(f"{shape[0]}x{shape[1]} float32 uniforms, ms, best of {rounds} interleaved:")
    for name, t in best.items():
        print(f"  {name:32s} {t * 1e3:7.3f}")


if __name__ == "__main__":                                # pragma: no cover
    _bench()
