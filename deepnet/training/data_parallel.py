"""Data-parallel training: one process per rank, each on its shard of every global batch.

What a run with a communicator does beyond the single-process loop:

* at the start, every rank checks that the others run the same settings (data fingerprint,
  batch size, optimizer, model...), takes rank 0's host generator state and weights, and
  gets its own dropout stream (rank 0 keeps the single-process one);
* each step, the rank's error ∂f/∂z is scaled by its share of the global batch (n_r / N for
  a mean loss), so that after backward the sum over the ranks of every ∂f/∂θ, reduced in
  one flat buffer (:class:`~deepnet.distributed.gradients.GradientBuckets`), is the gradient
  of the global batch; then every rank makes the same update;
* epoch metrics and validation (each rank evaluates a share) are summed over the ranks;
  BatchNorm running statistics are averaged over the ranks at each epoch's end unless the
  statistics are synchronized (``sync_batchnorm``: every batch normalized with the
  global batch's μ and σ², as one process with the global batch would).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..backend import Array, to_device, to_host
from ..callbacks import Callback
from ..distributed.communicator import Communicator
from ..distributed.gradients import GradientBuckets
from ..distributed.shards import shard_of
from ..errors import ResumeError, TrainingInterrupted
from ..losses import Loss
from .batches import ShardedBatches
from .evaluation import evaluate_batches
from .steps import DataParallelStep


def ranks_refusal(path: Any, saved: int, now: int) -> str | None:
    """Why a checkpoint trained on ``saved`` ranks cannot be resumed by ``now`` (None: it can)."""
    if saved == now:
        return None
    how = f"mpiexec -n {saved} ..., or --nproc {saved}" if saved > 1 else "in one process, without mpiexec"
    return (f"cannot resume from {path}: it was trained on {saved} process{'es' if saved != 1 else ''} (ranks) "
            f"and this run has {now}; each global batch is split over the ranks, so resume it with the same "
            f"number ({how})")


def check_resume_ranks(checkpointer: Any, size: int) -> None:
    """Refuse, clearly, to resume a checkpoint written by another number of ranks."""
    state = checkpointer.read_state() if checkpointer is not None else None
    if state is not None:
        refusal = ranks_refusal(state["path"], int((state.get("settings") or {}).get("ranks", 1)), size)
        if refusal:
            raise ResumeError(refusal)


class AgreeStop(Callback):
    """After each step and each epoch, every rank stops when any rank's callbacks stopped
    or any rank received SIGINT or SIGTERM (``signals.received``; ``heed(sig)`` stops the run
    for it); it runs on every rank at every step, so ranks with different callbacks stay in step."""

    def __init__(self, parallel: DataParallel, signals: Any = None, heed: Any = None) -> None:
        self.parallel, self.signals, self.heed = parallel, signals, heed

    def wants_batch_hooks(self) -> bool:
        return True

    def _agree(self, net: Any) -> None:
        received = None if self.signals is None else self.signals.received
        sig = self.parallel.agree_stop(net, received)
        if self.heed is not None:
            self.heed(sig)

    def on_batch_end(self, net: Any, step: int, logs: dict[str, Any]) -> None:
        self._agree(net)

    def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, Any]) -> None:
        self._agree(net)


class SettingsMismatch(ValueError):
    """The ranks of a data-parallel run were started with different settings."""


class DataParallel:
    """The data-parallel side of one run over ``comm`` (see the module)."""

    def __init__(self, comm: Communicator, sync_batchnorm: bool = False) -> None:
        if not isinstance(comm, Communicator):
            raise TypeError(f"fit: communicator must be a deepnet.distributed Communicator, got {type(comm).__name__}")
        self.comm, self.sync_batchnorm = comm, bool(sync_batchnorm)
        #: gradients reduced in buckets of this many bytes, started during backward with ``overlap``
        self.bucket_bytes, self.overlap = comm.bucket_bytes, comm.overlap
        self.rank, self.size = comm.rank, comm.size
        self.buckets: GradientBuckets | None = None

    #: the run's settings are compared across the ranks (read from the device)
    compares_settings = True
    #: each step reduces its gradients across the ranks (a step that cannot be captured)
    reduces_gradients = True
    #: one rank alone must not stop after a step: the summed totals decide, on all
    checks_each_step = False

    # ------------------------------------------------------------------ start
    def record(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The run's settings as checkpoints record them: with the ranks (only when more than one
        and sync_batchnorm only when set: older checkpoints still resume)."""
        if self.size > 1:
            settings["ranks"] = self.size
            if self.sync_batchnorm:
                settings["sync_batchnorm"] = True
        return settings

    def agree_run(self, settings: dict[str, Any], trainer: Any) -> None:
        """Every rank checks that all were given the same run (``trainer``'s settings)."""
        run, net, ckpt = trainer.settings, trainer.net, trainer.checkpointer
        self.agree({**settings, "graphs": run.graphs, "check_finite": run.check_finite, "backend": net.ops.name,
                    "model": self.fingerprint(net), "validation": None if run.validation_data is None else
                    [list(run.validation_data[0].shape), None if run.validation_rows is None else
                     len(run.validation_rows)], "checkpoint": None if ckpt is None else str(ckpt.directory),
                    "resume": run.resume, "stream_chunk_rows": trainer.stream_chunk_rows,
                    "resume from": None if not (run.resume and ckpt is not None) else str(ckpt.last_path()),
                    "checkpoints": None if ckpt is None else [ckpt.every_steps, ckpt.monitor, ckpt.mode, ckpt.keep],
                    "reduction": [self.comm.name, self.comm.transport, self.bucket_bytes,
                                  self.overlap, self.sync_batchnorm]})

    def batches(self, net: Any, X: Any, T: Any, batch_size: int, chunk_rows: int | None, rows: Any
                ) -> ShardedBatches:
        return ShardedBatches(net.ops, X, T, batch_size, self.rank, self.size, chunk_rows, rows,
                              self.min_shard_rows(net))

    def step(self, net: Any, batches: Any, accept: Any) -> DataParallelStep:
        return DataParallelStep(net, batches, self.buckets)

    def stop_callbacks(self, signals: Any, heed: Any) -> list[Callback]:
        """After every other callback saw a batch or an epoch, and before a checkpoint records
        it, the ranks agree on whether to stop (each step, on every rank)."""
        return [AgreeStop(self, signals, heed)]

    def local_signal(self, signals: Any) -> str | None:
        return None         # the ranks agree on a signal in AgreeStop, at the same step

    def left_alone(self, err: BaseException) -> bool:
        """Whether this rank's error leaves the others waiting in their next reduction (not a
        settings mismatch or an agreed stop: every rank finds those at once)."""
        return self.size > 1 and not isinstance(err, SettingsMismatch) and not (
            isinstance(err, TrainingInterrupted) and not err.aborted)

    def agree(self, settings: dict[str, Any]) -> None:
        """Raise :class:`SettingsMismatch` on every rank, naming the differences, unless every
        rank was given the same ``settings``."""
        mine = json.loads(json.dumps(settings, default=str))
        every = self.comm.allgather_object(mine)
        diffs = []
        for r, theirs in enumerate(every):
            for key in sorted(set(theirs) | set(every[0])):
                a, b = every[0].get(key, "not set"), theirs.get(key, "not set")
                if a != b:
                    diffs.append(f"{key}: rank 0 {a!r}, rank {r} {b!r}")
        if diffs:
            raise SettingsMismatch("fit: the ranks of this run were started with different settings: "
                                   + "; ".join(diffs[:8]) + (f" (and {len(diffs) - 8} more)" if len(diffs) > 8 else "")
                                   + " (start every rank with the same command, data and seed)")

    def start(self, net: Any) -> None:
        """Bind the communicator; rank 0's host generator; this rank's dropout stream; synced
        BatchNorm if asked (every layer that can; an error when none can)."""
        if net.diagnostics is not None:
            raise ValueError("fit: diagnostics record each process's own gradients before they are summed; "
                             "they are not available in data-parallel runs (drop diagnostics or the communicator)")
        if self.sync_batchnorm and not any(layer.uses_batch_statistics for layer in net.layers):
            raise ValueError("fit: sync_batchnorm=True, but the network has no BatchNorm layer to synchronize")
        self.comm.bind(net.ops)
        state = self.comm.broadcast_object(net.rng.bit_generator.state if self.rank == 0 else None)
        net.rng.bit_generator.state = state
        net.set_replica(self.rank)
        for layer in net.layers:
            if layer.uses_batch_statistics:
                layer.set_sync(self.comm if self.sync_batchnorm else None)

    def finish(self, net: Any) -> None:
        """The run is over: the network no longer reduces anything (a later ``fit`` without a
        communicator trains it alone)."""
        net.backward_hook = None
        for layer in net.layers:
            if layer.uses_batch_statistics:
                layer.set_sync(None)

    def min_shard_rows(self, net: Any) -> int:
        """Rows each rank needs in a batch: 2 with a BatchNorm layer normalizing each rank's own
        rows (a variance needs two values), else 1."""
        local_bn = any(layer.uses_batch_statistics for layer in net.layers) and not self.sync_batchnorm
        return 2 if local_bn else 1

    def share_weights(self, net: Any, resumed: bool) -> None:
        """Every rank takes rank 0's weights (and, unless the run was resumed from a checkpoint
        that restored each rank's own, its layer state), then keeps its gradients in the buckets."""
        ops = net.ops
        self.buckets = GradientBuckets(self.comm, ops, net.layers, ops.dtype(net.dtype_name),
                                       self.bucket_bytes, self.overlap)
        self.buckets.broadcast_parameters(list(net.parameters().values()))
        net.zero_grad()
        if not resumed:
            self._reduce_layer_state(net, "broadcast")
        net.backward_hook = self.buckets.layer_done if self.overlap else None

    def agree_position(self, where: dict[str, Any]) -> None:
        """After a restore: every rank must continue from the same point (same checkpoint)."""
        every = self.comm.allgather_object(where)
        if any(w != every[0] for w in every):
            raise SettingsMismatch("fit: the ranks restored different checkpoints: " + "; ".join(
                f"rank {r}: {w}" for r, w in enumerate(every)) + " (the checkpoint folder must be the same "
                "for every rank: a shared filesystem on several machines)")

    def agree_stop(self, net: Any, received: str | None = None) -> str | None:
        """A callback that stopped the run on some ranks stops it on all (with the first
        stopping rank's reason): the ranks must take the same steps.  A learning rate a
        callback changed on some ranks only is refused (the models would drift apart).
        ``received``: a signal this rank received; returns the first rank's such signal
        (every rank gets the same answer), or None."""
        flags = self.comm.allgather_object((bool(net.stop_training), net.stop_reason, net.optimizer.lr, received))
        rates = [lr for _, _, lr, _ in flags]
        if any(lr != rates[0] for lr in rates):
            raise SettingsMismatch("fit: the ranks' learning rates differ: " + ", ".join(
                f"rank {r} {lr:g}" for r, lr in enumerate(rates)) + " (a schedule or callback that changes "
                "the optimizer must be given to every rank)")
        stopped = [reason for stop, reason, _, _ in flags if stop]
        if stopped:
            net.stop_training = True
            net.stop_reason = next((r for r in stopped if r), net.stop_reason)
        return next((sig for _, _, _, sig in flags if sig), None)

    # ------------------------------------------------------------------ steps
    def check_same_weights(self, net: Any) -> None:
        """At the end of a run every rank must hold the same model (a callback that restored
        or changed weights on some ranks only would leave them apart): Σθ² compared exactly."""
        ops = net.ops
        sums = ops.read_scalars([ops.sum_squares(p.data) for p in net.parameters().values()])
        every = self.comm.allgather_object([float(v) for v in sums])
        if any(s != every[0] for s in every):
            raise SettingsMismatch("fit: the ranks' weights differ at the end of the run: a callback changed "
                                   "the weights on some ranks only (e.g. EarlyStopping(restore_best=True)); give "
                                   "every rank the same callbacks")

    def sum_totals(self, totals: dict[str, Any]) -> dict[str, Any]:
        """Σ over the ranks of an epoch's loss_sum, correct and seen (one small reduction)."""
        loss_sum, correct, seen = self.comm.sum_floats([totals["loss_sum"], totals["correct"], totals["seen"]])
        return {**totals, "loss_sum": loss_sum, "correct": correct, "seen": int(round(seen))}

    def evaluate(self, net: Any, loss: Loss, X: Array, T: Array, labels: Array, batch_size: int, dtype: Any,
                 rows: Array = None) -> dict[str, float]:
        """Loss and accuracy over every rank's share of (X, T) (rows ``rows``), summed."""
        n = int(X.shape[0]) if rows is None else int(rows.shape[0])
        s, e = shard_of(n, self.rank, self.size)
        local = {"loss": 0.0, "accuracy": 0.0}
        if e > s:
            if rows is None:
                local = evaluate_batches(net, loss, X[s:e, ...], T[s:e, ...], labels[s:e, ...], batch_size, dtype)
            else:
                local = evaluate_batches(net, loss, X, T[s:e, ...], labels[s:e, ...], batch_size, dtype, rows[s:e])
        loss_sum, correct = self.comm.sum_floats([local["loss"] * (e - s), local["accuracy"] * (e - s)])
        return {"loss": loss_sum / max(n, 1), "accuracy": correct / max(n, 1)}

    def end_epoch(self, net: Any) -> None:
        """Local BatchNorm statistics: every rank takes their mean over the ranks."""
        if not self.sync_batchnorm:
            self._reduce_layer_state(net, "mean")

    def _reduce_layer_state(self, net: Any, how: str) -> None:
        """Layer state (BatchNorm running statistics) averaged over the ranks, or rank 0's."""
        for layer in net.layers:
            state = layer.state_arrays()
            out = {}
            for k in sorted(state):             # host copies, in the same order on every rank
                a = to_device(state[k], net.ops, dtype="float64", copy=True)
                if how == "mean":
                    self.comm.allreduce(a, "mean")
                else:
                    self.comm.broadcast(a, 0)
                out[k] = to_host(a)
            if out:
                layer.load_state_arrays(out)

    def fingerprint(self, net: Any) -> str:
        """A short hash of the architecture and the parameter shapes (compared across ranks)."""
        desc = [(type(layer).__name__, layer.get_config(), {k: list(p.shape) for k, p in layer.parameters().items()})
                for layer in net.layers]
        return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:16]
