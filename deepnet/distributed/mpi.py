"""MPI through mpi4py: the launcher's communicator, for host arrays and (CUDA-aware or
staged) GPU arrays.

Transports, chosen when the communicator is bound to a backend (:meth:`MPICommunicator.bind`):

* ``host``: the backend's arrays are NumPy arrays in host memory; MPI reads and writes them.
* ``cuda-aware``: GPU arrays handed to a CUDA-aware MPI library as they are (mpi4py passes
  their ``__cuda_array_interface__``), after the compute stream has finished writing them.
* ``staged``: every other backend: each array is copied into a host buffer (page-locked on
  CuPy), reduced there and copied back.

CUDA-awareness cannot be asked of every MPI library safely (a library without it crashes on
a device pointer), so ``cuda_aware="auto"`` believes what the launch environment says:
``DEEPNET_MPI_CUDA_AWARE=1``, Open MPI's ``OMPI_MCA_opal_cuda_support=true``, MVAPICH2's
``MV2_USE_CUDA=1`` or MPICH's ``MPIR_CVAR_ENABLE_GPU=1``; otherwise it stages.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..backend import Array
from .communicator import Communicator, Pending, check_reduce_op, check_root, flush_before_abort


def import_mpi() -> Any:
    """``mpi4py.MPI``, or an error saying how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise ImportError(f"distributed training over MPI needs mpi4py and an MPI library "
                          f"(pip install 'deepnet[mpi]'): {err}") from None
    return MPI


def cuda_aware_from_environment(library_version: str = "") -> bool:
    """Whether the launch environment says the MPI library reads GPU memory."""
    env = os.environ
    if env.get("DEEPNET_MPI_CUDA_AWARE") is not None:
        return env["DEEPNET_MPI_CUDA_AWARE"].strip().lower() in ("1", "true", "yes")
    if "Open MPI" in library_version and env.get("OMPI_MCA_opal_cuda_support", "").lower() in ("1", "true"):
        return True
    return env.get("MV2_USE_CUDA") == "1" or env.get("MPIR_CVAR_ENABLE_GPU") == "1"


class _Done(Pending):
    """A reduction that finishes with an MPI request (and, when staged, a copy back)."""

    def __init__(self, request: Any, finish: Any = None) -> None:
        self.request, self.finish = request, finish

    def wait(self) -> None:
        if self.request is not None:
            self.request.Wait()
            self.request = None
            if self.finish is not None:
                self.finish()
                self.finish = None

    def test(self) -> bool:
        if self.request is None:
            return True
        if self.request.Test():
            self.wait()
            return True
        return False


class MPICommunicator(Communicator):
    """The ranks of an MPI communicator (``comm``: an mpi4py communicator; default
    ``MPI.COMM_WORLD``).  ``cuda_aware``: True, False or ``"auto"`` (see the module)."""

    name = "mpi"

    def __init__(self, comm: Any = None, cuda_aware: bool | str = "auto") -> None:
        MPI = import_mpi()
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = int(self.comm.Get_rank()), int(self.comm.Get_size())
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = int(node.Get_rank()), int(node.Get_size())
        node.Free()
        if cuda_aware not in (True, False, "auto"):
            raise ValueError(f"MPICommunicator: cuda_aware must be True, False or 'auto', got {cuda_aware!r}")
        self.cuda_aware = (cuda_aware_from_environment(MPI.Get_library_version())
                           if cuda_aware == "auto" else bool(cuda_aware))
        self.transport = "host"
        self.ops: Any = None
        self._free: dict[tuple[int, str], list[np.ndarray]] = {}    # staging buffers not in use

    def bind(self, ops: Any) -> MPICommunicator:
        """Choose the transport for ``ops``' arrays (module docstring)."""
        self.ops = ops
        if ops.host_arrays:
            self.transport = "host"
        elif self.cuda_aware and hasattr(ops.zeros((1,)), "__cuda_array_interface__"):
            self.transport = "cuda-aware"
        else:
            self.transport = "staged"
        return self

    def describe(self) -> str:
        library = " ".join(self._MPI.Get_library_version().splitlines()[0].split())
        return f"MPI ({library}), {self.size} rank{'s' if self.size != 1 else ''}, {self.transport}"

    # ------------------------------------------------------------------ arrays
    def _buffer(self, x: Array) -> np.ndarray:
        """A host buffer of x's size and dtype from the pool (page-locked where the backend can)."""
        n, dtype = int(x.size), np.dtype(self.ops.dtype_name(x.dtype))
        free = self._free.get((n, dtype.str))
        return free.pop() if free else self.ops.memory.host_buffer(n, dtype)

    def _release(self, buf: np.ndarray) -> None:
        self._free.setdefault((int(buf.size), buf.dtype.str), []).append(buf)

    def _direct(self, x: Array) -> Any:
        """``x`` as MPI may read it in place (host or CUDA-aware transport)."""
        if self.transport == "cuda-aware":
            self.ops.memory.synchronize()        # the kernels writing x must be done before MPI reads it
        elif not x.flags.c_contiguous:
            raise ValueError(f"MPI reduces contiguous arrays; got one of shape {tuple(x.shape)} with strides "
                             f"{x.strides}")
        return x

    def allreduce_start(self, x: Array, op: str = "sum") -> Pending:
        check_reduce_op(op)
        MPI = self._MPI
        if self.transport != "staged":
            req = self.comm.Iallreduce(MPI.IN_PLACE, self._direct(x), op=MPI.SUM)
            return _Done(req, None if op == "sum" else lambda: self._divide(x))
        buf = self._buffer(x)
        self.ops.memory.download(x, buf)
        req = self.comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM)

        def finish() -> None:
            if op == "mean":
                buf[...] /= self.size
            self.ops.memory.upload(buf, x)
            self._release(buf)

        return _Done(req, finish)

    def _divide(self, x: Array) -> None:
        x *= 1.0 / self.size

    def broadcast(self, x: Array, root: int = 0) -> Array:
        check_root(root, self.size)
        if self.transport != "staged":
            self.comm.Bcast(self._direct(x), root=root)
            return x
        buf = self._buffer(x)
        if self.rank == root:
            self.ops.memory.download(x, buf)
        self.comm.Bcast(buf, root=root)
        if self.rank != root:
            self.ops.memory.upload(buf, x)
        self._release(buf)
        return x

    def barrier(self) -> None:
        self.comm.Barrier()

    # ------------------------------------------------------------------ host values
    def allgather_object(self, obj: Any) -> list[Any]:
        return list(self.comm.allgather(obj))

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        check_root(root, self.size)
        return self.comm.bcast(obj, root=root)

    def sum_floats(self, values: list[float]) -> list[float]:
        buf = np.asarray(values, dtype=np.float64)
        self.comm.Allreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)
        return [float(v) for v in buf]

    def abort(self, code: int = 1) -> None:
        flush_before_abort()
        self.comm.Abort(code)
