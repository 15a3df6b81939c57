"""Built-in layers.  Each has an explicit forward and backward pass."""

from .activations import ELU, GELU, Activation, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Softplus, Tanh
from .base import Layer, Parameter, ShapeError
from .dense import Dense
from .dropout import Dropout
from .normalization import BatchNorm, LayerNorm

__all__ = [
    "ELU", "GELU", "Activation", "BatchNorm", "Dense", "Dropout", "Identity", "Layer", "LayerNorm", "LeakyReLU",
    "Parameter", "ReLU", "ShapeError", "Sigmoid", "Softmax", "Softplus", "Tanh",
]
