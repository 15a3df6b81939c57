"""Ctrl-C (SIGINT) and SIGTERM during training: the step finishes, a checkpoint is written
there, one line says where and how to resume, and the resumed run ends bit for bit where an
uninterrupted one does."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import deepnet as dn
from deepnet.checkpoint import Checkpointer
from deepnet.io import load_model, read_tensors

ROOT = Path(__file__).resolve().parents[1]


def _data(n=90):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    return X, np.argmax(X[:, :3], axis=1)


def _net():
    return dn.Network([dn.Dense(6, 16), dn.ReLU(), dn.Dropout(0.2), dn.Dense(16, 3)], seed=4,
                      loss="xent", optimizer=dn.Adam(1e-2))


class SignalAt(dn.Callback):
    """Sends ``sig`` to this process at the end of global step ``step`` (once)."""

    def __init__(self, sig, step):
        self.sig, self.step, self.sent = sig, step, 0

    def wants_batch_hooks(self):
        return True

    def on_batch_end(self, net, step, logs):
        if step == self.step and not self.sent:
            self.sent += 1
            os.kill(os.getpid(), self.sig)


def _assert_same_weights(net, ref) -> None:
    """Bit for bit: a resumed run equals the uninterrupted one."""
    want = ref.get_weights()
    got = net.get_weights()
    assert got.keys() == want.keys()
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_fit_stops_after_the_step_writes_a_checkpoint_and_resumes_bit_identically(tmp_path, sig, code):
    X, y = _data()                      # 90 rows, batch 8: 12 steps an epoch
    ref = _net()
    ref.fit(X, y, epochs=3, batch_size=8)
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    net = _net()
    with pytest.raises(dn.TrainingInterrupted) as info:
        net.fit(X, y, epochs=3, batch_size=8, checkpoint=Checkpointer(tmp_path), callbacks=[SignalAt(sig, 17)])
    err = info.value
    assert isinstance(err, KeyboardInterrupt)        # a script stops as after any Ctrl-C
    assert (err.signal_name, err.exit_code, err.epoch, err.batch, err.n_batches, err.step) == \
        (sig.name, code, 2, 5, 12, 17)
    assert str(err).startswith(f"fit: interrupted ({sig.name}) at epoch 2, step 5 of 12; checkpoint written to ")
    assert err.checkpoint == str(tmp_path / "ckpt-e0001-s00000017.npz")
    _, header = read_tensors(err.checkpoint, expect_format="deepnet-checkpoint")
    assert (header["epoch"], header["next_batch"], header["finished"]) == (1, 5, None)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    resumed = _net()
    resumed.fit(X, y, epochs=3, batch_size=8, checkpoint=Checkpointer(tmp_path), resume=True)
    _assert_same_weights(resumed, ref)


def test_fit_without_a_checkpointer_says_none_was_written(tmp_path):
    X, y = _data()
    with pytest.raises(dn.TrainingInterrupted, match=r"at epoch 1, step 3 of 12; no checkpoint written"):
        _net().fit(X, y, epochs=2, batch_size=8, callbacks=[SignalAt(signal.SIGINT, 3)])


def test_an_interrupt_at_an_epoch_end_writes_that_epochs_checkpoint(tmp_path):
    X, y = _data()
    ref = _net()
    ref.fit(X, y, epochs=3, batch_size=8)
    net = _net()
    with pytest.raises(dn.TrainingInterrupted, match=r"at the end of epoch 1; checkpoint written to .*ckpt-e0001"):
        net.fit(X, y, epochs=3, batch_size=8, checkpoint=Checkpointer(tmp_path), callbacks=[SignalAt(signal.SIGTERM, 12)])
    net = _net()
    net.fit(X, y, epochs=3, batch_size=8, checkpoint=Checkpointer(tmp_path), resume=True)
    _assert_same_weights(net, ref)


def test_an_interrupt_only_checkpointer_writes_nothing_unless_interrupted(tmp_path):
    X, y = _data()
    _net().fit(X, y, epochs=2, batch_size=8, checkpoint=Checkpointer(tmp_path / "a", interrupt_only=True))
    assert not (tmp_path / "a").exists()
    ckpt = Checkpointer(tmp_path / "b", interrupt_only=True)
    with pytest.raises(dn.TrainingInterrupted):
        _net().fit(X, y, epochs=2, batch_size=8, checkpoint=ckpt, callbacks=[SignalAt(signal.SIGINT, 7)])
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["ckpt-e0000-s00000007.npz"]


class SecondSignal(dn.Callback):
    """SIGINT at step 2, and again while its checkpoint is being written."""

    def wants_batch_hooks(self):
        return True

    def on_batch_end(self, net, step, logs):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)


def test_a_second_ctrl_c_aborts_at_once_and_leaves_no_half_written_file(tmp_path, monkeypatch):
    X, y = _data()
    ckpt = Checkpointer(tmp_path, every_steps=1)
    from deepnet import checkpoint as module
    from deepnet.model_files import atomic_write
    real = module.write_tensors
    calls = []

    def interrupted_write(path, tensors, header):
        calls.append(path.name)
        if len(calls) == 3:          # the stop point's file: a second Ctrl-C arrives while it is written
            def write(fh):
                fh.write(b"half a file")
                os.kill(os.getpid(), signal.SIGINT)
            atomic_write(path, write)
        return real(path, tensors, header)

    monkeypatch.setattr(module, "write_tensors", interrupted_write)
    with pytest.raises(dn.TrainingInterrupted, match="interrupted again") as info:
        _net().fit(X, y, epochs=2, batch_size=8, checkpoint=ckpt, callbacks=[SecondSignal()])
    assert info.value.aborted and info.value.checkpoint is None
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not list(tmp_path.glob(".*.tmp"))
    for p in tmp_path.glob("ckpt-*.npz"):       # every file there is whole
        read_tensors(p, expect_format="deepnet-checkpoint")


def test_handlers_are_left_alone_outside_the_main_thread_and_where_the_program_set_its_own():
    X, y = _data()
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    try:
        _net().fit(X, y, epochs=1, batch_size=8, callbacks=[SignalAt(signal.SIGTERM, 3)])
        assert seen == [signal.SIGTERM]          # the program's handler ran; training went on
    finally:
        signal.signal(signal.SIGTERM, previous)
    errors = []
    worker = threading.Thread(target=lambda: errors.append(_net().fit(X, y, epochs=1, batch_size=8)))
    worker.start()
    worker.join()
    assert len(errors) == 1 and isinstance(errors[0], dn.History)


def _deepnet(*args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "deepnet.cli", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _finish(*args):
    proc = _deepnet(*args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return out, err


def _weights(path):
    return load_model(path).get_weights()


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_deepnet_train_stopped_by_a_signal_checkpoints_and_resumes_bit_identically(tmp_path, sig, code):
    """The user's path: `deepnet train` without --checkpoint-every, stopped in its second epoch
    or later by Ctrl-C or a scheduler's SIGTERM, then `--resume`; the model is the one an
    uninterrupted run of as many epochs gives."""
    out = tmp_path / "run"
    common = ["--batch-size", "4", "--seed", "3", "--dropout", "0.1"]
    proc = _deepnet("train", "--out", out, "--epochs", "500", *common)
    for line in proc.stdout:                      # the first epoch is done: the run is in its second
        if line.startswith("epoch 1/500"):
            break
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    last = err.strip().splitlines()[-1]
    m = re.fullmatch(rf"deepnet: interrupted \({sig.name}\) (?:at epoch (\d+), step (\d+) of \d+|at the end of "
                     rf"epoch (\d+)); checkpoint written to (\S+); resume with: deepnet train --out {re.escape(str(out))}"
                     r" --resume", last)
    assert m, last
    epoch = int(m[1] or m[3])
    ckpt = Path(m[4])
    assert ckpt.parent == out / "checkpoints" and ckpt.is_file() and not (out / "model.npz").exists()
    _, header = read_tensors(ckpt, expect_format="deepnet-checkpoint")
    assert header["next_batch"] == (int(m[2]) if m[2] else 0)
    assert epoch >= 2
    # a new run with checkpoints in the same --out is refused, saying how to go on
    proc = _deepnet("train", "--out", out, "--epochs", "1", "--checkpoint-every", "50")
    _, refusal = proc.communicate(timeout=120)
    assert proc.returncode == 1 and f"resume it with: deepnet train --out {out} --resume" in refusal
    resumed, _ = _finish("train", "--out", out, "--resume", "--epochs", epoch + 1)
    where = f"at epoch {epoch}, step {m[2]}" if m[2] else f"at the start of epoch {epoch + 1}"
    assert f"resuming from {ckpt} {where}\n" in resumed
    _finish("train", "--out", tmp_path / "ref", "--epochs", epoch + 1, *common)
    ref, got = _weights(tmp_path / "ref" / "model.npz"), _weights(out / "model.npz")
    assert sorted(ref) == sorted(got)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])          # bit for bit


def test_a_new_run_without_checkpoints_leaves_an_earlier_runs_checkpoints_alone(tmp_path, capsys):
    from deepnet.cli import main
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--epochs", "1", "--checkpoint-every", "20", "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()}
    assert main(["train", "--out", str(out), "--epochs", "1", "--seed", "1", "--quiet"]) == 0
    assert {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()} == before


class SignalInStep(dn.Layer):
    """Identity that sends SIGINT during the forward pass of its ``at``-th training step: the
    signal lands inside a step (of the captured step too, whose Python runs at each NumPy replay)."""

    count = {"at": 0, "steps": 0}     # outside the layer's state (a captured step must not replace it)

    def forward(self, x, training=False):
        if training:
            self.count["steps"] += 1
            if self.count["steps"] == self.count["at"]:
                os.kill(os.getpid(), signal.SIGINT)
        self._cache = True
        return x

    def backward(self, grad_output, need_input_grad=True):
        return grad_output


def _graph_net(at):
    net = dn.Network([dn.Dense(6, 16), dn.ReLU(), SignalInStep(), dn.Dense(16, 3)], seed=4,
                     loss="xent", optimizer=dn.Adam(1e-2))
    SignalInStep.count.update(at=at, steps=0)
    return net


@pytest.mark.parametrize("graphs, stop", [("off", (2, 5)), ("on", (2, 5)), ("epoch", (2, 12))])
def test_the_captured_step_stops_between_steps_or_at_the_end_of_an_epoch_graph(tmp_path, graphs, stop):
    X, y = _data()                      # 12 steps an epoch: 11 full batches and a short one
    ref = _graph_net(0)
    ref.fit(X, y, epochs=3, batch_size=8, graphs=graphs)
    net = _graph_net(17)
    with pytest.raises(dn.TrainingInterrupted) as info:
        net.fit(X, y, epochs=3, batch_size=8, graphs=graphs, checkpoint=Checkpointer(tmp_path))
    assert (info.value.epoch, info.value.batch) == stop
    again = _graph_net(0)
    again.fit(X, y, epochs=3, batch_size=8, graphs=graphs, checkpoint=Checkpointer(tmp_path), resume=True)
    _assert_same_weights(again, ref)


def test_a_signal_after_the_last_step_lets_the_run_finish_then_acts_as_usual(tmp_path):
    X, y = _data()
    net = _net()
    with pytest.raises(KeyboardInterrupt) as info:
        net.fit(X, y, epochs=2, batch_size=8, checkpoint=Checkpointer(tmp_path), callbacks=[SignalAt(signal.SIGINT, 24)])
    assert not isinstance(info.value, dn.TrainingInterrupted)       # Python's own, once fit is over
    assert net.step_count == 24 and Checkpointer(tmp_path).read_state()["epochs_done"] == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _mpi_missing():
    from deepnet.distributed.launch import find_mpiexec
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "needs mpi4py (pip install deepnet[mpi])"
    return None if find_mpiexec() is not None else "no mpiexec found (pip install mpich)"


@pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))
def test_ctrl_c_in_a_data_parallel_run_stops_every_rank_at_the_same_step_and_resumes_bit_identically(tmp_path):
    """`deepnet train --nproc 2`, Ctrl-C from the terminal (SIGINT to the whole process group:
    the launcher, mpiexec and both ranks): rank 0 checkpoints the step every rank stopped at."""
    out = tmp_path / "run"
    common = ["--nproc", "2", "--batch-size", "4", "--seed", "3"]
    proc = _deepnet("train", "--out", out, "--epochs", "500", *common, start_new_session=True)
    for line in proc.stdout:
        if line.startswith("epoch 1/500"):
            break
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 130, err
    m = re.search(r"deepnet: interrupted \(SIGINT\) (?:at epoch (\d+), step (\d+) of \d+|at the end of epoch (\d+)); "
                  r"checkpoint written to (\S+); resume with: deepnet train --out (\S+) --resume\n", err)
    assert m and m[5] == str(out), err
    assert err.count("deepnet: interrupted") == 1                 # rank 0 says it, once
    epoch = int(m[1] or m[3])
    _finish("train", "--out", out, "--resume", "--epochs", epoch + 1, "--nproc", "2")
    _finish("train", "--out", tmp_path / "ref", "--epochs", epoch + 1, *common)
    ref, got = _weights(tmp_path / "ref" / "model.npz"), _weights(out / "model.npz")
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])


def _rank_pid(marker: str, rank: int) -> int | None:
    """The process id of rank ``rank`` of the deepnet run whose command line holds ``marker``."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"deepnet.cli" in cmd and marker.encode() in cmd and f"PMI_RANK={rank}".encode() in env:
            return int(pid)
    return None


