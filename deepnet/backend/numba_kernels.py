"""One-pass optimizer updates and the Philox generator for the NumPy backend, compiled with
numba (optional).

The pure-NumPy updates in ``numpy_ops`` need 4–12 passes over each parameter; these do
one, vectorized, and split large parameters over the CPU's threads.  They compute the
same formulas element by element in the parameter's dtype: the caller passes every scalar,
constants such as 1 and ½ included, in that dtype, because a Python literal in the loop
would promote a float32 loop to float64.  NumPy's error model, so no per-element
zero-division check blocks SIMD; no fastmath.  Compiled lazily on first use and cached on disk
in a per-user folder (``cache_root``), never inside the installed package: files there are not
in the wheel's record, so ``pip uninstall`` would leave them and turn ``deepnet`` into an empty
namespace package for the next install.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numba
import numba.typed
import numpy as np
from numba import types
from numba.core import caching
from numba.extending import overload

# numba's OpenMP/TBB pools keep their threads spinning after a parallel loop, which on a
# small machine fights OpenBLAS's threads for the cores; the workqueue pool does not spin.
if numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"

PARALLEL_MIN_SIZE = 1 << 20   # measured: below ~1M elements, starting threads costs what it saves
_opts = {"nogil": True, "error_model": "numpy"}


def cache_root() -> str:
    """The folder compiled kernels are kept in: ``$NUMBA_CACHE_DIR`` where the user set it,
    else ``$XDG_CACHE_HOME/deepnet/numba`` (``~/.cache/deepnet/numba``)."""
    if numba.config.CACHE_DIR:
        return numba.config.CACHE_DIR
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):      # the XDG spec: a relative path is ignored
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "deepnet", "numba")


class _UserCacheLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """numba's cache locator for deepnet's kernels: ``cache_root()``, one folder per source
    folder (numba's own naming) and per ``variant``.  numba asks it once per kernel; an
    unwritable folder makes it decline, and the kernel is then compiled in each process."""

    variant = "serial"

    def __init__(self, py_func: Any, py_file: str) -> None:
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = os.path.join(cache_root(), self.get_suitable_cache_subpath(py_file), self.variant)

    def get_cache_path(self) -> str:
        return self._cache_path


class _ParallelCacheLocator(_UserCacheLocator):
    # numba keys a cache entry by function and signature only: the threaded build of a
    # function must not be stored where its serial build is looked up, and the reverse
    variant = "parallel"


def _cache_class(locator: type) -> type:
    """numba's per-function cache, finding its folder with ``locator`` alone."""
    impl = type(f"{locator.__name__}Impl", (caching.CompileResultCacheImpl,), {"_locator_classes": [locator]})
    return type(f"{locator.__name__}Cache", (caching.FunctionCache,), {"_impl_class": impl})


_caches = {False: _cache_class(_UserCacheLocator), True: _cache_class(_ParallelCacheLocator)}


def _njit(func: Callable, parallel: bool = False, fastmath: Any = False) -> Any:
    """``numba.njit(func)`` with the disk cache in ``cache_root()`` (what ``cache=True`` does,
    with deepnet's locator in place of numba's, which writes beside the source)."""
    dispatcher = numba.njit(parallel=parallel, fastmath=fastmath, **_opts)(func)
    try:
        dispatcher._cache = _caches[parallel](dispatcher.py_func)
    except RuntimeError:             # numba: no locator accepted (no writable cache folder)
        pass
    return dispatcher


def _sgd(w: Any, g: Any, lr: Any) -> None:  # pragma: no cover - compiled
    for i in numba.prange(w.size):
        w[i] -= lr * g[i]


# Optimizer state that only decays (velocity or moments of a weight whose gradient has
# become exactly zero, e.g. under a pixel that is blank in later batches) sinks into the
# subnormal range after a few hundred steps, where every operation on it costs ~100×
# (measured: 1,600 subnormal velocities after 6 epochs of the small benchmark network made
# its update 2–3× slower).  The compiled updates flush state below ``tiny`` (the smallest
# normal number of the dtype) to zero, as FTZ hardware modes do; a select, no branch.
def _momentum(w: Any, g: Any, v: Any, lr: Any, mu: Any, nesterov: bool, tiny: Any) -> None:  # pragma: no cover
    zero = tiny - tiny
    if nesterov:                      # two loops, so neither has a branch that blocks SIMD
        for i in numba.prange(w.size):
            vi = mu * v[i] + g[i]
            vi = vi if abs(vi) >= tiny else zero
            v[i] = vi
            w[i] -= lr * (g[i] + mu * vi)
    else:
        for i in numba.prange(w.size):
            vi = mu * v[i] + g[i]
            vi = vi if abs(vi) >= tiny else zero
            v[i] = vi
            w[i] -= lr * vi


def _adam(w: Any, g: Any, m: Any, v: Any, lr_t: Any, b1: Any, b2: Any, c1: Any, c2: Any, eps_hat: Any,
          decay: Any, tiny: Any) -> None:  # pragma: no cover
    # c1 = 1 − β₁, c2 = 1 − β₂ come in as scalars of the parameters' dtype: an integer
    # literal such as ``1 - b1`` would make numba compute the whole loop in float64
    # (measured: 2.8× slower on 670K float32 weights).
    for i in numba.prange(w.size):
        gi = g[i]
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * gi * gi
        mi = mi if abs(mi) >= tiny else tiny - tiny
        vi = vi if vi >= tiny else tiny - tiny
        m[i] = mi
        v[i] = vi
        w[i] = w[i] * decay - lr_t * mi / (np.sqrt(vi) + eps_hat)


def _sigmoid(x: Any, y: Any, one: Any) -> None:  # pragma: no cover - compiled
    zero = one - one                   # σ(x), two-branch form as in NumpyOps.sigmoid: e = e^(−|x|)
    for i in range(x.size):            # never overflows; 1/(1+e) for x ≥ 0, e/(1+e) for x < 0
        v = x[i]                       # (constants in the array's dtype: no float64 promotion)
        e = np.exp(-abs(v))
        y[i] = (one if v >= zero else e) / (one + e)


def _sigmoid_backward(dy: Any, y: Any, one: Any) -> None:  # pragma: no cover - compiled
    for i in range(dy.size):           # dy ∘ y ∘ (1 − y), with 1 in the array's dtype
        dy[i] *= y[i] * (one - y[i])


def _relu_backward(dy: Any, y: Any, zero: Any) -> None:  # pragma: no cover - compiled
    for i in range(dy.size):           # dy ∘ [y > 0] in one pass, no boolean temporary
        dy[i] = dy[i] if y[i] > zero else zero


def _relu(x: Any, y: Any, zero: Any) -> None:  # pragma: no cover - compiled
    for i in range(x.size):            # y = max(x, 0): reads x once, no zero array
        v = x[i]
        y[i] = v if v > zero else zero


def _add_bias(y: Any, b: Any) -> None:  # pragma: no cover - compiled
    n, k = y.shape                     # y ← y + b on every row, in place
    for r in range(n):
        for j in range(k):
            y[r, j] += b[j]


def _softmax_xent(z: Any, labels: Any, scale: Any, grad: Any) -> float:  # pragma: no cover - compiled
    """Per row r: p = softmax(z_r) (max subtracted), f_r = log Σ exp(z_r − max) − (z_r,y − max),
    grad_r = scale · (p − onehot(y)).  Returns scale · Σ_r f_r (accumulated in float64)."""
    n, k = z.shape
    total = 0.0
    for r in range(n):
        label = labels[r]
        if label < 0 or label >= k:
            raise IndexError("softmax cross-entropy: a label is outside 0..k-1")
        m = z[r, 0]
        for j in range(1, k):
            m = max(m, z[r, j])
        s = m - m
        for j in range(k):
            e = np.exp(z[r, j] - m)
            grad[r, j] = e
            s += e
        total += np.log(s) - (z[r, label] - m)
        inv = scale / s
        for j in range(k):
            grad[r, j] *= inv
        grad[r, label] -= scale
    return total * scale


_serial = {f.__name__[1:]: _njit(f) for f in (_sgd, _momentum, _adam)}
#: elementwise activations for small arrays, where one compiled call replaces several ufunc calls
elementwise = {f.__name__[1:]: _njit(f)
               for f in (_sigmoid, _sigmoid_backward, _relu, _relu_backward, _add_bias, _softmax_xent)}
_parallel = {f.__name__[1:]: _njit(f, parallel=True) for f in (_sgd, _momentum, _adam)}


_sgd_one, _momentum_one, _adam_one = _serial["sgd"], _serial["momentum"], _serial["adam"]


# Multi-tensor updates: one call walks a typed list of parameters, so a network's update
# costs one dispatch instead of one per parameter (each dispatch ~5 µs, and several times
# that when the preceding matrix product has evicted the interpreter from the caches).
def _sgd_many(ws: Any, gs: Any, lr: Any) -> None:  # pragma: no cover - compiled
    for t in range(len(ws)):
        _sgd_one(ws[t], gs[t], lr)


def _momentum_many(ws: Any, gs: Any, vs: Any, lr: Any, mu: Any, nesterov: bool, tiny: Any) -> None:  # pragma: no cover
    for t in range(len(ws)):
        _momentum_one(ws[t], gs[t], vs[t], lr, mu, nesterov, tiny)


def _adam_many(ws: Any, gs: Any, ms: Any, vs: Any, lr_t: Any, b1: Any, b2: Any, c1: Any, c2: Any, eps_hat: Any,
               decay: Any, tiny: Any) -> None:  # pragma: no cover - compiled
    for t in range(len(ws)):
        _adam_one(ws[t], gs[t], ms[t], vs[t], lr_t, b1, b2, c1, c2, eps_hat, decay, tiny)


many = {f.__name__[1:-5]: _njit(f) for f in (_sgd_many, _momentum_many, _adam_many)}


def typed_list(arrays: list) -> Any:
    """A numba typed list of 1-D views (built once per set of parameters and cached)."""
    out = numba.typed.List()
    for a in arrays:
        out.append(a.reshape(-1))
    return out


def kernel(name: str, size: int) -> Any:
    """The compiled update ``name`` (sgd, momentum, adam) suited to ``size`` elements."""
    return (_parallel if size >= PARALLEL_MIN_SIZE else _serial)[name]


# ---------------------------------------------------------------------- Philox4x32-10
# The bits of counter_rng.CounterRNG (see its module docstring for the layout), one Philox
# block per loop iteration.  Every integer is a uint64 holding a 32-bit word, and every constant
# is a typed uint64 global: numba types a mixed uint64/int64 operation as float64, and an
# integer literal is an int64.
_LO32 = np.uint64(0xFFFFFFFF)
_SH32, _SH21, _SH11, _SH8 = np.uint64(32), np.uint64(21), np.uint64(11), np.uint64(8)
_PM0, _PM1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)     # counter_rng.PHILOX_M0, PHILOX_M1
_PW0, _PW1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)     # counter_rng.PHILOX_W0, PHILOX_W1
_ONE64 = np.uint64(1)
_F24 = np.float32(2.0 ** -24)
_F53 = np.float64(2.0 ** -53)


