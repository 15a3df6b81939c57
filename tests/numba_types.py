"""What numba typed a kernel's values as (the tests that keep float32 kernels free of float64)."""

from __future__ import annotations

from typing import Any


def compiled_types(fn: Any, *args: Any) -> tuple[set[str], Any]:
    """(the types of every value, the signature) of ``fn`` compiled afresh for ``args`` (uncached,
    so numba keeps its type annotations)."""
    import numba

    compiled = numba.njit(error_model="numpy")(fn)
    compiled(*args)
    (cres,) = compiled.overloads.values()
    return {str(t) for t in cres.type_annotation.typemap.values()}, cres.signature
