"""The ``deepnet`` command's entry point: parse, run the subcommand, turn errors into one or two
readable lines and an exit status (``--debug``: the full traceback).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from typing import Any

from ..datasets import DatasetError, InputFileError
from ..distributed.launch import abort_job, launched_rank, launched_size
from ..errors import BackendError, ModelFileError, NonFiniteError, ResumeError, ShapeError
from ..plotting import PlotUnavailable
from .common import CLIError, EXIT_CLOSED_PIPE, EXIT_ERROR
from .parser import build_parser, given_options
from .processes import start_processes


def _known_errors() -> tuple[type[BaseException], ...]:
    return (CLIError, BackendError, DatasetError, ModelFileError, ShapeError, NonFiniteError, PlotUnavailable,
            ValueError, KeyError, FileNotFoundError, PermissionError, IsADirectoryError)
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.given = given_options(argv)
    try:
        code = _run(args, argv)
        sys.stdout.flush()          # a closed pipe shows here, inside the try, not at exit
    except BrokenPipeError:
        return _closed_pipe()
    if code and launched_size() > 1 and not getattr(args, "stopped_together", False):
        abort_job(code)         # the other ranks may be waiting for this one: end the whole job
    return code


def _closed_pipe() -> int:
    """The reader of stdout went away (``deepnet predict ... | head``): stop quietly, the way a
    Unix tool killed by SIGPIPE does (exit 128 + 13), as Python's ``signal`` docs advise:
    stdout goes to devnull so that the flush at exit raises nothing either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):       # stdout is not a file descriptor (an embedding program's)
        pass
    return EXIT_CLOSED_PIPE


class Terminated(KeyboardInterrupt):
    """SIGTERM outside training (during training, ``fit`` stops after its step instead)."""


def _terminate(sig: int, frame: Any) -> None:
    raise Terminated()


_terminate.yields_to_fit = True      # type: ignore[attr-defined]  (fit takes SIGTERM over while it trains)


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    where = f"deepnet: rank {launched_rank()}" if launched_size() > 1 else "deepnet"
    own = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    try:
        if own:
            signal.signal(signal.SIGTERM, _terminate)
        started = start_processes(args, argv)
        if started is not None:
            return started
        return int(args.func(args) or 0)
    except Terminated:
        print(f"{where}: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
    except _known_errors() as err:
        if args.debug:
            raise
        msg = str(err).strip() or type(err).__name__
        if isinstance(err, KeyError) and err.args:
            msg = str(err.args[0])
        print(f"{where}: error: {msg}", file=sys.stderr, flush=True)
        if not isinstance(err, (CLIError, ResumeError, InputFileError)):
            print(f"{where}: (run with --debug for the full traceback)", file=sys.stderr, flush=True)
        return EXIT_ERROR
    except BaseException:
        if launched_size() > 1:
            traceback.print_exc()
            sys.stderr.flush()
            abort_job(EXIT_ERROR)
        raise
    finally:
        if own:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
