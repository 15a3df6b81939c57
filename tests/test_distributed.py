"""Data-parallel training: shards, the gradient buckets, the communicator interface, and
(with mpi4py and mpiexec) 2 MPI processes against one process with the global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from deepnet import Network
from deepnet.distributed import Communicator, LocalCommunicator, Pending
from deepnet.distributed.gradients import GradientBuckets
from deepnet.distributed.launch import find_mpiexec, launched_size, mpiexec_command
from deepnet.distributed.shards import check_shards, shard_of, shard_order, shard_rows
from deepnet.distributed.threads import SET_BY_DEEPNET, THREAD_VARIABLES, available_cores
from deepnet.errors import ShapeError
from deepnet.layers import BatchNorm, Dense, Dropout, ReLU
from deepnet.layers.base import Parameter
from tests.distributed_worker import B, CASES, EPOCHS, build, data, inputs

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distributed_worker.py"


# ---------------------------------------------------------------------- shards
@pytest.mark.parametrize("n,batch,size", [(100, 10, 2), (105, 10, 2), (103, 4, 3), (64, 8, 4), (8, 3, 2)])
def test_shards_split_every_global_batch_disjointly(n, batch, size):
    order = np.random.default_rng(1).permutation(n)
    check_shards(n, batch, size)
    g = size * batch
    shards = [shard_order(order, n, batch, r, size) for r in range(size)]
    for r, rows in enumerate(shards):
        assert len(rows) == shard_rows(n, batch, r, size)[0]
    for b in range(-(-n // g)):
        glob = order[b * g:(b + 1) * g]
        parts = [rows[b * batch:(b + 1) * batch] for rows in shards]
        assert np.array_equal(np.concatenate(parts), glob)        # disjoint, in order, all of it
    assert shard_order(None, n, batch, 0, size).tolist() == sorted(shard_order(None, n, batch, 0, size).tolist())


def test_a_last_global_batch_smaller_than_the_ranks_is_refused():
    with pytest.raises(ValueError, match=r"last global batch has 1 row of 65.*at least 2"):
        check_shards(65, 32, 2)
    check_shards(66, 32, 2)


def test_evaluation_shares_cover_the_rows():
    assert [shard_of(10, r, 3) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]


# ---------------------------------------------------------------------- communicators
class CountingCommunicator(LocalCommunicator):
    """One process that records every reduction (size of the array, when it started)."""

    def __init__(self, net=None):
        self.calls, self.net, self.layer = [], net, None

    def allreduce_start(self, x, op="sum"):
        self.calls.append((int(x.size), self.layer))
        return Pending()


def test_local_communicator_checks_its_arguments():
    comm = LocalCommunicator()
    x = np.arange(3.0)
    assert comm.allreduce(x) is x and comm.broadcast(x) is x
    with pytest.raises(ValueError, match="op must be 'sum' or 'mean', got 'max'"):
        comm.allreduce(x, "max")
    with pytest.raises(ValueError, match=r"root must be a rank in 0..0, got 1"):
        comm.broadcast(x, 1)
    with pytest.raises(ValueError, match="bucket_bytes must be a positive integer, got 0"):
        comm.configure(bucket_bytes=0)
    assert comm.sum_floats([1, 2.5]) == [1.0, 2.5] and comm.allgather_object({"a": 1}) == [{"a": 1}]


def _net(dtype="float64", **kw):
    return Network([Dense(6, 5), BatchNorm(5), ReLU(), Dense(5, 3)], seed=1, dtype=dtype, loss="xent",
                   optimizer="adam", **kw)


def test_gradients_live_in_one_flat_buffer_reduced_once_per_step():
    net = _net()
    comm = CountingCommunicator()
    buckets = GradientBuckets(comm, net.ops, net.layers, np.float64)
    params = list(net.parameters().values())
    assert buckets.n_values == sum(p.data.size for p in params)
    for p in params:       # views into the flat buffer, from the top layer down
        assert np.shares_memory(p.grad_buffer, buckets.flat)
    top = net.parameters()["3.weight"]
    assert np.shares_memory(top.grad_buffer, buckets.flat[:top.data.size])
    X, y = np.random.default_rng(0).normal(size=(8, 6)), np.arange(8) % 3
    z = net.forward(X, True)
    _, dz = net.loss.forward_backward(z, np.eye(3)[y])
    buckets.begin()
    net.backward(dz)
    buckets.finish()
    assert comm.calls == [(buckets.n_values, None)]
    grads = {k: p.grad.copy() for k, p in net.parameters().items()}
    assert np.array_equal(buckets.flat[:top.data.size], grads["3.weight"].reshape(-1))


def test_small_buckets_start_during_backward_with_overlap():
    net = _net()
    comm = CountingCommunicator()
    buckets = GradientBuckets(comm, net.ops, net.layers, np.float64, bucket_bytes=8 * 16, overlap=True)
    assert len(buckets.buckets) >= 3 and [b.lowest for b in buckets.buckets] == sorted(
        (b.lowest for b in buckets.buckets), reverse=True)

    def hook(i):
        comm.layer = i
        buckets.layer_done(i)

    net.backward_hook = hook
    X, y = np.random.default_rng(0).normal(size=(8, 6)), np.arange(8) % 3
    z = net.forward(X, True)
    _, dz = net.loss.forward_backward(z, np.eye(3)[y])
    buckets.begin()
    net.backward(dz)
    started = list(comm.calls)
    buckets.finish()
    assert len(started) == len(buckets.buckets) == len(comm.calls)
    assert started[0][1] == 3                      # the top layer's bucket went while layers 2..0 still ran
    assert sum(n for n, _ in started) == buckets.n_values


def test_a_parameter_laid_out_anew_after_the_buckets_were_built_is_still_reduced():
    net = _net()
    comm = CountingCommunicator()
    buckets = GradientBuckets(comm, net.ops, net.layers, np.float64)
    w = net.parameters()["0.weight"]
    w.data = np.asfortranarray(w.data)          # a new layout: its gradient buffer is replaced
    X, y = np.random.default_rng(0).normal(size=(8, 6)), np.arange(8) % 3
    z = net.forward(X, True)
    _, dz = net.loss.forward_backward(z, np.eye(3)[y])
    buckets.begin()
    net.backward(dz)
    expected = w.grad.copy()
    buckets.finish()
    assert np.shares_memory(w.grad_buffer, buckets.flat) and np.array_equal(w.grad, expected)


def test_local_batchnorm_needs_two_rows_per_rank_in_the_last_batch():
    check_shards(503, 10, 2, min_rows=1)
    with pytest.raises(ValueError, match=r"last global batch has 3 rows of 503, too few.*each needs 2.*at least 4"):
        check_shards(503, 10, 2, min_rows=2)


def test_a_parameter_keeps_its_gradient_in_a_shared_buffer():
    p = Parameter("w", np.zeros((2, 3)))
    p.grad = np.ones((2, 3))
    buf = np.zeros(6)[:6].reshape(2, 3)
    p.share_grad(buf)
    assert p.grad_buffer is buf and np.array_equal(buf, np.ones((2, 3)))      # the written gradient carried over
    with pytest.raises(ShapeError, match=r"gradient buffer must have shape \(2, 3\).*got shape \(3, 2\)"):
        p.share_grad(np.zeros((3, 2)))


def test_one_rank_with_a_communicator_trains_exactly_as_without():
    X, y = data()
    plain = build("bn", "adam", "float64")
    plain.fit(X, y, epochs=2, batch_size=2 * B)
    local = build("bn", "adam", "float64")
    local.fit(X, y, epochs=2, batch_size=2 * B, communicator=LocalCommunicator(), sync_batchnorm=True)
    for k, w in plain.get_weights().items():
        assert np.array_equal(w, local.get_weights()[k]), k


def test_fit_refuses_what_data_parallel_training_cannot_do():
    X, y = data()
    with pytest.raises(ValueError, match="sync_batchnorm=True synchronizes BatchNorm across the processes"):
        _net().fit(X[:, :6], y % 3, sync_batchnorm=True)
    with pytest.raises(ValueError, match="check_finite='skip' decides per process"):
        _net().fit(X[:, :6], y % 3, check_finite="skip", communicator=LocalCommunicator())
    with pytest.raises(ValueError, match="sync_batchnorm=True, but the network has no BatchNorm layer"):
        Network([Dense(6, 3)], loss="xent", optimizer="sgd").fit(X[:, :6], y % 3, communicator=LocalCommunicator(),
                                                                  sync_batchnorm=True)
    diag = _net()
    diag.diagnostics = object()
    with pytest.raises(ValueError, match="diagnostics record each process's own gradients"):
        diag.fit(X[:, :6], y % 3, communicator=LocalCommunicator())
    with pytest.raises(TypeError, match="communicator must be a deepnet.distributed Communicator, got str"):
        _net().fit(X[:, :6], y % 3, communicator="mpi")


@pytest.mark.cupy_shaped
def test_fit_refuses_captured_steps_under_data_parallel_training():
    X, y = data()
    with pytest.raises(ValueError, match=r"graphs='on'.*data-parallel training reduces the gradients"):
        _net(backend="cupy-shaped").fit(X[:, :6], y % 3, graphs="on", communicator=LocalCommunicator(),
                                        check_finite="off")


def test_each_rank_draws_its_own_dropout_masks_and_rank_0_the_single_process_ones():
    def draws(rank):
        net = Network([Dense(4, 4), Dropout(0.5), Dense(4, 2)], seed=3)
        state = net.rng.bit_generator.state
        net.set_replica(rank)
        assert net.rng.bit_generator.state == state          # the shuffles' generator is left alone
        return net.device_rng().uniform((1000,), np.float32)

    assert np.array_equal(draws(0), draws(0))
    assert not np.array_equal(draws(0), draws(1)) and not np.array_equal(draws(1), draws(2))


def test_mpiexec_command_runs_deepnet_here(monkeypatch):
    cmd = mpiexec_command(3, ["train", "--epochs", "1"], mpiexec="/opt/mpi/bin/mpiexec")
    assert cmd[:3] == ["/opt/mpi/bin/mpiexec", "-n", "3"]
    assert cmd[-6:] == [sys.executable, "-m", "deepnet", "train", "--epochs", "1"]
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert launched_size() == 4


# ---------------------------------------------------------------------- 2 MPI processes
def _mpi_missing() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'deepnet[mpi]')"
    if find_mpiexec() is None:
        return "no mpiexec found (pip install mpich)"
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))


def _mpiexec(n: int, args: list[str], timeout: float = 240, cwd: Path | None = None,
             threads: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``mpiexec -n n python args``; ``threads``: the thread variables of the run (default
    OMP_NUM_THREADS=1 unless set), in place of any the environment has."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if threads is None:
        env.setdefault("OMP_NUM_THREADS", "1")
    else:
        env = {k: v for k, v in env.items() if k not in (*THREAD_VARIABLES, SET_BY_DEEPNET)} | threads
    cmd = [find_mpiexec(), "-n", str(n)] if n > 1 else []
    return subprocess.run([*cmd, sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd or ROOT)


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("equivalence")
    res = _mpiexec(2, [str(WORKER), "equivalence", str(out)])
    assert res.returncode == 0, res.stderr[-3000:]
    return out


@needs_mpi
@pytest.mark.parametrize("case", [pytest.param(c, marks=[pytest.mark.cupy_shaped] if c[4] == "cupy-shaped" else [])
                                  for c in CASES], ids=[c[0] for c in CASES])
def test_two_ranks_with_batch_b_equal_one_process_with_batch_2b(two_rank_runs, case):
    """52 steps (a short last global batch included): float64 weights within 1e-10, float32 within 1e-5.
    The ranks train the cases whose backend can be created here (the worker says which it left out)."""
    name, model, opt, dtype, backend, _, _ = case
    X, y = data()
    net = build(model, opt, dtype, backend)
    hist = net.fit(inputs(model, X), y, epochs=EPOCHS, batch_size=2 * B)
    assert net.step_count == 52
    got = np.load(two_rank_runs / f"{name}.npz")
    tol = 1e-10 if dtype == "float64" else 1e-5
    for k, w in net.get_weights().items():
        np.testing.assert_allclose(got[k], w, rtol=0, atol=tol, err_msg=k)
    history = json.loads(str(got["__history__"]))
    np.testing.assert_allclose(history["loss"], hist.history["loss"], rtol=tol)
    np.testing.assert_allclose(history["accuracy"], hist.history["accuracy"], rtol=0, atol=1e-12)
    assert str(got["__transport__"]) == ("staged" if backend == "cupy-shaped" else "host")


@needs_mpi
@pytest.mark.parametrize("how", ["raise", "kill"])
def test_a_rank_that_dies_stops_the_others_within_seconds(how):
    t0 = time.perf_counter()
    res = _mpiexec(2, [str(WORKER), f"fail-{how}"], timeout=120)
    took = time.perf_counter() - t0
    assert res.returncode != 0 and took < 30, (took, res.stderr[-2000:])
    if how == "raise":
        assert "deepnet: rank 1 of 2 stopped the run: RuntimeError: rank 1 failed on purpose at step 5" in res.stderr


@needs_mpi
@pytest.mark.parametrize("what,says", [
    ("lr", "optimizer.lr: rank 0 0.1, rank 1 0.2"),
    ("buckets", "reduction: rank 0 ['mpi', 'host', 256, False, False], rank 1 ['mpi', 'host', 1048576, False, False]")])
def test_ranks_started_with_different_settings_are_stopped_at_the_start(what, says):
    res = _mpiexec(2, [str(WORKER), f"mismatch-{what}"], timeout=120)
    assert res.returncode != 0
    assert f"the ranks of this run were started with different settings: {says}" in res.stderr


@needs_mpi
def test_a_callback_that_stops_one_rank_stops_every_rank_at_that_step():
    res = _mpiexec(2, [str(WORKER), "stop-one"], timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "stopped at [(7, 'stopped by rank 0'), (7, 'stopped by rank 0')]" in res.stdout


@needs_mpi
def test_ranks_with_different_callbacks_stay_in_step():
    res = _mpiexec(2, [str(WORKER), "callbacks-differ"], timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "stopped at [(27, 'rank 1 stopped at epoch 2'), (27, 'rank 1 stopped at epoch 2')]" in res.stdout


@needs_mpi
@pytest.mark.parametrize("what,says", [("lr", "the ranks' learning rates differ: rank 0 0.1, rank 1 "),
                                       ("weights", "the ranks' weights differ at the end of the run")])
def test_a_callback_that_changes_one_rank_only_is_caught(what, says):
    res = _mpiexec(2, [str(WORKER), f"one-rank-changes-{what}"], timeout=120)
    assert res.returncode != 0 and says in res.stderr, res.stderr[-2000:]


def test_the_size_of_a_slurm_pmix_job_comes_from_slurm(monkeypatch):
    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS",
                "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PMIX_RANK", "0")
    assert launched_size() == 1                 # a rank alone: one process (MPI is not started to ask)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "8")
    assert launched_size() == 8


@needs_mpi
def test_a_run_resumed_mid_epoch_equals_the_uninterrupted_run_on_every_rank(tmp_path):
    res = _mpiexec(2, [str(WORKER), "resume-exact", str(tmp_path / "ckpt")], timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed equals uninterrupted on every rank: [True, True]" in res.stdout


@needs_mpi
def test_mpiexec_deepnet_train_checkpoints_resumes_and_refuses_another_rank_count(tmp_path):
    out = tmp_path / "run"
    base = ["-m", "deepnet", "train", "--epochs", "2", "--out", str(out), "--checkpoint-every", "20",
            "--batch-size", "16"]
    first = _mpiexec(2, base, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "data-parallel: MPI" in first.stdout and "2 ranks" in first.stdout
    assert first.stdout.count("epoch 1/2") == 1                      # only rank 0 reports
    more = _mpiexec(2, [*base[:3], "--epochs", "3", "--out", str(out), "--resume"], cwd=tmp_path)
    assert more.returncode == 0, more.stderr[-3000:]
    straight = tmp_path / "straight"
    whole = _mpiexec(2, [*base[:3], "--epochs", "3", "--out", str(straight), "--batch-size", "16"], cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    a, b = np.load(out / "model.npz"), np.load(straight / "model.npz")
    for k in a.files:
        if k.startswith("param"):
            assert np.array_equal(a[k], b[k]), k            # resumed = uninterrupted, bit for bit
    settings = np.load(sorted((out / "checkpoints").glob("ckpt-*.npz"))[-1])
    assert settings is not None
    other = _mpiexec(3, [*base[:3], "--epochs", "4", "--out", str(out), "--resume"], cwd=tmp_path)
    assert other.returncode != 0
    assert "it was trained on 2 processes (ranks) and this run has 3" in other.stderr
    alone = subprocess.run([sys.executable, "-m", "deepnet", "train", "--epochs", "4", "--out", str(out), "--resume"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert alone.returncode != 0 and "it was trained on 2 processes (ranks) and this run has 1" in alone.stderr


@needs_mpi
def test_nproc_starts_the_processes_itself(tmp_path):
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "deepnet", "train", "--nproc", "2", "--epochs", "1", "--out", str(out)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=240,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "data-parallel: MPI" in res.stdout and (out / "model.npz").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data_parallel"]["ranks"] == 2 and summary["data_parallel"]["sync_batchnorm"] is False


def _threads_of_the_run(res: subprocess.CompletedProcess, out: Path) -> tuple[str, dict]:
    assert res.returncode == 0, res.stderr[-3000:]
    header = [line for line in res.stdout.splitlines() if line.startswith("threads: ")]
    assert len(header) == 1, res.stdout[:2000]
    return header[0], json.loads((out / "summary.json").read_text())["data_parallel"]


def _pools(threads: int) -> list[dict]:
    """What each of 2 ranks' thread pools should run (BLAS: known with threadpoolctl)."""
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return [{"blas": None, "numba": threads}] * 2
    return [{"blas": threads, "numba": threads}] * 2


