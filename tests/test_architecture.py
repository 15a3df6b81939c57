"""deepnet's structure stays a tree (issue 14): the rules below are read off the sources with
``ast`` (and import-linter's contracts in pyproject.toml), so a shortcut that would tangle the
modules again fails here, naming each ``file:line``.

* no deepnet import inside a function: every dependency shows at the top of its module, where
  import-linter and a reader see it (optional third-party packages may still load lazily);
* no ``ops.name == "numpy"`` outside deepnet/backend/: code asks a backend what it can do,
  never which one it is;
* the import layering of pyproject.toml's ``[tool.importlinter]`` holds;
* no reaching into another module's private attributes (``net._x``, ``p._grad``,
  ``from .m import _helper``): what a module needs from another is public API.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "deepnet"


def _sources() -> dict[str, ast.Module]:
    """Every deepnet source file, parsed, by its path relative to the repository."""
    return {path.relative_to(ROOT).as_posix(): ast.parse(path.read_text(encoding="utf-8"), str(path))
            for path in sorted(PACKAGE.rglob("*.py"))}


SOURCES = _sources()


def _is_deepnet_import(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "deepnet"
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == "deepnet" for alias in node.names)
    return False


def _function_bodies(tree: ast.AST) -> Iterator[ast.AST]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield node


def _imported_modules(path: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The dotted names an import may load (``from . import m`` may load ``package.m``)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = node.module or ""
    if node.level:
        package = path[:-len(".py")].split("/")[:-1]     # a module's package; __init__.py's is its own
        package = package[:len(package) - node.level + 1]
        base = ".".join(package + ([node.module] if node.module else []))
    return {base} | {f"{base}.{alias.name}" for alias in node.names}


#: deepnet modules that exist to wrap an OPTIONAL third-party package they import at their top:
#: importing one of them is loading that package, so it may stay inside the function that needs
#: it, like any optional package.
OPTIONAL_PACKAGE_MODULES = {
    "deepnet.backend.numba_kernels": "imports numba (the optional 'fast' extra) at its top",
    "deepnet.backend.numba_steps": "imports numba (the optional 'fast' extra) at its top",
    "deepnet.backend.numba_windows": "imports numba (the optional 'fast' extra) at its top",
    "deepnet.backend.numba_norm": "imports numba (the optional 'fast' extra) at its top",
}


def _is_dynamic_deepnet_import(node: ast.AST) -> bool:
    """``importlib.import_module("deepnet…" or ".x")`` or ``__import__("deepnet…")``: an import
    neither this test's AST scan of import statements nor import-linter would see."""
    if not isinstance(node, ast.Call) or not node.args:
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    first = node.args[0]
    return (name in ("import_module", "__import__") and isinstance(first, ast.Constant)
            and isinstance(first.value, str) and (first.value.startswith("deepnet") or first.value.startswith(".")))


def test_no_deepnet_import_inside_a_function():
    found = set()
    for path, tree in SOURCES.items():
        for node in ast.walk(tree):
            if _is_dynamic_deepnet_import(node):
                found.add(f"{path}:{node.lineno}: {ast.unparse(node)}")
        for func in _function_bodies(tree):
            for node in ast.walk(func):
                if _is_deepnet_import(node) and not _imported_modules(path, node) & set(OPTIONAL_PACKAGE_MODULES):
                    found.add(f"{path}:{node.lineno}: {ast.unparse(node)}")
    assert not found, ("deepnet modules imported inside functions (import them at the top of the module; "
                       "a cycle this would create means a module sits in the wrong layer):\n"
                       + "\n".join(sorted(found)))


