"""NCCL through CuPy (``cupy.cuda.nccl``): GPU-to-GPU reduction, one GPU per rank.

MPI starts the processes and carries the bootstrap (NCCL's unique id goes from rank 0 to
every rank by MPI broadcast) and the small host values (plain objects, metric sums).  The
array reductions run on a side CUDA stream: a reduction waits, on the device, for what the
compute stream queued before it, and the compute stream waits, on the device, for the
reduction when its result is needed; the host never waits for either.
"""

from __future__ import annotations

from typing import Any

from ..backend import Array
from ..backend.cuda_setup import nccl_install_hint
from .communicator import Communicator, Pending, check_reduce_op, check_root
from .mpi import MPICommunicator


def import_nccl() -> Any:
    """``cupy.cuda.nccl``, or an error naming what is missing."""
    try:
        from cupy.cuda import nccl
    except ImportError as err:
        raise ImportError(f"NCCL training needs CuPy with NCCL ({nccl_install_hint()}, or a CuPy built "
                          f"with NCCL): {err}") from None
    if not getattr(nccl, "available", True):
        raise ImportError(f"NCCL training needs CuPy with NCCL; this CuPy has none ({nccl_install_hint()})")
    return nccl


class _OnDevice(Pending):
    """A reduction queued on the side stream; ``wait`` makes the compute stream wait for it."""

    def __init__(self, cupy: Any, done: Any, after: Any = None) -> None:
        self.cupy, self.done, self.after = cupy, done, after

    def wait(self) -> None:
        if self.done is not None:
            self.cupy.cuda.get_current_stream().wait_event(self.done)
            self.done = None
            if self.after is not None:
                self.after()

    def test(self) -> bool:
        return self.done is None or bool(self.done.done)


class NCCLCommunicator(Communicator):
    """The ranks of an MPI job, reducing CuPy arrays with NCCL (each rank on its own GPU:
    call :func:`deepnet.distributed.use_local_gpu` before building the network)."""

    name = "nccl"

    def __init__(self, bootstrap: MPICommunicator | None = None, nccl: Any = None, cupy: Any = None) -> None:
        self.host = bootstrap if bootstrap is not None else MPICommunicator()
        self.rank, self.size = self.host.rank, self.host.size
        self.local_rank, self.local_size = self.host.local_rank, self.host.local_size
        self.nccl = import_nccl() if nccl is None else nccl
        if cupy is None:
            import cupy
        self.cupy = cupy
        uid = self.nccl.get_unique_id() if self.rank == 0 else None
        uid = self.host.broadcast_object(uid, root=0)
        self.comm = self.nccl.NcclCommunicator(self.size, uid, self.rank)
        self._side = cupy.cuda.Stream(non_blocking=True)
        self.ops: Any = None

    def bind(self, ops: Any) -> NCCLCommunicator:
        if ops.host_arrays or not hasattr(ops.zeros((1,)), "data"):
            raise ValueError(f"NCCLCommunicator reduces CuPy arrays; backend {ops.name!r} has others "
                             "(use MPICommunicator)")
        self.ops = ops
        self.host.bind(ops)
        return self

    def describe(self) -> str:
        return f"NCCL {self.nccl.get_version()}, {self.size} ranks (bootstrap over MPI)"

    def _datatype(self, x: Array) -> int:
        name = self.ops.dtype_name(x.dtype)
        codes = {"float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64", "float16": "NCCL_FLOAT16",
                 "int64": "NCCL_INT64", "int32": "NCCL_INT32"}
        if name not in codes:
            raise ValueError(f"NCCL reduces float16/32/64 and int32/64 arrays, got {name}")
        return getattr(self.nccl, codes[name])

    def _on_side(self) -> Any:
        """The side stream, after the compute stream's queued work."""
        compute = self.cupy.cuda.get_current_stream()
        self._side.wait_event(compute.record())
        return self._side

    def allreduce_start(self, x: Array, op: str = "sum") -> Pending:
        check_reduce_op(op)
        if not x.flags.c_contiguous:
            raise ValueError(f"NCCL reduces contiguous arrays; got one of shape {tuple(x.shape)}")
        side = self._on_side()
        ptr = x.data.ptr
        self.comm.allReduce(ptr, ptr, x.size, self._datatype(x), self.nccl.NCCL_SUM, side.ptr)
        after = None if op == "sum" else (lambda: x.__imul__(1.0 / self.size))
        return _OnDevice(self.cupy, side.record(), after)

    def broadcast(self, x: Array, root: int = 0) -> Array:
        check_root(root, self.size)
        if not x.flags.c_contiguous:
            raise ValueError(f"NCCL broadcasts contiguous arrays; got one of shape {tuple(x.shape)}")
        side = self._on_side()
        self.comm.bcast(x.data.ptr, x.size, self._datatype(x), root, side.ptr)
        self.cupy.cuda.get_current_stream().wait_event(side.record())
        return x

    def barrier(self) -> None:
        self.cupy.cuda.get_current_stream().synchronize()
        self._side.synchronize()
        self.host.barrier()

    def allgather_object(self, obj: Any) -> list[Any]:
        return self.host.allgather_object(obj)

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        return self.host.broadcast_object(obj, root)

    def sum_floats(self, values: list[float]) -> list[float]:
        return self.host.sum_floats(values)

    def abort(self, code: int = 1) -> None:
        try:
            self.comm.abort()
        finally:
            self.host.abort(code)
