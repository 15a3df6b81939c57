"""Checkpoints and model files: kill-and-resume, atomic writes, integrity, numerical
safety, cross-backend round trips and PyTorch interoperability."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

import deepnet as dn
from deepnet import io as dio
from deepnet import model_files
from deepnet.checkpoint import Checkpointer
from deepnet.io import ModelFileError, load_model, read_tensors, save_model
from deepnet.presets import mlp_layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import sys, time, numpy as np, deepnet as dn
    from deepnet.checkpoint import Checkpointer
    mode, folder, out = sys.argv[1:4]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 8)).astype(np.float32)
    y = rng.integers(0, 4, 600)
    net = dn.Network([dn.Dense(8, 32), dn.ReLU(), dn.Dropout(0.2), dn.Dense(32, 32), dn.Tanh(), dn.Dense(32, 4)],
                     seed=3, loss="xent", optimizer=dn.Adam(0.01))
    class Slow(dn.Callback):                       # gives the test time to kill us mid-epoch
        def on_batch_end(self, net, step, logs):
            time.sleep(0.02)
    ckpt = None if mode == "plain" else Checkpointer(folder, every_steps=7)
    net.fit(X, y, epochs=3, batch_size=20, callbacks=[Slow()] if mode == "train" else [],
            checkpoint=ckpt, resume=(mode == "resume"))
    np.savez(out, **net.get_weights())
""")


def _run(tmp_path, mode, wait=True):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    args = [sys.executable, str(script), mode, str(tmp_path / "ckpt"), str(tmp_path / f"{mode}.npz")]
    if wait:
        subprocess.run(args, check=True, env=env, timeout=300)
        return None
    return subprocess.Popen(args, env=env)


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    _run(tmp_path, "plain")
    proc = _run(tmp_path, "train", wait=False)
    deadline = time.time() + 120
    folder = tmp_path / "ckpt"
    while time.time() < deadline:
        names = [p.name for p in folder.glob("ckpt-*.npz")] if folder.exists() else []
        if any(int(n.split("-s")[1][:8]) >= 35 for n in names):   # step 35 = epoch 2, batch 5
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not (tmp_path / "train.npz").exists()                    # it really died before finishing
    last = Checkpointer(folder).last_path()
    _, header = read_tensors(last, expect_format="deepnet-checkpoint")
    assert header["next_batch"] > 0, "the kill should land in the middle of an epoch"
    _run(tmp_path, "resume")
    ref, got = np.load(tmp_path / "plain.npz"), np.load(tmp_path / "resume.npz")
    assert sorted(ref.files) == sorted(got.files)
    for k in ref.files:
        np.testing.assert_array_equal(got[k], ref[k])             # bit for bit


def small_net(backend=None, seed=0):
    return dn.Network([dn.Dense(5, 8), dn.ReLU(), dn.BatchNorm(8), dn.Dense(8, 3)], seed=seed, backend=backend,
                      loss="xent", optimizer=dn.Momentum(0.05))


def trained(rng, backend=None):
    net = small_net(backend)
    X = rng.normal(size=(40, 5)).astype(np.float32)
    net.fit(X, rng.integers(0, 3, 40), epochs=2, batch_size=8)
    return net, X


@pytest.mark.parametrize("src, dst", [("strict", "numpy"), ("numpy", "strict"),
                                      pytest.param("cupy", "numpy", marks=pytest.mark.cupy),
                                      pytest.param("numpy", "cupy", marks=pytest.mark.cupy)])
@pytest.mark.parametrize("ext", ["npz", "safetensors"])
def test_model_round_trip_across_backends(tmp_path, rng, src, dst, ext):
    net, X = trained(rng, src)
    path = save_model(net, tmp_path / f"m.{ext}")
    loaded = load_model(path, backend=dst)
    assert loaded.ops.name == dst
    np.testing.assert_allclose(loaded.predict(X), net.predict(X), rtol=1e-5, atol=1e-6)
    for k, v in net.get_weights().items():
        np.testing.assert_array_equal(loaded.get_weights()[k], v)


