"""Batch and layer normalization."""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import Array, to_device, to_host
from ..errors import ShapeError
from .base import Layer


def _normalize_backward(dxhat: Array, xhat: Array, inv_std: Array, axis: int | tuple[int, ...], xp: Any,
                        means: Any = None) -> Array:
    """∂f/∂x from ∂f/∂x̂ for x̂ = (x − μ)/σ over ``axis`` (n entries):
    (1/σ)·(dx̂ − mean(dx̂) − x̂·mean(dx̂ ∘ x̂)).  ``means(a, b)``: the two means over the
    global batch (synchronized BatchNorm); None: over this batch."""
    if means is None:
        m1 = xp.mean(dxhat, axis=axis, keepdims=True)
        m2 = xp.mean(dxhat * xhat, axis=axis, keepdims=True)
    else:
        m1, m2 = means(dxhat, dxhat * xhat)
    dxhat -= m1
    dxhat -= xhat * m2
    dxhat *= inv_std
    return dxhat


def _affine_normalize_backward(layer: Layer, cache: Any, dy: Array, need_input_grad: bool, axis: int,
                               means: Any = None) -> Array | None:
    """Backward of y = γ x̂ + β with x̂ normalized over ``axis``: ∂f/∂γ = Σ_rows dy ∘ x̂,
    ∂f/∂β = Σ_rows dy, and ∂f/∂x through :func:`_normalize_backward`."""
    xhat, inv_std = cache
    xp = layer.ops.xp
    params = layer.parameters()
    g, b = params["gamma"], params["beta"]
    g.grad[...] += xp.sum(dy * xhat, axis=0)
    b.grad[...] += xp.sum(dy, axis=0)
    if not need_input_grad:
        return None
    dy *= g.data
    return _normalize_backward(dy, xhat, inv_std, axis, xp, means)


class _KeptInput(NamedTuple):
    """What BatchNorm of images keeps for backward where the backend's kernels compute it: x, μ, s."""

    x: Array
    mean: Array
    inv_std: Array


