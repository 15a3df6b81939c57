"""The GPU install and its surroundings, read against CuPy 14.2 without a GPU: the memory limit
CuPy reads, the extras that install CuPy with its CUDA libraries, install hints for the
installed CuPy's CUDA, and the NCCL stand-in's unique id."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import deepnet as dn

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _cupy_reads(value: str) -> bool:
    """Whether CuPy itself reads ``value`` as CUPY_GPU_MEMORY_LIMIT (its own parser; no GPU needed)."""
    memory = pytest.importorskip("cupy.cuda.memory")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CUPY_GPU_MEMORY_LIMIT", value)
        try:
            memory._parse_limit_string()
        except ValueError:
            return False
    return True


# ---------------------------------------------------------------------- CUPY_GPU_MEMORY_LIMIT
def _limits_in_the_docs() -> list[tuple[str, str]]:
    """Every value the pages give CUPY_GPU_MEMORY_LIMIT: ``CUPY_GPU_MEMORY_LIMIT=v``, and the
    code spans of a paragraph that names the variable which look like a size ("4G", "50%")."""
    found = []
    for page in PAGES:
        for para in re.split(r"\n\s*\n", page.read_text()):
            if "CUPY_GPU_MEMORY_LIMIT" not in para:
                continue
            values = re.findall(r"CUPY_GPU_MEMORY_LIMIT=([^\s`'\")]+)", para)
            values += [v for v in re.findall(r"`([^`]+)`", para) if re.fullmatch(r"\d[\d_.]*\s*[A-Za-z%]*", v)]
            found += [(page.name, v) for v in values]
    return found


def test_the_memory_limits_the_docs_give_are_ones_cupy_reads():
    limits = _limits_in_the_docs()
    assert limits, "docs/gpu.md shows how to set CUPY_GPU_MEMORY_LIMIT"
    bad = [(page, v) for page, v in limits if not _cupy_reads(v)]
    assert not bad, f"CuPy raises at its first allocation with these: {bad}"


@pytest.mark.parametrize("value", ["4G", "4GB", "1e9", "50 %x", "half%", "4294967296", "50%", "12.5%", " 1024 "])
def test_deepnet_checks_the_memory_limit_as_cupy_reads_it(value):
    from deepnet.backend import cuda_setup
    ok = _cupy_reads(value)
    if ok:
        cuda_setup.check_memory_limit(value)
    else:
        with pytest.raises(dn.BackendError, match=r"whole number of bytes .* or a percentage .*\(50%\)"):
            cuda_setup.check_memory_limit(value)


@pytest.mark.cupy_shaped
def test_a_memory_limit_cupy_cannot_read_is_refused_when_the_backend_is_made(monkeypatch):
    shaped = pytest.importorskip("deepnet.backend.cupy_shaped")
    monkeypatch.setenv("CUPY_GPU_MEMORY_LIMIT", "4G")
    with pytest.raises(dn.BackendError, match=r"^CUPY_GPU_MEMORY_LIMIT='4G' is not a limit CuPy can read: "
                                              r"give a whole number of bytes"):
        shaped.FusedCupyShapedOps()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "deepnet", "info"], capture_output=True, text=True, timeout=120,
                         env=env).stdout          # a new process: no backend made before the variable was set
    assert re.search(r"cupy-shaped CUPY_GPU_MEMORY_LIMIT='4G' is not a limit CuPy can read", out), out
    monkeypatch.setenv("CUPY_GPU_MEMORY_LIMIT", "50%")
    shaped.FusedCupyShapedOps()


# ---------------------------------------------------------------------- the cuda extras
def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_the_cuda_extras_install_cupy_with_its_cuda_libraries():
    """A driver-only machine needs NVRTC (kernels) and cuBLAS from pip: CuPy's ``ctk`` extra."""
    extras = _extras()
    for major in (12, 13):
        assert extras[f"cuda{major}"] == [f"cupy-cuda{major}x[ctk]>=14.2,<15"]
    assert all("[" not in req for req in extras["cupy-shaped"]), "the CPU-only test backend needs no CUDA libraries"


