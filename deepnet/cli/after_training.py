"""The command line's part of what comes after training: ``deepnet export`` (a model file or a
checkpoint to ONNX) and ``deepnet train --log-dir DIR`` (the run's CSV and TensorBoard logs).

``--log-dir DIR`` writes each run in a folder of its own, ``DIR/<start time YYYYmmdd-HHMMSS>``,
holding ``log.csv`` and TensorBoard's event files (``tensorboard --logdir DIR`` compares the
runs).  The folder is recorded in the run's checkpoints (their notes, ``log_run``) and in
summary.json (``config.log_run``): ``deepnet train --out OUT --resume`` continues the logs in
that same folder, with or without ``--log-dir`` (given another ``--log-dir``, the resumed part
goes to a new folder there, and says so).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from ..callbacks import Callback
from ..checkpoint import Checkpointer
from ..distributed.launch import launched_rank
from ..io import load_network
from ..logs import log_callbacks
from ..onnx_export import DEFAULT_OPSET, export_onnx
from .common import CLIError, model_input_shape


# ---------------------------------------------------------------------------- deepnet export
def add_export_command(subparsers: Any) -> argparse.ArgumentParser:
    """``deepnet export MODEL OUTPUT``."""
    e = subparsers.add_parser("export", help="write a model (or a checkpoint) as ONNX",
                              description="Write a model file (or a checkpoint) as ONNX: the network in evaluation "
                                          "form, input 'input' of shape (batch, ...), output 'output'.")
    e.add_argument("model", help="a model file (model.npz) or a checkpoint")
    e.add_argument("output", help="the .onnx file to write (an existing one is kept unless --force)")
    e.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    e.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    e.add_argument("--backend", default=None, help=argparse.SUPPRESS)
    e.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    e.set_defaults(func=cmd_export)
    return e


def cmd_export(args: argparse.Namespace) -> int:
    """``deepnet export``: refuses an existing OUTPUT (without --force) before reading anything."""
    out = Path(args.output)
    if out.exists() and not args.force:
        raise CLIError(f"{out} exists: give --force to replace it, or another output path")
    if out.suffix.lower() != ".onnx":
        raise CLIError(f"the output must be an .onnx file, got {out}")
    net = load_network(args.model, backend=args.backend)
    shape = model_input_shape(net, net.metadata.get("image_shape"))
    try:
        export_onnx(net, out, input_shape=shape, opset=args.opset)
    except ImportError as err:
        raise CLIError(str(err)) from None
    print(f"wrote {out}: input 'input' (batch, {', '.join(map(str, shape or net.input_shape))}), "
          f"output 'output', opset {args.opset}", flush=True)
    return 0


# ---------------------------------------------------------------------------- deepnet train --log-dir
def add_log_options(train_parser: argparse.ArgumentParser) -> None:
    """``--log-dir DIR`` of ``deepnet train``."""
    train_parser.add_argument("--log-dir", default=None, metavar="DIR",
                              help="write the run's logs (log.csv, TensorBoard event files) into DIR/<start time>; "
                                   "view them with: tensorboard --logdir DIR (needs deepnet[logs])")


def _same_folder(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def run_log_folder(log_dir: str | None, recorded: str | None) -> tuple[Path | None, str | None]:
    """(this run's log folder or None, a line to say): the recorded folder of a resumed run (when
    ``log_dir`` is not given or is its parent), else a new ``log_dir/<start time>``."""
    if recorded and (log_dir is None or _same_folder(Path(recorded).parent, log_dir)):
        return Path(recorded), f"logs: continuing in {recorded}"
    if log_dir is None:
        return None, None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder, k = Path(log_dir) / stamp, 1
    while folder.exists():
        k += 1
        folder = Path(log_dir) / f"{stamp}-{k}"
    folder = Path(os.path.abspath(folder))
    if recorded:
        return folder, f"logs: the run's earlier logs are in {recorded}; this part goes to {folder} (--log-dir differs)"
    return folder, f"logs: {folder} (tensorboard --logdir {log_dir})"


def train_logs(args: argparse.Namespace, ckpt_dir: Path, resumed: dict[str, Any] | None) -> list[Callback]:
    """The log callbacks of ``deepnet train`` (none without --log-dir nor a logged run to resume);
    sets ``args.log_run`` to the run's log folder (recorded in its checkpoints and summary)."""
    recorded = None
    if resumed is not None:
        state = Checkpointer(ckpt_dir).read_state()
        recorded = None if state is None else state["notes"].get("log_run")
    folder, line = run_log_folder(getattr(args, "log_dir", None), recorded)
    args.log_run = None if folder is None else str(folder)
    if folder is None or launched_rank() != 0:
        return []
    try:
        callbacks = log_callbacks(folder)
    except ImportError as err:
        raise CLIError(f"--log-dir: {err}") from None
    if line and not getattr(args, "quiet", False):
        print(line, flush=True)
    return callbacks
