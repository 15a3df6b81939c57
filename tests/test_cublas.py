"""deepnet's own cuBLAS handle (deepnet/backend/cublas.py), checked without a GPU: the CuPy-shaped
backend's arrays expose their buffers' addresses, and FakeCublasLib computes cuBLAS's
column-major products from those addresses, so a wrong transpose, size or leading dimension
in the row-major mapping gives a wrong product here.  Also: the CuPy-shaped streams refuse
what CUDA refuses while capturing, and products made during a capture go through cuBLAS."""

from __future__ import annotations

import ctypes.util
import itertools

import numpy as np
import pytest

from deepnet.backend import get_ops
from deepnet.backend.cublas import CUBLAS_OP_N, WORKSPACE_BYTES, Cublas, layout, load_cublas
from deepnet.backend.cublas_shaped import FakeCublasLib
from deepnet.backend.cupy_products import CupyProducts
from deepnet.errors import BackendError

pytestmark = pytest.mark.cupy_shaped

SIZES = [(5, 3, 7), (1, 4, 3), (6, 1, 5), (7, 9, 1), (1, 1, 1), (3, 11, 2)]   # (m, k, n): odd, batch 1, k = 1


@pytest.fixture
def ops():
    return get_ops("cupy-shaped")


@pytest.fixture
def cublas(ops):
    return Cublas(ops.xp, lib=FakeCublasLib())


def _dev(ops, host, col_major):
    """A device copy of ``host``: row-major, or column-major (an F-ordered array, as ``w.T`` of a
    row-major one is)."""
    return ops.xp.asarray(np.asfortranarray(host) if col_major else np.ascontiguousarray(host))


def _to_bf16(x):
    """float32 -> nearest bfloat16 (ties to even), back as float32: through PyTorch when present
    (an independent rounding), else NumPy bit arithmetic."""
    x = np.asarray(x, np.float32)
    try:
        import torch
        return torch.from_numpy(x.copy()).to(torch.bfloat16).to(torch.float32).numpy()
    except ImportError:
        u = x.view(np.uint32).astype(np.uint64)
        return (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)


