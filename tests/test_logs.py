"""Training logs: the CSV file (read with csv) and TensorBoard's event files (read with
TensorBoard's own EventAccumulator), from fit and from deepnet train --log-dir, resumed runs included."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest

import deepnet as dn
from deepnet.checkpoint import Checkpointer
from deepnet.diagnostics import GradientFlow
from deepnet.logs import CSV_COLUMNS, CSVLogger, TensorBoardLogger, log_callbacks


def read_csv(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    return [dict(zip(rows[0], r)) for r in rows[1:]]


def events(folder):
    """TensorBoard's reader on a run folder: {tag: [(step, value)]} and the histogram tags."""
    ea_module = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                    reason="reading the event files needs tensorboard (deepnet[test])")
    ea = ea_module.EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    ea.Reload()
    tags = ea.Tags()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in tags["scalars"]}, tags["histograms"]


def needs_tensorboardx():
    pytest.importorskip("tensorboardX", reason="TensorBoard logs need tensorboardX (pip install 'deepnet[logs]')")


def data(rng, n=200):
    return rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n)


def make():
    return dn.Network([dn.Dense(4, 16), dn.ReLU(), dn.Dropout(0.3), dn.Dense(16, 3)], seed=1, loss="xent",
                      optimizer=dn.Adam(0.01))


# ---------------------------------------------------------------------------- CSV
def test_csv_logger_writes_keras_columns_each_epoch(tmp_path, rng):
    X, y = data(rng)
    seen = []

    class ReadBack(dn.Callback):          # the row is on disk when the epoch ends, not only at the run's end
        def on_epoch_end(self, net, epoch, logs):
            seen.append(len(read_csv(tmp_path / "log.csv")))

    hist = make().fit(X, y, epochs=3, batch_size=20, validation_data=(X[:50], y[:50]),
                      callbacks=[CSVLogger(tmp_path / "log.csv"), ReadBack()])
    rows = read_csv(tmp_path / "log.csv")
    assert seen == [1, 2, 3]
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "time"):
        np.testing.assert_allclose([float(r[key]) for r in rows], hist.history[key], rtol=1e-12)


def test_csv_logger_without_validation_writes_na(tmp_path, rng):
    X, y = data(rng)
    make().fit(X, y, epochs=1, batch_size=20, callbacks=[CSVLogger(tmp_path / "log.csv")])
    row = read_csv(tmp_path / "log.csv")[0]
    assert row["val_loss"] == "NA" and row["val_accuracy"] == "NA" and float(row["lr"]) == 0.01


def test_csv_logger_never_replaces_a_file_unasked(tmp_path, rng):
    X, y = data(rng)
    path = tmp_path / "log.csv"
    path.write_text("my notes\n")
    with pytest.raises(FileExistsError, match="append=True"):
        make().fit(X, y, epochs=1, batch_size=20, callbacks=[CSVLogger(path)])
    assert path.read_text() == "my notes\n"
    path.unlink()
    logger = CSVLogger(path)
    net = make()
    net.fit(X, y, epochs=1, batch_size=20, callbacks=[logger])
    net.fit(X, y, epochs=1, batch_size=20, callbacks=[logger])        # the same logger continues its own file
    make().fit(X, y, epochs=2, batch_size=20, callbacks=[CSVLogger(path, append=True)])
    assert [r["epoch"] for r in read_csv(path)] == ["0", "0", "0", "1"]


