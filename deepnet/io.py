"""Model files: architecture (plain JSON) and weights in one file, never pickle.

Two containers hold the same content:

* ``.npz`` (NumPy only): the tensors by name plus ``__deepnet__``, the JSON header as
  UTF-8 bytes; read with ``allow_pickle=False``.
* ``.safetensors`` (``pip install "deepnet[safetensors]"``): tensors plus the JSON header
  in the file's metadata.

The header names each layer's class (short and qualified name, see
:mod:`deepnet.classnames`) and constructor settings; loading picks the class among those
this program defines (a built-in always as the built-in) and calls the constructor, so no
code ever comes from the file.  It also stores the parameter names, shapes, dtypes and a
SHA-256 of the tensor bytes, all checked on load.  Files are written atomically (temporary file in the same
folder, flushed, fsynced, renamed).

The file format itself (containers, header, checksums, atomic writes) lives in
:mod:`deepnet.model_files`, shared with training checkpoints; its functions are importable
from here as well.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import layers as _builtin  # noqa: F401  (registers the built-in layers)
from . import presets as _presets  # noqa: F401  (registers preset layers)
from .backend import to_device
from .checkpoint import FORMAT as CHECKPOINT_FORMAT
from .classnames import ClassLookupError, ClassNotDefinedError, qualified_name
from .errors import ModelFileError
from .losses import Loss
from .model_files import (FORMAT, HEADER_KEY, SEAL, VERSION, apply_tensors, architecture, atomic_write,
                          check_layer_configs, check_seal, current_umask, input_shape_entry, layer_class, layer_state,
                          read_tensors, saved_input_shape, seal, tensor_checksum, write_tensors)
from .network import Network

__all__ = [
    "FORMAT", "HEADER_KEY", "SEAL", "VERSION", "ModelFileError", "apply_tensors",
    "architecture", "atomic_write", "build_layers", "check_layer_configs", "check_seal", "current_umask",
    "layer_state", "load_checkpoint_model", "load_model", "load_network", "read_tensors", "save_model", "seal",
    "tensor_checksum", "write_tensors",
]


# ---------------------------------------------------------------- networks
def build_layers(spec: list[dict[str, Any]], path: str | os.PathLike[str] = "<model>",
                 classes: Mapping[str, type] | None = None) -> list[Any]:
    """Rebuild layers from :func:`architecture` data, among the classes this program defines
    (``classes`` maps a name saved in the file to the class to use instead)."""
    out = []
    for i, item in enumerate(spec):
        cls = layer_class(item, i, path, classes)
        cfg = item.get("config", {})
        if not isinstance(cfg, dict) or not all(isinstance(v, (int, float, str, bool, type(None), list, dict))
                                                for v in cfg.values()):
            raise ModelFileError(path, f"layer {i} ({item['type']}): settings must be plain data")
        try:
            out.append(cls.from_config(cfg, classes))      # a block rebuilds its children's entries
        except (TypeError, ValueError, KeyError) as err:
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
    header.update(input_shape_entry(net))
    if net.loss is not None:
        header["loss"] = {"type": type(net.loss).__name__, "class": qualified_name(type(net.loss)),
                          "config": net.loss.get_config()}
    tensors = net.get_weights()
    tensors.update(layer_state(net))
    return write_tensors(path, tensors, header)


def _saved_loss(entry: Any, path: str | os.PathLike[str], classes: Mapping[str, type] | None) -> Loss | None:
    """The loss a model file names, or None (with a warning when its class is not defined here:
    a model predicts without its loss)."""
    if not isinstance(entry, dict):
        return None
    try:
        cls, note = Loss.registry.resolve(entry.get("type"), entry.get("class"), classes)
    except ClassNotDefinedError as err:
        warnings.warn(f"{os.fspath(path)}: the model loads without its loss: {err}", UserWarning, stacklevel=4)
        return None
    except ClassLookupError as err:
        raise ModelFileError(path, f"loss: {err}") from None
    if note is not None:
        warnings.warn(f"{os.fspath(path)}: loss: {note}", UserWarning, stacklevel=4)
    return cls(**entry.get("config", {}))


def _model_network(tensors: dict[str, Any], header: dict[str, Any], path: str | os.PathLike[str],
                   backend: str | None, classes: Mapping[str, type] | None) -> Any:
    layers = build_layers(header.get("layers", []), path, classes)
    if not layers:
        raise ModelFileError(path, "the file describes no layers")
    try:
        net = Network(layers, seed=0, backend=backend, dtype=header.get("dtype", "float32"),
                      input_shape=saved_input_shape(header, path))
    except (ValueError, TypeError) as err:
        raise ModelFileError(path, f"the architecture is inconsistent: {err}") from None
    expected = net.parameters()
    apply_tensors(net, {k: v for k, v in tensors.items() if k in expected},
                  {k: v for k, v in tensors.items() if k not in expected}, path)
    net.loss = _saved_loss(header.get("loss"), path, classes)
    net.metadata = header.get("extra", {})
    return net


def _checkpoint_network(tensors: dict[str, Any], header: dict[str, Any], path: str | os.PathLike[str],
                        backend: str | None, classes: Mapping[str, type] | None) -> Any:
    net = Network(build_layers(header["layers"], path, classes), seed=0, backend=backend,
                  dtype=header.get("dtype", "float32"), input_shape=saved_input_shape(header, path))
    apply_tensors(net, {k[len("model/"):]: to_device(v, "numpy") for k, v in tensors.items() if k.startswith("model/")},
                  {k[len("state/"):]: v for k, v in tensors.items() if k.startswith("state/")}, path)
    net.loss = _saved_loss(header.get("loss"), path, classes)
    notes = header.get("notes") or {}
    # what a model file's ``extra`` would hold, if the run noted it; and the checkpoint's own record
    net.metadata = {**(notes.get("model") or {}),
                    "checkpoint": {"epoch": header.get("epoch"), "next_batch": header.get("next_batch"),
                                   "settings": header.get("settings"), "notes": notes}}
    return net


def load_model(path: str | os.PathLike[str], backend: str | None = None,
               classes: Mapping[str, type] | None = None) -> Any:
    """Rebuild a network saved by :func:`save_model` on ``backend`` (default: current).

    Each layer and the loss load as the class the file names (docs/custom-layers.md);
    ``classes`` maps a saved qualified name (or, in older files, short name) to another
    class, e.g. ``{"__main__.Swish": mylayers.Swish}``."""
    return _model_network(*read_tensors(path), path, backend, classes)


def load_checkpoint_model(path: str | os.PathLike[str], backend: str | None = None,
                          classes: Mapping[str, type] | None = None) -> Any:
    """Rebuild just the network (architecture, weights, layer state such as BatchNorm's running
    statistics, and loss) from a checkpoint file (:mod:`deepnet.checkpoint`); ``classes`` as for
    :func:`load_model`.  ``metadata`` holds what the run noted about its model (``notes["model"]``)
    and, under ``"checkpoint"``, the checkpoint's epoch (epochs finished), next_batch (steps
    done in the next one), settings and notes."""
    return _checkpoint_network(*read_tensors(path, expect_format=CHECKPOINT_FORMAT), path, backend, classes)


def load_network(path: str | os.PathLike[str], backend: str | None = None,
                 classes: Mapping[str, type] | None = None) -> Any:
    """A model file (:func:`load_model`) or a training checkpoint such as ``best.npz``
    (:func:`load_checkpoint_model`), whichever ``path`` is."""
    tensors, header = read_tensors(path, expect_format=(FORMAT, CHECKPOINT_FORMAT))
    build = _checkpoint_network if header["format"] == CHECKPOINT_FORMAT else _model_network
    return build(tensors, header, path, backend, classes)
