"""A counter-based generator (Philox4x32-10) whose state lives in device memory.

cuRAND refuses to run under CUDA stream capture, and a captured graph replays its kernels
with the arguments frozen at capture, so a generator that a graph can replay must keep its
step counter on the device and advance it with a device operation.  Philox (Salmon, Moraes,
Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC'11) is a keyed bijection of a
128-bit counter: the output of block c under key k is Φ_k(c), no state besides the counter.

Counter layout of a draw.  The generator holds a 64-bit draw counter d (``counter``, a
device array of shape (1,), uint64) and a 64-bit key k = (k₀, k₁) derived from the seed on
the host once.  Element e of a draw of n elements reads Philox block b = ⌊e/4⌋ (float32) or
b = ⌊e/2⌋ (float64) with the counter words

    (c₀, c₁, c₂, c₃) = (b mod 2³², ⌊b/2³²⌋, d mod 2³², ⌊d/2³²⌋)

so every (draw, block) pair has its own Philox input; then d ← d + 1 in place.  A float32
takes one 32-bit output word x (word e mod 4): u = ⌊x/2⁸⌋·2⁻²⁴ (24 bits); a float64 takes
two words (x_{2j}, x_{2j+1}) with j = e mod 2: u = ⌊(x_{2j}·2³² + x_{2j+1})/2¹¹⌋·2⁻⁵³
(53 bits).  Both lie in [0, 1) and are exact in their type.

The same generator exists three times: :func:`philox4x32` in Array-API operations (NumPy,
CuPy, array_api_strict), a fused CUDA kernel (:func:`build_philox_kernel`, one thread per
Philox block) and a numba-compiled loop (``numba_kernels.philox_fill``, the NumPy backend
with numba), all computing the same bits.  A kernel plugs into :class:`CounterRNG` as a
:data:`PhiloxKernel`: ``kernel(out, counter, k0, k1)`` fills ``out`` with draw ``counter[0]``
and advances the counter itself.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

from .ops import Array, DeviceRNG, Ops

#: Philox4x32 multipliers and Weyl key increments (Salmon et al. 2011; Random123's philox.h)
PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
_MASK32 = 0xFFFFFFFF
_MASK64 = (1 << 64) - 1
#: output words a draw of one element consumes, by dtype name
_WORDS = {"float32": 1, "float64": 2}
#: ``kernel(out, counter, k0, k1)``: write draw ``counter[0]``'s uniforms into ``out`` (its
#: values in flat C order), then ``counter[0] += 1``; ``k0``, ``k1``: the key words as uint32
PhiloxKernel = Callable[[Any, Any, Any, Any], None]


def _bump(k: Any, w: int) -> Any:
    """k + w mod 2³² (Python int, or uint32 array, which wraps)."""
    return (k + w) & _MASK32 if isinstance(k, int) else k + w


def philox4x32(xp: Any, ctr: tuple[Array, Array, Array, Array], key: tuple[Any, Any],
               rounds: int = 10) -> tuple[Array, Array, Array, Array]:
    """Φ_k(c): the Philox4x32-``rounds`` output words of the counters ``ctr`` (four uint32
    arrays, broadcast together) under ``key`` (two uint32 arrays or Python ints < 2³²).

    One round: (c₀, c₁, c₂, c₃) ← (hi(M₁c₂) ⊕ c₁ ⊕ k₀, lo(M₁c₂), hi(M₀c₀) ⊕ c₃ ⊕ k₁, lo(M₀c₀)),
    with hi/lo the halves of the 64-bit product; the key gains (W₀, W₁) before every round
    but the first.  Array-API operations only (uint64 products, ``>>``, ``&``, ``^``)."""
    u32, u64 = xp.uint32, xp.uint64
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for r in range(rounds):
        if r:
            k0, k1 = _bump(k0, PHILOX_W0), _bump(k1, PHILOX_W1)
        p0 = xp.astype(c0, u64) * PHILOX_M0
        p1 = xp.astype(c2, u64) * PHILOX_M1
        hi0, lo0 = xp.astype(p0 >> 32, u32), xp.astype(p0 & _MASK32, u32)
        hi1, lo1 = xp.astype(p1 >> 32, u32), xp.astype(p1 & _MASK32, u32)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    c0, c1, c2, c3 = xp.broadcast_arrays(c0, c1, c2, c3)
    return c0, c1, c2, c3


# ---------------------------------------------------------------------- the CUDA kernel
#: Philox4x32-10 in CUDA C, the same rounds as :func:`philox4x32` (``__umulhi``: the high
#: 32 bits of the product; the low half is the wrapped 32-bit product)
PHILOX_PREAMBLE = r"""
__device__ __forceinline__ void deepnet_philox4x32_10(unsigned int c[4], unsigned int k0, unsigned int k1) {
    for (int r = 0; r < 10; ++r) {
        if (r > 0) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        unsigned int hi0 = __umulhi(0xD2511F53u, c[0]), lo0 = 0xD2511F53u * c[0];
        unsigned int hi1 = __umulhi(0xCD9E8D57u, c[2]), lo1 = 0xCD9E8D57u * c[2];
        unsigned int n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0; c[1] = lo1; c[2] = n2; c[3] = lo0;
    }
}
"""

_BLOCK = r"""
unsigned long long blk = (unsigned long long)i;
unsigned long long drw = ctr[0];
unsigned int c[4] = {(unsigned int)(blk & 0xFFFFFFFFull), (unsigned int)(blk >> 32),
                     (unsigned int)(drw & 0xFFFFFFFFull), (unsigned int)(drw >> 32)};