def test_checkpoint_round_trip_across_backends(tmp_path, rng):
    X = rng.normal(size=(40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    net = small_net("strict")
    net.fit(X, y, epochs=2, batch_size=8, checkpoint=Checkpointer(tmp_path))
    other = small_net("numpy", seed=99)
    state = Checkpointer(tmp_path).restore(other)
    assert state is not None and state[0] == 2
    for k, v in net.get_weights().items():
        np.testing.assert_array_equal(other.get_weights()[k], v)
    assert other.optimizer.iterations == net.optimizer.iterations
    np.testing.assert_array_equal(other.optimizer.state["0.weight"]["velocity"],
                                  dn.to_host(net.optimizer.state["0.weight"]["velocity"]))


def test_keeps_last_n_and_best(tmp_path, rng):
    X = rng.normal(size=(40, 5)).astype(np.float32)
    ck = Checkpointer(tmp_path, every_steps=2, keep=3)
    small_net().fit(X, rng.integers(0, 3, 40), epochs=3, batch_size=8, checkpoint=ck)
    assert len(ck.paths()) == 3 and (tmp_path / "best.npz").exists()
    assert ck.last_path().name == "ckpt-e0003-s00000015.npz"


def test_a_crash_while_writing_leaves_the_previous_file_intact(tmp_path, rng, monkeypatch):
    net, X = trained(rng)
    path = save_model(net, tmp_path / "model.npz")
    before = path.read_bytes()

    def exploding_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(model_files.np, "savez", exploding_savez)
    with pytest.raises(OSError, match="disk full"):
        save_model(net, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]     # no temporary left behind
    monkeypatch.undo()
    load_model(path)


def test_resume_if_exists_without_checkpoints_starts_fresh(tmp_path, rng):
    X = rng.normal(size=(16, 5)).astype(np.float32)
    hist = small_net().fit(X, rng.integers(0, 3, 16), epochs=1, batch_size=8, checkpoint=tmp_path / "c",
                           resume="if-exists")
    assert hist.epochs == [0]


# ---------------------------------------------------------------- damaged files
@pytest.fixture
def model_file(tmp_path, rng):
    net, _ = trained(rng)
    return save_model(net, tmp_path / "good.npz")


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.3, 0.6, 0.95, 0.999])
def test_truncated_files_are_refused(tmp_path, model_file, fraction):
    data = model_file.read_bytes()
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelFileError, match=r"truncated\.npz: "):
        load_model(bad)


@pytest.mark.parametrize("position", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_flipped_bytes_are_refused(tmp_path, model_file, position):
    data = bytearray(model_file.read_bytes())
    i = int(len(data) * position)
    data[i] ^= 0x5A
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"flipped\.npz: "):
        load_model(bad)


def _resave(dst, arrays):
    """Write arrays as a deepnet .npz with a valid seal (to test the checks behind it)."""
    import io as _io

    buf = _io.BytesIO()
    np.savez(buf, **arrays)
    dst.write_bytes(dio.seal(buf.getvalue()))


def test_unsealed_npz_is_refused(tmp_path, model_file):
    with np.load(model_file, allow_pickle=False) as z:
        np.savez(tmp_path / "plain.npz", **{k: z[k] for k in z.files})
    with pytest.raises(ModelFileError, match="integrity seal .* is missing"):
        load_model(tmp_path / "plain.npz")


def test_tensor_changed_consistently_fails_the_checksum(tmp_path, model_file):
    with np.load(model_file, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["0.weight"] = arrays["0.weight"] + 1.0
    _resave(tmp_path / "tampered.npz", arrays)
    with pytest.raises(ModelFileError, match="tensor checksum mismatch"):
        load_model(tmp_path / "tampered.npz")


@pytest.mark.parametrize("position", range(0, 100, 3))
def test_every_flipped_byte_is_refused(tmp_path, model_file, position):
    data = bytearray(model_file.read_bytes())
    data[len(data) * position // 100] ^= 0x01
    (tmp_path / "bit.npz").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"bit\.npz: "):
        load_model(tmp_path / "bit.npz")


def _rewrite_header(src, dst, change):
    import json
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays["__deepnet__"].tobytes())
    change(header)
    arrays["__deepnet__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    _resave(dst, arrays)


def test_newer_format_version_is_refused(tmp_path, model_file):
    _rewrite_header(model_file, tmp_path / "future.npz", lambda h: h.update(version=99))
    with pytest.raises(ModelFileError, match="format version 99 is newer than this deepnet supports"):
        load_model(tmp_path / "future.npz")


def test_shapes_that_do_not_fit_the_architecture(tmp_path, model_file):
    def widen(h):
        h["layers"][0]["config"]["n_out"] = 9
    _rewrite_header(model_file, tmp_path / "shape.npz", widen)
    with pytest.raises(ModelFileError, match=r"(inconsistent|parameter 0\.weight has shape \(8, 5\))"):
        load_model(tmp_path / "shape.npz")


def test_unknown_layer_type_runs_no_code(tmp_path, model_file):
    _rewrite_header(model_file, tmp_path / "evil.npz",
                    lambda h: h["layers"].insert(0, {"type": "os.system", "config": {"command": "touch pwned"}}))
    with pytest.raises(ModelFileError, match="unknown layer type 'os.system'"):
        load_model(tmp_path / "evil.npz")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))       # would create a file if ever unpickled


