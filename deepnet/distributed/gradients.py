"""Every ∂f/∂θ of a model in one flat buffer, summed over the ranks in buckets.

The gradients of all parameters are views into one flat array, laid out from the top layer
down (the order backward produces them), so reducing them costs no packing: a bucket is
a slice of the buffer, reduced by one ``allreduce``.  Buckets hold up to ``bucket_bytes``
(one bucket, hence one call per step, unless the model is large).  With ``overlap`` a bucket
is started as soon as backward has finished its lowest layer, while the layers below are
still computing (Horovod's tensor fusion, PyTorch DDP's buckets), and every bucket is waited
for before the update.  A parameter whose memory layout a view cannot match (rare: a
backend's own layout) is copied in and out of the buffer instead.
"""

from __future__ import annotations

from typing import Any

from ..backend import Array
from .communicator import DEFAULT_BUCKET_BYTES, Communicator, Pending


class _Bucket:
    """Slice ``lo:hi`` of the flat buffer: the gradients of ``params``, complete once backward
    has finished layer ``lowest`` (the lowest layer they belong to)."""

    def __init__(self, lo: int, hi: int, lowest: int, params: list[tuple[Any, Array | None, int, int]]) -> None:
        self.lo, self.hi, self.lowest, self.params = lo, hi, lowest, params


class GradientBuckets:
    """The model's gradients in one flat buffer of ``dtype`` on ``ops``, reduced by ``comm``.

    ``layers``: the model's layers in order (their parameters are taken top layer first).
    Each step: :meth:`begin` before backward, :meth:`layer_done` after each layer's backward
    (``overlap`` only), :meth:`finish` before the update (Σ over the ranks, in place)."""

    def __init__(self, comm: Communicator, ops: Any, layers: list[Any], dtype: Any,
                 bucket_bytes: int = DEFAULT_BUCKET_BYTES, overlap: bool = False) -> None:
        if not isinstance(bucket_bytes, int) or bucket_bytes < 1:
            raise ValueError(f"bucket_bytes must be a positive integer, got {bucket_bytes!r}")
        self.comm, self.ops, self.overlap = comm, ops, bool(overlap)
        entries = [(i, p) for i in reversed(range(len(layers))) for p in layers[i].parameters().values()]
        total = sum(_size(p) for _, p in entries)
        self.flat = ops.zeros((max(total, 1),), dtype)
        per_bucket = max(1, bucket_bytes // (int(ops.xp.finfo(self.flat.dtype).bits) // 8))   # Array API: no .itemsize
        self.buckets: list[_Bucket] = []
        lo = o = 0
        params: list[tuple[Any, Array | None, int, int]] = []
        lowest = None
        for i, p in entries:
            n = _size(p)
            if params and o + n - lo > per_bucket:
                self.buckets.append(_Bucket(lo, o, lowest, params))
                lo, params = o, []
            view = self._view(o, n, p)
            if view is not None:
                p.share_grad(view)
            params.append((p, view, o, n))
            lowest = i
            o += n
        if params:
            self.buckets.append(_Bucket(lo, o, lowest, params))
        self.n_values = total
        self._pending: list[Pending] = []
        self._next = 0

    def _view(self, o: int, n: int, p: Any) -> Array | None:
        """A view of flat[o:o+n] laid out like θ (C order, or transposed for a 2-D θ kept in
        Fortran order), or None when no view matches."""
        xp, ops, shape = self.ops.xp, self.ops, tuple(p.shape)
        part = self.flat[o:o + n]
        view = xp.reshape(part, shape)
        if ops.same_layout(view, p.data):
            return view
        if len(shape) == 2:
            view = xp.matrix_transpose(xp.reshape(part, shape[::-1]))
            if ops.same_layout(view, p.data):
                return view
        return None

    def begin(self) -> None:
        """Before backward: no bucket started yet."""
        self._pending, self._next = [], 0

    def layer_done(self, index: int) -> None:
        """Backward finished layer ``index``: start every bucket now complete (layers run top
        down, so buckets complete in order), and let started ones progress."""
        buckets = self.buckets
        while self._next < len(buckets) and buckets[self._next].lowest >= index:
            self._start(buckets[self._next])
            self._next += 1
        for pending in self._pending:
            pending.test()

    def _start(self, bucket: _Bucket) -> None:
        flat = self.flat
        for j, (p, view, o, n) in enumerate(bucket.params):
            g = p.grad                    # zeroed here if backward wrote none (lazy zeroing)
            if view is not None and p.grad_buffer is not view:     # θ was replaced since: a view like it
                view = self._view(o, n, p)
                bucket.params[j] = (p, view, o, n)
                if view is not None:
                    view[...] = g
                    p.share_grad(view)
            if view is None:                         # no view has θ's layout: copied in, and out in finish
                flat[o:o + n] = self.ops.xp.reshape(g, (n,))
        self._pending.append(self.comm.allreduce_start(flat[bucket.lo:bucket.hi], "sum"))

    def finish(self) -> None:
        """Start the buckets not started yet and wait for all: every ∂f/∂θ is then Σ over the ranks."""
        while self._next < len(self.buckets):
            self._start(self.buckets[self._next])
            self._next += 1
        for pending in self._pending:
            pending.wait()
        self._pending = []
        xp = self.ops.xp
        for bucket in self.buckets:
            for p, view, o, n in bucket.params:
                if view is None:
                    p.grad = xp.reshape(self.flat[o:o + n], tuple(p.shape))

    def broadcast_parameters(self, params: list[Any], root: int = 0) -> None:
        """θ ← rank ``root``'s θ for every parameter, through the flat buffer (one broadcast)."""
        xp, flat, o = self.ops.xp, self.flat, 0
        spans = []
        for p in params:
            n = _size(p)
            flat[o:o + n] = xp.reshape(p.data, (n,))
            spans.append((p, o, n))
            o += n
        self.comm.broadcast(flat[:o] if o else flat, root)
        for p, o, n in spans:
            p.data[...] = xp.reshape(flat[o:o + n], tuple(p.shape))


def _size(p: Any) -> int:
    n = 1
    for d in p.shape:
        n *= int(d)
    return n
