"""Data sets: MNIST/Fashion-MNIST IDX files, CSV, .npz and an offline default."""

from .errors import DatasetError
from .idx import parse_idx, read_idx, write_idx
from .mnist import load_mnist_folder, scale_pixels

__all__ = ["DatasetError", "load_mnist_folder", "parse_idx", "read_idx", "scale_pixels", "write_idx"]
