"""Counts of how the training code is put together, read from the source with ``ast``.

``python scripts/design_counts.py [ROOT]`` (ROOT: a checkout, default this one) prints:

- the call chain from ``Network.fit`` to ``train_step`` (shortest, by function name) and its length;
- branches on data-parallel training in ``deepnet/training`` (``par``/``parallel``/``communicator``
  compared with ``None``);
- writes to the attributes of a run's position object (``pos.x = ...``);
- places where ``fit``'s options are written out (a signature, a call or a class's fields naming 10
  or more of them);
- ``hasattr``/``getattr`` calls outside ``deepnet/backend`` (probes for undeclared hooks);
- the longest functions of ``deepnet/`` and of the command line.

docs/architecture.md gives the figures before and after the issue 25 redesign.
"""

from __future__ import annotations

import argparse
import ast
import re
from collections import deque
from pathlib import Path

FIT_OPTIONS = {"epochs", "batch_size", "loss", "optimizer", "shuffle", "validation_data", "callbacks",
               "verbose", "check_finite", "checkpoint", "checkpointer", "resume", "stream_chunk_rows",
               "graphs", "precision", "communicator", "sync_batchnorm", "rows", "validation_rows"}


def modules(root: Path) -> dict[str, ast.Module]:
    pkg = root / "deepnet"
    return {str(p.relative_to(root)): ast.parse(p.read_text(), str(p)) for p in sorted(pkg.rglob("*.py"))}


def functions(trees: dict[str, ast.Module]) -> dict[str, ast.FunctionDef]:
    """Every function and method, named ``path:Class.name`` / ``path:name`` (nested ones too)."""
    out: dict[str, ast.FunctionDef] = {}

    def visit(node: ast.AST, prefix: str, path: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[f"{path}:{prefix}{child.name}"] = child       # type: ignore[assignment]
                visit(child, f"{prefix}{child.name}.", path)
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.", path)

    for path, tree in trees.items():
        visit(tree, "", path)
    return out


def called_names(fn: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name):
                names.add(f.id)
            elif isinstance(f, ast.Attribute):
                names.add(f.attr)
    return names


def call_chain(funcs: dict[str, ast.FunctionDef], start: str, goal: str) -> list[str] | None:
    """Shortest chain of calls from ``start`` (a qualified name's tail) to a function named
    ``goal``, resolving a call by its bare name to every function so named (a method called
    as ``obj.m()`` may be any ``m``: the count is a lower bound)."""
    by_name: dict[str, list[str]] = {}
    for q in funcs:
        by_name.setdefault(q.rsplit(".", 1)[-1].rsplit(":", 1)[-1], []).append(q)
    first = [q for q in funcs if q.endswith(":" + start)]
    prev: dict[str, str | None] = {q: None for q in first}
    todo = deque(first)
    while todo:
        q = todo.popleft()
        if q.rsplit(".", 1)[-1].rsplit(":", 1)[-1] == goal:
            chain = [q]
            while prev[chain[-1]] is not None:
                chain.append(prev[chain[-1]])        # type: ignore[arg-type]
            return chain[::-1]
        for name in sorted(called_names(funcs[q])):
            for nxt in by_name.get(name, []):
                if nxt not in prev:
                    prev[nxt] = q
                    todo.append(nxt)
    return None


def length(fn: ast.AST) -> int:
    return fn.end_lineno - fn.lineno + 1        # type: ignore[attr-defined]


def main(root: Path) -> None:
    trees = modules(root)
    funcs = functions(trees)
    texts = {p: (root / p).read_text() for p in trees}
    chain = call_chain(funcs, "Network.fit", "train_step")
    print(f"levels from Network.fit to train_step: {len(chain) if chain else 'no chain'}")
    if chain:
        print("  " + " -> ".join(q.split(":")[1] for q in chain))
    branch = re.compile(r"\b\w*(?:par|parallel|communicator|comm)\b\s+is\s+(?:not\s+)?None")
    training = {p: t for p, t in texts.items() if p.startswith("deepnet/training/")}
    n = {p: len(branch.findall(t)) for p, t in training.items()}
    print(f"data-parallel branches (x is [not] None) in deepnet/training: {sum(n.values())}"
          + "".join(f"\n  {p}: {k}" for p, k in sorted(n.items()) if k))
    writes = re.compile(r"\b(?:pos|position)\.\w+\s*(?:=(?!=)|\+=|-=)")
    w = {p: len(writes.findall(t)) for p, t in texts.items()}
    print(f"writes to a run position's attributes: {sum(w.values())}"
          + "".join(f"\n  {p}: {k}" for p, k in sorted(w.items()) if k))
    spelled = []
    for q, fn in funcs.items():
        args = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
        if len(args & FIT_OPTIONS) >= 10:
            spelled.append(f"signature {q.split(':')[1]} ({q.split(':')[0]})")
    for p, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                fields = {s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
                if len(fields & FIT_OPTIONS) >= 10:
                    spelled.append(f"fields of {node.name} ({p})")
            if isinstance(node, ast.Call) and len({k.arg for k in node.keywords} & FIT_OPTIONS) >= 10:
                spelled.append(f"call at {p}:{node.lineno}")
    print(f"places fit's options are written out: {len(spelled)}" + "".join(f"\n  {s}" for s in spelled))
    probe = re.compile(r"\b(?:hasattr|getattr)\(")
    pr = {p: len(probe.findall(t)) for p, t in texts.items() if not p.startswith("deepnet/backend/")}
    print(f"hasattr/getattr outside deepnet/backend: {sum(pr.values())} in {sum(1 for k in pr.values() if k)} modules")
    longest = sorted(((length(fn), q) for q, fn in funcs.items()), reverse=True)
    print("longest functions in deepnet/: " + ", ".join(f"{q.split(':')[1]} {k}" for k, q in longest[:5]))
    cli = [(k, q) for k, q in longest if q.startswith("deepnet/cli")]
    print("longest in the command line: " + ", ".join(f"{q.split(':')[1]} {k}" for k, q in cli[:3]))
    print(f"functions over 60 lines: {sum(1 for k, _ in longest if k > 60)}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="How the training code is put together, counted from the source.")
    ap.add_argument("checkout", nargs="?", default=str(Path(__file__).resolve().parents[1]),
                    help="the folder of a deepnet checkout (default: this one)")
    main(Path(ap.parse_args().checkout))
