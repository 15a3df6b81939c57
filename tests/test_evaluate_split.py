"""``deepnet evaluate`` scores exactly the rows held out when the model was trained (the split is
recorded in the model file and its checkpoints), or refuses naming what differs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from deepnet import Network
from deepnet.checkpoint import Checkpointer
from deepnet.cli import main
from deepnet.datasets import load_dataset
from deepnet.io import save_model
from deepnet.layers import Dense


def _percent(text: str, prefix: str) -> str:
    return re.search(prefix + r" ([0-9.]+)%", text)[1]


def _train(capsys, argv: list[str]) -> str:
    """Train through the command line; the test accuracy it printed."""
    assert main(["train", "--quiet", *argv]) == 0
    return _percent(capsys.readouterr().out, "test accuracy")


def _evaluate(capsys, argv: list[str]) -> str:
    assert main(["evaluate", *argv]) == 0
    return capsys.readouterr().out


def _write_csv(path: Path, n: int = 240, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    y = (X[:, 0] + 0.7 * X[:, 1] - 0.5 * X[:, 2] + 0.8 * rng.normal(size=n) > 0).astype(int) + (X[:, 3] > 0.8)
    lines = [",".join([f"f{i}" for i in range(5)] + ["label"])]
    lines += [",".join(f"{v:.4f}" for v in row) + f",{label}" for row, label in zip(X, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_evaluate_uses_the_held_out_digits_of_the_training_seed(tmp_path, capsys):
    acc = _train(capsys, ["--seed", "5", "--epochs", "3", "--out", str(tmp_path / "r")])
    out = _evaluate(capsys, [str(tmp_path / "r" / "model.npz"), "--json", str(tmp_path / "e.json")])
    assert _percent(out, "accuracy") == acc
    assert "test rows: the test split of seed 5 (449 rows: 25% of 1,797), the rows held out when the model " \
           "was trained (checked)" in out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert json.loads((tmp_path / "e.json").read_text())["accuracy"] == summary["test"]["accuracy"]


def test_evaluate_finds_a_csv_model_data_from_its_record(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_csv(tmp_path / "small.csv")
    acc = _train(capsys, ["--dataset", "csv", "--data", "small.csv", "--seed", "5", "--epochs", "4", "--out", "c"])
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")           # the relative --data was recorded as an absolute path
    out = _evaluate(capsys, ["../c/model.npz"])
    assert _percent(out, "accuracy") == acc and "(48 samples)" in out
    assert f"CSV {tmp_path / 'small.csv'}" in out


def test_evaluate_refuses_another_seed_naming_the_recorded_one(tmp_path, capsys):
    _train(capsys, ["--seed", "5", "--epochs", "1", "--out", str(tmp_path)])
    assert main(["evaluate", str(tmp_path / "model.npz"), "--seed", "0"]) == 1
    err = capsys.readouterr().err
    assert "--seed 0: " in err and "was trained with --seed 5" in err and "drop --seed" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["evaluate", str(tmp_path / "model.npz"), "--seed", "5"]) == 0     # the same seed is fine


def test_evaluate_refuses_a_changed_csv_naming_what_differs(tmp_path, capsys):
    data = _write_csv(tmp_path / "d.csv")
    _train(capsys, ["--dataset", "csv", "--data", str(data), "--seed", "5", "--epochs", "1", "--out", str(tmp_path)])
    model = str(tmp_path / "model.npz")
    _write_csv(data, seed=2)                              # same size, other rows
    assert main(["evaluate", model]) == 1
    err = capsys.readouterr().err
    assert f"{data} changed since" in err and "held-out rows are not those recorded" in err
    _write_csv(data, n=200)
    assert main(["evaluate", model, "--data", str(data)]) == 1
    assert "it has 200 rows now, 240 when the model was trained" in capsys.readouterr().err
    data.unlink()
    assert main(["evaluate", model]) == 1
    assert f"trained on {data}, which is not there any more: pass --data" in capsys.readouterr().err
    # other data, asked for by --data: evaluated, and said to be other data
    out = _evaluate(capsys, [model, "--data", str(_write_csv(tmp_path / "other.csv", seed=3))])
    assert "not the data the model was trained on" in out


def test_evaluate_takes_a_checkpoint_and_best_npz(tmp_path, capsys):
    acc = _train(capsys, ["--seed", "5", "--epochs", "2", "--checkpoint-every", "1000", "--out", str(tmp_path)])
    ckpt = Checkpointer(tmp_path / "checkpoints")
    out = _evaluate(capsys, [str(ckpt.last_path())])
    assert _percent(out, "accuracy") == acc and "after epoch 2" in out and "held out when the model" in out
    out = _evaluate(capsys, [str(tmp_path / "checkpoints" / "best.npz")])
    assert out.startswith(f"checkpoint {tmp_path / 'checkpoints' / 'best.npz'}") and "seed 5" in out


def test_a_mid_epoch_checkpoint_is_said_to_be_inside_its_epoch(tmp_path, capsys):
    """A checkpoint written inside the first epoch (as Ctrl-C or --checkpoint-every writes them)
    is not "after epoch 0"."""
    _train(capsys, ["--epochs", "1", "--checkpoint-every", "5", "--out", str(tmp_path)])
    ckpt = sorted((tmp_path / "checkpoints").glob("ckpt-e0000-s*.npz"))[0]      # 38 steps: one of 25..35
    out = _evaluate(capsys, [str(ckpt)])
    step = int(ckpt.stem[-8:])
    assert out.startswith(f"checkpoint {ckpt} (at epoch 1, after its step {step}) on "), out


def test_predict_takes_a_checkpoint_like_its_model(tmp_path, capsys):
    """``deepnet predict`` on a checkpoint scales the inputs as the run did and predicts as its model."""
    _train(capsys, ["--epochs", "2", "--checkpoint-every", "1000", "--out", str(tmp_path)])
    data = load_dataset("digits", seed=0)
    np.save(tmp_path / "rows.npy", data.X_test[:20])
    outputs = []
    for model in (tmp_path / "model.npz", Checkpointer(tmp_path / "checkpoints").last_path()):
        assert main(["predict", str(model), str(tmp_path / "rows.npy")]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0].count("\n") == 20


def test_a_checkpoint_that_noted_only_settings_evaluates_on_their_split(tmp_path, capsys):
    """A checkpoint written by the command line before splits were noted: settings and --data only."""
    data = load_dataset("digits", seed=5)
    net = Network([Dense(64, 10)], seed=0)
    ckpt = Checkpointer(tmp_path, settings={"--dataset": "digits", "--seed": 5, "--scale": "unit"},
                        notes={"--data": None})
    net.fit(data.X_train, data.y_train, epochs=1, batch_size=64, loss="xent", optimizer="adam", checkpoint=ckpt)
    want = 100 * net.evaluate(data.X_test, data.y_test)["accuracy"]
    out = _evaluate(capsys, [str(ckpt.last_path())])
    assert _percent(out, "accuracy") == f"{want:.2f}" and "older checkpoint: not checked" in out


def test_a_model_without_a_record_or_a_loss_still_evaluates_and_says_which_rows(tmp_path, capsys):
    data = load_dataset("digits", seed=3)
    net = Network([Dense(64, 10)], seed=0)
    net.fit(data.X_train, data.y_train, epochs=1, batch_size=64, loss="xent", optimizer="adam", verbose=0)
    net.loss = None                       # a network saved without a loss (e.g. never trained through fit)
    save_model(net, tmp_path / "api.npz")
    out = _evaluate(capsys, [str(tmp_path / "api.npz"), "--seed", "3"])
    assert "nan" not in out and "no loss (the file records none)" in out
    assert "the test split of seed 3" in out and "does not record how its training data was split" in out
    assert _percent(out, "accuracy") == f"{100 * net.evaluate(data.X_test, data.y_test)['accuracy']:.2f}"
    main(["evaluate", str(tmp_path / "api.npz"), "--json", str(tmp_path / "e.json")])
    assert json.loads((tmp_path / "e.json").read_text())["loss"] is None


def test_a_fixed_test_set_is_the_same_whatever_the_seed(tmp_path, capsys):
    from tests.test_idx import make_folder

    folder = make_folder(tmp_path / "idx", n_train=40, n_test=12)
    acc = _train(capsys, ["--dataset", "idx", "--data", str(folder), "--seed", "5", "--epochs", "1",
                          "--out", str(tmp_path / "o")])
    for extra in ([], ["--seed", "0"]):                  # the seed does not choose a fixed test set's rows
        out = _evaluate(capsys, [str(tmp_path / "o" / "model.npz"), *extra])
        assert _percent(out, "accuracy") == acc
        assert "the data set's own test set (12 rows), the rows held out when the model was trained" in out