needs_2_cores = pytest.mark.skipif(available_cores() < 2, reason="a shared pool and a full one differ only on 2+ cores")


@needs_mpi
@needs_2_cores
@pytest.mark.parametrize("how", ["--nproc", "mpiexec"])
def test_each_of_2_ranks_gets_half_the_cores_by_default(tmp_path, how):
    """``deepnet train --nproc 2`` (the ranks' variables) and ``mpiexec -n 2 deepnet train``
    (sized at run time): each rank's BLAS and numba pools run cores // 2 threads, and the
    header says so and why."""
    out, share, cores = tmp_path / "run", available_cores() // 2, available_cores()
    args = ["-m", "deepnet", "train", "--epochs", "1", "--out", str(out)]
    res = _mpiexec(1, [*args, "--nproc", "2"], cwd=tmp_path, threads={}) if how == "--nproc" else \
        _mpiexec(2, args, cwd=tmp_path, threads={})
    header, summary = _threads_of_the_run(res, out)
    assert header == (f"threads: {share} per rank ({cores} cores / 2 ranks on this machine (MPI_LOCALNRANKS); "
                      "--threads N to change)")
    assert summary["threads_per_rank"] == share and summary["thread_pools"] == _pools(share)


@needs_mpi
@needs_2_cores
@pytest.mark.parametrize("how,threads,says", [
    (["--nproc", "2"], {"OMP_NUM_THREADS": "2"}, "threads: 2 per rank (OMP_NUM_THREADS=2 in the environment)"),
    (["--nproc", "2", "--threads", "2"], {"OMP_NUM_THREADS": "1"}, "threads: 2 per rank (--threads 2)"),
    (["--threads", "2"], {}, "threads: 2 per rank (--threads 2)")])            # under mpiexec
