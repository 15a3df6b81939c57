"""The residual presets: the pre-activation residual MLP (and its plain counterpart), the small
ResNet for 28×28 images, and ``deepnet train --model resnet|resmlp``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import deepnet as dn
from deepnet.cli import main
from deepnet.io import load_model
from deepnet.presets import resmlp_layers, resmlp_params, resnet_layers, resnet_params
from tests.conftest import mnist_dir, requires_mnist

ROOT = Path(__file__).resolve().parents[1]


def _count(layers, kind):
    """Layers of class ``kind`` in the tree of ``layers``."""
    return sum(isinstance(L, kind) for top in layers for L in [top, *(c for _, c in top.walk())])


@pytest.mark.parametrize("depth, width", [(4, 8), (10, 16), (50, 32)])
@pytest.mark.parametrize("residual", [True, False])
def test_resmlp_has_depth_dense_layers_and_the_documented_parameter_count(depth, width, residual):
    layers = resmlp_layers(20, 3, depth, width, residual=residual)
    net = dn.Network(layers)
    assert _count(layers, dn.Dense) == depth
    assert _count(layers, dn.Residual) == ((depth - 2) // 2 if residual else 0)
    assert net.n_params == resmlp_params(20, 3, depth, width)
    assert net.predict(np.random.default_rng(0).random((5, 20), dtype=np.float32)).shape == (5, 3)


def test_resmlp_blocks_are_pre_activation():
    block = resmlp_layers(6, 2, 4, 8)[1]
    assert isinstance(block, dn.Residual) and block.shortcut is None
    assert [type(L).__name__ for L in block.block.layers] == ["BatchNorm", "ReLU", "Dense", "BatchNorm", "ReLU",
                                                              "Dense"]


@pytest.mark.parametrize("depth", [8, 14, 20])
def test_resnet_has_6n_plus_2_weighted_layers_and_the_documented_parameter_count(depth):
    layers = resnet_layers((1, 28, 28), 10, depth, rows=False)
    net = dn.Network(layers, input_shape=(1, 28, 28))
    convs = [L for top in layers for L in [top, *(c for _, c in top.walk())] if isinstance(L, dn.Conv2D)]
    assert len([c for c in convs if c.kernel_size == (3, 3)]) + _count(layers, dn.Dense) == depth
    assert [c.stride for c in convs if c.kernel_size == (1, 1)] == [(2, 2), (2, 2)]   # the two projections
    assert net.n_params == resnet_params(1, 10, depth)
    assert "(n, 64, 7, 7)" in net.summary()


def test_resnet_trains_on_images_and_takes_rows_with_a_reshape_first():
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 1, 28, 28), dtype=np.float32), np.arange(8) % 10
    net = dn.Network(resnet_layers((1, 28, 28), 10, 8, rows=False), input_shape=(1, 28, 28), seed=0)
    rows = dn.Network(resnet_layers((28, 28), 10, 8), seed=0)        # the same weights: Reshape has none
    np.testing.assert_allclose(rows.predict(x.reshape(8, -1)), net.predict(x), rtol=1e-5, atol=1e-6)
    before = {k: v.copy() for k, v in net.get_weights().items()}
    hist = net.fit(x, y, epochs=1, batch_size=4, loss="xent", optimizer="adam")
    assert np.isfinite(hist.history["loss"][0])
    changed = {k for k, v in net.get_weights().items() if not np.array_equal(before[k], v)}
    assert changed == set(before)              # every parameter, shortcut projections included, was trained


@pytest.mark.parametrize("make, message", [
    (lambda: resnet_layers(depth=10), "expected 6n\\+2"),
    (lambda: resnet_layers(depth=2), "expected 6n\\+2"),
    (lambda: resmlp_layers(10, 2, depth=5), "an even number of Dense layers, 4 or more"),
    (lambda: resmlp_layers(10, 2, depth=2), "an even number of Dense layers, 4 or more"),
    (lambda: resmlp_layers(10, 2, depth=4, width=0), "width: expected a positive integer"),
])
def test_presets_refuse_depths_they_cannot_build(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ---------------------------------------------------------------- the command line
def _images(path, n_train=24, n_test=12, seed=0):
    """A tiny data set of 28×28 images in two classes (a bright square left or right)."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = np.arange(n) % 2
        x = rng.random((n, 28, 28), dtype=np.float32) * 0.1
        for i, label in enumerate(y):
            x[i, 8:20, (4 if label == 0 else 16):(4 if label == 0 else 16) + 8] += 0.9
        return x, y

    (xt, yt), (xs, ys) = make(n_train), make(n_test)
    np.savez(path, x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    return str(path)


def test_cli_trains_saves_and_resumes_a_resnet(tmp_path, capsys):
    data, out = _images(tmp_path / "img.npz"), str(tmp_path / "run")
    base = ["train", "--dataset", "npz", "--data", data, "--batch-size", "8", "--val-fraction", "0", "--out", out,
            "--quiet"]
    assert main([*base, "--model", "resnet", "--depth", "8", "--augment", "shift1", "--epochs", "1",
                 "--checkpoint-every", "2"]) == 0
    net = load_model(tmp_path / "run" / "model.npz")
    assert net.n_params == resnet_params(1, 2, 8)
    assert [type(L).__name__ for L in net.layers[:3]] == ["Reshape", "RandomShift", "Conv2D"]
    # resuming takes --model resnet, --depth 8 and the augmentation over from the checkpoint
    assert main([*base, "--epochs", "2", "--resume"]) == 0
    resumed = load_model(tmp_path / "run" / "model.npz")
    assert resumed.n_params == net.n_params and type(resumed.layers[1]).__name__ == "RandomShift"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(summary["history"]["loss"]) == 2
    # another depth on resume is refused
    assert main([*base, "--epochs", "3", "--resume", "--depth", "14"]) != 0
    assert "--depth" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "run" / "model.npz"), "--dataset", "npz", "--data", data]) == 0


