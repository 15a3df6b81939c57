"""Training steps as one compiled call (numba) over fixed buffers: the CPU's captured step.

A run of steps of a stack of built-in layers is one call of :func:`run_steps`: for each batch
b of the run it gathers the batch's rows, runs the derivation's forward pass, the loss and
its error, the backward pass and the optimizer's update, with no Python in between.  The
network is described to it once per run (:class:`~deepnet.training.compiled.CompiledRun`
builds the description, :class:`Tables`), as integer tables over the network's own arrays:

* ``arrays``: every array the step touches, one row each (address, rows, columns): the batch
  entering each layer (``acts``), the error ∂f/∂acts of each (B × width buffers made once; a
  layer without parameters hands its error down in place, ∂f/∂x in ∂f/∂y's buffer), the
  weights, biases, their gradient buffers, the dropout masks, the optimizer's slots;
* ``layers``: one row per layer (:data:`LAYER_COLUMNS`): what it is (:data:`DENSE`,
  :data:`SIGMOID`, ...), the rows of ``arrays`` it reads and writes;
* ``updates``: one row per parameter (:data:`UPDATE_COLUMNS`), which the update walks.

The compiled code turns a row back into an array (``numba.carray`` at its address), so the
network's shape is data, not code: one compilation per dtype, whatever the layers.

Each formula is the one the layer, loss and optimizer compute eagerly (the same kernels where
they are compiled already: ``numba_kernels``); products call the CBLAS ``?gemm`` NumPy itself
uses (or oneMKL's with ``DEEPNET_BLAS=mkl``; :mod:`~deepnet.backend.cblas` finds it), except
the batch-1 outer product δᵀx, one multiply per element, which for plain SGD is fused with the
update w ← w − η δᵀx.  Cached on disk like the other kernels.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from . import cblas
from .numba_kernels import compile_cached, elementwise, kernel, philox_fill

# what layer l is
DENSE, SIGMOID, RELU, TANH, IDENTITY, DROPOUT = 0, 1, 2, 3, 4, 5

_NO_TRANS, _TRANS = 111, 112       # CBLAS's transpose flags (row-major order: 101)


def _gemm_intrinsic(bits: int) -> Any:
    """``gemm(address, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)``: a call of the
    CBLAS ``?gemm`` at ``address`` (row-major) from compiled code, with ``bits``-wide integers."""
    @intrinsic
    def gemm(typingctx: Any, addr: Any, ta: Any, tb: Any, m: Any, n: Any, k: Any, alpha: Any, a: Any, lda: Any,
             b: Any, ldb: Any, beta: Any, c: Any, ldc: Any) -> Any:
        sig = types.void(addr, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            at = signature.args
            fty = context.get_value_type(at[7].dtype)
            it, i32, vp = ir.IntType(bits), ir.IntType(32), ir.IntType(8).as_pointer()
            fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, it, it, it, fty, vp, it, vp, it, fty, vp, it])
            fn = builder.inttoptr(args[0], fnty.as_pointer())

            def data(i: int) -> Any:
                return builder.bitcast(context.make_array(at[i])(context, builder, args[i]).data, vp)

            def integer(i: int, width: int) -> Any:
                v = context.cast(builder, args[i], at[i], types.int64)
                return builder.trunc(v, ir.IntType(width)) if width < 64 else v

            alpha_v = context.cast(builder, args[6], at[6], at[7].dtype)
            beta_v = context.cast(builder, args[11], at[11], at[7].dtype)
            builder.call(fn, [ir.Constant(i32, 101), integer(1, 32), integer(2, 32), integer(3, bits),
                              integer(4, bits), integer(5, bits), alpha_v, data(7), integer(8, bits),
                              data(9), integer(10, bits), beta_v, data(12), integer(13, bits)])
            return context.get_dummy_value()
        return sig, codegen
    return gemm


_gemm64, _gemm32 = _gemm_intrinsic(64), _gemm_intrinsic(32)


def _mm(blas: Any, a: Any, ta: bool, b: Any, tb: bool, out: Any, alpha: Any, beta: Any) -> None:  # pragma: no cover
    """out = α op(a)·op(b) + β out (op: transposed where ``ta``/``tb``), every array C-contiguous,
    through the CBLAS ``blas`` = (sgemm address, dgemm address, integer bits)."""
    m, n = out.shape
    k = a.shape[0] if ta else a.shape[1]
    addr = blas[0] if out.itemsize == 4 else blas[1]
    fa = _TRANS if ta else _NO_TRANS
    fb = _TRANS if tb else _NO_TRANS
    if blas[2] == 64:
        _gemm64(addr, fa, fb, m, n, k, alpha, a, max(a.shape[1], 1), b, max(b.shape[1], 1), beta, out, max(n, 1))
    else:
        _gemm32(addr, fa, fb, m, n, k, alpha, a, max(a.shape[1], 1), b, max(b.shape[1], 1), beta, out, max(n, 1))


_sgd, _momentum, _adam = kernel("sgd", 0), kernel("momentum", 0), kernel("adam", 0)     # the serial builds
# the eager step's own compiled kernels (flat arrays; backward ones in place on the error)
_softmax_xent, _sigmoid, _sigmoid_backward = (elementwise[k] for k in ("softmax_xent", "sigmoid", "sigmoid_backward"))
_relu, _relu_backward, _add_bias = (elementwise[k] for k in ("relu", "relu_backward", "add_bias"))

#: the columns of a row of the ``layers`` table: the layer's code, the rows of ``arrays`` holding
#: its input x, output y, the errors ∂f/∂x and ∂f/∂y, then per kind — DENSE: W, ∂f/∂W, b, ∂f/∂b
#: (−1: no bias), whether W is stored transposed; DROPOUT: the mask, its generator's counter (a row
#: of ``counters``), its number (the row of ``rates`` and ``keys``)
LAYER_COLUMNS = ("code", "x", "y", "dx", "dy", "p0", "p1", "p2", "p3", "p4")
#: the columns of a row of the ``updates`` table: rows of ``arrays`` of the parameter, its
#: gradient, its first and second slot (−1: none), and whether decoupled weight decay applies
UPDATE_COLUMNS = ("param", "grad", "slot1", "slot2", "decay")


@intrinsic
def _pointer(typingctx: Any, address: Any, like: Any) -> Any:
    """The integer ``address`` as a pointer to elements of ``like``'s dtype."""
    ptr = types.CPointer(like.dtype)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], context.get_value_type(ptr))
    return ptr(address, like), codegen