# ---------------------------------------------------------------------------- TensorBoard
def test_tensorboard_scalars_lr_histograms_and_gradient_flow(tmp_path, rng):
    needs_tensorboardx()
    X, y = data(rng)
    net = make()
    net.diagnostics = GradientFlow()
    hist = net.fit(X, y, epochs=2, batch_size=20, validation_data=(X[:50], y[:50]),
                   callbacks=[TensorBoardLogger(tmp_path, every_n_steps=3)])
    scalars, histograms = events(tmp_path)
    assert [s for s, _ in scalars["loss/train"]] == [10, 20]        # at the run's step
    for tag, key in (("loss/train", "loss"), ("accuracy/validation", "val_accuracy"), ("lr", "lr")):
        np.testing.assert_allclose([v for _, v in scalars[tag]], hist.history[key], rtol=1e-6)
    assert [v for _, v in scalars["epoch"]] == [1, 2]
    assert [s for s, _ in scalars["loss/batch"]] == [3, 6, 9, 12, 15, 18]
    assert [v for _, v in scalars["lr/batch"]] == pytest.approx([0.01] * 6)
    for name in ("0.weight", "0.bias", "3.weight", "3.bias"):
        assert f"weights/{name}" in histograms and f"gradients/{name}" in histograms
    flow = net.diagnostics.records()
    np.testing.assert_allclose([v for _, v in scalars["gradient_flow/grad/0.weight"]],
                               [epoch[0] for epoch in flow["grad_norm"]], rtol=1e-6)
    assert any(t.startswith("gradient_flow/error/") for t in scalars)


def test_tensorboard_logger_refuses_bad_every_n_steps():
    needs_tensorboardx()
    with pytest.raises(ValueError, match="every_n_steps"):
        TensorBoardLogger("unused", every_n_steps=0)


@pytest.mark.parametrize("crash", [False, True])
def test_resumed_run_continues_both_logs_without_duplicate_steps(tmp_path, rng, crash):
    """Stopped at step 27 (epoch 2; checkpoints every 5 steps and at the stop), resumed: each step is
    in the logs once, with the values of an uninterrupted run.  ``crash``: the stop's checkpoint is
    lost (as after a power cut), so the run resumes from step 25 and trains steps 26-27 again."""
    needs_tensorboardx()
    X, y = data(rng)
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    make().fit(X, y, epochs=3, batch_size=10, callbacks=log_callbacks(ref_dir, every_n_steps=1))

    class StopAt(dn.Callback):
        def on_batch_end(self, net, step, logs):
            if step == 27:
                net.stop_training = True

    make().fit(X, y, epochs=3, batch_size=10, callbacks=log_callbacks(run_dir, every_n_steps=1) + [StopAt()],
               checkpoint=Checkpointer(tmp_path / "ckpt", every_steps=5))
    assert [r["epoch"] for r in read_csv(run_dir / "log.csv")] == ["0", "1"]      # epoch 1 stopped early
    if crash:
        Checkpointer(tmp_path / "ckpt").last_path().unlink()
        assert Checkpointer(tmp_path / "ckpt").read_state()["next_batch"] == 5
    make().fit(X, y, epochs=3, batch_size=10, callbacks=log_callbacks(run_dir, every_n_steps=1),
               checkpoint=Checkpointer(tmp_path / "ckpt", every_steps=5), resume=True)
    rows, ref_rows = read_csv(run_dir / "log.csv"), read_csv(ref_dir / "log.csv")
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    for key in ("loss", "accuracy"):       # (the resumed epoch's totals carried: float32 rounding)
        np.testing.assert_allclose([float(r[key]) for r in rows], [float(r[key]) for r in ref_rows], rtol=1e-6)
    scalars, _ = events(run_dir)
    ref, _ = events(ref_dir)
    assert [s for s, _ in scalars["loss/batch"]] == list(range(1, 61))
    np.testing.assert_allclose([v for _, v in scalars["loss/batch"]], [v for _, v in ref["loss/batch"]], rtol=1e-6)
    # every epoch's values at its end, as in the uninterrupted run; the epoch cut short at step 27
    # keeps its point there (what it had trained when it stopped)
    train = dict(scalars["loss/train"])
    assert sorted(train) == ([20, 40, 60] if crash else [20, 27, 40, 60]) and len(train) == len(scalars["loss/train"])
    np.testing.assert_allclose([train[s] for s in (20, 40, 60)], [v for _, v in ref["loss/train"]], rtol=1e-6)
    assert [e for _, e in scalars["epoch"]] == ([1, 2, 3] if crash else [1, 2, 2, 3])


