"""A stand-in for ``cupy.cuda.nccl`` with its real signatures, reducing over MPI: the NCCL
communicator's code path on the CuPy-shaped backend (whose device addresses are host memory),
where no GPU is at hand.

``get_unique_id()`` returns the 128 bytes of an ``ncclUniqueId`` as ``bytes``, and
``NcclCommunicator(ndev, commId, rank)`` takes them (CuPy 14: ``NcclCommunicator(int ndev, bytes
commId, int rank, NcclConfig config=None)``; CuPy 13 and older used a tuple of 128 integers);
``allReduce(sendbuf, recvbuf, count, datatype, op, stream)`` and ``bcast(buff, count, datatype,
root, stream)`` take raw addresses and integers as CuPy's do (cupy_backends/cuda/libs/nccl.pyx);
the constants are nccl.h's.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

available = True
# ncclDataType_t and ncclRedOp_t (nccl.h)
NCCL_INT8, NCCL_UINT8, NCCL_INT32, NCCL_UINT32, NCCL_INT64, NCCL_UINT64 = 0, 1, 2, 3, 4, 5
NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64 = 6, 7, 8
NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN = 0, 1, 2, 3
_DTYPES = {NCCL_INT32: np.int32, NCCL_INT64: np.int64, NCCL_FLOAT16: np.float16, NCCL_FLOAT32: np.float32,
           NCCL_FLOAT64: np.float64}
#: every call made, as (name, count, datatype, stream address)
calls: list[tuple[str, int, int, int]] = []


def get_version() -> int:
    return 22703


#: NCCL_UNIQUE_ID_BYTES (nccl.h)
UNIQUE_ID_BYTES = 128


def get_unique_id() -> bytes:
    """A fresh unique id: ``bytes`` of length 128, as CuPy 14 returns it."""
    return np.random.default_rng().bytes(UNIQUE_ID_BYTES)


def _at(ptr: int, count: int, datatype: int) -> np.ndarray:
    dtype = np.dtype(_DTYPES[datatype])
    return np.frombuffer((ctypes.c_char * (count * dtype.itemsize)).from_address(ptr), dtype=dtype, count=count)


class NcclCommunicator:
    def __init__(self, ndev: int, commId: bytes, rank: int) -> None:   # noqa: N803  (CuPy's names)
        from mpi4py import MPI
        if not isinstance(commId, bytes):     # Cython's check of the typed argument ``bytes commId``
            raise TypeError(f"Argument 'commId' has incorrect type (expected bytes, got {type(commId).__name__})")
        if len(commId) != UNIQUE_ID_BYTES:
            raise ValueError(f"commId must be the {UNIQUE_ID_BYTES} bytes get_unique_id() returns, "
                             f"got {len(commId)}")
        self._MPI, self._comm = MPI, MPI.COMM_WORLD
        if (ndev, rank) != (self._comm.Get_size(), self._comm.Get_rank()):
            raise ValueError(f"NcclCommunicator({ndev}, ..., {rank}) in an MPI job of {self._comm.Get_size()}")
        ids = self._comm.allgather(commId)
        if any(i != ids[0] for i in ids):
            raise RuntimeError("ncclInvalidUsage: the ranks were given different unique ids")

    def allReduce(self, sendbuf: int, recvbuf: int, count: int, datatype: int, op: int, stream: int) -> None:  # noqa: N802
        if op != NCCL_SUM:
            raise NotImplementedError("the fake reduces with NCCL_SUM only")
        calls.append(("allReduce", count, datatype, stream))
        send, recv = _at(sendbuf, count, datatype), _at(recvbuf, count, datatype)
        out = np.empty_like(send)
        self._comm.Allreduce(np.ascontiguousarray(send), out, op=self._MPI.SUM)
        recv[...] = out

    def bcast(self, buff: int, count: int, datatype: int, root: int, stream: int) -> None:
        calls.append(("bcast", count, datatype, stream))
        buf = _at(buff, count, datatype)
        tmp = np.array(buf)
        self._comm.Bcast(tmp, root=root)
        buf[...] = tmp

    def abort(self) -> None:
        pass

    def destroy(self) -> None:
        pass


def as_module() -> Any:
    """This module, as ``NCCLCommunicator(nccl=...)`` takes it."""
    import sys
    return sys.modules[__name__]