def _mat(arrays: Any, i: int, like: Any) -> Any:  # pragma: no cover - compiled
    """Row i of ``arrays`` as the C-contiguous 2-D array it describes (dtype of ``like``)."""
    return numba.carray(_pointer(arrays[i, 0], like), (arrays[i, 1], arrays[i, 2]))


def _vec(arrays: Any, i: int, like: Any) -> Any:  # pragma: no cover - compiled
    """Row i of ``arrays`` as a flat 1-D array (dtype of ``like``)."""
    return numba.carray(_pointer(arrays[i, 0], like), arrays[i, 1] * arrays[i, 2])


def _gather(X: Any, rows: Any, start: int, out: Any) -> None:  # pragma: no cover - compiled
    """out[i] = X[rows[start + i]] for the batch's B rows."""
    for i in range(out.shape[0]):
        r = rows[start + i]
        for j in range(out.shape[1]):
            out[i, j] = X[r, j]


def _nonzero(x: Any, nz: Any, zero: Any) -> int:  # pragma: no cover - compiled
    """The columns i of the row x[0] with x_i ≠ 0, into nz[:n] (no branch per element), and n
    into nz[-1] for backward; returns n."""
    n = 0
    for i in range(x.shape[1]):
        nz[n] = i
        n += x[0, i] != zero
    nz[nz.size - 1] = n
    return n