def _to_tf32(x):
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return (((u + 0xFFF + ((u >> 13) & 1)) >> 13) << 13).astype(np.uint32).view(np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n", SIZES)
def test_every_layout_of_a_b_and_out_gives_the_product(ops, cublas, m, k, n, dtype):
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a_h, b_h = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    want = a_h.astype(np.float64) @ b_h.astype(np.float64)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for a_col, b_col, out_kind, acc in itertools.product((False, True), (False, True), (None, "C", "F"),
                                                         (False, True)):
        if out_kind is None and acc:
            continue
        a, b = _dev(ops, a_h, a_col), _dev(ops, b_h, b_col)
        out = None if out_kind is None else _dev(ops, c0, out_kind == "F")
        got = cublas.gemm(a, b, out, acc)
        if out is not None:
            assert got is out
            assert got.flags.f_contiguous if out_kind == "F" else got.flags.c_contiguous
        else:
            assert got.flags.c_contiguous and got.dtype == dtype
        ref = want + c0 if acc else want
        np.testing.assert_allclose(got.get(), ref, **tol, err_msg=f"a_col={a_col} b_col={b_col} out={out_kind} "
                                                                    f"accumulate={acc}")


def test_views_are_read_in_place_and_only_unreadable_ones_copied(ops, cublas):
    rng = np.random.default_rng(1)
    big = _dev(ops, rng.standard_normal((6, 10)).astype(np.float32), False)
    b = _dev(ops, rng.standard_normal((4, 3)).astype(np.float32), False)
    a = big[:, 2:6]                                    # a slice of columns: row-major with ld 10
    assert layout(a) == (False, 10) and layout(a.T) == (True, 10) and layout(big[:, ::2]) is None
    lib = cublas.lib
    got = cublas.gemm(a, b)
    np.testing.assert_allclose(got.get(), a.get().astype(np.float64) @ b.get(), rtol=1e-5)
    assert lib.calls[-1][1]["ldb"] == 10 or lib.calls[-1][1]["lda"] == 10     # read in place, with its ld
    strided = big[:, ::3][:, :3]                        # stride 3 along rows: copied first
    got = cublas.gemm(b, strided.T)
    np.testing.assert_allclose(got.get(), b.get().astype(np.float64) @ strided.get().T, rtol=1e-5)
    w = _dev(ops, rng.standard_normal((3, 4)).astype(np.float32), False)
    out = ops.xp.zeros((6, 12), ops.xp.float32)[:, ::4]       # out cuBLAS cannot write: computed aside
    cublas.gemm(a, w.T, out, False)
    np.testing.assert_allclose(out.get(), a.get().astype(np.float64) @ w.get().T, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("m,k,n", SIZES)
def test_bf16_equals_the_product_of_rounded_operands(ops, cublas, m, k, n):
    rng = np.random.default_rng(7)
    a_h = rng.standard_normal((m, k)).astype(np.float32)
    b_h = rng.standard_normal((k, n)).astype(np.float32)
    want = _to_bf16(a_h).astype(np.float64) @ _to_bf16(b_h).astype(np.float64)
    scale = np.abs(_to_bf16(a_h)).astype(np.float64) @ np.abs(_to_bf16(b_h)).astype(np.float64)
    for a_col, b_col, out_col in itertools.product((False, True), repeat=3):
        out = _dev(ops, np.zeros((m, n), np.float32), out_col)
        got = cublas.gemm(_dev(ops, a_h, a_col), _dev(ops, b_h, b_col), out, False, precision="bf16").get()
        assert np.all(np.abs(got - want) <= 1e-6 * scale), (a_col, b_col, out_col)
    assert cublas.lib.calls[-1][0] == "cublasGemmEx"
    if min(m, k, n) > 1:             # really reduced: differs from the float32 product
        assert not np.allclose(cublas.gemm(_dev(ops, a_h, False), _dev(ops, b_h, False)).get(), got, rtol=1e-6)


def test_bf16_rounding_handles_ties_specials_and_overflow(ops, cublas):
    specials = np.array([0.0, -0.0, 1.0, 1.00390625, 1.01171875, 1.0 + 2**-9, 3.4e38, -3.4e38, np.inf, -np.inf,
                         1e-40, -1e-40, 2.5e-39, 65504.0, 1 / 3], np.float32)
    a = ops.xp.asarray(specials.reshape(-1, 1))
    one = ops.xp.asarray(np.ones((1, 1), np.float32))
    got = cublas.gemm(a, one, precision="bf16").get().ravel()
    np.testing.assert_array_equal(got, _to_bf16(specials))
    nan = cublas.gemm(ops.xp.asarray(np.full((1, 1), np.nan, np.float32)), one, precision="bf16").get()
    assert np.isnan(nan).all()


def test_tf32_rounds_operands_to_ten_mantissa_bits(ops, cublas):
    rng = np.random.default_rng(3)
    a_h, b_h = rng.standard_normal((9, 13)).astype(np.float32), rng.standard_normal((13, 5)).astype(np.float32)
    got = cublas.gemm(_dev(ops, a_h, True), _dev(ops, b_h, False), precision="tf32").get()
    want = _to_tf32(a_h).astype(np.float64) @ _to_tf32(b_h).astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    exact = a_h.astype(np.float64) @ b_h
    assert 1e-6 < np.abs(got - exact).max() < 1e-2
    assert cublas.lib.calls[-1][0] == "cublasGemmEx"


def test_errors_name_what_was_expected(ops, cublas):
    xp = ops.xp
    a = xp.zeros((2, 3), xp.float32)
    with pytest.raises(ValueError, match="a is 2x3, so b must have 3 rows, got \\(4, 2\\)"):
        cublas.gemm(a, xp.zeros((4, 2), xp.float32))
    with pytest.raises(TypeError, match="two float32 or two float64 arrays, got float32 and float64"):
        cublas.gemm(a, xp.zeros((3, 2), xp.float64))
    with pytest.raises(ValueError, match="precision must be one of float32, tf32, bf16, got 'fp8'"):
        cublas.gemm(a, xp.zeros((3, 2), xp.float32), precision="fp8")
    with pytest.raises(ValueError, match="out must be 2x2 float32, got \\(2, 3\\) float32"):
        cublas.gemm(a, xp.zeros((3, 2), xp.float32), a)
    with pytest.raises(ValueError, match="applies to float32 operands, got float64"):
        cublas.gemm(xp.zeros((2, 3)), xp.zeros((3, 2)), precision="bf16")
    # a status other than success is a BackendError naming the function and the status
    assert cublas.lib.cublasSgemm_v2(cublas.handle, CUBLAS_OP_N, CUBLAS_OP_N, 4, 2, 3, 0, 0, 1, 0, 3, 0, 0, 4) == 7

    class Failing(FakeCublasLib):
        def cublasSgemm_v2(self, *args):     # noqa: N802
            return 13
    with pytest.raises(BackendError, match="cublasSgemm_v2 failed: expected CUBLAS_STATUS_SUCCESS, got "
                                           "CUBLAS_STATUS_EXECUTION_FAILED \\(13\\)"):
        Cublas(xp, lib=Failing()).gemm(a, xp.zeros((3, 2), xp.float32))


def test_degenerate_sizes(ops, cublas):
    xp = ops.xp
    out = xp.asarray(np.full((2, 3), 5.0, np.float32))
    assert cublas.gemm(xp.zeros((2, 0), xp.float32), xp.zeros((0, 3), xp.float32), out, True) is out
    np.testing.assert_array_equal(out.get(), 5.0)
    cublas.gemm(xp.zeros((2, 0), xp.float32), xp.zeros((0, 3), xp.float32), out, False)
    np.testing.assert_array_equal(out.get(), 0.0)
    assert cublas.gemm(xp.zeros((0, 4), xp.float32), xp.zeros((4, 3), xp.float32)).shape == (0, 3)


def test_the_handle_follows_the_current_stream_with_its_own_workspace(ops, cublas):
    xp = ops.xp
    a, b = xp.ones((2, 3), xp.float32), xp.ones((3, 4), xp.float32)
    cublas.gemm(a, b)
    assert cublas.lib.calls[-1][1]["stream"] == 0
    stream = xp.cuda.Stream(non_blocking=True)
    with stream:
        assert xp.cuda.get_current_stream() is stream
        cublas.gemm(a, b)
    assert xp.cuda.get_current_stream() is xp.cuda.Stream.null
    state = cublas.lib.calls[-1][1]
    assert state["stream"] == stream.ptr != 0
    assert state["workspace"] == cublas.workspace.data.ptr and state["workspace_bytes"] == WORKSPACE_BYTES
    handle = cublas.handle
    cublas.close()
    assert handle not in cublas.lib.handles and cublas.handle == 0


def _capture(ops, step):
    """Run ``step`` while a fresh non-null stream captures; the graph it ends with."""
    stream = ops.xp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        try:
            result = step()
        except BaseException:
            if stream.is_capturing():
                try:
                    stream.end_capture()          # a refused CUDA call spoils the capture: ends in an error
                except RuntimeError:
                    pass
            raise
        graph = stream.end_capture()
    return result, graph


def test_products_under_capture_go_through_cublas_and_equal_eager_ones(ops):
    rng = np.random.default_rng(5)
    x = ops.from_host(rng.standard_normal((4, 6)).astype(np.float32))
    w = ops.from_host(rng.standard_normal((5, 6)).astype(np.float32))
    d = ops.from_host(rng.standard_normal((4, 5)).astype(np.float32))
    gw_eager = ops.xp.zeros((5, 6), ops.xp.float32, order="F")
    y_eager = ops.linear(x, w)
    dx_eager = ops.gemm(d, w)
    ops.gemm(d, x, trans_a=True, out=gw_eager)
    ops.gemm(d, x, trans_a=True, out=gw_eager, accumulate=True)
    lib = ops.products.cublas.lib
    n_calls = len(lib.calls)
    gw = ops.xp.zeros((5, 6), ops.xp.float32, order="F")

    def step():
        y = ops.linear(x, w)
        dx = ops.gemm(d, w)
        ops.gemm(d, x, trans_a=True, out=gw)
        ops.gemm(d, x, trans_a=True, out=gw, accumulate=True)
        return y, dx

    (y, dx), graph = _capture(ops, step)
    assert len(lib.calls) == n_calls + 4 and all(c[0] == "cublasSgemm_v2" for c in lib.calls[n_calls:])
    assert all(c[1]["stream"] != 0 and c[1]["workspace"] for c in lib.calls[n_calls:])
    np.testing.assert_allclose(y.get(), y_eager.get(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx.get(), dx_eager.get(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gw.get(), gw_eager.get(), rtol=1e-6, atol=1e-6)
    with pytest.raises(RuntimeError, match="cannot replay CUDA graphs"):
        graph.launch()


def test_what_cuda_refuses_while_capturing_is_refused(ops):
    xp = ops.xp
    a = ops.from_host(np.ones((2, 2), np.float32))
    gen = xp.random.default_rng(0)
    refusals = {
        "matmul": lambda: xp.matmul(a, a), "dot": lambda: xp.dot(a, a), "@": lambda: a @ a,
        "tensordot": lambda: xp.tensordot(a, a), "einsum": lambda: xp.einsum("ij,jk->ik", a, a),
    }
    for call in refusals.values():
        with pytest.raises(NotImplementedError, match="calling cuBLAS API during stream capture is currently "
                                                      "unsupported"):
            _capture(ops, call)
    with pytest.raises(NotImplementedError, match="calling cuRAND API during stream capture"):
        _capture(ops, lambda: gen.random((2,), dtype=np.float32))
    for read in (lambda: a.get(), lambda: float(a[0, 0]), lambda: a[0, 0].item(), lambda: bool(a[0, 0]),
                 lambda: int(a[0, 0]), lambda: a.tolist(), lambda: repr(a), lambda: xp.asnumpy(a),
                 lambda: a[a > 0], lambda: ops.from_host(np.ones(2)), lambda: a.set(np.ones((2, 2), np.float32))):
        with pytest.raises(RuntimeError, match="cudaErrorStreamCaptureUnsupported"):
            _capture(ops, read)
    # the same calls are fine outside capture; elementwise work is fine inside it
    assert float(xp.sum(xp.matmul(a, a))) == 8.0
    (b,), _ = _capture(ops, lambda: (a * 2.0 + 1.0,))
    assert b.get().tolist() == [[3.0, 3.0], [3.0, 3.0]]


def test_a_capture_with_a_refused_call_cannot_end(ops):
    stream = ops.xp.cuda.Stream()
    a = ops.from_host(np.ones(2, np.float32))
    with stream:
        stream.begin_capture()
        with pytest.raises(RuntimeError):
            a.get()
        with pytest.raises(RuntimeError, match="cudaErrorStreamCaptureInvalidated"):
            stream.end_capture()
    with pytest.raises(RuntimeError, match="null stream cannot be captured"):
        ops.xp.cuda.Stream.null.begin_capture()


def test_shaped_cuda_fakes(ops):
    xp = ops.xp
    a = ops.from_host(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert isinstance(a.data.ptr, int) and a.data.ptr == a.T.data.ptr
    assert a[1].data.ptr == a.data.ptr + 12
    pool = xp.cuda.MemoryPool()
    assert isinstance(pool.malloc(64).ptr, int)
    with xp.cuda.using_allocator(pool.malloc):
        assert xp.zeros(2).shape == (2,)
    s1, s2 = xp.cuda.Stream(), xp.cuda.Stream()
    with s1:
        with s2:
            assert xp.cuda.get_current_stream() is s2
        assert xp.cuda.get_current_stream() is s1 and not s1.is_capturing()
    assert xp.cuda.get_current_stream().ptr == 0


def test_products_provider(ops):
    xp = ops.xp
    lib = FakeCublasLib()
    p = CupyProducts(xp, lib=lib)
    a = ops.from_host(np.arange(6, dtype=np.float32).reshape(2, 3))
    w = ops.from_host(np.ones((4, 3), np.float32))
    np.testing.assert_array_equal(p.linear(a, w).get(), a.get() @ np.ones((3, 4)))
    assert not lib.handles                       # eager float32: cupy.matmul, no cuBLAS handle made
    bf = p.with_precision("bf16")
    assert (bf.precision, p.precision, bf.name) == ("bf16", "float32", p.name)
    np.testing.assert_array_equal(bf.linear(a, w).get(), a.get() @ np.ones((3, 4)))   # small integers: exact
    assert lib.calls[-1][0] == "cublasGemmEx" and bf.cublas is p.cublas and len(lib.handles) == 1
    with pytest.raises(ValueError, match="precision must be one of float32, tf32, bf16, got 'float16'"):
        p.with_precision("float16")
    with pytest.raises(ValueError, match="got 'half'"):
        CupyProducts(xp, "half")


def test_load_cublas_without_the_library_is_a_backend_error():
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib
        load_nvidia_dynamic_lib("cublas")
        found = True
    except Exception:
        found = ctypes.util.find_library("cublas") is not None
    if found:
        pytest.skip("a real libcublas is installed here")
    with pytest.raises(BackendError, match="cuBLAS \\(libcublas\\) is needed .* but was not found"):
        load_cublas()
    with pytest.raises(BackendError, match="libcublas"):
        Cublas(get_ops("cupy-shaped").xp)