@pytest.mark.parametrize("append", [False, True])
def test_a_run_resumed_inside_its_first_epoch_continues_the_csv_once(tmp_path, rng, append):
    """A checkpoint written inside epoch 0 resumes with initial_epoch 0: the interrupted epoch's
    row goes (it is trained again), the file is continued whatever ``append`` says."""
    X, y = data(rng)
    path, ckpt = tmp_path / "log.csv", tmp_path / "ckpt"

    class StopAt(dn.Callback):
        def on_batch_end(self, net, step, logs):
            if step == 7:
                net.stop_training = True

    make().fit(X, y, epochs=2, batch_size=10, callbacks=[CSVLogger(path, append=append), StopAt()],
               checkpoint=Checkpointer(ckpt, every_steps=5))
    assert [r["epoch"] for r in read_csv(path)] == ["0"]                 # the stopped epoch's row
    assert Checkpointer(ckpt).read_state()["epochs_done"] == 0
    make().fit(X, y, epochs=2, batch_size=10, callbacks=[CSVLogger(path, append=append)],
               checkpoint=Checkpointer(ckpt, every_steps=5), resume=True)
    ref = tmp_path / "ref.csv"
    make().fit(X, y, epochs=2, batch_size=10, callbacks=[CSVLogger(ref)])
    rows = read_csv(path)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    np.testing.assert_allclose([float(r["loss"]) for r in rows], [float(r["loss"]) for r in read_csv(ref)], rtol=1e-6)


# ---------------------------------------------------------------------------- deepnet train --log-dir
def test_cli_log_dir_one_folder_per_run_and_resume_continues_it(tmp_path, capsys):
    needs_tensorboardx()
    from deepnet.cli import main
    logs, out = tmp_path / "logs", tmp_path / "run"
    assert main(["train", "--epochs", "2", "--checkpoint-every", "20", "--out", str(out), "--log-dir", str(logs),
                 "--quiet"]) == 0
    (folder,) = logs.iterdir()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["log_run"] == str(folder)
    assert [r["epoch"] for r in read_csv(folder / "log.csv")] == ["0", "1"]
    assert main(["train", "--epochs", "4", "--resume", "--out", str(out)]) == 0         # --log-dir not repeated
    assert f"logs: continuing in {folder}" in capsys.readouterr().out
    assert list(logs.iterdir()) == [folder]
    rows = read_csv(folder / "log.csv")
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"]
    summary = json.loads((out / "summary.json").read_text())
    np.testing.assert_allclose([float(r["loss"]) for r in rows], summary["history"]["loss"], rtol=1e-12)
    scalars, histograms = events(folder)
    steps = [s for s, _ in scalars["loss/train"]]
    assert len(steps) == 4 and steps == sorted(set(steps))
    assert "weights/0.weight" in histograms
    # a new run in the same --log-dir: a folder of its own
    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "other"), "--log-dir", str(logs),
                 "--quiet"]) == 0
    assert len(list(logs.iterdir())) == 2


def test_cli_log_dir_that_is_a_file_is_refused_before_any_data_is_loaded(tmp_path, capsys, monkeypatch):
    from deepnet.cli import build, main

    def no_data(*a, **k):
        raise AssertionError("the data were loaded before --log-dir was checked")

    monkeypatch.setattr(build, "load_dataset", no_data)
    (tmp_path / "afile").write_text("keep me")
    rc = main(["train", "--epochs", "1", "--out", str(tmp_path / "run"), "--log-dir", str(tmp_path / "afile"),
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and f"--log-dir {tmp_path / 'afile'}: this is a file; expected a folder for the runs' logs" in err
    assert (tmp_path / "afile").read_text() == "keep me" and not (tmp_path / "run").exists()


def test_cli_log_dir_without_tensorboardx_says_what_to_install(tmp_path, capsys, monkeypatch):
    """Refused before training, in one line naming the extra; nothing trained nor written."""
    from deepnet.cli import main
    monkeypatch.setitem(sys.modules, "tensorboardX", None)          # as if not installed
    rc = main(["train", "--epochs", "1", "--out", str(tmp_path / "run"), "--log-dir", str(tmp_path / "logs"),
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "--log-dir: TensorBoard logs need the tensorboardX package: pip install 'deepnet[logs]'" in err
    assert not (tmp_path / "logs").exists() and not (tmp_path / "run" / "model.npz").exists()
