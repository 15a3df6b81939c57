"""Built-in layers.  Each has an explicit forward and backward pass."""

from .activations import Activation, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .base import Layer, Parameter, ShapeError
from .dense import Dense

__all__ = [
    "Activation", "Dense", "Identity", "Layer", "LeakyReLU", "Parameter", "ReLU",
    "ShapeError", "Sigmoid", "Softmax", "Tanh",
]
