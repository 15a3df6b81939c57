"""Installing, running and uninstalling deepnet as a user does: nothing of it may stay behind
in site-packages (a leftover ``deepnet/`` folder makes the next install import deepnet as an
empty namespace package), and numba's compiled kernels go to a per-user cache folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


def _wheel(tmp_path: Path) -> Path:
    """deepnet's wheel, built by pip from a copy of the sources (the checkout stays untouched);
    skips, with pip's last line, where pip cannot build it (no setuptools to be had)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "deepnet", src / "deepnet", ignore=shutil.ignore_patterns("__pycache__"))
    out = _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path / "dist"), str(src)])
    wheels = list((tmp_path / "dist").glob("deepnet-*.whl"))
    if out.returncode != 0 or not wheels:
        last = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
        pytest.skip(f"pip cannot build deepnet's wheel here: {last[0]}")
    return wheels[0]


def _venv_with_numba(path: Path) -> tuple[Path, Path]:
    """A new venv (python, site-packages) that imports numpy and numba from this interpreter's
    environment through a folder of links to those packages alone, so that it sees no other
    distribution (this checkout's deepnet included) and installs nothing from an index."""
    import llvmlite
    import numba
    import numpy

    deps = path.parent / "deps"
    deps.mkdir()
    for module in (numpy, numba, llvmlite):
        package = Path(module.__file__).resolve().parent
        for item in (package, package.with_name(package.name + ".libs")):   # wheels' bundled libraries
            if item.exists():
                (deps / item.name).symlink_to(item, target_is_directory=True)
    venv.create(path, with_pip=False, symlinks=os.name != "nt")
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
                   .stdout.strip())
    (purelib / "_numba_from_outside.pth").write_text(f"{deps}\n")
    return python, purelib


def _csv(path: Path) -> Path:
    """90 rows of 64 features and 3 classes: a network on it has parameters large enough for
    numba's update kernels."""
    import numpy as np

    x = np.random.default_rng(0).random((90, 64)).round(3)
    rows = [",".join([*(f"{v}" for v in row), str(i % 3)]) for i, row in enumerate(x)]
    path.write_text(",".join([*(f"f{i}" for i in range(64)), "label"]) + "\n" + "\n".join(rows) + "\n")
    return path


def test_install_train_uninstall_leaves_nothing_and_caches_per_user(tmp_path):
    """The user's path: ``pip install .``, ``deepnet train`` (numba compiles the update and
    activation kernels), ``pip uninstall deepnet``: site-packages holds nothing of deepnet
    afterwards, and the compiled kernels are in ``$XDG_CACHE_HOME/deepnet/numba``."""
    pytest.importorskip("numba", reason="numba (the 'fast' extra) compiles the kernels this checks")
    wheel = _wheel(tmp_path)
    python, purelib = _venv_with_numba(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "NUMBA_CACHE_DIR", "DEEPNET_NUMBA", "DEEPNET_BACKEND")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    out = _run([*pip, "install", "--quiet", "--no-deps", "--no-index", str(wheel)], env=env)
    assert out.returncode == 0, out.stderr

    deepnet = python.parent / ("deepnet.exe" if os.name == "nt" else "deepnet")
    train = [str(deepnet), "train", "--dataset", "csv", "--data", str(_csv(tmp_path / "rows.csv")),
             "--layers", "64-32-3", "--epochs", "1", "--out", str(tmp_path / "run")]
    out = _run(train, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    where = _run([str(python), "-c", "import deepnet; print(deepnet.__file__)"], env=env, cwd=tmp_path)
    assert Path(where.stdout.strip()).parent == purelib / "deepnet", where.stdout + where.stderr

    out = _run([*pip, "uninstall", "--yes", "deepnet"], env=env)
    assert out.returncode == 0, out.stderr
    left = sorted(str(p.relative_to(purelib)) for p in purelib.rglob("*") if "deepnet" in p.name.lower())
    assert not left, f"left in site-packages after `pip uninstall deepnet`: {left}"
    cached = list((tmp_path / "cache" / "deepnet" / "numba").rglob("*.nbi"))
    assert cached, "no compiled kernel in $XDG_CACHE_HOME/deepnet/numba"


def _add(x, y):  # pragma: no cover - compiled
    for i in range(x.size):
        y[i] += x[i]


def _compiled_add(monkeypatch, numba_cache_dir: str, xdg: str):
    """A kernel made as deepnet makes its own, under these settings, called once."""
    import numpy as np

    numba = pytest.importorskip("numba", reason="numba (the 'fast' extra) compiles the kernels")
    from deepnet.backend import numba_kernels as nk

    monkeypatch.setattr(numba.config, "CACHE_DIR", numba_cache_dir)
    monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    kernel = nk._njit(_add)
    y = np.zeros(4, np.float32)
    kernel(np.arange(4, dtype=np.float32), y)
    assert y.tolist() == [0.0, 1.0, 2.0, 3.0]
    return nk


def test_kernel_cache_follows_xdg_cache_home(monkeypatch, tmp_path):
    nk = _compiled_add(monkeypatch, "", str(tmp_path / "xdg"))
    assert nk.cache_root() == str(tmp_path / "xdg" / "deepnet" / "numba")
    assert list((tmp_path / "xdg" / "deepnet" / "numba").rglob("test_install._add-*.nbi"))


def test_kernel_cache_follows_an_explicit_numba_cache_dir(monkeypatch, tmp_path):
    nk = _compiled_add(monkeypatch, str(tmp_path / "numba"), str(tmp_path / "xdg"))
    assert nk.cache_root() == str(tmp_path / "numba")
    assert list((tmp_path / "numba").rglob("test_install._add-*.nbi"))
    assert not (tmp_path / "xdg").exists()


def test_unwritable_kernel_cache_still_compiles_and_runs(monkeypatch, tmp_path):
    """A cache folder that cannot be created (here: below a plain file, which holds even for
    root) costs a compilation per process and nothing else."""
    (tmp_path / "file").write_text("")
    _compiled_add(monkeypatch, "", str(tmp_path / "file"))
    assert list(tmp_path.rglob("*.nbi")) == []


def test_serial_and_threaded_builds_are_cached_apart():
    """numba keys a cache entry by function and signature: the serial and the threaded build
    of one update would otherwise load each other's machine code."""
    pytest.importorskip("numba", reason="numba (the 'fast' extra) compiles the kernels")
    from deepnet.backend import numba_kernels as nk

    serial, threaded = nk.kernel("sgd", 1), nk.kernel("sgd", nk.PARALLEL_MIN_SIZE)
    assert serial is not threaded
    assert serial.stats.cache_path != threaded.stats.cache_path
