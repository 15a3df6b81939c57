"""The command line: the main job, evaluate, predict, info, and readable errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from deepnet.cli import main
from tests.conftest import mnist_dir, requires_mnist
from tests.test_idx import make_folder


def test_train_default_writes_model_summary_and_plots(tmp_path, capsys):
    rc = main(["train", "--epochs", "3", "--out", str(tmp_path / "run"), "--plot", str(tmp_path / "plots"),
               "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["dataset"] == "digits" and len(summary["history"]["loss"]) == 3
    assert summary["test"]["accuracy"] > 0.7
    assert np.array(summary["test"]["confusion_matrix"]).sum() == 449
    for name in ("curves.png", "confusion.png", "misclassified.png"):
        data = (tmp_path / "plots" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_train_prints_which_data_and_how_to_use_mnist(tmp_path, capsys):
    assert main(["train", "--epochs", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "scikit-learn's 8x8 handwritten digits" in out and "deepnet train --dataset mnist" in out
    assert "epoch 1/1" in out and "samples/s" in out


def test_evaluate_and_predict(tmp_path, capsys):
    main(["train", "--epochs", "5", "--out", str(tmp_path), "--quiet"])
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "model.npz")]) == 0
    out = capsys.readouterr().out
    assert "per-class accuracy" in out and "confusion matrix" in out
    rows = np.random.default_rng(0).integers(0, 17, size=(3, 64)) / 16.0
    np.savetxt(tmp_path / "in.csv", rows, delimiter=",")
    assert main(["predict", str(tmp_path / "model.npz"), str(tmp_path / "in.csv")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith(f"{tmp_path / 'in.csv'}:0\t")


def test_train_on_idx_folder_with_seed_preset(tmp_path, capsys):
    folder = make_folder(tmp_path / "mnist", n_train=30, n_test=10)
    rc = main(["train", "--preset", "seed", "--dataset", "idx", "--data", str(folder), "--epochs", "1",
               "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["config"]["batch_size"] == 1 and summary["config"]["loss"] == "sse"


@pytest.mark.parametrize("argv, message", [
    (["train", "--layers", "10-5-3", "--epochs", "1"], "the data has 64 features, so the first size must be 64"),
    (["train", "--dataset", "mnist", "--data", "/nonexistent/folder"], "/nonexistent/folder: no such folder"),
    (["train", "--backend", "tpu"], "unknown backend 'tpu'"),
    (["evaluate", "/nonexistent/model.npz"], "/nonexistent/model.npz: file not found"),
    (["train", "--lr", "-1", "--epochs", "1"], "--lr: expected a positive finite learning rate, got -1.0"),
])
def test_errors_are_one_or_two_lines(tmp_path, capsys, argv, message):
    rc = main(argv + ([] if argv[0] != "train" else ["--out", str(tmp_path)]))
    assert rc == 1
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2


def test_debug_shows_the_traceback(tmp_path):
    from deepnet.datasets import DatasetError

    argv = ["--debug", "train", "--dataset", "mnist", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    with pytest.raises(DatasetError, match=r"nope: no such folder$") as info:
        main(argv)                                   # the original error, raised where it happened
    assert info.traceback[-1].path.name == "sources.py" and info.traceback[-1].name == "locate"
    run = subprocess.run([sys.executable, "-m", "deepnet", *argv], capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):", run.stderr
    assert any(re.search(r'deepnet[/\\]datasets[/\\]sources\.py", line \d+, in locate$', ln) for ln in lines), run.stderr
    assert lines[-1] == f"deepnet.datasets.errors.DatasetError: {tmp_path / 'nope'}: no such folder"
    assert "deepnet: error:" not in run.stderr       # the traceback replaces the one-line message


def test_python_dash_m_and_info():
    out = subprocess.run([sys.executable, "-m", "deepnet", "info"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "backends:" in out.stdout and "numpy    available" in out.stdout and "GPU:" in out.stdout


@requires_mnist
@pytest.mark.slow
def test_seed_preset_one_epoch_on_real_mnist(tmp_path, capsys):
    rc = main(["train", "--preset", "seed", "--data", str(mnist_dir()), "--epochs", "1", "--out", str(tmp_path),
               "--quiet"])
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["test"]["accuracy"] > 0.935     # 94.06% after one epoch (96.2% after five)


def test_train_checkpoints_and_resume(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--epochs", "2", "--checkpoint-every", "10", "--out", out, "--quiet"]) == 0
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert "best.npz" in ckpts and any(n.startswith("ckpt-e0002") for n in ckpts)
    capsys.readouterr()
    assert main(["train", "--epochs", "4", "--resume", "--out", out, "--quiet"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(summary["history"]["loss"]) == 4          # epochs 1-2 from the checkpoint, 3-4 trained now
