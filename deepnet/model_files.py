"""The model-file format, below every model class: tensors and a JSON header in one file.

Two containers hold the same content:

* ``.npz`` (NumPy only): the tensors by name plus ``__deepnet__``, the JSON header as
  UTF-8 bytes; read with ``allow_pickle=False``, and sealed with a SHA-256 in the zip comment.
* ``.safetensors`` (``pip install "deepnet[safetensors]"``): tensors plus the JSON header
  in the file's metadata.

The header stores the tensor names, shapes, dtypes and a SHA-256 of the tensor bytes, all
checked on read.  Files are written atomically (temporary file in the same folder, flushed,
fsynced, renamed).  Both model files (:mod:`deepnet.io`) and training checkpoints
(:mod:`deepnet.checkpoint`) are written with it; it knows networks only as objects with
``layers``, ``parameters()``, ``get_weights()`` and ``set_weights()``, and imports no model
class (it sits below them all).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from .classnames import ClassLookupError, qualified_name
from .errors import ModelFileError
from .layers.base import Layer, layer_entry
from .protocols import TrainedModel

FORMAT = "deepnet-model"
VERSION = 1
HEADER_KEY = "__deepnet__"


# ---------------------------------------------------------------- atomic files
def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file so that a crash at any moment leaves either the old or the new file.

    ``write`` receives a binary file object; the data goes to a temporary file in the
    same folder, is flushed and fsynced, then renamed over ``path`` (and the folder
    fsynced so the rename itself is durable).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())   # mkstemp makes 0600; a saved file follows the umask
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # some file systems do not allow fsync on folders
        pass
    return path


def current_umask() -> int:
    """The process's file-creation mask (read without changing it where the OS allows)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------- tensors + header
