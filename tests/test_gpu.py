"""GPU path: fused CuPy kernels against the generic code, streaming, memory; and the GPU
check script's CPU dry run (which needs no GPU)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import deepnet as dn
from deepnet.backend import get_ops, to_device, to_host
from deepnet.backend.cupy_ops import CupyOps, FusedCupyOps
from deepnet.backend.cupy_shaped import CupyShapedOps, FusedCupyShapedOps
from deepnet.presets import mlp_layers

ROOT = Path(__file__).resolve().parent.parent
#: the CuPy code paths: on a GPU, and on the CuPy-shaped backend (CuPy's signatures, NumPy's maths,
#: the fused kernels' C source evaluated) that runs them in CI without one
CUPY_PATHS = [pytest.param("cupy", marks=pytest.mark.cupy),
              pytest.param("cupy-shaped", marks=pytest.mark.cupy_shaped)]
#: (fused, generic) classes of each CuPy code path
CUPY_CLASSES = {"cupy": (FusedCupyOps, CupyOps), "cupy-shaped": (FusedCupyShapedOps, CupyShapedOps)}


def fused_and_generic(cupy_name):
    """Two backends of their own on one namespace: the fused kernels and the generic code."""
    fused_cls, generic_cls = CUPY_CLASSES[cupy_name]
    registered = get_ops(cupy_name)
    assert type(registered) is fused_cls            # the registered backend has the fused kernels
    return fused_cls(registered.xp), generic_cls(registered.xp)


@pytest.mark.cupy_shaped          # the dry run compares numpy with the CuPy-shaped backend
def test_gpu_check_script_dry_run(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run"], capture_output=True,
                         text=True, env=env, timeout=600, cwd=ROOT)
    shown = out.stdout[-4000:] + out.stderr[-2000:]
    assert "== verdict: numpy vs cupy-shaped, CPU dry run ==" in out.stdout and "| config |" in out.stdout, shown
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    steps = {s["step"]: s for s in verdict["steps"]}
    assert list(steps) == ["tests", "parity (a)", "parity (b)", "parity (c)", "CLI train", "CLI evaluate",
                           "CLI predict", "benchmark"]
    for s in steps.values():      # one verdict line per step, with its figure
        assert f"{'PASS' if s['ok'] else 'FAIL'}  {s['step']:<13s} {s['figure']}" in out.stdout, shown
    parity = json.loads((tmp_path / "parity.json").read_text())
    assert parity["b"] == "cupy-shaped" and parity["kernels"] == ["fused", "generic"]
    for c, threshold in (("a", 1e-12), ("b", 1e-5), ("c", 0.3)):
        res = parity[f"criterion_{c}"]
        assert res["threshold"] == threshold and set(res["runs"]) == {
            f"{k}/{o}" for k in ("fused", "generic") for o in (("momentum", "adam") if c != "c" else ("adam",))}
    assert parity["criterion_a"]["ok"] and parity["criterion_c"]["ok"], shown
    assert steps["CLI train"]["ok"] and steps["CLI evaluate"]["ok"] and steps["CLI predict"]["ok"], shown
    assert (tmp_path / "cli" / "model.npz").is_file()
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench["dry_run"] and set(bench["results"]) == {"medium", "seed", "wide"}
    failed = [s["step"] for s in steps.values() if not s["ok"]]
    assert not failed and verdict["ok"] and out.returncode == 0, shown


#: 104 GPU tests took 18 s on an H200 (pytest's time, kernel compilation included)
MEASURED_SECONDS_PER_GPU_TEST = 18 / 104


def _script(args, env=None, timeout=120):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **(env or {})}
    return subprocess.run(["bash", *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


def test_gpu_check_sizes_the_tests_limit_from_their_count():
    """The tests' limit was 120 s for 104 GPU tests; it now follows the count the script collects."""
    out = _script(["scripts/gpu_check.sh", "--plan"])
    assert out.returncode == 0, out.stdout + out.stderr
    plan = re.search(r"tests: (\d+) GPU tests, limit (\d+) s;.* in all (\d+) s", out.stdout)
    assert plan, out.stdout
    n, limit, total = map(int, plan.groups())
    collect = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", "tests", "-m", "cupy",
               "--deselect", "tests/test_gpu.py::test_gpu_check_script_dry_run"]
    collected = subprocess.run([sys.executable, *collect], capture_output=True, text=True, timeout=300, cwd=ROOT).stdout
    assert n == int(re.search(r"(\d+)(/\d+)? tests? collected", collected).group(1)) > 104
    assert limit >= 30 + 2 * MEASURED_SECONDS_PER_GPU_TEST * n, "twice the measured rate, and time to start"
    assert total < 420, "the script must leave room for gpu_graphs_check.sh in a 10-minute device command"


