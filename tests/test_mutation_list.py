"""The mutation check's list cannot silently rot: every planted bug's snippet stands exactly
once in the file it names (the full check, scripts/mutation_check.py, runs the tests)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_mutation_snippet_is_found_exactly_once():
    spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "scripts" / "mutation_check.py")
    mc = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mc                 # its dataclasses look their module up there
    spec.loader.exec_module(mc)
    assert len(mc.MUTATIONS) >= 20
    assert mc.check_snippets(ROOT, mc.MUTATIONS) == []
