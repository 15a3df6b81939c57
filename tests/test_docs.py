"""The documentation runs: every code block of README.md and docs/*.md is checked here.

* Every fenced block carries a language tag (python, bash, text, ...); output samples and
  equations are ``text``; no indented (untagged) code blocks.
* The ``python`` blocks of each file run in order in one namespace (one per file), in a
  temporary working folder, with no network. Without a GPU, the backend name ``"cupy"``
  in a block is replaced by ``"cupy-shaped"`` (the CuPy code path with CuPy's real
  signatures on the CPU), so the same lines run everywhere. A block that needs an optional
  package that is not installed (PyTorch) is skipped with the reason, never failed.
* The ``bash`` blocks pass ``bash -n``, and every command in them is parsed without being
  run: ``deepnet ...`` by deepnet's own argument parser, ``python script.py ...`` by the
  script's argparse (stopped right after parsing), ``python -m module`` by finding the
  module, ``bash script.sh`` by ``bash -n`` on the script, ``pip install ".[extra]"`` by
  looking the extras up in pyproject.toml. So a renamed option, script or extra fails here.
* Inline ``deepnet ...`` commands and ``--options`` in the prose are parsed the same way,
  and every repository path or ``tests/...::test_name`` a page points at exists.

* A command in a bash block that is none of those (nor a few ordinary programs) fails:
  output pasted into a ``bash`` block has to be labelled ``text``.

docs/custom-layers.md's python blocks run in tests/test_custom_layer_guide.py (with
checks of what they print and save), so they are not run a second time here; those of
docs/backends.md and docs/gpu.md are left to their own test (PYTHON_RUN_BY_THEIR_OWN_TEST).
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import importlib.util
import io
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import deepnet as dn
from deepnet.cli import build_parser
from tests.conftest import no_network

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"python", "bash", "text", "json", "toml"}

# pages whose python blocks another test runs (with its own checks of their results)
PYTHON_RUN_ELSEWHERE = {
    "docs/custom-layers.md": "tests/test_custom_layer_guide.py",
}
# pages whose python blocks are being made runnable (issue 13) by their own test: not run here
PYTHON_RUN_BY_THEIR_OWN_TEST = {
    "docs/backends.md": "tests/test_docs_backends.py",
    "docs/gpu.md": "tests/test_docs_backends.py",
}
# what each page's python blocks must print or leave in the working folder
EXPECTED = {
    "README.md": {"prints": ["'accuracy': 0.", "'loss': "]},
    "docs/training.md": {"prints": ["\n10 ", "\n20 ", "\n30 ", "(1, 28, 28) (2, 10) True", "272186 (4, 10)"]},
    "docs/checkpoints.md": {"files": ["model.npz", "runs/exp1/checkpoints/best.npz"]},
    "docs/after-training.md": {"prints": ["epoch,loss,accuracy,val_loss,val_accuracy,lr,time", "onnx == deepnet: True",
                                          "scalars: ['accuracy/train',"],
                               "files": ["model.onnx", "runs/logs/log.csv"]},
    "docs/optimizers.md": {"prints": ["eager == captured", "resumed from the checkpoint by name"]},
}
# python scripts named in the docs as stand-ins for the reader's own
PLACEHOLDER_SCRIPTS = {"your_script.py", "train.py"}
# commands in bash blocks that are neither deepnet, python, pip nor a script of the repository
OTHER_PROGRAMS = {"nvidia-smi", "cd", "export", "git", "echo", "ls", "mkdir", "tensorboard"}
# options of those programs that the prose names
OTHER_PROGRAM_OPTIONS = {"--logdir"}        # tensorboard's
# optional packages a block may need: without them the rest of that page is skipped
OPTIONAL_PACKAGES = {"torch", "onnx", "onnxruntime", "tensorboardX", "tensorboard"}


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@dataclass
class Block:
    doc: str
    line: int          # line number of the block's first line of code (1-based)
    lang: str
    code: str


_FENCE_OPEN = re.compile(r"^( {0,3})(`{3,}|~{3,})[ \t]*([^`\s]*)[^`]*$")


def parse_blocks(path: Path) -> tuple[list[Block], list[int]]:
    """(fenced blocks, line numbers of indented code blocks) of a markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    indented: list[int] = []
    i = 0
    prev = ""            # the previous line outside fences
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if m:
            fence, lang = m[2], m[3]
            close = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
            j = i + 1
            while j < len(lines) and not close.match(lines[j]):
                j += 1
            assert j < len(lines), f"{rel(path)}:{i + 1}: code block never closed"
            blocks.append(Block(rel(path), i + 2, lang, "\n".join(lines[i + 1: j]) + "\n"))
            i, prev = j + 1, lines[j]
            continue
        line = lines[i]
        if re.match(r"^( {4,}|\t)\S", line) and not prev.strip():
            above = next((p for p in reversed(lines[:i]) if p.strip()), "")
            if not re.match(r"^\s|^\s*([*+-]|\d+[.)])\s", above):      # not the continuation of a list item
                indented.append(i + 1)
        prev = line
        i += 1
    return blocks, indented


