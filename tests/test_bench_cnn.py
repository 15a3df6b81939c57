"""benchmarks/bench_cnn.py runs end to end (``--dry-run``: 512 random images, one pair of child
processes) and its JSON holds both frameworks' rates, the ratio and deepnet's per-layer split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_cnn.py"


def test_dry_run_reports_both_frameworks_and_the_ratio(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "cnn.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DEEPNET_MNIST", None)          # random pixels: no data needed, same shapes
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--json", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text(encoding="utf-8"))

    assert report["data"] == "synthetic"
    assert report["config"]["dry_run"] and report["config"]["reps"] == 1
    for fw in ("deepnet", "pytorch"):
        entry = report["frameworks"][fw]
        rate = entry["samples_per_s"]
        assert rate["median"] > 0 and len(rate["values"]) == 1, fw
        assert entry["peak_rss_mib"]["median"] > 0, fw
    assert report["frameworks"]["deepnet"]["backend"] == "numpy"
    ratio = report["ratio_deepnet_over_pytorch"]
    rates = {fw: report["frameworks"][fw]["samples_per_s"]["median"] for fw in ("deepnet", "pytorch")}
    want = rates["deepnet"] / rates["pytorch"]
    assert ratio["median"] == pytest.approx(want)
    assert isinstance(report["meets_target"], bool)
    split = report["deepnet_layer_split"]
    names = [layer["layer"] for layer in split["layers"]]
    assert sum("Conv2D" in n for n in names) == 2 and sum("MaxPool2D" in n for n in names) == 2
    assert any(k.endswith(("unfold", "unfold_t")) for layer in split["layers"] for k in layer["ops_ms"])