def _consecutive(rows: Any, start: int, n: int) -> bool:  # pragma: no cover - compiled
    """Whether rows[start:start+n] are n consecutive row numbers."""
    for i in range(1, n):
        if rows[start + i] != rows[start] + i:
            return False
    return True


def _copy(src: Any, dst: Any) -> None:  # pragma: no cover - compiled
    """dst = src (2-D, the same shape)."""
    for r in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[r, j] = src[r, j]


def _forward(blas: Any, layers: Any, arrays: Any, counters: Any, rates: Any, keys: Any, nz: Any,
             one: Any) -> None:  # pragma: no cover - compiled
    """y = layer(x) for every layer from the bottom, as the layers' forward passes compute it
    (dropout's masks from :func:`~deepnet.backend.numba_kernels.philox_fill`)."""
    like, zero = one, one[0] - one[0]
    for l in range(layers.shape[0]):
        code = layers[l, 0]
        x, y = _mat(arrays, layers[l, 1], like), _mat(arrays, layers[l, 2], like)
        if code == DENSE:
            w = _mat(arrays, layers[l, 5], like)
            if x.shape[0] == 1 and layers[l, 9] != 0:      # batch 1, W stored transposed (Wᵀ rows):
                n = _nonzero(x, nz, zero)                   # y = Σ_i x_i Wᵀ[i, :] over the nonzero x_i
                for j in range(y.shape[1]):
                    y[0, j] = zero
                for t in range(n):
                    i = nz[t]
                    xi = x[0, i]
                    for j in range(y.shape[1]):
                        y[0, j] += xi * w[i, j]
            else:
                _mm(blas, x, False, w, layers[l, 9] == 0, y, one[0], zero)      # y = x Wᵀ
            if layers[l, 7] >= 0:
                _add_bias(y, _vec(arrays, layers[l, 7], like))              # y ← y + b on every row
        elif code == SIGMOID:
            _sigmoid(_vec(arrays, layers[l, 1], like), _vec(arrays, layers[l, 2], like), one[0])
        elif code == RELU:
            _relu(_vec(arrays, layers[l, 1], like), _vec(arrays, layers[l, 2], like), zero)
        elif code == TANH:
            for r in range(x.shape[0]):
                for j in range(x.shape[1]):
                    y[r, j] = np.tanh(x[r, j])
        elif code == IDENTITY:
            _copy(x, y)
        elif code == DROPOUT:
            k = layers[l, 7]
            p = rates[k, 0]
            if p == zero:
                _copy(x, y)
                continue
            m = _mat(arrays, layers[l, 5], like)
            flat = _vec(arrays, layers[l, 5], like)
            counter = counters[layers[l, 6]:layers[l, 6] + 1]
            philox_fill(flat, counter, keys[k, 0], keys[k, 1])          # u, then the counter advances
            keep = rates[k, 1]                                           # m = [u ≥ p] / (1 − p)
            for i in range(flat.size):
                flat[i] = keep if flat[i] >= p else zero
            for r in range(x.shape[0]):
                for j in range(x.shape[1]):
                    y[r, j] = x[r, j] * m[r, j]


def _squared_error(z: Any, t: Any, labels: Any, scale: float, scale_w: Any, twice: Any,
                   err: Any) -> float:  # pragma: no cover - compiled
    """f = scale Σ (z − t)² and err = ∂f/∂z = 2·scale·(z − t) (SumOfSquares, MeanSquaredError)."""
    total = 0.0
    for r in range(z.shape[0]):
        for j in range(z.shape[1]):
            e = z[r, j] - t[r, j]
            total += e * e
            err[r, j] = e * twice
    return total * scale


def _cross_entropy(z: Any, t: Any, labels: Any, scale: float, scale_w: Any, twice: Any,
                   err: Any) -> float:  # pragma: no cover - compiled
    """Softmax cross-entropy against the labels: the compiled kernel of the eager step."""
    return _softmax_xent(z, labels, scale_w, err)


