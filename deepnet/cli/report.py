"""What a run reports: a line per epoch, the test evaluation, summary.json and the plots, and the line
it ends with (finished or interrupted)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..backend import to_device, to_host
from ..callbacks import Callback
from ..distributed.launch import launched_rank
from ..errors import TrainingInterrupted
from ..io import atomic_write
from ..metrics import confusion_matrix
from ..plotting import plot_confusion, plot_curves, plot_gradient_flow, plot_misclassified
from ..training.trainer import interrupted_at
from .common import json_default, say, versions
from .outputs import keep_earlier, save_results


def interrupted(args: argparse.Namespace, err: TrainingInterrupted, out: Path) -> int:
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


class EpochLine(Callback):
    """The line each epoch ends with: loss, accuracy (and validation's), time and samples per second."""

    def __init__(self, args: argparse.Namespace, n_train: int) -> None:
        self.args = args
        self.n_train = n_train
        self.trained = n_train      # rows trained in the epoch by this run (fewer when interrupted or resumed)

    def on_epoch_totals(self, net: Any, epoch: int, totals: dict[str, Any]) -> None:
        self.trained = totals.get("trained", self.n_train)

    def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, Any]) -> None:
        extra = "".join(f"  {k} {logs[k]:.4f}" for k in ("val_loss", "val_accuracy") if k in logs)
        say(self.args, f"epoch {epoch + 1}/{self.args.epochs}  loss {logs['loss']:.4f}  accuracy "
                       f"{logs['accuracy']:.4f}{extra}  ({logs['time']:.1f}s, "
                       f"{self.trained / max(logs['time'], 1e-9):,.0f} samples/s)")


def report_results(args: argparse.Namespace, out: Path, resumed: dict[str, Any] | None, ranks: Any, data: Any,
                   run: Any, hist: Any, train_time: float) -> None:
    """Save the trained model at once (before anything else can fail), then evaluate it on the
    test rows, write summary.json (and the plots) and say where everything is."""
    net = run.net
    model_path = save_results(net, out, run.extra)
    test, pred, conf = _test_results(net, data)
    summary = {
        "config": {k: v for k, v in vars(args).items() if k not in ("func", "given")},
        "resumed": resumed,
        "data": data.description, "backend": net.ops.name, "model": str(model_path),
        "history": hist.history, "train_seconds": train_time,
        "epoch_seconds": hist.history.get("time", []),
        "test": {"accuracy": test["accuracy"], "loss": test["loss"], "confusion_matrix": conf.tolist()},
        "versions": versions(),
    }
    if ranks.comm is not None:
        summary["data_parallel"] = _data_parallel(args, ranks)
    if net.stop_reason:
        summary["stopped"] = net.stop_reason
        say(args, f"stopped: {net.stop_reason}")
    if args.plot:
        summary["plots"] = _plots(Path(args.plot), hist, conf, pred, data, net)
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


def _test_results(net: Any, data: Any) -> tuple[dict[str, Any], Any, Any]:
    """The trained network on the test rows: loss and accuracy, its predictions, the confusion matrix."""
    test = net.evaluate(data.X_test, data.y_test)
    pred = net.predict_classes(data.X_test)
    ops = net.ops
    conf = to_host(confusion_matrix(ops, to_device(data.y_test, ops, "int64"),
                                    to_device(pred, ops, "int64"), data.n_classes))
    return test, pred, conf


def _data_parallel(args: argparse.Namespace, ranks: Any) -> dict[str, Any]:
    """summary.json's record of a data-parallel run."""
    comm, threads = ranks.comm, ranks.threads
    record = {"ranks": comm.size, "engine": comm.describe(), "batch_per_rank": args.batch_size,
              "sync_batchnorm": args.sync_batchnorm}
    if threads is not None:
        record.update({"threads_per_rank": threads.threads, "threads_from": threads.source,
                       "thread_pools": ranks.pools})
    return record


def _plots(pdir: Path, hist: Any, conf: Any, pred: Any, data: Any, net: Any) -> list[str]:
    """The pictures of --plot: curves, confusion matrix, misclassified images, gradient flow."""
    files = [plot_curves(hist.history, pdir / "curves.png"),
             plot_confusion(conf, pdir / "confusion.png", data.class_names)]
    if data.image_shape:
        files.append(plot_misclassified(data.X_test, data.y_test, pred, data.image_shape,
                                        pdir / "misclassified.png", data.class_names))
    if net.diagnostics is not None:
        files.append(plot_gradient_flow(net.diagnostics.records(), pdir / "gradient_flow.png"))
    return [str(f) for f in files]
