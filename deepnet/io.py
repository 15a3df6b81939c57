"""Model files: architecture (plain JSON) and weights in one file, never pickle.

Two containers hold the same content:

* ``.npz`` (NumPy only): the tensors by name plus ``__deepnet__``, the JSON header as
  UTF-8 bytes; read with ``allow_pickle=False``.
* ``.safetensors`` (``pip install "deepnet[safetensors]"``): tensors plus the JSON header
  in the file's metadata.

The header names each layer's type and constructor settings; loading looks the type up
in deepnet's layer registry and calls the constructor, so no code ever comes from the
file.  It also stores the parameter names, shapes, dtypes and a SHA-256 of the tensor
bytes, all checked on load.  Files are written atomically (temporary file in the same
folder, flushed, fsynced, renamed).

The file format itself (containers, header, checksums, atomic writes) lives in
:mod:`deepnet.model_files`, shared with training checkpoints; its functions are importable
from here as well.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import layers as _builtin  # noqa: F401  (registers the built-in layers)
from . import presets as _presets  # noqa: F401  (registers preset layers)
from .backend import to_device
from .checkpoint import FORMAT as CHECKPOINT_FORMAT
from .errors import ModelFileError
from .layers.base import Layer
from .losses import Loss
from .model_files import (FORMAT, HEADER_KEY, SEAL, VERSION, apply_tensors, architecture, atomic_write,
                          check_layer_configs, check_seal, current_umask, layer_state, read_tensors, seal,
                          tensor_checksum, write_tensors)
from .network import Network

__all__ = [
    "FORMAT", "HEADER_KEY", "SEAL", "VERSION", "ModelFileError", "apply_tensors",
    "architecture", "atomic_write", "build_layers", "check_layer_configs", "check_seal", "current_umask",
    "layer_state", "load_checkpoint_model", "load_model", "load_network", "read_tensors", "save_model", "seal",
    "tensor_checksum", "write_tensors",
]


# ---------------------------------------------------------------- networks
def build_layers(spec: list[dict[str, Any]], path: str | os.PathLike[str] = "<model>") -> list[Any]:
    """Rebuild layers from :func:`architecture` data, by registered type name only."""
    out = []
    for i, item in enumerate(spec):
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise ModelFileError(path, f"layer {i}: malformed entry {item!r}")
        cls = Layer.registry.get(item["type"])
        if cls is None:
            raise ModelFileError(path, f"layer {i}: unknown layer type {item['type']!r} "
                                       "(import the module that defines it before loading)")
        cfg = item.get("config", {})
        if not isinstance(cfg, dict) or not all(isinstance(v, (int, float, str, bool, type(None), list))
                                                for v in cfg.values()):
            raise ModelFileError(path, f"layer {i} ({item['type']}): settings must be plain data")
        try:
            out.append(cls(**cfg))
        except (TypeError, ValueError) as err:
            raise ModelFileError(path, f"layer {i} ({item['type']}): bad settings {cfg}: {err} "
                                       f"(does {item['type']}.get_config() return every constructor argument?)"
                                 ) from None
    return out


def save_model(net: Any, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
    """Write ``net``'s architecture and weights to one file (``.npz`` or ``.safetensors``).

    Every layer's ``get_config()`` is checked to rebuild it (``Layer.check_config``) before
    anything is written, so a layer that could not be loaded back is refused here."""
    check_layer_configs(net, path, "save")
    header = {"format": FORMAT, "version": VERSION, "layers": architecture(net), "dtype": net.dtype_name,
              "params": list(net.parameters()), "extra": extra or {}}
    if net.loss is not None:
        header["loss"] = {"type": type(net.loss).__name__, "config": net.loss.get_config()}
    tensors = net.get_weights()
    tensors.update(layer_state(net))
    return write_tensors(path, tensors, header)


def _loss(header: dict[str, Any]) -> Any:
    """The loss a file records, or None (none recorded, or not a registered loss)."""
    loss = header.get("loss")
    if isinstance(loss, dict) and loss.get("type") in Loss.registry:
        return Loss.registry[loss["type"]](**loss.get("config", {}))
    return None


def _model_network(tensors: dict[str, Any], header: dict[str, Any], path: str | os.PathLike[str],
                   backend: str | None) -> Any:
    layers = build_layers(header.get("layers", []), path)
    if not layers:
        raise ModelFileError(path, "the file describes no layers")
    try:
        net = Network(layers, seed=0, backend=backend, dtype=header.get("dtype", "float32"))
    except (ValueError, TypeError) as err:
        raise ModelFileError(path, f"the architecture is inconsistent: {err}") from None
    expected = net.parameters()
    apply_tensors(net, {k: v for k, v in tensors.items() if k in expected},
                  {k: v for k, v in tensors.items() if k not in expected}, path)
    net.loss = _loss(header)
    net.metadata = header.get("extra", {})
    return net


def _checkpoint_network(tensors: dict[str, Any], header: dict[str, Any], path: str | os.PathLike[str],
                        backend: str | None) -> Any:
    net = Network(build_layers(header["layers"], path), seed=0, backend=backend, dtype=header.get("dtype", "float32"))
    apply_tensors(net, {k[len("model/"):]: to_device(v, "numpy") for k, v in tensors.items() if k.startswith("model/")},
                  {k[len("state/"):]: v for k, v in tensors.items() if k.startswith("state/")}, path)
    net.loss = _loss(header)
    notes = header.get("notes") or {}
    # what a model file's ``extra`` would hold, if the run noted it; and the checkpoint's own record
    net.metadata = {**(notes.get("model") or {}),
                    "checkpoint": {"epoch": header.get("epoch"), "settings": header.get("settings"), "notes": notes}}
    return net


def load_model(path: str | os.PathLike[str], backend: str | None = None) -> Any:
    """Rebuild a network saved by :func:`save_model` on ``backend`` (default: current)."""
    return _model_network(*read_tensors(path), path, backend)


def load_checkpoint_model(path: str | os.PathLike[str], backend: str | None = None) -> Any:
    """Rebuild just the network (architecture, weights, layer state such as BatchNorm's running
    statistics, and loss) from a checkpoint file (:mod:`deepnet.checkpoint`).  ``metadata`` holds
    what the run noted about its model (``notes["model"]``) and, under ``"checkpoint"``, the
    checkpoint's epoch, settings and notes."""
    return _checkpoint_network(*read_tensors(path, expect_format=CHECKPOINT_FORMAT), path, backend)


def load_network(path: str | os.PathLike[str], backend: str | None = None) -> Any:
    """A model file (:func:`load_model`) or a training checkpoint such as ``best.npz``
    (:func:`load_checkpoint_model`), whichever ``path`` is."""
    tensors, header = read_tensors(path, expect_format=(FORMAT, CHECKPOINT_FORMAT))
    build = _checkpoint_network if header["format"] == CHECKPOINT_FORMAT else _model_network
    return build(tensors, header, path, backend)