#: where a dense layer's backward puts ∂f/∂W = δᵀx (and ∂f/∂b = Σ_rows δ): into gradient
#: buffers (G ← ∂f/∂θ, for the update to read), into momentum's velocity (V ← μV + ∂f/∂θ, the
#: product's β = μ: no gradient buffer is written or read), or into the parameter itself, plain
#: SGD (θ ← θ − η ∂f/∂θ, the product's α = −η, β = 1: no update pass at all)
INTO_GRADIENT, INTO_VELOCITY, INTO_PARAMETER = 0, 1, 2


def _backward(blas: Any, layers: Any, arrays: Any, rates: Any, lowest: int, into: int, lr: Any, mu: Any,
              nz: Any, one: Any) -> None:  # pragma: no cover - compiled
    """Layer by layer from the top: each layer's ∂f/∂θ from its ∂f/∂y, put where ``into`` says
    (η = ``lr``, μ = ``mu`` in the parameters' dtype), and the error ∂f/∂x handed down (none at
    ``lowest``).  Batch 1 forms δᵀx as one product per element, fused with where it goes."""
    like, zero = one, one[0] - one[0]
    for l in range(layers.shape[0] - 1, lowest - 1, -1):
        code = layers[l, 0]
        below = l > lowest
        d, x, y = _mat(arrays, layers[l, 4], like), _mat(arrays, layers[l, 1], like), _mat(arrays, layers[l, 2], like)
        if code == DENSE:
            w, to = _mat(arrays, layers[l, 5], like), _mat(arrays, layers[l, 6], like)
            transposed = layers[l, 9] != 0
            if below:                               # ẽ = δ W, before W changes
                _mm(blas, d, False, w, transposed, _mat(arrays, layers[l, 3], like), one[0], zero)
            if x.shape[0] == 1 and transposed and into == INTO_PARAMETER:
                n = nz[nz.size - 1]                 # the forward's nonzero x_i: Wᵀ[i, :] ← Wᵀ[i, :] − η (δ x_i),
                for t in range(n):                  # rows of x_i = 0 stay
                    i = nz[t]
                    xi = x[0, i]
                    for j in range(d.shape[1]):
                        to[i, j] -= lr * (d[0, j] * xi)
            elif x.shape[0] == 1 and not transposed:  # δᵀx: one product per element
                for j in range(d.shape[1]):
                    c = d[0, j]
                    if into == INTO_PARAMETER:
                        for i in range(x.shape[1]):
                            to[j, i] -= lr * (c * x[0, i])
                    elif into == INTO_VELOCITY:
                        for i in range(x.shape[1]):
                            to[j, i] = mu * to[j, i] + c * x[0, i]
                    else:
                        for i in range(x.shape[1]):
                            to[j, i] = c * x[0, i]
            else:
                alpha = -lr if into == INTO_PARAMETER else one[0]
                beta = one[0] if into == INTO_PARAMETER else mu if into == INTO_VELOCITY else zero
                if transposed:
                    _mm(blas, x, True, d, False, to, alpha, beta)    # (∂f/∂W)ᵀ = xᵀ δ
                else:
                    _mm(blas, d, True, x, False, to, alpha, beta)    # ∂f/∂W = δᵀ x
            if layers[l, 7] >= 0:                   # ∂f/∂b = Σ_rows δ
                tb = _vec(arrays, layers[l, 8], like)
                for j in range(d.shape[1]):
                    s = d[0, j]
                    for r in range(1, d.shape[0]):
                        s += d[r, j]
                    if into == INTO_PARAMETER:
                        tb[j] -= lr * s
                    elif into == INTO_VELOCITY:
                        tb[j] = mu * tb[j] + s
                    else:
                        tb[j] = s
            continue
        if not below:
            continue
        # the other layers hand the error down in place: their ∂f/∂x is their ∂f/∂y's buffer
        flat_d, flat_y = _vec(arrays, layers[l, 4], like), _vec(arrays, layers[l, 2], like)
        if code == SIGMOID:                         # e ∘ z ∘ (1 − z)
            _sigmoid_backward(flat_d, flat_y, one[0])
        elif code == RELU:                          # dy ∘ [z > 0]
            _relu_backward(flat_d, flat_y, zero)
        elif code == TANH:                          # dy ∘ (1 − z²)
            for i in range(flat_d.size):
                z = flat_y[i]
                flat_d[i] *= one[0] - z * z
        elif code == DROPOUT and rates[layers[l, 7], 0] != zero:     # δ ∘ m, the forward's mask
            m = _vec(arrays, layers[l, 5], like)
            for i in range(flat_d.size):
                flat_d[i] *= m[i]