def test_pickles_are_never_loaded(tmp_path):
    marker = tmp_path / "pwned"
    raw = tmp_path / "model.npz"
    raw.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(ModelFileError, match="pickle"):
        load_model(raw)
    inside = tmp_path / "objects.npz"
    _resave(inside, {"__deepnet__": np.frombuffer(b"{}", np.uint8), "w": np.array([_Payload(str(marker))], dtype=object)})
    with pytest.raises(ModelFileError, match="pickled objects"):
        load_model(inside)
    import io as _io

    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("w.npy", pickle.dumps(_Payload(str(marker))))
    (tmp_path / "zipped.npz").write_bytes(dio.seal(buf.getvalue()))
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "zipped.npz")
    assert not marker.exists()


def test_checkpoint_of_another_architecture_is_refused(tmp_path, rng):
    X = rng.normal(size=(16, 5)).astype(np.float32)
    small_net().fit(X, rng.integers(0, 3, 16), epochs=1, batch_size=8, checkpoint=tmp_path)
    other = dn.Network(mlp_layers("5-4-3", "relu"), loss="xent", optimizer="sgd")
    with pytest.raises(ModelFileError, match="architecture differs"):
        other.fit(X, rng.integers(0, 3, 16), epochs=2, batch_size=8, checkpoint=tmp_path, resume=True)


# ---------------------------------------------------------------- numerical safety
@pytest.mark.filterwarnings("ignore::RuntimeWarning")          # the overflow is the point
def test_non_finite_loss_stops_with_step_layer_and_checkpoint(tmp_path, rng):
    X = rng.normal(size=(64, 5)).astype(np.float32) * 100
    net = dn.Network(mlp_layers("5-64-64-3", "relu"), seed=0, loss="xent", optimizer=dn.SGD(1e6))
    with pytest.raises(dn.NonFiniteError, match=r"training stopped at epoch \d+, batch \d+ \(step \d+\).*"
                                                r"first non-finite layer: layer \d+.*last good checkpoint: .*ckpt-"):
        net.fit(X, rng.integers(0, 3, 64), epochs=50, batch_size=8, checkpoint=Checkpointer(tmp_path, every_steps=1))
    # the update that would have made things worse was not applied: a checkpoint of the
    # last good state exists and loads
    Checkpointer(tmp_path).restore(dn.Network(mlp_layers("5-64-64-3", "relu"), loss="xent", optimizer=dn.SGD(1.0)))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_skip_policy_drops_bad_steps_and_lowers_the_learning_rate(rng):
    X = rng.normal(size=(64, 5)).astype(np.float32) * 100
    net = dn.Network(mlp_layers("5-64-64-3", "relu"), seed=0, loss="xent", optimizer=dn.SGD(1e6))
    net.fit(X, rng.integers(0, 3, 64), epochs=30, batch_size=8, check_finite="skip")
    assert net.optimizer.lr < 1e6
    assert all(np.all(np.isfinite(w)) for w in net.get_weights().values())


# ---------------------------------------------------------------- PyTorch
def test_pytorch_parity_of_an_exported_model(rng):
    torch = pytest.importorskip("torch")
    from deepnet.interop import from_torch, to_torch, to_torch_state_dict

    net = dn.Network([dn.Dense(6, 32), dn.ReLU(), dn.Dense(32, 16), dn.Tanh(), dn.Dense(16, 8), dn.Sigmoid(),
                      dn.Dense(8, 4), dn.LeakyReLU(0.1), dn.Dense(4, 3)], seed=0)
    X = rng.normal(size=(100, 6)).astype(np.float32)
    net.fit(X, rng.integers(0, 3, 100), epochs=2, batch_size=10, loss="xent", optimizer="adam")
    module = to_torch(net)
    assert set(module.state_dict()) == set(to_torch_state_dict(net))
    with torch.no_grad():
        out = module(torch.from_numpy(X)).numpy()
    assert np.abs(out - net.predict(X)).max() < 1e-5
    back = from_torch(module)
    np.testing.assert_array_equal(back.predict(X), net.predict(X))