def tensor_checksum(tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of the tensors, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_tensors(path: str | os.PathLike[str], tensors: dict[str, np.ndarray], header: dict[str, Any]) -> Path:
    """Atomically write tensors and a JSON header (.npz, or .safetensors by extension)."""
    header = {**header, "checksum": tensor_checksum(tensors),
              "tensors": {k: [v.dtype.str, list(v.shape)] for k, v in tensors.items()}}
    text = json.dumps(header, sort_keys=True)
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            from safetensors.numpy import save
        except ImportError:
            raise ModelFileError(path, "writing .safetensors needs the safetensors package: "
                                       "pip install 'deepnet[safetensors]' (or use a .npz file)") from None
        blob = save({k: np.asarray(v, order="C") for k, v in tensors.items()}, metadata={HEADER_KEY: text})
        return atomic_write(path, lambda fh: fh.write(blob))

    def write_npz(fh: IO[bytes]) -> None:
        arrays = {k: np.asarray(v, order="C") for k, v in tensors.items()}   # 0-d stays 0-d
        arrays[HEADER_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        fh.write(seal(buf.getvalue()))

    return atomic_write(path, write_npz)


SEAL = b"deepnet-sha256:"
_SEAL_LEN = len(SEAL) + 64


def seal(zip_bytes: bytes) -> bytes:
    """Append, as the zip archive's comment, the SHA-256 of every byte before it.

    The result is still a valid .npz; :func:`check_seal` detects a change to any byte.
    """
    eocd = zip_bytes.rfind(b"PK\x05\x06")
    if eocd < 0 or eocd + 22 != len(zip_bytes):
        raise ValueError("seal: expected a zip archive without a comment")
    head = zip_bytes[:eocd + 20] + _SEAL_LEN.to_bytes(2, "little") + SEAL
    return head + hashlib.sha256(head).hexdigest().encode()


def check_seal(path: str | os.PathLike[str], raw: bytes) -> None:
    """Refuse a sealed .npz whose bytes changed (or a deepnet .npz that lost its seal)."""
    tail = raw[-_SEAL_LEN:]
    if len(raw) < _SEAL_LEN + 22 or not tail.startswith(SEAL):
        raise ModelFileError(path, "damaged or truncated file: its integrity seal (a SHA-256 in the zip "
                                   "comment) is missing")
    actual = hashlib.sha256(raw[:-64]).hexdigest()
    if actual.encode() != tail[len(SEAL):]:
        raise ModelFileError(path, f"damaged file: SHA-256 of its contents is {actual}, "
                                   f"the seal says {tail[len(SEAL):].decode(errors='replace')}")


def read_tensors(path: str | os.PathLike[str], expect_format: str | tuple[str, ...] = FORMAT
                 ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify a file written by :func:`write_tensors`: (tensors, header).  The
    header's format must be ``expect_format`` (or one of them)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "file not found")
    raw = path.read_bytes()
    if raw[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"(d", b"(l", b"}q", b"]q"):
        raise ModelFileError(path, "this is a Python pickle, which deepnet never loads (it could run code)")
    if not raw:
        raise ModelFileError(path, "empty file (0 bytes): not a deepnet model file")
    if raw[:2] != b"PK" and path.suffix != ".safetensors" and not _looks_like_safetensors(raw):
        kind = "a .npz file is a zip archive" if path.suffix == ".npz" else "expected a .npz or .safetensors file"
        raise ModelFileError(path, f"not a deepnet model file ({kind}; this one starts with {raw[:8]!r})")
    if path.suffix == ".safetensors" or raw[:2] != b"PK":
        tensors, text = _read_safetensors(path, raw)
    else:
        check_seal(path, raw)
        tensors, text = _read_npz(path, raw)
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(path, f"header is not valid JSON ({err})") from None
    formats = (expect_format,) if isinstance(expect_format, str) else expect_format
    if not isinstance(header, dict) or header.get("format") not in formats:
        raise ModelFileError(path, f"not a {' or '.join(formats)} file "
                                   f"(format {header.get('format') if isinstance(header, dict) else None!r})")
    version = header.get("version")
    if not isinstance(version, int) or version > VERSION:  # both file formats are at version 1
        raise ModelFileError(path, f"format version {version} is newer than this deepnet supports ({VERSION}); "
                                   "upgrade deepnet")
    declared = header.get("tensors", {})
    if set(declared) != set(tensors):
        raise ModelFileError(path, f"tensors {sorted(set(declared) ^ set(tensors))} are missing or unexpected")
    for k, (dt, shape) in declared.items():
        if tensors[k].dtype.str != dt or list(tensors[k].shape) != shape:
            raise ModelFileError(path, f"tensor {k} is {tensors[k].dtype.str}{list(tensors[k].shape)}, "
                                       f"the header says {dt}{shape}")
    actual = tensor_checksum(tensors)
    if actual != header.get("checksum"):
        raise ModelFileError(path, f"tensor checksum mismatch (file damaged): expected {header.get('checksum')}, got {actual}")
    return tensors, header


def _looks_like_safetensors(raw: bytes) -> bool:
    """A safetensors file starts with an 8-byte little-endian header length, then ``{``."""
    if len(raw) < 10:
        return False
    n = int.from_bytes(raw[:8], "little")
    return 2 <= n <= len(raw) - 8 and raw[8:9] == b"{"


def _read_npz(path: Path, raw: bytes) -> tuple[dict[str, np.ndarray], str]:
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            tensors = {k: data[k] for k in data.files}
    except ValueError as err:
        if "pickle" in str(err):
            raise ModelFileError(path, "the file contains pickled objects, which deepnet refuses to load") from None
        raise ModelFileError(path, f"damaged or not a .npz model file ({err})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, zipfile.LargeZipFile) as err:
        raise ModelFileError(path, f"damaged or truncated .npz file ({err})") from None
    except Exception as err:  # zlib.error and friends from a corrupt member
        raise ModelFileError(path, f"damaged .npz file ({type(err).__name__}: {err})") from None
    head = tensors.pop(HEADER_KEY, None)
    if head is None or head.dtype != np.uint8 or head.ndim != 1:
        raise ModelFileError(path, f"no deepnet header ({HEADER_KEY}) in the file")
    return tensors, head.tobytes().decode("utf-8", errors="replace")


def _read_safetensors(path: Path, raw: bytes) -> tuple[dict[str, np.ndarray], str]:
    try:
        from safetensors.numpy import load
    except ImportError:
        raise ModelFileError(path, "reading .safetensors needs the safetensors package: "
                                   "pip install 'deepnet[safetensors]'") from None
    if len(raw) < 8:
        raise ModelFileError(path, "truncated safetensors file")
    n = int.from_bytes(raw[:8], "little")
    if n > len(raw) - 8:
        raise ModelFileError(path, f"truncated safetensors file (header of {n} bytes, file of {len(raw)})")
    try:
        meta = json.loads(raw[8:8 + n]).get("__metadata__", {})
        tensors = load(raw)
    except Exception as err:  # SafetensorError, JSON errors
        raise ModelFileError(path, f"damaged safetensors file ({err})") from None
    text = meta.get(HEADER_KEY)
    if text is None:
        raise ModelFileError(path, f"no deepnet header ({HEADER_KEY}) in the safetensors metadata")
    return dict(tensors), text


# ---------------------------------------------------------------- networks as plain data
def architecture(net: TrainedModel) -> list[dict[str, Any]]:
    """The network's layers as plain data: short type name, qualified class name
    (``module.QualName``, see :mod:`deepnet.classnames`) and constructor settings; a block's
    settings nest its children's entries (:func:`deepnet.layers.base.layer_entry`)."""
    return [layer_entry(layer) for layer in net.layers]


def input_shape_entry(net: TrainedModel) -> dict[str, Any]:
    """``{"input_shape": [...]}`` for a network whose input shape its layers do not decide
    (given as ``input_shape=`` or taken from its first data); {} otherwise (rows networks
    write the header they always have)."""
    shape = net.input_shape
    if shape is None or net.input_shape_source == "layers":
        return {}
    return {"input_shape": [int(d) for d in shape]}


def saved_input_shape(header: dict[str, Any], path: str | os.PathLike[str]) -> tuple[int, ...] | None:
    """The input shape a file records (None: the layers decide it, or it comes with the data)."""
    shape = header.get("input_shape")
    if shape is None:
        return None
    if not isinstance(shape, list) or not shape or not all(type(d) is int and d > 0 for d in shape):
        raise ModelFileError(path, f"input_shape must be a list of positive ints, got {shape!r}")
    return tuple(shape)


def layer_class(item: Any, i: int, path: str | os.PathLike[str],
                classes: Mapping[str, type] | None = None) -> type[Layer]:
    """The layer class entry ``i`` of a file's architecture names, among the classes this
    program defines (never by importing anything); ``classes`` maps a saved name to a class."""
    if not isinstance(item, dict) or not isinstance(item.get("type"), str):
        raise ModelFileError(path, f"layer {i}: malformed entry {item!r}")
    try:
        cls, note = Layer.registry.resolve(item["type"], item.get("class"), classes)
    except ClassLookupError as err:
        raise ModelFileError(path, f"layer {i}: {err}") from None
    if note is not None:
        warnings.warn(f"{os.fspath(path)}: layer {i}: {note}", UserWarning, stacklevel=3)
    return cls


def same_architecture(spec: Any, net: TrainedModel, path: str | os.PathLike[str]) -> bool:
    """Whether a file's architecture names exactly ``net``'s layer classes and settings."""
    if not isinstance(spec, list) or len(spec) != len(net.layers):
        return False
    for i, (item, layer) in enumerate(zip(spec, net.layers)):
        if layer_class(item, i, path) is not type(layer):
            return False
        if item.get("config") != json.loads(json.dumps(layer.get_config())):
            return False
    return True


def check_layer_configs(net: TrainedModel, path: str | os.PathLike[str], what: str) -> None:
    """Raise :class:`ModelFileError` unless every layer's ``get_config()`` rebuilds it."""
    for i, layer in enumerate(net.layers):
        try:
            layer.check_config()
        except ValueError as err:
            raise ModelFileError(path, f"cannot {what} layer {i} ({type(layer).__name__}): {err}") from None


def layer_state(net: TrainedModel) -> dict[str, np.ndarray]:
    """Non-parameter arrays layers keep (e.g. BatchNorm running statistics)."""
    out: dict[str, np.ndarray] = {}
    for i, layer in enumerate(net.layers):
        for k, v in layer.state_arrays().items():
            out[f"{i}.{k}"] = v
    return out


def apply_tensors(net: TrainedModel, weights: dict[str, np.ndarray], states: dict[str, np.ndarray],
                  path: str | os.PathLike[str]) -> None:
    """Load parameters (by name, every shape checked) and layer state (``"<i>.<key>"``)."""
    for name, p in net.parameters().items():
        if name not in weights:
            raise ModelFileError(path, f"missing weights for {name}")
        if tuple(weights[name].shape) != p.shape:
            raise ModelFileError(path, f"parameter {name} has shape {tuple(weights[name].shape)} in the file "
                                       f"but the architecture needs {p.shape}")
    net.set_weights({name: weights[name] for name in net.parameters()})
    for i, layer in enumerate(net.layers):
        mine = {k.split(".", 1)[1]: v for k, v in states.items() if k.startswith(f"{i}.")}
        if mine:
            layer.load_state_arrays(mine)