# The updates after backward (plain SGD has none: backward applied it, :data:`INTO_PARAMETER`).
# η, μ and ``tiny`` (the dtype's smallest normal number) come rounded to the parameters' dtype as
# the eager step rounds them; ``hyper``: (η, μ or β₁, β₂, ε, λ, tiny) as float64; ``work``: 8
# elements of the parameters' dtype, made once per call (Adam's scalars of the step go there).
def _update_velocity(updates: Any, arrays: Any, t: int, hyper: Any, lr: Any, mu: Any, tiny: Any,
                     work: Any) -> None:  # pragma: no cover - compiled
    """Momentum after backward formed V ← μV + ∂f/∂θ (:data:`INTO_VELOCITY`): V below ``tiny``
    flushed to 0 (as the eager kernel does), then w ← w − η V."""
    zero = tiny - tiny
    for k in range(updates.shape[0]):
        w, v = _vec(arrays, updates[k, 0], work), _vec(arrays, updates[k, 2], work)
        for i in range(w.size):
            vi = v[i]
            vi = vi if abs(vi) >= tiny else zero
            v[i] = vi
            w[i] -= lr * vi


def _update_nesterov(updates: Any, arrays: Any, t: int, hyper: Any, lr: Any, mu: Any, tiny: Any,
                     work: Any) -> None:  # pragma: no cover - compiled
    """v ← μ v + g, w ← w − η (g + μ v) for every parameter (its gradient is needed after v is
    formed, so backward writes gradient buffers, :data:`INTO_GRADIENT`)."""
    for k in range(updates.shape[0]):
        _momentum(_vec(arrays, updates[k, 0], work), _vec(arrays, updates[k, 1], work),
                  _vec(arrays, updates[k, 2], work), lr, mu, True, tiny)


def _update_adam(updates: Any, arrays: Any, t: int, hyper: Any, lr: Any, mu: Any, tiny: Any,
                 work: Any) -> None:  # pragma: no cover - compiled
    """Adam at step t: η_t = η √(1−β₂ᵗ)/(1−β₁ᵗ), ε̂ = ε √(1−β₂ᵗ), d = 1 − ηλ where decoupled
    weight decay applies (Adam.step_scalars, in float64, then rounded), then the compiled kernel
    of the eager step."""
    eta, b1, b2, eps, wd = hyper[0], hyper[1], hyper[2], hyper[3], hyper[4]
    c2 = np.sqrt(1.0 - b2 ** float(t))
    vals = (eta * c2 / (1.0 - b1 ** float(t)), b1, b2, 1.0 - b1, 1.0 - b2, c2 * eps, 1.0 - eta * wd, 1.0)
    w = work
    for i in range(8):
        w[i] = vals[i]
    for k in range(updates.shape[0]):
        p, g = _vec(arrays, updates[k, 0], work), _vec(arrays, updates[k, 1], work)
        m, v = _vec(arrays, updates[k, 2], work), _vec(arrays, updates[k, 3], work)
        _adam(p, g, m, v, w[0], w[1], w[2], w[3], w[4], w[5], w[6] if updates[k, 4] else w[7], tiny)


def _correct(z: Any, labels: Any) -> int:  # pragma: no cover - compiled
    """Rows whose first largest output is at the row's label."""
    n = 0
    for r in range(z.shape[0]):
        best = 0
        for j in range(1, z.shape[1]):
            if z[r, j] > z[r, best]:
                best = j
        n += best == labels[r]
    return n


