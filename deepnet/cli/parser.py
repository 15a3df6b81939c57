"""The argument parser of the ``deepnet`` command."""

from __future__ import annotations

import argparse

from ..backend.precision import PRECISIONS
from ..distributed.launch import COMM_KINDS
from ..optimizers import OPTIMIZERS
from ..training.captured import GRAPHS
from .after_training import add_export_command, add_log_options
from .evaluate import cmd_evaluate
from .info import cmd_info
from .predict import INPUT_CONVENTION, cmd_predict
from .train import cmd_train


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deepnet", description="Train and use neural networks with explicit backpropagation.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _evaluate_parser(sub)
    _predict_parser(sub)
    add_export_command(sub)
    _info_parser(sub)
    return p


def _data_options(sp: argparse.ArgumentParser, default_dataset: str | None) -> None:
    """The options that choose a data set (train, evaluate)."""
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


def _train_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a network and save it")
    _data_options(t, None)
    _network_options(t)
    _training_options(t)
    _output_options(t)
    _process_options(t)
    t.set_defaults(func=cmd_train)
    add_log_options(t)


def _network_options(t: argparse.ArgumentParser) -> None:
    """train: the network (a preset, a model, its layers)."""
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


def _training_options(t: argparse.ArgumentParser) -> None:
    """train: loss, optimizer, regularization, schedule, epochs, batches, precision, graphs, validation."""
    t.add_argument("--loss", choices=["xent", "sse", "mse"], default=None)
    t.add_argument("--optimizer", choices=list(OPTIMIZERS), default=None)
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
                   help="the training step without Python between operations: a CUDA graph on the GPU, compiled "
                        "code on the CPU (numba): auto (default: where the backend can and the run allows; says why "
                        "not), on (one step per graph or call), epoch (runs of steps per graph or call; no "
                        "per-batch progress bar), off (the plain loop)")
    t.add_argument("--no-shuffle", dest="shuffle", action="store_false", default=None)
    t.add_argument("--val-fraction", type=float, default=None,
                   help="hold out this fraction of the training set for validation (default 0.1; 0 for none; "
                        "the seed preset uses none, like the notebook)")


def _output_options(t: argparse.ArgumentParser) -> None:
    """train: what it writes (model, summary, plots, checkpoints), resuming, quiet."""
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


def _process_options(t: argparse.ArgumentParser) -> None:
    """train: processes and threads of a (data-parallel) run."""
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


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix of a model")
    e.add_argument("model")
    _data_options(e, None)
    e.add_argument("--json", default=None, help="also write the results to this JSON file")
    e.set_defaults(func=cmd_evaluate)


def _predict_parser(sub: argparse._SubParsersAction) -> None:
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


def _info_parser(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("info", help="versions, backends, GPU")
    i.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    i.set_defaults(func=cmd_info)


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
