"""``deepnet train``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..backend import get_backend, get_ops, to_device, to_host
from ..backend.host import as_host_inputs
from ..callbacks import Callback, EarlyStopping
from ..checkpoint import Checkpointer
from ..datasets import load_dataset
from ..diagnostics import GradientFlow
from ..distributed import communicator
from ..distributed.launch import launched_rank, launched_size
from ..distributed.threads import thread_pools
from ..errors import TrainingInterrupted
from ..io import atomic_write
from ..losses import MeanSquaredError, SoftmaxCrossEntropy, SumOfSquares
from ..metrics import confusion_matrix
from ..plotting import plot_confusion, plot_curves, plot_gradient_flow, plot_misclassified, pyplot
from ..progress import ProgressBar
from ..schedules import LearningRateScheduler, get_schedule
from ..training import Trainer
from .build import build_network, build_optimizer, split_record
from .common import CLIError, json_default, say, versions
from .options import RECORDED_WHEN_SET, RUN_OPTIONS, check_combinations, check_options, flag
from .outputs import check_free_space, check_output_folder, keep_earlier, missing_folders, remove_if_empty, save_results
from .processes import limit_threads
from .report import interrupted
from .settings import apply_preset, finished_model, new_run_check, resume_settings, resuming_from


def cmd_train(args: argparse.Namespace) -> int:
    """``deepnet train``; a run that fails leaves no empty folder it created (--out, --plot)."""
    made: list[list[Path]] = []
    try:
        return _train(args, made)
    except BaseException:
        remove_if_empty(made)
        raise


def _train(args: argparse.Namespace, made: list[list[Path]]) -> int:
    # 1. settings: checked, completed from a resumed run, checked in combination; nothing written yet
    check_options(args)
    if launched_rank() != 0:
        args.quiet = True           # rank 0 reports for the data-parallel run
    out = Path(args.out or f"runs/{args.dataset or ('mnist' if args.preset == 'seed' else 'digits')}")
    ckpt_dir = out / "checkpoints"
    resumed = resume_settings(args, ckpt_dir) if args.resume or args.resume_if_exists else None
    apply_preset(args)
    check_combinations(args, resumed)
    if resumed is not None and (resumed["finished"] or resumed["epochs_done"] >= args.epochs):
        why = resumed["finished"] or f"all {resumed['epochs_done']} epochs are done"
        if launched_rank() == 0:
            print(f"nothing to train: the run in {out} has finished ({why}); {finished_model(out, resumed)}",
                  flush=True)
        return 0
    if resumed is not None:
        say(args, resuming_from(resumed))
    checkpointing = bool(args.checkpoint_every or args.resume or args.resume_if_exists)
    keeps_checkpoints = resumed is not None or new_run_check(out, ckpt_dir, checkpointing)
    if resumed is None:
        if args.epochs == 0 and (out / "model.npz").exists():
            raise CLIError(f"--epochs 0 would replace the trained model in {out} with an untrained one "
                           "(choose another --out)")
    # 2. where results go: checked (and created) before any data is loaded, by rank 0 (it writes them)
    if launched_rank() == 0:
        made.append(missing_folders(ckpt_dir))     # checkpoints/ may be made later: removed too if empty
        check_output_folder(out)
    if args.plot and launched_rank() == 0:
        made.append(missing_folders(Path(args.plot)))
        check_output_folder(Path(args.plot), "--plot", "the PNG pictures")
        pyplot()  # fail early with a clear message if matplotlib is missing
    # 3. threads: each rank of a data-parallel run its share of the cores (before the backend loads numba)
    threads = limit_threads(args)
    ops = get_ops(args.backend or get_backend())
    # 4. the processes of a data-parallel run (started by mpiexec): each on its own GPU
    comm = None if launched_size() == 1 and args.comm == "auto" else communicator(args.comm, ops)
    pools = None
    if comm is not None:
        say(args, f"data-parallel: {comm.describe()}; batch {args.batch_size} per rank, "
                   f"{args.batch_size * comm.size} per step")
        threads = limit_threads(args, threads, comm.local_size)
        pools = comm.allgather_object(thread_pools())
    if threads is not None:
        say(args, f"threads: {threads.describe('rank' if comm is not None else 'process')}")
    # 5. data and network (rank 0 reads, or downloads, first; the others then read its files)
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
    net = build_network(args, data.n_features, data.n_classes, data.image_shape)
    loss = {"sse": SumOfSquares(on=0.99, off=0.01), "mse": MeanSquaredError(),
            "xent": SoftmaxCrossEntropy()}[args.loss]
    opt = build_optimizer(args)
    args.lr = opt.lr                     # record the learning rate really used (the optimizer's default if none)
    if args.diagnostics:
        net.diagnostics = GradientFlow()
    say(args, net.summary())
    say(args, f"loss {loss!r}, optimizer {opt!r}, {args.epochs} epochs, batch {args.batch_size}, "
               f"backend {net.ops.name}, seed {args.seed}")

    X, y = data.X_train, data.y_train
    rows = val_rows = None
    if args.val_fraction:       # the split by indices: no copy of the training set
        rows, val_rows = data.validation_rows(args.val_fraction, args.seed)
    n_train = len(X) if rows is None else len(rows)
    if launched_rank() == 0:         # the rank that writes
        check_free_space(out, net, checkpointing)
    # a whole-epoch graph runs no Python between steps: no per-batch bar then (the epoch lines stay)
    callbacks: list[Any] = [ProgressBar(n_train, args.epochs, quiet=args.quiet or args.graphs == "epoch")]
    if args.early_stopping:
        callbacks.append(EarlyStopping("val_loss" if val_rows is not None else "loss", patience=args.early_stopping))
    if args.schedule:
        callbacks.append(LearningRateScheduler(get_schedule(args.schedule, opt.lr, args.epochs)))
    extra = {"dataset": data.name, "scale": data.scaling, "image_shape": data.image_shape,
             "class_names": data.class_names, "n_features": data.n_features, "pixel_max": data.pixel_max,
             "split": split_record(args, data)}
    # without --checkpoint-every or --resume, a checkpoint is written only if SIGINT or SIGTERM stops the run;
    # --batchnorm is recorded only when given: checkpoints written before it existed still resume
    checkpoint = None if not keeps_checkpoints else Checkpointer(
        ckpt_dir, every_steps=args.checkpoint_every, interrupt_only=not checkpointing,
        settings={flag(d): getattr(args, d) for d in RUN_OPTIONS
                  if d != "epochs" and not (d in RECORDED_WHEN_SET and getattr(args, d) in (None, False))},
        notes={"--data": None if args.data is None else os.path.abspath(args.data), "model": extra})

    class EpochLine(Callback):
        trained = n_train       # rows trained in the epoch by this run (fewer when interrupted or resumed)

        def on_epoch_totals(self, net: Any, epoch: int, totals: dict[str, Any]) -> None:
            self.trained = totals.get("trained", n_train)

        def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, Any]) -> None:
            extra = "".join(f"  {k} {logs[k]:.4f}" for k in ("val_loss", "val_accuracy") if k in logs)
            say(args, f"epoch {epoch + 1}/{args.epochs}  loss {logs['loss']:.4f}  accuracy {logs['accuracy']:.4f}"
                       f"{extra}  ({logs['time']:.1f}s, {self.trained / max(logs['time'], 1e-9):,.0f} samples/s)")

    callbacks.append(EpochLine())
    # 4. train, then save at once (before anything else can fail), then evaluate
    t0 = time.perf_counter()
    net.loss, net.optimizer = loss, opt      # what net.fit(loss=, optimizer=) does; then its Trainer, given rows
    trainer = Trainer(net, epochs=args.epochs, batch_size=args.batch_size, shuffle=args.shuffle,
                      validation_data=None if val_rows is None else (X, y), validation_rows=val_rows,
                      callbacks=callbacks, checkpointer=checkpoint, resume=bool(resumed), rows=rows,
                      graphs=args.graphs, precision=args.precision, communicator=comm,
                      sync_batchnorm=args.sync_batchnorm)
    trainer.signals.redeliver = False       # one after the last step: the results are saved first
    try:
        hist = trainer.fit(X, y)
    except TrainingInterrupted as err:
        return interrupted(args, err, out)
    train_time = time.perf_counter() - t0
    if comm is not None and comm.rank != 0:
        return 0            # rank 0 saves, evaluates and reports; the weights are the same on every rank
    model_path = save_results(net, out, extra)
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
        "versions": versions(),
    }
    if comm is not None:
        summary["data_parallel"] = {"ranks": comm.size, "engine": comm.describe(),
                                    "batch_per_rank": args.batch_size, "sync_batchnorm": args.sync_batchnorm}
        if threads is not None:
            summary["data_parallel"].update({"threads_per_rank": threads.threads, "threads_from": threads.source,
                                             "thread_pools": pools})
    if net.stop_reason:
        summary["stopped"] = net.stop_reason
        say(args, f"stopped: {net.stop_reason}")
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
            say(args, f"warning: {warning}")
    text = json.dumps(summary, indent=2, default=json_default)
    keep_earlier(out / "summary.json")
    atomic_write(out / "summary.json", lambda fh: fh.write(text.encode()))
    print(f"test accuracy {100 * test['accuracy']:.2f}% on {len(data.y_test):,} {data.name} test samples "
          f"(train {train_time:.1f}s); model {model_path}, summary {out / 'summary.json'}"
          + (f", plots in {args.plot}" if args.plot else ""), flush=True)
    if trainer.signals.late:
        print(f"deepnet: {trainer.signals.late} came after the last step: the run finished and its results are "
              "saved", file=sys.stderr, flush=True)
    return 0