def _run_steps(loss: int, update: int, blas: Any, X: Any, x_rows: Any, t_rows: Any, T: Any, labels: Any,
               first: int, count: int, layers: Any, arrays: Any, updates: Any, counters: Any, rates: Any,
               keys: Any, tbuf: Any, lbuf: Any, scale: float, lowest: int, t0: int, hyper: Any, check: bool,
               target_rows: bool, x_in_place: bool, losses: Any, correct: Any) -> int:  # pragma: no cover - compiled
    """Train batches first … first+count−1 (rows ``t_rows[bB:(b+1)B]`` of T and labels,
    ``x_rows`` of X) with the ``loss`` and ``update`` of those codes (:data:`LOSSES`,
    :data:`UPDATES`); batch b's loss and correct count go to ``losses[b]``, ``correct[b]``.
    Returns the steps done: fewer than ``count`` when ``check`` and a loss is not finite (that
    step is not applied; its loss is stored).  A batch of consecutive rows of a C-ordered X
    (``x_in_place``) is read where it lies, not gathered."""
    one = np.ones(1, losses.dtype)
    x0 = _mat(arrays, layers[0, 1], one)
    top = layers.shape[0] - 1
    z, err = _mat(arrays, layers[top, 2], one), _mat(arrays, layers[top, 4], one)
    B = x0.shape[0]
    scratch = np.empty(1, losses.dtype)
    scratch[0] = 2.0 * scale
    twice = scratch[0]
    scratch[0] = scale
    scale_w = scratch[0]
    scratch[0] = hyper[0]
    lr = scratch[0]
    scratch[0] = hyper[1]
    mu = scratch[0]
    scratch[0] = hyper[5]
    tiny = scratch[0]
    into = INTO_PARAMETER if update == PLAIN_SGD else INTO_VELOCITY if update == MOMENTUM else INTO_GRADIENT
    work = np.empty(8, losses.dtype)
    x_row = layers[0, 1]
    x_buffer = arrays[x_row, 0]
    nz = np.empty(arrays[x_row, 2] + 1, np.int64)          # nonzero columns of a batch-1 row
    for s in range(count):
        b = first + s
        start = b * B
        if _consecutive(x_rows, start, B) and x_in_place:       # the batch is B rows of X as they lie
            arrays[x_row, 0] = X.ctypes.data + x_rows[start] * X.shape[1] * X.itemsize
        else:
            arrays[x_row, 0] = x_buffer
            _gather(X, x_rows, start, x0)
        for i in range(B):
            lbuf[i] = labels[t_rows[start + i]]
        if target_rows:                         # a squared error's rows, not labels
            _gather(T, t_rows, start, tbuf)
        _forward(blas, layers, arrays, counters, rates, keys, nz, one)
        if loss == SQUARED:
            f = _squared_error(z, tbuf, lbuf, scale, scale_w, twice, err)
        else:
            f = _cross_entropy(z, tbuf, lbuf, scale, scale_w, twice, err)
        losses[b] = f
        correct[b] = _correct(z, lbuf)
        if check and not np.isfinite(f):
            arrays[x_row, 0] = x_buffer
            return s
        _backward(blas, layers, arrays, rates, lowest, into, lr, mu, nz, one)
        if update == MOMENTUM:
            _update_velocity(updates, arrays, t0 + s + 1, hyper, lr, mu, tiny, work)
        elif update == NESTEROV:
            _update_nesterov(updates, arrays, t0 + s + 1, hyper, lr, mu, tiny, work)
        elif update == ADAM:
            _update_adam(updates, arrays, t0 + s + 1, hyper, lr, mu, tiny, work)
    arrays[x_row, 0] = x_buffer
    return count


# the small functions are inlined where they are called (each compiled apart costs ~0.1 s more)
_mat, _vec, _gather, _nonzero, _consecutive, _copy, _correct = (
    numba.njit(inline="always", error_model="numpy")(f)
    for f in (_mat, _vec, _gather, _nonzero, _consecutive, _copy, _correct))