@numba.njit(inline="always")
def _philox_block(b: Any, d0: Any, d1: Any, k0: Any, k1: Any) -> Any:  # pragma: no cover - compiled
    """Φ_k(b mod 2³², ⌊b/2³²⌋, d0, d1): the four output words of block b of the draw d (uint64)."""
    c0, c1, c2, c3 = b & _LO32, b >> _SH32, d0, d1
    for _ in range(10):              # the key is bumped after every round (unused after the last)
        p0 = _PM0 * c0
        p1 = _PM1 * c2
        c0, c1, c2, c3 = (p1 >> _SH32) ^ c1 ^ k0, p1 & _LO32, (p0 >> _SH32) ^ c3 ^ k1, p0 & _LO32
        k0 = (k0 + _PW0) & _LO32
        k1 = (k1 + _PW1) & _LO32
    return c0, c1, c2, c3


def _philox_f32(out: Any, d0: Any, d1: Any, k0: Any, k1: Any) -> None:  # pragma: no cover - compiled
    """float32: element 4b + j is word j of block b, u = ⌊x/2⁸⌋·2⁻²⁴."""
    n = out.size
    full = n // 4
    for i in range(full):            # whole blocks: no bounds test in the loop
        x0, x1, x2, x3 = _philox_block(np.uint64(i), d0, d1, k0, k1)
        e = 4 * i
        out[e] = np.float32(x0 >> _SH8) * _F24
        out[e + 1] = np.float32(x1 >> _SH8) * _F24
        out[e + 2] = np.float32(x2 >> _SH8) * _F24
        out[e + 3] = np.float32(x3 >> _SH8) * _F24
    if 4 * full < n:                 # the last, partial block
        x = _philox_block(np.uint64(full), d0, d1, k0, k1)
        for j in range(n - 4 * full):
            out[4 * full + j] = np.float32(x[j] >> _SH8) * _F24


