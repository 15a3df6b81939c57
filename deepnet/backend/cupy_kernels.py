"""CUDA elementwise kernels for the CuPy backend (compiled on first use by CuPy)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


def build(cupy: Any) -> SimpleNamespace:
    ek = cupy.ElementwiseKernel
    return SimpleNamespace(
        sigmoid_bwd=ek("T y, T dy", "T dx", "dx = dy * y * (T(1) - y)", "deepnet_sigmoid_bwd"),
        tanh_bwd=ek("T y, T dy", "T dx", "dx = dy * (T(1) - y * y)", "deepnet_tanh_bwd"),
        relu_bwd=ek("T y, T dy", "T dx", "dx = y > T(0) ? dy : T(0)", "deepnet_relu_bwd"),
        sgd=ek("T g, T lr", "T w", "w -= lr * g", "deepnet_sgd"),
        momentum=ek(
            "T g, T lr, T mu, bool nesterov", "T w, T v",
            "v = mu * v + g; w -= lr * (nesterov ? g + mu * v : v)",
            "deepnet_momentum"),
        # c1 = 1 − β₁ and c2 = 1 − β₂ come in computed in float64: T(1) − b2 in float32 is
        # 0.00099998713 for β₂ = 0.999, 1.3e-5 too small (found by the one-step parity check)
        adam=ek(
            "T g, T lr_t, T b1, T b2, T c1, T c2, T eps_hat, T decay", "T w, T m, T v",
            "m = b1 * m + c1 * g;"
            "v = b2 * v + c2 * g * g;"
            "w = w * decay - lr_t * m / (sqrt(v) + eps_hat)",
            "deepnet_adam"),
    )
