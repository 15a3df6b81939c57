"""Training steps as one compiled call (numba) over fixed buffers: the CPU's captured step.

A run of steps of a stack of built-in layers is one call of :func:`run_steps`: for each batch
b of the run it gathers the batch's rows, runs the derivation's forward pass, the loss and
its error, the backward pass and the optimizer's update, with no Python in between.  The
network is described to it once per run (:class:`~deepnet.training.compiled.CompiledRun`
builds the description), as codes and typed lists of the network's own arrays:

* ``codes[l]``: what layer l is (:data:`DENSE`, :data:`SIGMOID`, ...), ``slot[l]`` its index
  in the lists of its kind (weights, biases, masks);
* ``acts[l]`` the batch entering layer l (``acts[0]`` the gathered inputs, ``acts[L]`` the
  outputs z), ``errs[l]`` the error ∂f/∂acts[l] (each a B × width buffer made once);
* every parameter's array, its gradient buffer and its optimizer slots as flat views
  (``params``, ``grads``, ``slots1``, ``slots2``), which the update walks.

Each formula is the one the layer, loss and optimizer compute eagerly (the same kernels where
they are compiled already: ``numba_kernels``); products go to BLAS through ``np.dot`` except
the batch-1 outer product δᵀx, one multiply per element, which for plain SGD is fused with the
update w ← w − η δᵀx.  Compiled once per dtype and cached on disk like the other kernels: the
network's shape is data here, not code.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from .numba_kernels import compile_cached, elementwise, kernel, philox_fill

# what layer l is
DENSE, SIGMOID, RELU, TANH, IDENTITY, DROPOUT = 0, 1, 2, 3, 4, 5
# the loss: squared error against target rows (SumOfSquares, MeanSquaredError), softmax
# cross-entropy against integer labels
SQUARED, XENT = 0, 1
# the update
SGD, MOMENTUM, NESTEROV, ADAM = 0, 1, 2, 3

_sgd, _momentum, _adam = kernel("sgd", 0), kernel("momentum", 0), kernel("adam", 0)     # the serial builds
_softmax_xent, _sigmoid = elementwise["softmax_xent"], elementwise["sigmoid"]


def _gather(X: Any, rows: Any, start: int, out: Any) -> None:  # pragma: no cover - compiled
    """out[i] = X[rows[start + i]] for the batch's B rows."""
    for i in range(out.shape[0]):
        out[i, :] = X[rows[start + i]]


def _forward(codes: Any, slot: Any, flags: Any, acts: Any, weights: Any, biases: Any, masks: Any,
             ps: Any, keeps: Any, counters: Any, keys: Any, one: Any) -> None:  # pragma: no cover - compiled
    """acts[l+1] = layer l (acts[l]) for every layer, as the layers' forward passes."""
    zero = one - one
    for l in range(len(codes)):
        x, y = acts[l], acts[l + 1]
        code = codes[l]
        if code == DENSE:
            k = slot[l]
            if flags[k]:                          # the weight stored transposed: y = x (Wᵀ)
                np.dot(x, weights[k], y)
            else:
                np.dot(x, weights[k].T, y)        # y = x Wᵀ
            b = biases[k]
            if b.size:
                for r in range(y.shape[0]):       # y ← y + b on every row
                    y[r, :] += b
        elif code == SIGMOID:
            _sigmoid(x.reshape(-1), y.reshape(-1), one)
        elif code == RELU:
            for r in range(x.shape[0]):
                for j in range(x.shape[1]):
                    v = x[r, j]
                    y[r, j] = v if v > zero else zero
        elif code == TANH:
            for r in range(x.shape[0]):
                for j in range(x.shape[1]):
                    y[r, j] = np.tanh(x[r, j])
        elif code == IDENTITY:
            y[:, :] = x
        elif code == DROPOUT:
            k = slot[l]
            m = masks[k]
            p = ps[k]
            if p == zero:
                y[:, :] = x
                continue
            flat = m.reshape(-1)
            philox_fill(flat, counters[k], keys[k, 0], keys[k, 1])     # u, then the counter advances
            keep = keeps[k]                                              # m = [u ≥ p] / (1 − p)
            for i in range(flat.size):
                flat[i] = keep if flat[i] >= p else zero
            for r in range(x.shape[0]):
                for j in range(x.shape[1]):
                    y[r, j] = x[r, j] * m[r, j]


def _loss(code: Any, z: Any, t: Any, labels: Any, scale: float, scale_w: Any, twice: Any, err: Any) -> float:  # pragma: no cover
    """f and err = ∂f/∂z: squared error f = scale Σ (z − t)², err = 2·scale·(z − t); or softmax
    cross-entropy against the labels (the compiled kernel of the eager step)."""
    if code == XENT:
        return _softmax_xent(z, labels, scale_w, err)
    total = 0.0
    for r in range(z.shape[0]):
        for j in range(z.shape[1]):
            e = z[r, j] - t[r, j]
            total += e * e
            err[r, j] = e * twice
    return total * scale


