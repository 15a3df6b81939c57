"""The batches of a training run, an epoch at a time, without copying the data set.

Shuffled batches are gathered row by row into one reused buffer (``ops.take_rows(...,
out=)``); batches in order are slices.  A run may train on some rows of X only (``rows``,
e.g. a validation split by indices): its batches are always gathered.  Streamed data stays on the host and goes to the
device in chunks of whole batches, the next chunk staged while the current one trains.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from ..backend import Array, Ops, to_device
from ..distributed.shards import check_shards, shard_order, shard_rows


class Batch(NamedTuple):
    """Batch ``index`` of the epoch: rows ``start``..``stop``−1 of its order, inputs ``x``, targets ``t``."""

    index: int
    start: int
    stop: int
    x: Array
    t: Array


class EpochBatches:
    """Batches of ``batch_size`` rows of (X, T) for one epoch at a time.

    ``X`` is on ``ops`` (resident) or, with ``chunk_rows``, on the host (streamed; ``T``
    then too, unless it is on the device already).  ``rows``: host indices of the rows of X
    to train on, in order (``T`` holds their targets); None: all of X.  :meth:`epoch` yields the batches of an
    epoch in the order ``perm`` (host indices, and ``order``, the same on the device; None:
    in order) from batch ``first`` on.
    """

    def __init__(self, ops: Ops, X: Any, T: Any, batch_size: int, chunk_rows: int | None = None,
                 rows: Any = None) -> None:
        self.ops, self.X, self.T, self.batch_size, self.chunk_rows = ops, X, T, batch_size, chunk_rows
        self.rows_host = rows
        self.rows = None if rows is None or chunk_rows else to_device(rows, ops, dtype="int64")
        self.n = int(X.shape[0]) if rows is None else len(rows)
        #: the rows of the run (all ranks together); :attr:`n` are those this process trains on
        self.n_rows = self.n
        self.n_batches = -(-self.n // batch_size)
        self._buffers: tuple[Array, Array] | None = None

    def epoch_order(self, perm: Any) -> tuple[Any, Array]:
        """(host, device) order of this process's rows for an epoch in order ``perm`` of the
        run's rows (None, None: in order)."""
        return perm, None if perm is None else to_device(perm, self.ops, dtype="int64")

    def epoch(self, perm: Any, order: Array, first: int = 0) -> Iterator[Batch]:
        if self.chunk_rows:
            return self._streamed(perm, order, first)
        if order is None:
            return self._in_order(first)
        return self._gathered(order, first)

    def _bounds(self, b: int) -> tuple[int, int]:
        s = b * self.batch_size
        return s, min(s + self.batch_size, self.n)

    def _in_order(self, first: int) -> Iterator[Batch]:
        X, T, rows = self.X, self.T, self.rows
        if rows is not None:
            yield from self._gathered(None, first)
            return
        for b in range(first, self.n_batches):
            s, e = self._bounds(b)
            yield Batch(b, s, e, X[s:e, ...], T[s:e, ...])

    def _gathered(self, perm: Array, first: int) -> Iterator[Batch]:
        """Batches of rows ``perm[s:e]`` (None: in order) of the run's rows, gathered."""
        ops, X, T, rows = self.ops, self.X, self.T, self.rows
        if self._buffers is None:   # one buffer each for the inputs and targets of a batch, reused
            size = min(self.batch_size, self.n)
            self._buffers = (ops.empty((size, *X.shape[1:]), X.dtype), ops.empty((size, *T.shape[1:]), T.dtype))
        xbuf, tbuf = self._buffers
        take, size, n = ops.take_rows, self.batch_size, self.n
        # rows of X in this epoch's order, composed once (not one small index array per step)
        x_order = perm if rows is None else rows if perm is None else take(rows, perm)
        for b in range(first, self.n_batches):
            s = b * size
            e = s + size if s + size <= n else n
            xb, tb = (xbuf, tbuf) if e - s == xbuf.shape[0] else (xbuf[:e - s, ...], tbuf[:e - s, ...])
            x = take(X, x_order[s:e], out=xb)
            yield Batch(b, s, e, x, T[s:e, ...] if perm is None else take(T, perm[s:e], out=tb))

    def _streamed(self, perm: Any, order: Array, first: int) -> Iterator[Batch]:
        """Chunks of ``chunk_rows`` rows gathered on the host and staged to the device."""
        ops, X, T, rows, n = self.ops, self.X, self.T, self.chunk_rows, self.n
        memory = ops.memory
        t_host = not ops.owns(T) or ops.host_arrays

        def stage(lo: int) -> tuple[Any, Any]:
            idx = slice(lo, min(lo + rows, n)) if perm is None else perm[lo:lo + rows]
            x_idx = idx if self.rows_host is None else self.rows_host[idx]
            return memory.stage(X[x_idx]), (memory.stage(T[idx]) if t_host else None)

        start = first * self.batch_size
        lo = start - start % rows
        pending = stage(lo) if lo < n else None
        while pending is not None:
            xs, ts = pending
            hi = min(lo + rows, n)
            pending = stage(hi) if hi < n else None          # overlap the next copy with this chunk
            xs = memory.ready(xs)
            if ts is not None:
                ts = memory.ready(ts)
            elif order is None:
                ts = T[lo:hi, ...]
            else:
                ts = ops.take_rows(T, order[lo:hi])
            for b in range(max(first, lo // self.batch_size), -(-hi // self.batch_size)):
                s, e = self._bounds(b)
                yield Batch(b, s, e, xs[s - lo:e - lo, ...], ts[s - lo:e - lo, ...])
            lo = hi


class ShardedBatches(EpochBatches):
    """Rank ``rank``'s shard of every global batch of ``size`` × ``batch_size`` rows
    (:mod:`deepnet.distributed.shards`): batch b of an epoch is its slice of global batch b."""

    def __init__(self, ops: Ops, X: Any, T: Any, batch_size: int, rank: int, size: int,
                 chunk_rows: int | None = None, rows: Any = None, min_rows: int = 1) -> None:
        super().__init__(ops, X, T, batch_size, chunk_rows, rows)
        check_shards(self.n_rows, batch_size, size, min_rows=min_rows)
        self.rank, self.size = rank, size
        self.n = shard_rows(self.n_rows, batch_size, rank, size)[0]
        self.n_batches = -(-self.n_rows // (size * batch_size))

    def epoch_order(self, perm: Any) -> tuple[Any, Array]:
        local = shard_order(perm, self.n_rows, self.batch_size, self.rank, self.size)
        return local, to_device(local, self.ops, dtype="int64")

    def global_rows(self, b: int) -> int:
        """Rows of global batch ``b`` (all ranks)."""
        g = self.size * self.batch_size
        return min(g, self.n_rows - b * g)
