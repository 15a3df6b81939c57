"""Threads per rank: each process of a data-parallel job on one machine gets its share of
the cores for its BLAS and numba thread pools.

Every library keeps one thread pool per process, sized to all the cores.  N ranks on one
machine then run N pools on the same cores, and the threads wait on each other (2 ranks on
2 cores trained MNIST 11x slower than with one thread each).  A rank's share is
``max(1, cores // local ranks)``: the cores this process may run on (its CPU affinity) over
the ranks its launcher started on this machine (:func:`local_ranks`).

What decides the number, first match wins: ``deepnet train --threads N``; the user's
``OMP_NUM_THREADS`` (``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``, ``NUMBA_NUM_THREADS``
set by the user are kept for their own library); else the share.  The libraries read
their variables when they load: ``--nproc`` puts them in the ranks' environment before they
start; :func:`apply_threads` sets them for libraries not loaded yet and resizes the pools
already running (NumPy's BLAS through threadpoolctl, where installed; numba's).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

from .launch import SIZE_VARIABLES, SLURM_SIZE_VARIABLES

#: the thread-pool sizes the libraries read when they load (OpenBLAS falls back to OMP_NUM_THREADS)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
#: the variables ``deepnet train --nproc`` set for its ranks (not the user's own settings)
SET_BY_DEEPNET = "DEEPNET_THREAD_VARIABLES_SET"
#: launchers' count of this job's ranks on this machine: MPICH/Hydra, Open MPI, MVAPICH
LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity; the machine's count elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _count(value: str | None) -> int | None:
    """A positive whole number from an environment value, or None."""
    value = (value or "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def slurm_tasks_here(environ: Mapping[str, str]) -> int | None:
    """This node's tasks from Slurm's ``SLURM_STEP_TASKS_PER_NODE`` (``"2(x3),1"``: 2 on each
    of the first 3 nodes, 1 on the 4th; ``SLURM_NODEID`` picks the node), or
    ``SLURM_NTASKS_PER_NODE``."""
    spec = environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE")
    if spec:
        per_node: list[int] = []
        for part in spec.split(","):
            tasks, _, repeat = part.partition("(x")
            if _count(tasks) is None or (repeat and _count(repeat.rstrip(")")) is None):
                per_node = []
                break
            per_node += [int(tasks)] * (int(repeat.rstrip(")")) if repeat else 1)
        node = environ.get("SLURM_NODEID", "0").strip()
        if per_node and node.isdigit() and int(node) < len(per_node):
            return per_node[int(node)]
    return _count(environ.get("SLURM_NTASKS_PER_NODE"))


def local_ranks(environ: Mapping[str, str] | None = None) -> tuple[int, str]:
    """(ranks of this job on this machine, the variable that said so).  Without a local
    count, the job's size (all its ranks taken to share this machine); 1 outside a job."""
    environ = os.environ if environ is None else environ
    for var in LOCAL_SIZE_VARIABLES:
        if _count(environ.get(var)) is not None:
            return int(environ[var]), var
    if "SLURM_PROCID" in environ or "SLURM_STEP_ID" in environ:
        here = slurm_tasks_here(environ)
        if here is not None:
            return here, "SLURM_STEP_TASKS_PER_NODE"
    for var in (*SIZE_VARIABLES, *SLURM_SIZE_VARIABLES):
        if _count(environ.get(var)) is not None:
            return int(environ[var]), f"{var}, the job's size"
    return 1, "one process"


@dataclass(frozen=True)
class ThreadPlan:
    """How many threads each pool of this process gets, and why."""

    threads: int
    #: where the number came from, as the run header says it
    source: str
    #: thread variables the user set, kept as they are (their library follows them)
    kept: dict[str, str] = field(default_factory=dict)
    #: the ranks on this machine the cores were shared among (None: the user chose the number)
    ranks: int | None = None

    def environment(self) -> dict[str, str]:
        """The thread variables to set (all but the user's own)."""
        return {var: str(self.threads) for var in THREAD_VARIABLES if var not in self.kept}

    def describe(self, per: str = "rank") -> str:
        """``"1 per rank (2 cores / 2 ranks on this machine (MPI_LOCALNRANKS); ...)"``."""
        kept = "".join(f"; {var}={value} kept" for var, value in self.kept.items() if var != "OMP_NUM_THREADS")
        change = "; --threads N to change" if self.ranks is not None else ""
        return f"{self.threads} per {per} ({self.source}{kept}{change})"