def _backward(codes: Any, slot: Any, flags: Any, acts: Any, errs: Any, weights: Any, grads_w: Any,
              grads_b: Any, biases: Any, masks: Any, ps: Any, lowest: int, fused_lr: Any,
              one: Any) -> None:  # pragma: no cover - compiled
    """Layer by layer from the top: each layer's ∂f/∂θ from errs[l+1] and the error errs[l]
    handed down (none at ``lowest``).  ``fused_lr`` > 0: batch 1 with plain SGD, the outer
    product δᵀx applied to the weights at once, w ← w − η (δ_j x_i)."""
    zero = one - one
    for l in range(len(codes) - 1, lowest - 1, -1):
        d, x, y, e = errs[l + 1], acts[l], acts[l + 1], errs[l]
        code = codes[l]
        below = l > lowest
        if code == DENSE:
            k = slot[l]
            w, gw, gb, b = weights[k], grads_w[k], grads_b[k], biases[k]
            if below:                               # ẽ = δ W, before W changes
                if flags[k]:
                    np.dot(d, w.T, e)
                else:
                    np.dot(d, w, e)
            if fused_lr > zero:                     # w ← w − η δᵀx, b ← b − η δ (batch 1)
                for j in range(d.shape[1]):
                    c = d[0, j]
                    for i in range(x.shape[1]):
                        w[j, i] -= fused_lr * (c * x[0, i])
                if b.size:
                    for j in range(d.shape[1]):
                        b[j] -= fused_lr * d[0, j]
                continue
            if x.shape[0] == 1 and not flags[k]:    # ∂f/∂W = δᵀx: one product per element
                for j in range(d.shape[1]):
                    c = d[0, j]
                    for i in range(x.shape[1]):
                        gw[j, i] = c * x[0, i]
            elif flags[k]:
                np.dot(x.T, d, gw)                  # (∂f/∂W)ᵀ = xᵀ δ
            else:
                np.dot(d.T, x, gw)                  # ∂f/∂W = δᵀ x
            if gb.size:                             # ∂f/∂b = Σ_rows δ
                gb[:] = d[0]
                for r in range(1, d.shape[0]):
                    gb += d[r]
        elif not below:
            continue
        elif code == SIGMOID:                       # e ∘ z ∘ (1 − z)
            for r in range(d.shape[0]):
                for j in range(d.shape[1]):
                    z = y[r, j]
                    e[r, j] = d[r, j] * (z * (one - z))
        elif code == RELU:                          # dy ∘ [z > 0]
            for r in range(d.shape[0]):
                for j in range(d.shape[1]):
                    e[r, j] = d[r, j] if y[r, j] > zero else zero
        elif code == TANH:                          # dy ∘ (1 − z²)
            for r in range(d.shape[0]):
                for j in range(d.shape[1]):
                    z = y[r, j]
                    e[r, j] = d[r, j] * (one - z * z)
        elif code == IDENTITY:
            e[:, :] = d
        elif code == DROPOUT:                       # δ ∘ m, the forward's mask
            if ps[slot[l]] == zero:
                e[:, :] = d
            else:
                m = masks[slot[l]]
                for r in range(d.shape[0]):
                    for j in range(d.shape[1]):
                        e[r, j] = d[r, j] * m[r, j]


def _update(code: int, params: Any, grads: Any, slots1: Any, slots2: Any, decays: Any, t: int,
            hyper: Any, scratch: Any) -> None:  # pragma: no cover - compiled
    """Every parameter's update, the optimizer's compiled kernel with the step's scalars.
    ``hyper``: (η, μ or β₁, β₂, ε, λ, the dtype's smallest normal number) as float64; ``scratch``: a 1-element array of the
    parameters' dtype (a float64 value stored into it is rounded as the eager step rounds it)."""
    lr = hyper[0]
    scratch[0] = lr
    lr_w = scratch[0]
    scratch[0] = hyper[5]
    tiny = scratch[0]
    if code == SGD:
        for k in range(len(params)):
            _sgd(params[k], grads[k], lr_w)
        return
    if code == MOMENTUM or code == NESTEROV:
        scratch[0] = hyper[1]
        mu = scratch[0]
        for k in range(len(params)):
            _momentum(params[k], grads[k], slots1[k], lr_w, mu, code == NESTEROV, tiny)
        return
    # Adam: η_t = η √(1−β₂ᵗ)/(1−β₁ᵗ), ε̂ = ε √(1−β₂ᵗ), d = 1 − ηλ (Adam.step_scalars)
    b1, b2, eps, wd = hyper[1], hyper[2], hyper[3], hyper[4]
    c2 = np.sqrt(1.0 - b2 ** float(t))
    vals = (lr * c2 / (1.0 - b1 ** float(t)), b1, b2, 1.0 - b1, 1.0 - b2, c2 * eps, 1.0 - lr * wd, 1.0)
    w = np.empty(8, scratch.dtype)
    for i in range(8):
        w[i] = vals[i]
    for k in range(len(params)):
        _adam(params[k], grads[k], slots1[k], slots2[k], w[0], w[1], w[2], w[3], w[4], w[5],
              w[6] if decays[k] else w[7], tiny)


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


