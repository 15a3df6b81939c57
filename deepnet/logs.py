"""Training logs written as the run goes: a CSV file and TensorBoard event files.

* :class:`CSVLogger`: one row per epoch, Keras' ``CSVLogger`` columns (epoch, loss, accuracy,
  val_loss, val_accuracy, lr, time), written and closed at each epoch's end.
* :class:`TensorBoardLogger`: TensorBoard event files through ``tensorboardX`` (the optional
  ``logs`` extra): the epoch's metrics, the learning rate, histograms of every weight and of its
  last gradient, the gradient-flow norms when ``net.diagnostics`` is a
  :class:`~deepnet.diagnostics.GradientFlow`, and optionally the batch loss every N steps.
  Every value is logged at the run's step (optimizer steps done), so the epochs of runs with
  different batch sizes stay comparable by ``epoch`` (also logged).

A resumed run (``fit(..., resume=True)``, or ``initial_epoch`` > 0 at ``on_train_begin``) continues
the same files without duplicating a step: the CSV rows of the epochs it trains again are dropped,
and the TensorBoard writer marks a restart at the next step (TensorBoard's own ``purge_step``:
readers discard the earlier files' values from that step on).  In a data-parallel run only rank 0
writes.  :func:`log_callbacks` gives both for one folder.
"""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Any

from .backend import to_host
from .callbacks import Callback
from .model_files import atomic_write

#: the columns of the CSV log, as Keras writes them (``time``: the epoch's seconds)
CSV_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "time")


class CSVLogger(Callback):
    """Append one row per epoch to the CSV file ``path`` (epoch counted from 0, as Keras; a
    metric the run does not have, e.g. val_loss without validation data, is ``NA``).

    ``append=False`` refuses an existing file at the start of a new run (nothing is replaced);
    ``append=True`` adds to it.  A resumed run (``resumed`` in the ``on_train_begin`` logs)
    always continues it, dropping the rows of the epochs it trains again (from its checkpoint's
    epoch on: a checkpoint written inside an epoch trains that epoch again)."""

    def __init__(self, path: str | os.PathLike[str], append: bool = False, separator: str = ",") -> None:
        self.path, self.append, self.separator = Path(path), bool(append), separator
        self._active = False
        self._started = False        # this logger wrote the file (a later fit call continues it)

    def on_train_begin(self, net: Any, logs: dict[str, Any]) -> None:
        self._active = int(logs.get("rank", 0)) == 0
        if not self._active:
            return
        initial = int(logs.get("initial_epoch", 0) or 0)
        resumed = bool(logs.get("resumed")) or initial > 0
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write_rows([])
            self._started = True
            return
        if not (resumed or self.append or self._started):
            raise FileExistsError(f"CSVLogger: {self.path} exists; pass append=True to add this run's rows to it, "
                                  "or give another path")
        rows = self._read_rows()
        kept = [r for r in rows if _epoch_of(r) < initial] if resumed else rows
        if len(kept) != len(rows):
            self._write_rows(kept)
        self._started = True

    def _read_rows(self) -> list[list[str]]:
        with open(self.path, newline="") as fh:
            rows = list(csv.reader(fh, delimiter=self.separator))
        if not rows or tuple(rows[0]) != CSV_COLUMNS:
            got = rows[0] if rows else "an empty file"
            raise ValueError(f"CSVLogger: {self.path} does not start with the header {','.join(CSV_COLUMNS)} "
                             f"(got {got}); give another path")
        return rows[1:]

    def _write_rows(self, rows: list[list[str]]) -> None:
        text = io.StringIO()
        w = csv.writer(text, delimiter=self.separator, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        w.writerows(rows)
        data = text.getvalue().encode()
        atomic_write(self.path, lambda fh: fh.write(data))

    def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, Any]) -> None:
        if not self._active:
            return
        row = [str(epoch)] + [repr(float(logs[k])) if k in logs else "NA" for k in CSV_COLUMNS[1:]]
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh, delimiter=self.separator, lineterminator="\n").writerow(row)


def _epoch_of(row: list[str]) -> int:
    try:
        return int(row[0])
    except (IndexError, ValueError):
        return -1


def _summary_writer() -> Any:
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ModuleNotFoundError("TensorBoard logs need the tensorboardX package: pip install 'deepnet[logs]'",
                                  name="tensorboardX") from None
    return SummaryWriter


