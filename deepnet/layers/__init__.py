"""Built-in layers.  Each has an explicit forward and backward pass."""

from .activations import ELU, GELU, Activation, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Softplus, Tanh
from .augment import RandomCrop, RandomFlip, RandomShift
from .base import Layer, Parameter, ShapeError
from .combinators import Add, Concatenate, Residual, Sequential
from .conv import AvgPool2D, Conv2D, Flatten, GlobalAvgPool2D, MaxPool2D, Reshape
from .dense import Dense
from .dropout import Dropout
from .normalization import BatchNorm, LayerNorm

__all__ = [
    "Add", "Concatenate", "ELU", "GELU", "Activation", "AvgPool2D", "BatchNorm", "Conv2D", "Dense", "Dropout",
    "Flatten", "GlobalAvgPool2D", "Identity", "Layer", "LayerNorm", "LeakyReLU", "MaxPool2D", "Parameter",
    "RandomCrop", "RandomFlip", "RandomShift", "ReLU", "Reshape", "Residual", "Sequential", "ShapeError", "Sigmoid",
    "Softmax", "Softplus", "Tanh",
]