def _run_steps(X: Any, x_rows: Any, t_rows: Any, T: Any, labels: Any, first: int, count: int,
               codes: Any, slot: Any, flags: Any, acts: Any, errs: Any, weights: Any, biases: Any,
               grads_w: Any, grads_b: Any, masks: Any, ps: Any, keeps: Any, counters: Any, keys: Any,
               tbuf: Any, lbuf: Any, loss_code: int, scale: float, lowest: int,
               update_code: int, params: Any, grads: Any, slots1: Any, slots2: Any, decays: Any,
               t0: int, hyper: Any, fused: bool, check: bool, losses: Any,
               correct: Any) -> int:  # pragma: no cover - compiled
    """Train batches first … first+count−1 (rows ``t_rows[bB:(b+1)B]`` of T and labels,
    ``x_rows`` of X); batch b's loss and correct count go to ``losses[b]``, ``correct[b]``.
    Returns the steps done: fewer than ``count`` when ``check`` and a loss is not finite (that
    step is not applied; its loss is stored)."""
    B = acts[0].shape[0]
    z = acts[len(acts) - 1]
    one = np.ones(1, z.dtype)
    scratch = np.empty(1, z.dtype)
    scratch[0] = 2.0 * scale
    twice = scratch[0]
    scratch[0] = scale
    scale_w = scratch[0]
    scratch[0] = hyper[0]
    fused_lr = scratch[0] if fused else scratch[0] - scratch[0]
    for s in range(count):
        b = first + s
        start = b * B
        _gather(X, x_rows, start, acts[0])
        for i in range(B):
            lbuf[i] = labels[t_rows[start + i]]
        if loss_code == SQUARED:
            _gather(T, t_rows, start, tbuf)
        _forward(codes, slot, flags, acts, weights, biases, masks, ps, keeps, counters, keys, one[0])
        f = _loss(loss_code, z, tbuf, lbuf, scale, scale_w, twice, errs[len(errs) - 1])
        losses[b] = f
        correct[b] = _correct(z, lbuf)
        if check and not np.isfinite(f):
            return s
        _backward(codes, slot, flags, acts, errs, weights, grads_w, grads_b, biases, masks, ps, lowest,
                  fused_lr, one[0])
        if not fused:
            _update(update_code, params, grads, slots1, slots2, decays, t0 + s + 1, hyper, scratch)
    return count


_gather, _forward, _loss, _backward, _update, _correct = (
    compile_cached(f) for f in (_gather, _forward, _loss, _backward, _update, _correct))
run_steps = compile_cached(_run_steps)


def typed(arrays: list) -> Any:
    """A numba typed list of ``arrays`` (all of one type)."""
    out = numba.typed.List()
    for a in arrays:
        out.append(a)
    return out


def row_major(a: Any) -> tuple[Any, bool]:
    """``a`` as a C-contiguous array: itself, or the transpose of a column-major ``a`` (True)."""
    if a.flags.c_contiguous:
        return a, False
    if a.flags.f_contiguous:
        return a.T, True
    raise ValueError(f"the compiled step needs contiguous parameters, got one with strides {a.strides}")


def flat(a: Any) -> Any:
    """The elements of ``a`` as a 1-D view, in the order of :func:`row_major`."""
    return row_major(a)[0].reshape(-1)


def ints(values: list) -> Any:
    return np.asarray(values, dtype=np.int64)


def values(vals: list, dtype: Any) -> Any:
    return np.asarray(vals, dtype=dtype)


def keys(pairs: list) -> Any:
    """Philox keys (k₀, k₁) of the dropout layers, one row each."""
    return np.asarray(pairs, dtype=np.uint32).reshape(-1, 2)


def counter() -> Any:
    """A draw counter for a network without dropout (the typed list needs one element)."""
    return np.zeros((1,), np.uint64)


def tiny(dtype: Any) -> float:
    """The smallest normal number of ``dtype``."""
    return float(np.finfo(dtype).tiny)
