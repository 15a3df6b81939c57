"""The communicator interface: what data-parallel training asks of a reduction engine.

A :class:`Communicator` joins ``size`` processes (ranks ``0``..``size``−1).  Training uses
four things from it: ``allreduce`` (Σ or mean of an array over the ranks, in place),
``broadcast`` (rank ``root``'s array to every rank, in place), ``barrier``, and a few small
host-side helpers (plain Python objects and sums of metrics).  :meth:`bind` hands it the
backend whose arrays it will reduce; an engine picks its transport from what the backend
says it can do (host arrays, device arrays an MPI library may read, or staging).

Implementations: :class:`LocalCommunicator` (one process: every operation is the identity),
:class:`~deepnet.distributed.mpi.MPICommunicator` (mpi4py) and
:class:`~deepnet.distributed.nccl.NCCLCommunicator` (NCCL through CuPy, one GPU per rank).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ..backend import Array

REDUCE_OPS = ("sum", "mean")
#: gradients are reduced in buckets of at most this many bytes (PyTorch DDP's default)
DEFAULT_BUCKET_BYTES = 25 << 20


def check_reduce_op(op: str) -> None:
    if op not in REDUCE_OPS:
        raise ValueError(f"allreduce: op must be 'sum' or 'mean', got {op!r}")


#: seconds a failing rank waits, its output flushed, before it aborts the job: the launcher
#: forwards each rank's output through pipes, and an abort can cut off what it has not read yet
ABORT_GRACE_S = 0.5


def flush_before_abort() -> None:
    """Flush this process's output and give the launcher time to forward it."""
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(ABORT_GRACE_S)


def check_root(root: Any, size: int) -> None:
    if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < size:
        raise ValueError(f"broadcast: root must be a rank in 0..{size - 1}, got {root!r}")


class Pending:
    """A started reduction; :meth:`wait` returns when its array holds the result."""

    def wait(self) -> None:
        """Block until the reduction is complete (done already: returns at once)."""

    def test(self) -> bool:
        """Whether it is complete (lets the engine make progress; never blocks)."""
        return True


class Communicator:
    """``size`` processes that reduce and broadcast arrays together (rank :attr:`rank`)."""

    #: the engine's name, as ``deepnet train --comm`` spells it
    name = "local"
    rank: int = 0
    size: int = 1
    #: the rank of this process among those on its machine (chooses its GPU), and how many
    #: ranks that machine runs (their share of its cores)
    local_rank: int = 0
    local_size: int = 1
    #: data-parallel training reduces the gradients in buckets of at most this many bytes
    bucket_bytes: int = DEFAULT_BUCKET_BYTES
    #: and starts each bucket while backward goes on below it (False: all after backward)
    overlap: bool = False
    #: how arrays travel, for engines with several ways (MPI: "host", "cuda-aware" or
    #: "staged", chosen when bound to a backend); None: the engine has one
    transport: str | None = None

    def configure(self, bucket_bytes: int | None = None, overlap: bool | None = None) -> Communicator:
        """How data-parallel training reduces gradients with this communicator; returns self."""
        if bucket_bytes is not None:
            if not isinstance(bucket_bytes, int) or isinstance(bucket_bytes, bool) or bucket_bytes < 1:
                raise ValueError(f"configure: bucket_bytes must be a positive integer, got {bucket_bytes!r}")
            self.bucket_bytes = bucket_bytes
        if overlap is not None:
            if overlap not in (True, False):
                raise ValueError(f"configure: overlap must be True or False, got {overlap!r}")
            self.overlap = bool(overlap)
        return self

    def bind(self, ops: Any) -> Communicator:
        """Use ``ops``' arrays from now on; returns self."""
        self.ops = ops
        return self

    # ------------------------------------------------------------------ arrays
    def allreduce(self, x: Array, op: str = "sum") -> Array:
        """x ← Σ_ranks x (``op="mean"``: divided by :attr:`size`), in place on every rank."""
        self.allreduce_start(x, op).wait()
        return x

    def allreduce_start(self, x: Array, op: str = "sum") -> Pending:
        """Start :meth:`allreduce` of ``x``; the result is there after ``wait()``.  ``x`` must
        not be read or written until then."""
        raise NotImplementedError

    def broadcast(self, x: Array, root: int = 0) -> Array:
        """x ← rank ``root``'s x, in place on every rank."""
        raise NotImplementedError

    def barrier(self) -> None:
        """Return once every rank has called it."""
        raise NotImplementedError

    # ------------------------------------------------------------------ host values
    def allgather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (plain Python data), in rank order, on every rank."""
        raise NotImplementedError

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        """Rank ``root``'s ``obj`` on every rank."""
        raise NotImplementedError

    def sum_floats(self, values: list[float]) -> list[float]:
        """Σ over the ranks of each of a few host numbers (epoch metrics)."""
        raise NotImplementedError

    def abort(self, code: int = 1) -> None:
        """End every rank of the job now (a failure on one rank must not leave the others
        waiting in a collective)."""
        sys.exit(code)

    def describe(self) -> str:
        """One line for logs: engine, size and transport."""
        return f"{self.name}, {self.size} rank{'s' if self.size != 1 else ''}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


class LocalCommunicator(Communicator):
    """One process: reductions and broadcasts leave the array as it is."""

    name = "local"

    def allreduce_start(self, x: Array, op: str = "sum") -> Pending:
        check_reduce_op(op)
        return Pending()

    def broadcast(self, x: Array, root: int = 0) -> Array:
        check_root(root, 1)
        return x

    def barrier(self) -> None:
        pass

    def allgather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        return obj

    def sum_floats(self, values: list[float]) -> list[float]:
        return [float(v) for v in values]
