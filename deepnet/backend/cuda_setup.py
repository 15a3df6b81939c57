"""What the installed CuPy needs from its surroundings, found without a GPU: the CUDA major
version its wheel was built for (from the distribution's name, ``cupy-cuda13x`` -> 13), the
packages that match it, and a ``CUPY_GPU_MEMORY_LIMIT`` CuPy can read.
"""

from __future__ import annotations

import os
import re
from importlib import metadata

from ..errors import BackendError

MEMORY_LIMIT_VARIABLE = "CUPY_GPU_MEMORY_LIMIT"


def cupy_cuda_majors() -> list[int]:
    """The CUDA major versions of the installed ``cupy-cudaNNx`` wheels (sorted; empty for none,
    or for a CuPy built from source, whose distribution is plain ``cupy``)."""
    try:
        dists = metadata.packages_distributions().get("cupy", [])
    except Exception:        # a broken distribution's metadata: no answer rather than a crash
        return []
    found = {int(m.group(1)) for name in dists if (m := re.fullmatch(r"cupy-cuda(\d+)x", name.lower()))}
    return sorted(found)


def _for_each_major(template: str) -> str:
    """``template`` (with ``{major}``) for the installed CuPy's CUDA, or for both 12 and 13 when it
    is not known (none, several, or a source build)."""
    majors = cupy_cuda_majors()
    if len(majors) == 1:
        return template.format(major=majors[0])
    return " (CUDA 12) or ".join(template.format(major=m) for m in (12, 13)) + " (CUDA 13)"


def nccl_install_hint() -> str:
    """How to install NCCL for the installed CuPy: ``pip install nvidia-nccl-cu13`` on CUDA 13."""
    return "pip install " + _for_each_major("nvidia-nccl-cu{major}")


def cuda_libraries_hint() -> str:
    """How to install the CUDA libraries (cuBLAS, NVRTC, ...) the installed CuPy loads."""
    return "pip install " + _for_each_major("'cupy-cuda{major}x[ctk]'")


def check_memory_limit(value: str | None = None) -> None:
    """Refuse a ``CUPY_GPU_MEMORY_LIMIT`` (``value``, else the environment's) that CuPy cannot
    read: it takes a whole number of bytes or a percentage of the GPU's memory ("50%"), and a
    value such as "4G" makes it raise at the first allocation."""
    if value is None:
        value = os.environ.get(MEMORY_LIMIT_VARIABLE)
    if value is None:
        return
    try:
        if value.endswith("%"):
            float(value[:-1])
        else:
            int(value)
        return
    except ValueError:
        pass
    raise BackendError(f"{MEMORY_LIMIT_VARIABLE}={value!r} is not a limit CuPy can read: give a whole number of "
                       "bytes (4 GiB: 4294967296) or a percentage of the GPU's memory (50%)")
