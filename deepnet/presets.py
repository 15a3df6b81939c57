"""Ready-made networks: the course notebook's seed network, simple MLP specs, a small CNN, a
residual MLP (and its plain counterpart) and a small ResNet for 28×28 images."""

from __future__ import annotations

from typing import Any

from .backend import Array, Ops
from .layers import BatchNorm, Dense, Dropout, LeakyReLU, ReLU, Residual, Sequential, Sigmoid, Tanh
from .layers.base import Layer
from .layers.conv import Conv2D, Flatten, GlobalAvgPool2D, MaxPool2D, Reshape
from .losses import SumOfSquares
from .network import Network
from .optimizers import SGD


class ShortcutSigmoidDense(Dense):
    """z = g(x Wᵀ) with the course notebook's shortcut in backward (deliberately inexact).

    ∂f/∂W is exact, 2(e ∘ z ∘ (1 − z))·xᵀ, but the error handed to the layer below is
    ẽ = Aᵀe instead of Aᵀ(e ∘ z ∘ (1 − z)).  Only for reproducing the notebook's 94.65%;
    it fails the gradient check by design.
    """

    def forward(self, x: Array, training: bool = False) -> Array:
        y = super().forward(x, training)
        z = self.ops.sigmoid(y)
        self._cache = (x, z) if training else None
        return z

    def backward(self, grad_output: Array, need_input_grad: bool = True) -> Array | None:
        x, z = self._need_cache()
        ops = self.ops
        dx = ops.gemm(grad_output, self._params["weight"].data) if need_input_grad else None
        delta = ops.sigmoid_backward_(grad_output, z)
        gw, acc = self._params["weight"].grad_target()
        ops.gemm(delta, x, trans_a=True, out=gw, accumulate=acc)
        if self.bias:
            gb, acc = self._params["bias"].grad_target()
            ops.sum_rows(delta, out=gb, accumulate=acc)
        return dx

    def to_onnx(self, graph: Any, x: str) -> str:
        """ONNX export (evaluation is the forward pass): Gemm, then Sigmoid."""
        inputs = [x, graph.param(self, "weight")] + ([graph.param(self, "bias")] if self.bias else [])
        return graph.op("Sigmoid", graph.op("Gemm", *inputs, transB=1))


def seed_layers(shortcut: bool = False) -> list[Layer]:
    """784-50-10, sigmoid on both layers, no biases, normal(0, 1/√n_in) weights."""
    if shortcut:
        return [Dense(784, 50, bias=False, init="normal"), Sigmoid(),
                ShortcutSigmoidDense(50, 10, bias=False, init="normal")]
    return [Dense(784, 50, bias=False, init="normal"), Sigmoid(),
            Dense(50, 10, bias=False, init="normal"), Sigmoid()]


def seed_network(seed: int = 0, shortcut: bool = False, backend: str | Ops | None = None) -> Network:
    """The notebook's network with its loss (Σ(z − y)², targets 0.01/0.99) and SGD(η = 0.1).

    Train it with ``batch_size=1`` on inputs scaled x/255·0.99 + 0.01.
    """
    return Network(seed_layers(shortcut), seed=seed, backend=backend,
                   loss=SumOfSquares(on=0.99, off=0.01), optimizer=SGD(lr=0.1))


ACTIVATIONS: dict[str, Any] = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh, "leaky_relu": LeakyReLU}


def parse_spec(spec: str) -> list[int]:
    """``"784-128-64-10"`` → [784, 128, 64, 10]."""
    try:
        sizes = [int(s) for s in spec.replace(",", "-").replace("x", "-").split("-") if s.strip()]
    except ValueError:
        raise ValueError(f"layer spec {spec!r}: expected sizes joined by '-', e.g. 784-128-10") from None
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise ValueError(f"layer spec {spec!r}: need at least an input and an output size, all positive")
    return sizes