def _philox_f64(out: Any, d0: Any, d1: Any, k0: Any, k1: Any) -> None:  # pragma: no cover - compiled
    """float64: element 2b + j is words (2j, 2j+1) of block b, u = ⌊(x₂ⱼ·2³² + x₂ⱼ₊₁)/2¹¹⌋·2⁻⁵³."""
    n = out.size
    full = n // 2
    for i in range(full):
        x0, x1, x2, x3 = _philox_block(np.uint64(i), d0, d1, k0, k1)
        e = 2 * i
        out[e] = np.float64((x0 << _SH21) | (x1 >> _SH11)) * _F53
        out[e + 1] = np.float64((x2 << _SH21) | (x3 >> _SH11)) * _F53
    if 2 * full < n:
        x0, x1, _, _ = _philox_block(np.uint64(full), d0, d1, k0, k1)
        out[n - 1] = np.float64((x0 << _SH21) | (x1 >> _SH11)) * _F53


def _philox_into(out: Any, d0: Any, d1: Any, k0: Any, k1: Any) -> None:  # pragma: no cover - typed by numba
    """Fill ``out`` with draw (d0, d1) under key (k0, k1): ``_philox_f32`` or ``_philox_f64``,
    chosen by numba from ``out``'s dtype when it compiles the caller."""
    raise NotImplementedError("_philox_into runs only inside compiled code")


