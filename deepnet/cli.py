"""The ``deepnet`` command: train, evaluate, predict, info.

Errors are printed as one or two readable lines with a non-zero exit status; pass
``--debug`` for the full traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .backend import available_backends, get_backend, get_ops, to_device, to_host
from .backend.host import as_host_inputs
from .backend.precision import PRECISIONS
from .callbacks import Callback, EarlyStopping
from .checkpoint import Checkpointer, resume_refusal, settings_differences
from .datasets import DatasetError, InputFileError, load_dataset, read_labelled_inputs, scale_pixels
from .datasets.registry import NAMES, dataset_key
from .datasets.inputs import IMAGE_SUFFIXES
from .diagnostics import GradientFlow
from .distributed import communicator
from .distributed.launch import COMM_KINDS, abort_job, launched_rank, launched_size, mpiexec_command
from .distributed.threads import (ThreadPlan, apply_threads, available_cores, environment_for_ranks, plan_threads,
                                  thread_pools)
from .errors import BackendError, ModelFileError, NonFiniteError, ResumeError, ShapeError, TrainingInterrupted
from .io import atomic_write, load_network, save_model
from .layers import Dropout
from .layers.augment import augmentation_layers
from .losses import MeanSquaredError, SoftmaxCrossEntropy, SumOfSquares
from .metrics import confusion_matrix, per_class_accuracy
from .network import Network
from .optimizers import get_optimizer
from .plotting import PlotUnavailable, plot_confusion, plot_curves, plot_gradient_flow, plot_misclassified, pyplot
from .presets import cnn_layers, mlp_layers, parse_spec, resmlp_blocks, resmlp_layers, resnet_blocks, resnet_layers, seed_layers
from .progress import ProgressBar
from .schedules import LearningRateScheduler, get_schedule
from .training import Trainer
from .training.captured import GRAPHS
from .training.data_parallel import ranks_refusal
from .training.trainer import interrupted_at
from .version import __version__

EXIT_ERROR = 1
EXIT_CLOSED_PIPE = 141      #: 128 + SIGPIPE: what a shell reports for ``git log | head``'s git


class CLIError(Exception):
    """A user-facing error: printed without a traceback."""


def _known_errors() -> tuple[type[BaseException], ...]:
    return (CLIError, BackendError, DatasetError, ModelFileError, ShapeError, NonFiniteError, PlotUnavailable,
            ValueError, KeyError, FileNotFoundError, PermissionError, IsADirectoryError)


def _say(args: argparse.Namespace, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, flush=True)


# ---------------------------------------------------------------- train
def _build_network(args: argparse.Namespace, n_in: int, n_classes: int, image_shape: Any = None) -> Any:
    if args.preset == "seed":
        if n_in != 784 or n_classes != 10:
            raise CLIError(f"--preset seed is 784-50-10 but the data has {n_in} features and {n_classes} classes")
        return Network(seed_layers(args.shortcut), seed=args.seed, backend=args.backend)
    if args.model == "cnn":
        if image_shape is None or int(np.prod(image_shape)) != n_in:
            raise CLIError(f"--model cnn needs image data (a data set with an image shape), but --dataset "
                           f"{args.dataset} gives rows of {n_in} values")
        layers = cnn_layers(image_shape, n_classes, dropout=args.dropout, batchnorm=args.batchnorm)
        layers[1:1] = _augmentation(args)                  # on the images, right after Reshape
        return Network(layers, seed=args.seed, backend=args.backend)
    if args.model == "resnet":
        if image_shape is None or int(np.prod(image_shape)) != n_in:
            raise CLIError(f"--model resnet needs image data (a data set with an image shape), but --dataset "
                           f"{args.dataset} gives rows of {n_in} values")
        return Network(resnet_layers(image_shape, n_classes, args.depth, augment=_augmentation(args)),
                       seed=args.seed, backend=args.backend)
    if args.model == "resmlp" or args.depth is not None:
        return Network(resmlp_layers(n_in, n_classes, args.depth, args.width, residual=args.model == "resmlp"),
                       seed=args.seed, backend=args.backend)
    spec = args.layers or f"{n_in}-128-{n_classes}"
    sizes = parse_spec(spec)
    if sizes[0] != n_in:
        raise CLIError(f"--layers {spec}: the data has {n_in} features, so the first size must be {n_in}")
    if sizes[-1] != n_classes:
        raise CLIError(f"--layers {spec}: the data has {n_classes} classes, so the last size must be {n_classes}")
    hidden = None
    if args.dropout:
        def hidden(width: int) -> list[Any]:
            return [Dropout(args.dropout)]
    out_act = "sigmoid" if args.loss in ("sse", "mse") else None
    return Network(mlp_layers(sizes, args.activation, output_activation=out_act, hidden=hidden,
                              batchnorm=args.batchnorm), seed=args.seed, backend=args.backend)


def _optimizer(args: argparse.Namespace) -> Any:
    kw: dict[str, Any] = {"lr": args.lr} if args.lr is not None else {}
    if args.weight_decay:
        kw["weight_decay"] = args.weight_decay
    if args.clip_norm:
        kw["clip_norm"] = args.clip_norm
    if args.max_norm:
        kw["max_norm"] = args.max_norm
    if args.optimizer in ("sgd", "momentum") and args.momentum is not None:
        kw["momentum"] = args.momentum
    return get_optimizer(args.optimizer, **kw)


def _augmentation(args: argparse.Namespace) -> list[Any]:
    try:
        return augmentation_layers(args.augment) if args.augment else []
    except ValueError as err:
        raise CLIError(str(err)) from None


def _apply_preset(args: argparse.Namespace) -> None:
    if args.preset == "seed":
        defaults = {"dataset": "mnist", "loss": "sse", "optimizer": "sgd", "lr": 0.1, "epochs": 5,
                    "batch_size": 1, "scale": "seed", "shuffle": False, "activation": "sigmoid"}
        for k, v in defaults.items():
            if getattr(args, k) is None:
                setattr(args, k, v)
    if args.preset == "seed" and args.val_fraction is None:
        args.val_fraction = 0.0
    if args.model is None:
        args.model = "mlp"
    if args.model == "resnet" and args.depth is None:
        args.depth = 20
    if args.model == "resmlp" or (args.model == "mlp" and (args.depth is not None or args.width is not None)):
        args.depth = 10 if args.depth is None else args.depth
        args.width = 64 if args.width is None else args.width
    defaults = {"dataset": "digits", "loss": "xent", "optimizer": "adam", "epochs": 20, "batch_size": 32,
                "scale": "unit", "shuffle": True, "val_fraction": 0.1, "activation": "relu",
                "dropout": 0.5 if args.model == "cnn" else 0.0,     # the Keras convnet's dropout before its dense layer
                "weight_decay": 0.0, "early_stopping": 0, "precision": "float32"}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)


#: train options that shape the run: recorded in checkpoints, compared (or taken over) on resume
RUN_OPTIONS = ("dataset", "label_column", "scale", "seed", "val_fraction", "preset", "shortcut", "batchnorm", "layers",
               "activation", "loss", "optimizer", "lr", "momentum", "weight_decay", "clip_norm", "max_norm",
               "dropout", "schedule", "early_stopping", "epochs", "batch_size", "shuffle", "precision", "model",
               "augment", "depth", "width")

#: options recorded in a checkpoint only when set (checkpoints written before they existed still resume)
RECORDED_WHEN_SET = ("batchnorm", "augment", "depth", "width")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _setting_key(dest: str) -> str:
    """The name a checkpoint records an option under (``fit`` records the epochs itself)."""
    return "epochs" if dest == "epochs" else _flag(dest)


def _given(args: argparse.Namespace) -> set[str]:
    """The options the user typed (as opposed to defaults)."""
    return getattr(args, "given", None) or set()


def _check_options(args: argparse.Namespace) -> None:
    """Refuse values out of range before anything is read or written."""
    for dest, ok, want in (("lr", lambda v: 0 < v < float("inf"), "a positive finite learning rate"),
                           ("epochs", lambda v: v >= 0, "a non-negative integer"),
                           ("batch_size", lambda v: v >= 1, "a positive integer"),
                           ("checkpoint_every", lambda v: v >= 0, "a non-negative number of steps (0: each epoch)"),
                           ("early_stopping", lambda v: v >= 0, "a non-negative patience (0: off)"),
                           ("dropout", lambda v: 0 <= v < 1, "a rate in [0, 1)"),
                           ("val_fraction", lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
                           ("weight_decay", lambda v: v >= 0, "a non-negative number"),
                           ("clip_norm", lambda v: v > 0, "a positive number"),
                           ("max_norm", lambda v: v > 0, "a positive number"),
                           ("momentum", lambda v: 0 <= v < 1, "a value in [0, 1)"),
                           ("threads", lambda v: v >= 1, "a positive number of threads per process"),
                           ("width", lambda v: v >= 1, "a positive number of units")):
        value = getattr(args, dest, None)
        if value is not None and not ok(value):
            raise CLIError(f"{_flag(dest)}: expected {want}, got {value}")
    if args.resume and args.resume_if_exists:
        raise CLIError("give either --resume or --resume-if-exists, not both")
    if args.sync_batchnorm and launched_size() == 1:
        raise CLIError("--sync-batchnorm synchronizes BatchNorm across the processes of a data-parallel run; "
                       "start several (mpiexec -n N deepnet train ..., or --nproc N)")
    if args.dataset is not None:
        args.dataset = dataset_key(args.dataset)
        if args.dataset not in NAMES:
            raise CLIError(f"unknown data set {args.dataset!r}: expected one of {', '.join(NAMES)}")
    if args.schedule is not None:
        get_schedule(args.schedule, 0.1, 10)        # an unknown name fails here, not after loading data


def _check_combinations(args: argparse.Namespace, resumed: dict[str, Any] | None) -> None:
    """Options that would do nothing in this combination, with the final settings (after the
    preset and a resumed run's settings)."""
    given = _given(args)
    if args.preset == "seed":
        fixed = [_flag(d) for d in ("layers", "activation", "dropout", "batchnorm") if d in given]
        if fixed:
            raise CLIError(f"{', '.join(fixed)} cannot change --preset seed's fixed 784-50-10 sigmoid network "
                           "(drop them, or drop --preset to build your own network)")
    elif args.shortcut:
        raise CLIError("--shortcut only applies to --preset seed (the notebook's network)")
    if args.model == "cnn" and ("layers" in given or "activation" in given or args.preset == "seed"):
        what = [_flag(d) for d in ("layers", "activation") if d in given] + (["--preset seed"] if args.preset else [])
        raise CLIError(f"{', '.join(what)}: these build an MLP; --model cnn has its own layers (drop one of them)")
    if args.augment and args.model not in ("cnn", "resnet"):
        raise CLIError(f"--augment {args.augment}: augmentation layers take images, so they need --model cnn "
                       "or resnet")
    _check_depth(args, given)
    _augmentation(args)                                   # a bad spec fails before the data is read
    if args.sync_batchnorm and not args.batchnorm and args.depth is None:
        raise CLIError("--sync-batchnorm synchronizes BatchNorm layers, and this network has none (add --batchnorm)")
    if args.momentum is not None and args.optimizer not in ("sgd", "momentum"):
        raise CLIError(f"--momentum applies to --optimizer sgd or momentum, not {args.optimizer} "
                       "(which would ignore it)")
    if "scale" in given and args.dataset in ("csv", "npz"):
        raise CLIError(f"--scale applies to image data sets; --dataset {args.dataset} values are used as in the file")
    if "label_column" in given and args.dataset != "csv":
        raise CLIError(f"--label-column applies to --dataset csv, not {args.dataset}")
    if args.data is not None and args.dataset == "digits":
        raise CLIError("--data does nothing with --dataset digits (bundled with scikit-learn); "
                       "did you mean --dataset mnist, idx, csv or npz?")
    if args.no_download and args.dataset not in ("mnist", "fashion-mnist"):
        raise CLIError(f"--no-download does nothing with --dataset {args.dataset} (only mnist and fashion-mnist "
                       "are downloaded)")
    if resumed and args.schedule and resumed["epochs"]["recorded"] not in (None, args.epochs):
        raise CLIError(f"--epochs {args.epochs}: the run was started with {resumed['epochs']['recorded']} epochs "
                       f"and --schedule {args.schedule} spans them; resuming with another number would change "
                       "its learning rates (start a new run to train longer)")


def _check_depth(args: argparse.Namespace, given: set[str]) -> None:
    """--depth/--width and the presets they size: the allowed depths, and the options that would
    change a preset's fixed layers refused."""
    preset = args.model in ("resnet", "resmlp") or args.depth is not None
    if not preset:
        if args.width is not None:
            raise CLIError(f"--width {args.width} sizes --model resmlp (or mlp with --depth), not --model {args.model}")
        return
    what = f"--model {args.model}" + ("" if args.model != "mlp" else f" --depth {args.depth}")
    if args.preset == "seed":
        raise CLIError(f"--preset seed and {what} are two different networks (drop one of them)")
    if args.model == "cnn":
        raise CLIError("--depth and --width size --model resnet, resmlp or mlp; --model cnn has its own layers")
    fixed = [_flag(d) for d in ("layers", "activation", "dropout", "batchnorm") if d in given]
    if args.model == "resnet" and args.width is not None:
        fixed.append("--width")
    if fixed:
        raise CLIError(f"{', '.join(fixed)} cannot change {what}'s fixed layers (BatchNorm and ReLU in every "
                       "block; docs/training.md): drop them")
    if args.loss != "xent":
        raise CLIError(f"--loss {args.loss}: {what} outputs logits for --loss xent (softmax cross-entropy)")
    try:
        (resnet_blocks if args.model == "resnet" else resmlp_blocks)(args.depth)
    except ValueError as err:
        raise CLIError(f"--depth {args.depth}: {err}") from None


def _check_output_folder(out: Path, option: str = "--out", holds: str = "model.npz and summary.json") -> None:
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


def _check_free_space(out: Path, net: Any, checkpointing: bool) -> None:
    """A rough check that the model (and checkpoints, with their optimizer state) fit on the disk."""
    model_bytes = net.n_params * 8 + (1 << 20)            # float32 weights (x2: temporary file) + headroom
    need = model_bytes * (1 + (8 if checkpointing else 0))   # up to 4 checkpoints with Adam's 2 slots
    free = shutil.disk_usage(out).free
    if free < need:
        raise CLIError(f"--out {out}: only {free / 2**20:.1f} MiB free on its disk; this run needs about "
                       f"{need / 2**20:.1f} MiB for the model{' and checkpoints' if checkpointing else ''}")


def _resume_settings(args: argparse.Namespace, ckpt_dir: Path) -> dict[str, Any] | None:
    """For --resume: take the recorded settings the user did not give, refuse those given
    differently (the number of epochs may change, not below those done).  Returns what
    resume did, or None for a new run (--resume-if-exists without a checkpoint)."""
    state = Checkpointer(ckpt_dir).read_state() if ckpt_dir.is_dir() else None
    if state is None:
        if args.resume:
            raise CLIError(f"--resume: no checkpoint in {ckpt_dir} (drop --resume to start a new run, or use "
                           "--resume-if-exists)")
        _say(args, f"no checkpoint in {ckpt_dir}: starting a new run")
        return None
    recorded, given = dict(state["settings"] or {}), _given(args)
    refusal = ranks_refusal(state["path"], int(recorded.get("ranks", 1)), launched_size())
    if refusal:
        raise CLIError(refusal)
    if state["settings"] is not None:
        # recorded only when set: a checkpoint without them was trained without them
        recorded.setdefault("--batchnorm", False)
        recorded["--sync-batchnorm"] = bool(recorded.get("sync_batchnorm", False))
    keys = {dest: _setting_key(dest) for dest in (*RUN_OPTIONS, "sync_batchnorm") if _setting_key(dest) in recorded}
    diffs = settings_differences({keys[d]: recorded[keys[d]] for d in keys if d in given},
                                 {keys[d]: getattr(args, d) for d in keys if d in given}, state["epochs_done"])
    if diffs:
        raise CLIError(resume_refusal(state["path"], diffs))
    saved = state["settings"] or {}
    taken = [keys[d] for d in keys if d not in given and keys[d] in saved]     # not the implied defaults
    for dest in keys:
        if dest not in given:
            setattr(args, dest, recorded[keys[dest]])
    if args.data is None and state["notes"].get("--data"):
        args.data = state["notes"]["--data"]
        taken.append("--data")
    epochs_before = recorded.get("epochs")
    if epochs_before is not None and args.epochs != epochs_before:
        _say(args, f"resuming with --epochs {args.epochs} (the run was started with {epochs_before})")
    return {"checkpoint": str(state["path"]), "settings_from_checkpoint": taken, "finished": state["finished"],
            "epochs_done": state["epochs_done"], "next_batch": state["next_batch"],
            "epochs": {"recorded": epochs_before, "used": args.epochs}}


def _finished_model(out: Path, resumed: dict[str, Any]) -> str:
    """Where a finished run's weights are: its model file, or, when the run stopped (Ctrl-C at
    an epoch's end, then resumed with those epochs) before writing one, its last checkpoint."""
    if (out / "model.npz").exists():
        return f"its model is {out / 'model.npz'}"
    return (f"it wrote no model file: its weights are in {resumed['checkpoint']} "
            "(deepnet evaluate and deepnet predict take it)")


def _resuming_from(resumed: dict[str, Any]) -> str:
    """The line a resumed run starts with: which checkpoint, and where in the run."""
    epoch, step = resumed["epochs_done"] + 1, resumed["next_batch"]
    where = f"at epoch {epoch}, step {step}" if step else f"at the start of epoch {epoch}"
    return f"resuming from {resumed['checkpoint']} {where}"


def _new_run_check(out: Path, ckpt_dir: Path, checkpointing: bool) -> bool:
    """A new run never mixes its checkpoints with an earlier run's (one stopped by Ctrl-C
    leaves one even without --checkpoint-every): with checkpoints asked for, refuse, saying how
    to go on; without, return False (the run then writes no checkpoint, even on Ctrl-C)."""
    last = Checkpointer(ckpt_dir, interrupt_only=True).last_path()
    if last is not None and not checkpointing:
        if launched_rank() == 0:
            print(f"note: {ckpt_dir} holds an earlier run's checkpoints (last: {last.name}): this new run starts "
                  f"from scratch and leaves them alone; to continue that run instead: "
                  f"deepnet train --out {out} --resume", file=sys.stderr, flush=True)
        return False
    if last is not None:
        raise CLIError(f"{ckpt_dir} holds checkpoints of an earlier run (last: {last.name}); a new run's "
                       f"checkpoints would mix with them: resume it with: deepnet train --out {out} --resume; "
                       f"or start the new run in another --out (or remove {ckpt_dir})")
    return True


def _interrupted(args: argparse.Namespace, err: TrainingInterrupted, out: Path) -> int:
    """The one line a run stopped by SIGINT or SIGTERM ends with (rank 0 says it); its exit status."""
    if launched_rank() == 0:
        if err.aborted:
            line = f"{err}; resume from the last checkpoint, if any, with: deepnet train --out {out} --resume"
        elif err.checkpoint is None:
            line = (f"interrupted ({err.signal_name}) {interrupted_at(err)}; no checkpoint written: "
                    f"{out / 'checkpoints'} holds an earlier run's checkpoints (a run keeps its work on Ctrl-C "
                    "in an --out of its own)")
        else:
            line = (f"interrupted ({err.signal_name}) {interrupted_at(err)}; checkpoint written to {err.checkpoint}; "
                    f"resume with: deepnet train --out {out} --resume")
        print(f"deepnet: {line}", file=sys.stderr, flush=True)
    args.stopped_together = not err.aborted       # every rank stopped at the same step: no abort
    return err.exit_code


def _keep_earlier(path: Path) -> Path | None:
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


def _save_results(net: Any, out: Path, extra: dict[str, Any]) -> Path:
    """Write model.npz atomically; an existing one is kept as model.<its time>.npz first.  If
    the folder cannot take it any more (disk full, removed, read-only), the weights go to a
    rescue folder and the error names both places."""
    target = out / "model.npz"
    try:
        kept = _keep_earlier(target)
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


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing, p = [], folder.absolute()
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    return missing


def _remove_if_empty(made: list[list[Path]]) -> None:
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


def _limit_threads(args: argparse.Namespace, plan: ThreadPlan | None = None,
                   local_size: int | None = None) -> ThreadPlan | None:
    """Size this process's thread pools (docs/distributed.md, "Threads per rank"): a rank of a
    data-parallel run gets its share of the cores, ``--threads`` any process its number.
    Again with the communicator's count of the ranks on this machine, where the launcher's
    variables said otherwise.  None: left as the libraries start (one process, no --threads)."""
    if plan is None and launched_size() == 1 and args.threads is None:
        return None
    if plan is not None:
        if plan.ranks is None or local_size is None or local_size == plan.ranks:
            return plan
        plan = plan_threads(ranks=local_size, ranks_from="MPI's count")
    else:
        plan = plan_threads(args.threads)
    for missed in apply_threads(plan):
        if launched_rank() == 0:
            print(f"warning: threads: {missed}", file=sys.stderr, flush=True)
    return plan


def cmd_train(args: argparse.Namespace) -> int:
    """``deepnet train``; a run that fails leaves no empty folder it created (--out, --plot)."""
    made: list[list[Path]] = []
    try:
        return _train(args, made)
    except BaseException:
        _remove_if_empty(made)
        raise


def _train(args: argparse.Namespace, made: list[list[Path]]) -> int:
    # 1. settings: checked, completed from a resumed run, checked in combination; nothing written yet
    _check_options(args)
    if launched_rank() != 0:
        args.quiet = True           # rank 0 reports for the data-parallel run
    out = Path(args.out or f"runs/{args.dataset or ('mnist' if args.preset == 'seed' else 'digits')}")
    ckpt_dir = out / "checkpoints"
    resumed = _resume_settings(args, ckpt_dir) if args.resume or args.resume_if_exists else None
    _apply_preset(args)
    _check_combinations(args, resumed)
    if resumed is not None and (resumed["finished"] or resumed["epochs_done"] >= args.epochs):
        why = resumed["finished"] or f"all {resumed['epochs_done']} epochs are done"
        if launched_rank() == 0:
            print(f"nothing to train: the run in {out} has finished ({why}); {_finished_model(out, resumed)}",
                  flush=True)
        return 0
    if resumed is not None:
        _say(args, _resuming_from(resumed))
    checkpointing = bool(args.checkpoint_every or args.resume or args.resume_if_exists)
    keeps_checkpoints = resumed is not None or _new_run_check(out, ckpt_dir, checkpointing)
    if resumed is None:
        if args.epochs == 0 and (out / "model.npz").exists():
            raise CLIError(f"--epochs 0 would replace the trained model in {out} with an untrained one "
                           "(choose another --out)")
    # 2. where results go: checked (and created) before any data is loaded, by rank 0 (it writes them)
    if launched_rank() == 0:
        made.append(_missing_folders(ckpt_dir))     # checkpoints/ may be made later: removed too if empty
        _check_output_folder(out)
    if args.plot and launched_rank() == 0:
        made.append(_missing_folders(Path(args.plot)))
        _check_output_folder(Path(args.plot), "--plot", "the PNG pictures")
        pyplot()  # fail early with a clear message if matplotlib is missing
    # 3. threads: each rank of a data-parallel run its share of the cores (before the backend loads numba)
    threads = _limit_threads(args)
    ops = get_ops(args.backend or get_backend())
    # 4. the processes of a data-parallel run (started by mpiexec): each on its own GPU
    comm = None if launched_size() == 1 and args.comm == "auto" else communicator(args.comm, ops)
    pools = None
    if comm is not None:
        _say(args, f"data-parallel: {comm.describe()}; batch {args.batch_size} per rank, "
                   f"{args.batch_size * comm.size} per step")
        threads = _limit_threads(args, threads, comm.local_size)
        pools = comm.allgather_object(thread_pools())
    if threads is not None:
        _say(args, f"threads: {threads.describe('rank' if comm is not None else 'process')}")
    # 5. data and network (rank 0 reads, or downloads, first; the others then read its files)
    if comm is not None and comm.rank != 0:
        comm.barrier()
    data = load_dataset(args.dataset, args.data, scale=args.scale, download=not args.no_download,
                        label_column=args.label_column, seed=args.seed, log=lambda m: _say(args, m))
    if comm is not None and comm.rank == 0:
        comm.barrier()
    as_host_inputs(data.X_test, data.n_features, f"{data.name} test data")   # bad test data fails now, not after
    _say(args, f"data: {data.description}; inputs scaled '{data.scaling}'")
    for warning in data.label_warnings() if launched_rank() == 0 else ():
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    if data.name == "digits":
        _say(args, "      (the offline default; for MNIST run: deepnet train --dataset mnist [--data DIR], "
                   "or the notebook's network: deepnet train --preset seed --data DIR)")
    net = _build_network(args, data.n_features, data.n_classes, data.image_shape)
    loss = {"sse": SumOfSquares(on=0.99, off=0.01), "mse": MeanSquaredError(),
            "xent": SoftmaxCrossEntropy()}[args.loss]
    opt = _optimizer(args)
    args.lr = opt.lr                     # record the learning rate really used (the optimizer's default if none)
    if args.diagnostics:
        net.diagnostics = GradientFlow()
    _say(args, net.summary())
    _say(args, f"loss {loss!r}, optimizer {opt!r}, {args.epochs} epochs, batch {args.batch_size}, "
               f"backend {net.ops.name}, seed {args.seed}")

    X, y = data.X_train, data.y_train
    rows = val_rows = None
    if args.val_fraction:       # the split by indices: no copy of the training set
        rows, val_rows = data.validation_rows(args.val_fraction, args.seed)
    n_train = len(X) if rows is None else len(rows)
    if launched_rank() == 0:         # the rank that writes
        _check_free_space(out, net, checkpointing)
    # a whole-epoch graph runs no Python between steps: no per-batch bar then (the epoch lines stay)
    callbacks: list[Any] = [ProgressBar(n_train, args.epochs, quiet=args.quiet or args.graphs == "epoch")]
    if args.early_stopping:
        callbacks.append(EarlyStopping("val_loss" if val_rows is not None else "loss", patience=args.early_stopping))
    if args.schedule:
        callbacks.append(LearningRateScheduler(get_schedule(args.schedule, opt.lr, args.epochs)))
    extra = {"dataset": data.name, "scale": data.scaling, "image_shape": data.image_shape,
             "class_names": data.class_names, "n_features": data.n_features, "pixel_max": data.pixel_max,
             "split": _split_record(args, data)}
    # without --checkpoint-every or --resume, a checkpoint is written only if SIGINT or SIGTERM stops the run;
    # --batchnorm is recorded only when given: checkpoints written before it existed still resume
    checkpoint = None if not keeps_checkpoints else Checkpointer(
        ckpt_dir, every_steps=args.checkpoint_every, interrupt_only=not checkpointing,
        settings={_flag(d): getattr(args, d) for d in RUN_OPTIONS
                  if d != "epochs" and not (d in RECORDED_WHEN_SET and getattr(args, d) in (None, False))},
        notes={"--data": None if args.data is None else os.path.abspath(args.data), "model": extra})

    class EpochLine(Callback):
        trained = n_train       # rows trained in the epoch by this run (fewer when interrupted or resumed)

        def on_epoch_totals(self, net: Any, epoch: int, totals: dict[str, Any]) -> None:
            self.trained = totals.get("trained", n_train)

        def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, Any]) -> None:
            extra = "".join(f"  {k} {logs[k]:.4f}" for k in ("val_loss", "val_accuracy") if k in logs)
            _say(args, f"epoch {epoch + 1}/{args.epochs}  loss {logs['loss']:.4f}  accuracy {logs['accuracy']:.4f}"
                       f"{extra}  ({logs['time']:.1f}s, {self.trained / max(logs['time'], 1e-9):,.0f} samples/s)")

    callbacks.append(EpochLine())
    # 4. train, then save at once (before anything else can fail), then evaluate
    t0 = time.perf_counter()
    net.loss, net.optimizer = loss, opt      # what net.fit(loss=, optimizer=) does; then its Trainer, given rows
    trainer = Trainer(net, epochs=args.epochs, batch_size=args.batch_size, shuffle=args.shuffle,
                      validation_data=None if val_rows is None else (X, y), validation_rows=val_rows,
                      callbacks=callbacks, checkpoint=checkpoint, resume=bool(resumed), rows=rows,
                      graphs=args.graphs, precision=args.precision, communicator=comm,
                      sync_batchnorm=args.sync_batchnorm,
                      late_signal_raises=False)     # one after the last step: the results are saved first
    try:
        hist = trainer.fit(X, y)
    except TrainingInterrupted as err:
        return _interrupted(args, err, out)
    train_time = time.perf_counter() - t0
    if comm is not None and comm.rank != 0:
        return 0            # rank 0 saves, evaluates and reports; the weights are the same on every rank
    model_path = _save_results(net, out, extra)
    test = net.evaluate(data.X_test, data.y_test)
    pred = net.predict_classes(data.X_test)
    ops = net.ops
    conf = to_host(confusion_matrix(ops, to_device(data.y_test, ops, "int64"),
                                    to_device(pred, ops, "int64"), data.n_classes))
    summary = {
        "config": {k: v for k, v in vars(args).items() if k not in ("func", "given")},
        "resumed": resumed,
        "data": data.description, "backend": net.ops.name, "model": str(model_path),
        "history": hist.history, "train_seconds": train_time,
        "epoch_seconds": hist.history.get("time", []),
        "test": {"accuracy": test["accuracy"], "loss": test["loss"], "confusion_matrix": conf.tolist()},
        "versions": _versions(),
    }
    if comm is not None:
        summary["data_parallel"] = {"ranks": comm.size, "engine": comm.describe(),
                                    "batch_per_rank": args.batch_size, "sync_batchnorm": args.sync_batchnorm}
        if threads is not None:
            summary["data_parallel"].update({"threads_per_rank": threads.threads, "threads_from": threads.source,
                                             "thread_pools": pools})
    if net.stop_reason:
        summary["stopped"] = net.stop_reason
        _say(args, f"stopped: {net.stop_reason}")
    if args.plot:
        pdir = Path(args.plot)
        files = [plot_curves(hist.history, pdir / "curves.png"),
                 plot_confusion(conf, pdir / "confusion.png", data.class_names)]
        if data.image_shape:
            files.append(plot_misclassified(data.X_test, data.y_test, pred, data.image_shape,
                                            pdir / "misclassified.png", data.class_names))
        if net.diagnostics is not None:
            files.append(plot_gradient_flow(net.diagnostics.records(), pdir / "gradient_flow.png"))
        summary["plots"] = [str(f) for f in files]
    if net.diagnostics is not None:
        summary["gradient_flow"] = net.diagnostics.records()
        for warning in net.diagnostics.warnings():
            _say(args, f"warning: {warning}")
    text = json.dumps(summary, indent=2, default=_json_default)
    _keep_earlier(out / "summary.json")
    atomic_write(out / "summary.json", lambda fh: fh.write(text.encode()))
    print(f"test accuracy {100 * test['accuracy']:.2f}% on {len(data.y_test):,} {data.name} test samples "
          f"(train {train_time:.1f}s); model {model_path}, summary {out / 'summary.json'}"
          + (f", plots in {args.plot}" if args.plot else ""), flush=True)
    if trainer.signals.late:
        print(f"deepnet: {trainer.signals.late} came after the last step: the run finished and its results are "
              "saved", file=sys.stderr, flush=True)
    return 0


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return repr(o)