def mlp_layers(spec: str | list[int], activation: str = "relu", output_activation: str | None = None,
               bias: bool = True, init: str | None = None, hidden: Any = None,
               batchnorm: bool = False) -> list[Layer]:
    """Dense layers for ``spec`` with ``activation`` between them.

    ``batchnorm``: each hidden Dense layer (without a bias: BatchNorm's β replaces it) is
    followed by BatchNorm, then the activation.

    ``output_activation=None`` leaves logits (for softmax cross-entropy).  ``init``
    defaults to He for ReLU-like activations and Glorot otherwise.  ``hidden``, if given,
    is called with the hidden width and returns extra layers to insert after each
    activation (e.g. dropout).
    """
    sizes = parse_spec(spec) if isinstance(spec, str) else list(spec)
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}: expected one of {sorted(ACTIVATIONS)}")
    init = init or ("he" if activation in ("relu", "leaky_relu") else "glorot")
    layers: list[Layer] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        last = i == len(sizes) - 2
        norm = batchnorm and not last
        layers.append(Dense(a, b, bias=bias and not norm,
                            init="glorot" if last and activation in ("relu", "leaky_relu") else init))
        if norm:
            layers.append(BatchNorm(b))
        if not last:
            layers.append(ACTIVATIONS[activation]())
            if hidden is not None:
                layers.extend(hidden(b))
        elif output_activation is not None:
            layers.append(ACTIVATIONS[output_activation]())
    return layers


def cnn_layers(image_shape: tuple[int, ...] | list[int], n_classes: int, channels: tuple[int, int] = (32, 64),
               dropout: float = 0.5, batchnorm: bool = False, rows: bool = True) -> list[Layer]:
    """The shape of Keras' "simple MNIST convnet" for rows of ``image_shape`` pixels ((H, W), or
    (C, H, W)) (``rows=False``: for the images themselves, (n, C, H, W), without the Reshape):
    Reshape to NCHW → conv 3×3 (32) → ReLU → max-pool 2 → conv 3×3 (64) → ReLU →
    max-pool 2 → Flatten → Dropout(0.5) → Dense to ``n_classes`` logits (``batchnorm``: each
    convolution, without a bias, followed by BatchNorm before its ReLU).  Convolutions are
    "valid" as in Keras for images of 16 pixels or more (28 → 26 → 13 → 11 → 5), "same" below
    (8 → 8 → 4 → 4 → 2, for the digits)."""
    shape = [int(v) for v in image_shape]
    if len(shape) == 2:
        shape = [1, *shape]
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"cnn_layers: image_shape must be (H, W) or (C, H, W), got {tuple(image_shape)!r}")
    c, h, w = shape
    padding: Any = 0 if min(h, w) >= 16 else "same"
    layers: list[Layer] = [Reshape(shape)] if rows else []
    size = (c, h, w)
    for out in channels:
        conv = Conv2D(size[0], out, 3, padding=padding, bias=not batchnorm)
        pool = MaxPool2D(2)
        size = pool.output_shape(conv.output_shape(size))
        layers += [conv] + ([BatchNorm(out)] if batchnorm else []) + [ReLU(), pool]
    flat = size[0] * size[1] * size[2]
    layers += [Flatten()] + ([Dropout(dropout)] if dropout else []) + [Dense(flat, n_classes, init="glorot")]
    return layers


def _image_shape(where: str, image_shape: tuple[int, ...] | list[int]) -> list[int]:
    shape = [int(v) for v in image_shape]
    if len(shape) == 2:
        shape = [1, *shape]
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{where}: image_shape must be (H, W) or (C, H, W), got {tuple(image_shape)!r}")
    return shape


def resmlp_blocks(depth: int) -> int:
    """The number of two-Dense blocks of a residual (or plain) MLP of ``depth`` Dense layers:
    depth = 2·blocks + 2 (the input projection and the output layer), so depth is even and ≥ 4."""
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 4 or depth % 2:
        raise ValueError(f"residual MLP depth: expected an even number of Dense layers, 4 or more "
                         f"(2·blocks + 2), got {depth!r}")
    return (depth - 2) // 2


def resmlp_layers(n_in: int, n_classes: int, depth: int = 10, width: int = 64, residual: bool = True) -> list[Layer]:
    """A pre-activation residual MLP with ``depth`` Dense layers of ``width`` units (He et al. 2016,
    "Identity mappings"), for rows of ``n_in`` features:

    Dense(n_in, w) → blocks × Residual(BN → ReLU → Dense(w, w) → BN → ReLU → Dense(w, w)) →
    BN → ReLU → Dense(w, n_classes) logits, with blocks = (depth − 2)/2.

    ``residual=False``: the same layers without the shortcuts (the plain MLP of the
    degradation experiment, docs/training.md).  Hidden Dense layers have He initialization, the
    output layer Glorot.  Parameters:
    (n_in + 1)·w + blocks·(2w² + 6w) + 2w + (w + 1)·n_classes.
    """
    blocks = resmlp_blocks(depth)
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"residual MLP width: expected a positive integer, got {width!r}")
    layers: list[Layer] = [Dense(n_in, width, init="he")]
    for _ in range(blocks):
        body = [BatchNorm(width), ReLU(), Dense(width, width, init="he"), BatchNorm(width), ReLU(),
                Dense(width, width, init="he")]
        layers += [Residual(Sequential(*body))] if residual else body
    return layers + [BatchNorm(width), ReLU(), Dense(width, n_classes, init="glorot")]


