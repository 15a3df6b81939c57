"""``deepnet info``: versions, backends, GPU, threads."""

from __future__ import annotations

import argparse
import os
import platform

from ..backend import available_backends, get_ops
from ..distributed.launch import launched_size
from ..distributed.threads import available_cores, plan_threads, thread_pools
from .common import versions


def cmd_info(args: argparse.Namespace) -> int:
    print(f"deepnet {versions()['deepnet']} on Python {platform.python_version()} ({platform.machine()}, "
          f"{os.cpu_count()} CPUs)")
    for k, v in versions().items():
        if k not in ("deepnet", "python"):
            print(f"  {k:18s} {v}")
    print("backends:")
    for name, status in available_backends().items():
        print(f"  {name:8s} {status}")
    try:
        ops = get_ops("cupy")
        info = ops.memory.describe()
        print(f"GPU: {info['name']}, {info['total_bytes'] / 2**30:.1f} GiB total, "
              f"{info['free_bytes'] / 2**30:.1f} GiB free; memory pool used {info['pool_used_bytes'] / 2**20:.1f} MiB, "
              f"cached {info['pool_cached_bytes'] / 2**20:.1f} MiB (limit: CUPY_GPU_MEMORY_LIMIT="
              f"{os.environ.get('CUPY_GPU_MEMORY_LIMIT', 'unset')})")
    except Exception:
        print("GPU: none usable (see the cupy backend line above)")
    print(f"DEEPNET_BACKEND={os.environ.get('DEEPNET_BACKEND', '')!s}  DEEPNET_DATA={os.environ.get('DEEPNET_DATA', '')!s}")
    for line in _threads_info():
        print(line)
    return 0


def _threads_info() -> list[str]:
    """What ``deepnet info`` says of threads: this process's, and a data-parallel rank's share."""
    cores = available_cores()
    try:
        plan = plan_threads(ranks=None if launched_size() > 1 else 2)
    except ValueError as err:
        return [f"threads: {err}"]
    pools = thread_pools()
    blas = ("an unknown number of threads (threadpoolctl is not installed)" if pools["blas"] is None
            else f"{pools['blas']} thread{'s' if pools['blas'] != 1 else ''}")
    lines = [f"threads: {cores} core{'s' if cores != 1 else ''} for this process; NumPy's BLAS runs {blas}"]
    if plan.ranks is None:
        lines.append(f"  every process, data-parallel ranks included: {plan.describe('process')}")
    elif launched_size() > 1:
        lines.append(f"  this rank of a data-parallel run: {plan.describe()}")
    else:
        lines.append(f"  a data-parallel rank gets max(1, cores // ranks on this machine): --nproc 2 gives "
                     f"{plan.threads} per rank; override: --threads N or OMP_NUM_THREADS")
    if pools["blas"] is None:
        lines.append("  under a plain mpiexec, NumPy's BLAS keeps the threads it started with unless threadpoolctl "
                     "is installed (pip install threadpoolctl); --nproc sets them before the ranks start")
    return lines
