"""The settings of one training run (:class:`FitSettings`), written out and checked once."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from typing import Any

from ..backend.precision import check_precision
from ..losses import Loss
from ..optimizers import Optimizer
from .captured import GRAPHS

CHECK_FINITE = ("raise", "skip", "off")


@dataclass(frozen=True)
class FitSettings:
    """Everything :meth:`deepnet.Network.fit` is asked to do, checked once when made.

    Each step (:func:`deepnet.training.train_step`): forward, f and ∂f/∂z from the loss
    (the batch mean of the per-sample loss, so ``batch_size=1`` is the seed's update),
    backward through every layer, one optimizer update.  Batches are gathered from X in
    a new shuffled order each epoch (no copy of X); metrics are read once per epoch.
    ``loss``, ``optimizer``: replace the network's (a name or an object).
    ``check_finite``: ``"raise"`` (stop at a NaN/inf loss, naming step and layer),
    ``"skip"`` (drop the step, halve the learning rate, warn) or ``"off"``.
    ``checkpoint``: a :class:`~deepnet.checkpoint.Checkpointer` or a directory;
    ``resume=True`` continues its latest file (same settings; ``epochs`` may grow),
    ``"if-exists"`` starts fresh when there is none.  ``stream_chunk_rows``: stream X
    from the host in chunks of this many rows (chosen automatically on CuPy when X
    would not fit).  ``graphs``: the step without Python between its operations, captured
    as a CUDA graph and replayed on the GPU, compiled (numba, :mod:`deepnet.training.compiled`)
    on the CPU (``"auto"``: where the backend can and nothing in the run prevents it, saying
    once why not; ``"on"``: one step per graph or compiled call, required on the GPU;
    ``"epoch"``: runs of steps per graph or call; ``"off"``: the plain loop).
    ``precision``: the matrix products' operands in ``"float32"``, ``"tf32"`` or ``"bf16"``
    (float32 master weights and accumulation; docs/gpu.md).
    ``communicator``: train data-parallel over its ranks (:mod:`deepnet.distributed`; each
    rank calls ``fit`` with the same data and settings, trains on its shard of every
    global batch of ranks × ``batch_size`` rows, and the gradients are summed across the
    ranks); ``sync_batchnorm``: BatchNorm normalizes with the global batch's statistics.
    ``rows``: train on these rows of X (host indices: a split without copies);
    ``validation_rows``: validate on these rows of ``validation_data``'s X.
    Ctrl-C (SIGINT) or SIGTERM: the step in progress finishes, ``checkpoint`` (if given)
    writes a checkpoint there, and :class:`~deepnet.errors.TrainingInterrupted` (a
    ``KeyboardInterrupt``) is raised (docs/checkpoints.md); ``late_signal_raises=False``: a
    signal after the last step does not reach its handler when ``fit`` returns (the caller
    reads :attr:`History.late_signal` and saves first).
    The rules in full: docs/training.md, docs/gpu.md and docs/distributed.md.
    """

    epochs: int = 1
    batch_size: int = 32
    loss: str | Loss | None = None
    optimizer: str | Optimizer | None = None
    shuffle: bool = True
    validation_data: tuple[Any, Any] | None = None
    callbacks: tuple[Any, ...] = ()
    verbose: bool = False
    check_finite: str = "raise"
    checkpoint: Any = None
    resume: bool | str = False
    stream_chunk_rows: int | None = None
    graphs: str = "auto"
    precision: str = "float32"
    communicator: Any = None
    sync_batchnorm: bool = False
    rows: Any = None
    validation_rows: Any = None
    late_signal_raises: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "callbacks", tuple(self.callbacks))
        epochs, batch_size, check_finite = self.epochs, self.batch_size, self.check_finite
        if not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"fit: epochs must be a non-negative integer, got {epochs!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"fit: batch_size must be a positive integer, got {batch_size!r}")
        if check_finite not in CHECK_FINITE:
            raise ValueError(f"fit: check_finite must be 'raise', 'skip' or 'off', got {check_finite!r}")
        if self.resume not in (False, True, "if-exists"):
            raise ValueError(f"fit: resume must be False, True or 'if-exists', got {self.resume!r}")
        if self.graphs not in GRAPHS:
            raise ValueError(f"fit: graphs must be one of {', '.join(map(repr, GRAPHS))}, got {self.graphs!r}")
        check_precision(self.precision)
        self._check_run()

    def _check_run(self) -> None:
        """The settings that need one another."""
        if self.resume and self.checkpoint is None:
            raise ValueError("fit: resume needs checkpoint=<directory or Checkpointer>")
        if self.validation_rows is not None and self.validation_data is None:
            raise ValueError("fit: validation_rows needs validation_data=(X, y) to take them from")
        if self.sync_batchnorm not in (True, False):
            raise ValueError(f"fit: sync_batchnorm must be True or False, got {self.sync_batchnorm!r}")
        if self.sync_batchnorm and self.communicator is None:
            raise ValueError("fit: sync_batchnorm=True synchronizes BatchNorm across the processes of a "
                             "data-parallel run; give communicator= (deepnet.distributed)")
        if self.communicator is not None and self.check_finite == "skip":
            raise ValueError("fit: check_finite='skip' decides per process whether to skip a step, and the ranks "
                             "of a data-parallel run must all step; use 'raise' (the ranks' summed totals are "
                             "checked at each epoch's end) or 'off'")

    @classmethod
    def of(cls, settings: FitSettings | None, options: dict[str, Any]) -> FitSettings:
        """``settings``, or settings made of the keyword ``options`` of ``fit`` (one-line errors
        for an unknown option or for both)."""
        names = [f.name for f in fields(cls)]
        for name in options:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise TypeError(f"fit: unknown option {name!r}{hint}; the options are {', '.join(names)}")
        if settings is None:
            return cls(**options)
        if not isinstance(settings, FitSettings):
            raise TypeError(f"fit: settings must be a FitSettings, got {type(settings).__name__}")
        if options:
            raise TypeError(f"fit: give settings= or options ({', '.join(options)}), not both")
        return settings

    def check_for(self, net: Any) -> None:
        """One-line errors for settings this network or its backend cannot train with."""
        ops = net.ops
        if self.check_finite == "skip" and not ops.cheap_sync:
            raise ValueError(f"fit: check_finite='skip' decides on the host at every step, which backend "
                             f"{ops.name!r} avoids (each read waits for the device); use 'raise' (checked at "
                             "each epoch's end, naming the first bad batch) or 'off'")
        if self.precision == "float32":
            return
        if not hasattr(ops.products, "with_precision"):       # None, or a provider of one precision
            raise ValueError(f"fit: precision={self.precision!r} needs a backend whose matrix products can change "
                             f"precision (numpy, cupy); {ops.name!r} computes them in its own namespace")
        if net.dtype_name != "float32":
            raise ValueError(f"fit: precision={self.precision!r} keeps float32 master weights; the network is "
                             f"{net.dtype_name}")
