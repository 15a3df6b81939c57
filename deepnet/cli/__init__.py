"""The ``deepnet`` command: train, evaluate, predict, info.

Errors are printed as one or two readable lines with a non-zero exit status; pass
``--debug`` for the full traceback.  One module per job: :mod:`.parser` (the options),
:mod:`.options` (their checks), :mod:`.settings` (a run's settings, a resumed run's included),
:mod:`.build` (network, loss, optimizer), :mod:`.outputs` (where results go), :mod:`.report`
(what a run prints and writes), a module per command (:mod:`.train`, :mod:`.evaluate`,
:mod:`.predict`, :mod:`.info`), :mod:`.processes` (``--nproc`` and threads) and :mod:`.command`
(the entry point).
"""

from .command import Terminated, main
from .common import EXIT_CLOSED_PIPE, EXIT_ERROR, CLIError
from .evaluate import cmd_evaluate
from .info import cmd_info
from .parser import build_parser, given_options
from .predict import INPUT_CONVENTION, bright_background_rows, cmd_predict
from .train import cmd_train

__all__ = ["CLIError", "EXIT_CLOSED_PIPE", "EXIT_ERROR", "INPUT_CONVENTION", "Terminated", "bright_background_rows",
           "build_parser", "cmd_evaluate", "cmd_info", "cmd_predict", "cmd_train", "given_options", "main"]
