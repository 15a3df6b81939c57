"""docs/backends.md and docs/gpu.md run: every ```python block of each page, in order, in one
namespace per page, exactly as written (no substitution: the pages ask available_backends()
themselves and fall back to the CuPy-shaped backend without a GPU), with no network."""

from __future__ import annotations

import contextlib
import contextvars
import io
import re
from pathlib import Path

import pytest
from tests.conftest import no_network

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["docs/backends.md", "docs/gpu.md"]
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
#: what each page's blocks must print (a block that silently did nothing would not)
PRINTS = {
    "docs/backends.md": ["strict\n", "ndarray float32", "host_arrays=True  cheap_sync=True", "<Ops 'torch'> ndarray",
                         "HostSyncs(count=2,"],
    "docs/gpu.md": ["pool_used_bytes"],
}

#: what each page's blocks import or ask for beyond the test extra, with why
NEEDS = {
    "docs/backends.md": {"cupy": "its blocks run the CuPy-shaped backend without a GPU (pip install cupy-cuda13x)",
                         "torch": "it registers PyTorch as a backend (pip install torch)"},
    "docs/gpu.md": {"cupy": "its blocks run the CuPy-shaped backend without a GPU (pip install cupy-cuda13x)"},
}


def skip_without_what_the_page_needs(page: str) -> None:
    for module, why in NEEDS[page].items():
        pytest.importorskip(module, reason=f"{page}: {why}; {module} is not installed")


def python_blocks(page: str) -> list[tuple[int, str]]:
    """(first line of code, code) of each ```python block of the page."""
    text = (ROOT / page).read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(1)) + 1, m[1]) for m in _FENCE.finditer(text)]




def test_the_pages_have_python_blocks():
    assert len(python_blocks("docs/backends.md")) >= 5
    assert len(python_blocks("docs/gpu.md")) >= 2


@pytest.mark.parametrize("page", PAGES)
def test_python_blocks_run_in_order(page, tmp_path, monkeypatch):
    skip_without_what_the_page_needs(page)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__doc__"}
    out = io.StringIO()
    context = contextvars.copy_context()          # the page's dn.set_backend(...) stays in the page
    for line, code in python_blocks(page):
        source = "\n" * (line - 1) + code         # tracebacks point at the page's own lines
        with no_network(), contextlib.redirect_stdout(out):
            context.run(exec, compile(source, page, "exec"), namespace)
    for text in PRINTS[page]:
        assert text in out.getvalue(), f"{page} should print {text!r}; it printed:\n{out.getvalue()}"


@pytest.mark.parametrize("page", PAGES)
def test_each_python_block_runs_on_its_own(page, tmp_path, monkeypatch):
    """Self-contained: each block has its own imports and names (a reader copies one block)."""
    skip_without_what_the_page_needs(page)
    monkeypatch.chdir(tmp_path)
    for line, code in python_blocks(page):
        with no_network(), contextlib.redirect_stdout(io.StringIO()):
            source = compile("\n" * (line - 1) + code, page, "exec")
            contextvars.copy_context().run(exec, source, {"__name__": "__doc__"})
