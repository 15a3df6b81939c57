"""MNIST and Fashion-MNIST from the standard IDX files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .idx import read_idx

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: input scalings: "unit" x/255 in [0, 1]; "seed" the course notebook's x/255·0.99 + 0.01
SCALES = ("unit", "seed", "raw")


def scale_pixels(images: np.ndarray, scale: str) -> np.ndarray:
    """uint8 pixels to float32 rows (n, 784), scaled as named in :data:`SCALES`."""
    x = images.reshape(images.shape[0], -1).astype(np.float32)
    if scale == "unit":
        x *= np.float32(1 / 255)
    elif scale == "seed":
        x *= np.float32(0.99 / 255)
        x += np.float32(0.01)
    elif scale != "raw":
        raise ValueError(f"unknown scale {scale!r}: expected one of {SCALES}")
    return x


def find_file(folder: Path, stem: str) -> Path:
    """``stem`` or ``stem.gz`` (also the ``t10k-images.idx3-ubyte`` spelling) in ``folder``."""
    candidates = [stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")]
    for name in candidates:
        if (folder / name).is_file():
            return folder / name
    raise DatasetError(folder, f"no {stem}[.gz] here")


def read_split(images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str],
               n_classes: int = 10, images_sha256: str | None = None, labels_sha256: str | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Read and cross-check one images/labels pair; returns (uint8 images, int64 labels).

    ``*_sha256``: the SHA-256 each file's decompressed bytes must have, if given.
    """
    images = read_idx(images_path, expect_ndim=3, content_sha256=images_sha256)
    labels = read_idx(labels_path, expect_ndim=1, content_sha256=labels_sha256)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise DatasetError(images_path, "expected unsigned-byte IDX data (type code 0x08)")
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(labels_path, f"{labels.shape[0]} labels but {images_path} holds "
                                        f"{images.shape[0]} images")
    if labels.size and labels.max() >= n_classes:
        bad = int(np.argmax(labels >= n_classes))
        raise DatasetError(labels_path, f"label {int(labels[bad])} at index {bad} is outside 0..{n_classes - 1}")
    return images, labels.astype(np.int64)


def load_mnist_folder(folder: str | os.PathLike[str], scale: str = "unit", *,
                      expected: Mapping[str, str] | None = None
                      ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``((X_train, y_train), (X_test, y_test))`` from a folder with the four IDX files.

    X are float32 rows of 784 pixels scaled by ``scale``; y are int64 labels 0..9.
    ``expected`` maps file names without ``.gz`` (``"train-images-idx3-ubyte"``, ...) to the
    SHA-256 of their decompressed bytes, e.g. ``content_digests("mnist")``; files it names
    are refused unless they match (gzip or raw, however compressed).  None: no check.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(folder, "not a folder (expected one holding the four MNIST IDX files)")
    out = []
    for split in ("train", "test"):
        img_stem, lab_stem = FILES[f"{split}_images"], FILES[f"{split}_labels"]
        imgs, labels = read_split(find_file(folder, img_stem), find_file(folder, lab_stem),
                                  images_sha256=(expected or {}).get(img_stem),
                                  labels_sha256=(expected or {}).get(lab_stem))
        out.append((scale_pixels(imgs, scale), labels))
    return out[0], out[1]
