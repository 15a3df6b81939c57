"""Which rows each rank trains on: a disjoint, deterministic shard of every global batch.

With ``size`` ranks and ``batch_size`` rows per rank, global batch b is rows
``order[b·G:(b+1)·G]`` of the epoch's order (G = size·batch_size), the batch one process
would train with batch size G; rank r takes its r-th slice of ``batch_size`` rows.  The
last, shorter global batch of m rows is split as evenly as possible: rank r takes rows
⌊r·m/size⌋..⌊(r+1)·m/size⌋−1 of it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def check_shards(n: int, batch_size: int, size: int, where: str = "fit", min_rows: int = 1) -> None:
    """Refuse a split that would leave a rank fewer than ``min_rows`` rows in the last global
    batch (2 with BatchNorm on each rank's own rows: a variance needs two values)."""
    m = n % (size * batch_size)
    if 0 < m < size * min_rows:
        need = size * min_rows
        each = "one" if min_rows == 1 else f"{min_rows} (a BatchNorm layer normalizes each rank's own rows)"
        raise ValueError(f"{where}: with {size} ranks and batch_size {batch_size}, the last global batch has "
                         f"{m} row{'s' if m != 1 else ''} of {n}, too few for the ranks (each needs {each}); "
                         f"choose a batch_size for which {n} mod ({size} × batch_size) is 0 or at least {need}")


def shard_order(order: Any, n: int, batch_size: int, rank: int, size: int) -> np.ndarray:
    """This rank's rows (int64 host indices into the run's rows), batch after batch, for an
    epoch in ``order`` (host indices; None: in order)."""
    order = np.arange(n, dtype=np.int64) if order is None else np.asarray(order, dtype=np.int64)
    g = size * batch_size
    full = n // g
    head = order[:full * g].reshape(full, size, batch_size)[:, rank, :].reshape(-1)
    last = order[full * g:]
    m = len(last)
    tail = last[rank * m // size:(rank + 1) * m // size]
    return np.concatenate([head, tail])


def shard_rows(n: int, batch_size: int, rank: int, size: int) -> tuple[int, int]:
    """(rows of this rank in an epoch, rows of its last batch)."""
    g = size * batch_size
    full, m = divmod(n, g)
    last = (rank + 1) * m // size - rank * m // size
    return full * batch_size + last, (last if m else batch_size)


def shard_of(n: int, rank: int, size: int) -> tuple[int, int]:
    """(start, stop) of rank ``rank``'s contiguous share of ``n`` rows (evaluation)."""
    return rank * n // size, (rank + 1) * n // size