# ---------------------------------------------------------------- evaluate / predict
def _split_record(args: argparse.Namespace, data: Any) -> dict[str, Any]:
    """How the run's test rows were chosen, recorded in the model file (``extra["split"]``) and
    its checkpoints, so that ``deepnet evaluate`` uses exactly the rows held out from training."""
    return {"dataset": data.name, "data": None if args.data is None else os.path.abspath(args.data),
            "label_column": args.label_column if data.name == "csv" else None, "scale": args.scale,
            "seed": args.seed, "test": data.split, "test_rows": int(len(data.y_test)),
            "test_sha256": data.test_digest()}


def _checkpoint_record(ckpt: dict[str, Any] | None) -> dict[str, Any] | None:
    """The split of a checkpoint written before it noted one, from its recorded command-line
    settings (no digest of the rows: not checked); None if the command line did not write it."""
    settings = (ckpt or {}).get("settings") or {}
    if "--dataset" not in settings:
        return None
    name, seed = settings["--dataset"], settings.get("--seed", 0)
    return {"dataset": name, "data": ckpt["notes"].get("--data"), "label_column": settings.get("--label-column"),
            "scale": settings.get("--scale", "unit"), "seed": seed,
            "test": None if name in ("mnist", "fashion-mnist", "idx", "npz") else {"seed": seed}}


