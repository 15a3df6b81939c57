"""What a new user hit on the command line (issue 11, items 2, 3, 4 and 7): each test
reproduces one measured failure."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat

import numpy as np
import pytest

import deepnet as dn
from deepnet import io as dio
from deepnet.checkpoint import Checkpointer, ResumeError
from deepnet.cli import main
from deepnet.io import ModelFileError, load_model, save_model
from deepnet.presets import mlp_layers
from deepnet.schedules import LearningRateScheduler, linear_warmup


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err


@pytest.fixture
def run(tmp_path, capsys):
    """A digits run with checkpoints (2 epochs, batch 32, Adam) in tmp_path/run."""
    out = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--checkpoint-every", "20", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    return out


def _weights(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k].copy() for k in z.files}


# ---------------------------------------------------------------- 2. resume never silently does something else
@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "64"], "--batch-size: checkpoint 32, given 64"),
    (["--lr", "0.5"], "--lr: checkpoint 0.001, given 0.5"),
    (["--optimizer", "sgd"], "--optimizer: checkpoint 'adam', given 'sgd'"),
    (["--seed", "1"], "--seed: checkpoint 0, given 1"),
])
def test_resume_with_other_settings_is_refused_naming_each(run, capsys, argv, message):
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    model = _weights(run / "model.npz")
    assert main(["train", "--epochs", "3", "--resume", "--out", str(run), "--quiet", *argv]) == 1
    err = _err_line(capsys)
    assert message in err and "cannot resume" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before       # nothing trained
    after = _weights(run / "model.npz")
    assert all(np.array_equal(after[k], v) for k, v in model.items())


def test_resume_takes_the_settings_not_given_and_records_what_was_used(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--epochs", "1", "--lr", "0.003", "--batch-size", "16", "--checkpoint-every", "40",
                 "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "--epochs", "2", "--resume", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "resuming with --epochs 2 (the run was started with 1)" in printed
    assert "epoch 2/2" in printed and "epoch 1/2" not in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["lr"] == 0.003 and summary["config"]["batch_size"] == 16
    assert summary["config"]["epochs"] == 2 and len(summary["history"]["loss"]) == 2
    assert "--lr" in summary["resumed"]["settings_from_checkpoint"]
    assert summary["resumed"]["epochs"] == {"recorded": 1, "used": 2}


def test_resume_to_fewer_epochs_than_done_is_refused(tmp_path):
    X, y = np.random.default_rng(0).normal(size=(32, 5)).astype(np.float32), np.arange(32) % 3
    dn.Network(mlp_layers("5-8-3", "relu"), seed=0).fit(X, y, epochs=3, batch_size=8, loss="xent",
                                                       optimizer="sgd", checkpoint=tmp_path)
    with pytest.raises(ResumeError, match="epochs: the checkpoint has finished 3, given 2"):
        dn.Network(mlp_layers("5-8-3", "relu"), seed=0).fit(X, y, epochs=2, batch_size=8, loss="xent",
                                                           optimizer="sgd", checkpoint=tmp_path, resume=True)


@pytest.mark.parametrize("change, message", [
    ({"batch_size": 4}, "batch_size: checkpoint 8, given 4"),
    ({"optimizer": dn.Adam(0.01)}, "optimizer: checkpoint 'SGD', given 'Adam'"),
    ({"optimizer": dn.SGD(0.5)}, "optimizer.lr: checkpoint 0.1, given 0.5"),
    ({"shuffle": False}, "shuffle: checkpoint True, given False"),
    ({"y": "other"}, "training data: checkpoint"),
])
def test_fit_refuses_to_resume_a_different_run(tmp_path, change, message):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(32, 5)).astype(np.float32), np.arange(32) % 3
    kw = {"epochs": 1, "batch_size": 8, "loss": "xent", "optimizer": dn.SGD(0.1), "shuffle": True}
    dn.Network(mlp_layers("5-8-3", "relu"), seed=0).fit(X, y, checkpoint=tmp_path, **kw)
    y2 = y[::-1].copy() if change.pop("y", None) else y
    kw.update(change, epochs=2)
    with pytest.raises(ResumeError, match=message):
        dn.Network(mlp_layers("5-8-3", "relu"), seed=0).fit(X, y2, checkpoint=tmp_path, resume=True, **kw)


def test_resume_without_a_checkpoint_is_an_error(tmp_path, capsys):
    assert main(["train", "--epochs", "1", "--resume", "--out", str(tmp_path / "none"), "--quiet"]) == 1
    assert "--resume: no checkpoint in" in _err_line(capsys)
    assert not (tmp_path / "none" / "model.npz").exists()
    assert main(["train", "--epochs", "1", "--resume-if-exists", "--out", str(tmp_path / "none")]) == 0
    assert "starting a new run" in capsys.readouterr().out
    X = np.zeros((8, 5), np.float32)
    with pytest.raises(ResumeError, match="holds no checkpoint"):
        dn.Network(mlp_layers("5-4-3", "relu")).fit(X, np.arange(8) % 3, loss="xent", optimizer="sgd",
                                                    checkpoint=tmp_path / "c", resume=True)


def test_a_new_run_does_not_mix_its_checkpoints_with_an_earlier_runs(run, capsys):
    assert main(["train", "--epochs", "1", "--checkpoint-every", "5", "--out", str(run), "--quiet"]) == 1
    assert "holds checkpoints of an earlier run (last: ckpt-e0002" in _err_line(capsys)


# ---------------------------------------------------------------- 3. output problems found first; nothing lost
def test_out_naming_a_file_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "f").write_text("mine")
    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "f")]) == 1
    captured = capsys.readouterr()
    assert "this is a file; expected a folder" in captured.err and "epoch" not in captured.out
    assert (tmp_path / "f").read_text() == "mine"
    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "f" / "sub"), "--quiet"]) == 1
    assert "cannot write there" in _err_line(capsys)
    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "o"), "--plot", str(tmp_path / "f"), "--quiet"]) == 1
    assert "--plot" in _err_line(capsys) and not (tmp_path / "o" / "model.npz").exists()


def test_read_only_out_is_refused_before_training(tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:          # root writes anywhere: simulate the refusal a user would get
        def refuse(*a, **k):
            raise PermissionError(errno.EACCES, "Permission denied")
        monkeypatch.setattr("deepnet.cli.outputs.tempfile.TemporaryFile", refuse)
    else:
        ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert main(["train", "--epochs", "1", "--out", str(ro)]) == 1
        captured = capsys.readouterr()
        assert "cannot write there (Permission denied)" in captured.err and "epoch" not in captured.out
    finally:
        ro.chmod(0o755)


def test_full_disk_is_found_before_training(tmp_path, capsys, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr("deepnet.cli.outputs.shutil.disk_usage", lambda p: usage._replace(free=4096))
    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "o")]) == 1
    captured = capsys.readouterr()
    assert "MiB free on its disk; this run needs about" in captured.err and "epoch 1/1" not in captured.out


def test_a_failed_save_keeps_the_trained_weights_and_the_old_model(run, capsys, monkeypatch):
    old = _weights(run / "model.npz")
    real = dio.save_model

    def disk_full(net, path, extra=None):
        if os.fspath(path).startswith(os.fspath(run)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(net, path, extra)

    monkeypatch.setattr("deepnet.cli.outputs.save_model", disk_full)   # the name the command line calls
    assert main(["train", "--epochs", "1", "--out", str(run), "--seed", "3", "--quiet"]) == 1
    err = _err_line(capsys)
    assert "could not save the trained model" in err and "No space left on device" in err
    rescued = err.split("the trained weights are safe in ")[1].strip()
    net = load_model(rescued)
    assert net.input_width == 64
    now = _weights(run / "model.npz")
    assert all(np.array_equal(now[k], v) for k, v in old.items())       # the earlier model survived
    shutil.rmtree(os.path.dirname(rescued))


def test_epochs_zero_never_replaces_a_trained_model(run, capsys):
    old = (run / "model.npz").read_bytes()
    assert main(["train", "--epochs", "0", "--out", str(run), "--quiet"]) == 1
    assert "--epochs 0 would replace the trained model" in _err_line(capsys)
    assert (run / "model.npz").read_bytes() == old


def test_retraining_into_a_folder_keeps_every_earlier_model(run, capsys):
    first = (run / "model.npz").read_bytes()
    assert main(["train", "--epochs", "1", "--out", str(run), "--quiet", "--seed", "2"]) == 0
    assert "kept the earlier model as" in capsys.readouterr().out
    second = (run / "model.npz").read_bytes()
    assert main(["train", "--epochs", "1", "--out", str(run), "--quiet", "--seed", "3"]) == 0
    kept = sorted(p.read_bytes() for p in run.glob("model.*.npz"))
    assert sorted([first, second]) == kept and (run / "model.npz").read_bytes() not in kept
    assert len(list(run.glob("summary.*.json"))) == 2


def test_saved_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        net = dn.Network(mlp_layers("4-3-2", "relu"))
        path = save_model(net, tmp_path / "m.npz")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o077)
        assert stat.S_IMODE(save_model(net, tmp_path / "p.npz").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_random_bytes_are_not_called_a_truncated_safetensors_file(tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(ModelFileError, match=r"model\.npz: not a deepnet model file \(a \.npz file is a zip"):
        load_model(path)
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty file"):
        load_model(tmp_path / "empty.npz")


# ---------------------------------------------------------------- 4. predict: conventions and unreadable inputs
@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    assert main(["train", "--epochs", "15", "--out", str(out), "--quiet"]) == 0
    return out / "model.npz"


def _write_png(path, img):
    from matplotlib.image import imsave

    imsave(path, img, cmap="gray", vmin=0, vmax=16)


def test_predict_inverts_a_dark_digit_on_a_light_background(digits_model, tmp_path, capsys):
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs, labels = d.images[1500:1540], d.target[1500:1540]
    right = {"kept": 0, "inverted": 0}
    for img, label in zip(imgs, labels):
        _write_png(tmp_path / "ink.png", 16 - img)                    # black digit on white paper
        capsys.readouterr()
        assert main(["predict", str(digits_model), str(tmp_path / "ink.png")]) == 0
        captured = capsys.readouterr()
        assert "has a light background" in captured.err and "inverted it" in captured.err
        right["inverted"] += captured.out.split("\t")[1] == str(label)
        assert main(["predict", str(digits_model), str(tmp_path / "ink.png"), "--invert", "no"]) == 0
        captured = capsys.readouterr()
        assert captured.err == ""
        right["kept"] += captured.out.split("\t")[1] == str(label)
    assert right["inverted"] >= 32 and right["kept"] < right["inverted"] - 15
    _write_png(tmp_path / "mnist-like.png", imgs[0])                  # the usual convention: no note
    assert main(["predict", str(digits_model), str(tmp_path / "mnist-like.png")]) == 0
    assert capsys.readouterr().err == ""


def test_predict_help_states_the_input_convention(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "light on a dark background" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("name, content, message", [
    ("text.png", b"hello, this is not an image\n", "not a readable PNG image"),
    ("empty.npy", None, "the array is empty"),
    ("junk.npy", b"garbage", "not a readable .npy array"),
    ("empty.csv", b"\n\n", "no rows"),
])
def test_predict_unreadable_inputs_give_one_line(digits_model, tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content is None:
        np.save(path, np.zeros((0, 64)))
    else:
        path.write_bytes(content)
    assert main(["predict", str(digits_model), str(path)]) == 1
    err = _err_line(capsys)
    assert message in err and len(err.splitlines()) == 1


# ---------------------------------------------------------------- 7. smaller things
def test_per_step_warmup_knows_the_step_count_from_the_first_step():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(100, 2)).astype(np.float32), np.arange(100) % 2
    seen = []
    rec = dn.LambdaCallback(on_batch_end=lambda n, step, logs: seen.append(n.optimizer.lr))
    dn.Network(mlp_layers("2-4-2", "tanh"), seed=0).fit(
        X, y, epochs=2, batch_size=10, loss="xent", optimizer=dn.SGD(1.0),
        callbacks=[LearningRateScheduler(linear_warmup(1.0, 0.5), per_step=True), rec])
    np.testing.assert_allclose(seen[:7], [0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0], atol=1e-6)
    assert seen[10:] == [1.0] * 10


@pytest.mark.parametrize("argv, message", [
    (["--optimizer", "adam", "--momentum", "0.9"], "--momentum applies to --optimizer sgd or momentum, not adam"),
    (["--momentum", "0.9"], "--momentum applies to --optimizer sgd or momentum, not adam"),
    (["--preset", "seed", "--layers", "784-100-10"], "--layers cannot change --preset seed"),
    (["--preset", "seed", "--activation", "relu"], "--activation cannot change --preset seed"),
    (["--shortcut"], "--shortcut only applies to --preset seed"),
    (["--checkpoint-every", "-3"], "--checkpoint-every: expected a non-negative number of steps"),
    (["--epochs", "-1"], "--epochs: expected a non-negative integer, got -1"),
    (["--batch-size", "0"], "--batch-size: expected a positive integer, got 0"),
    (["--dropout", "1.5"], "--dropout: expected a rate in [0, 1), got 1.5"),
    (["--val-fraction", "1"], "--val-fraction: expected a fraction in [0, 1), got 1.0"),
    (["--label-column", "y"], "--label-column applies to --dataset csv, not digits"),
    (["--resume", "--resume-if-exists"], "give either --resume or --resume-if-exists"),
    (["--dataset", "nosuch"], "unknown data set 'nosuch'"),
])
def test_options_that_would_do_nothing_are_refused(tmp_path, capsys, argv, message):
    assert main(["train", "--out", str(tmp_path / "o"), "--quiet", *argv]) == 1
    err = _err_line(capsys)
    assert message in err and len(err.splitlines()) <= 2
    assert not (tmp_path / "o" / "model.npz").exists()


def test_scale_with_a_csv_is_refused(tmp_path, capsys):
    (tmp_path / "d.csv").write_text("label,a,b\n0,1,2\n1,3,4\n0,5,6\n1,7,8\n0,1,1\n")
    assert main(["train", "--dataset", "csv", "--data", str(tmp_path / "d.csv"), "--scale", "unit",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 1
    assert "--scale applies to image data sets" in _err_line(capsys)


def test_sparse_labels_and_unseen_test_classes_are_reported(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y_train = np.array([0, 1, 2, 1000] * 10)
    y_test = np.array([0, 1, 2, 1000, 3])
    np.savez(tmp_path / "d.npz", x_train=rng.normal(size=(40, 6)), y_train=y_train,
             x_test=rng.normal(size=(5, 6)), y_test=y_test)
    assert main(["train", "--dataset", "npz", "--data", str(tmp_path / "d.npz"), "--epochs", "1",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "1000" in err and "never" in err and "warning:" in err
    assert "3" in err.split("test")[-1]


# ---------------------------------------------------------------- found by review: each reproduced first
def test_bad_test_data_is_refused_before_training(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x_test = rng.normal(size=(5, 6))
    x_test[2, 3] = np.nan
    np.savez(tmp_path / "nan.npz", x_train=rng.normal(size=(40, 6)), y_train=np.arange(40) % 3,
             x_test=x_test, y_test=np.arange(5) % 3)
    assert main(["train", "--dataset", "npz", "--data", str(tmp_path / "nan.npz"), "--epochs", "3",
                 "--out", str(tmp_path / "o")]) == 1
    captured = capsys.readouterr()
    assert "npz test data: X contains 1 non-finite value" in captured.err and "epoch 1/3" not in captured.out


def test_resuming_a_finished_run_trains_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "f"
    assert main(["train", "--epochs", "2", "--resume-if-exists", "--out", str(out), "--quiet"]) == 0
    before = sorted((p.name, p.read_bytes()) for p in out.rglob("*") if p.is_file())
    for argv in (["--resume-if-exists"], ["--resume", "--seed", "0"]):
        capsys.readouterr()
        assert main(["train", "--epochs", "2", "--out", str(out), *argv]) == 0
        assert "nothing to train: the run in" in capsys.readouterr().out
    assert sorted((p.name, p.read_bytes()) for p in out.rglob("*") if p.is_file()) == before


def test_an_early_stopped_run_is_finished(tmp_path, capsys):
    out = tmp_path / "es"
    argv = ["train", "--epochs", "200", "--early-stopping", "1", "--lr", "0.05", "--resume-if-exists",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"].startswith("early stopping at epoch") and len(summary["history"]["loss"]) < 200
    model = (out / "model.npz").read_bytes()
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "nothing to train" in printed and summary["stopped"] in printed
    assert (out / "model.npz").read_bytes() == model


def test_early_stopped_fit_resumed_in_python_trains_nothing(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 5)).astype(np.float32), np.arange(64) % 3
    stop = dn.EarlyStopping("loss", patience=1, min_delta=10.0)       # never improves enough
    net = dn.Network(mlp_layers("5-8-3", "relu"), seed=0)
    hist = net.fit(X, y, epochs=50, batch_size=16, loss="xent", optimizer=dn.SGD(0.1), callbacks=[stop],
                   checkpoint=tmp_path)
    again = dn.Network(mlp_layers("5-8-3", "relu"), seed=0)
    steps = []
    rec = dn.LambdaCallback(on_batch_end=lambda n, s, logs: steps.append(s))
    hist2 = again.fit(X, y, epochs=50, batch_size=16, loss="xent", optimizer=dn.SGD(0.1), callbacks=[rec],
                      checkpoint=tmp_path, resume=True)
    assert steps == [] and hist2.epochs == hist.epochs


def test_resume_with_more_epochs_under_a_schedule_is_refused(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["train", "--epochs", "2", "--schedule", "cosine", "--checkpoint-every", "30", "--out", str(out),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "--epochs", "4", "--resume", "--out", str(out), "--quiet"]) == 1
    assert "--schedule cosine spans them" in _err_line(capsys)


@pytest.mark.parametrize("argv, message", [
    (["--data", "/some/folder"], "--data does nothing with --dataset digits"),
    (["--no-download"], "--no-download does nothing with --dataset digits"),
    (["--schedule", "linear"], "unknown schedule 'linear'"),
    (["--dataset", "mnsit"], "unknown data set 'mnsit'"),
])
def test_refused_options_create_no_folder(tmp_path, capsys, argv, message):
    assert main(["train", "--out", str(tmp_path / "o"), "--quiet", *argv]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_fit_refuses_to_start_a_new_run_among_earlier_checkpoints(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(32, 5)).astype(np.float32), np.arange(32) % 3
    dn.Network(mlp_layers("5-8-3", "relu"), seed=0).fit(X, y, epochs=2, batch_size=8, loss="xent",
                                                       optimizer="sgd", checkpoint=tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ResumeError, match="holds checkpoints of an earlier run .*resume it"):
        dn.Network(mlp_layers("5-8-3", "relu"), seed=1).fit(X, y, epochs=1, batch_size=16, loss="xent",
                                                           optimizer="sgd", checkpoint=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == names


def test_in_process_resume_after_a_schedule_changed_the_rate(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(32, 5)).astype(np.float32), np.arange(32) % 3
    net = dn.Network(mlp_layers("5-8-3", "relu"), seed=0, loss="xent", optimizer=dn.SGD(0.01))

    class Halve(dn.Callback):
        def on_epoch_end(self, net, epoch, logs):
            net.optimizer.lr *= 0.5
            if epoch == 1:
                net.stop_training = True       # stopped for now, not for good

    net.fit(X, y, epochs=4, batch_size=8, callbacks=[Halve()], checkpoint=tmp_path)
    hist = net.fit(X, y, epochs=4, batch_size=8, checkpoint=tmp_path, resume=True)
    assert hist.epochs == [0, 1, 2, 3]


def test_resume_takes_the_data_folder_from_the_checkpoint(tmp_path, capsys):
    from tests.test_idx import make_folder

    folder = make_folder(tmp_path / "small", n_train=40, n_test=10)
    out = tmp_path / "s1"
    assert main(["train", "--preset", "seed", "--shortcut", "--dataset", "idx", "--data", str(folder),
                 "--epochs", "1", "--checkpoint-every", "100", "--out", str(out), "--quiet"]) == 0
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--shortcut", "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["data"] == str(folder) and "--data" in summary["resumed"]["settings_from_checkpoint"]


def test_non_json_checkpoint_settings_are_refused_at_once(tmp_path):
    with pytest.raises(ValueError, match="settings must be plain data"):
        Checkpointer(tmp_path, settings={"seed": np.int64(3)})
    assert Checkpointer(tmp_path, every_steps=None).every_steps == 0


def test_the_data_fingerprint_covers_target_rows(tmp_path):
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(32, 5)).astype(np.float32), rng.normal(size=(32, 3)).astype(np.float32)
    kw = {"batch_size": 8, "loss": "mse", "optimizer": "sgd", "checkpoint": tmp_path}
    dn.Network(mlp_layers("5-8-3", "relu"), seed=0).fit(X, Y, epochs=1, **kw)
    with pytest.raises(ResumeError, match="training data: checkpoint"):
        dn.Network(mlp_layers("5-8-3", "relu"), seed=0).fit(X, Y * 100 + 5, epochs=2, resume=True, **kw)


def test_predict_inverts_a_dim_photo_and_refuses_invert_where_it_cannot(digits_model, tmp_path, capsys):
    from sklearn.datasets import load_digits

    img = load_digits().images[1500]
    photo = 110 - img / 16 * 90                  # dark ink (20) on grey paper (110)
    with open(tmp_path / "photo.NPY", "wb") as fh:               # np.save(path) would add ".npy"
        np.save(fh, photo.reshape(1, 64))
    assert main(["predict", str(digits_model), str(tmp_path / "photo.NPY")]) == 0
    assert "has a light background" in capsys.readouterr().err
    (tmp_path / "d.csv").write_text("label,a,b\n0,1,2\n1,3,4\n0,5,6\n1,7,8\n0,1,1\n")
    assert main(["train", "--dataset", "csv", "--data", str(tmp_path / "d.csv"), "--epochs", "1",
                 "--out", str(tmp_path / "c"), "--quiet"]) == 0
    np.save(tmp_path / "q.npy", np.ones((1, 2)))
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "c" / "model.npz"), str(tmp_path / "q.npy"), "--invert", "yes"]) == 1
    assert "--invert yes needs a model trained on images" in _err_line(capsys)


def test_random_bytes_starting_like_a_pickle_opcode_are_not_called_a_pickle(tmp_path):
    (tmp_path / "m.npz").write_bytes(b"\x80" + np.random.default_rng(1).bytes(500))
    with pytest.raises(ModelFileError, match="not a deepnet model file"):
        load_model(tmp_path / "m.npz")