def test_the_gpu_scripts_stop_at_their_shared_deadline(tmp_path):
    """Both scripts run in one device command (10 minutes at most) under GPU_CHECK_DEADLINE: past
    it, no step starts, each says so and fails, and the scripts end at once."""
    page = (ROOT / "docs" / "gpu.md").read_text()
    deadline = int(re.search(r"GPU_CHECK_DEADLINE=\$\(\( \$\(date \+%s\) \+ (\d+) \)\)", page).group(1))
    assert deadline + 60 <= 600, "a minute under the device's per-command limit, for what follows the deadline"
    past = {"GPU_CHECK_DEADLINE": "1", "OUT": str(tmp_path / "graphs")}
    start = time.monotonic()
    out = _script(["scripts/gpu_graphs_check.sh", "--dry-run", "--skip-tests"], env=past)
    assert out.returncode != 0 and time.monotonic() - start < 30, out.stdout + out.stderr
    assert "not run: GPU_CHECK_DEADLINE has passed" in out.stderr + out.stdout
    assert "FAIL (exit 124)  parity" in out.stdout and "FAIL (exit 124)  benchmark" in out.stdout, out.stdout
    start = time.monotonic()        # (it still counts its tests: a few seconds on a GPU machine)
    out = _script(["scripts/gpu_check.sh", "--dry-run"], env={**past, "OUT": str(tmp_path / "check")})
    assert out.returncode == 1 and time.monotonic() - start < 90, out.stdout + out.stderr
    verdict = json.loads((tmp_path / "check" / "verdict.json").read_text())
    assert not any(step["ok"] for step in verdict["steps"]), verdict
    assert "not run: GPU_CHECK_DEADLINE has passed" in (tmp_path / "check" / "tests.txt").read_text()


@pytest.mark.parametrize("cupy_name", CUPY_PATHS)
@pytest.mark.parametrize("method, args", [
    ("sigmoid_backward_", ((8, 5), (8, 5))),
    ("tanh_backward_", ((8, 5), (8, 5))),
    ("relu_backward_", ((8, 5), (8, 5))),
])
def test_fused_activation_kernels_match_generic(rng, method, args, cupy_name):
    dy = rng.normal(size=args[0]).astype(np.float32)
    y = rng.random(args[1]).astype(np.float32) - 0.3
    results = []
    for ops in fused_and_generic(cupy_name):
        results.append(to_host(getattr(ops, method)(to_device(dy, ops), to_device(y, ops))))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cupy_name", CUPY_PATHS)
@pytest.mark.parametrize("opt", ["sgd", "momentum", "nesterov", "adam", "adamw"])
def test_fused_optimizer_kernels_match_generic(rng, opt, cupy_name):
    make = {"sgd": lambda: dn.SGD(0.1), "momentum": lambda: dn.SGD(0.1, momentum=0.9),
            "nesterov": lambda: dn.SGD(0.1, momentum=0.9, nesterov=True), "adam": lambda: dn.Adam(0.01),
            "adamw": lambda: dn.AdamW(0.01, weight_decay=0.1)}[opt]
    X = rng.normal(size=(64, 10)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    weights = []
    for ops in fused_and_generic(cupy_name):
        net = dn.Network(mlp_layers("10-16-3", "relu"), seed=0, backend=ops, loss="xent", optimizer=make())
        net.fit(X, y, epochs=2, batch_size=8, shuffle=False)
        weights.append(net.get_weights())
    for k in weights[0]:
        np.testing.assert_allclose(weights[0][k], weights[1][k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cupy_name", CUPY_PATHS)
def test_cupy_matches_numpy_over_many_steps(rng, cupy_name):
    X = rng.normal(size=(512, 20)).astype(np.float32)
    y = rng.integers(0, 4, 512)
    out = {}
    for backend in ("numpy", cupy_name):
        net = dn.Network(mlp_layers("20-32-32-4", "relu"), seed=0, backend=backend, loss="xent", optimizer=dn.Adam(1e-3))
        out[backend] = (net.fit(X, y, epochs=3, batch_size=16)["loss"], net.get_weights())
    np.testing.assert_allclose(out[cupy_name][0], out["numpy"][0], rtol=1e-4)
    for k in out["numpy"][1]:
        np.testing.assert_allclose(out[cupy_name][1][k], out["numpy"][1][k], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("cupy_name", CUPY_PATHS)
def test_streaming_from_pinned_host_memory_matches_resident(rng, cupy_name):
    X = rng.normal(size=(300, 8)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    w = []
    for chunk in (None, 60):
        net = dn.Network(mlp_layers("8-16-3", "relu"), seed=0, backend=cupy_name, loss="xent", optimizer=dn.SGD(0.1))
        net.fit(X, y, epochs=2, batch_size=20, stream_chunk_rows=chunk)
        w.append(net.get_weights())
    for k in w[0]:
        np.testing.assert_array_equal(w[0][k], w[1][k])


@pytest.mark.cupy
def test_memory_info_release_and_clear_out_of_memory_error():
    ops = get_ops("cupy")
    info = ops.memory_info()
    assert {"pool_used_bytes", "pool_cached_bytes", "free_bytes", "total_bytes"} <= set(info)
    assert set(ops.memory.info()) == set(info)
    ops.release_memory()
    assert "name" in ops.memory.describe()
    pool = ops.xp.get_default_memory_pool()
    limit = pool.get_limit()
    pool.set_limit(size=pool.used_bytes() + 2**20)          # as CUPY_GPU_MEMORY_LIMIT would
    try:
        with pytest.raises(MemoryError, match="GPU out of memory while copying data to the GPU: needed 16.0 MiB"):
            to_device(np.zeros((4, 2**20), np.float32), ops)
    finally:
        pool.set_limit(size=limit)

