"""The options of ``deepnet train`` and their checks: each value in range, and no option that would do
nothing in its combination.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..datasets.registry import NAMES, dataset_key
from ..distributed.launch import launched_size
from ..layers.augment import augmentation_layers
from ..presets import resmlp_blocks, resnet_blocks
from ..schedules import get_schedule
from .common import CLIError


def augmentation(args: argparse.Namespace) -> list[Any]:
    try:
        return augmentation_layers(args.augment) if args.augment else []
    except ValueError as err:
        raise CLIError(str(err)) from None


#: train options that shape the run: recorded in checkpoints, compared (or taken over) on resume
RUN_OPTIONS = ("dataset", "label_column", "scale", "seed", "val_fraction", "preset", "shortcut", "batchnorm", "layers",
               "activation", "loss", "optimizer", "lr", "momentum", "weight_decay", "clip_norm", "max_norm",
               "dropout", "schedule", "early_stopping", "epochs", "batch_size", "shuffle", "precision", "model",
               "augment", "depth", "width")

#: options recorded in a checkpoint only when set (checkpoints written before they existed still resume)
RECORDED_WHEN_SET = ("batchnorm", "augment", "depth", "width")


def flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def setting_key(dest: str) -> str:
    """The name a checkpoint records an option under (``fit`` records the epochs itself)."""
    return "epochs" if dest == "epochs" else flag(dest)


def typed_options(args: argparse.Namespace) -> set[str]:
    """The options the user typed (as opposed to defaults)."""
    return getattr(args, "given", None) or set()


def check_options(args: argparse.Namespace) -> None:
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
            raise CLIError(f"{flag(dest)}: expected {want}, got {value}")
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


def check_combinations(args: argparse.Namespace, resumed: dict[str, Any] | None) -> None:
    """Options that would do nothing in this combination, with the final settings (after the
    preset and a resumed run's settings)."""
    given = typed_options(args)
    if args.preset == "seed":
        fixed = [flag(d) for d in ("layers", "activation", "dropout", "batchnorm") if d in given]
        if fixed:
            raise CLIError(f"{', '.join(fixed)} cannot change --preset seed's fixed 784-50-10 sigmoid network "
                           "(drop them, or drop --preset to build your own network)")
    elif args.shortcut:
        raise CLIError("--shortcut only applies to --preset seed (the notebook's network)")
    if args.model == "cnn" and ("layers" in given or "activation" in given or args.preset == "seed"):
        what = [flag(d) for d in ("layers", "activation") if d in given] + (["--preset seed"] if args.preset else [])
        raise CLIError(f"{', '.join(what)}: these build an MLP; --model cnn has its own layers (drop one of them)")
    if args.augment and args.model not in ("cnn", "resnet"):
        raise CLIError(f"--augment {args.augment}: augmentation layers take images, so they need --model cnn "
                       "or resnet")
    _check_depth(args, given)
    augmentation(args)                                   # a bad spec fails before the data is read
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
    fixed = [flag(d) for d in ("layers", "activation", "dropout", "batchnorm") if d in given]
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
