"""``deepnet train``: the settings, where results go, the processes, the data and the network,
then one call that trains, then the report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import TrainingInterrupted
from ..training import FitSettings
from .build import Training, build_training, load_data
from .outputs import prepare_outputs, remove_if_empty
from .processes import start_ranks
from .report import interrupted, report_results
from .settings import run_settings


def cmd_train(args: argparse.Namespace) -> int:
    """``deepnet train``; a run that fails leaves no empty folder it created (--out, --plot)."""
    made: list[list[Path]] = []
    try:
        return _train(args, made)
    except BaseException:
        remove_if_empty(made)
        raise


def _train(args: argparse.Namespace, made: list[list[Path]]) -> int:
    plan = run_settings(args)               # nothing is written before the settings are checked
    if plan is None:
        return 0                            # a resumed run with nothing left to train
    prepare_outputs(args, plan.out, made)
    ranks = start_ranks(args)
    data = load_data(args, ranks.comm)
    run = build_training(args, plan, data)
    t0 = time.perf_counter()
    try:
        hist, late = _train_network(args, run, bool(plan.resumed), ranks.comm)
    except TrainingInterrupted as err:
        return interrupted(args, err, plan.out)
    train_time = time.perf_counter() - t0
    if ranks.comm is not None and ranks.comm.rank != 0:
        return 0            # rank 0 saves, evaluates and reports; the weights are the same on every rank
    report_results(args, plan.out, plan.resumed, ranks, data, run, hist, train_time)
    if late:
        print(f"deepnet: {late} came after the last step: the run finished and its results are saved",
              file=sys.stderr, flush=True)
    return 0


def _train_network(args: argparse.Namespace, run: Training, resume: bool, comm: Any) -> tuple[Any, str | None]:
    """Train ``run.net`` through the public ``fit``: the command line's one call into training.
    Returns the history and a SIGINT/SIGTERM that came after the last step (None if none: one
    that came before stops the run)."""
    settings = FitSettings(
        epochs=args.epochs, batch_size=args.batch_size, loss=run.loss, optimizer=run.optimizer, shuffle=args.shuffle,
        validation_data=None if run.val_rows is None else (run.X, run.y), validation_rows=run.val_rows,
        callbacks=tuple(run.callbacks), checkpoint=run.checkpointer, resume=resume, rows=run.rows,
        graphs=args.graphs, precision=args.precision, communicator=comm, sync_batchnorm=args.sync_batchnorm,
        late_signal_raises=False)       # one after the last step: the results are saved first
    hist = run.net.fit(run.X, run.y, settings=settings)
    return hist, hist.late_signal