def test_the_installed_cupy_defines_the_ctk_extra_with_nvrtc_and_cublas():
    names = [n for n in metadata.packages_distributions().get("cupy", []) if re.fullmatch(r"cupy-cuda\d+x", n)]
    if not names:
        pytest.skip("no cupy-cudaNNx wheel installed")
    dist = metadata.distribution(names[0])
    assert "ctk" in (dist.metadata.get_all("Provides-Extra") or [])
    ctk = [r for r in dist.requires or [] if 'extra == "ctk"' in r]
    assert ctk and "cublas" in ctk[0] and "nvrtc" in ctk[0], ctk


def test_gpu_page_says_what_the_extras_install_and_when_a_system_toolkit_is_used():
    text = (ROOT / "docs" / "gpu.md").read_text()
    assert "[ctk]" in text and "NVRTC" in text and "cuBLAS" in text
    assert "CUDA_PATH" in text and "LD_LIBRARY_PATH" in text


# ---------------------------------------------------------------------- hints for the installed CUDA
@pytest.mark.parametrize("dists, nccl, ctk", [
    (["cupy-cuda13x"], "pip install nvidia-nccl-cu13", "pip install 'cupy-cuda13x[ctk]'"),
    (["cupy-cuda12x"], "pip install nvidia-nccl-cu12", "pip install 'cupy-cuda12x[ctk]'"),
    ([], "nvidia-nccl-cu12 (CUDA 12) or nvidia-nccl-cu13 (CUDA 13)", "'cupy-cuda12x[ctk]' (CUDA 12) or"),
])
def test_install_hints_name_the_packages_for_the_installed_cupys_cuda(monkeypatch, dists, nccl, ctk):
    from deepnet.backend import cuda_setup
    monkeypatch.setattr(metadata, "packages_distributions", lambda: {"cupy": dists} if dists else {})
    assert nccl in cuda_setup.nccl_install_hint()
    assert ctk in cuda_setup.cuda_libraries_hint()


def test_the_nccl_error_names_nccl_for_the_installed_cupys_cuda(monkeypatch):
    """On CUDA 13 the hint must not send the user to the CUDA 12 NCCL wheel."""
    from deepnet.distributed import nccl as deepnet_nccl
    monkeypatch.setattr(metadata, "packages_distributions", lambda: {"cupy": ["cupy-cuda13x"]})
    pytest.importorskip("cupy.cuda", reason="needs the cupy package (its nccl module is replaced here)")
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", None)    # "import" fails as without NCCL
    with pytest.raises(ImportError, match=r"pip install nvidia-nccl-cu13\b") as err:
        deepnet_nccl.import_nccl()
    assert "cu12" not in str(err.value)


# ---------------------------------------------------------------------- the NCCL stand-in
def _installed_nccl_signature() -> str:
    """``NcclCommunicator(...)``'s signature as the installed CuPy's compiled module documents it
    (read from the file: importing it needs libnccl)."""
    try:
        spec = importlib.util.find_spec("cupy_backends.cuda.libs.nccl")
    except ModuleNotFoundError:         # (a dotted name's parents are imported: no cupy at all)
        spec = None
    if spec is None or spec.origin is None:
        pytest.skip("CuPy's NCCL module is not installed")
    data = Path(spec.origin).read_bytes()
    m = re.search(rb"NcclCommunicator\(int ndev, (\w+) commId, int rank", data)
    if m is None:
        pytest.skip("this CuPy's NCCL module does not document NcclCommunicator's signature")
    return m.group(1).decode()


def test_the_nccl_stand_in_hands_out_the_unique_id_the_installed_cupy_takes():
    from tests import fake_nccl
    typ = _installed_nccl_signature()
    uid = fake_nccl.get_unique_id()
    assert type(uid).__name__ == typ and len(uid) == fake_nccl.UNIQUE_ID_BYTES
    with pytest.raises(TypeError, match=f"expected {typ}, got tuple"):
        fake_nccl.NcclCommunicator(1, tuple(uid), 0)