def _test_rows(split: dict[str, Any] | None, n_test: int) -> str:
    """The test rows in words: the data set's own test set, or a seeded split."""
    if split is None:
        return f"the data set's own test set ({n_test:,} rows)"
    if "rows" not in split:
        return f"the test split of seed {split['seed']} ({n_test:,} rows)"
    return f"the test split of seed {split['seed']} ({n_test:,} rows: {split['test_fraction']:.0%} of {split['rows']:,})"


def _split_differences(record: dict[str, Any], data: Any) -> list[str]:
    """What differs between the recorded test rows and those loaded now ([] if none, or if the
    record is an older checkpoint's settings, which hold no digest to check)."""
    if "test_sha256" not in record:
        return []
    was, now = record.get("test"), data.split
    if (was is None) != (now is None):
        return [f"its test rows are now {_test_rows(now, len(data.y_test))}, when the model was trained "
                f"{_test_rows(was, record.get('test_rows', 0))}"]
    if was and "rows" in was and now["rows"] != was["rows"]:
        return [f"it has {now['rows']:,} rows now, {was['rows']:,} when the model was trained"]
    if record["test_rows"] != len(data.y_test):
        return [f"{len(data.y_test):,} test rows now, {record['test_rows']:,} when the model was trained"]
    if record["test_sha256"] != data.test_digest():
        return [f"its held-out rows are not those recorded (SHA-256 {data.test_digest()[:16]}... now, "
                f"{record['test_sha256'][:16]}... recorded)"]
    return []


