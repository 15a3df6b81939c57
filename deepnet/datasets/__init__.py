"""Data sets: MNIST/Fashion-MNIST IDX files, CSV, .npz and an offline default (digits)."""

from .sources import cache_dir, content_digests, content_sha256_of, download, locate, sha256_of, verify
from .errors import DatasetError
from .idx import parse_idx, read_idx, write_idx
from .mnist import load_mnist_folder, scale_pixels
from .registry import Dataset, load_dataset, load_digits, train_val_split
from .tabular import load_csv, load_npz, load_seed_csv, parse_csv

__all__ = [
    "Dataset", "DatasetError", "cache_dir", "content_digests", "content_sha256_of", "download", "load_csv",
    "load_dataset", "load_digits", "load_mnist_folder", "load_npz", "load_seed_csv", "locate", "parse_csv",
    "parse_idx", "read_idx", "scale_pixels", "sha256_of", "train_val_split", "verify", "write_idx",
]
