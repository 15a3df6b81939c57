"""One entry point for every data set: :func:`load_dataset`."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .sources import content_digests, locate
from .errors import DatasetError
from .mnist import load_mnist_folder, scale_pixels
from .tabular import load_csv, load_npz, load_seed_csv

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]


@dataclass
class Dataset:
    """Train and test splits: X float32 (n, d) scaled as ``scaling`` says, y int64."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    description: str = ""
    scaling: str = ""
    image_shape: tuple[int, int] | None = None
    class_names: list[str] = field(default_factory=list)
    #: how the test rows were chosen: None for the source's own test set, else
    #: ``{"seed", "test_fraction", "rows"}`` (a split of ``rows`` rows drawn with ``seed``)
    split: dict[str, Any] | None = None
    #: the largest raw pixel value of the source (255 for IDX images, 16 for scikit-learn's
    #: digits): what ``scaling`` maps to 1
    pixel_max: float = 255.0

    def test_digest(self) -> str:
        """SHA-256 (hex) of the test rows and labels as loaded (float32 X, int64 y): the same
        digest means exactly the same held-out rows."""
        h = hashlib.sha256()
        for a, dtype in ((self.X_test, np.float32), (self.y_test, np.int64)):
            a = np.ascontiguousarray(a, dtype=dtype)
            h.update(repr(a.shape).encode())
            h.update(a.tobytes())
        return h.hexdigest()

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_classes(self) -> int:
        """Largest label in either split + 1 (0 when both splits are empty)."""
        return max((int(y.max()) + 1 for y in (self.y_train, self.y_test) if y.size), default=0)

    def label_warnings(self) -> list[str]:
        """One-line warnings about labels a model would learn badly from; [] when all is fine.

        Flags labels that are not dense (outputs no training sample ever targets) and classes
        that occur in the test split but never in training (they can only score 0%).
        """
        def listed(labels: np.ndarray) -> str:
            names = [f"{c} ({self.class_names[c]})" if c < len(self.class_names) and self.class_names[c] != str(c)
                     else str(c) for c in labels[:10].tolist()]
            return ", ".join(names) + (f", ... ({len(labels)} in all)" if len(labels) > 10 else "")

        out = []
        k = self.n_classes
        seen = np.unique(self.y_train)
        if 0 < len(seen) < k:
            gap = k - len(seen)
            out.append(f"labels are not dense: the largest label is {k - 1}, so the model gets {k} outputs, "
                       f"but only {len(seen)} distinct labels occur in training ({gap} "
                       f"{'output never occurs' if gap == 1 else 'outputs never occur'} there)")
        unseen = np.setdiff1d(np.unique(self.y_test), seen)
        if len(unseen):
            out.append(f"{len(unseen)} test {'class occurs' if len(unseen) == 1 else 'classes occur'} "
                       f"but never in training, so {'it' if len(unseen) == 1 else 'they'} can only score 0%: "
                       + listed(unseen))
        return out

    def validation_split(self, fraction: float, seed: int = 0
                         ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """Deterministic (for a seed) split of the training set into train and validation."""
        return train_val_split(self.X_train, self.y_train, fraction, seed)

    def validation_rows(self, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The rows of :meth:`validation_split` as indices into ``X_train`` (train, validation):
        the same split without copying the data (``deepnet.training.Trainer(rows=...)``)."""
        return train_val_indices(len(self.X_train), fraction, seed)


def train_val_indices(n: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows) of a deterministic (for a seed) split of n rows."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * fraction)))
    return perm[n_val:], perm[:n_val]


def train_val_split(X: np.ndarray, y: np.ndarray, fraction: float, seed: int = 0
                    ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    tr, val = train_val_indices(len(X), fraction, seed)
    return (X[tr], y[tr]), (X[val], y[val])


def _split(X: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    (Xtr, ytr), (Xte, yte) = train_val_split(X, y, test_fraction, seed)
    return Xtr, ytr, Xte, yte


def _split_info(n: int, test_fraction: float, seed: int) -> dict[str, Any]:
    """:attr:`Dataset.split` for a test split drawn by :func:`_split`."""
    return {"seed": int(seed), "test_fraction": float(test_fraction), "rows": int(n)}


def load_digits(scale: str = "unit", seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 real images; no internet).

    Pixels 0..16 scaled to [0, 1] ("unit") or to [0.01, 1] ("seed").  The test split is
    a deterministic ``test_fraction`` of the images for ``seed``.
    """
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise DatasetError(None, "the built-in 'digits' data set needs scikit-learn: "
                                 "pip install 'deepnet[digits]' (or use --dataset mnist)") from None
    d = sk_digits()
    X = d.data.astype(np.float32) / np.float32(16.0)
    if scale == "seed":
        X = X * np.float32(0.99) + np.float32(0.01)
    Xtr, ytr, Xte, yte = _split(X, d.target.astype(np.int64), test_fraction, seed)
    return Dataset("digits", Xtr, ytr, Xte, yte,
                   "scikit-learn's 8x8 handwritten digits (1,797 images, bundled, no download)",
                   scale, (8, 8), [str(i) for i in range(10)], _split_info(len(X), test_fraction, seed), 16.0)


def _idx_dataset(name: str, path: str | os.PathLike[str] | None, scale: str, download: bool,
                 log: Callable[[str], None] | None, verify: bool) -> Dataset:
    folder = locate(name, path, download_ok=download, log=log)
    try:
        (X, y), (Xt, yt) = load_mnist_folder(folder, scale=scale, expected=content_digests(name) if verify else None)
    except DatasetError as err:
        if not err.problem.startswith("decompressed content SHA-256 mismatch"):
            raise
        raise DatasetError(err.path, f"{err.problem}; load a deliberate variant with --dataset idx "
                                     "(in Python: verify=False)") from None
    desc = f"{'MNIST' if name == 'mnist' else 'Fashion-MNIST'} from {folder} ({len(y):,} train / {len(yt):,} test)"
    classes = FASHION_CLASSES if name == "fashion-mnist" else [str(i) for i in range(10)]
    return Dataset(name, X, y, Xt, yt, desc, scale, (28, 28), classes)


NAMES = ("digits", "mnist", "fashion-mnist", "idx", "seed-csv", "csv", "npz")


def dataset_key(name: str) -> str:
    """A data set's name as :data:`NAMES` spells it (any case, ``_`` for ``-``, ``fashion``)."""
    key = name.lower().replace("_", "-")
    return "fashion-mnist" if key == "fashion" else key


def load_dataset(name: str = "digits", path: str | os.PathLike[str] | None = None, *, scale: str = "unit",
                 download: bool = True, label_column: int | str = "label", test_fraction: float = 0.2,
                 seed: int = 0, log: Callable[[str], None] | None = None, verify: bool = True) -> Dataset:
    """Load a data set by name: ``digits``, ``mnist``, ``fashion-mnist``, ``idx``, ``csv``, ``seed-csv``, ``npz``.

    * ``digits``: bundled with scikit-learn, works offline.
    * ``mnist`` / ``fashion-mnist``: IDX files from ``path``, ``$DEEPNET_DATA``, the cache,
      or a verified download.  Local files must hold the official data (checked by the
      SHA-256 of their decompressed bytes) unless ``verify=False``.
    * ``idx``: the four MNIST-layout IDX files in the folder ``path``, any content (a
      subset, a variant), not checked against any checksum.
    * ``seed-csv``: the notebook's CSV (label then 784 pixels); ``path`` is a train CSV and
      a test CSV is looked for beside it (``*_train*`` → ``*_test*``), else split off.
    * ``csv``: any CSV with a label column (``label_column``: name or index), split
      deterministically into train/test by ``test_fraction`` and ``seed``.
    * ``npz``: arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``.

    Pixel data is scaled by ``scale``: "unit" x/255, "seed" x/255·0.99 + 0.01, "raw".
    """
    key = dataset_key(name)
    if key not in NAMES:
        raise DatasetError(None, f"unknown data set {name!r}: expected one of {', '.join(NAMES)}")
    if key == "digits":
        return load_digits(scale, seed)
    if key in ("mnist", "fashion-mnist"):
        return _idx_dataset(key, path, scale, download, log, verify)
    if path is None:
        raise DatasetError(None, f"data set {name!r} needs a path (--data {'FOLDER' if key == 'idx' else 'FILE'})")
    if key == "idx":
        folder = Path(path)
        if not folder.is_dir():
            raise DatasetError(folder, "no such folder (expected one holding the four MNIST-layout IDX files)")
        (X, y), (Xt, yt) = load_mnist_folder(folder, scale=scale)
        return Dataset("idx", X, y, Xt, yt, f"IDX files from {folder} ({len(y):,} train / {len(yt):,} test; "
                       "not checked against checksums)", scale, (28, 28) if X.shape[1] == 784 else None,
                       [str(i) for i in range(10)])
    if key == "seed-csv":
        X, y = load_seed_csv(path)
        test_path = Path(str(path).replace("_train", "_test"))
        split = None
        if test_path != Path(path) and test_path.is_file():
            Xt, yt = load_seed_csv(test_path)
        else:
            split = _split_info(len(X), test_fraction, seed)
            X, y, Xt, yt = _split(X, y, test_fraction, seed)
        return Dataset("seed-csv", scale_pixels(X, scale), y, scale_pixels(Xt, scale), yt,
                       f"notebook-format CSV {path}", scale, (28, 28), [str(i) for i in range(10)], split)
    if key == "csv":
        X, y, names = load_csv(path, label_column)
        Xtr, ytr, Xte, yte = _split(X, y, test_fraction, seed)
        return Dataset("csv", Xtr, ytr, Xte, yte, f"CSV {path} ({len(names)} features)", "as in the file",
                       split=_split_info(len(X), test_fraction, seed))
    # key == "npz"
    d = load_npz(path)
    out = []
    for k in ("x_train", "y_train", "x_test", "y_test"):
        a = d[k]
        if k.startswith("x"):
            a = a.reshape(a.shape[0], -1).astype(np.float32, copy=False)   # float32 already: no copy
        else:
            a = _npz_labels(path, k, a)
        out.append(a)
    if out[0].shape[0] != out[1].shape[0] or out[2].shape[0] != out[3].shape[0]:
        raise DatasetError(path, f"x_train/y_train or x_test/y_test have different lengths "
                                 f"({out[0].shape[0]}/{out[1].shape[0]}, {out[2].shape[0]}/{out[3].shape[0]})")
    shape = tuple(d["x_train"].shape[1:3]) if d["x_train"].ndim == 3 else None
    return Dataset("npz", out[0], out[1], out[2], out[3],
                   f".npz file {path}", "as in the file", shape)  # type: ignore[arg-type]


def _npz_labels(path: str | os.PathLike[str], key: str, a: np.ndarray) -> np.ndarray:
    """A .npz file's labels as int64 (n,): integers or whole-number floats, shape (n,) or (n, 1)."""
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise DatasetError(path, f"{key} must hold one class number per row, shape (n,) or (n, 1); got {a.shape}")
    if a.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(a) | (a != np.round(a))
        if bad.any():
            i = int(np.argmax(bad))
            raise DatasetError(path, f"{key}[{i}] is {a[i].item()!r}: expected whole class numbers 0, 1, 2, ...")
    elif a.dtype.kind not in "iu":
        raise DatasetError(path, f"{key} must hold integer labels, got dtype {a.dtype}")
    if a.size and a.min() < 0:
        raise DatasetError(path, f"{key} holds label {int(a.min())}: expected class numbers 0, 1, 2, ...")
    return a.astype(np.int64)
