"""Writing, checking and using a new layer.

`Scale` multiplies each feature by a learned factor and adds a learned offset:
y = x ∘ γ + β (γ, β of shape (n_features,)).  Backward, for the error δ = ∂f/∂y:
∂f/∂γ = Σ_rows δ ∘ x,  ∂f/∂β = Σ_rows δ,  and the error handed down is δ ∘ γ.

    python examples/custom_layer.py
"""

from __future__ import annotations

import numpy as np

import deepnet as dn


class Scale(dn.Layer):
    """y = x ∘ γ + β, one γ and β per feature."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.n_in = n_features          # lets Network check the widths of the stack

    def get_config(self) -> dict:
        return {"n_features": self.n_in}  # plain data: enough to rebuild the layer

    def initialize(self, rng) -> None:
        # parameters are created from host (NumPy) arrays and moved to the backend;
        # add_param also marks the layer initialized, so a new Network keeps them
        self.add_param("gamma", np.ones(self.n_in))
        self.add_param("beta", np.zeros(self.n_in))

    def forward(self, x, training=False):
        self._check_input(x, self.n_in)
        p = self.parameters()                      # by name; .data is the value
        self._cache = x if training else None      # keep only what backward needs
        return x * p["gamma"].data + p["beta"].data

    def backward(self, grad_output, need_input_grad=True):
        x = self._need_cache()                     # clear error if there was no training forward
        p = self.parameters()
        xp = self.ops.xp                           # the backend's array namespace, never numpy
        p["gamma"].grad += xp.sum(grad_output * x, axis=0)   # always accumulate (+=)
        p["beta"].grad += xp.sum(grad_output, axis=0)
        return grad_output * p["gamma"].data if need_input_grad else None


def main() -> None:
    rng = np.random.default_rng(0)

    # 1. check the backward pass against finite differences (float64, raises on a mismatch)
    layer = Scale(3)
    print(dn.check_layer(layer, rng.normal(size=(5, 3))))

    # 2. use it in a network like any built-in layer
    X = rng.normal(size=(500, 2)).astype(np.float32) * [10.0, 0.1]    # badly scaled inputs
    y = (X[:, 0] / 10 + X[:, 1] * 10 > 0).astype(np.int64)
    net = dn.Network([Scale(2), dn.Dense(2, 8), dn.Tanh(), dn.Dense(8, 2)], seed=0)
    print(net.summary())
    hist = net.fit(X, y, epochs=20, batch_size=32, loss="xent", optimizer=dn.Adam(0.05))
    print(f"training accuracy after 20 epochs: {hist['accuracy'][-1]:.3f}")


if __name__ == "__main__":
    main()