@pytest.mark.skipif(_mpi_missing() is not None or not Path("/proc/self/environ").exists(),
                    reason=str(_mpi_missing() or "needs Linux /proc to find a rank's process"))
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step():
    """A scheduler may signal one process only: the other rank stops after the same step and
    rank 0 writes the checkpoint and says so (with the signal rank 1 received)."""
    import tempfile
    from deepnet.distributed.launch import find_mpiexec
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "one-rank-signalled"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen([find_mpiexec(), "-n", "2", sys.executable, "-m", "deepnet.cli", "train", "--out",
                                 str(out), "--epochs", "500", "--batch-size", "4"], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for line in proc.stdout:
            if line.startswith("epoch 1/500"):
                break
        pid = _rank_pid(str(out), 1)
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert proc.returncode == 143, err
        m = re.search(r"deepnet: interrupted \(SIGTERM\) .*; checkpoint written to (\S+); resume with", err)
        assert m and Path(m[1]).is_file(), err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a named pipe (POSIX)")
def test_sigterm_before_training_ends_with_a_line_and_143(tmp_path):
    """SIGTERM while `deepnet train` reads its data (here a pipe nobody writes into): one line, 143."""
    fifo = tmp_path / "rows.csv"
    os.mkfifo(fifo)
    proc = _deepnet("train", "--dataset", "csv", "--data", fifo, "--out", tmp_path / "run")
    fd = os.open(fifo, os.O_WRONLY)          # returns once the command opened the pipe to read it
    try:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(fd)
    assert proc.returncode == 143 and err.strip().splitlines()[-1] == "deepnet: terminated (SIGTERM)", err


class _SlowClock:
    """``time`` for the trainer: each reading is 10 s after the previous one, so an epoch's
    printed time is long enough for its samples/s to be checked against the rows it trained."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 10.0
        return self.now


def _epoch_rates(text):
    """(seconds, samples/s) of each epoch line ``deepnet train`` printed."""
    return [(float(t), float(r.replace(",", ""))) for t, r in re.findall(r"\((\d+\.\d)s, ([\d,]+) samples/s\)", text)]


def _ctrl_c_after_step(monkeypatch, at):
    """SIGINT to this process right after the trainer's ``at``-th step (``deepnet train`` in-process)."""
    from deepnet.training import steps

    real_step, calls = steps.train_step, {"n": 0}

    def step_then_ctrl_c(*args, **kwargs):
        result = real_step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == at:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(steps, "train_step", step_then_ctrl_c)


def test_the_epoch_line_counts_only_the_rows_trained_in_an_interrupted_or_resumed_epoch(tmp_path, monkeypatch,
                                                                                        capsys):
    """Ctrl-C at step 9 of 43 (the digits' 1,348 training rows, batch 32): the interrupted
    epoch's line counts its 9 × 32 rows, not 1,348; the resumed one the 1,060 rows left."""
    from deepnet import cli
    from deepnet.training import trainer

    monkeypatch.setattr(trainer, "time", _SlowClock())
    _ctrl_c_after_step(monkeypatch, 9)
    out = tmp_path / "run"
    assert cli.main(["train", "--out", str(out), "--graphs", "off", "--epochs", "2", "--val-fraction", "0"]) == 130
    (seconds, rate), = _epoch_rates(capsys.readouterr().out)
    assert rate * seconds == pytest.approx(9 * 32, rel=0.01)
    assert cli.main(["train", "--out", str(out), "--resume"]) == 0
    (seconds, rate), second = _epoch_rates(capsys.readouterr().out)
    assert rate * seconds == pytest.approx(1348 - 9 * 32, rel=0.01)
    assert second[0] * second[1] == pytest.approx(1348, rel=0.01)


def test_resuming_a_run_stopped_at_an_epoch_end_with_those_epochs_names_the_checkpoint_not_a_missing_model(
        tmp_path, monkeypatch, capsys):
    """Ctrl-C at the end of epoch 1 of 3, then ``--resume --epochs 1``: nothing is left to train,
    and no model file was written: the line names the checkpoint that holds the weights."""
    from deepnet import cli

    _ctrl_c_after_step(monkeypatch, 43)          # the digits' 1,348 training rows, batch 32: 43 steps an epoch
    out = tmp_path / "run"
    assert cli.main(["train", "--out", str(out), "--graphs", "off", "--epochs", "3", "--val-fraction", "0", "--quiet"]) == 130
    capsys.readouterr()
    assert cli.main(["train", "--out", str(out), "--resume", "--epochs", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert not (out / "model.npz").exists()
    assert "model.npz" not in printed
    named = re.search(r"(\S+ckpt-e0001-s00000043\.npz)", printed)
    assert named and Path(named.group(1)).is_file(), printed


def test_a_new_run_where_ctrl_c_left_a_checkpoint_says_it_starts_afresh_and_how_to_resume(tmp_path, monkeypatch,
                                                                                        capsys):
    """Ctrl-C leaves a checkpoint in --out; running the same command again (without --resume)
    trains from scratch: it says so at once, and how to continue the stopped run instead."""
    from deepnet import cli

    _ctrl_c_after_step(monkeypatch, 9)
    out = tmp_path / "run"
    assert cli.main(["train", "--out", str(out), "--graphs", "off", "--epochs", "2", "--quiet"]) == 130
    capsys.readouterr()
    monkeypatch.undo()
    assert cli.main(["train", "--out", str(out), "--epochs", "2", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "ckpt-e0000-s00000009.npz" in err and f"deepnet train --out {out} --resume" in err, err


def _job_pids(marker: str) -> list[int]:
    """Process ids of mpiexec and the ranks of the run whose command line holds ``marker``."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmd and (b"deepnet" in cmd or b"mpiexec" in cmd) and int(pid) != os.getpid():
            pids.append(int(pid))
    return pids


@pytest.mark.skipif(_mpi_missing() is not None or not Path("/proc/self/cmdline").exists(),
                    reason=str(_mpi_missing() or "needs Linux /proc to find the job's processes"))
def test_a_hangup_of_the_nproc_launcher_stops_the_ranks_at_a_checkpoint(tmp_path):
    """`deepnet train --nproc 2` in a terminal that closes (SIGHUP to the launcher, whose
    mpiexec runs in a session of its own): the ranks stop at a checkpoint, as on SIGTERM,
    instead of training on with no one to see them."""
    out = tmp_path / "hangup-run"
    proc = _deepnet("train", "--out", out, "--epochs", "500", "--nproc", "2", "--batch-size", "4",
                    start_new_session=True)
    try:
        for line in proc.stdout:
            if line.startswith("epoch 1/500"):
                break
        os.kill(proc.pid, signal.SIGHUP)
        proc.wait(timeout=120)
        for _ in range(50):                 # the ranks' last writes, after the launcher returned
            if not _job_pids(str(out)):
                break
            time.sleep(0.2)
        assert not _job_pids(str(out)), f"still running after the launcher's hangup: {_job_pids(str(out))}"
        _, err = proc.communicate(timeout=60)
        m = re.search(r"deepnet: interrupted \(SIGTERM\) .*; checkpoint written to (\S+); resume with", err)
        assert m and Path(m[1]).is_file(), (proc.returncode, err)
    finally:
        for pid in _job_pids(str(out)):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
