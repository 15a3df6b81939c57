"""The processes of a run: ``--nproc N`` starts them with mpiexec; each sizes its thread pools."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from ..backend import get_backend, get_ops
from ..distributed import communicator
from ..distributed.launch import launched_rank, launched_size, mpiexec_command
from ..distributed.threads import ThreadPlan, apply_threads, environment_for_ranks, plan_threads, thread_pools
from .common import CLIError, say


def limit_threads(args: argparse.Namespace, plan: ThreadPlan | None = None,
                  local_size: int | None = None) -> ThreadPlan | None:
    """Size this process's thread pools (docs/distributed.md, "Threads per rank"): a rank of a
    data-parallel run gets its share of the cores, ``--threads`` any process its number.
    Again with the communicator's count of the ranks on this machine, where the launcher's
    variables said otherwise.  None: left as the libraries start (one process, no --threads)."""
    if plan is None and launched_size() == 1 and args.threads is None:
        return None
    if plan is not None:
        if plan.ranks is None or local_size is None or local_size == plan.ranks:
            return plan
        plan = plan_threads(ranks=local_size, ranks_from="MPI's count")
    else:
        plan = plan_threads(args.threads)
    for missed in apply_threads(plan):
        if launched_rank() == 0:
            print(f"warning: threads: {missed}", file=sys.stderr, flush=True)
    return plan


@dataclass(frozen=True)
class Ranks:
    """The processes of a run: its communicator (None: one process) and their threads."""

    comm: Any                           #: the data-parallel communicator, or None
    threads: ThreadPlan | None          #: this process's thread pools as sized (None: left as they start)
    pools: list[Any] | None             #: every rank's thread pools (data-parallel runs)


def start_ranks(args: argparse.Namespace) -> Ranks:
    """Each rank of a data-parallel run its share of the cores (before the backend loads numba),
    then the communicator of the processes mpiexec started (each on its own GPU); says both."""
    threads = limit_threads(args)
    ops = get_ops(args.backend or get_backend())
    comm = None if launched_size() == 1 and args.comm == "auto" else communicator(args.comm, ops)
    pools = None
    if comm is not None:
        say(args, f"data-parallel: {comm.describe()}; batch {args.batch_size} per rank, "
                  f"{args.batch_size * comm.size} per step")
        threads = limit_threads(args, threads, comm.local_size)
        pools = comm.allgather_object(thread_pools())
    if threads is not None:
        say(args, f"threads: {threads.describe('rank' if comm is not None else 'process')}")
    return Ranks(comm, threads, pools)


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (or an abbreviation argparse took for it,
    ``--np``, ``--npr``, ``--npro``)."""
    def is_nproc(flag: str) -> bool:
        return len(flag) >= 4 and "--nproc".startswith(flag)

    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif is_nproc(a):
            skip = True
        elif not (a.startswith("--np") and "=" in a and is_nproc(a.split("=", 1)[0])):
            out.append(a)
    return out


def start_processes(args: argparse.Namespace, argv: list[str]) -> int | None:
    """``--nproc N``: run this command as N MPI processes here and return their exit status
    (None: train in this process)."""
    n = getattr(args, "nproc", None)
    if n is None:
        return None
    if n < 1:
        raise CLIError(f"--nproc: expected a positive number of processes, got {n}")
    if launched_size() > 1:
        raise CLIError(f"--nproc starts the processes itself, but this one was started by an MPI launcher "
                       f"with {launched_size()}: drop --nproc (or mpiexec)")
    if n == 1:
        return None
    cmd = mpiexec_command(n, _without_nproc(argv))
    # mpiexec runs in a session of its own, so that Ctrl-C (which the terminal sends to this process
    # group) and SIGTERM reach it once, passed on from here; it passes them to every rank, which
    # stop at the same step and checkpoint.  A hangup (the terminal closed) reaches only this
    # process: it stops the ranks as SIGTERM does, rather than leave them training with no one to see.
    # Each rank gets its share of the cores, read by the libraries as they load (docs/distributed.md)
    env = {**os.environ, **environment_for_ranks(plan_threads(args.threads, ranks=n))}
    try:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    except OSError as err:
        raise CLIError(f"--nproc: could not start {cmd[0]}: {err}") from None

    def pass_on(sig: int, frame: Any) -> None:
        proc.send_signal(signal.SIGTERM if sig == getattr(signal, "SIGHUP", None) else sig)

    signals = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {sig: signal.signal(sig, pass_on) for sig in signals}
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