def blocks_of(doc: Path, lang: str) -> list[Block]:
    return [b for b in parse_blocks(doc)[0] if b.lang == lang]


def docs_with(lang: str) -> list[Path]:
    return [d for d in DOCS if blocks_of(d, lang)]


# ---------------------------------------------------------------- every block is labelled
@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_every_code_block_is_fenced_with_a_language(doc):
    blocks, indented = parse_blocks(doc)
    unlabelled = [f"{b.doc}:{b.line - 1} ({b.lang or 'no language'})" for b in blocks if b.lang not in LANGUAGES]
    assert not unlabelled, f"label each code block with one of {sorted(LANGUAGES)}: {unlabelled}"
    assert not indented, (f"{rel(doc)}: indented code blocks at lines {indented}: fence them "
                          "(```text for output samples and equations)")


def test_the_pages_have_the_blocks_this_test_runs():
    """A guard against a parser that silently finds nothing."""
    assert {rel(d) for d in docs_with("python")} >= {"README.md", "docs/training.md", "docs/checkpoints.md"}
    assert {rel(d) for d in docs_with("bash")} >= {"README.md", "docs/performance.md"}
    assert len(blocks_of(ROOT / "docs" / "derivation.md", "text")) == 6     # 3 for dense layers, 3 for convolutions
    for page, test in PYTHON_RUN_ELSEWHERE.items():
        assert page in (ROOT / test).read_text(encoding="utf-8").replace('" / "', "/"), f"{test} no longer runs {page}"


@pytest.mark.parametrize("page", sorted(PYTHON_RUN_BY_THEIR_OWN_TEST))
def test_pages_not_run_here_are_run_by_their_own_test(page):
    test = ROOT / PYTHON_RUN_BY_THEIR_OWN_TEST[page]
    assert test.is_file(), f"{page}: its python blocks are run by no test ({rel(test)} does not exist)"
    assert Path(page).name in test.read_text(encoding="utf-8"), f"{rel(test)} does not run {page}"


# ---------------------------------------------------------------- python blocks run
def gpu_present() -> bool:
    return dn.available_backends().get("cupy") == "available"


_CUPY_NAME = re.compile(r"""(["'])cupy\1""")


def runnable_source(block: Block) -> str:
    """The block's code, on line numbers of the page, with "cupy" as "cupy-shaped" without a GPU."""
    code = block.code
    if _CUPY_NAME.search(code) and not gpu_present():
        reason = dn.available_backends().get("cupy-shaped")
        if reason != "available":
            pytest.skip(f"{block.doc}:{block.line}: no GPU, and the CuPy-shaped backend is unavailable: {reason}")
        code = _CUPY_NAME.sub(r"\1cupy-shaped\1", code)
    return "\n" * (block.line - 1) + code




@pytest.mark.parametrize("doc", [d for d in docs_with("python")
                                 if rel(d) not in PYTHON_RUN_ELSEWHERE and rel(d) not in PYTHON_RUN_BY_THEIR_OWN_TEST],
                         ids=rel)
