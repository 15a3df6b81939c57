"""Mixed precision: the products' operands in TF32 or bfloat16, float32 master weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

import deepnet as dn
from deepnet.backend.numpy_ops import NumpyOps
from deepnet.backend.precision import RoundedProducts, round_mantissa
from deepnet.cli import main as cli_main


def _specials() -> np.ndarray:
    big = np.finfo(np.float32).max
    ties = np.array([1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, -(1 + 2.0 ** -8), 1 + 2.0 ** -8 + 2.0 ** -20], np.float32)
    return np.concatenate([ties, np.array([0.0, -0.0, np.inf, -np.inf, np.nan, big, -big, 1e-40, -3e-39],
                                          np.float32)])


def test_bf16_rounding_is_what_pytorch_does():
    """Round to nearest, ties to even, overflow to ±inf, NaN kept: compared with PyTorch's own
    float32 → bfloat16 conversion on random values and the special cases."""
    torch = pytest.importorskip("torch")
    x = np.concatenate([np.random.default_rng(0).standard_normal(50000).astype(np.float32) * 1e3, _specials()])
    mine = round_mantissa(x, 7)
    ref = torch.from_numpy(x).to(torch.bfloat16).to(torch.float32).numpy()
    np.testing.assert_array_equal(mine, ref)        # NaNs compare equal in assert_array_equal
    tie = mine[50000:]
    assert tie[0] == 1.0 and tie[1] == 1 + 4 * 2.0 ** -8 and tie[3] == 1 + 2 * 2.0 ** -8   # ties to even


def test_tf32_keeps_ten_mantissa_bits():
    x = np.array([1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 1 + 2.0 ** -10], np.float32)
    np.testing.assert_array_equal(round_mantissa(x, 10), [1.0, 1 + 2 * 2.0 ** -10, 1 + 2.0 ** -10])


def test_rounded_products_are_products_of_rounded_operands():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((7, 5)).astype(np.float32), rng.standard_normal((5, 3)).astype(np.float32)
    prov = NumpyOps().products.with_precision("bf16")
    assert isinstance(prov, RoundedProducts) and prov.with_precision("float32").precision == "float32"
    ref = round_mantissa(a, 7).astype(np.float64) @ round_mantissa(b, 7).astype(np.float64)
    np.testing.assert_allclose(prov.gemm(a, b, None, False), ref, rtol=1e-6)
    out = np.ones((3, 7), np.float32).T                 # a column-major out, accumulated into
    prov.gemm(a, b, out, True)
    np.testing.assert_allclose(out, ref + 1, rtol=1e-6)
    w = rng.standard_normal((3, 5)).astype(np.float32)
    np.testing.assert_allclose(prov.linear(a, w), round_mantissa(a, 7).astype(np.float64)
                               @ round_mantissa(w, 7).T.astype(np.float64), rtol=1e-6)


def _xy(n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.random((n, 20), dtype=np.float32)
    return X, (X[:, :4].sum(1) * 2).astype(int) % 4


def test_fit_in_bf16_trains_with_rounded_products_and_restores_float32():
    X, y = _xy()
    ops = NumpyOps()
    seen = []

    class Spy(dn.callbacks.Callback):
        def on_epoch_end(self, net, epoch, logs):
            seen.append(net.ops.products.precision)

    nets = {}
    for p in ("float32", "bf16", "tf32"):
        net = dn.Network([dn.Dense(20, 32), dn.ReLU(), dn.Dense(32, 4)], seed=0, backend=ops, loss="xent",
                         optimizer=dn.Adam(1e-2))
        h = net.fit(X, y, epochs=4, batch_size=32, precision=p, callbacks=[Spy()])
        nets[p] = (net, h.history["accuracy"][-1])
        assert ops.products.precision == "float32"          # restored after the run
        assert net.parameters()["0.weight"].data.dtype == np.float32
    assert seen == ["float32"] * 4 + ["bf16"] * 4 + ["tf32"] * 4
    w32 = dn.to_host(nets["float32"][0].get_weights()["0.weight"])
    w16 = dn.to_host(nets["bf16"][0].get_weights()["0.weight"])
    assert 0 < np.abs(w32 - w16).max() < 0.25            # a different run (rounding), not a different model
    assert abs(nets["float32"][1] - nets["bf16"][1]) < 0.05


def test_precision_errors_are_one_line():
    X, y = _xy(64)
    with pytest.raises(ValueError, match="precision must be one of 'float32', 'tf32', 'bf16', got 'fp16'"):
        dn.Network([dn.Dense(20, 4)], backend=NumpyOps(), loss="xent", optimizer="adam").fit(X, y, precision="fp16")
    with pytest.raises(ValueError, match="'strict' computes them in its own namespace"):
        dn.Network([dn.Dense(20, 4)], backend="strict", loss="xent", optimizer="adam").fit(X, y, precision="bf16")
    net64 = dn.Network([dn.Dense(20, 4)], backend=NumpyOps(), loss="xent", optimizer="adam", dtype="float64")
    with pytest.raises(ValueError, match="keeps float32 master weights; the network is float64"):
        net64.fit(X, y, precision="bf16")


@pytest.mark.cupy_shaped
def test_bf16_on_the_cupy_path_goes_through_cublas_gemmex():
    shaped = pytest.importorskip("deepnet.backend.cupy_shaped")
    try:
        ops = shaped.FusedCupyShapedOps()
    except dn.BackendError as err:
        pytest.skip(str(err))
    X, y = _xy(128)
    net = dn.Network([dn.Dense(20, 32), dn.ReLU(), dn.Dense(32, 4)], seed=0, backend=ops, loss="xent",
                     optimizer=dn.Adam(1e-2))
    lib = ops.products.cublas.lib
    lib.calls.clear()
    net.fit(X, y, epochs=1, batch_size=32, precision="bf16")
    names = [c[0] if isinstance(c, tuple) else getattr(c, "name", str(c)) for c in lib.calls]
    assert any("GemmEx" in str(n) for n in names) and ops.products.precision == "float32"


def test_cli_records_the_precision_and_resume_takes_it(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["train", "--dataset", "digits", "--layers", "64-16-10", "--batch-size", "64", "--out", str(out),
              "--quiet", "--checkpoint-every", "5"]
    if cli_main([*common, "--epochs", "1", "--precision", "bf16"]) != 0:
        pytest.skip("the digits data set is not available here")
    summary = json.loads((out / "summary.json").read_text())
    assert "bf16" in json.dumps(summary)
    assert cli_main([*common, "--epochs", "2", "--resume"]) == 0          # --precision taken from the checkpoint
    assert cli_main([*common, "--epochs", "3", "--resume", "--precision", "float32"]) != 0
    assert "--precision: checkpoint 'bf16', given 'float32'" in capsys.readouterr().err


@pytest.mark.cupy
@pytest.mark.parametrize("precision, bits, rtol", [("bf16", 7, 1e-5), ("tf32", 10, 1e-3)])
def test_reduced_precision_products_on_the_gpu(precision, bits, rtol):
    """On a GPU: cuBLAS GemmEx on tensor cores gives the product of the rounded operands
    (TF32's own rounding of the operands may differ from round-to-nearest-even: looser)."""
    try:
        ops = dn.backend.get_ops("cupy")
    except dn.BackendError as err:
        pytest.skip(str(err))
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((257, 129)).astype(np.float32), rng.standard_normal((129, 65)).astype(np.float32)
    prov = ops.products.with_precision(precision)
    got = dn.to_host(prov.gemm(dn.to_device(a, ops), dn.to_device(b, ops), None, False))
    ref = round_mantissa(a, bits).astype(np.float64) @ round_mantissa(b, bits).astype(np.float64)
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    assert np.max(np.abs(got - ref) / scale) < rtol