def _user_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The thread variables set in ``environ`` by the user (not by ``--nproc`` for its ranks)."""
    ours = set(environ.get(SET_BY_DEEPNET, "").split(","))
    return {var: environ[var] for var in THREAD_VARIABLES if environ.get(var, "").strip() and var not in ours}


def _first_count(var: str, value: str) -> int:
    """OMP_NUM_THREADS's number (its first, for a nested list like ``4,2``); bad values refused."""
    n = _count(value.split(",")[0])
    if n is None:
        raise ValueError(f"{var}: expected a positive whole number of threads, got {value!r}")
    return n


def plan_threads(requested: int | None = None, ranks: int | None = None, environ: Mapping[str, str] | None = None,
                 cores: int | None = None, ranks_from: str = "--nproc") -> ThreadPlan:
    """The threads of each rank: ``requested`` (``--threads``) if given; else the user's
    ``OMP_NUM_THREADS``; else ``max(1, cores // ranks)`` (``ranks``: the ranks on this
    machine, as ``ranks_from`` says, default :func:`local_ranks`; ``cores``: default
    :func:`available_cores`)."""
    environ = os.environ if environ is None else environ
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"--threads: expected a positive number of threads per process, got {requested!r}")
        return ThreadPlan(requested, f"--threads {requested}")
    user = _user_settings(environ)
    for var, value in user.items():
        _first_count(var, value)
    if "OMP_NUM_THREADS" in user:
        n = _first_count("OMP_NUM_THREADS", user["OMP_NUM_THREADS"])
        return ThreadPlan(n, f"OMP_NUM_THREADS={user['OMP_NUM_THREADS']} in the environment", user)
    cores = available_cores() if cores is None else cores
    if ranks is None:
        ranks, ranks_from = local_ranks(environ)
    share = max(1, cores // max(1, ranks))
    return ThreadPlan(share, f"{cores} core{'s' if cores != 1 else ''} / {ranks} rank{'s' if ranks != 1 else ''} "
                             f"on this machine ({ranks_from})", user, ranks)


def environment_for_ranks(plan: ThreadPlan) -> dict[str, str]:
    """What ``--nproc`` adds to its ranks' environment: the plan's variables, and which of
    them deepnet set (so the ranks do not take them for the user's)."""
    env = plan.environment()
    return {**env, SET_BY_DEEPNET: ",".join(env)}


def apply_threads(plan: ThreadPlan) -> list[str]:
    """Size this process's thread pools as ``plan`` says: the variables for libraries that
    load later, NumPy's BLAS (threadpoolctl), numba.  Returns what could not be sized (empty:
    all of it)."""
    env = plan.environment()
    blas_at_load = _blas_threads_read(os.environ)
    ours = {var for var in os.environ.get(SET_BY_DEEPNET, "").split(",") if var} | set(env)
    os.environ.update({**env, SET_BY_DEEPNET: ",".join(sorted(ours))})     # not the user's, to a later plan
    missed: list[str] = []
    if "OPENBLAS_NUM_THREADS" in env or "MKL_NUM_THREADS" in env:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            if "numpy" in sys.modules and blas_at_load > plan.threads:
                missed.append(f"NumPy's BLAS, loaded already, keeps its {blas_at_load} threads (pip install "
                              "threadpoolctl, or set OMP_NUM_THREADS before starting)")
        else:
            threadpool_limits(limits=plan.threads, user_api="blas")
    if "NUMBA_NUM_THREADS" in env and "numba" in sys.modules:
        _numba_threads(plan.threads)
    return missed


def _blas_threads_read(environ: Mapping[str, str]) -> int:
    """The threads OpenBLAS takes from ``environ`` when it loads (all the cores if unset)."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        n = _count(environ.get(var, "").split(",")[0])
        if n is not None:
            return n
    return available_cores()


def _numba_threads(n: int) -> None:
    """numba's pool to ``n`` threads (at most the threads it started with)."""
    import numba
    if numba.config.THREADING_LAYER == "default":       # deepnet's choice (backend/numba_kernels.py)
        numba.config.THREADING_LAYER = "workqueue"
    numba.set_num_threads(max(1, min(n, int(numba.config.NUMBA_NUM_THREADS))))


def thread_pools() -> dict[str, Any]:
    """The threads this process's pools run now: {"blas": n or None (unknown without
    threadpoolctl), "numba": n or None (not loaded)}."""
    out: dict[str, Any] = {"blas": None, "numba": None}
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        pass
    else:
        sizes = [int(p["num_threads"]) for p in threadpool_info() if p.get("user_api") == "blas"]
        out["blas"] = max(sizes) if sizes else None
    if "numba" in sys.modules:
        out["numba"] = int(sys.modules["numba"].get_num_threads())
    return out