class BatchNorm(Layer):
    """Normalize each feature over the batch, then scale and shift: y = γ x̂ + β.

    Training uses the batch mean μ and variance σ² (x̂ = (x − μ)/√(σ² + ε)) and updates
    running averages (``momentum`` is the weight of the old value; the running variance
    uses the unbiased batch variance); evaluation uses the running averages.

    Images in training, on a backend with ``ops.batch_norm_kernel`` (NumPy with numba): the
    same maths in compiled passes (``ops.batch_norm_train`` and its backward), keeping x, μ and
    s rather than x̂.

    In data-parallel training the batch is this process's shard of the global batch; with
    :meth:`set_sync` (``fit(sync_batchnorm=True)``) μ, σ² and the means of backward are
    those of the global batch, summed over the ranks (three reductions forward, one backward).
    """

    #: the communicator the statistics are summed over (None: this batch's own)
    sync: Any = None

    def __init__(self, n_features: int, momentum: float = 0.9, eps: float = 1e-5) -> None:
        super().__init__()
        if not isinstance(n_features, int) or n_features < 1:
            raise ValueError(f"BatchNorm: n_features must be a positive integer, got {n_features!r}")
        self.n_in = n_features
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.running_mean: Array | None = None
        self.running_var: Array | None = None

    def get_config(self) -> dict[str, Any]:
        return {"n_features": self.n_in, "momentum": self.momentum, "eps": self.eps}

    def set_sync(self, comm: Any) -> None:
        """Normalize with the statistics of the global batch, summed over ``comm``'s ranks
        (None: this process's batch)."""
        self.sync = comm

    def _global_moments(self, x: Array, axes: tuple[int, ...], bshape: Any) -> tuple[Array, Array, float]:
        """(μ, σ², N) over every rank's batch: N = Σ n_r, μ = Σ x / N, σ² = Σ (x − μ)² / N."""
        xp, comm = self.ops.xp, self.sync
        n_local = 1
        for a in axes:
            n_local *= x.shape[a]
        n = comm.sum_floats([float(n_local)])[0]
        mu = comm.allreduce(xp.sum(x, axis=axes)) / n
        d = x - (mu if bshape is None else xp.reshape(mu, bshape))
        var = comm.allreduce(xp.sum(d * d, axis=axes)) / n
        return mu, var, n

    def _global_means(self, n: float, axes: tuple[int, ...], bshape: Any) -> Any:
        """means(a, b): the means of a and b over every rank's batch, in one reduction."""
        xp, comm = self.ops.xp, self.sync

        def means(a: Array, b: Array) -> tuple[Array, Array]:
            both = comm.allreduce(xp.concat([xp.sum(a, axis=axes), xp.sum(b, axis=axes)])) / n
            k = self.n_in
            shape = (1, k) if bshape is None else bshape
            return xp.reshape(both[:k], shape), xp.reshape(both[k:], shape)

        return means

    def initialize(self, rng: Any) -> None:
        self.add_param("gamma", [1.0] * self.n_in)
        self.add_param("beta", [0.0] * self.n_in)
        self.running_mean = to_device([0.0] * self.n_in, self.ops, dtype=self.ops.dtype_name(self.dtype))
        self.running_var = to_device([1.0] * self.n_in, self.ops, dtype=self.ops.dtype_name(self.dtype))

    def state_arrays(self) -> dict[str, Any]:
        return {"running_mean": to_host(self.running_mean).copy(), "running_var": to_host(self.running_var).copy()}

    def load_state_arrays(self, arrays: dict[str, Any]) -> None:
        name = self.ops.dtype_name(self.dtype)
        if "running_mean" in arrays:
            self.running_mean = to_device(arrays["running_mean"], self.ops, dtype=name, copy=True)
        if "running_var" in arrays:
            self.running_var = to_device(arrays["running_var"], self.ops, dtype=name, copy=True)

    def _on_moved(self) -> None:
        if self.running_mean is not None:
            self.load_state_arrays(self.state_arrays())

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) not in (1, 3) or in_shape[0] != self.n_in:
            raise ShapeError(f"BatchNorm({self.n_in}) expects rows ({self.n_in},) or images ({self.n_in}, H, W), "
                             f"got per-sample shape {tuple(in_shape)}")
        return tuple(in_shape)

    def _axes(self, x: Array) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        """(axes reduced over, the shape a per-feature vector broadcasts as): rows (n, k) reduce
        over the batch; NCHW images over batch and pixels, per channel."""
        if x.ndim == 2 and x.shape[1] == self.n_in:
            return (0,), None
        if x.ndim == 4 and x.shape[1] == self.n_in:
            return (0, 2, 3), (1, self.n_in, 1, 1)
        raise ShapeError(f"BatchNorm({self.n_in}) expects rows (n, {self.n_in}) or images (n, {self.n_in}, H, W), "
                         f"got an input of shape {tuple(getattr(x, 'shape', ()))}")

    def forward(self, x: Array, training: bool = False) -> Array:
        """Rows: statistics per feature over the batch.  Images (n, C, H, W): per channel over the
        batch and every pixel (m = n·H·W values each), as ``torch.nn.BatchNorm2d``."""
        axes, bshape = self._axes(x)
        xp = self.ops.xp
        p = self._params
        gamma, beta = p["gamma"].data, p["beta"].data
        if training and bshape is not None and self.sync is None and self.ops.batch_norm_kernel:
            n = x.shape[0] * x.shape[2] * x.shape[3]                        # the backend's compiled passes
            if n < 2:
                raise ValueError(f"BatchNorm needs at least 2 values per feature in a training batch, got {n:g}")
            y, mu, var, inv_std = self.ops.batch_norm_train(x, gamma, beta, self.eps)
            self._update_running(mu, var, n)
            self._cache = _KeptInput(x, mu, inv_std)                        # x̂ is recomputed in backward
            return y
        if training:
            if self.sync is None:
                n = 1
                for a in axes:
                    n *= x.shape[a]
                if n >= 2:
                    mu = xp.mean(x, axis=axes)
                    var = xp.var(x, axis=axes)
            else:
                mu, var, n = self._global_moments(x, axes, bshape)
            if n < 2:
                raise ValueError(f"BatchNorm needs at least 2 values per feature in a training batch, got {n:g}")
            self._update_running(mu, var, n)
        else:
            mu, var = self.running_mean, self.running_var
        inv_std = 1.0 / xp.sqrt(var + self.eps)
        if bshape is not None:
            mu, inv_std = xp.reshape(mu, bshape), xp.reshape(inv_std, bshape)
            gamma, beta = xp.reshape(gamma, bshape), xp.reshape(beta, bshape)
        xhat = (x - mu) * inv_std
        means = self._global_means(n, axes, bshape) if training and self.sync is not None else None
        self._cache = (xhat, inv_std, axes, bshape, means) if training else None
        return xhat * gamma + beta

    def _update_running(self, mu: Array, var: Array, n: float) -> None:
        """The running averages: old·momentum + batch·(1 − momentum), the variance unbiased."""
        m = self.momentum
        # in place: a captured step (CUDA graph) replays writes into these very buffers
        self.running_mean *= m
        self.running_mean += mu * (1.0 - m)
        self.running_var *= m
        self.running_var += var * ((1.0 - m) * n / (n - 1))

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        """∂f/∂γ = Σ dy ∘ x̂, ∂f/∂β = Σ dy (over the reduced axes); ∂f/∂x through
        :func:`_normalize_backward` with dx̂ = dy ∘ γ."""
        cache = self._need_cache()
        if isinstance(cache, _KeptInput):
            g, b = self._params["gamma"], self._params["beta"]
            return self.ops.batch_norm_train_backward(grad_output, cache.x, cache.mean, cache.inv_std, g.data,
                                                      g.grad, b.grad, need_input_grad)
        xhat, inv_std, axes, bshape, means = cache
        if bshape is None:
            return _affine_normalize_backward(self, (xhat, inv_std), grad_output, need_input_grad, axis=0,
                                              means=means)
        xp = self.ops.xp
        g, b = self._params["gamma"], self._params["beta"]
        dy = grad_output
        g.grad[...] += xp.sum(dy * xhat, axis=axes)
        b.grad[...] += xp.sum(dy, axis=axes)
        if not need_input_grad:
            return None
        dy *= xp.reshape(g.data, bshape)
        return _normalize_backward(dy, xhat, inv_std, axes, xp, means)


class LayerNorm(Layer):
    """Normalize each sample over its features, then scale and shift: y = γ x̂ + β."""

    def __init__(self, n_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        if not isinstance(n_features, int) or n_features < 1:
            raise ValueError(f"LayerNorm: n_features must be a positive integer, got {n_features!r}")
        self.n_in = n_features
        self.eps = float(eps)

    def get_config(self) -> dict[str, Any]:
        return {"n_features": self.n_in, "eps": self.eps}

    def initialize(self, rng: Any) -> None:
        self.add_param("gamma", [1.0] * self.n_in)
        self.add_param("beta", [0.0] * self.n_in)

    def forward(self, x: Array, training: bool = False) -> Array:
        self._check_input(x, self.n_in)
        xp = self.ops.xp
        mu = xp.mean(x, axis=1, keepdims=True)
        inv_std = 1.0 / xp.sqrt(xp.var(x, axis=1, keepdims=True) + self.eps)
        xhat = (x - mu) * inv_std
        self._cache = (xhat, inv_std) if training else None
        return xhat * self._params["gamma"].data + self._params["beta"].data

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        return _affine_normalize_backward(self, self._need_cache(), grad_output, need_input_grad, axis=1)
