"""Network: a sequential stack of layers trained by explicit backpropagation.

Forward applies the layers in order.  Backward walks them in reverse, handing each
layer the error from the layer above and passing the error it returns (ẽ) to the layer
below, which is the derivation's hidden-layer step applied L times.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

from .backend import Array, Ops, get_backend, get_ops, host_rng, to_device, to_host
from .backend.host import as_host_inputs, as_host_targets, host_concat
from .callbacks import Callback
from .errors import NonFiniteError, ShapeError
from .training.history import History
from .layers.base import Layer, Parameter
from .losses import Loss, get_loss
from .optimizers import Optimizer, get_optimizer


class Network:
    """A sequential stack of :class:`~deepnet.layers.Layer` objects.

    ``seed`` seeds the run's single host generator: initial weights are drawn from it
    on the host (so every backend starts from the same network), and so are shuffles.
    """

    def __init__(self, layers: Sequence[Layer], seed: int | None = 0, backend: str | Ops | None = None,
                 dtype: str = "float32", loss: str | Loss | None = None,
                 optimizer: str | Optimizer | None = None) -> None:
        layers = list(layers)
        if not layers:
            raise ValueError("Network needs at least one layer, got an empty list")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Network: layer {i} must be a deepnet Layer, got {type(layer).__name__}")
        self.layers = layers
        self.ops = get_backend() if backend is None else get_ops(backend)
        self.dtype_name = Ops.dtype_name(dtype)
        if self.dtype_name not in ("float32", "float64", "float16"):
            raise ValueError(f"Network: dtype must be float32, float64 or float16, got {dtype!r}")
        self.seed = seed
        self.rng = host_rng(seed)
        self.loss: Loss | None = None if loss is None else get_loss(loss)
        self.optimizer: Optimizer | None = None if optimizer is None else get_optimizer(optimizer)
        self.stop_training = False
        #: set with ``stop_training`` by a callback that ends the run for good (e.g. early
        #: stopping): checkpoints record it, and resuming such a run trains nothing
        self.stop_reason: str | None = None
        self.diagnostics: Any = None
        self.step_count = 0
        for layer in layers:
            was_initialized = layer.initialized     # kept by Layer: add_param sets it
            layer.to(self.ops, self.dtype_name)
            if not was_initialized:
                layer.initialize(self.rng)
                layer.initialized = True            # reused in another Network: keeps its parameters
        self.input_width, self.output_width = self._check_widths()
        self._params = self._collect_params()
        self._param_list = list(self._params.values())
        self._device_rng = None
        self._give_rng()

    # ------------------------------------------------------------------ structure
    def _check_widths(self) -> tuple[int, int]:
        width = None
        first = None
        for i, layer in enumerate(self.layers):
            n_in = getattr(layer, "n_in", None)
            if n_in is not None:
                if width is not None and width != n_in:
                    raise ShapeError(
                        f"Network: layer {i} ({layer.name}) expects inputs of width {n_in}, "
                        f"but the layers before it produce width {width}")
                if first is None:
                    first = n_in
            if width is None and n_in is None:
                continue
            width = layer.output_width(n_in if width is None else width)
        if first is None or width is None:
            raise ValueError("Network: cannot infer the input width; the stack needs at least one Dense layer")
        return first, width

    def _collect_params(self) -> dict[str, Parameter]:
        params: dict[str, Parameter] = {}
        for i, layer in enumerate(self.layers):
            for name, p in layer.parameters().items():
                p.name = f"{i}.{name}"
                params[p.name] = p
        return params

    def parameters(self) -> dict[str, Parameter]:
        """All parameters by stable name ``"<layer index>.<name>"`` (e.g. ``"0.weight"``)."""
        return self._params

    @property
    def n_params(self) -> int:
        return sum(math.prod(p.shape) for p in self._params.values())

    def zero_grad(self) -> None:
        for p in self._param_list:
            p._fresh = True

    def get_weights(self) -> dict[str, Any]:
        """Host (NumPy) copies of every parameter, by name."""
        return {name: to_host(p.data).copy() for name, p in self._params.items()}

    def set_weights(self, weights: dict[str, Any]) -> None:
        """Load host arrays by name; shapes must match exactly."""
        missing = set(self._params) - set(weights)
        extra = set(weights) - set(self._params)
        if missing or extra:
            raise KeyError(f"set_weights: missing {sorted(missing)}, unexpected {sorted(extra)}")
        for name, p in self._params.items():
            w = weights[name]
            if tuple(w.shape) != p.shape:
                raise ShapeError(f"set_weights: parameter {name} has shape {p.shape}, got {tuple(w.shape)}")
        for name, p in self._params.items():
            p.data = to_device(weights[name], self.ops, dtype=self.dtype_name, copy=True)
            p._fresh = True

    def _arrange_layouts(self, batch_size: int) -> None:
        """Let the first layer (which never computes ẽ) pick its backend's fastest weight
        layout for this batch size; optimizer slots follow at the next step."""
        if self.layers[0].arrange_as_first_layer(batch_size) and self.optimizer is not None:
            self.optimizer._layouts_checked = False

    def _give_rng(self) -> None:
        """Hand the run's device generator to layers that draw random numbers (dropout)."""
        for layer in self.layers:
            if getattr(layer, "stochastic", False):
                layer.set_rng(self.device_rng())

    def to(self, backend: str | Ops) -> Network:
        """Move the whole network (and its optimizer state) to another backend, in place.

        Dropout masks after the move come from a generator on the new backend, seeded
        from the run's host generator."""
        ops = get_ops(backend)
        for layer in self.layers:
            layer.to(ops, self.dtype_name)
        self.ops = ops
        self._device_rng = None
        self._give_rng()
        if self.optimizer is not None:
            self.optimizer.to(ops)
        return self

    def summary(self) -> str:
        """A readable table: layers, output shapes and parameter counts."""
        rows = [("#", "layer", "output", "parameters")]
        width = self.input_width
        for i, layer in enumerate(self.layers):
            width = layer.output_width(width)
            n = sum(math.prod(p.shape) for p in layer.parameters().values())
            shapes = ", ".join(f"{k}{p.shape}" for k, p in layer.parameters().items())
            rows.append((str(i), repr(layer), f"(n, {width})", f"{n:,}" + (f"  {shapes}" if shapes else "")))
        w = [max(len(r[c]) for r in rows) for c in range(4)]
        line = "-" * (sum(w) + 6)
        out = [f"Network on {self.ops.name}, {self.dtype_name}, input (n, {self.input_width})", line]
        for j, r in enumerate(rows):
            out.append("  ".join(r[c].ljust(w[c]) for c in range(4)).rstrip())
            if j == 0:
                out.append(line)
        out += [line, f"total parameters: {self.n_params:,}"]
        return "\n".join(out)

    def __repr__(self) -> str:
        return f"Network({self.layers!r}, backend={self.ops.name!r})"

    # ------------------------------------------------------------------ passes
    def forward(self, x: Array, training: bool = False) -> Array:
        """z = g(A … g(B x)): apply every layer in order."""
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    __call__ = forward

    def backward(self, grad_output: Array) -> None:
        """Walk the layers in reverse: each receives the error from above, accumulates its
        gradients and hands ẽ down.  The first layer's input error is not computed."""
        layers = self.layers
        diag = self.diagnostics
        if diag is None:
            for i in range(len(layers) - 1, 0, -1):
                grad_output = layers[i].backward(grad_output, True)
            layers[0].backward(grad_output, False)
            return
        for i in range(len(layers) - 1, -1, -1):
            diag.record_error(i, grad_output)
            grad_output = layers[i].backward(grad_output, i > 0)
        diag.record_grads(self._params)

    def clear_cache(self) -> None:
        for layer in self.layers:
            layer.clear_cache()

    # ------------------------------------------------------------------ training
    def _device_inputs(self, X: Any, where: str) -> Array:
        """Validate inputs once and put them on the backend in the network's dtype."""
        ops = self.ops
        if ops.owns(X) and not ops.host_arrays:   # already on the device: check it there
            if X.ndim != 2 or X.shape[1] != self.input_width:
                raise ShapeError(f"{where}: the first layer expects inputs of width {self.input_width}, "
                                 f"got X of shape {tuple(X.shape)}")
            if not bool(to_host(ops.all_finite(X))):
                raise ValueError(f"{where}: X contains non-finite values (NaN or inf)")
            return to_device(X, ops, dtype=self.dtype_name)
        host = as_host_inputs(X, self.input_width, where)
        return to_device(host, ops, dtype=self.dtype_name)

    def _device_targets(self, y: Any, n: int, loss: Loss, where: str) -> tuple[Array, Array]:
        """(targets for the loss, integer labels for accuracy), both on the device."""
        host = as_host_targets(y, n, self.output_width, where, allow_labels=loss.accepts_labels)
        if host.ndim == 1:
            labels = to_device(host, self.ops, dtype="int64")
            prepare = getattr(loss, "targets", None)
            if prepare is not None:  # losses that work on target rows: build them once
                dummy = self.ops.zeros((n, self.output_width), self.ops.dtype(self.dtype_name))
                return prepare(self.ops, dummy, labels), labels
            return labels, labels
        targets = to_device(host, self.ops, dtype=self.dtype_name)
        return targets, to_device(host.argmax(axis=1), self.ops, dtype="int64")

    def fit(self, X: Any, y: Any, *, epochs: int = 1, batch_size: int = 32,
            loss: str | Loss | None = None, optimizer: str | Optimizer | None = None,
            shuffle: bool = True, validation_data: tuple[Any, Any] | None = None,
            callbacks: Iterable[Callback] = (), verbose: bool = False,
            check_finite: str = "raise", checkpoint: Any = None, resume: bool | str = False,
            stream_chunk_rows: int | None = None) -> History:
        """Train with mini-batch gradient descent and return the per-epoch :class:`History`.

        Each step: forward (training), f and ∂f/∂z from the loss, backward through every
        layer, one optimizer update, gradients zeroed.  The loss is the batch mean of the
        per-sample loss, so ``batch_size=1`` is exactly the seed's per-sample update.
        ``X`` and ``y`` are moved to the backend once; batches are slices of a per-epoch
        shuffled copy made on the device.  Losses and accuracy accumulate on the device
        and are read once per epoch.

        ``check_finite``: ``"raise"`` stops at the first non-finite loss before its update
        is applied (named step and layer); ``"skip"`` drops that step and halves the
        learning rate; ``"off"`` checks only at the end of each epoch.
        ``checkpoint``: a :class:`deepnet.checkpoint.Checkpointer` (or a directory) to save
        training state to; with ``resume=True`` training continues from its latest file
        (:class:`~deepnet.checkpoint.ResumeError` if there is none, or if the run's settings
        differ from the recorded ones; ``epochs`` may change, not below those done; a run
        that ended for good, e.g. by early stopping, trains nothing), with
        ``resume="if-exists"`` it starts fresh when there is no checkpoint yet.  Without
        ``resume``, a checkpoint folder holding another run's files is refused.
        ``stream_chunk_rows``: keep X on the host and stream it to the device in shuffled
        chunks of this many rows, the next chunk staged while the current one trains (for
        data sets larger than device memory; on CuPy chosen automatically when the data
        would not fit).  Results are identical to resident training.
        """
        if not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"fit: epochs must be a non-negative integer, got {epochs!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"fit: batch_size must be a positive integer, got {batch_size!r}")
        if check_finite not in ("raise", "skip", "off"):
            raise ValueError(f"fit: check_finite must be 'raise', 'skip' or 'off', got {check_finite!r}")
        if check_finite == "skip" and not self.ops.cheap_sync:
            raise ValueError(f"fit: check_finite='skip' decides on the host at every step, which backend "
                             f"{self.ops.name!r} avoids (each read waits for the device); use 'raise' (checked at "
                             "each epoch's end, naming the first bad batch) or 'off'")
        if resume not in (False, True, "if-exists"):
            raise ValueError(f"fit: resume must be False, True or 'if-exists', got {resume!r}")
        if loss is not None:
            self.loss = get_loss(loss)
        if optimizer is not None:
            self.optimizer = get_optimizer(optimizer)
        if self.loss is None or self.optimizer is None:
            raise ValueError("fit: give a loss and an optimizer (here or to Network(...))")
        loss_fn, opt, ops = self.loss.bind(self.ops), self.optimizer, self.ops
        if stream_chunk_rows is None and not ops.owns(X):
            stream_chunk_rows = ops.stream_rows_for(X, batch_size)
        if stream_chunk_rows:
            if stream_chunk_rows < batch_size or stream_chunk_rows % batch_size:
                raise ValueError(f"fit: stream_chunk_rows must be a multiple of batch_size ({batch_size}), "
                                 f"got {stream_chunk_rows}")
            Xd = as_host_inputs(X, self.input_width, "fit").astype(self.dtype_name, copy=False)
        else:
            Xd = self._device_inputs(X, "fit")
        n = int(Xd.shape[0])
        Td, Ld = self._device_targets(y, n, loss_fn, "fit")
        if stream_chunk_rows and Td.ndim == 2:
            Td = to_host(Td)
        val = None
        if validation_data is not None:
            Xv, yv = validation_data
            Xv = self._device_inputs(Xv, "fit(validation_data)")
            Tv, Lv = self._device_targets(yv, int(Xv.shape[0]), loss_fn, "fit(validation_data)")
            val = (Xv, Tv, Lv)

        ckpt = checkpoint
        if isinstance(checkpoint, str) or hasattr(checkpoint, "__fspath__"):
            from .checkpoint import Checkpointer  # local: checkpoint imports network

            ckpt = Checkpointer(checkpoint)
        callbacks = list(callbacks)
        batch_cbs = [cb for cb in callbacks if cb.wants_batch_hooks()]
        history = History()
        start_epoch, start_batch, partial = 0, 0, None
        if resume and ckpt is None:
            raise ValueError("fit: resume needs checkpoint=<directory or Checkpointer>")
        if ckpt is not None:
            settings = self._run_settings(Xd, Td, Ld, epochs, batch_size, shuffle)
            state = ckpt.restore(self, settings=settings) if resume else None
            if state is not None:
                start_epoch, start_batch, partial, history, finished = state
                if finished:            # the run ended for good (e.g. early stopping): nothing to train
                    return history
            elif resume is True:
                from .checkpoint import ResumeError

                raise ResumeError(f"fit: resume=True but {ckpt.directory} holds no checkpoint "
                                  "(use resume='if-exists' to start fresh when there is none)")
            else:
                ckpt.check_new_run()
            ckpt.record_settings(self, settings)
        self._arrange_layouts(batch_size)   # after a restore, which replaces the weights
        self.stop_training = False
        self.stop_reason = None
        n_batches = -(-n // batch_size)
        logs: dict[str, Any] = {"epochs": epochs, "steps_per_epoch": n_batches, "batch_size": batch_size,
                                "samples": n, "initial_epoch": start_epoch}
        for cb in callbacks:
            cb.on_train_begin(self, logs)
        t_is_labels = Td.ndim == 1
        fdtype = ops.dtype(self.dtype_name)
        check_each_step = check_finite != "off" and ops.cheap_sync   # else once per epoch: no per-step sync
        argmax_rows, isfinite = ops.argmax_rows, math.isfinite

        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            epoch_rng_state = self.rng.bit_generator.state
            perm_host = self.rng.permutation(n) if shuffle else None
            perm = None if perm_host is None else to_device(perm_host, ops, dtype="int64")
            Ls = Ld if perm is None else ops.take_rows(Ld, perm)
            for cb in callbacks:
                cb.on_epoch_begin(self, epoch, {})
            first = start_batch if epoch == start_epoch else 0
            # Per-batch losses and per-sample predictions are written into device buffers
            # (one store each per step) and reduced once at the end of the epoch.
            batch_losses = ops.zeros((n_batches,), fdtype)
            preds = ops.zeros((n,), ops.int64)
            b = first - 1
            for seg_start, Xs, Ts in self._segments(Xd, Td, perm, perm_host, stream_chunk_rows,
                                                    first * batch_size):
                seg_rows = int(Xs.shape[0])
                for b in range(max(first, seg_start // batch_size), -(-(seg_start + seg_rows) // batch_size)):
                    s = b * batch_size
                    e = s + batch_size if s + batch_size < n else n
                    xb = Xs[s - seg_start:e - seg_start, :]
                    tb = Ts[s - seg_start:e - seg_start] if t_is_labels else Ts[s - seg_start:e - seg_start, :]
                    if batch_cbs:
                        logs = {"epoch": epoch, "batch": b}
                        for cb in batch_cbs:
                            cb.on_batch_begin(self, self.step_count, logs)
                    z = self.forward(xb, True)
                    batch_loss, dz = loss_fn.forward_backward(z, tb)
                    if check_each_step and not isfinite(batch_loss):
                        if self._on_nonfinite(check_finite, epoch, b, batch_loss, ckpt):
                            continue
                    self.backward(dz)
                    opt.step(self._params, ops)
                    self.zero_grad()
                    self.step_count += 1
                    batch_losses[b] = batch_loss
                    preds[s:e] = argmax_rows(z)
                    if batch_cbs:
                        logs = {"loss": batch_loss, "batch": b, "size": e - s}
                        for cb in batch_cbs:
                            cb.on_batch_end(self, self.step_count, logs)
                    if ckpt is not None and ckpt.due(self.step_count):
                        ckpt.save_training(self, epoch, b + 1, epoch_rng_state, history,
                                           self._partial_totals(partial, batch_losses, preds, Ls, first, b + 1,
                                                                batch_size, n, loss_fn))
                    if self.stop_training:
                        break
                if self.stop_training:
                    break
            done = b + 1
            totals = self._partial_totals(partial, batch_losses, preds, Ls, first, done, batch_size, n, loss_fn,
                                          check_weights=True)
            partial = None
            if done < n_batches and ckpt is not None:
                # stopped inside the epoch: save where we are so resume finishes this epoch
                ckpt.save_training(self, epoch, done, epoch_rng_state, history, totals)
            loss_total, correct, seen = totals["loss_sum"], totals["correct"], totals["seen"]
            self.clear_cache()
            # -- once per epoch: read the device accumulators ---------------------
            epoch_logs: dict[str, float] = {
                "loss": loss_total / max(seen, 1),
                "accuracy": correct / max(seen, 1),
            }
            if not math.isfinite(epoch_logs["loss"]) or not totals["weights_finite"]:
                flags = to_host(ops.xp.isfinite(batch_losses[first:done])).tolist()   # read only on failure
                bad = first + flags.index(False) if False in flags else None
                self._on_nonfinite("raise", epoch, done - 1 if bad is None else bad, None, ckpt,
                                   late=bad is not None)
            if val is not None:
                v = self._evaluate_device(*val, batch_size=max(batch_size, 1024))
                epoch_logs["val_loss"], epoch_logs["val_accuracy"] = v["loss"], v["accuracy"]
            epoch_logs["lr"] = opt.lr
            epoch_logs["time"] = time.perf_counter() - t0
            if self.diagnostics is not None:
                self.diagnostics.end_epoch(self, epoch)
            history.append(epoch, epoch_logs)
            if verbose:
                print(f"epoch {epoch + 1}/{epochs}  " + "  ".join(
                    f"{k} {v:.4f}" for k, v in epoch_logs.items() if k != "time") + f"  ({epoch_logs['time']:.1f}s)",
                    flush=True)
            for cb in callbacks:
                cb.on_epoch_end(self, epoch, epoch_logs)
            if ckpt is not None and done == n_batches:
                ckpt.save_epoch(self, epoch, history, epoch_logs)
            if self.stop_training:
                break
        for cb in callbacks:
            cb.on_train_end(self, {"history": history})
        return history

    def _run_settings(self, Xd: Array, targets: Array, labels: Array, epochs: int, batch_size: int,
                      shuffle: bool) -> dict[str, Any]:
        """The settings that shape this run, as plain data, for checkpoints to record and compare:
        the optimizer as configured (before any schedule changed it), and a fingerprint of the
        data: shape, labels and 16 evenly spaced rows of inputs and targets (one small read; a
        different split, scaling or data set changes it)."""
        import hashlib

        n = int(Xd.shape[0])
        rows = slice(None, None, max(1, n // 16))
        h = hashlib.sha256(f"{tuple(Xd.shape)}".encode())
        for part in (labels, Xd[rows, ...], targets[rows, ...] if targets.ndim == 2 else None):
            if part is not None:
                h.update(to_host(part).tobytes())
        out: dict[str, Any] = {"epochs": epochs, "batch_size": batch_size, "shuffle": bool(shuffle),
                               "dtype": self.dtype_name, "training samples": n, "training data": h.hexdigest()[:16],
                               "loss": type(self.loss).__name__, "optimizer": type(self.optimizer).__name__}
        for prefix, cfg in (("loss", self.loss.get_config()), ("optimizer", self.optimizer.initial_config())):
            out.update({f"{prefix}.{k}": v for k, v in cfg.items()})
        return out

    def _segments(self, Xd: Array, Td: Array, perm: Array | None, perm_host: Any, chunk_rows: int | None,
                  start_row: int) -> Any:
        """Yield (first row, X rows, targets rows) of this epoch's shuffled data from
        ``start_row`` on.  Resident data: one segment gathered on the device.  Streamed data:
        chunks gathered on the host, each staged to the device while the previous trains."""
        ops = self.ops
        if not chunk_rows:
            if perm is None:
                yield 0, Xd, Td
            else:
                yield 0, ops.take_rows(Xd, perm), ops.take_rows(Td, perm)
            return
        n = int(Xd.shape[0])
        t_host = not ops.owns(Td) or ops.host_arrays

        def stage(lo: int) -> Any:
            idx = slice(lo, min(lo + chunk_rows, n)) if perm_host is None else perm_host[lo:lo + chunk_rows]
            return ops.stage(Xd[idx]), (ops.stage(Td[idx]) if t_host else None)

        first = start_row - start_row % chunk_rows
        pending = stage(first) if first < n else None
        for lo in range(first, n, chunk_rows):
            xs, ts = pending
            pending = stage(lo + chunk_rows) if lo + chunk_rows < n else None   # overlap the next copy
            hi = min(lo + chunk_rows, n)
            if ts is None:
                tsl = Td[lo:hi] if perm is None else ops.take_rows(Td, perm[lo:hi])
            else:
                tsl = ops.ready(ts)
            yield lo, ops.ready(xs), tsl

    def _partial_totals(self, partial: dict[str, Any] | None, batch_losses: Array, preds: Array, labels: Array,
                        first: int, done: int, batch_size: int, n: int, loss_fn: Loss,
                        check_weights: bool = False) -> dict[str, Any]:
        """Host totals (Σ per-sample loss, correct count, samples seen) for batches first..done−1,
        plus those carried over from a resumed checkpoint; with ``check_weights`` also whether
        every weight is finite.  Reads the device once."""
        ops = self.ops
        xp = ops.xp
        s, e = first * batch_size, min(done * batch_size, n)
        sums: list[Array] = []
        if e > s:
            weights = ops.full((done - first,), 1.0 if loss_fn.reduction == "sum" else float(batch_size),
                               batch_losses.dtype)
            if e - s < (done - first) * batch_size and loss_fn.reduction != "sum":
                weights[-1] = float(e - s - (done - first - 1) * batch_size)
            sums = [xp.sum(batch_losses[first:done] * weights), ops.count_equal(preds[s:e], labels[s:e])]
        if check_weights:
            ok = None
            for p in self._param_list:
                flag = ops.all_finite(p.data)
                ok = flag if ok is None else xp.logical_and(ok, flag)
            if ok is not None:
                sums.append(ok)
        host = ops.read_scalars(sums)
        loss_sum, correct = (host[0], host[1]) if e > s else (0.0, 0.0)
        seen = e - s if e > s else 0
        if partial is not None:
            loss_sum += partial["loss_sum"]
            correct += partial["correct"]
            seen += partial["seen"]
        totals = {"loss_sum": loss_sum, "correct": correct, "seen": seen}
        if check_weights:
            totals["weights_finite"] = not self._param_list or host[-1] == 1.0
        return totals

    def _on_nonfinite(self, policy: str, epoch: int, batch: int, batch_loss: Any, ckpt: Any,
                      late: bool = False) -> bool:
        """Handle a non-finite loss: raise (naming step and layer) or skip the step.  ``late``:
        found at the epoch's end (backends without per-step reads), after later updates."""
        if policy == "skip" and batch_loss is not None:
            self.zero_grad()
            self.clear_cache()
            self.optimizer.lr *= 0.5
            return True
        layer = self._first_nonfinite_layer()
        last = ckpt.last_path() if ckpt is not None else None
        where = f"epoch {epoch + 1}, batch {batch + 1}" + ("" if late else f" (step {self.step_count + 1})")
        what = ("the loss is NaN or inf" if batch_loss is not None else
                "the loss of this batch was NaN or inf (found at the epoch's end on this backend: the updates of "
                "the batches after it were applied)" if late else "the weights or the epoch loss became NaN or inf")
        raise NonFiniteError(
            f"training stopped at {where}: {what}; first non-finite layer: {layer}; "
            f"last good checkpoint: {last if last else 'none (pass checkpoint= to fit to keep one)'}. "
            f"Lower the learning rate, clip gradients (clip_norm=) or use check_finite='skip'.")

    def _first_nonfinite_layer(self) -> str:
        for i, layer in enumerate(self.layers):
            for name, p in layer.parameters().items():
                if not bool(to_host(self.ops.all_finite(p.data))):
                    return f"layer {i} ({layer.name}) parameter {name}"
            cache = layer._cache
            if cache is not None and hasattr(cache, "shape") and not bool(to_host(self.ops.all_finite(cache))):
                return f"layer {i} ({layer.name}) input or output"
        return "none found in the weights (the loss itself overflowed)"

    # ------------------------------------------------------------------ inference
    def _evaluate_device(self, Xd: Array, Td: Array, Ld: Array, batch_size: int) -> dict[str, float]:
        ops, loss_fn = self.ops, self.loss
        loss_sum = ops.zeros((), ops.dtype(self.dtype_name))
        correct = ops.zeros((), ops.int64)
        n = int(Xd.shape[0])
        for s in range(0, n, batch_size):
            e = min(s + batch_size, n)
            z = self.forward(Xd[s:e, ...], False)
            if loss_fn is not None:
                bl, _ = loss_fn.forward_backward(z, Td[s:e, ...])
                loss_sum += bl if loss_fn.reduction == "sum" else bl * float(e - s)
            correct += ops.count_equal(ops.argmax_rows(z), Ld[s:e, ...])
        loss_total, n_correct = ops.read_scalars([loss_sum, correct])
        return {"accuracy": n_correct / n, "loss": loss_total / n if loss_fn is not None else math.nan}

    def evaluate(self, X: Any, y: Any, batch_size: int = 1024, loss: str | Loss | None = None) -> dict[str, float]:
        """Mean loss and accuracy over ``(X, y)`` in evaluation mode."""
        loss_fn = get_loss(loss) if loss is not None else self.loss
        if loss_fn is not None:
            loss_fn.bind(self.ops)
        saved, self.loss = self.loss, loss_fn
        try:
            Xd = self._device_inputs(X, "evaluate")
            Td, Ld = self._device_targets(y, int(Xd.shape[0]), loss_fn or get_loss("xent"), "evaluate")
            return self._evaluate_device(Xd, Td, Ld, batch_size)
        finally:
            self.loss = saved

    def predict(self, X: Any, batch_size: int = 1024) -> Any:
        """Network outputs z for every row of ``X``, as a NumPy array."""
        Xd = self._device_inputs(X, "predict")
        n = int(Xd.shape[0])
        outs = [to_host(self.forward(Xd[s:min(s + batch_size, n), ...], False)) for s in range(0, n, batch_size)]
        return host_concat(outs)

    def predict_classes(self, X: Any, batch_size: int = 1024) -> Any:
        """The index of the largest output for every row of ``X`` (NumPy int64)."""
        return self.predict(X, batch_size).argmax(axis=1)

    def device_rng_state(self) -> dict[str, Any] | None:
        """The state of the run's device generator, or None if none was drawn from yet."""
        return None if self._device_rng is None else self._device_rng.get_state()

    def device_rng(self) -> Any:
        """The run's generator on the backend (dropout masks), seeded from the host one."""
        if self._device_rng is None:
            self._device_rng = self.ops.device_rng(int(self.rng.integers(2**63 - 1)))
        return self._device_rng
