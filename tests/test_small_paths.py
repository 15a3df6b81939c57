"""Smaller things a new user hit (issue 23, item 8): output into a closed pipe, predict on
several files and on the CSV formats train reads, the folders of a failed run, options
checked before the data loads, labels as a column of floats, PyTorch conversion without
PyTorch.  Each test reproduces the user's path."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import deepnet as dn
from deepnet.cli import main
from deepnet.io import load_model
from deepnet.presets import mlp_layers


def _deepnet(*argv: str) -> list[str]:
    return [sys.executable, "-m", "deepnet", *argv]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A digits model and the 8x8 digits the model was tested on (scaled 0..1, as trained)."""
    from sklearn.datasets import load_digits

    out = tmp_path_factory.mktemp("digits")
    assert main(["train", "--epochs", "3", "--out", str(out), "--quiet"]) == 0
    d = load_digits()
    return out / "model.npz", (d.data[-300:] / 16.0), d.target[-300:]


def _predicted(model, X) -> list[str]:
    return [str(k) for k in load_model(model).predict_classes(X.astype(np.float32))]


# ---------------------------------------------------------------- output into a closed pipe
def test_info_into_a_closed_pipe_exits_quietly():
    read, write = os.pipe()
    os.close(read)                                   # `deepnet info | true`: nobody reads
    proc = subprocess.Popen(_deepnet("info"), stdout=write, stderr=subprocess.PIPE, text=True)
    os.close(write)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert err == "" and proc.returncode == 141        # like a Unix tool stopped by SIGPIPE


def test_predict_into_head_exits_quietly(digits, tmp_path):
    model, X, _ = digits
    np.savetxt(tmp_path / "many.csv", np.tile(X, (20, 1)), delimiter=",")   # 6,000 lines: more than a pipe holds
    proc = subprocess.Popen(_deepnet("predict", str(model), str(tmp_path / "many.csv")), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()                   # `| head -1`: one line read, then the pipe closed
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert first.startswith(f"{tmp_path / 'many.csv'}:0\t")
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141


# ---------------------------------------------------------------- predict: several files, train's CSV formats
def test_predict_reads_train_csv_with_a_header_and_label_column_anywhere(digits, tmp_path, capsys):
    model, X, y = digits
    header = ",".join([f"p{i}" for i in range(32)] + ["label"] + [f"p{i}" for i in range(32, 64)])
    table = np.column_stack([X[:, :32], y, X[:, 32:]])
    np.savetxt(tmp_path / "test.csv", table, delimiter=",", header=header, comments="", fmt="%.6g")
    capsys.readouterr()
    assert main(["predict", str(model), str(tmp_path / "test.csv")]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    want = _predicted(model, X)                      # the label column is not taken for a pixel
    assert [ln.split("\t")[0] for ln in lines] == [f"{tmp_path / 'test.csv'}:{i}" for i in range(len(X))]
    assert [ln.split("\t")[1] for ln in lines] == want
    assert all(ln.endswith(f"\tlabel {t}") for ln, t in zip(lines, y))
    hits = sum(p == str(t) for p, t in zip(want, y))
    assert f"accuracy {100 * hits / len(y):.2f}% ({hits} of {len(y)} labelled rows)" in err


def test_predict_takes_several_files_of_every_kind(digits, tmp_path, capsys):
    from matplotlib.image import imsave

    model, X, y = digits
    imsave(tmp_path / "a.png", X[0].reshape(8, 8), cmap="gray", vmin=0, vmax=1)
    np.save(tmp_path / "b.npy", X[1:4])
    np.savetxt(tmp_path / "seed.csv", np.column_stack([y[4:9], X[4:9]]), delimiter=",", fmt="%.6g")  # notebook CSV
    files = [str(tmp_path / n) for n in ("a.png", "b.npy", "seed.csv")]
    capsys.readouterr()
    assert main(["predict", str(model), *files]) == 0
    out, err = capsys.readouterr()
    assert [ln.split("\t")[0] for ln in out.splitlines()] == [f"{files[0]}:0", *(f"{files[1]}:{i}" for i in range(3)),
                                                               *(f"{files[2]}:{i}" for i in range(5))]
    assert [ln.split("\t")[1] for ln in out.splitlines()][1:] == _predicted(model, X[1:9])
    assert f"{files[2]}: accuracy" in err and "of 5 labelled rows" in err and "all files" not in err


def test_predict_reads_the_digits_raw_0_to_16_values_as_the_model_was_trained(digits, tmp_path, capsys):
    """scikit-learn's digits come as 0..16: rows of them are scaled by 16 (not as 0..255 pixels),
    with a note; the same digits as 0..255 pixels predict the same."""
    model, X, y = digits
    np.save(tmp_path / "raw16.npy", X[:40] * 16.0)
    np.save(tmp_path / "raw255.npy", X[:40] * 255.0)
    capsys.readouterr()
    assert main(["predict", str(model), str(tmp_path / "raw16.npy"), str(tmp_path / "raw255.npy")]) == 0
    out, err = capsys.readouterr()
    classes = [ln.split("\t")[1] for ln in out.splitlines()]
    assert classes == _predicted(model, X[:40]) * 2
    assert "raw16.npy: values 0..16 read as the training data's own pixel range 0..16" in err
    assert "raw255.npy" not in err


def test_predict_refuses_labels_outside_the_models_classes_and_a_header_without_label(digits, tmp_path, capsys):
    model, X, y = digits
    np.savetxt(tmp_path / "wrong.csv", np.column_stack([X[:3, 0] * 0 + 12, X[:3]]), delimiter=",")
    np.savetxt(tmp_path / "named.csv", np.column_stack([y[:3], X[:3]]), delimiter=",",
               header=",".join(["digit"] + [f"p{i}" for i in range(64)]), comments="")
    capsys.readouterr()
    assert main(["predict", str(model), str(tmp_path / "wrong.csv")]) == 1
    err = capsys.readouterr().err
    assert "row 0 has label 12, but the model has 10 classes" in err and len(err.splitlines()) == 1
    assert main(["predict", str(model), str(tmp_path / "named.csv")]) == 1
    assert "none is named 'label': give --label-column" in capsys.readouterr().err
    assert main(["predict", str(model), str(tmp_path / "named.csv"), "--label-column", "digit"]) == 0
    assert "accuracy" in capsys.readouterr().err


# ---------------------------------------------------------------- a failed run leaves no empty folder
def test_a_failed_run_removes_the_folders_it_made_and_nothing_else(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("label,a,b\n0,1,oops\n")
    out, plots = tmp_path / "new" / "run", tmp_path / "pictures"
    assert main(["train", "--dataset", "csv", "--data", str(bad), "--out", str(out), "--plot", str(plots)]) == 1
    assert "'oops' is not a number" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]         # new/, new/run/, pictures/ gone
    (tmp_path / "mine").mkdir()                                             # a folder the user made: kept
    assert main(["train", "--dataset", "csv", "--data", str(bad), "--out", str(tmp_path / "mine")]) == 1
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())


def test_an_error_during_training_removes_the_empty_folder_it_made(tmp_path, monkeypatch):
    from deepnet.training import Trainer

    def broken_fit(self, X, y):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Trainer, "fit", broken_fit)
    with pytest.raises(RuntimeError, match="out of memory"):
        main(["train", "--epochs", "1", "--out", str(tmp_path / "a" / "b"), "--quiet"])
    assert not (tmp_path / "a").exists()


