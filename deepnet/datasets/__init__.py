"""Data sets: MNIST/Fashion-MNIST IDX files, CSV, .npz and an offline default (digits)."""

from .sources import cache_dir, content_digests, content_sha256_of, download, locate, sha256_of, verify
from .errors import DatasetError, InputFileError
from .idx import open_stream, parse_idx, read_bytes, read_idx, write_idx
from .inputs import read_inputs, read_labelled_inputs
from .mnist import load_mnist_folder, scale_pixels
from .registry import Dataset, load_dataset, load_digits, train_val_indices, train_val_split
from .tabular import load_csv, load_npz, load_seed_csv, parse_csv, read_text

__all__ = [
    "Dataset", "DatasetError", "InputFileError", "cache_dir", "content_digests", "content_sha256_of", "download",
    "load_csv", "load_dataset", "load_digits", "load_mnist_folder", "load_npz", "load_seed_csv", "locate",
    "open_stream", "parse_csv", "parse_idx", "read_bytes", "read_idx", "read_inputs", "read_labelled_inputs",
    "read_text", "scale_pixels", "sha256_of", "train_val_indices", "train_val_split", "verify", "write_idx",
]
