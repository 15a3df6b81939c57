"""``deepnet predict``: classes for images, .npy arrays or CSV rows."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets import read_labelled_inputs, scale_pixels
from ..datasets.inputs import IMAGE_SUFFIXES
from ..io import load_network
from .common import CLIError, model_inputs


INPUT_CONVENTION = (
    "Images are read as grayscale and must have the training images' size (28x28 for MNIST, 8x8 for "
    "digits); like MNIST, the digit is light on a dark background, pixel values 0-255 (or 0-1; a digits model also reads array and CSV rows in its data's 0-16). "
    ".npy arrays and CSV rows hold one sample per row; a CSV file may have a header row and a label "
    "column, as deepnet train reads them (see --label-column).")


def bright_background_rows(raw: np.ndarray, image_shape: Any) -> np.ndarray:
    """Rows whose image border is mostly brighter than the middle of the image's own range:
    a dark digit on a lighter background (paper, a dim photo), the inverse of MNIST's
    convention (its borders are 0)."""
    h, w = image_shape
    imgs = raw.reshape(raw.shape[0], h, w)
    border = np.concatenate([imgs[:, 0, :], imgs[:, -1, :], imgs[:, :, 0], imgs[:, :, -1]], axis=1)
    mid = (raw.min(axis=1) + raw.max(axis=1)) / 2
    return np.median(border, axis=1) > mid


def _read_inputs(path: Path, n_features: int, scale: str, image_shape: Any, invert: str = "auto",
                 label_column: str | None = None, pixel_max: float = 255.0) -> tuple[np.ndarray, np.ndarray | None]:
    """The file's rows (:func:`deepnet.datasets.read_labelled_inputs`), scaled like the training
    data and, for images, inverted to light-on-dark as ``invert`` says; and its labels, if any.

    Values up to 1.5 are taken as already scaled; larger ones as 0..255 pixels, or, for rows of
    an array or CSV file (not an image file) whose values stay within a source's own smaller
    range (``pixel_max``: 16 for scikit-learn's digits), as that source's raw values."""
    raw, labels = read_labelled_inputs(path, n_features, image_shape, label_column)
    if invert == "yes" and (not image_shape or scale not in ("unit", "seed")):
        raise CLIError("--invert yes needs a model trained on images scaled 'unit' or 'seed'; this one was trained "
                       f"on {'non-image data' if not image_shape else f'pixels scaled {scale!r}'}")
    if scale not in ("unit", "seed"):
        return raw.astype(np.float32), labels
    pixels = raw.max() > 1.5            # 0..255 pixels; otherwise values already scaled like the training data
    if pixels and pixel_max < 255 and raw.max() <= pixel_max and path.suffix.lower() not in IMAGE_SUFFIXES:
        print(f"note: {path}: values 0..{raw.max():g} read as the training data's own pixel range "
              f"0..{pixel_max:g}", file=sys.stderr, flush=True)
        raw = raw * (255.0 / pixel_max)
    x = np.clip(raw, 0, 255) if pixels else raw.astype(np.float64)
    lo, hi = (0.0, 255.0) if pixels else ((0.01, 1.0) if scale == "seed" else (0.0, 1.0))
    if image_shape and invert != "no":
        flip = (bright_background_rows((x - lo) * (255.0 / (hi - lo)), image_shape) if invert == "auto"
                else np.ones(len(x), bool))
        if flip.any():
            x = x.copy()
            x[flip] = (lo + hi) - x[flip]
            which = "it" if len(x) == 1 else f"rows {np.flatnonzero(flip).tolist()[:20]}"
            note = (f"note: {path} has a light background (the model expects a light digit on dark, like MNIST): "
                    f"inverted {which}; pass --invert no to keep it as it is" if invert == "auto"
                    else f"note: inverted {path} (--invert yes)")
            print(note, file=sys.stderr, flush=True)
    return scale_pixels(x, scale) if pixels else x.astype(np.float32), labels


def _pixel_max(meta: dict[str, Any]) -> float:
    """The largest raw pixel value of the model's training data (files from before it was
    recorded: 16 for scikit-learn's digits, else 255)."""
    return float(meta.get("pixel_max") or (16.0 if meta.get("dataset") == "digits" else 255.0))


def cmd_predict(args: argparse.Namespace) -> int:
    net = load_network(args.model, backend=args.backend)
    meta = net.metadata
    image_shape = meta.get("image_shape")
    width = net.input_width or (math.prod(image_shape) if image_shape else None)
    if width is None or net.output_width is None:
        raise CLIError(f"{args.model} records no input shape (the network was saved before it saw any data, and "
                       f"its first layer {type(net.layers[0]).__name__} does not fix one): predict in Python on "
                       "arrays shaped as in training, or give the network input_shape= before saving it")
    names = meta.get("class_names") or [str(i) for i in range(net.output_width)]
    inputs = []                     # every file read (and checked) before anything is printed
    for name in args.inputs:
        X, labels = _read_inputs(Path(name), width, meta.get("scale", "unit"), image_shape,
                                 args.invert, args.label_column, _pixel_max(meta))
        if labels is not None and labels.size and labels.max() >= net.output_width:
            i = int(np.argmax(labels >= net.output_width))
            raise CLIError(f"{name}: row {i} has label {labels[i]}, but the model has {net.output_width} classes "
                           f"(0..{net.output_width - 1}); is --label-column the right column?")
        inputs.append((name, X, labels))
    hits = labelled = 0
    for name, X, labels in inputs:
        right = _print_predictions(name, net.predict(model_inputs(net, X, image_shape)), names, labels)
        if labels is not None:
            print(f"{name}: accuracy {100 * right / len(labels):.2f}% ({right} of {len(labels)} labelled rows)",
                  file=sys.stderr, flush=True)
            hits, labelled = hits + right, labelled + len(labels)
    if sum(labels is not None for _, _, labels in inputs) > 1:
        print(f"all files: accuracy {100 * hits / labelled:.2f}% ({hits} of {labelled} labelled rows)",
              file=sys.stderr, flush=True)
    return 0


def _print_predictions(name: str, scores: np.ndarray, names: list[str], labels: np.ndarray | None) -> int:
    """One line per row, ``FILE:ROW  CLASS  (score, softmax)[  label L]``; returns how many
    predictions match the labels."""
    z = scores - scores.max(axis=1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    pred = prob.argmax(axis=1)
    for i, row in enumerate(prob):
        k = int(pred[i])
        mark = "" if labels is None else f"\tlabel {names[int(labels[i])]}"
        print(f"{name}:{i}\t{names[k]}\t(score {scores[i, k]:.4f}, softmax {row[k]:.3f}){mark}")
    return 0 if labels is None else int((pred == labels).sum())
