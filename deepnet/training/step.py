"""One training step: the derivation's forward pass, error and backward pass, then an update."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..backend import Array
from ..losses import Loss
from ..optimizers import Optimizer


def train_step(model: Any, loss: Loss, optimizer: Optimizer, x: Array, t: Array,
               accept: Callable[[Array], bool] | None = None, share: float = 1.0,
               gradients: Any = None) -> tuple[Array, Array] | None:
    """One step of gradient descent on the batch (x, t); returns (f, z), or None if refused.

    z = model(x) (keeping what backward needs); f and ∂f/∂z from the loss; backward hands
    each layer the error from above (ẽ = Aᵀ·δ) and accumulates every ∂f/∂θ; the optimizer
    updates every θ; the gradients are zeroed.  ``accept(f)`` (the NaN guard) is asked
    before anything is changed: False drops the step.

    Data-parallel (``gradients``: the run's
    :class:`~deepnet.distributed.gradients.GradientBuckets`): ∂f/∂z is scaled by this rank's
    ``share`` n_r / N of the global batch, and every ∂f/∂θ is summed over the ranks between
    backward and the update.
    """
    z = model.forward(x, True)
    f, dz = loss.forward_backward(z, t)
    if accept is not None and not accept(f):
        return None
    if share != 1.0:
        dz *= share
    if gradients is not None:
        gradients.begin()
    model.backward(dz)
    if gradients is not None:
        gradients.finish()
    optimizer.step(model.parameters())     # on the backend the model bound it to
    model.zero_grad()
    return f, z
