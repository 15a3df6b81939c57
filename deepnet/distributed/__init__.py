"""Data-parallel training across processes: MPI (mpi4py) and NCCL (CuPy).

:class:`Communicator` is what training asks of an engine (allreduce, broadcast, barrier);
:func:`communicator` gives this process's (MPI when launched by ``mpiexec``, else a job of
one).  ``Network.fit(..., communicator=comm)`` trains each rank on its shard of every global
batch and sums the gradients across the ranks; docs/distributed.md tells the whole story.
"""

from .communicator import DEFAULT_BUCKET_BYTES, Communicator, LocalCommunicator, Pending
from .launch import communicator, launched_size, use_local_gpu
from .mpi import MPICommunicator
from .nccl import NCCLCommunicator

__all__ = ["DEFAULT_BUCKET_BYTES", "Communicator", "LocalCommunicator", "MPICommunicator", "NCCLCommunicator",
           "Pending", "communicator", "launched_size", "use_local_gpu"]