@pytest.mark.parametrize("torch_m, deepnet_m", [(0.1, 0.9), (0.0, 1.0), (0.3, 0.7), (1.0, 0.0)])
def test_batchnorm_momentum_maps_both_ways(torch_m, deepnet_m):
    """deepnet's momentum is the weight of the old running value, PyTorch's of the new batch value
    (issue 13: torch 0.0, frozen statistics, used to become deepnet 0.9 through ``m or 0.1``)."""
    torch = pytest.importorskip("torch")
    from deepnet.interop import from_torch, to_torch

    net = from_torch(torch.nn.Sequential(torch.nn.BatchNorm1d(4, momentum=torch_m)))
    assert net.layers[0].momentum == deepnet_m
    assert to_torch(dn.Network([dn.BatchNorm(4, momentum=deepnet_m)], seed=0))[0].momentum == torch_m
    assert to_torch(net)[0].momentum == torch_m                      # round trip, exactly


@pytest.mark.parametrize("torch_m", [0.0, 0.1, 0.5])
def test_batchnorm_running_statistics_match_pytorch_after_import(rng, torch_m):
    """The imported layer updates its running mean and variance as PyTorch does (momentum 0.0: not at all)."""
    torch = pytest.importorskip("torch")
    from deepnet.interop import from_torch

    module = torch.nn.Sequential(torch.nn.BatchNorm1d(4, momentum=torch_m))
    with torch.no_grad():
        module[0].running_mean.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        module[0].running_var.copy_(torch.tensor([2.0, 0.5, 1.0, 3.0]))
    layer = from_torch(module).layers[0]
    for _ in range(3):
        X = (rng.normal(size=(16, 4)) * 3 + 1).astype(np.float32)
        module.train()(torch.from_numpy(X))
        layer.forward(X, training=True)
    st = layer.state_arrays()
    np.testing.assert_allclose(st["running_mean"], module[0].running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(st["running_var"], module[0].running_var.numpy(), rtol=1e-5, atol=1e-6)
    if torch_m == 0.0:
        np.testing.assert_array_equal(st["running_mean"], [0.5, -1.0, 2.0, 0.0])


def test_batchnorm_cumulative_momentum_is_refused():
    """PyTorch's momentum=None (a cumulative moving average) has no deepnet equivalent: a one-line error."""
    torch = pytest.importorskip("torch")
    from deepnet.interop import from_torch

    with pytest.raises(ValueError, match=r"module 1 \(BatchNorm1d\): momentum=None \(cumulative moving average\) "
                                         r"has no deepnet equivalent"):
        from_torch(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4, momentum=None)))


def test_state_dict_export_needs_no_pytorch():
    from deepnet.interop import to_torch_state_dict

    net = dn.Network([dn.Dense(3, 2), dn.ReLU()], seed=0)
    sd = to_torch_state_dict(net)
    assert list(sd) == ["0.weight", "0.bias"] and sd["0.weight"].shape == (2, 3)


@pytest.mark.parametrize("chunk", [None, 40])
def test_stop_mid_epoch_and_resume_in_process(tmp_path, rng, chunk):
    """The same guarantee without a subprocess, for resident and streamed data."""
    X = rng.normal(size=(200, 4)).astype(np.float32)
    y = rng.integers(0, 3, 200)

    def make():
        return dn.Network([dn.Dense(4, 16), dn.ReLU(), dn.Dropout(0.3), dn.Dense(16, 3)], seed=1, loss="xent",
                          optimizer=dn.Adam(0.01))

    ref = make()
    ref_hist = ref.fit(X, y, epochs=3, batch_size=10, stream_chunk_rows=chunk)

    class StopAt(dn.Callback):
        def on_batch_end(self, net, step, logs):
            if step == 27:                      # epoch 2, batch 8 of 20
                net.stop_training = True

    make().fit(X, y, epochs=3, batch_size=10, stream_chunk_rows=chunk, callbacks=[StopAt()],
               checkpoint=Checkpointer(tmp_path, every_steps=5))
    resumed = make()
    hist = resumed.fit(X, y, epochs=3, batch_size=10, stream_chunk_rows=chunk,
                       checkpoint=Checkpointer(tmp_path, every_steps=5), resume=True)
    assert hist.epochs == [0, 1, 2]
    for k, v in ref.get_weights().items():
        np.testing.assert_array_equal(resumed.get_weights()[k], v)
    for key in ("loss", "accuracy"):            # the resumed epoch's totals carried once, not into epoch 3
        np.testing.assert_allclose(hist.history[key], ref_hist.history[key], rtol=1e-6)


# ---------------------------------------------------------------------- the device generator's kind
def _dropout_model(backend):
    return dn.Network([dn.Dense(4, 16), dn.ReLU(), dn.Dropout(0.3), dn.Dense(16, 3)], seed=1, backend=backend,
                      loss="xent", optimizer=dn.Adam(0.01))


class _StopAtStep(dn.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, net, step, logs):
        if step == self.step:
            net.stop_training = True


