"""Where a run's results go: folders checked before training, files replaced without losing the earlier
ones, empty folders of a failed run removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ..distributed.launch import launched_rank
from ..io import save_model
from ..plotting import pyplot
from .common import CLIError


def check_output_folder(out: Path, option: str = "--out", holds: str = "model.npz and summary.json") -> None:
    """Fail before training if ``out`` cannot hold the results: not a folder, not creatable,
    not writable."""
    if out.exists() and not out.is_dir():
        raise CLIError(f"{option} {out}: this is a file; expected a folder for {holds}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise CLIError(f"{option} {out}: cannot write there ({err.strerror or err})") from None


def check_free_space(out: Path, net: Any, checkpointing: bool) -> None:
    """A rough check that the model (and checkpoints, with their optimizer state) fit on the disk."""
    model_bytes = net.n_params * 8 + (1 << 20)            # float32 weights (x2: temporary file) + headroom
    need = model_bytes * (1 + (8 if checkpointing else 0))   # up to 4 checkpoints with Adam's 2 slots
    free = shutil.disk_usage(out).free
    if free < need:
        raise CLIError(f"--out {out}: only {free / 2**20:.1f} MiB free on its disk; this run needs about "
                       f"{need / 2**20:.1f} MiB for the model{' and checkpoints' if checkpointing else ''}")


def keep_earlier(path: Path) -> Path | None:
    """Hard-link (or copy) an existing file to ``<stem>.<its time>.<suffix>`` beside it, so that
    replacing ``path`` atomically never loses it; returns the kept copy."""
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
    kept = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
    k = 1
    while kept.exists():
        k += 1
        kept = path.with_name(f"{path.stem}.{stamp}-{k}{path.suffix}")
    try:
        os.link(path, kept)
    except OSError:
        shutil.copy2(path, kept)
    return kept


def save_results(net: Any, out: Path, extra: dict[str, Any]) -> Path:
    """Write model.npz atomically; an existing one is kept as model.<its time>.npz first.  If
    the folder cannot take it any more (disk full, removed, read-only), the weights go to a
    rescue folder and the error names both places."""
    target = out / "model.npz"
    try:
        kept = keep_earlier(target)
        saved = save_model(net, target, extra=extra)
        if kept is not None:
            print(f"kept the earlier model as {kept}", flush=True)
        return saved
    except OSError as err:
        rescue = Path(tempfile.mkdtemp(prefix=f"deepnet-rescued-{time.strftime('%Y%m%d-%H%M%S')}-"))
        try:
            saved = save_model(net, rescue / "model.npz", extra=extra)
        except OSError as err2:
            raise CLIError(f"could not save the trained model to {target} ({err.strerror or err}) nor to "
                           f"{rescue} ({err2.strerror or err2})") from None
        raise CLIError(f"could not save the trained model to {target} ({err.strerror or err}); "
                       f"the trained weights are safe in {saved}") from None


def missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing, p = [], folder.absolute()
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    return missing


def remove_if_empty(made: list[list[Path]]) -> None:
    """Remove the folders a failed run created and left empty (each list deepest first, the
    last list first); a folder holding anything, and every folder above it, stays."""
    for chain in reversed(made):
        for folder in chain:
            try:
                folder.rmdir()          # only ever removes an empty folder
            except FileNotFoundError:
                continue                # never made (checkpoints/ of a run that failed before saving)
            except OSError:
                break


def prepare_outputs(args: argparse.Namespace, out: Path, made: list[list[Path]]) -> None:
    """Where results go: checked (and created) before any data is loaded, by rank 0 (it writes
    them); the folders made are noted in ``made`` (removed again if the run fails and leaves them empty)."""
    if launched_rank() == 0:
        made.append(missing_folders(out / "checkpoints"))     # checkpoints/ may be made later: removed too if empty
        check_output_folder(out)
    if args.plot and launched_rank() == 0:
        made.append(missing_folders(Path(args.plot)))
        check_output_folder(Path(args.plot), "--plot", "the PNG pictures")
        pyplot()  # fail early with a clear message if matplotlib is missing
    if args.log_dir and launched_rank() == 0:
        made.append(missing_folders(Path(args.log_dir)))
        check_output_folder(Path(args.log_dir), "--log-dir", "the runs' logs")