def resmlp_params(n_in: int, n_classes: int, depth: int, width: int) -> int:
    """The parameter count of :func:`resmlp_layers` (with or without shortcuts)."""
    w = width
    return (n_in + 1) * w + resmlp_blocks(depth) * (2 * w * w + 6 * w) + 2 * w + (w + 1) * n_classes


#: the channels of the ResNet preset's three stages
RESNET_CHANNELS = (16, 32, 64)


def resnet_blocks(depth: int) -> int:
    """The basic blocks per stage of a ResNet of ``depth`` = 6n + 2 weighted layers (20: n = 3)."""
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"ResNet depth: expected 6n+2 for n ≥ 1 (8, 14, 20, 26, 32, 44, 56, 110, ...), "
                         f"got {depth!r}")
    return (depth - 2) // 6


def _basic_block(c_in: int, c_out: int, stride: int) -> list[Layer]:
    """Residual(conv3×3 → BN → ReLU → conv3×3 → BN, shortcut) → ReLU; the shortcut is the
    identity, or a 1×1 stride-2 convolution + BN where the block halves the size."""
    body = Sequential(Conv2D(c_in, c_out, 3, stride=stride, padding=1, bias=False), BatchNorm(c_out), ReLU(),
                      Conv2D(c_out, c_out, 3, padding=1, bias=False), BatchNorm(c_out))
    shortcut = None
    if stride != 1 or c_in != c_out:
        shortcut = Sequential(Conv2D(c_in, c_out, 1, stride=stride, bias=False), BatchNorm(c_out))
    return [Residual(body, shortcut), ReLU()]


def resnet_layers(image_shape: tuple[int, ...] | list[int] = (1, 28, 28), n_classes: int = 10, depth: int = 20,
                  rows: bool = True, augment: list[Layer] | None = None) -> list[Layer]:
    """A small ResNet (He et al. 2016, the CIFAR ResNet-20 family) for images of ``image_shape``
    ((H, W) or (C, H, W), e.g. 28×28 digits), ``depth`` = 6n + 2 weighted layers:

    conv 3×3 (16) → BN → ReLU → three stages of n basic blocks with 16, 32, 64 channels (the
    first block of stages 2 and 3 has stride 2 and a 1×1 stride-2 conv + BN shortcut: 28 → 14 → 7)
    → global average pool → Dense(64, ``n_classes``) logits.

    ``rows=True`` starts with a Reshape, for data sets given as rows of pixels; ``rows=False``
    takes the images themselves, (n, C, H, W).  ``augment``: layers inserted on the images, before
    the first convolution.  Convolutions have no bias (BatchNorm's β replaces it).
    """
    shape = _image_shape("resnet_layers", image_shape)
    n = resnet_blocks(depth)
    c = RESNET_CHANNELS[0]
    layers: list[Layer] = ([Reshape(shape)] if rows else []) + list(augment or [])
    layers += [Conv2D(shape[0], c, 3, padding=1, bias=False), BatchNorm(c), ReLU()]
    for stage, c_out in enumerate(RESNET_CHANNELS):
        for i in range(n):
            layers += _basic_block(c, c_out, 2 if stage > 0 and i == 0 else 1)
            c = c_out
    return layers + [GlobalAvgPool2D(), Dense(c, n_classes, init="glorot")]


def resnet_params(in_channels: int, n_classes: int, depth: int) -> int:
    """The parameter count of :func:`resnet_layers`: 3×3 convolutions (no bias), two BatchNorm
    parameters per channel, the 1×1 projections with their BatchNorm, and the Dense layer."""
    n, (a, b, c) = resnet_blocks(depth), RESNET_CHANNELS
    stem = in_channels * a * 9 + 2 * a

    def stage(c_in: int, c_out: int) -> int:
        first = c_in * c_out * 9 + c_out * c_out * 9 + 4 * c_out
        proj = c_in * c_out + 2 * c_out if c_in != c_out else 0
        return first + proj + (n - 1) * (2 * c_out * c_out * 9 + 4 * c_out)

    return stem + stage(a, a) + stage(a, b) + stage(b, c) + (c + 1) * n_classes
