"""The training loop around a model: data, resume, epochs of steps, callbacks.

:class:`Trainer` runs what :meth:`deepnet.Network.fit` asks for.  An epoch draws its
shuffle from the run's host generator, trains :func:`~deepnet.training.step.train_step`
on each batch of :class:`~deepnet.training.batches.EpochBatches`, accumulates its metrics
on the device, reads them once, evaluates the validation data and calls the callbacks:
the checkpoint savers, the NaN guard, the history and the printer are callbacks too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any

from ..backend import Array, to_device, to_host
from ..backend.host import as_host_rows
from ..backend.precision import check_precision
from ..callbacks import Callback
from ..errors import ResumeError, TrainingInterrupted
from .batches import EpochBatches, ShardedBatches
from .callback_list import CallbackList
from .captured import StaticStep, capture_obstacles, check_graphs_argument, warn_once
from .checkpointing import SaveCheckpoints, SaveStopPoint
from .data import device_inputs, device_targets, host_inputs, input_shape_for
from .data_parallel import AgreeStop, DataParallel, SettingsMismatch, check_resume_ranks
from .evaluation import evaluate_batches
from .guard import NonFiniteGuard
from .history import History
from .interrupt import StopSignals
from .metrics import EpochMetrics
from .position import RunPosition
from .reporting import PrintEpochs, RecordHistory
from .settings import rows_of, run_settings
from .step import train_step

CHECK_FINITE = ("raise", "skip", "off")


def check_fit_arguments(ops: Any, epochs: Any, batch_size: Any, check_finite: Any, resume: Any) -> None:
    """One-line errors for arguments ``fit`` cannot run with."""
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"fit: epochs must be a non-negative integer, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"fit: batch_size must be a positive integer, got {batch_size!r}")
    if check_finite not in CHECK_FINITE:
        raise ValueError(f"fit: check_finite must be 'raise', 'skip' or 'off', got {check_finite!r}")
    if check_finite == "skip" and not ops.cheap_sync:
        raise ValueError(f"fit: check_finite='skip' decides on the host at every step, which backend "
                         f"{ops.name!r} avoids (each read waits for the device); use 'raise' (checked at "
                         "each epoch's end, naming the first bad batch) or 'off'")
    if resume not in (False, True, "if-exists"):
        raise ValueError(f"fit: resume must be False, True or 'if-exists', got {resume!r}")


def check_precision_argument(net: Any, precision: Any) -> None:
    """One-line errors for a products precision this network or backend cannot train in."""
    check_precision(precision)
    if precision == "float32":
        return
    if not hasattr(getattr(net.ops, "products", None), "with_precision"):
        raise ValueError(f"fit: precision={precision!r} needs a backend whose matrix products can change "
                         f"precision (numpy, cupy); {net.ops.name!r} computes them in its own namespace")
    if net.dtype_name != "float32":
        raise ValueError(f"fit: precision={precision!r} keeps float32 master weights; the network is {net.dtype_name}")


class Trainer:
    """One run of ``fit`` on a model (``net``: layers, parameters, forward, backward, loss,
    optimizer, host generator ``rng``); see :meth:`deepnet.Network.fit` for the arguments."""

    def __init__(self, net: Any, *, epochs: int, batch_size: int, shuffle: bool = True,
                 validation_data: tuple[Any, Any] | None = None, callbacks: Iterable[Callback] = (),
                 verbose: bool = False, check_finite: str = "raise", checkpointer: Any = None,
                 resume: bool | str = False, stream_chunk_rows: int | None = None, rows: Any = None,
                 validation_rows: Any = None, graphs: str = "auto", precision: str = "float32",
                 communicator: Any = None, sync_batchnorm: bool = False) -> None:
        check_fit_arguments(net.ops, epochs, batch_size, check_finite, resume)
        check_graphs_argument(graphs)
        check_precision_argument(net, precision)
        if net.loss is None or net.optimizer is None:
            raise ValueError("fit: give a loss and an optimizer (here or to Network(...))")
        if resume and checkpointer is None:
            raise ValueError("fit: resume needs checkpoint=<directory or Checkpointer>")
        self.net, self.epochs, self.batch_size, self.shuffle = net, epochs, batch_size, shuffle
        self.validation_data, self.user_callbacks, self.verbose = validation_data, list(callbacks), verbose
        self.check_finite, self.checkpointer, self.resume = check_finite, checkpointer, resume
        self.stream_chunk_rows = stream_chunk_rows
        #: "auto" (a CUDA graph where the backend has them and the run allows), "on" (the
        #: captured step, required), "epoch" (also whole epochs as one graph), "off"
        self.graphs = graphs
        self.static: StaticStep | None = None
        #: whether the run continued from a checkpoint
        self.resumed = False
        #: the matrix products' precision during the run ("float32", "tf32", "bf16")
        self.precision = precision
        #: train on these rows of X, and validate on these rows of the validation X (host
        #: indices): a validation split by indices, no copy of the data (None: all rows)
        self.rows, self.validation_rows = rows, validation_rows
        if validation_rows is not None and validation_data is None:
            raise ValueError("fit: validation_rows needs validation_data=(X, y) to take them from")
        if sync_batchnorm not in (True, False):
            raise ValueError(f"fit: sync_batchnorm must be True or False, got {sync_batchnorm!r}")
        if sync_batchnorm and communicator is None:
            raise ValueError("fit: sync_batchnorm=True synchronizes BatchNorm across the processes of a "
                             "data-parallel run; give communicator= (deepnet.distributed)")
        #: the data-parallel side of the run (None: one process, no communicator given)
        self.parallel = None if communicator is None else DataParallel(communicator, sync_batchnorm)
        #: SIGINT and SIGTERM during the run: stop after the step, checkpoint, raise TrainingInterrupted
        self.signals = StopSignals()
        if self.parallel is not None and check_finite == "skip":
            raise ValueError("fit: check_finite='skip' decides per process whether to skip a step, and the ranks "
                             "of a data-parallel run must all step; use 'raise' (the ranks' summed totals are "
                             "checked at each epoch's end) or 'off'")
        net.loss.bind(net.ops)          # a Network has bound both; a model of another kind may not
        net.optimizer.bind(net.ops)

    # ------------------------------------------------------------------ data
    def _data(self, X: Any, y: Any) -> tuple[Any, Array, Array]:
        """(X, targets, labels) on the backend, or X on the host when it is streamed; with
        ``self.rows``, X whole and the targets and labels of those rows."""
        net, ops, chunk = self.net, self.net.ops, self.stream_chunk_rows
        if chunk is None and not ops.owns(X):
            chunk = self.stream_chunk_rows = ops.memory.stream_rows_for(X, self.batch_size)
        if chunk:
            if chunk < self.batch_size or chunk % self.batch_size:
                raise ValueError(f"fit: stream_chunk_rows must be a multiple of batch_size ({self.batch_size}), "
                                 f"got {chunk}")
            Xd = host_inputs(X, input_shape_for(net, X, "fit"), net.dtype_name, "fit")
        else:
            Xd = device_inputs(ops, X, input_shape_for(net, X, "fit"), net.dtype_name, "fit")
        if self.rows is not None:
            self.rows = as_host_rows(self.rows, int(Xd.shape[0]), "fit")
            y = to_host(y)[self.rows]
        n = int(Xd.shape[0]) if self.rows is None else len(self.rows)
        T, labels = device_targets(ops, y, n, net.output_width, net.dtype_name, net.loss, "fit")
        if chunk and T.ndim == 2:
            T = to_host(T)
        return Xd, T, labels

    def _validation(self, X: Any, Xd: Any) -> tuple[Array, Array, Array, Array] | None:
        """(X, targets, labels, rows or None) of the validation data on the backend.  With
        ``validation_rows`` from the training X already on the device, that X is used with the
        rows; otherwise only the validation rows go to the device (streamed X stays on the host)."""
        if self.validation_data is None:
            return None
        net, ops = self.net, self.net.ops
        Xv, yv = self.validation_data
        where = "fit(validation_data)"
        rows = self.validation_rows
        if rows is not None:
            rows = as_host_rows(rows, int(Xv.shape[0]), where)
            yv = to_host(yv)[rows]
            if Xv is X and ops.owns(Xd):
                Xv = Xd
            else:
                Xv, rows = rows_of(ops, Xd if Xv is X else Xv, rows), None
        if rows is None:
            Xv = device_inputs(ops, Xv, input_shape_for(net, Xv, where), net.dtype_name, where)
        n = int(Xv.shape[0]) if rows is None else len(rows)
        Tv, Lv = device_targets(ops, yv, n, net.output_width, net.dtype_name, net.loss, where)
        return Xv, Tv, Lv, None if rows is None else to_device(rows, ops, dtype="int64")

    # ------------------------------------------------------------------ resume
    def _settings(self, X: Any, T: Array, labels: Array) -> dict[str, Any]:
        """The settings that shape the run, as checkpoints record them."""
        settings = run_settings(self.net, X, T, labels, self.epochs, self.batch_size, self.shuffle, self.rows)
        if self.precision != "float32":      # recorded only when not the default: older checkpoints still resume
            settings["precision"] = self.precision
        par = self.parallel
        if par is not None and par.size > 1:        # likewise
            settings["ranks"] = par.size
            if par.sync_batchnorm:
                settings["sync_batchnorm"] = True
        return settings

    def _agree(self, settings: dict[str, Any]) -> None:
        """Every rank of a data-parallel run checks that all were given the same run."""
        par, net = self.parallel, self.net
        assert par is not None
        ckpt = self.checkpointer
        par.agree({**settings, "graphs": self.graphs, "check_finite": self.check_finite, "backend": net.ops.name,
                   "model": par.fingerprint(net), "validation": None if self.validation_data is None else
                   [list(self.validation_data[0].shape), None if self.validation_rows is None else
                    len(self.validation_rows)], "checkpoint": None if ckpt is None else str(ckpt.directory),
                   "resume": self.resume, "stream_chunk_rows": self.stream_chunk_rows,
                   "resume from": None if not (self.resume and ckpt is not None) else str(ckpt.last_path()),
                   "checkpoints": None if ckpt is None else [ckpt.every_steps, ckpt.monitor, ckpt.mode, ckpt.keep],
                   "reduction": [par.comm.name, getattr(par.comm, "transport", None), par.bucket_bytes,
                                 par.overlap, par.sync_batchnorm]})

    def _restore(self, settings: dict[str, Any], history: History) -> tuple[int, int, Any, History, Any]:
        """(first epoch, first batch, carried totals, history, finished) after checking or
        restoring the checkpointer's run."""
        ckpt = self.checkpointer
        self.resumed = False
        if ckpt is None:
            return 0, 0, None, history, None
        # a data-parallel run: rank 0 writes; every rank's dropout and layer state is kept
        ckpt.communicator = None if self.parallel is None else self.parallel.comm
        if self.resume:
            check_resume_ranks(ckpt, 1 if self.parallel is None else self.parallel.size)
        state = ckpt.restore(self.net, settings=settings) if self.resume else None
        if state is None and self.resume is True:
            raise ResumeError(f"fit: resume=True but {ckpt.directory} holds no checkpoint "
                              "(use resume='if-exists' to start fresh when there is none)")
        if state is None:
            ckpt.check_new_run()
            state = (0, 0, None, history, None)
        else:
            self.resumed = True
        if not state[4]:        # a finished run records nothing new
            ckpt.record_settings(self.net, settings)
        return state

    def _lay_out(self) -> None:
        """Let the backend store the parameters of the lowest layer backward calls (whose input
        error is never computed: ``Network.lowest_trained``) in its fastest layout for this
        batch size, if the layer allows any layout (``Layer.any_layout``); optimizer slots follow."""
        net, ops = self.net, self.net.ops
        first = net.layers[net.lowest_trained] if hasattr(net, "lowest_trained") else net.layers[0]
        for p in first.parameters().values() if first.any_layout else ():
            laid = ops.training_layout(p.data, self.batch_size, input_grad=False)
            if laid is not p.data:
                p.data = laid
        net.optimizer.match_parameters(net.parameters(), ops)

    def _static_step(self, batches: EpochBatches, T: Array, labels: Array, batch_hooks: list[str],
                     guard: NonFiniteGuard, pos: RunPosition) -> StaticStep | None:
        """The captured step of this run, or None for the plain loop: with graphs="auto" when
        the backend has no CUDA graphs or something in the run prevents one (said once);
        "on"/"epoch" raise naming what prevents it."""
        mode, net = self.graphs, self.net
        if mode == "off" or (mode == "auto" and not net.ops.graphs.captures):
            return None
        obstacles = capture_obstacles(net, check_finite=self.check_finite, streamed=bool(self.stream_chunk_rows),
                                      batch_hooks=batch_hooks, mode=mode, distributed=self.parallel is not None)
        if obstacles:
            if mode == "auto":
                warn_once(obstacles[0])
                return None
            raise ValueError(f"fit(graphs={mode!r}): the step cannot be captured: {'; '.join(obstacles)}")
        def accept(f: Array, b: int) -> None:
            pos.batch = b
            guard.accept(f)

        return StaticStep(net, batches.X, T, labels, self.batch_size, batches.rows, mode,
                          accept if guard.each_step else None)

    # ------------------------------------------------------------------ the run
    def fit(self, X: Any, y: Any) -> History:
        """Train on (X, y) and return the history (products in :attr:`precision` meanwhile)."""
        ops = self.net.ops
        try:
            with self.signals:
                if self.precision == "float32" and getattr(ops.products, "precision", "float32") == "float32":
                    return self._fit(X, y)
                with ops.using_products(ops.products.with_precision(self.precision)):   # this thread's run only
                    return self._fit(X, y)
        except BaseException as err:
            par = self.parallel
            if par is None or par.size == 1 or isinstance(err, SettingsMismatch) or _agreed_stop(err):
                raise           # (found by every rank at once: none is left waiting)
            # the other ranks would wait for this one in their next reduction: end the job
            print(f"deepnet: rank {par.rank} of {par.size} stopped the run: {type(err).__name__}: {err}",
                  file=sys.stderr, flush=True)
            par.comm.abort(1)
            raise

    def _fit(self, X: Any, y: Any) -> History:
        par = self.parallel
        if par is None:
            return self._run(X, y)
        try:
            par.start(self.net)
            return self._run(X, y)
        finally:
            par.finish(self.net)

    def _run(self, X: Any, y: Any) -> History:
        net, par = self.net, self.parallel
        Xd, T, labels = self._data(X, y)
        val = self._validation(X, Xd)
        # read from the device only when something compares them (a checkpoint, the other ranks)
        settings = self._settings(Xd, T, labels) if self.checkpointer is not None or par is not None else {}
        if par is not None:
            self._agree(settings)
        start_epoch, start_batch, carried, history, finished = self._restore(settings, History())
        if par is not None:
            par.agree_position({"epoch": start_epoch, "batch": start_batch, "step": net.step_count,
                                "finished": finished})
        if finished:            # the run ended for good (e.g. early stopping): nothing to train
            return history
        self._lay_out()          # after a restore, which replaces the weights
        if par is not None:
            par.share_weights(net, self.resumed)
        net.stop_training, net.stop_reason = False, None
        if par is None:
            batches = EpochBatches(net.ops, Xd, T, self.batch_size, self.stream_chunk_rows, self.rows)
        else:
            batches = ShardedBatches(net.ops, Xd, T, self.batch_size, par.rank, par.size, self.stream_chunk_rows,
                                     self.rows, par.min_shard_rows(net))
        pos = RunPosition(history, batches.n_batches, list(net.parameters().values()))
        pos.carried, pos.last_epoch = carried, self.epochs - 1
        guard = NonFiniteGuard(self.check_finite, net, pos, self.checkpointer)
        if par is not None:
            pos.reduce = par.sum_totals
            guard.each_step = False          # one rank alone must not stop: the summed totals decide, on all
        ckpt = self.checkpointer
        printing = self.verbose and (par is None or par.rank == 0)
        # a data-parallel run: after every other callback saw a batch or an epoch, and before a
        # checkpoint records it, the ranks agree on whether to stop (each step, on every rank)
        agree = [] if par is None else [AgreeStop(par, self.signals, pos)]
        callbacks = CallbackList(([] if ckpt is None else [SaveStopPoint(ckpt, pos)]) + [guard, RecordHistory(history)]
                                 + ([PrintEpochs(self.epochs)] if printing else []) + self.user_callbacks + agree
                                 + ([] if ckpt is None else [SaveCheckpoints(ckpt, pos)]))
        self.static = self._static_step(batches, T, labels, [_describe(cb) for cb in callbacks.batch_callbacks],
                                        guard, pos)
        callbacks.train_begin(net, {"epochs": self.epochs, "steps_per_epoch": batches.n_batches,
                                    "batch_size": self.batch_size, "samples": batches.n_rows,
                                    "initial_epoch": start_epoch, "rank": 0 if par is None else par.rank,
                                    "ranks": 1 if par is None else par.size})
        for epoch in range(start_epoch, self.epochs):
            first = start_batch if epoch == start_epoch else 0
            logs = self._epoch(epoch, first, batches, labels, pos, guard, callbacks, val)
            self._heed_signal(pos)       # one that came during validation: this epoch's end is the stop
            callbacks.epoch_end(net, epoch, logs)
            pos.carried = None
            if net.stop_training:
                break
        callbacks.train_end(net, {"history": history})
        if par is not None:
            par.check_same_weights(net)
        if pos.interrupted is not None:
            raise self._interrupted(pos)
        return history

    def _heed_signal(self, pos: RunPosition) -> bool:
        """After a step (or an epoch's validation): stop the run if SIGINT or SIGTERM came
        and steps remain.  Returns whether the run stops.  A data-parallel run decides in
        :class:`AgreeStop` instead, on every rank at the same step."""
        net, sig = self.net, self.signals.received
        if sig is not None and self.parallel is None and pos.interrupted is None:
            if pos.finished_epoch and pos.epoch == pos.last_epoch:
                return bool(net.stop_training)      # nothing left to stop: the run finishes
            pos.interrupted, net.stop_training = sig, True
            self.signals.heeded = True
        return bool(net.stop_training)

    def _interrupted(self, pos: RunPosition) -> TrainingInterrupted:
        """The error ``fit`` raises after a signal stopped the run (its checkpoint written)."""
        ckpt, sig = self.checkpointer, pos.interrupted or "SIGINT"
        self.signals.heeded = True
        err = TrainingInterrupted("", signal_name=sig, epoch=pos.epoch + 1, batch=pos.done, n_batches=pos.n_batches,
                                  step=self.net.step_count, checkpoint=None if ckpt is None else ckpt.last_saved)
        if err.checkpoint is not None:
            then = f"checkpoint written to {err.checkpoint}; resume with fit(..., checkpoint=..., resume=True)"
        else:
            then = "no checkpoint written (fit was given none: pass checkpoint= to keep the work)"
        err.args = (f"fit: interrupted ({sig}) {interrupted_at(err)}; {then}",)
        return err

    def _epoch(self, epoch: int, first: int, batches: EpochBatches, labels: Array, pos: RunPosition,
               guard: NonFiniteGuard, callbacks: CallbackList, val: tuple[Array, Array, Array, Array] | None
               ) -> dict[str, float]:
        """Train one epoch from batch ``first``; return its logs (read once)."""
        net, ops, loss, opt = self.net, self.net.ops, self.net.loss, self.net.optimizer
        t0 = time.perf_counter()
        pos.epoch, pos.first, pos.done = epoch, first, first
        pos.epoch_rng_state = net.rng.bit_generator.state
        perm = net.rng.permutation(batches.n_rows) if self.shuffle else None      # host indices
        perm, order = batches.epoch_order(perm)      # this process's rows (a data-parallel rank's shard)
        # the epoch's labels in its row order (the captured step counts correct rows itself)
        pos.labels = labels if order is None or self.static is not None else ops.take_rows(labels, order)
        if self.static is not None:
            callbacks.epoch_begin(net, epoch)
            pos.metrics = self.static.begin_epoch(order, first)
            self._static_epoch(first, pos, callbacks)
        else:
            pos.metrics = EpochMetrics(ops, batches.n, self.batch_size, ops.dtype(net.dtype_name), loss.reduction)
            callbacks.epoch_begin(net, epoch)
            self._steps(epoch, first, batches, perm, order, pos, guard, callbacks)
        pos.totals = totals = pos.partial_totals(pos.done, check_weights=True)
        callbacks.epoch_totals(net, epoch, totals)      # stop-point save, then the NaN guard
        net.clear_cache()
        seen = max(totals["seen"], 1)
        logs: dict[str, float] = {"loss": totals["loss_sum"] / seen, "accuracy": totals["correct"] / seen}
        par = self.parallel
        if par is not None:
            par.end_epoch(net)
        if val is not None:
            Xv, Tv, Lv, rows = val
            evaluate = evaluate_batches if par is None else par.evaluate
            v = evaluate(net, loss, Xv, Tv, Lv, max(self.batch_size, 1024), ops.dtype(net.dtype_name), rows)
            logs["val_loss"], logs["val_accuracy"] = v["loss"], v["accuracy"]
        logs["lr"] = opt.lr
        logs["time"] = time.perf_counter() - t0
        if net.diagnostics is not None:
            net.diagnostics.end_epoch(net, epoch)
        return logs

    def _steps(self, epoch: int, first: int, batches: EpochBatches, perm: Any, order: Array, pos: RunPosition,
               guard: NonFiniteGuard, callbacks: CallbackList) -> None:
        """The epoch's batches from ``first``, one :func:`train_step` each (the plain loop)."""
        net, loss, opt, metrics = self.net, self.net.loss, self.net.optimizer, pos.metrics
        accept = guard.accept if guard.each_step else None
        batch_hooks = bool(callbacks.batch_callbacks)
        par = self.parallel
        mean = loss.reduction != "sum"
        for b, s, e, x, t in batches.epoch(perm, order, first):
            pos.batch = b
            if batch_hooks:
                callbacks.batch_begin(net, net.step_count, {"epoch": epoch, "batch": b})
            if par is None:
                result = train_step(net, loss, opt, x, t, accept)
            else:       # this rank's share of the global batch's mean loss
                share = (e - s) / batches.global_rows(b) if mean else 1.0
                result = train_step(net, loss, opt, x, t, share=share, gradients=par.buckets)
            pos.done = b + 1
            if result is None:     # refused by the NaN guard (check_finite="skip")
                if self._heed_signal(pos):
                    break
                continue
            net.step_count += 1
            metrics.record(b, s, e, *result)
            if batch_hooks:         # (a data-parallel run counts the global batch's rows; the loss is this rank's)
                size = e - s if par is None else batches.global_rows(b)
                callbacks.batch_end(net, net.step_count, {"loss": result[0], "batch": b, "size": size})
            if self._heed_signal(pos):
                break

    def _static_epoch(self, first: int, pos: RunPosition, callbacks: CallbackList) -> None:
        """The epoch's batches from ``first`` through the captured step; per-batch callbacks
        run between replays."""
        net, static = self.net, self.static
        assert static is not None
        hooks = _BatchHooks(net, pos, callbacks, self.batch_size, self) if callbacks.batch_callbacks else None

        def stop(done: int) -> bool:        # between steps (or graph runs) without per-batch callbacks
            pos.done = done
            return self._heed_signal(pos)

        pos.done = static.run_full_batches(first, hooks, stop)
        if net.stop_training or pos.done < static.n_full:
            return
        if hooks is not None:
            hooks.begin(static.n_full)
        last = static.run_last_batch()
        if last is not None:
            pos.done = static.n_full + 1
            if hooks is not None:
                hooks.end(static.n_full, last[0])
            else:
                self._heed_signal(pos)