def _name_of(node: ast.AST) -> str | None:
    """The name an expression ends in: ``ops`` for ``ops``, ``self.ops`` or ``net.ops``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


#: every name a backend answers to (registered names and aliases), and backend class names
BACKEND_NAMES = {"numpy", "np", "cpu", "cupy", "cp", "gpu", "cuda", "strict", "array_api_strict", "cupy-shaped",
                 "cupy_shaped", "torch", "generic"}


def _is_ops_name(node: ast.AST) -> bool:
    """``<something>.name`` where the something's name is ``ops`` or ends in ``ops``, or any
    ``.name`` / ``__name__`` (compared below with a backend's name)."""
    return (isinstance(node, ast.Attribute) and node.attr in ("name", "__name__")
            and (node.attr == "__name__" or (_name_of(node.value) or "").lower().endswith("ops")))


def _is_backend_name(node: ast.AST) -> bool:
    """A string literal (or a tuple/list/set of them) naming a backend or an Ops class."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and (node.value.lower() in BACKEND_NAMES or node.value.endswith("Ops"))
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_is_backend_name(e) for e in node.elts)
    return False


def _is_string(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return bool(node.elts) and all(_is_string(e) for e in node.elts)
    return False


def test_no_backend_identity_by_name_outside_the_backends():
    found = []
    for path, tree in SOURCES.items():
        if path.startswith("deepnet/backend/"):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            for op, a, b in zip(node.ops, sides, sides[1:]):
                if not isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)):
                    continue
                ops_a = _is_ops_name(a) and (_is_string(b) if a.attr == "name" and _name_of(a.value) != "name"
                                             else _is_backend_name(b))
                ops_b = (_is_ops_name(b) and isinstance(op, (ast.Eq, ast.NotEq))
                         and (_is_string(a) if b.attr == "name" else _is_backend_name(a)))
                # any ``.name`` compared with a backend's name counts too (e.g. ``backend.name == "cupy"``)
                named = any(isinstance(x, ast.Attribute) and x.attr in ("name", "__name__") and _is_backend_name(y)
                            for x, y in ((a, b), (b, a)))
                if ops_a or ops_b or named:
                    found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    assert not found, ("a backend compared by name outside deepnet/backend/ (ask the backend for the "
                       "capability instead, e.g. a method or attribute of Ops):\n" + "\n".join(found))


def test_import_layers_hold():
    if importlib.util.find_spec("importlinter") is None:
        pytest.skip("import-linter is not installed (it is in the test extra: pip install -e '.[test]')")
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    report = done.stdout[done.stdout.find("Broken contracts"):] if "Broken contracts" in done.stdout else done.stdout
    assert done.returncode == 0, f"lint-imports failed:\n{report}\n{done.stderr[-3000:]}"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _defined_private_names() -> dict[str, set[str]]:
    """Each private name deepnet defines (function, class, ``self._x`` attribute, variable,
    argument) and the files that define it."""
    out: dict[str, set[str]] = {}
    for path, tree in SOURCES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                  and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                names = [node.attr]      # an attribute is defined by its own class, not by a writer
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names = [node.id]
            elif isinstance(node, ast.arg):
                names = [node.arg]
            else:
                continue
            for name in names:
                if _private(name):
                    out.setdefault(name, set()).add(path)
    return out


_DEFINED: dict[str, set[str]] = {}


def _own_object(path: str, owner: ast.AST, name: str) -> bool:
    """Whether ``owner._name`` is a module reaching into an object of its own: only when the
    name is defined in this module alone (a name also defined elsewhere, e.g. ``_params`` of
    ``Layer``, may belong to another module's object, so it counts as crossing)."""
    return _DEFINED.get(name, set()) == {path}


#: ``file: {private name, ...}`` reached across modules on purpose; each entry says why.
ALLOWED_PRIVATE_ACCESS: dict[str, set[str]] = {
    # numba's Dispatcher._cache, not deepnet's: what ``cache=True`` sets (numba's enable_caching),
    # set with a cache whose locator writes to the user's cache folder instead of the package
    "deepnet/backend/numba_kernels.py": {"_cache"},
}


def test_no_private_attributes_reached_across_modules():
    """``X._name`` (X not self, cls or super()) where ``_name`` is defined in another deepnet
    module, and ``from deepnet... import _name``: a module's private names are its own."""
    _DEFINED.update(_defined_private_names())
    defined = _DEFINED
    found = []
    for path, tree in SOURCES.items():
        allowed = ALLOWED_PRIVATE_ACCESS.get(path, set())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in allowed:
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                    continue
                if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
                    continue
                if node.attr in defined and not _own_object(path, owner, node.attr):
                    found.append(f"{path}:{node.lineno}: {ast.unparse(node)} (defined in "
                                 f"{', '.join(sorted(defined[node.attr]))})")
            elif isinstance(node, ast.ImportFrom) and _is_deepnet_import(node):
                for alias in node.names:
                    if _private(alias.name) and alias.name not in allowed:
                        found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    assert not found, ("private attributes of another module's objects (use or add public API):\n"
                       + "\n".join(sorted(set(found))))


def test_import_graph_has_no_cycles_or_upward_arrows_counting_annotation_imports():
    """scripts/import_graph.py reads every import (``if TYPE_CHECKING:`` ones too) and finds no
    cycle and no upward or sideways arrow, between deepnet's layers or deepnet.backend's modules."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_graph.py"), str(ROOT)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"import cycles or upward imports:\n{done.stdout}{done.stderr[-2000:]}"
    assert "0 cycles, 0 upward" in done.stdout


def test_importlinter_counts_annotation_imports():
    config = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert "exclude_type_checking_imports = false" in config
    assert 'containers = ["deepnet.backend"]' in config


def _declared_hooks() -> set[str]:
    """Every name the base classes and the model protocol declare (dunder names aside, and
    ``name``, which foreign objects such as a NumPy dtype have too)."""
    from deepnet.backend.memory import DeviceMemory
    from deepnet.callbacks import Callback
    from deepnet.distributed.communicator import Communicator
    from deepnet.layers.base import Layer
    from deepnet.losses import Loss
    from deepnet.protocols import TrainedModel

    names = set(dir(Layer)) | set(dir(Loss)) | set(dir(Callback)) | set(dir(Communicator)) | set(dir(DeviceMemory))
    names |= set(TrainedModel.__annotations__) | set(vars(TrainedModel))
    return {n for n in names if not n.startswith("__")} - {"name"}


def _probes(tree: ast.AST) -> Iterator[tuple[int, str, str]]:
    """(line, call, attribute name) of each ``hasattr(x, "name")`` / ``getattr(x, "name", ...)``."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr")
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)):
            yield node.lineno, ast.unparse(node), node.args[1].value