# ---------------------------------------------------------------- options checked before the data loads
@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf"])
def test_a_bad_learning_rate_is_refused_before_the_data_is_read(tmp_path, capsys, value):
    missing = tmp_path / "not-yet-there.csv"           # the data would fail too, later
    assert main(["train", "--lr", value, "--dataset", "csv", "--data", str(missing),
                 "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"deepnet: error: --lr: expected a positive finite learning rate, got {float(value)}"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("make, message", [
    (lambda: dn.Adam(eps=-1e-8), "eps must be a non-negative finite number"),
    (lambda: dn.RMSProp(rho=1.5), "rho must be in [0, 1)"),
    (lambda: dn.RMSProp(eps=float("nan")), "eps must be a non-negative finite number"),
    (lambda: dn.SGD(lr=float("inf")), "learning rate must be positive and finite"),
])
def test_optimizer_settings_are_checked_when_made(make, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        make()


# ---------------------------------------------------------------- labels as a column of whole-number floats
def test_labels_as_a_column_of_whole_floats_train_like_ints():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 4)).astype(np.float32), np.arange(60) % 3

    def trained(labels):
        net = dn.Network(mlp_layers([4, 8, 3], "relu"), seed=0)
        net.fit(X, labels, epochs=2, batch_size=8, loss="xent", optimizer="adam")
        return net.get_weights(), net.evaluate(X, labels)

    w_int, ev_int = trained(y[:, None])
    w_float, ev_float = trained(y[:, None].astype(np.float64))
    assert all(np.array_equal(w_int[k], w_float[k]) for k in w_int) and ev_int == ev_float
    halves = y[:, None] + 0.5
    with pytest.raises(ValueError, match=r"fit: labels y must be whole numbers .* y\[0\] = 0.5"):
        dn.Network(mlp_layers([4, 8, 3], "relu"), seed=0).fit(X, halves, epochs=1, loss="xent", optimizer="adam")


def test_npz_data_set_with_a_column_of_float_labels_trains(tmp_path, capsys):
    rng = np.random.default_rng(1)
    y = (np.arange(80) % 2).astype(np.float32)[:, None]                 # as a user's pandas export gives them
    np.savez(tmp_path / "d.npz", x_train=rng.normal(size=(60, 5)), y_train=y[:60],
             x_test=rng.normal(size=(20, 5)), y_test=y[60:])
    assert main(["train", "--dataset", "npz", "--data", str(tmp_path / "d.npz"), "--epochs", "1",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert "on 20 npz test samples" in capsys.readouterr().out
    np.savez(tmp_path / "half.npz", x_train=rng.normal(size=(60, 5)), y_train=y[:60] + 0.5,
             x_test=rng.normal(size=(20, 5)), y_test=y[60:])
    assert main(["train", "--dataset", "npz", "--data", str(tmp_path / "half.npz"), "--out", str(tmp_path / "r2")]) == 1
    assert "y_train[0] is 0.5: expected whole class numbers" in capsys.readouterr().err


# ---------------------------------------------------------------- PyTorch conversion without PyTorch
@pytest.mark.parametrize("name", ["to_torch", "from_torch"])
def test_torch_conversion_without_torch_says_what_to_install(monkeypatch, name):
    from deepnet import interop

    monkeypatch.setitem(sys.modules, "torch", None)          # as if PyTorch were not installed
    net = dn.Network(mlp_layers([3, 2], "relu"), seed=0)
    with pytest.raises(ModuleNotFoundError) as info:
        getattr(interop, name)(net if name == "to_torch" else [])
    message = str(info.value)
    assert f"deepnet.interop.{name} needs PyTorch, which is not installed: pip install torch" in message
    assert "\n" not in message and info.value.name == "torch"
    assert interop.to_torch_state_dict(net)["0.weight"].shape == (2, 3)     # needs no PyTorch