_mm, _forward, _backward = (compile_cached(f) for f in (_mm, _forward, _backward))
#: the losses and updates :func:`run_steps` takes, by code.  (Passed as compiled functions
#: instead, each run compiled only what it used, but numba's disk cache never matched a
#: signature holding a function: every process compiled the step again, ~3 s.)
SQUARED, XENT = 0, 1
PLAIN_SGD, MOMENTUM, NESTEROV, ADAM = 0, 1, 2, 3
LOSSES = {"squared": SQUARED, "xent": XENT}
UPDATES = {"sgd": PLAIN_SGD, "momentum": MOMENTUM, "nesterov": NESTEROV, "adam": ADAM}
#: where each update wants backward to put ∂f/∂θ (run_steps derives it from the update's code)
INTO = {"sgd": INTO_PARAMETER, "momentum": INTO_VELOCITY, "nesterov": INTO_GRADIENT, "adam": INTO_GRADIENT}
_squared_error, _cross_entropy, _update_velocity, _update_nesterov, _update_adam = (
    compile_cached(f) for f in (_squared_error, _cross_entropy, _update_velocity, _update_nesterov, _update_adam))
run_steps = compile_cached(_run_steps)


class Tables:
    """The integer tables :func:`run_steps` reads (see the module docstring), built from the
    arrays themselves: ``add(a)`` gives a row of ``arrays`` (``a`` kept alive here)."""

    def __init__(self) -> None:
        self._rows: list[tuple[int, int, int]] = []
        self._kept: list[Any] = []

    def add(self, a: Any) -> int:
        """The row of ``arrays`` describing ``a`` (C-contiguous, 1-D or 2-D; 1-D as one row)."""
        if not a.flags.c_contiguous:
            raise ValueError("the compiled step reads C-contiguous arrays only")
        rows, cols = (1, a.shape[0]) if a.ndim == 1 else a.shape
        self._rows.append((a.ctypes.data, rows, cols))
        self._kept.append(a)
        return len(self._rows) - 1

    def array(self, row: int) -> Any:
        """The array a row describes."""
        return self._kept[row]

    def arrays(self) -> Any:
        return np.asarray(self._rows, dtype=np.int64).reshape(-1, 3)


def row_major(a: Any) -> tuple[Any, bool]:
    """``a`` as a C-contiguous array: itself, or the transpose of a column-major ``a`` (True)."""
    if a.flags.c_contiguous:
        return a, False
    if a.flags.f_contiguous:
        return a.T, True
    raise ValueError(f"the compiled step needs contiguous parameters, got one with strides {a.strides}")


def column_major(a: Any) -> Any:
    """``a`` stored column-major (the same values)."""
    return np.asfortranarray(a)


def c_contiguous(a: Any) -> bool:
    """Whether ``a`` lies in C order (a batch of consecutive rows is then read where it lies)."""
    return bool(a.flags.c_contiguous)


def flat(a: Any) -> Any:
    """The elements of ``a`` as a 1-D view, in the order of :func:`row_major`."""
    return row_major(a)[0].reshape(-1)


def ints(rows: list, columns: int) -> Any:
    """An int64 table of ``columns`` columns."""
    return np.asarray(rows, dtype=np.int64).reshape(-1, columns)


def values(vals: list, dtype: Any) -> Any:
    return np.asarray(vals, dtype=dtype)


def tiny(dtype: Any) -> float:
    """The smallest normal number of ``dtype``."""
    return float(np.finfo(dtype).tiny)


def blas(ops: Any) -> Any:
    """(sgemm address, dgemm address, integer bits) of the BLAS ``ops`` computes its products
    with (NumPy's, or oneMKL's with ``DEEPNET_BLAS=mkl``), as an int64 array; None when NumPy's
    cannot be found (the compiled step then does not run)."""
    found = cblas.mkl_gemm(ops.products.lib.path) if ops.blas == "mkl" else cblas.numpy_gemm()
    return None if found is None else np.asarray(found, dtype=np.int64)
