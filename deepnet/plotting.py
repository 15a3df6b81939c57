"""PNG pictures of a run: learning curves, confusion matrix, misclassified images,
and gradient flow.  Needs matplotlib (``pip install "deepnet[plot]"``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


class PlotUnavailable(RuntimeError):
    pass


def pyplot() -> Any:
    """matplotlib's ``pyplot`` on the non-interactive Agg backend, or :class:`PlotUnavailable`
    saying how to install it (call it early to fail before a long run)."""
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib, which is not installed: pip install 'deepnet[plot]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: dict[str, list[float]], path: str | os.PathLike[str]) -> Path:
    """Training and validation loss and accuracy per epoch."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, history[key], "o-", label=f"training {title}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "s-", label=f"validation {title}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(title)
        ax.set_title(title.capitalize() + " per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_confusion(confusion: np.ndarray, path: str | os.PathLike[str], class_names: list[str] | None = None,
                   title: str = "Confusion matrix (test set)") -> Path:
    plt = pyplot()
    k = confusion.shape[0]
    names = class_names or [str(i) for i in range(k)]
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * k, 1.0 + 0.55 * k))
    im = ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(k), names, rotation=45 if max(len(n) for n in names) > 2 else 0, ha="right" if max(len(n) for n in names) > 2 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = confusion.max() or 1
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if confusion[i, j] > top / 2 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_misclassified(X: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, image_shape: tuple[int, int],
                       path: str | os.PathLike[str], class_names: list[str] | None = None, limit: int = 36) -> Path:
    """A grid of the first ``limit`` misclassified images with true and predicted labels."""
    plt = pyplot()
    wrong = np.nonzero(y_true != y_pred)[0][:limit]
    cols = 6
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.9), squeeze=False)
    names = class_names or [str(i) for i in range(int(max(y_true.max(), y_pred.max())) + 1)]
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), wrong, strict=False):
        ax.imshow(X[i].reshape(image_shape), cmap="gray_r")
        ax.set_title(f"true {names[y_true[i]]}\npred {names[y_pred[i]]}", fontsize=8, color="firebrick")
    fig.suptitle(f"Misclassified test images ({int((y_true != y_pred).sum())} of {len(y_true)})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_gradient_flow(records: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Norm of the error ẽ arriving at each layer and of each weight gradient, per epoch."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    panels = ((axes[0], records["error_norm"], records["layer_names"], "‖ẽ‖ arriving at the layer (mean per batch)",
               "Error flowing back through the layers"),
              (axes[1], records["grad_norm"], records["weight_names"], "‖∂f/∂W‖ (mean per batch)",
               "Weight gradient per layer"))
    for ax, values, labels, ylabel, title in panels:
        values = np.asarray(values)                    # (epochs, layers)
        for e in range(values.shape[0]):
            ax.semilogy(range(values.shape[1]), values[e], "o-", alpha=0.4 + 0.6 * (e + 1) / values.shape[0],
                        label=f"epoch {e + 1}")
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