def test_an_explicit_thread_count_wins_over_the_share(tmp_path, how, threads, says):
    out = tmp_path / "run"
    args = ["-m", "deepnet", "train", "--epochs", "1", "--out", str(out), *how]
    res = _mpiexec(1 if "--nproc" in how else 2, args, cwd=tmp_path, threads=threads)
    header, summary = _threads_of_the_run(res, out)
    assert header == says
    assert summary["threads_per_rank"] == 2 and summary["thread_pools"] == _pools(2)


def test_sync_batchnorm_needs_several_processes_and_batchnorm(tmp_path, capsys):
    from deepnet.cli import main
    assert main(["train", "--sync-batchnorm", "--batchnorm", "--out", str(tmp_path / "r")]) == 1
    assert "--sync-batchnorm synchronizes BatchNorm across the processes" in capsys.readouterr().err
    # as if mpiexec had started 2 (the error comes before any MPI call; the job is then aborted)
    res = subprocess.run([sys.executable, "-m", "deepnet", "train", "--sync-batchnorm", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "PMI_SIZE": "2", "PMI_RANK": "0", "PYTHONPATH": str(ROOT)})
    assert res.returncode != 0 and "this network has none (add --batchnorm)" in res.stderr


def _gpus() -> tuple[int, str]:
    """(CUDA GPUs here, why none when 0)."""
    try:
        import cupy
        return int(cupy.cuda.runtime.getDeviceCount()), ""
    except Exception as err:        # no CuPy, no driver
        return 0, f"{type(err).__name__}: {err}"


