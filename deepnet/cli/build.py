"""What a run trains: its data, network, loss, optimizer, callbacks and checkpoints, and the record of its
data split."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend.host import as_host_inputs
from ..callbacks import EarlyStopping
from ..checkpoint import Checkpointer
from ..datasets import load_dataset
from ..diagnostics import GradientFlow
from ..distributed.launch import launched_rank
from ..layers import Dropout
from ..losses import MeanSquaredError, SoftmaxCrossEntropy, SumOfSquares
from ..network import Network
from ..optimizers import get_optimizer
from ..presets import cnn_layers, mlp_layers, parse_spec, resmlp_layers, resnet_layers, seed_layers
from ..progress import ProgressBar
from ..schedules import LearningRateScheduler, get_schedule
from .after_training import train_logs
from .common import CLIError, say
from .options import RECORDED_WHEN_SET, RUN_OPTIONS, augmentation, flag
from .outputs import check_free_space
from .report import EpochLine
from .settings import RunPlan


def build_network(args: argparse.Namespace, n_in: int, n_classes: int, image_shape: Any = None) -> Any:
    if args.preset == "seed":
        if n_in != 784 or n_classes != 10:
            raise CLIError(f"--preset seed is 784-50-10 but the data has {n_in} features and {n_classes} classes")
        return Network(seed_layers(args.shortcut), seed=args.seed, backend=args.backend)
    if args.model == "cnn":
        if image_shape is None or int(np.prod(image_shape)) != n_in:
            raise CLIError(f"--model cnn needs image data (a data set with an image shape), but --dataset "
                           f"{args.dataset} gives rows of {n_in} values")
        layers = cnn_layers(image_shape, n_classes, dropout=args.dropout, batchnorm=args.batchnorm)
        layers[1:1] = augmentation(args)                  # on the images, right after Reshape
        return Network(layers, seed=args.seed, backend=args.backend)
    if args.model == "resnet":
        if image_shape is None or int(np.prod(image_shape)) != n_in:
            raise CLIError(f"--model resnet needs image data (a data set with an image shape), but --dataset "
                           f"{args.dataset} gives rows of {n_in} values")
        return Network(resnet_layers(image_shape, n_classes, args.depth, augment=augmentation(args)),
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


def build_optimizer(args: argparse.Namespace) -> Any:
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


def split_record(args: argparse.Namespace, data: Any) -> dict[str, Any]:
    """How the run's test rows were chosen, recorded in the model file (``extra["split"]``) and
    its checkpoints, so that ``deepnet evaluate`` uses exactly the rows held out from training."""
    return {"dataset": data.name, "data": None if args.data is None else os.path.abspath(args.data),
            "label_column": args.label_column if data.name == "csv" else None, "scale": args.scale,
            "seed": args.seed, "test": data.split, "test_rows": int(len(data.y_test)),
            "test_sha256": data.test_digest()}


def load_data(args: argparse.Namespace, comm: Any) -> Any:
    """The data set (rank 0 reads, or downloads, first; the others then read its files), its
    test rows checked before training, and what it is said."""
    if comm is not None and comm.rank != 0:
        comm.barrier()
    data = load_dataset(args.dataset, args.data, scale=args.scale, download=not args.no_download,
                        label_column=args.label_column, seed=args.seed, log=lambda m: say(args, m))
    if comm is not None and comm.rank == 0:
        comm.barrier()
    as_host_inputs(data.X_test, data.n_features, f"{data.name} test data")   # bad test data fails now, not after
    say(args, f"data: {data.description}; inputs scaled '{data.scaling}'")
    for warning in data.label_warnings() if launched_rank() == 0 else ():
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    if data.name == "digits":
        say(args, "      (the offline default; for MNIST run: deepnet train --dataset mnist [--data DIR], "
                  "or the notebook's network: deepnet train --preset seed --data DIR)")
    return data


def build_model(args: argparse.Namespace, data: Any) -> tuple[Any, Any, Any]:
    """The network, loss and optimizer the options ask for, said; ``args.lr`` becomes the
    learning rate really used (the optimizer's default if none was given)."""
    net = build_network(args, data.n_features, data.n_classes, data.image_shape)
    loss = {"sse": SumOfSquares(on=0.99, off=0.01), "mse": MeanSquaredError(),
            "xent": SoftmaxCrossEntropy()}[args.loss]
    opt = build_optimizer(args)
    args.lr = opt.lr
    if args.diagnostics:
        net.diagnostics = GradientFlow()
    say(args, net.summary())
    say(args, f"loss {loss!r}, optimizer {opt!r}, {args.epochs} epochs, batch {args.batch_size}, "
              f"backend {net.ops.name}, seed {args.seed}")
    return net, loss, opt


@dataclass(frozen=True)
class Training:
    """What a run trains, on which rows, with which callbacks and checkpoints."""

    net: Any
    loss: Any
    optimizer: Any
    X: Any
    y: Any
    rows: Any                           #: the rows of X trained on (None: all)
    val_rows: Any                       #: the rows of X validated on (None: no validation)
    callbacks: list[Any]
    checkpointer: Checkpointer | None
    extra: dict[str, Any]               #: the data's record in the model file and the checkpoints


def build_training(args: argparse.Namespace, plan: RunPlan, data: Any) -> Training:
    """Everything a run trains with, from its settings and its data."""
    net, loss, opt = build_model(args, data)
    rows = val_rows = None
    if args.val_fraction:       # the split by indices: no copy of the training set
        rows, val_rows = data.validation_rows(args.val_fraction, args.seed)
    n_train = len(data.X_train) if rows is None else len(rows)
    if launched_rank() == 0:         # the rank that writes
        check_free_space(plan.out, net, plan.checkpointing)
    extra = model_record(args, data)
    callbacks = _callbacks(args, opt, n_train, val_rows is not None)
    callbacks += train_logs(args, plan.checkpoints, plan.resumed)      # --log-dir; sets args.log_run
    return Training(net, loss, opt, data.X_train, data.y_train, rows, val_rows,
                    callbacks, _checkpointer(args, plan, extra), extra)


def _callbacks(args: argparse.Namespace, opt: Any, n_train: int, validating: bool) -> list[Any]:
    """The progress bar, early stopping, the learning-rate schedule and the epoch lines."""
    # a whole-epoch graph runs no Python between steps: no per-batch bar then (the epoch lines stay)
    callbacks: list[Any] = [ProgressBar(n_train, args.epochs, quiet=args.quiet or args.graphs == "epoch")]
    if args.early_stopping:
        callbacks.append(EarlyStopping("val_loss" if validating else "loss", patience=args.early_stopping))
    if args.schedule:
        callbacks.append(LearningRateScheduler(get_schedule(args.schedule, opt.lr, args.epochs)))
    callbacks.append(EpochLine(args, n_train))
    return callbacks


def _checkpointer(args: argparse.Namespace, plan: RunPlan, extra: dict[str, Any]) -> Checkpointer | None:
    """The run's checkpoints (None: an earlier run's are in the folder).  Without
    --checkpoint-every or --resume, one is written only if SIGINT or SIGTERM stops the run;
    options of RECORDED_WHEN_SET are recorded only when set: checkpoints written before they
    existed still resume."""
    if not plan.keeps_checkpoints:
        return None
    return Checkpointer(
        plan.checkpoints, every_steps=args.checkpoint_every, interrupt_only=not plan.checkpointing,
        settings={flag(d): getattr(args, d) for d in RUN_OPTIONS
                  if d != "epochs" and not (d in RECORDED_WHEN_SET and getattr(args, d) in (None, False))},
        notes={"--data": None if args.data is None else os.path.abspath(args.data), "model": extra,
               "log_run": args.log_run})


def model_record(args: argparse.Namespace, data: Any) -> dict[str, Any]:
    """What the model file (``extra``) and the checkpoints record of the data."""
    return {"dataset": data.name, "scale": data.scaling, "image_shape": data.image_shape,
            "class_names": data.class_names, "n_features": data.n_features, "pixel_max": data.pixel_max,
            "split": split_record(args, data)}
