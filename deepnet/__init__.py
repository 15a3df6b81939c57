"""deepnet: neural networks with explicit, readable backward passes on NumPy or CuPy."""

from .backend import (
    BackendError,
    available_backends,
    get_backend,
    set_backend,
    to_device,
    to_host,
    use_backend,
)
from .callbacks import Callback, EarlyStopping, KeepBest, LambdaCallback
from .gradcheck import GradCheckError, check_layer, check_loss
from .layers import (
    Add,
    Concatenate,
    Residual,
    Sequential,
    ELU,
    GELU,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    Reshape,
    LayerNorm,
    Softplus,
    Identity,
    Layer,
    LeakyReLU,
    Parameter,
    RandomCrop,
    RandomFlip,
    RandomShift,
    ReLU,
    ShapeError,
    Sigmoid,
    Softmax,
    Tanh,
)
from .logs import CSVLogger, TensorBoardLogger
from .losses import Loss, MeanSquaredError, SoftmaxCrossEntropy, SumOfSquares
from .errors import TrainingInterrupted
from .network import History, Network, NonFiniteError
from .onnx_export import OnnxExportError
from .optimizers import (
    SGD,
    Adam,
    AdamW,
    ClipNorm,
    GradientTransform,
    MaxNorm,
    Momentum,
    Optimizer,
    RMSProp,
    WeightDecay,
    register_optimizer,
)
from .testing import LayerContractError, check_layer_contract
from .training import FitSettings
from .version import __version__

__all__ = [
    "LayerContractError", "check_layer_contract",
    "Add", "Concatenate", "Residual", "Sequential",
    "ELU", "GELU", "BatchNorm", "Dropout", "LayerNorm", "Softplus",
    "AvgPool2D", "Conv2D", "Flatten", "GlobalAvgPool2D", "MaxPool2D", "Reshape",
    "RandomCrop", "RandomFlip", "RandomShift",
    "SGD", "Adam", "AdamW", "BackendError", "Callback", "Dense", "EarlyStopping", "GradCheckError",
    "FitSettings", "History", "Identity", "KeepBest", "LambdaCallback", "Layer", "LeakyReLU", "Loss",
    "MeanSquaredError", "Momentum", "Network", "NonFiniteError", "Optimizer", "Parameter", "RMSProp",
    "ReLU", "ShapeError", "Sigmoid", "Softmax", "SoftmaxCrossEntropy", "SumOfSquares", "Tanh",
    "TrainingInterrupted",
    "CSVLogger", "TensorBoardLogger", "OnnxExportError",
    "ClipNorm", "GradientTransform", "MaxNorm", "WeightDecay", "register_optimizer",
    "__version__", "available_backends", "check_layer", "check_loss", "get_backend", "set_backend",
    "to_device", "to_host", "use_backend",
]
