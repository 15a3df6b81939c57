"""Training checkpoints: stop, resume, and continue exactly as if never stopped.

A checkpoint holds the model (architecture and weights), the optimizer's state, the
epoch and batch position, the step count, the random generators' states and the
history so far.  ``fit(..., checkpoint=dir, resume=True)`` restores the latest one and
continues; on NumPy the final weights are bit-for-bit those of an uninterrupted run.

Files are written atomically (see :func:`deepnet.model_files.atomic_write`), the last ``keep``
are kept plus ``best.npz`` (best monitored metric at the end of an epoch), and every
file is verified (format, version, tensor checksum, shapes) before it is used.

Every checkpoint also records the settings that shape the run (batch size, shuffling,
loss, the optimizer as configured, a fingerprint of the training data, and whatever the
caller adds, e.g. the command line's data set and seed).  Resuming compares them with the
settings given now and refuses, naming each difference, rather than silently continuing a
different run.  The one deliberate override is the number of epochs (not below those done).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .classnames import ClassLookupError, qualified_name, same_setting_name
from .errors import ModelFileError, ResumeError
from .model_files import (apply_tensors, architecture, check_layer_configs, input_shape_entry, layer_state, read_tensors,
                          same_architecture, write_tensors)
from .losses import Loss
from .optimizers import Optimizer, resolve_optimizer
from .training.history import History

FORMAT = "deepnet-checkpoint"
VERSION = 1
_NAME = re.compile(r"^ckpt-e(\d+)-s(\d+)\.npz$")


def settings_differences(saved: dict[str, Any], given: dict[str, Any], epochs_done: int = 0) -> list[str]:
    """One ``"name: checkpoint X, given Y"`` entry per setting that differs.

    ``epochs`` may change (a deliberate override) but not fall below ``epochs_done``."""
    given = json.loads(json.dumps(given))   # compare as recorded (tuples become lists)
    out = []
    for key in sorted(set(saved) | set(given)):
        a, b = saved.get(key, "not set"), given.get(key, "not set")
        if key == "epochs":          # may change on purpose (the new number is recorded)
            if isinstance(b, int) and b < epochs_done:
                out.append(f"epochs: the checkpoint has finished {epochs_done}, given {b}")
            continue
        named = {"loss": Loss.registry, "optimizer": Optimizer.registry}.get(key)
        if a == b or (named is not None and isinstance(a, str) and isinstance(b, str)
                      and same_setting_name(a, b, named)):
            continue
        out.append(f"{key}: checkpoint {a!r}, given {b!r}")
    return out


def resume_refusal(path: str | os.PathLike[str], diffs: list[str]) -> str:
    """The one-line refusal naming each setting that differs."""
    return (f"cannot resume from {path}: the run was started with other settings: " + "; ".join(diffs)
            + " (resume with the checkpoint's settings, or start a new run in another folder)")


class Checkpointer:
    """Save training state into ``directory`` every ``every_steps`` steps (0: only at
    the end of each epoch) and at every epoch end; keep the last ``keep`` files and the
    best one by ``monitor`` (``"val_loss"`` falls back to ``"loss"`` without validation).
    When SIGINT or SIGTERM stops the run, it saves where the run stopped; ``interrupt_only``:
    only then."""

    def __init__(self, directory: str | os.PathLike[str], every_steps: int | None = 0, keep: int = 3,
                 monitor: str = "val_loss", mode: str = "auto", settings: dict[str, Any] | None = None,
                 notes: dict[str, Any] | None = None, interrupt_only: bool = False) -> None:
        every_steps = every_steps or 0
        if not isinstance(every_steps, int) or every_steps < 0:
            raise ValueError(f"Checkpointer: every_steps must be a non-negative integer, got {every_steps!r}")
        for what, value in (("settings", settings), ("notes", notes)):
            try:
                json.dumps(value or {})
            except (TypeError, ValueError) as err:
                raise ValueError(f"Checkpointer: {what} must be plain data (JSON), got {value!r}: {err}") from None
        self.directory = Path(directory)
        self.every_steps = every_steps
        #: the caller's settings that shape the run (plain data), recorded and compared on resume
        self.settings: dict[str, Any] = dict(settings or {})
        #: the caller's facts about the run, recorded but never compared (e.g. where the data was)
        self.notes: dict[str, Any] = dict(notes or {})
        self._run_settings: dict[str, Any] = dict(self.settings)
        self.keep = max(1, int(keep))
        self.monitor = monitor
        self.mode = ("max" if "acc" in monitor else "min") if mode == "auto" else mode
        self.best: float | None = None
        #: a data-parallel run's communicator (set by the trainer): rank 0 writes, and every
        #: rank's dropout generator state is recorded and restored to that rank
        self.communicator: Any = None
        #: write only when SIGINT or SIGTERM stops the run (the command line's checkpointer when
        #: no checkpoints were asked for: the work is never lost, and no file is written otherwise)
        self.interrupt_only = bool(interrupt_only)
        #: the latest checkpoint this checkpointer wrote (not best.npz), or None
        self.last_saved: Path | None = None
        if not self.interrupt_only:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._stale_removed = False

    def _remove_stale(self) -> None:
        """Temporary files a crash left during a write (removed by the writer, before its first
        write: in a data-parallel run another rank may be writing when this one starts)."""
        if not self._stale_removed:
            for stale in self.directory.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
            self._stale_removed = True

    # ------------------------------------------------------------------ files
    def paths(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m[2]), int(m[1]), p) for p in self.directory.iterdir() if (m := _NAME.match(p.name))]
        return [p for _, _, p in sorted(found)]

    def last_path(self) -> Path | None:
        paths = self.paths()
        return paths[-1] if paths else None

    def record_settings(self, net: Any, fit_settings: dict[str, Any]) -> None:
        """Start of a run: check that every layer's ``get_config`` rebuilds it (else a checkpoint
        could be written but never loaded) and keep the run's settings (``fit``'s plus the
        caller's) for every checkpoint."""
        check_layer_configs(net, self.directory, "checkpoint")
        self._run_settings = {**fit_settings, **self.settings}

    def read_state(self, path: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
        """What the latest (or given) checkpoint records, without loading it: ``path``,
        ``settings`` (None if written before settings were recorded), ``notes``, ``epochs_done``,
        ``next_batch`` and ``finished`` (why the run ended for good, e.g. early stopping, or None).
        None without a checkpoint."""
        path = Path(path) if path is not None else self.last_path()
        if path is None:
            return None
        _, header = read_tensors(path, expect_format=FORMAT)
        return {"path": path, "settings": header.get("settings"), "notes": header.get("notes") or {},
                "epochs_done": int(header["epoch"]), "next_batch": int(header["next_batch"]),
                "finished": header.get("finished")}

    def check_new_run(self) -> None:
        """Refuse to start a new run among another run's checkpoints (they would mix, and
        a later resume would continue the wrong one)."""
        last = self.last_path()
        if last is not None:
            raise ResumeError(f"{self.directory} holds checkpoints of an earlier run (last: {last.name}): resume it "
                              "(resume=True, --resume) or use another folder")
        self.best = None

    def due(self, step: int) -> bool:
        return self.every_steps > 0 and step % self.every_steps == 0

    def _write(self, net: Any, epoch: int, next_batch: int, rng_state: dict, history: Any,
               partial: dict | None, name: str | None = None) -> Path:
        path = self.directory / (name or f"ckpt-e{epoch:04d}-s{net.step_count:08d}.npz")
        if name is None:
            self.last_saved = path
        comm = self.communicator
        if comm is None or comm.size == 1:
            return self._write_file(path, net, epoch, next_batch, rng_state, history, partial, name)
        # a data-parallel run: every rank's dropout and layer state goes to rank 0, which writes;
        # every rank returns when the file is written (or fails with rank 0's error)
        ranks = comm.allgather_object({"device_rng": net.device_rng_state(), "state": layer_state(net)})
        error = None
        if comm.rank == 0:
            try:
                self._write_file(path, net, epoch, next_batch, rng_state, history, partial, name, ranks)
            except Exception as err:     # noqa: BLE001  (told to every rank, raised on every rank)
                error = f"{type(err).__name__}: {err}"
        error = comm.broadcast_object(error)
        if error is not None:
            raise ModelFileError(path, f"rank 0 could not write the checkpoint: {error}")
        return path

    def _write_file(self, path: Path, net: Any, epoch: int, next_batch: int, rng_state: dict, history: Any,
                    partial: dict | None, name: str | None, ranks: list[dict] | None = None) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_stale()
        tensors: dict[str, np.ndarray] = {f"model/{k}": v for k, v in net.get_weights().items()}
        tensors.update({f"state/{k}": v for k, v in layer_state(net).items()})
        opt = net.optimizer.state_dict() if net.optimizer is not None else None
        if opt is not None:
            for pname, slots in opt.pop("slots").items():
                for k, v in slots.items():
                    tensors[f"opt/{pname}/{k}"] = v
        header = {
            "format": FORMAT, "version": VERSION, "layers": architecture(net), "dtype": net.dtype_name,
            "loss": None if net.loss is None else {"type": type(net.loss).__name__, "class": qualified_name(type(net.loss)),
                                                   "config": net.loss.get_config()},
            "optimizer": opt, "epoch": epoch, "next_batch": next_batch, "step_count": net.step_count,
            "host_rng": rng_state, **input_shape_entry(net),
            "device_rng": net.device_rng_state(),
            **({} if ranks is None else {"device_rngs": [r["device_rng"] for r in ranks]}),
            "history": {"epochs": history.epochs, "history": history.history},
            "partial": partial, "best": self.best, "settings": self._run_settings, "notes": self.notes,
            "finished": net.stop_reason if next_batch == 0 else None,
        }
        for r, got in list(enumerate(ranks or []))[1:]:      # the other ranks' own layer state (local BatchNorm)
            tensors.update({f"ranks/{r}/state/{k}": v for k, v in got["state"].items()})
        write_tensors(path, tensors, header)
        if name is None:
            for old in self.paths()[:-self.keep]:
                old.unlink(missing_ok=True)
        return path

    def save_training(self, net: Any, epoch: int, next_batch: int, epoch_rng_state: dict, history: Any,
                      partial: dict) -> Path:
        """Mid-epoch: resume redraws this epoch's shuffle from ``epoch_rng_state``."""
        return self._write(net, epoch, next_batch, epoch_rng_state, history, partial)

    def save_epoch(self, net: Any, epoch: int, history: Any, logs: dict[str, float]) -> Path:
        """End of epoch ``epoch``: the next run starts at epoch + 1; also updates best.npz."""
        path = self._write(net, epoch + 1, 0, net.rng.bit_generator.state, history, None)
        key = self.monitor if self.monitor in logs else "loss"
        value = logs.get(key)
        if value is not None and np.isfinite(value):
            better = self.best is None or (value < self.best if self.mode == "min" or key == "loss" else value > self.best)
            if better:
                self.best = float(value)
                self._write(net, epoch + 1, 0, net.rng.bit_generator.state, history, None, name="best.npz")
        return path

    # ------------------------------------------------------------------ restore
    def restore(self, net: Any, path: str | os.PathLike[str] | None = None,
                settings: dict[str, Any] | None = None) -> tuple[int, int, dict | None, Any, str | None] | None:
        """Load the latest (or the given) checkpoint into ``net`` and its optimizer.

        With ``settings`` (``fit``'s own; the caller's come from :attr:`settings`), refuse with
        :class:`ResumeError` naming every setting that differs from the recorded ones.
        Returns ``(epoch, next_batch, partial totals, history, finished)`` or None if there is
        none; ``finished`` says why a run ended for good (e.g. early stopping), else None.
        """
        path = Path(path) if path is not None else self.last_path()
        if path is None:
            return None
        tensors, header = read_tensors(path, expect_format=FORMAT)
        if header.get("version", 0) > VERSION:
            raise ModelFileError(path, f"checkpoint version {header['version']} is newer than supported ({VERSION})")
        if not same_architecture(header.get("layers"), net, path):
            raise ModelFileError(path, "the checkpoint's architecture differs from this network's: "
                                       f"{[layer['type'] for layer in header.get('layers', [])]}")
        if settings is not None:
            saved = header.get("settings")
            if saved is None:
                warnings.warn(f"{path}: written by an older deepnet without a record of its settings; "
                              "resuming without checking them", stacklevel=3)
            else:
                done = int(header["epoch"])
                diffs = settings_differences(saved, {**settings, **self.settings}, done)
                if diffs:
                    raise ResumeError(resume_refusal(path, diffs))
        apply_tensors(net, {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")},
                      {k[len("state/"):]: v for k, v in tensors.items() if k.startswith("state/")}, path)
        opt = header.get("optimizer")
        if opt is not None:
            slots: dict[str, dict[str, np.ndarray]] = {}
            for k, v in tensors.items():
                if k.startswith("opt/"):
                    pname, slot = k[4:].rsplit("/", 1)
                    slots.setdefault(pname, {})[slot] = v
            try:
                cls = resolve_optimizer(opt)
            except ClassLookupError as err:
                raise ModelFileError(path, f"optimizer: {err}") from None
            if type(net.optimizer) is not cls:
                net.optimizer = cls.from_config(opt["config"])
            net.optimizer.load_state_dict({**opt, "slots": slots}, net.ops)
        net.step_count = int(header.get("step_count", 0))
        net.rng.bit_generator.state = header["host_rng"]
        device_rng = header.get("device_rng")
        comm, per_rank = self.communicator, header.get("device_rngs")
        if comm is not None and per_rank and len(per_rank) == comm.size:
            device_rng = per_rank[comm.rank]          # each rank's own dropout stream
            own = f"ranks/{comm.rank}/state/"
            mine = {k[len(own):]: v for k, v in tensors.items() if k.startswith(own)}
            for i, layer in enumerate(net.layers):    # and its own BatchNorm running statistics
                if mine:
                    layer.load_state_arrays({k.split(".", 1)[1]: v for k, v in mine.items() if k.startswith(f"{i}.")})
        if device_rng is not None:
            net.set_device_rng_state(device_rng)
        self.best = header.get("best")
        history = History()
        hist = header.get("history") or {}
        history.epochs = list(hist.get("epochs", []))
        history.history = {k: list(v) for k, v in (hist.get("history") or {}).items()}
        return int(header["epoch"]), int(header["next_batch"]), header.get("partial"), history, header.get("finished")