@pytest.mark.parametrize("model, residual", [("resmlp", True), ("mlp", False)])
def test_cli_trains_the_residual_mlp_and_its_plain_counterpart(tmp_path, model, residual):
    out = tmp_path / "run"
    assert main(["train", "--model", model, "--depth", "6", "--width", "16", "--epochs", "1", "--out", str(out),
                 "--quiet"]) == 0
    net = load_model(out / "model.npz")
    assert net.n_params == resmlp_params(64, 10, 6, 16)
    assert _count(net.layers, dn.Residual) == (2 if residual else 0)


@pytest.mark.parametrize("argv, message", [
    (["--model", "resnet", "--depth", "10"], "--depth 10: ResNet depth: expected 6n+2 for n ≥ 1 (8, 14, 20"),
    (["--model", "resmlp", "--depth", "7"], "--depth 7: residual MLP depth: expected an even number"),
    (["--model", "resnet", "--layers", "64-10"], "--layers cannot change --model resnet's fixed layers"),
    (["--model", "resnet", "--width", "32"], "--width cannot change --model resnet's fixed layers"),
    (["--model", "resmlp", "--dropout", "0.2"], "--dropout cannot change --model resmlp's fixed layers"),
    (["--model", "resmlp", "--augment", "shift2"], "augmentation layers take images, so they need --model cnn or "
                                                   "resnet"),
    (["--model", "cnn", "--width", "32"], "--width 32 sizes --model resmlp (or mlp with --depth), not --model cnn"),
    (["--model", "resnet", "--loss", "sse"], "--loss sse: --model resnet outputs logits for --loss xent"),
    (["--model", "cnn", "--depth", "8"], "--depth and --width size --model resnet, resmlp or mlp; --model cnn has"),
    (["--preset", "seed", "--model", "resnet"], "--preset seed and --model resnet are two different networks"),
    (["--layers", "64-32-10", "--depth", "6"], "--layers cannot change --model mlp --depth 6's fixed layers"),
    (["--model", "resnet", "--dataset", "csv", "--data", "x.csv"], None),
])
def test_cli_refuses_what_the_presets_cannot_do_in_one_line(tmp_path, capsys, argv, message):
    if message is None:          # rows without an image shape: refused once the data is read
        (tmp_path / "x.csv").write_text("label,a,b\n0,1,2\n1,3,4\n0,5,6\n1,7,8\n")
        argv = [a.replace("x.csv", str(tmp_path / "x.csv")) for a in argv]
        message = "--model resnet needs image data"
    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "run"), *argv]) != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "model.npz").exists()


# ---------------------------------------------------------------- the degradation experiment
@requires_mnist
def test_the_degradation_script_writes_its_results_and_plot(tmp_path):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "degradation.py"), "--data", str(mnist_dir()), "--depths", "4,6",
           "--width", "8", "--epochs", "1", "--train-rows", "512", "--out", str(out), "--plot", str(png)]
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    record = json.loads(out.read_text())
    assert [(r["depth"], r["residual"]) for r in record["results"]] == [(4, False), (4, True), (6, False), (6, True)]
    assert record["settings"]["train_rows"] == 512
    assert all(r["params"] == resmlp_params(784, 10, r["depth"], 8) and len(r["epoch_loss"]) == 1
               for r in record["results"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
