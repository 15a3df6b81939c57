"""The training loop around a model: data, resume, epochs of steps, callbacks.

:class:`Trainer` runs what :meth:`deepnet.Network.fit` asks for (its :class:`FitSettings`).
The run's processes (:class:`~.world.OneProcess` or :class:`~.data_parallel.DataParallel`)
and its step strategy (:mod:`.steps`: plain, data-parallel or captured) are chosen once;
one epoch loop runs them.  An epoch draws its shuffle from the run's host generator, runs
the step on each batch of :class:`~deepnet.training.batches.EpochBatches`, accumulates its metrics
on the device, reads them once, evaluates the validation data and calls the callbacks:
the checkpoint savers, the NaN guard, the history and the printer are callbacks too.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from typing import Any, NamedTuple

from ..backend import Array, to_device, to_host
from ..backend.host import as_host_rows
from ..callbacks import Callback
from ..errors import ResumeError, TrainingInterrupted
from .batches import EpochBatches
from .callback_list import CallbackList
from .captured import StaticStep, capture_obstacles, warn_once
from .checkpointing import SaveCheckpoints, SaveStopPoint
from .data import device_inputs, device_targets, host_inputs, input_shape_for
from .data_parallel import DataParallel, check_resume_ranks
from .fit_settings import FitSettings
from .guard import NonFiniteGuard
from .history import History
from .interrupt import StopSignals
from .position import LivePosition, RunPosition
from .reporting import PrintEpochs, RecordHistory
from .settings import rows_of, run_settings
from .compiled import CompiledRun, compile_obstacles, pays_to_compile
from .steps import CapturedStep
from .world import OneProcess


class Trainer:
    """One run of ``fit`` on a model (``net``: layers, parameters, forward, backward, loss,
    optimizer, host generator ``rng``) with ``settings`` (:class:`FitSettings`, or its options
    as keywords); ``settings.checkpoint`` here is a Checkpointer or None (``Network.fit`` also
    takes a folder).  ``loss`` and ``optimizer``, when given, replace the model's."""

    def __init__(self, net: Any, settings: FitSettings | None = None, **options: Any) -> None:
        if "checkpointer" in options:       # its name before FitSettings
            warnings.warn("Trainer(checkpointer=...) is now Trainer(checkpoint=...), as in fit", DeprecationWarning,
                          stacklevel=2)
            options["checkpoint"] = options.pop("checkpointer")
        self.settings = run = FitSettings.of(settings, options)
        run.check_for(net)
        if isinstance(run.checkpoint, (str, os.PathLike)):
            raise TypeError(f"Trainer: checkpoint must be a deepnet.checkpoint.Checkpointer (Network.fit also takes "
                            f"a folder), got {type(run.checkpoint).__name__} {str(run.checkpoint)!r}")
        if run.loss is not None:
            net.loss = run.loss
        if run.optimizer is not None:
            net.optimizer = run.optimizer
        if net.loss is None or net.optimizer is None:
            raise ValueError("fit: give a loss and an optimizer (here or to Network(...))")
        self.net, self.checkpointer = net, run.checkpoint
        #: the streaming chunk (chosen on the first ``fit`` when not given and X is not on the device)
        self.stream_chunk_rows = run.stream_chunk_rows
        #: train on these rows of X (host indices, checked against X by ``fit``; None: all rows)
        self.rows = run.rows
        #: whether the run continued from a checkpoint
        self.resumed = False
        #: the processes the run trains in (one, or the ranks of ``communicator``)
        self.world: Any = OneProcess() if run.communicator is None else DataParallel(run.communicator,
                                                                                     run.sync_batchnorm)
        #: SIGINT and SIGTERM during the run: stop after the step, checkpoint, raise TrainingInterrupted
        self.signals = StopSignals(redeliver=run.late_signal_raises)
        #: where the run is (replaced, never changed, as the run moves on)
        self.position: RunPosition | None = None
        #: the run's step strategy (:mod:`.steps`), chosen when the run starts
        self.strategy: Any = None
        net.loss.bind(net.ops)          # a Network has bound both; a model of another kind may not
        net.optimizer.bind(net.ops)

    # ------------------------------------------------------------------ data
    def _data(self, X: Any, y: Any) -> tuple[Any, Array, Array]:
        """(X, targets, labels) on the backend, or X on the host when it is streamed; with
        ``self.rows``, X whole and the targets and labels of those rows."""
        net, ops, chunk, batch_size = self.net, self.net.ops, self.stream_chunk_rows, self.settings.batch_size
        if chunk is None and not ops.owns(X):
            chunk = self.stream_chunk_rows = ops.memory.stream_rows_for(X, batch_size)
        if chunk:
            if chunk < batch_size or chunk % batch_size:
                raise ValueError(f"fit: stream_chunk_rows must be a multiple of batch_size ({batch_size}), "
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
        if self.settings.validation_data is None:
            return None
        net, ops = self.net, self.net.ops
        Xv, yv = self.settings.validation_data
        where = "fit(validation_data)"
        rows = self.settings.validation_rows
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
        run = self.settings
        settings = run_settings(self.net, X, T, labels, run.epochs, run.batch_size, run.shuffle, self.rows)
        if run.precision != "float32":      # recorded only when not the default: older checkpoints still resume
            settings["precision"] = run.precision
        return self.world.record(settings)

    def _restore(self, settings: dict[str, Any], history: History) -> tuple[int, int, Any, History, Any]:
        """(first epoch, first batch, carried totals, history, finished) after checking or
        restoring the checkpointer's run."""
        ckpt, resume = self.checkpointer, self.settings.resume
        self.resumed = False
        if ckpt is None:
            return 0, 0, None, history, None
        ckpt.communicator = self.world.comm     # a data-parallel run: rank 0 writes; every rank's state is kept
        if resume:
            check_resume_ranks(ckpt, self.world.size)
        state = ckpt.restore(self.net, settings=settings) if resume else None
        if state is None and resume is True:
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
        first = net.layers[net.lowest_trained]
        for p in first.parameters().values() if first.any_layout else ():
            laid = ops.training_layout(p.data, self.settings.batch_size, input_grad=False)
            if laid is not p.data:
                p.data = laid
        net.optimizer.match_parameters(net.parameters(), ops)

    # ------------------------------------------------------------------ the step, chosen once
    def _choose_step(self, batches: EpochBatches, T: Array, labels: Array, callbacks: CallbackList,
                     guard: NonFiniteGuard) -> Any:
        """The run's step strategy: the captured step where the run asks for graphs and allows
        one, else the plain step of the run's processes (said once with graphs="auto" when
        something prevents a graph; "on"/"epoch" raise naming it)."""
        mode, net, run = self.settings.graphs, self.net, self.settings
        accept = guard.accept if guard.each_step else None
        if mode == "off":
            return self.world.step(net, batches, accept)

        def accept_at(f: Array, b: int) -> bool:
            self._move(batch=b)
            return guard.accept(f)

        if net.ops.step_compiler() is not None:
            compiled = self._compiled_step(batches, T, labels, callbacks, accept_at if accept is not None else None)
            if compiled is not None or mode == "auto":
                return compiled or self.world.step(net, batches, accept)
        if mode == "auto" and not net.ops.graphs.captures:
            return self.world.step(net, batches, accept)
        obstacles = capture_obstacles(net, check_finite=run.check_finite, streamed=bool(self.stream_chunk_rows),
                                      batch_hooks=[_describe(cb) for cb in callbacks.batch_callbacks], mode=mode,
                                      distributed=self.world.reduces_gradients)
        if obstacles and mode == "auto":
            warn_once(obstacles[0])
            return self.world.step(net, batches, accept)
        if obstacles:
            raise ValueError(f"fit(graphs={mode!r}): the step cannot be captured: {'; '.join(obstacles)}")
        return CapturedStep(StaticStep(net, batches.X, T, labels, run.batch_size, batches.rows, mode,
                                       accept_at if accept is not None else None))

    def _compiled_step(self, batches: EpochBatches, T: Array, labels: Array, callbacks: CallbackList,
                       accept_at: Any) -> CapturedStep | None:
        """The compiled CPU step where nothing prevents it, else None, the reason said once:
        graphs="auto" then trains in the plain loop, "on"/"epoch" run the captured step's Python
        (:class:`StaticStep`, as on every backend without CUDA graphs).  "auto" keeps the plain
        loop, silently, for steps whose matrix products are the step (``pays_to_compile``)."""
        mode, net, run = self.settings.graphs, self.net, self.settings
        if mode == "auto" and not pays_to_compile(net, run.batch_size):
            return None
        obstacles = compile_obstacles(net, labels_as_targets=T.ndim == 1, check_finite=run.check_finite,
                                      streamed=bool(self.stream_chunk_rows),
                                      batch_hooks=[_describe(cb) for cb in callbacks.batch_callbacks], mode=mode,
                                      distributed=self.world.reduces_gradients, precision=run.precision)
        if obstacles:
            warn_once(obstacles[0], what="a compiled step")
            return None
        return CapturedStep(CompiledRun(net, batches.X, T, labels, run.batch_size, batches.rows, mode, accept_at))

    # ------------------------------------------------------------------ the run
    def fit(self, X: Any, y: Any) -> History:
        """Train on (X, y) and return the history: the epoch loop (products in the settings'
        precision meanwhile)."""
        with self._ending_the_job_on_error(), self.signals, self._processes(), self._precision():
            history = self._loop(X, y)
        history.late_signal = self.signals.late         # read when every context has closed
        return history

    def _loop(self, X: Any, y: Any) -> History:
        net, epochs = self.net, self.settings.epochs
        run = self._start(X, y)
        if run.finished:            # the run ended for good (e.g. early stopping): nothing to train
            return run.history
        for epoch in range(run.first_epoch, epochs):
            logs = self._epoch(epoch, run.first_batch if epoch == run.first_epoch else 0, run)
            self._heed_signal()       # one that came during validation: this epoch's end is the stop
            run.callbacks.epoch_end(net, epoch, logs)
            self._move(carried=None)
            if net.stop_training:
                break
        return self._end(run)

    @contextmanager
    def _ending_the_job_on_error(self) -> Iterator[None]:
        """An error on one rank of a data-parallel run that the others would wait for ends the job."""
        try:
            yield
        except BaseException as err:
            world = self.world
            if world.left_alone(err):
                print(f"deepnet: rank {world.rank} of {world.size} stopped the run: {type(err).__name__}: {err}",
                      file=sys.stderr, flush=True)
                world.comm.abort(1)
            raise

    @contextmanager
    def _processes(self) -> Iterator[None]:
        """The run's processes started (rank 0's generator, synced BatchNorm, ...) and finished."""
        self.world.start(self.net)
        try:
            yield
        finally:
            self.world.finish(self.net)

    def _precision(self) -> AbstractContextManager[Any]:
        """The matrix products in the settings' precision, in this thread, for the run."""
        ops, precision = self.net.ops, self.settings.precision
        if precision == "float32" and getattr(ops.products, "precision", "float32") == "float32":
            return nullcontext()
        return ops.using_products(ops.products.with_precision(precision))

    def _start(self, X: Any, y: Any) -> _Run:
        """The data on the backend, the run restored or checked, the ranks agreed, the callbacks
        and the step strategy chosen, ``on_train_begin`` called."""
        net, world, run = self.net, self.world, self.settings
        Xd, T, labels = self._data(X, y)
        val = self._validation(X, Xd)
        # read from the device only when something compares them (a checkpoint, the other ranks)
        settings = self._settings(Xd, T, labels) if self.checkpointer is not None or world.compares_settings else {}
        world.agree_run(settings, self)
        first_epoch, first_batch, carried, history, finished = self._restore(settings, History())
        world.agree_position({"epoch": first_epoch, "batch": first_batch, "step": net.step_count,
                              "finished": finished})
        if finished:
            return _Run(history, first_epoch, first_batch, None, labels, val, None, None, None, True)
        self._lay_out()          # after a restore, which replaces the weights
        world.share_weights(net, self.resumed)
        net.stop_training, net.stop_reason = False, None
        batches = world.batches(net, Xd, T, run.batch_size, self.stream_chunk_rows, self.rows)
        self.position = RunPosition(history, batches.n_batches, list(net.parameters().values()),
                                    last_epoch=run.epochs - 1, carried=carried, reduce=world.sum_totals)
        callbacks, guard = self._callbacks(history)
        self.strategy = self._choose_step(batches, T, labels, callbacks, guard)
        callbacks.train_begin(net, {"epochs": run.epochs, "steps_per_epoch": batches.n_batches,
                                    "batch_size": run.batch_size, "samples": batches.n_rows,
                                    "initial_epoch": first_epoch, "resumed": self.resumed,
                                    "rank": world.rank, "ranks": world.size})
        return _Run(history, first_epoch, first_batch, batches, labels, val, self.strategy,
                    _Events(self, callbacks), callbacks, False)

    def _end(self, run: _Run) -> History:
        """``on_train_end``; the ranks hold the same weights; a signal that stopped the run raises."""
        run.callbacks.train_end(self.net, {"history": run.history})
        self.world.check_same_weights(self.net)
        assert self.position is not None
        if self.position.interrupted is not None:
            raise self._interrupted()
        return run.history

    def _callbacks(self, history: History) -> tuple[CallbackList, NonFiniteGuard]:
        """The run's callbacks in order (the stop-point saver, the NaN guard, the history, the
        printer, the user's, the ranks' agreement to stop, the checkpoint saver) and its guard."""
        run, ckpt, world, where = self.settings, self.checkpointer, self.world, LivePosition(lambda: self.position)
        guard = NonFiniteGuard(run.check_finite, self.net, where, ckpt)
        guard.each_step = guard.each_step and world.checks_each_step
        printing = run.verbose and world.rank == 0
        callbacks = CallbackList(([] if ckpt is None else [SaveStopPoint(ckpt, where)]) + [guard, RecordHistory(history)]
                                 + ([PrintEpochs(run.epochs)] if printing else []) + list(run.callbacks)
                                 + world.stop_callbacks(self.signals, self._stop_for)
                                 + ([] if ckpt is None else [SaveCheckpoints(ckpt, where)]))
        return callbacks, guard

    def _move(self, **where: Any) -> RunPosition:
        """The run moves on: its position is replaced by one with ``where`` changed."""
        assert self.position is not None
        self.position = replace(self.position, **where)
        return self.position

    def _stop_for(self, sig: str | None) -> None:
        """A signal (agreed by the ranks, or this process's own) stops the run after this step,
        unless it came after the run's last step."""
        pos = self.position
        assert pos is not None
        if sig is None or pos.interrupted is not None or pos.stops_nothing:
            return
        self._move(interrupted=sig)
        self.net.stop_training = True
        self.signals.heeded = True

    def _heed_signal(self) -> bool:
        """After a step (or an epoch's validation): stop the run if SIGINT or SIGTERM came
        and steps remain.  Returns whether the run stops."""
        self._stop_for(self.world.local_signal(self.signals))
        return bool(self.net.stop_training)

    def _interrupted(self) -> TrainingInterrupted:
        """The error ``fit`` raises after a signal stopped the run (its checkpoint written)."""
        pos, ckpt = self.position, self.checkpointer
        assert pos is not None
        sig = pos.interrupted or "SIGINT"
        self.signals.heeded = True
        err = TrainingInterrupted("", signal_name=sig, epoch=pos.epoch + 1, batch=pos.done, n_batches=pos.n_batches,
                                  step=self.net.step_count, checkpoint=None if ckpt is None else ckpt.last_saved)
        if err.checkpoint is not None:
            then = f"checkpoint written to {err.checkpoint}; resume with fit(..., checkpoint=..., resume=True)"
        else:
            then = "no checkpoint written (fit was given none: pass checkpoint= to keep the work)"
        err.args = (f"fit: interrupted ({sig}) {interrupted_at(err)}; {then}",)
        return err

    def _epoch(self, epoch: int, first: int, run: _Run) -> dict[str, float]:
        """Train one epoch from batch ``first`` with the run's step; return its logs (read once)."""
        net, ops, world = self.net, self.net.ops, self.world
        t0 = time.perf_counter()
        rng_state = net.rng.bit_generator.state
        perm = net.rng.permutation(run.batches.n_rows) if self.settings.shuffle else None      # host indices
        perm, order = run.batches.epoch_order(perm)      # this process's rows (a data-parallel rank's shard)
        self._move(epoch=epoch, first=first, batch=first, done=first, epoch_rng_state=rng_state)
        run.callbacks.epoch_begin(net, epoch)
        metrics, epoch_labels = run.step.begin_epoch(perm, order, run.labels, first)
        self._move(metrics=metrics, labels=epoch_labels)
        pos = self._move(done=run.step.run(first, run.events))
        totals = pos.partial_totals(pos.done, check_weights=True)
        run.callbacks.epoch_totals(net, epoch, totals)      # stop-point save, then the NaN guard
        net.clear_cache()
        seen = max(totals["seen"], 1)
        logs: dict[str, float] = {"loss": totals["loss_sum"] / seen, "accuracy": totals["correct"] / seen}
        world.end_epoch(net)
        if run.val is not None:
            Xv, Tv, Lv, rows = run.val
            v = world.evaluate(net, net.loss, Xv, Tv, Lv, max(self.settings.batch_size, 1024),
                               ops.dtype(net.dtype_name), rows)
            logs["val_loss"], logs["val_accuracy"] = v["loss"], v["accuracy"]
        logs["lr"] = net.optimizer.lr
        logs["time"] = time.perf_counter() - t0
        if net.diagnostics is not None:
            net.diagnostics.end_epoch(net, epoch)
        return logs


class _Run(NamedTuple):
    """What the epoch loop runs with, made once by :meth:`Trainer._start`."""

    history: History
    first_epoch: int
    first_batch: int
    batches: Any
    labels: Array
    val: tuple[Array, Array, Array, Array] | None
    step: Any
    events: _Events | None
    callbacks: CallbackList | None
    finished: bool


class _Events:
    """The run's side of each step (see :mod:`.steps`): the position moves, the batch
    callbacks (only when some want each batch) and the signal check."""

    def __init__(self, trainer: Trainer, callbacks: CallbackList) -> None:
        self.trainer, self.callbacks, self.net = trainer, callbacks, trainer.net
        self.active = bool(callbacks.batch_callbacks)

    def begin(self, b: int) -> None:
        pos = self.trainer._move(batch=b)
        if self.active:
            self.callbacks.batch_begin(self.net, self.net.step_count, {"epoch": pos.epoch, "batch": b})

    def end(self, b: int, f: Array, size: int) -> bool:
        self.trainer._move(done=b + 1)
        if self.active:
            self.callbacks.batch_end(self.net, self.net.step_count, {"loss": f, "batch": b, "size": size})
        return self.trainer._heed_signal()

    def stop(self, done: int) -> bool:
        self.trainer._move(done=done)
        return self.trainer._heed_signal()


def interrupted_at(err: TrainingInterrupted) -> str:
    """Where a signal stopped the run: "at epoch 2, step 137 of 469" or "at the end of epoch 2"."""
    if err.batch >= err.n_batches:
        return f"at the end of epoch {err.epoch}"
    return f"at epoch {err.epoch}, step {err.batch} of {err.n_batches}"


def _describe(cb: Callback) -> str:
    """A per-batch callback as the user knows it."""
    if isinstance(cb, SaveCheckpoints):
        return f"checkpoints every {cb.checkpointer.every_steps} steps"
    return type(cb).__name__