class TensorBoardLogger(Callback):
    """TensorBoard event files in ``log_dir`` (open with ``tensorboard --logdir <its parent>``).

    Each epoch: ``loss/train``, ``accuracy/train`` (and ``loss/validation``,
    ``accuracy/validation`` with validation data), ``lr``, ``epoch``, ``epoch_seconds``; with
    ``histograms``, ``weights/<name>`` and ``gradients/<name>`` (the last step's ∂f/∂θ); with a
    :class:`~deepnet.diagnostics.GradientFlow` as ``net.diagnostics``, its per-layer error norms
    ``gradient_flow/error/<layer>`` and per-weight gradient norms ``gradient_flow/grad/<weight>``.
    ``every_n_steps``: also ``loss/batch`` and ``lr/batch`` every N steps (each read waits for the GPU)."""

    def __init__(self, log_dir: str | os.PathLike[str], every_n_steps: int | None = None,
                 histograms: bool = True) -> None:
        if every_n_steps is not None and (not isinstance(every_n_steps, int) or isinstance(every_n_steps, bool)
                                          or every_n_steps < 1):
            raise ValueError(f"TensorBoardLogger: every_n_steps must be a positive integer or None, "
                             f"got {every_n_steps!r}")
        self._writer_class = _summary_writer()       # a missing package is said now, not after training
        self.log_dir, self.every_n_steps, self.histograms = Path(log_dir), every_n_steps, bool(histograms)
        self.writer: Any = None

    def wants_batch_hooks(self) -> bool:
        return self.every_n_steps is not None

    def on_train_begin(self, net: Any, logs: dict[str, Any]) -> None:
        if int(logs.get("rank", 0)) != 0:
            return
        step = int(net.step_count)
        resumed = step > 0 or int(logs.get("initial_epoch", 0) or 0) > 0
        # a resumed run: values logged after its checkpoint (at later steps) are discarded by readers
        # a name of its own (the writer's names have whole seconds: a run resumed within the second
        # would overwrite the file), in the order written, as readers take the files
        self.writer = self._writer_class(str(self.log_dir), purge_step=step + 1 if resumed else None,
                                         filename_suffix=f".{time.time_ns()}.{os.getpid()}")

    def on_batch_end(self, net: Any, step: int, logs: dict[str, Any]) -> None:
        if self.writer is None or step % self.every_n_steps:       # type: ignore[operator]
            return
        self.writer.add_scalar("loss/batch", float(to_host(logs["loss"])), step)
        self.writer.add_scalar("lr/batch", float(net.optimizer.lr), step)

    def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, Any]) -> None:
        w = self.writer
        if w is None:
            return
        step = int(net.step_count)
        for key, tag in (("loss", "loss/train"), ("accuracy", "accuracy/train"), ("val_loss", "loss/validation"),
                         ("val_accuracy", "accuracy/validation"), ("lr", "lr"), ("time", "epoch_seconds")):
            if key in logs:
                w.add_scalar(tag, float(logs[key]), step)
        w.add_scalar("epoch", epoch + 1, step)
        if self.histograms:
            for name, p in net.parameters().items():
                w.add_histogram(f"weights/{name}", to_host(p.data).reshape(-1), step)
                if step > 0:        # the buffer keeps the last step's ∂f/∂θ (zeroed lazily, at the next backward)
                    w.add_histogram(f"gradients/{name}", to_host(p.grad_buffer).reshape(-1), step)
        self._gradient_flow(net, step)
        w.flush()

    def _gradient_flow(self, net: Any, step: int) -> None:
        """The last epoch of ``net.diagnostics`` (a GradientFlow), if any."""
        rec = None if net.diagnostics is None else net.diagnostics.records()
        if not rec or not rec.get("error_norm"):
            return
        for name, value in zip(rec["layer_names"], rec["error_norm"][-1]):
            self.writer.add_scalar(f"gradient_flow/error/{name}", value, step)
        for name, value in zip(rec["weight_names"], rec["grad_norm"][-1]):
            self.writer.add_scalar(f"gradient_flow/grad/{name}", value, step)

    def on_train_end(self, net: Any, logs: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def log_callbacks(log_dir: str | os.PathLike[str], every_n_steps: int | None = None,
                  histograms: bool = True) -> list[Callback]:
    """Both logs of one run in ``log_dir``: ``log.csv`` (appended to) and TensorBoard's event files."""
    folder = Path(log_dir)
    return [CSVLogger(folder / "log.csv", append=True),
            TensorBoardLogger(folder, every_n_steps=every_n_steps, histograms=histograms)]