def _unrecorded_data(args: argparse.Namespace, meta: dict[str, Any]) -> tuple[Any, str]:
    """Data for a model that does not record its split (Python API, older deepnet): as asked,
    saying plainly which rows are used and what that means."""
    name = args.dataset or meta.get("dataset") or "digits"
    data = load_dataset(name, args.data, scale=meta.get("scale", "unit") if name == meta.get("dataset") else "unit",
                        download=not args.no_download, label_column=args.label_column, seed=args.seed)
    hint = " (pass the --seed it was trained with)" if data.split is not None else ""
    return data, (f"{_test_rows(data.split, len(data.y_test))}; the model file does not record how its "
                  f"training data was split (saved by the Python API or an older deepnet): if it trained on "
                  f"any of these rows, this is not a held-out accuracy{hint}")


def _recorded_data(args: argparse.Namespace, record: dict[str, Any]) -> tuple[Any, str]:
    """The test rows the record names (``--data``, ``--dataset``, ``--label-column`` override the
    source); refuses a ``--seed`` or a changed source that would evaluate on other rows."""
    given = _given(args)
    name = dataset_key(args.dataset or record["dataset"])
    if name != record["dataset"]:
        data = load_dataset(name, args.data, download=not args.no_download, label_column=args.label_column,
                            seed=args.seed)
        return data, (f"{_test_rows(data.split, len(data.y_test))} of --dataset {name} (the model was trained "
                      f"on {record['dataset']})")
    where = record["data"]
    same = args.data is None or (where is not None and Path(args.data).resolve() == Path(where).resolve())
    source = f"{where}" if where else f"the {name} data"
    split, seed = record.get("test"), record["seed"]
    if "seed" in given and args.seed != seed and split is not None:
        if same:
            raise CLIError(f"--seed {args.seed}: {args.model} was trained with --seed {seed}, which held out other "
                           f"rows of {source}; the test split of seed {args.seed} holds rows it trained on "
                           "(drop --seed to evaluate on its held-out rows)")
        seed = args.seed
    if args.data is None and where is not None and not Path(where).exists():
        raise CLIError(f"{args.model} was trained on {where}, which is not there any more: "
                       "pass --data with its new place")
    data = load_dataset(name, args.data if args.data is not None else where, scale=record.get("scale") or "unit",
                        download=not args.no_download,
                        label_column=args.label_column if "label_column" in given else record.get("label_column")
                        or "label", seed=seed, test_fraction=(split or {}).get("test_fraction", 0.2))
    rows = _test_rows(data.split if split is not None else None, len(data.y_test))
    checked = "test_sha256" in record
    if same:
        diffs = _split_differences(record, data)
        if diffs:
            raise CLIError(f"cannot evaluate {args.model} on the rows held out from its training: {source} changed "
                           f"since: {'; '.join(diffs)} (restore it, or pass --data FILE to evaluate on other data)")
        return data, (f"{rows}, the rows held out when the model was trained"
                      + (" (checked)" if checked else " (an older checkpoint: not checked)"))
    if checked and record["test_sha256"] == data.test_digest():
        return data, f"{rows} of --data {args.data}: the rows held out when the model was trained (checked)"
    return data, (f"{rows} of --data {args.data}, not the data the model was trained on ({source}): "
                  "if it trained on any of these rows, this is not a held-out accuracy")