def test_python_blocks_run_in_order(doc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                      # the pages save model.npz, runs/... in the working folder
    namespace: dict = {"__name__": "__doc_" + doc.stem.replace("-", "_")}
    out = io.StringIO()
    context = contextvars.copy_context()            # a page's dn.set_backend(...) stays in the page
    for block in blocks_of(doc, "python"):
        source = runnable_source(block)
        try:
            with no_network(), contextlib.redirect_stdout(out):
                context.run(exec, compile(source, str(doc), "exec"), namespace)
        except ModuleNotFoundError as err:
            if (err.name or "").split(".")[0] not in OPTIONAL_PACKAGES:
                raise
            pytest.skip(f"{block.doc}:{block.line} needs {err.name}, which is not installed (the rest of the page "
                        "is not run)")
    expected = EXPECTED.get(rel(doc), {})
    printed = "\n" + out.getvalue()
    for text in expected.get("prints", []):
        assert text in printed, f"{rel(doc)} should print {text!r}; it printed:{printed}"
    for name in expected.get("files", []):
        assert (tmp_path / name).is_file(), f"{rel(doc)} should have written {name}"


def test_cupy_becomes_cupy_shaped_without_a_gpu(monkeypatch):
    block = Block("x.md", 3, "python", 'net.to("cupy")\nops = get_ops(\'cupy\')  # cupy\nx = "cupy-shaped"\n')
    monkeypatch.setattr(sys.modules[__name__], "gpu_present", lambda: False)
    monkeypatch.setattr(dn, "available_backends", lambda: {"cupy-shaped": "available"})
    assert runnable_source(block) == ('\n\nnet.to("cupy-shaped")\nops = get_ops(\'cupy-shaped\')  # cupy\n'
                                      'x = "cupy-shaped"\n')
    monkeypatch.setattr(sys.modules[__name__], "gpu_present", lambda: True)
    assert runnable_source(block) == "\n\n" + block.code


# ---------------------------------------------------------------- bash blocks parse
def commands(script: str) -> list[list[str]]:
    """The simple commands of a shell script, as argument lists (comments dropped, ``&&``,
    ``||``, ``;`` and ``|`` split, line continuations joined)."""
    out: list[list[str]] = []
    for line in script.replace("\\\n", " ").splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lex.whitespace_split = True
        lex.commenters = "#"
        cmd: list[str] = []
        for token in lex:
            if token and set(token) <= set(";&|"):
                out.append(cmd)
                cmd = []
            else:
                cmd.append(token)
        out.append(cmd)
    return [c for c in out if c]


def env_and_argv(cmd: list[str]) -> tuple[dict[str, str], list[str]]:
    env: dict[str, str] = {}
    while cmd and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", cmd[0]):
        name, _, value = cmd[0].partition("=")
        env[name] = value
        cmd = cmd[1:]
    return env, cmd


def parse_deepnet(args: list[str], where: str) -> argparse.Namespace:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return build_parser().parse_args(args)
    except SystemExit as exc:
        code = exc.code
    pytest.fail(f"{where}: `deepnet {shlex.join(args)}` is refused by deepnet's parser (exit {code}): "
                f"{err.getvalue().strip()}")


class _Parsed(Exception):
    """Raised right after a script's argparse has accepted its arguments."""


def parse_script(script: Path, args: list[str], env: dict[str, str], where: str, monkeypatch) -> None:
    """Run ``script`` as __main__ up to its argument parsing only: argparse stops it there.
    A script without argparse takes no arguments and is only compiled, never run."""
    source = script.read_text(encoding="utf-8")
    if "argparse" not in source:
        compile(source, str(script), "exec")
        assert not args, f"{where}: {rel(script)} takes no arguments, given {args}"
        return
    real_parse, real_known = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args
    depth = [0]

    def parse_args(self, args=None, namespace=None):
        depth[0] += 1
        try:
            ns = real_parse(self, args, namespace)
        finally:
            depth[0] -= 1
        raise _Parsed(ns)

    def parse_known_args(self, args=None, namespace=None):
        result = real_known(self, args, namespace)
        if depth[0] == 0:
            raise _Parsed(result)
        return result

    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", parse_args)
        m.setattr(argparse.ArgumentParser, "parse_known_args", parse_known_args)
        m.setattr(sys, "argv", [str(script), *args])
        m.syspath_prepend(str(ROOT))
        for name, value in env.items():
            m.setenv(name, value)
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                runpy.run_path(str(script), run_name="__main__")
        except _Parsed:
            return
        except SystemExit as exc:
            code = exc.code
        else:
            pytest.fail(f"{where}: {rel(script)} finished without parsing arguments with argparse")
    pytest.fail(f"{where}: `python {rel(script)} {shlex.join(args)}` is refused by the script (exit {code}): "
                f"{err.getvalue().strip()}")


def extras() -> set[str]:
    """The names of pyproject.toml's optional dependencies (read without tomllib, for Python 3.10)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = re.search(r"^\[project\.optional-dependencies\]\n(.*?)(?=^\[)", text + "\n[", re.DOTALL | re.MULTILINE)
    assert section, "pyproject.toml has no [project.optional-dependencies]"
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*=", section[1], re.MULTILINE))


def check_pip(args: list[str], where: str) -> None:
    known = extras()
    for arg in args:
        m = re.fullmatch(r"(?:\.|deepnet)\[([A-Za-z0-9_,-]+)\]", arg)
        if m:
            missing = [e for e in m[1].split(",") if e not in known]
            assert not missing, f"{where}: `pip install {arg}`: no extra {missing} in pyproject.toml ({sorted(known)})"


MPI_LAUNCHERS = {"mpiexec", "mpirun"}
# launcher options that take a value (MPICH's hydra and Open MPI), and those that take two
LAUNCHER_VALUE = {"-n", "-np", "-N", "-ppn", "-f", "-hostfile", "--hostfile", "-machinefile", "--map-by",
                  "--bind-to", "-x", "-host", "--host", "-bind-to", "-map-by"}
LAUNCHER_TWO_VALUES = {"-genv", "--mca", "-mca", "-env"}


def launched_command(args: list[str], where: str) -> list[str]:
    """The command an ``mpiexec``/``mpirun`` line starts (after the launcher's own options)."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 3 if args[i] in LAUNCHER_TWO_VALUES else 2 if args[i] in LAUNCHER_VALUE else 1
    assert i < len(args), f"{where}: `{shlex.join(args)}`: the launcher starts no command"
    return args[i:]


def check_command(cmd: list[str], where: str, monkeypatch) -> str | None:
    """Parse one command without running it; the kind of command checked, or None if not checked."""
    env, argv = env_and_argv(cmd)
    if not argv:
        return None
    prog, args = argv[0], argv[1:]
    if prog in MPI_LAUNCHERS:               # mpiexec [its options] <command>: the command is checked
        rest = launched_command(args, where)
        return check_command(rest, where, monkeypatch) if rest else None
    if prog == "deepnet":
        parse_deepnet(args, where)
        return "deepnet"
    if prog in ("python", "python3"):
        if args[:1] == ["-m"]:
            module = args[1]
            if module == "deepnet":
                parse_deepnet(args[2:], where)
            elif module == "pip":
                check_pip(args[2:], where)
            else:
                assert importlib.util.find_spec(module) is not None, f"{where}: `python -m {module}`: no such module"
            return "python -m"
        script = args[0]
        if script in PLACEHOLDER_SCRIPTS:
            return "placeholder"
        path = ROOT / script
        assert path.is_file(), f"{where}: `python {script}`: no such script in the repository"
        parse_script(path, args[1:], env, where, monkeypatch)
        return "python script"
    if prog in ("bash", "sh"):
        path = ROOT / args[0]
        assert path.is_file(), f"{where}: `{prog} {args[0]}`: no such script in the repository"
        run = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
        assert run.returncode == 0, f"{where}: {args[0]} does not parse: {run.stderr}"
        return "bash script"
    if prog == "pip":
        check_pip(args, where)
        return "pip"
    assert prog in OTHER_PROGRAMS, (f"{where}: `{shlex.join(argv)}`: {prog} is not a command the docs use; if this "
                                    "is output, label the block ```text")
    return None


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize("doc", docs_with("bash"), ids=rel)
def test_bash_blocks_parse_and_their_commands_exist(doc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                      # scripts are imported, never run, but just in case
    checked = []
    for block in blocks_of(doc, "bash"):
        run = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True, check=False)
        assert run.returncode == 0, f"{block.doc}:{block.line}: bash -n: {run.stderr}"
        for offset, line in enumerate(block.code.splitlines()):
            for cmd in commands(line):
                kind = check_command(cmd, f"{block.doc}:{block.line + offset}", monkeypatch)
                if kind:
                    checked.append(kind)
    assert "deepnet" in checked or "python script" in checked or "python -m" in checked, \
        f"{rel(doc)}: no deepnet or python command found in its bash blocks ({checked})"


def test_the_command_parsing_catches_a_renamed_option(monkeypatch):
    with pytest.raises(pytest.fail.Exception, match=r"unrecognized arguments: --batchsize 64"):
        check_command(["deepnet", "train", "--batchsize", "64"], "x.md:1", monkeypatch)
    with pytest.raises(pytest.fail.Exception, match=r"invalid choice: 'sgdd'"):
        check_command(["deepnet", "train", "--optimizer", "sgdd"], "x.md:1", monkeypatch)
    with pytest.raises(pytest.fail.Exception,
                       match=r"(?s)refused by the script .*unrecognized arguments: --repetitions"):
        check_command(["python", "benchmarks/seed_speed.py", "--repetitions", "7"], "x.md:1", monkeypatch)
    with pytest.raises(AssertionError, match=r"no such script"):
        check_command(["python", "benchmarks/no_such_bench.py"], "x.md:1", monkeypatch)
    with pytest.raises(AssertionError, match=r"epoch is not a command the docs use; if this is output, label"):
        check_command(["epoch", "1/5:", "loss", "0.31"], "x.md:1", monkeypatch)
    with pytest.raises(AssertionError, match=r"no extra \['gpu'\]"):
        check_command(["pip", "install", ".[main,gpu]"], "x.md:1", monkeypatch)
    assert commands('A=1 deepnet train --lr 0.1 # a comment\npip install ".[x]" && python -m pytest -q') == [
        ["A=1", "deepnet", "train", "--lr", "0.1"], ["pip", "install", ".[x]"], ["python", "-m", "pytest", "-q"]]
    assert check_command(["DEEPNET_MNIST=path/to/mnist", "python", "benchmarks/seed_speed.py", "--reps", "7"],
                         "x.md:1", monkeypatch) == "python script"


# ---------------------------------------------------------------- commands and options in the prose
def inline_code(doc: Path) -> list[tuple[int, str]]:
    """(line, text) of every inline code span outside fenced blocks (spans may wrap lines)."""
    text = doc.read_text(encoding="utf-8")
    for block in parse_blocks(doc)[0]:
        text = text.replace(block.code, "\n" * block.code.count("\n"), 1)
    return [(text.count("\n", 0, m.start()) + 1, re.sub(r"\s+", " ", m[1]))
            for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", text)]


def cli_options() -> set[str]:
    parser = build_parser()
    found = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= set(sub._option_string_actions)
    return found


def script_options() -> set[str]:
    found: set[str] = set()
    for pattern in ("benchmarks/*.py", "examples/*.py", "scripts/*"):
        for path in ROOT.glob(pattern):
            found |= set(re.findall(r"""(?<![\w-])(--[a-z][a-z0-9-]*)""", path.read_text(encoding="utf-8")))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_commands_and_options_in_the_prose_exist(doc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    known = cli_options() | script_options() | OTHER_PROGRAM_OPTIONS
    for line, span in inline_code(doc):
        where = f"{rel(doc)}:{line}"
        if span.startswith("deepnet "):
            args = [re.sub(r"^<.*>$", "X", a) for a in shlex.split(re.sub(r"<[^>]*>", "X", span)) if a != "..."]
            parse_deepnet(args[1:], where)
        elif span.startswith(("pip install ", "python ")):
            check_command(shlex.split(span), where, monkeypatch)
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", span):
            assert option in known, f"{where}: `{span}`: {option} is not an option of deepnet or of its scripts"


_TEST_ID = re.compile(r"\b(tests/[\w/]+\.py)::(\w+)")
_PATH = re.compile(r"(?<![\w./-])((?:deepnet|tests|examples|benchmarks|scripts|docs)/[\w./-]*\w)")


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_files_and_tests_the_page_points_at_exist(doc):
    text = doc.read_text(encoding="utf-8")
    base = doc.parent
    missing = []
    for path, name in _TEST_ID.findall(text):
        source = (ROOT / path).read_text(encoding="utf-8") if (ROOT / path).is_file() else ""
        if not re.search(rf"^def {name}\(", source, re.MULTILINE):
            missing.append(f"{path}::{name}")
    for path in set(_PATH.findall(text)):
        if not ((ROOT / path).exists() or (base / path).exists()):
            missing.append(path)
    for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not re.match(r"^[a-z]+://", link) and not (base / link).exists():
            missing.append(link)
    assert not missing, f"{rel(doc)} points at what does not exist: {sorted(missing)}"


#: how a page would speak of whoever wrote or measured it instead of the project: a figure says
#: its date, commit and machine, never who produced it
NOT_THE_PROJECT = re.compile(r"\b(?i:sessions?|helpers?|agents?|we|our)\b|\bI\b")


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_pages_speak_of_the_project_only(doc):
    lines = [line.strip() for line in doc.read_text().splitlines() if NOT_THE_PROJECT.search(line)]
    assert not lines, f"{rel(doc)} speaks of its authors, not of the project: {lines[:3]}"