@needs_mpi
@pytest.mark.cupy
@pytest.mark.parametrize("scenario,gpus", [("nccl", 2), ("mpi-cupy", 1)])
def test_on_gpus_two_ranks_equal_one_process(scenario, gpus, tmp_path):
    """NCCL with a GPU per rank (needs 2); MPI with CuPy arrays, both ranks on one GPU (needs 1).
    The worker checks itself: rank 0 trains the one-process run too and compares."""
    have, why = _gpus()
    if have < gpus:
        pytest.skip(f"{scenario} needs {gpus} GPU{'s' if gpus > 1 else ''}; this machine has {have} {why}".strip())
    res = _mpiexec(2, [str(WORKER), scenario, str(tmp_path)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "max weight difference" in res.stdout


@needs_mpi
def test_the_nccl_code_path_on_the_cupy_shaped_backend():
    """NCCLCommunicator with a stand-in for cupy.cuda.nccl (its signatures, reducing over MPI):
    2 ranks equal one process with the global batch; the reductions go on a side stream."""
    pytest.importorskip("cupy")
    res = _mpiexec(2, [str(WORKER), "nccl-shaped"], timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "max weight difference" in res.stdout and "calls on a side stream: ['allReduce', 'bcast']" in res.stdout


def test_batchnorm_is_recorded_in_checkpoints_only_when_given(tmp_path, capsys):
    """Checkpoints written before --batchnorm existed lack it, and still resume; giving it to
    such a run is refused before anything is loaded."""
    from deepnet.checkpoint import Checkpointer
    from deepnet.cli import main
    for flags, recorded in (([], False), (["--batchnorm"], True)):
        out = tmp_path / f"run{len(flags)}"
        assert main(["train", "--epochs", "1", "--out", str(out), "--checkpoint-every", "50", "--quiet", *flags]) == 0
        settings = Checkpointer(out / "checkpoints").read_state()["settings"]
        assert ("--batchnorm" in settings) is recorded
        assert main(["train", "--epochs", "2", "--out", str(out), "--resume", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "--epochs", "3", "--out", str(tmp_path / "run0"), "--resume", "--batchnorm"]) == 1
    assert "--batchnorm: checkpoint False, given True" in capsys.readouterr().err


def test_nproc_and_its_abbreviations_are_not_passed_to_the_processes():
    from deepnet.cli.processes import _without_nproc
    for argv in (["train", "--nproc", "2", "--epochs", "1"], ["train", "--npr", "2", "--epochs", "1"],
                 ["train", "--nproc=2", "--epochs", "1"], ["train", "--np=2", "--epochs", "1"]):
        assert _without_nproc(argv) == ["train", "--epochs", "1"], argv


@needs_mpi
def test_resume_takes_sync_batchnorm_from_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    base = ["-m", "deepnet", "train", "--out", str(out), "--batchnorm", "--quiet"]
    first = _mpiexec(2, [*base, "--epochs", "1", "--checkpoint-every", "30", "--sync-batchnorm"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    again = _mpiexec(2, [*base, "--epochs", "2", "--resume"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data_parallel"]["sync_batchnorm"] is True
    other = _mpiexec(2, [*base, "--epochs", "3", "--resume", "--sync-batchnorm"], cwd=tmp_path)
    assert other.returncode == 0, other.stderr[-3000:]


@pytest.mark.parametrize("shape,features", [((6, 5), 5), ((3, 2, 4, 4), 2)], ids=["rows", "images"])
def test_synchronized_batchnorm_passes_the_gradient_check_on_every_backend(backend, shape, features):
    """BatchNorm's synchronized forward and backward (global sums through the communicator;
    one process here) against finite differences, and equal to the unsynchronized layer."""
    from deepnet.gradcheck import check_layer
    x = np.random.default_rng(3).normal(size=shape)
    synced = BatchNorm(features, momentum=0.8)
    synced.set_sync(LocalCommunicator().bind(backend))
    check_layer(synced, x)
    alone = BatchNorm(features, momentum=0.8)
    for layer in (synced, alone):
        layer.to(backend, "float64")
        if not layer.initialized:
            layer.initialize(np.random.default_rng(0))
            layer.initialized = True
    xd = backend.from_host(x)
    a, b = synced.forward(xd, True), alone.forward(xd, True)
    np.testing.assert_allclose(backend.to_host(a), backend.to_host(b), rtol=1e-12, atol=1e-12)
    dy = backend.from_host(np.random.default_rng(4).normal(size=shape))
    ga, gb = synced.backward(backend.copy(dy)), alone.backward(backend.copy(dy))
    np.testing.assert_allclose(backend.to_host(ga), backend.to_host(gb), rtol=1e-10, atol=1e-12)
    assert synced.sync is not None and alone.sync is None