def interrupted_at(err: TrainingInterrupted) -> str:
    """Where a signal stopped the run: "at epoch 2, step 137 of 469" or "at the end of epoch 2"."""
    if err.batch >= err.n_batches:
        return f"at the end of epoch {err.epoch}"
    return f"at epoch {err.epoch}, step {err.batch} of {err.n_batches}"


def _agreed_stop(err: BaseException) -> bool:
    """A stop every rank of a data-parallel run made together (no rank is left waiting)."""
    return isinstance(err, TrainingInterrupted) and not err.aborted


def _describe(cb: Callback) -> str:
    """A per-batch callback as the user knows it."""
    if isinstance(cb, SaveCheckpoints):
        return f"checkpoints every {cb.checkpointer.every_steps} steps"
    return type(cb).__name__


class _BatchHooks:
    """The per-batch callbacks around each step of a captured run (the loss handed to them is a
    copy: the graph overwrites its own at the next replay)."""

    def __init__(self, net: Any, pos: RunPosition, callbacks: CallbackList, batch_size: int, trainer: Trainer) -> None:
        self.net, self.pos, self.callbacks, self.batch_size = net, pos, callbacks, batch_size
        self.trainer = trainer

    def begin(self, b: int) -> None:
        self.pos.batch = b
        self.callbacks.batch_begin(self.net, self.net.step_count, {"epoch": self.pos.epoch, "batch": b})

    def end(self, b: int, f: Array) -> bool:
        pos, net = self.pos, self.net
        pos.done = b + 1
        size = min(self.batch_size, pos.metrics.n - b * self.batch_size)
        self.callbacks.batch_end(net, net.step_count, {"loss": net.ops.copy(f), "batch": b, "size": size})
        return self.trainer._heed_signal(pos)
