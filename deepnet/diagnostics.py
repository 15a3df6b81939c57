"""Gradient-flow diagnostics: how large is the error ẽ that reaches each layer?

This is the deep-network version of the seed's question "what is the error on the hidden
layer?".  With ``net.diagnostics = GradientFlow()`` (or ``deepnet train --diagnostics``)
every backward pass adds ‖δ‖ arriving at each layer and ‖∂f/∂W‖ of each weight to device
accumulators; they are read once per epoch.  :meth:`GradientFlow.warnings` flags an error
that shrinks or grows by orders of magnitude across the stack.
"""

from __future__ import annotations

from typing import Any

from .backend import Array, backend_of, to_host


class GradientFlow:
    """Per-layer, per-epoch mean (over batches) norms of the error and weight gradients."""

    def __init__(self, threshold: float = 1e3) -> None:
        self.threshold = threshold
        self.error_norm: list[list[float]] = []   # [epoch][layer], input side first
        self.grad_norm: list[list[float]] = []    # [epoch][weight]
        self.layer_names: list[str] = []
        self.weight_names: list[str] = []
        self._err_sums: dict[str, Array] = {}
        self._grad_sums: dict[str, Array] = {}
        self._batches = 0

    @staticmethod
    def _norm(a: Array) -> Array:
        ops = backend_of(a)
        return ops.xp.sqrt(ops.sum_squares(a))

    def record_error(self, index: int | str, error: Array) -> None:
        """Called by ``Network.backward`` with the error arriving at layer ``index``, and by the
        blocks with the error arriving at each layer inside them (``index``: its path, e.g.
        ``"1.block.0"``)."""
        n = self._norm(error)
        key = str(index)
        acc = self._err_sums.get(key)
        self._err_sums[key] = n if acc is None else acc + n
        if key == "0":
            self._batches += 1

    def record_grads(self, params: dict[str, Any]) -> None:
        """Called by ``Network.backward`` after the pass: ‖∂f/∂W‖ of every weight."""
        for name, p in params.items():
            if name.endswith("weight") and p.has_grad:
                n = self._norm(p.grad)
                acc = self._grad_sums.get(name)
                self._grad_sums[name] = n if acc is None else acc + n

    def end_epoch(self, net: Any, epoch: int) -> None:
        """Read this epoch's accumulators (once) and reset them."""
        count = max(self._batches, 1)
        layers = list(self._err_sums)[::-1]          # backward meets them output side first
        self.layer_names = [f"{i}:{_layer_at(net, i).name}" for i in layers]
        self.error_norm.append([float(to_host(self._err_sums[i])) / count for i in layers])
        self.weight_names = sorted(self._grad_sums, key=lambda k: int(k.split(".")[0]))
        self.grad_norm.append([float(to_host(self._grad_sums[k])) / count for k in self.weight_names])
        self._err_sums, self._grad_sums, self._batches = {}, {}, 0

    def records(self) -> dict[str, Any]:
        return {"layer_names": self.layer_names, "error_norm": self.error_norm,
                "weight_names": self.weight_names, "grad_norm": self.grad_norm}

    def warnings(self) -> list[str]:
        """Messages about vanishing or exploding error across the stack, last epoch."""
        if not self.error_norm:
            return []
        last = self.error_norm[-1]
        top, bottom = last[-1], last[0]
        if bottom > 0 and top / bottom > self.threshold:
            return [f"vanishing gradients: the error reaching {self.layer_names[0]} is {top / bottom:.1e} times "
                    f"smaller than at {self.layer_names[-1]} (try ReLU with He initialization, BatchNorm, "
                    "or fewer layers)"]
        if top > 0 and bottom / top > self.threshold:
            return [f"exploding gradients: the error grows {bottom / top:.1e} times from {self.layer_names[-1]} "
                    f"down to {self.layer_names[0]} (try gradient clipping or a smaller learning rate)"]
        return []


def _layer_at(net: Any, path: str) -> Any:
    """The layer at ``path`` (``"1"``: layer 1; ``"1.block.0"``: inside its block)."""
    first, _, rest = path.partition(".")
    layer = net.layers[int(first)]
    for name in rest.split(".") if rest else ():
        layer = layer.sublayers()[name]
    return layer
