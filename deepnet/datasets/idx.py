"""Reader for the IDX format of MNIST and Fashion-MNIST, gzipped or not.

An IDX file is: two zero bytes, a type code (0x08 = unsigned byte, ...), the number of
dimensions d, then d big-endian 32-bit sizes, then the data in row-major order.  MNIST
images have magic number 2051 (type 0x08, d = 3), labels 2049 (type 0x08, d = 1).
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import IO

import numpy as np

from .errors import DatasetError

_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
          0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The file's content, decompressed if it is gzip (detected by its header)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    except OSError as err:
        raise DatasetError(path, f"cannot read: {err.strerror or err}") from None
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as err:
        raise DatasetError(path, f"corrupt or truncated gzip data ({err})") from None


def parse_idx(data: bytes, path: str | os.PathLike[str] | None = None,
              expect_ndim: int | None = None) -> np.ndarray:
    """Parse IDX bytes into an array (native byte order)."""
    if len(data) < 4:
        raise DatasetError(path, f"too short for an IDX header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0 or data[2] not in _TYPES:
        raise DatasetError(path, f"not an IDX file: magic number {magic} (0x{magic:08x}); "
                                 "expected 2051 for images or 2049 for labels")
    ndim = data[3]
    if expect_ndim is not None and ndim != expect_ndim:
        want = {3: 2051, 1: 2049}.get(expect_ndim)
        raise DatasetError(path, f"wrong magic number {magic}: expected {want} "
                                 f"({expect_ndim}-D {'images' if expect_ndim == 3 else 'labels'})")
    if ndim == 0:
        raise DatasetError(path, "IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(path, f"header declares {ndim} dimensions but the file has only {len(data)} bytes")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = _TYPES[data[2]]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        raise DatasetError(path, f"header says shape {shape} ({expected} data bytes) but the file holds "
                                 f"{actual} data bytes" + (" (truncated)" if actual < expected else ""))
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike[str], expect_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a NumPy array."""
    return parse_idx(read_bytes(path), path, expect_ndim)


def write_idx(array: np.ndarray, fh: IO[bytes]) -> None:
    """Write ``array`` (uint8) in IDX format; used to make test fixtures."""
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    fh.write(bytes([0, 0, 0x08, arr.ndim]))
    for n in arr.shape:
        fh.write(int(n).to_bytes(4, "big"))
    fh.write(arr.tobytes())