def _fit(net, X, y, folder=None, stop=None, resume=False):
    ckpt = None if folder is None else Checkpointer(folder, every_steps=5)
    net.fit(X, y, epochs=3, batch_size=10, callbacks=[] if stop is None else [_StopAtStep(stop)], checkpoint=ckpt,
            resume=resume)
    return net


def _saved_device_rng(folder):
    return read_tensors(Checkpointer(folder).last_path(), expect_format="deepnet-checkpoint")[1]["device_rng"]


def _numba_ops():
    pytest.importorskip("numba")
    from deepnet.backend.numba_ops import NumbaOps

    return NumbaOps()


def test_a_checkpoint_with_numpys_generator_resumes_with_it(tmp_path, rng, monkeypatch):
    """NumPy-backend checkpoints written before the Philox generator hold a NumPy generator's
    state: the resumed run keeps drawing from that generator (its checkpoints too) and ends
    exactly as the run would have without the interruption."""
    from deepnet.backend.counter_rng import CounterRNG
    from deepnet.backend.numba_ops import NumbaOps
    from deepnet.backend.numpy_ops import NumpyOps

    ops = _numba_ops()
    X = rng.normal(size=(200, 4)).astype(np.float32)
    y = rng.integers(0, 3, 200)
    with monkeypatch.context() as before:          # the NumPy backend as it drew then: NumPy's generator
        before.setattr(NumbaOps, "device_rng", NumpyOps.device_rng)
        ref = _fit(_dropout_model(ops), X, y)
        _fit(_dropout_model(ops), X, y, tmp_path, stop=27)
    assert _saved_device_rng(tmp_path)["bit_generator"] == "PCG64"
    resumed = _dropout_model(ops)
    assert isinstance(resumed.device_rng(), CounterRNG)       # a new run draws Philox
    _fit(resumed, X, y, tmp_path, resume=True)
    for k, v in ref.get_weights().items():
        np.testing.assert_array_equal(resumed.get_weights()[k], v)
    assert resumed.device_rng_state()["bit_generator"] == "PCG64"
    assert _saved_device_rng(tmp_path)["bit_generator"] == "PCG64"


def test_a_numba_backend_checkpoint_resumes_with_the_same_masks(tmp_path, rng):
    ops = _numba_ops()
    X = rng.normal(size=(200, 4)).astype(np.float32)
    y = rng.integers(0, 3, 200)
    ref = _fit(_dropout_model(ops), X, y)
    _fit(_dropout_model(ops), X, y, tmp_path, stop=27)
    assert set(_saved_device_rng(tmp_path)) == {"philox_key", "counter"}
    resumed = _fit(_dropout_model(ops), X, y, tmp_path, resume=True)
    for k, v in ref.get_weights().items():
        np.testing.assert_array_equal(resumed.get_weights()[k], v)
    assert resumed.device_rng_state() == ref.device_rng_state()


def test_a_numba_backend_checkpoint_resumes_without_numba(tmp_path, rng):
    """Where numba is absent the NumPy backend is pure NumPy (NumpyOps, NumPy's generator for
    new runs); a checkpoint with a Philox state resumes there on the Array-API Philox: the
    same masks, and the run ends as the uninterrupted one to rounding (NumPy's updates in
    place of the compiled ones)."""
    from deepnet.backend.counter_rng import CounterRNG
    from deepnet.backend.numpy_ops import NumpyOps

    ops = _numba_ops()
    X = rng.normal(size=(200, 4)).astype(np.float32)
    y = rng.integers(0, 3, 200)
    ref = _fit(_dropout_model(ops), X, y)
    _fit(_dropout_model(ops), X, y, tmp_path, stop=27)
    saved = _saved_device_rng(tmp_path)
    assert not isinstance(NumpyOps().device_rng(1), CounterRNG)
    with_numba, without = _dropout_model(ops), _dropout_model(NumpyOps())
    for net in (with_numba, without):
        Checkpointer(tmp_path).restore(net)
    assert isinstance(without.device_rng(), CounterRNG) and without.device_rng().kernel is None
    assert without.device_rng_state() == with_numba.device_rng_state() == saved
    h = np.ones((10, 16), np.float32)                   # the Dropout layers draw from the restored generators
    np.testing.assert_array_equal(without.layers[2].forward(h, True), with_numba.layers[2].forward(h, True))
    resumed = _fit(_dropout_model(NumpyOps()), X, y, tmp_path, resume=True)
    assert resumed.device_rng_state() == ref.device_rng_state()
    for k, v in ref.get_weights().items():
        np.testing.assert_allclose(resumed.get_weights()[k], v, rtol=1e-4, atol=1e-6)