def _model_and_data(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """The model (a model file or a checkpoint), its test data, and which rows those are in words."""
    net = load_network(args.model, backend=args.backend)
    meta = getattr(net, "metadata", None) or {}
    record = meta.get("split") or _checkpoint_record(meta.get("checkpoint"))
    data, rows = _recorded_data(args, record) if record else _unrecorded_data(args, meta)
    if net.input_width is not None and data.n_features != net.input_width:
        raise CLIError(f"the model takes {net.input_width} inputs but {data.name} has {data.n_features} features")
    return net, data, rows


def _model_inputs(net: Any, X: np.ndarray, image_shape: Any = None) -> np.ndarray:
    """Rows of a data set as a view in the model's input shape (images for a network that
    takes them directly, e.g. one starting with Conv2D).  A model saved before it saw any data
    records no input shape: rows of a data set of ``image_shape`` (H, W) images go to a network
    whose first layer takes images as (n, 1, H, W), as the data set draws them."""
    shape = getattr(net, "input_shape", None)
    if shape is None and image_shape and len(net.layers[0].input_spec() or ()) == 3:
        shape = (1, *image_shape)
    return X.reshape(len(X), *shape) if shape is not None and len(shape) > 1 else X


def _checkpoint_point(ckpt: dict[str, Any]) -> str:
    """Where in its run a checkpoint was written: "after epoch 2", or "at epoch 3, after its step 40"."""
    if ckpt.get("next_batch"):
        return f"at epoch {ckpt['epoch'] + 1}, after its step {ckpt['next_batch']}"
    return f"after epoch {ckpt['epoch']}"


def cmd_evaluate(args: argparse.Namespace) -> int:
    net, data, rows = _model_and_data(args)
    ops = net.ops
    X_test = _model_inputs(net, data.X_test, data.image_shape)
    res = net.evaluate(X_test, data.y_test)
    pred = net.predict_classes(X_test)
    k = net.output_width
    conf_d = confusion_matrix(ops, to_device(data.y_test, ops, "int64"), to_device(pred, ops, "int64"), k)
    conf, per = to_host(conf_d), to_host(per_class_accuracy(ops, conf_d))
    names = data.class_names or [str(i) for i in range(k)]
    ckpt = (getattr(net, "metadata", None) or {}).get("checkpoint")
    what = f"checkpoint {args.model} ({_checkpoint_point(ckpt)})" if ckpt else f"model {args.model}"
    loss = f"loss {res['loss']:.4f}" if net.loss is not None else "no loss (the file records none)"
    print(f"{what} on {data.description}")
    print(f"accuracy {100 * res['accuracy']:.2f}%  {loss}  ({len(data.y_test):,} samples)")
    print(f"test rows: {rows}")
    print("per-class accuracy:")
    for i in range(k):
        print(f"  {names[i]:>12s}  {100 * per[i]:6.2f}%  ({int(conf[i].sum())} samples)")
    width = max(5, len(str(int(conf.max()))) + 1)
    print("confusion matrix (rows: true, columns: predicted):")
    print(" " * 6 + "".join(f"{i:>{width}d}" for i in range(k)))
    for i in range(k):
        print(f"{i:>5d} " + "".join(f"{int(c):>{width}d}" for c in conf[i]))
    if args.json:
        Path(args.json).write_text(json.dumps({"accuracy": res["accuracy"],
                                               "loss": res["loss"] if net.loss is not None else None,
                                               "test_rows": rows, "samples": len(data.y_test),
                                               "per_class_accuracy": per.tolist(), "confusion_matrix": conf.tolist()},
                                              indent=2, default=_json_default))
    return 0


INPUT_CONVENTION = (
    "Images are read as grayscale and must have the training images' size (28x28 for MNIST, 8x8 for "
    "digits); like MNIST, the digit is light on a dark background, pixel values 0-255 (or 0-1; a digits model also reads array and CSV rows in its data's 0-16). "
    ".npy arrays and CSV rows hold one sample per row; a CSV file may have a header row and a label "
    "column, as deepnet train reads them (see --label-column).")


def bright_background_rows(raw: np.ndarray, image_shape: Any) -> np.ndarray:
    """Rows whose image border is mostly brighter than the middle of the image's own range:
    a dark digit on a lighter background (paper, a dim photo), the inverse of MNIST's
    convention (its borders are 0)."""
    h, w = image_shape
    imgs = raw.reshape(raw.shape[0], h, w)
    border = np.concatenate([imgs[:, 0, :], imgs[:, -1, :], imgs[:, :, 0], imgs[:, :, -1]], axis=1)
    mid = (raw.min(axis=1) + raw.max(axis=1)) / 2
    return np.median(border, axis=1) > mid


def _read_inputs(path: Path, n_features: int, scale: str, image_shape: Any, invert: str = "auto",
                 label_column: str | None = None, pixel_max: float = 255.0) -> tuple[np.ndarray, np.ndarray | None]:
    """The file's rows (:func:`deepnet.datasets.read_labelled_inputs`), scaled like the training
    data and, for images, inverted to light-on-dark as ``invert`` says; and its labels, if any.

    Values up to 1.5 are taken as already scaled; larger ones as 0..255 pixels, or, for rows of
    an array or CSV file (not an image file) whose values stay within a source's own smaller
    range (``pixel_max``: 16 for scikit-learn's digits), as that source's raw values."""
    raw, labels = read_labelled_inputs(path, n_features, image_shape, label_column)
    if invert == "yes" and (not image_shape or scale not in ("unit", "seed")):
        raise CLIError("--invert yes needs a model trained on images scaled 'unit' or 'seed'; this one was trained "
                       f"on {'non-image data' if not image_shape else f'pixels scaled {scale!r}'}")
    if scale not in ("unit", "seed"):
        return raw.astype(np.float32), labels
    pixels = raw.max() > 1.5            # 0..255 pixels; otherwise values already scaled like the training data
    if pixels and pixel_max < 255 and raw.max() <= pixel_max and path.suffix.lower() not in IMAGE_SUFFIXES:
        print(f"note: {path}: values 0..{raw.max():g} read as the training data's own pixel range "
              f"0..{pixel_max:g}", file=sys.stderr, flush=True)
        raw = raw * (255.0 / pixel_max)
    x = np.clip(raw, 0, 255) if pixels else raw.astype(np.float64)
    lo, hi = (0.0, 255.0) if pixels else ((0.01, 1.0) if scale == "seed" else (0.0, 1.0))
    if image_shape and invert != "no":
        flip = (bright_background_rows((x - lo) * (255.0 / (hi - lo)), image_shape) if invert == "auto"
                else np.ones(len(x), bool))
        if flip.any():
            x = x.copy()
            x[flip] = (lo + hi) - x[flip]
            which = "it" if len(x) == 1 else f"rows {np.flatnonzero(flip).tolist()[:20]}"
            note = (f"note: {path} has a light background (the model expects a light digit on dark, like MNIST): "
                    f"inverted {which}; pass --invert no to keep it as it is" if invert == "auto"
                    else f"note: inverted {path} (--invert yes)")
            print(note, file=sys.stderr, flush=True)
    return scale_pixels(x, scale) if pixels else x.astype(np.float32), labels


def _pixel_max(meta: dict[str, Any]) -> float:
    """The largest raw pixel value of the model's training data (files from before it was
    recorded: 16 for scikit-learn's digits, else 255)."""
    return float(meta.get("pixel_max") or (16.0 if meta.get("dataset") == "digits" else 255.0))


def cmd_predict(args: argparse.Namespace) -> int:
    net = load_network(args.model, backend=args.backend)
    meta = getattr(net, "metadata", {})
    image_shape = meta.get("image_shape")
    width = net.input_width or (math.prod(image_shape) if image_shape else None)
    if width is None or net.output_width is None:
        raise CLIError(f"{args.model} records no input shape (the network was saved before it saw any data, and "
                       f"its first layer {type(net.layers[0]).__name__} does not fix one): predict in Python on "
                       "arrays shaped as in training, or give the network input_shape= before saving it")
    names = meta.get("class_names") or [str(i) for i in range(net.output_width)]
    inputs = []                     # every file read (and checked) before anything is printed
    for name in args.inputs:
        X, labels = _read_inputs(Path(name), width, meta.get("scale", "unit"), image_shape,
                                 args.invert, args.label_column, _pixel_max(meta))
        if labels is not None and labels.size and labels.max() >= net.output_width:
            i = int(np.argmax(labels >= net.output_width))
            raise CLIError(f"{name}: row {i} has label {labels[i]}, but the model has {net.output_width} classes "
                           f"(0..{net.output_width - 1}); is --label-column the right column?")
        inputs.append((name, X, labels))
    hits = labelled = 0
    for name, X, labels in inputs:
        right = _print_predictions(name, net.predict(_model_inputs(net, X, image_shape)), names, labels)
        if labels is not None:
            print(f"{name}: accuracy {100 * right / len(labels):.2f}% ({right} of {len(labels)} labelled rows)",
                  file=sys.stderr, flush=True)
            hits, labelled = hits + right, labelled + len(labels)
    if sum(labels is not None for _, _, labels in inputs) > 1:
        print(f"all files: accuracy {100 * hits / labelled:.2f}% ({hits} of {labelled} labelled rows)",
              file=sys.stderr, flush=True)
    return 0


def _print_predictions(name: str, scores: np.ndarray, names: list[str], labels: np.ndarray | None) -> int:
    """One line per row, ``FILE:ROW  CLASS  (score, softmax)[  label L]``; returns how many
    predictions match the labels."""
    z = scores - scores.max(axis=1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    pred = prob.argmax(axis=1)
    for i, row in enumerate(prob):
        k = int(pred[i])
        mark = "" if labels is None else f"\tlabel {names[int(labels[i])]}"
        print(f"{name}:{i}\t{names[k]}\t(score {scores[i, k]:.4f}, softmax {row[k]:.3f}){mark}")
    return 0 if labels is None else int((pred == labels).sum())


# ---------------------------------------------------------------- info
def _versions() -> dict[str, str]:
    out = {"deepnet": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for pkg in ("cupy", "cupy-cuda12x", "cupy-cuda13x", "scikit-learn", "tqdm", "matplotlib", "safetensors",
                "array-api-strict", "torch", "threadpoolctl"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def cmd_info(args: argparse.Namespace) -> int:
    print(f"deepnet {_versions()['deepnet']} on Python {platform.python_version()} ({platform.machine()}, "
          f"{os.cpu_count()} CPUs)")
    for k, v in _versions().items():
        if k not in ("deepnet", "python"):
            print(f"  {k:18s} {v}")
    print("backends:")
    for name, status in available_backends().items():
        print(f"  {name:8s} {status}")
    try:
        ops = get_ops("cupy")
        info = ops.memory.describe()
        print(f"GPU: {info['name']}, {info['total_bytes'] / 2**30:.1f} GiB total, "
              f"{info['free_bytes'] / 2**30:.1f} GiB free; memory pool used {info['pool_used_bytes'] / 2**20:.1f} MiB, "
              f"cached {info['pool_cached_bytes'] / 2**20:.1f} MiB (limit: CUPY_GPU_MEMORY_LIMIT="
              f"{os.environ.get('CUPY_GPU_MEMORY_LIMIT', 'unset')})")
    except Exception:
        print("GPU: none usable (see the cupy backend line above)")
    print(f"DEEPNET_BACKEND={os.environ.get('DEEPNET_BACKEND', '')!s}  DEEPNET_DATA={os.environ.get('DEEPNET_DATA', '')!s}")
    for line in _threads_info():
        print(line)
    return 0


def _threads_info() -> list[str]:
    """What ``deepnet info`` says of threads: this process's, and a data-parallel rank's share."""
    cores = available_cores()
    try:
        plan = plan_threads(ranks=None if launched_size() > 1 else 2)
    except ValueError as err:
        return [f"threads: {err}"]
    pools = thread_pools()
    blas = ("an unknown number of threads (threadpoolctl is not installed)" if pools["blas"] is None
            else f"{pools['blas']} thread{'s' if pools['blas'] != 1 else ''}")
    lines = [f"threads: {cores} core{'s' if cores != 1 else ''} for this process; NumPy's BLAS runs {blas}"]
    if plan.ranks is None:
        lines.append(f"  every process, data-parallel ranks included: {plan.describe('process')}")
    elif launched_size() > 1:
        lines.append(f"  this rank of a data-parallel run: {plan.describe()}")
    else:
        lines.append(f"  a data-parallel rank gets max(1, cores // ranks on this machine): --nproc 2 gives "
                     f"{plan.threads} per rank; override: --threads N or OMP_NUM_THREADS")
    if pools["blas"] is None:
        lines.append("  under a plain mpiexec, NumPy's BLAS keeps the threads it started with unless threadpoolctl "
                     "is installed (pip install threadpoolctl); --nproc sets them before the ranks start")
    return lines


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deepnet", description="Train and use neural networks with explicit backpropagation.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    def data_args(sp: argparse.ArgumentParser, default_dataset: str | None) -> None:
        sp.add_argument("--dataset", default=default_dataset,
                        help="digits (offline default), mnist, fashion-mnist (both verified against their "
                             "official content), idx (a folder of MNIST-layout IDX files, not verified), "
                             "seed-csv, csv, npz")
        sp.add_argument("--data", default=None, help="folder (mnist, fashion-mnist) or file (csv, npz) to read")
        sp.add_argument("--label-column", default="label", help="label column of a csv data set (name or index)")
        sp.add_argument("--no-download", action="store_true", help="never download; fail if files are missing")
        sp.add_argument("--backend", default=None,
                        help="numpy (default), cupy, strict, cupy-shaped (CuPy's code path on the CPU) or any "
                             "registered backend")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    t = sub.add_parser("train", help="train a network and save it")
    data_args(t, None)
    t.add_argument("--preset", choices=["seed"], help="seed: the course notebook's 784-50-10 network")
    t.add_argument("--model", choices=["mlp", "cnn", "resnet", "resmlp"], default=None,
                   help="mlp (default: Dense layers, see --layers; with --depth/--width the plain counterpart of "
                        "resmlp), cnn (conv 32 → pool → conv 64 → pool → dropout → dense, for image data sets), "
                        "resnet (a ResNet-20-like network for image data sets, see --depth) or resmlp (a "
                        "pre-activation residual MLP, see --depth and --width); docs/training.md")
    t.add_argument("--depth", type=int, default=None, metavar="N",
                   help="--model resnet: 6n+2 weighted layers (default 20); --model resmlp or mlp: the number of "
                        "Dense layers, even, 4 or more (default 10)")
    t.add_argument("--width", type=int, default=None, metavar="W",
                   help="--model resmlp (or mlp with --depth): the units of each hidden Dense layer (default 64)")
    t.add_argument("--shortcut", action="store_true", help="with --preset seed: the notebook's ẽ = Aᵀe shortcut")
    t.add_argument("--batchnorm", action="store_true",
                   help="BatchNorm after each hidden Dense layer (mlp) or convolution (cnn), before its activation")
    t.add_argument("--layers", help="layer sizes, e.g. 784-128-64-10 (default: inputs-128-classes)")
    t.add_argument("--activation", default=None, choices=["relu", "sigmoid", "tanh", "leaky_relu"],
                   help="hidden activation (default relu)")
    t.add_argument("--loss", choices=["xent", "sse", "mse"], default=None)
    t.add_argument("--optimizer", choices=["sgd", "momentum", "adam", "adamw", "rmsprop"], default=None)
    t.add_argument("--lr", type=float, default=None, help="learning rate (optimizer default if omitted)")
    t.add_argument("--momentum", type=float, default=None)
    t.add_argument("--weight-decay", type=float, default=None)
    t.add_argument("--clip-norm", type=float, default=None)
    t.add_argument("--max-norm", type=float, default=None)
    t.add_argument("--dropout", type=float, default=None,
                   help="dropout rate: after each hidden activation of an MLP (default 0); with --model cnn, "
                        "once before the last Dense layer (default 0.5)")
    t.add_argument("--augment", default=None, metavar="SPEC",
                   help="with --model cnn or resnet: augment training images, e.g. shift2 (random shifts by up to 2 pixels), "
                        "flip, vflip, comma-separated (flips do not suit digits)")
    t.add_argument("--schedule", default=None, help="learning-rate schedule: cosine, step, exponential, warmup-cosine")
    t.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--scale", choices=["unit", "seed", "raw"], default=None, help="pixel scaling")
    t.add_argument("--precision", choices=list(PRECISIONS), default=None,
                   help="the matrix products' operands: float32 (default), tf32 or bf16 (float32 master weights "
                        "and accumulation; docs/gpu.md)")
    t.add_argument("--graphs", choices=list(GRAPHS), default="auto",
                   help="capture the training step as a CUDA graph: auto (default: where the backend has graphs "
                        "and the run allows; says why not), on (required), epoch (whole epochs as one graph; "
                        "no per-batch progress bar), off")
    t.add_argument("--no-shuffle", dest="shuffle", action="store_false", default=None)
    t.add_argument("--val-fraction", type=float, default=None,
                   help="hold out this fraction of the training set for validation (default 0.1; 0 for none; "
                        "the seed preset uses none, like the notebook)")
    t.add_argument("--diagnostics", action="store_true", help="record gradient flow per layer (and plot it)")
    t.add_argument("--out", default=None, help="folder for model.npz and summary.json (default runs/<dataset>)")
    t.add_argument("--plot", default=None, metavar="DIR", help="write PNG pictures here")
    t.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS",
                   help="also save a checkpoint every STEPS steps (checkpoints are written at each epoch end "
                        "whenever this or --resume is given; Ctrl-C or SIGTERM writes one where the run stopped "
                        "in any case)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run whose checkpoints are in --out (an error if there are none); settings "
                        "not given are taken from the checkpoint, settings given differently are refused, "
                        "except a larger --epochs")
    t.add_argument("--resume-if-exists", action="store_true",
                   help="like --resume when --out holds a checkpoint, otherwise start a new run")
    t.add_argument("--quiet", action="store_true")
    t.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train data-parallel in N processes on this machine (started with mpiexec; "
                        "docs/distributed.md); under mpiexec -n N, deepnet detects MPI itself")
    t.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads of each process's BLAS and numba pools (default: with --nproc or under mpiexec, "
                        "each rank gets the cores of this machine divided by its ranks; the user's "
                        "OMP_NUM_THREADS otherwise; docs/distributed.md)")
    t.add_argument("--comm", choices=list(COMM_KINDS), default="auto",
                   help="what reduces the gradients of a data-parallel run: auto (default: NCCL for GPU "
                        "arrays where CuPy has it, else MPI), mpi, nccl")
    t.add_argument("--sync-batchnorm", action="store_true",
                   help="data-parallel: BatchNorm normalizes with the statistics of the global batch "
                        "(summed over the ranks) instead of each rank's own")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix of a model")
    e.add_argument("model")
    data_args(e, None)
    e.add_argument("--json", default=None, help="also write the results to this JSON file")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="predict classes for images, .npy arrays or CSV rows",
                        description="Predict classes for images, .npy arrays or CSV rows. " + INPUT_CONVENTION)
    pr.add_argument("model")
    pr.add_argument("inputs", nargs="+", metavar="input",
                    help="images (.png, .jpg, .bmp), .npy arrays or CSV files, any number; each output line "
                         "starts FILE:ROW (ROW 0: the file's first sample)")
    pr.add_argument("--label-column", default=None,
                    help="the label column of CSV inputs (name or index): left out of the features and compared "
                         "with the predictions (accuracy on stderr). Default: a column named 'label', else the "
                         "first column of rows one value wider than the model's inputs (the notebook's CSV)")
    pr.add_argument("--invert", choices=["auto", "yes", "no"], default="auto",
                    help="invert images to light-on-dark: auto (default) inverts those with a light background")
    pr.add_argument("--backend", default=None)
    pr.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    pr.set_defaults(func=cmd_predict)

    i = sub.add_parser("info", help="versions, backends, GPU")
    i.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    i.set_defaults(func=cmd_info)
    return p


def given_options(argv: list[str]) -> set[str]:
    """The destinations of the options present in ``argv`` (parsed again with no defaults)."""
    parser = build_parser()

    def strip_defaults(p: argparse.ArgumentParser) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    strip_defaults(sub)
            else:
                action.default = argparse.SUPPRESS
        p._defaults.clear()

    strip_defaults(parser)
    return set(vars(parser.parse_args(argv)))


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (or an abbreviation argparse took for it,
    ``--np``, ``--npr``, ``--npro``)."""
    def is_nproc(flag: str) -> bool:
        return len(flag) >= 4 and "--nproc".startswith(flag)

    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif is_nproc(a):
            skip = True
        elif not (a.startswith("--np") and "=" in a and is_nproc(a.split("=", 1)[0])):
            out.append(a)
    return out


def _start_processes(args: argparse.Namespace, argv: list[str]) -> int | None:
    """``--nproc N``: run this command as N MPI processes here and return their exit status
    (None: train in this process)."""
    n = getattr(args, "nproc", None)
    if n is None:
        return None
    if n < 1:
        raise CLIError(f"--nproc: expected a positive number of processes, got {n}")
    if launched_size() > 1:
        raise CLIError(f"--nproc starts the processes itself, but this one was started by an MPI launcher "
                       f"with {launched_size()}: drop --nproc (or mpiexec)")
    if n == 1:
        return None
    cmd = mpiexec_command(n, _without_nproc(argv))
    # mpiexec runs in a session of its own, so that Ctrl-C (which the terminal sends to this process
    # group) and SIGTERM reach it once, passed on from here; it passes them to every rank, which
    # stop at the same step and checkpoint.  A hangup (the terminal closed) reaches only this
    # process: it stops the ranks as SIGTERM does, rather than leave them training with no one to see.
    # Each rank gets its share of the cores, read by the libraries as they load (docs/distributed.md)
    env = {**os.environ, **environment_for_ranks(plan_threads(args.threads, ranks=n))}
    try:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    except OSError as err:
        raise CLIError(f"--nproc: could not start {cmd[0]}: {err}") from None

    def pass_on(sig: int, frame: Any) -> None:
        proc.send_signal(signal.SIGTERM if sig == getattr(signal, "SIGHUP", None) else sig)

    signals = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {sig: signal.signal(sig, pass_on) for sig in signals}
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
        started = _start_processes(args, argv)
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


if __name__ == "__main__":
    sys.exit(main())