def test_no_probes_for_hooks_the_base_classes_declare():
    """A hook of Layer, Loss, Callback, Communicator, DeviceMemory (``ops.memory``) or
    TrainedModel has a default on its base class (or the Network declares it): code
    calls it, never asks whether it exists (probes stay for foreign objects: arrays, torch
    modules, optional libraries)."""
    declared = _declared_hooks()
    found = [f"{path}:{line}: {call}" for path, tree in SOURCES.items()
             for line, call, name in _probes(tree) if name in declared]
    assert not found, "probes for declared hooks (use the attribute or method itself):\n" + "\n".join(found)


def test_network_satisfies_the_model_protocol_callbacks_type_against():
    from deepnet import Network
    from deepnet.layers import Dense
    from deepnet.protocols import TrainedModel

    net = Network([Dense(3, 2)], loss="xent", optimizer="sgd")
    members = (set(TrainedModel.__annotations__) | {n for n in vars(TrainedModel) if not n.startswith("_")}) - {
        "TrainedModel"}
    missing = sorted(m for m in members if not hasattr(net, m))
    assert not missing, f"Network lacks {missing} of TrainedModel"
    callbacks_tree = SOURCES["deepnet/callbacks.py"]
    imported = {node.module for node in ast.walk(callbacks_tree) if isinstance(node, ast.ImportFrom)}
    assert "network" not in imported and "deepnet.network" not in imported

#: the most lines a function of the command line (deepnet/cli/) may have (issue 25: split by job)
CLI_FUNCTION_LINES = 60


def _function_lengths(select: Callable[[str], bool]) -> list[tuple[int, str]]:
    """``(lines, "file:line name")`` of every function (methods and nested ones included) in the
    source files ``select`` takes, longest first."""
    found = []
    for path, tree in SOURCES.items():
        if select(path):
            found += [(node.end_lineno - node.lineno + 1, f"{path}:{node.lineno} {node.name}")
                      for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return sorted(found, reverse=True)


def _in_cli(path: str) -> bool:
    return path == "deepnet/cli.py" or path.startswith("deepnet/cli/")


def test_no_command_line_function_over_60_lines():
    """The command line reads one job at a time: no function of deepnet.cli is longer than
    CLI_FUNCTION_LINES lines (its train path goes through one small call that trains)."""
    lengths = _function_lengths(_in_cli)
    assert lengths, "no function found in deepnet/cli/"
    long = [f"{where}: {n} lines" for n, where in lengths if n > CLI_FUNCTION_LINES]
    assert not long, (f"functions of the command line over {CLI_FUNCTION_LINES} lines (split them by job):\n"
                      + "\n".join(long))


def test_the_command_line_trains_through_one_small_function():
    """``deepnet train`` trains in one place, a function of at most 15 lines that builds the
    run and calls ``fit`` (a Trainer's, or the network's), as a user's program does."""
    trains = []
    for path, tree in SOURCES.items():
        if not _in_cli(path):
            continue
        for func in ast.walk(tree):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                    isinstance(node, ast.Call) and (
                        (isinstance(node.func, ast.Name) and node.func.id == "Trainer")
                        or (isinstance(node.func, ast.Attribute) and node.func.attr == "fit"))
                    for node in ast.walk(func)):
                trains.append((func.end_lineno - func.lineno + 1, f"{path}:{func.lineno} {func.name}"))
    assert len(trains) == 1 and trains[0][0] <= 15, (
        "the command line should train in one function of at most 15 lines; found: "
        + ", ".join(f"{where} ({n} lines)" for n, where in trains))