@overload(_philox_into)
def _philox_into_typed(out: Any, d0: Any, d1: Any, k0: Any, k1: Any) -> Any:
    if isinstance(out, types.Array) and out.ndim == 1 and out.layout == "C":
        return {types.float32: _philox_f32, types.float64: _philox_f64}.get(out.dtype)
    return None


def _philox_fill(out: Any, counter: Any, k0: Any, k1: Any) -> None:  # pragma: no cover - compiled
    d = counter[0]
    _philox_into(out, d & _LO32, d >> _SH32, np.uint64(k0) & _LO32, np.uint64(k1) & _LO32)
    counter[0] = d + _ONE64


#: ``philox_fill(out, counter, k0, k1)``: fill ``out`` (1-D, C-contiguous, float32 or float64)
#: with the uniforms ``CounterRNG`` gives for the draw d = ``counter[0]`` and n = ``out.size``
#: (float32: 24 bits, float64: 53 bits), then ``counter[0] += 1``.  ``counter``: uint64, shape
#: (1,); ``k0``, ``k1``: the key words as ``np.uint32`` (``CounterRNG.key_words()``), the types
#: a compiled caller passes them with (other integer types compile a variant of their own).
philox_fill = _njit(_philox_fill)


def compile_cached(func: Callable, parallel: bool = False, fastmath: Any = False) -> Any:
    """``func`` compiled by numba (``parallel``: its ``prange`` loops threaded; ``fastmath``:
    numba's flags, e.g. {"reassoc", "nsz"} to let LLVM vectorize a sum) with deepnet's disk
    cache, as these kernels are."""
    return _njit(func, parallel, fastmath)