deepnet_philox4x32_10(c, k0, k1);
"""

#: the kernels' bodies, by output dtype: thread i computes Philox block i and writes the
#: elements it covers (4 float32 or 2 float64) of ``out`` (n elements, flat C-order index)
UNIFORM_OPERATIONS = {
    "float32": _BLOCK + r"""
unsigned long long e0 = blk * 4ull;
for (int j = 0; j < 4; ++j) {
    if (e0 + j < n) out[(ptrdiff_t)(e0 + j)] = (float)(c[j] >> 8) * (1.0f / 16777216.0f);
}
""",
    "float64": _BLOCK + r"""
unsigned long long e0 = blk * 2ull;
for (int j = 0; j < 2; ++j) {
    if (e0 + j < n) {
        unsigned long long bits = ((unsigned long long)c[2 * j] << 21) | (unsigned long long)(c[2 * j + 1] >> 11);
        out[(ptrdiff_t)(e0 + j)] = (double)bits * (1.0 / 9007199254740992.0);
    }
}
""",
}


class CudaPhilox:
    """The fused uniform kernels as a :data:`PhiloxKernel`: ``float32``, ``float64`` are
    ``cupy.ElementwiseKernel`` (compiled by CuPy on first call), launched as
    ``k.float32(counter, k0, k1, n, out, size=blocks)``; a raw ``out`` is indexed by its flat
    C-order index, strides honoured."""

    def __init__(self, float32: Any, float64: Any) -> None:
        self.float32, self.float64 = float32, float64

    def __call__(self, out: Any, counter: Any, k0: Any, k1: Any) -> None:
        """One launch for ``out``'s dtype (none for an empty ``out``), then ``counter += 1`` on the device."""
        n = math.prod(out.shape)
        kind = str(out.dtype)
        if n:
            getattr(self, kind)(counter, k0, k1, counter.dtype.type(n), out, size=-(-n // (4 // _WORDS[kind])))
        counter += 1


def build_philox_kernel(cupy: Any) -> CudaPhilox:
    """The fused uniform kernels of ``cupy`` (see :class:`CudaPhilox`)."""
    ek = cupy.ElementwiseKernel
    params = "raw uint64 ctr, uint32 k0, uint32 k1, uint64 n"
    return CudaPhilox(
        float32=ek(params, "raw float32 out", UNIFORM_OPERATIONS["float32"], "deepnet_philox_uniform_f32",
                   preamble=PHILOX_PREAMBLE),
        float64=ek(params, "raw float64 out", UNIFORM_OPERATIONS["float64"], "deepnet_philox_uniform_f64",
                   preamble=PHILOX_PREAMBLE),
    )


# ---------------------------------------------------------------------- the generator
def seed_key(seed: int) -> tuple[int, int]:
    """The Philox key of a seed: its low and high 32 bits (0 ≤ seed < 2⁶⁴)."""
    try:
        s = operator.index(seed)
    except TypeError:
        raise TypeError(f"CounterRNG: the seed must be an integer, got {seed!r}") from None
    if not 0 <= s <= _MASK64:
        raise ValueError(f"CounterRNG: the seed must lie in [0, 2**64), got {s}")
    return s & _MASK32, s >> 32


class CounterRNG(DeviceRNG):
    """Philox4x32-10 uniforms with the draw counter in device memory (capturable in a CUDA graph).

    ``CounterRNG(ops, seed, kernel=None)``: key from ``seed`` (:func:`seed_key`); ``counter``
    is a uint64 device array of shape (1,), allocated once and only ever updated in place
    (d ← d + 1 after each draw, by a device operation: no host read, no upload).  ``kernel``:
    a :data:`PhiloxKernel` (CuPy: :func:`build_philox_kernel`; NumPy with numba: a wrapper of
    ``numba_kernels.philox_fill``), used instead of the Array-API version; same bits.  See
    the module docstring for the counter layout.
    """

    # (DeviceRNG's __init__ is not called: it makes a NumPy generator)
    def __init__(self, ops: Ops, seed: int, kernel: PhiloxKernel | None = None) -> None:
        self.ops = ops
        self.seed = seed
        self.key: tuple[int, int] = seed_key(seed)
        self.kernel = kernel
        xp = ops.xp
        self._u32, self._u64 = xp.uint32, xp.uint64
        #: the draw counter d (device memory; its buffer never changes)
        self.counter: Array = xp.zeros((1,), dtype=self._u64, **ops.on_device)
        self._blocks: dict[int, tuple[Array, Array]] = {}   # block count -> (b mod 2³², ⌊b/2³²⌋), made once

    # -- drawing ------------------------------------------------------------------------
    def _kind(self, dtype: Any) -> str:
        name = self.ops.dtype_name(dtype)
        if name not in _WORDS:
            raise TypeError(f"CounterRNG: uniforms are float32 or float64, not {name}")
        return name

    def _block_index(self, blocks: int) -> tuple[Array, Array]:
        """The block numbers 0 … blocks−1 as (low, high) uint32 words (cached per size, so a
        replayed step allocates nothing)."""
        got = self._blocks.get(blocks)
        if got is None:
            xp = self.ops.xp
            b = xp.arange(blocks, dtype=self._u64, **self.ops.on_device)
            got = (xp.astype(b & _MASK32, self._u32), xp.astype(b >> 32, self._u32))
            self._blocks[blocks] = got
        return got

    def _bits(self, n: int, kind: str) -> Array:
        """The n uniforms of the current draw, flat (Array-API version)."""
        xp = self.ops.xp
        per = 4 // _WORDS[kind]                       # elements per Philox block
        lo, hi = self._block_index(-(-n // per))
        d = self.counter
        words = philox4x32(xp, (lo, hi, xp.astype(d & _MASK32, self._u32), xp.astype(d >> 32, self._u32)), self.key)
        flat = xp.reshape(xp.stack(words, axis=1), (-1,))          # word 4b + j = x_j of block b
        if kind == "float32":
            return xp.astype(flat[:n] >> 8, xp.float32) * (2.0 ** -24)
        pairs = xp.reshape(flat, (-1, 2))
        bits = (xp.astype(pairs[:, 0], self._u64) << 21) | (xp.astype(pairs[:, 1], self._u64) >> 11)
        return xp.astype(bits[:n], xp.float64) * (2.0 ** -53)

    def _advance(self) -> None:
        """d ← d + 1, in place on the device."""
        self.counter += 1

    def uniform(self, shape: tuple[int, ...], dtype: Any) -> Array:
        """U[0, 1) numbers of ``shape`` (float32: 24 random bits, float64: 53), then d ← d + 1."""
        kind = self._kind(dtype)
        shape = tuple(int(s) for s in shape)
        if self.kernel is not None:
            out = self.ops.xp.empty(shape, dtype=self.ops.dtype(kind))
            return self._fill_kernel(out)
        u = self._bits(math.prod(shape), kind)
        self._advance()
        return self.ops.xp.reshape(u, shape)

    def uniform_into(self, out: Array) -> Array:
        """Fill the preallocated float32/float64 ``out`` with this draw's uniforms (the values
        :meth:`uniform` would return for its shape), then d ← d + 1; returns ``out``."""
        kind = self._kind(out.dtype)
        if self.kernel is not None:
            return self._fill_kernel(out)
        out[...] = self.ops.xp.reshape(self._bits(math.prod(out.shape), kind), tuple(out.shape))
        self._advance()
        return out

    def key_words(self) -> tuple[Any, Any]:
        """The key (k₀, k₁) as uint32 scalars, the types a :data:`PhiloxKernel` takes (read it at
        every call: :meth:`set_state` may change the key)."""
        return self._u32(self.key[0]), self._u32(self.key[1])

    def _fill_kernel(self, out: Array) -> Array:
        """One call of the kernel, which writes ``out`` and advances d."""
        self.kernel(out, self.counter, *self.key_words())
        return out

    # -- state --------------------------------------------------------------------------
    def get_state(self) -> dict:
        """``{"philox_key": [k₀, k₁], "counter": d}`` as plain Python ints (reads d: one sync)."""
        host = self.ops.to_host(self.counter)
        return {"philox_key": [int(self.key[0]), int(self.key[1])], "counter": int(host.reshape(-1)[0])}

    def set_state(self, state: dict) -> None:
        """Restore :meth:`get_state`'s dict: d is written into the existing counter buffer (its
        address stays, so a captured graph sees it).  The key is a kernel argument: a graph
        captured under another key must be captured again."""
        if isinstance(state, dict) and set(state) == {"cupy_seed"}:
            # written by deepnet before CounterRNG (cuRAND, whose state was only its seed): what
            # resuming did then, a generator seeded again from that seed
            k0, k1 = seed_key(operator.index(state["cupy_seed"]))
            self.key = (k0, k1)
            self.counter[...] = 0
            return
        try:
            k0, k1 = (operator.index(k) for k in state["philox_key"])
            d = operator.index(state["counter"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("CounterRNG.set_state: expected {'philox_key': [k0, k1], 'counter': int}, "
                             f"got {state!r}") from None
        if not (0 <= k0 <= _MASK32 and 0 <= k1 <= _MASK32 and 0 <= d <= _MASK64):
            raise ValueError(f"CounterRNG.set_state: key words must be uint32 and the counter uint64, got {state!r}")
        self.key = (k0, k1)
        self.counter[...] = d
