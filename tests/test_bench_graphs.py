"""benchmarks/bench_gpu_graphs.py runs end to end on the CPU (``--dry-run``) and its JSON holds
every network and every column: a measurement, or the reason it could not be taken."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_gpu_graphs.py"

NETS = {"small", "medium", "wide", "seed"}
COLUMNS = {"deepnet_eager", "deepnet_graph", "deepnet_graph_epoch", "deepnet_bf16", "torch_eager", "torch_fused",
           "torch_cuda_graph", "jax_jit", "jax_scan", "products"}


def test_dry_run_reports_every_network_and_column(tmp_path: Path) -> None:
    out = tmp_path / "graphs.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--reps", "1", "--json", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text(encoding="utf-8"))

    assert set(report["nets"]) == NETS
    assert set(report["columns"]) == COLUMNS
    for name, net in report["nets"].items():
        assert set(net["columns"]) == COLUMNS, name
        for key, entry in net["columns"].items():
            where = f"{name}/{key}: {entry}"
            assert entry["status"] in ("ok", "n/a"), where          # "error" is a bug in the script
            if entry["status"] == "ok":
                assert entry["reps"] and all(r > 0 for r in entry["reps"]), where
                assert entry["median"] > 0, where
            else:
                assert isinstance(entry["reason"], str) and entry["reason"], where
        eager = net["columns"]["deepnet_eager"]
        assert eager["status"] == "ok" and len(eager["reps"]) == 1 and eager["reps"][0] > 0, name
        assert net["columns"]["products"]["status"] == "ok", name
        assert set(net["ratios"]) >= {"graph_over_products", "graph_over_torch_graph", "bf16_over_float32"}

    # the dry run's sizes: a few batches, the wide net shrunk
    assert report["nets"]["wide"]["sizes"] == [784, 64, 64, 10] and report["nets"]["wide"]["batch"] == 32
    assert report["settings"]["backend"] == "numpy" and report["settings"]["dry_run"] is True
    for k in ("command", "date", "devices", "versions"):
        assert report[k], k
    assert "--dry-run" in report["command"]
    # one markdown table, a row per network
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| network | deepnet eager |") and len(rows) == 1 + len(NETS)


def test_graph_parity_dry_run_passes_every_criterion(tmp_path: Path) -> None:
    """benchmarks/graph_parity.py on the CuPy-shaped backend (the device script's step 2)."""
    import pytest

    pytest.importorskip("cupy")
    out = tmp_path / "parity.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DEEPNET_MNIST", None)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "graph_parity.py"), "--dry-run", "--json",
                           str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text(encoding="utf-8"))
    assert res["backend"] == "cupy-shaped" and res["pass"]
    assert res["a"]["worst"] <= 1e-12
    assert len(res["b"]["relative_per_step"]) == 10


def test_device_script_is_valid_bash() -> None:
    proc = subprocess.run(["bash", "-n", str(ROOT / "scripts" / "gpu_graphs_check.sh")], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
