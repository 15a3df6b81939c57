"""benchmarks/bench_cpu.py's JAX columns train the network deepnet trains: from the bench's
initial weights, on the same batches, JAX's steps (jit per batch, and lax.scan over the pass)
give deepnet's weights to float32 rounding, for every configuration (sizes kept, two batches);
and a run with the new columns reports their compile times and "deepnet compiled"'s ratios."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_cpu.py"


def _bench():
    """benchmarks/bench_cpu.py as a module (registered first: its dataclass looks itself up)."""
    if "bench_cpu" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_cpu", SCRIPT)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench_cpu"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["bench_cpu"]


@functools.lru_cache(maxsize=1)
def _all_data() -> tuple[np.ndarray, np.ndarray]:
    return _bench().load_data(3 * 256)        # MNIST where DEEPNET_MNIST names it (read once), else random


def _data(n: int) -> tuple[np.ndarray, np.ndarray]:
    X, y = _all_data()
    assert n <= len(X)
    return np.ascontiguousarray(X[:n]), y[:n].copy()


def _fit_both(cfg, batches: int, scan: bool) -> tuple[list, list, list, list]:
    """Initial weights, JAX's and deepnet's weights after ``batches`` steps (plain fit), and
    JAX's gradient at the initial weights on the first batch."""
    import jax

    bench = _bench()
    X, y = _data(batches * cfg.batch)
    start = bench.initial_weights(cfg)
    run = bench.JaxRun(cfg, X, y, scan=scan)
    grads = jax.jit(jax.grad(run.loss))(run.params, run.Xs[0], run.Ts[0])
    run.go()
    net = bench.deepnet_net(cfg)
    net.fit(X, y, epochs=1, batch_size=cfg.batch, shuffle=False, graphs="off")
    assert run.compile_s > 0
    return start, run.weights(), _layers(net.get_weights(), cfg.bias), grads


def _compare(cfg, start: list, got: list, want: list, grads: list | None = None) -> None:
    """Every parameter moved, and JAX's equals deepnet's to float32 rounding: 1e-3 of the
    largest step.  With ``grads`` (Adam), entries whose gradient is within 100 ε of zero only
    stay within Adam's bound on a step (η each): there the step is g / (|g| + ε), decided by
    the rounding of a gradient that is almost nothing."""
    for i, ((W0, b0), (Wj, bj), (Wd, bd)) in enumerate(zip(start, got, want, strict=True)):
        for j, (p0, pj, pd) in enumerate(((W0, Wj, Wd), (b0, bj, bd))):
            where = f"{cfg.name} layer {i} {'Wb'[j]}"
            if p0 is None:
                assert pj is None and pd is None, where
                continue
            assert pj.dtype == np.float32 and pj.shape == p0.shape, where
            step = np.abs(pd - p0).max()
            assert step > 0, where                 # the weights moved: the comparison means something
            diff = np.abs(pj - pd)
            if grads is not None:
                tiny = np.abs(np.asarray(grads[i][j])) <= 100 * 1e-8
                assert diff[tiny].max(initial=0) <= 2 * cfg.lr, where
                diff = diff[~tiny]
            assert diff.max() <= 1e-3 * step + 2e-7, f"{where}: {diff.max()} against a step of {step}"


@pytest.mark.parametrize("config", ["seed", "small", "medium", "wide"])
def test_one_jax_step_gives_deepnets_weights(config: str) -> None:
    """The configurations as benchmarked, one batch: "jax jit"'s step against deepnet's fit."""
    pytest.importorskip("jax")
    cfg = _bench().CONFIGS[config]
    start, got, want, grads = _fit_both(cfg, 1, scan=False)
    _compare(cfg, start, got, want, grads if cfg.optimizer == "adam" else None)


@pytest.mark.parametrize("config", ["seed", "small", "medium", "wide"])
@pytest.mark.parametrize("scan", [False, True], ids=["jit", "scan"])
def test_three_jax_steps_give_deepnets_weights(config: str, scan: bool) -> None:
    """Three batches: the optimizer's state (momentum, Adam's moments and step count) carried
    from step to step, by the Python loop and by lax.scan.  Medium and wide have their layers
    narrowed to 32 (loss, optimizer and batch kept): on 2048-wide layers a gradient within ε of
    zero takes an Adam step of ±η either way, which moves the next steps' ReLU boundaries."""
    pytest.importorskip("jax")
    cfg = _bench().CONFIGS[config]
    if cfg.optimizer == "adam":
        cfg = dataclasses.replace(cfg, sizes=[784] + [32] * (len(cfg.sizes) - 2) + [10])
    start, got, want, _ = _fit_both(cfg, 3, scan)
    _compare(cfg, start, got, want)


def _layers(weights: dict, bias: bool) -> list[tuple[np.ndarray, np.ndarray | None]]:
    Ws = [v for k, v in weights.items() if k.endswith("weight")]
    bs = [v for k, v in weights.items() if k.endswith("bias")] if bias else [None] * len(Ws)
    return list(zip(Ws, bs, strict=True))


def test_run_reports_jax_and_deepnet_compiled(tmp_path: Path) -> None:
    pytest.importorskip("jax")
    out = tmp_path / "cpu.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DEEPNET_MNIST", None)          # random pixels: same shapes, no data needed
    proc = subprocess.run([sys.executable, str(SCRIPT), "--configs", "seed", "--reps", "1", "--scale", "0.01",
                           "--threads", "1", "--no-mkl", "--only", "deepnet compiled,jax jit,jax scan",
                           "--json", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["meta"]["jax"]
    res = report["results"]["seed"]
    assert set(res["samples_per_s"]) == {"deepnet", "deepnet compiled", "jax jit", "jax scan", "BLAS floor"}
    assert set(res["compile_s"]) == {"deepnet compiled", "jax jit", "jax scan"}
    assert all(len(v) == 1 and v[0] > 0 for v in res["compile_s"].values())
    sps = {k: v[0] for k, v in res["samples_per_s"].items()}
    assert res["compiled_ratio_vs_deepnet"] == pytest.approx([sps["deepnet compiled"] / sps["deepnet"]])
    assert res["compiled_ratio_vs_jax_scan"] == pytest.approx([sps["deepnet compiled"] / sps["jax scan"]])
    fastest = max(sps["jax jit"], sps["jax scan"])
    assert res["compiled_ratio_vs_fastest_peer"] == pytest.approx([sps["deepnet compiled"] / fastest])
    assert res["target"]["against"] == "jax scan" and isinstance(res["target"]["met"], bool)
    assert "| seed |" in proc.stdout and "compiled / fastest peer" in proc.stdout


def test_only_rejects_an_unknown_framework(tmp_path: Path) -> None:
    # --reps 0: were the name accepted, nothing would be timed
    proc = subprocess.run([sys.executable, str(SCRIPT), "--configs", "seed", "--reps", "0", "--only", "jax,torch"],
                          cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2
    assert "--only: expected a comma-separated subset of" in proc.stderr and "'jax,torch'" in proc.stderr
