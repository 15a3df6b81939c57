"""Count import cycles and upward imports in deepnet, annotation-only imports included.

Every module of the package is parsed with ``ast``; every import counts (at the top, inside
``if TYPE_CHECKING:``, inside a function), relative imports resolved.  Two graphs are read:

* the layers of pyproject.toml's ``[tool.importlinter]`` contract ``layers`` (each name of a
  row, e.g. ``deepnet.training``, is one node holding its submodules);
* the modules of ``deepnet.backend``, against the contract whose container it is.

For each graph it prints the cycles (strongly connected components of more than one node)
and the arrows that go up a row or sideways between independent names of one row.  Exit
status 1 when there is any.  Usage: ``python scripts/import_graph.py [repository root]``.
"""

from __future__ import annotations

import argparse
import ast
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` file of the package."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` is or lies in (None: not deepnet's)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The deepnet modules ``module`` imports anywhere in its file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name, modules)
            if target is not None and target != module:
                found.add(target)
    return found


def strongly_connected(nodes: Iterable[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of the graph, each sorted; only those of more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return sorted(out)


def rows_of(contract: dict) -> list[list[str]]:
    """A layers contract's rows, top first, as full dotted names (``containers`` prefixed)."""
    containers = contract.get("containers") or [""]
    rows = []
    for row in contract["layers"]:
        names = [n.strip() for n in row.replace(":", "|").split("|") if n.strip()]
        rows.append([f"{c}.{n}" if c else n for c in containers for n in names])
    return rows


def layer_graph(rows: list[list[str]], imports: dict[str, set[str]]) -> tuple[dict[str, int], dict[str, set[str]]]:
    """(row of each layer name, arrows between layer names) for the modules inside the rows."""
    row_of = {name: i for i, row in enumerate(rows) for name in row}

    def layer(module: str) -> str | None:
        return next((n for n in row_of if module == n or module.startswith(n + ".")), None)

    edges: dict[str, set[str]] = {}
    for module, targets in imports.items():
        a = layer(module)
        for target in targets:
            b = layer(target)
            if a is not None and b is not None and a != b:
                edges.setdefault(a, set()).add(b)
    return row_of, edges


def report(title: str, rows: list[list[str]], imports: dict[str, set[str]]) -> int:
    """Print one graph's cycles and wrong-way arrows; return how many problems it has."""
    row_of, edges = layer_graph(rows, imports)
    cycles = strongly_connected(row_of, edges)
    wrong = sorted(f"{a} -> {b} ({'upward' if row_of[b] < row_of[a] else 'sideways'})"
                   for a, targets in edges.items() for b in targets if row_of[b] <= row_of[a])
    print(f"{title}: {len(row_of)} layers, {sum(map(len, edges.values()))} arrows, "
          f"{len(cycles)} cycles, {len(wrong)} upward or sideways arrows")
    for c in cycles:
        print("  cycle: " + " <-> ".join(c))
    for w in wrong:
        print("  arrow: " + w)
    return len(cycles) + len(wrong)


def main(root: Path) -> int:
    modules = module_names(root / "deepnet")
    imports = {m: imports_of(m, p, modules) for m, p in modules.items()}
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    contracts = [c for c in config["contracts"] if c.get("type") == "layers"]
    top = next(c for c in contracts if not c.get("containers"))
    problems = report("deepnet layers", rows_of(top), imports)
    backend = next((c for c in contracts if c.get("containers") == ["deepnet.backend"]), None)
    if backend is None:      # no contract yet: each module of deepnet.backend is its own row
        names = sorted(m for m in modules if m.startswith("deepnet.backend."))
        cycles = strongly_connected(names, {m: {t for t in imports[m] if t in names} for m in names})
        print(f"deepnet.backend modules (no layers contract): {len(cycles)} cycles")
        for c in cycles:
            print("  cycle: " + " <-> ".join(c))
        problems += len(cycles) + 1
    else:
        problems += report("deepnet.backend modules", rows_of(backend), imports)
    return 1 if problems else 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="deepnet's import graph, annotation imports included: cycles and "
                                             "upward arrows against pyproject.toml's layers (exit 1 if any)")
    ap.add_argument("checkout", nargs="?", default=str(Path(__file__).resolve().parent.parent),
                    help="the folder of a deepnet checkout (default: this one)")
    sys.exit(main(Path(ap.parse_args().checkout)))
