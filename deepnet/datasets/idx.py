"""Reader for the IDX format of MNIST and Fashion-MNIST, gzipped or not.

An IDX file is: two zero bytes, a type code (0x08 = unsigned byte, ...), the number of
dimensions d, then d big-endian 32-bit sizes, then the data in row-major order.  MNIST
images have magic number 2051 (type 0x08, d = 3), labels 2049 (type 0x08, d = 1).

Files are read as a stream: the header says how many data bytes follow, those are read
into one preallocated array, and one byte more is asked for to detect trailing data.  A
small .gz that expands to far more than its header declares is therefore refused after
reading at most the declared size + 1 byte (peak memory: the array plus 1 MiB chunks).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import zlib
from collections.abc import Iterator
from typing import IO

import numpy as np

from .errors import DatasetError

_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
          0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
GZIP_MAGIC = b"\x1f\x8b"
#: deflate's largest possible expansion (zlib's technical notes: 1032:1; measured here: 1 GiB
#: of zeros compressed by zlib at level 9 gave 1,043,668 bytes, 1029:1).  A .gz file whose IDX
#: header declares more than its size times this cannot hold that data.
MAX_GZIP_RATIO = 1032
_CHUNK = 1 << 20
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


@contextlib.contextmanager
def open_stream(path: str | os.PathLike[str]) -> Iterator[tuple[IO[bytes], int, int | None]]:
    """(decompressed stream, size on disk, gzip trailer's size field or None if not gzip),
    with read errors as DatasetError."""
    try:
        with open(path, "rb") as raw:
            size = os.fstat(raw.fileno()).st_size
            gz = raw.read(2) == GZIP_MAGIC
            isize = None
            if gz:
                raw.seek(-4 if size >= 4 else 0, os.SEEK_END)
                isize = int.from_bytes(raw.read(4), "little")
            raw.seek(0)
            try:
                if gz:
                    with gzip.GzipFile(fileobj=raw, mode="rb") as fh:
                        yield fh, size, isize
                else:
                    yield raw, size, None
            except _GZIP_ERRORS as err:
                raise DatasetError(path, f"corrupt or truncated gzip data ({err})") from None
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    except IsADirectoryError:
        raise DatasetError(path, "is a folder, expected a file") from None
    except OSError as err:
        raise DatasetError(path, f"cannot read: {err.strerror or err}") from None


def _read_full(fh: IO[bytes], view: memoryview, hasher: hashlib._Hash | None = None) -> int:
    """Fill ``view`` from ``fh`` in 1 MiB chunks; the number of bytes read (less at EOF)."""
    got = 0
    while got < len(view):
        n = fh.readinto(view[got: got + _CHUNK])
        if not n:
            break
        if hasher is not None:
            hasher.update(view[got: got + n])
        got += n
    return got


def read_bytes(path: str | os.PathLike[str], limit: int | None = None) -> bytes:
    """The file's content, decompressed if it is gzip (detected by its header).

    With ``limit``, a file whose (decompressed) content exceeds ``limit`` bytes is refused
    after reading at most ``limit`` + 1 bytes.
    """
    with open_stream(path) as (fh, size, isize):
        gz = isize is not None
        if limit is not None and not gz and size > limit:
            raise DatasetError(path, f"file is {size} bytes, more than the {limit} bytes allowed")
        parts: list[bytes] = []
        total = 0
        while limit is None or total <= limit:
            block = fh.read(_CHUNK if limit is None else min(_CHUNK, limit + 1 - total))
            if not block:
                break
            parts.append(block)
            total += len(block)
    if limit is not None and total > limit:
        raise DatasetError(path, f"decompresses to more than the {limit} bytes allowed")
    return b"".join(parts)


def _check_magic(head: bytes, path: str | os.PathLike[str] | None, expect_ndim: int | None) -> tuple[np.dtype, int]:
    """Validate the first 4 bytes: (big-endian dtype, number of dimensions)."""
    if len(head) < 4:
        raise DatasetError(path, f"too short for an IDX header ({len(head)} bytes)")
    magic = int.from_bytes(head[:4], "big")
    if head[0] != 0 or head[1] != 0 or head[2] not in _TYPES:
        raise DatasetError(path, f"not an IDX file: magic number {magic} (0x{magic:08x}); "
                                 "expected 2051 for images or 2049 for labels")
    ndim = head[3]
    if expect_ndim is not None and ndim != expect_ndim:
        want = {3: 2051, 1: 2049}.get(expect_ndim)
        raise DatasetError(path, f"wrong magic number {magic}: expected {want} "
                                 f"({expect_ndim}-D {'images' if expect_ndim == 3 else 'labels'})")
    if ndim == 0:
        raise DatasetError(path, "IDX header declares 0 dimensions")
    return _TYPES[head[2]], ndim


def _shape(dims: bytes) -> tuple[int, ...]:
    return tuple(int.from_bytes(dims[i: i + 4], "big") for i in range(0, len(dims), 4))


def _size_error(path: str | os.PathLike[str] | None, shape: tuple[int, ...], expected: int,
                actual: int) -> DatasetError:
    return DatasetError(path, f"header says shape {shape} ({expected} data bytes) but the file holds "
                              f"{actual} data bytes" + (" (truncated)" if actual < expected else ""))


def parse_idx(data: bytes, path: str | os.PathLike[str] | None = None,
              expect_ndim: int | None = None) -> np.ndarray:
    """Parse IDX bytes into an array (native byte order)."""
    dtype, ndim = _check_magic(data[:4], path, expect_ndim)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(path, f"header declares {ndim} dimensions but the file has only {len(data)} bytes")
    shape = _shape(data[4:header])
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - header != expected:
        raise _size_error(path, shape, expected, len(data) - header)
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike[str], expect_ndim: int | None = None, *,
             content_sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a NumPy array, streaming.

    ``content_sha256``: the SHA-256 the decompressed bytes must have (computed while
    reading, so a recompressed copy of the same data passes and altered data does not).
    """
    hasher = hashlib.sha256() if content_sha256 else None
    with open_stream(path) as (fh, size, isize):
        gz = isize is not None
        head = fh.read(4)
        dtype, ndim = _check_magic(head, path, expect_ndim)
        dims = fh.read(4 * ndim)
        if len(dims) < 4 * ndim:
            raise DatasetError(path, f"header declares {ndim} dimensions but the file has only "
                                     f"{4 + len(dims)} bytes")
        shape = _shape(dims)
        expected = math.prod(shape) * dtype.itemsize
        if not gz and size - 4 - 4 * ndim != expected:
            raise _size_error(path, shape, expected, size - 4 - 4 * ndim)
        if gz and expected > size * MAX_GZIP_RATIO:
            raise DatasetError(path, f"header says shape {shape} ({expected} data bytes) but a {size}-byte "
                                     f"gzip file expands to at most {size * MAX_GZIP_RATIO} bytes")
        if hasher is not None:
            hasher.update(head + dims)
        try:
            buf = np.empty(expected, np.uint8)
        except MemoryError:
            raise DatasetError(path, f"header says shape {shape} ({expected} data bytes): "
                                     "not enough memory for that") from None
        got = _read_full(fh, memoryview(buf), hasher)
        if got < expected:
            raise _size_error(path, shape, expected, got)
        if fh.read(1):
            if isize == (4 + 4 * ndim + expected) % 2**32:   # the gzip trailer agrees with the header
                raise DatasetError(path, f"corrupt or truncated gzip data (it expands past the {isize} "
                                         "bytes its trailer records)")
            raise DatasetError(path, f"header says shape {shape} ({expected} data bytes) but the "
                                     "decompressed file holds more data after them")
    if hasher is not None and hasher.hexdigest() != content_sha256:
        raise DatasetError(path, f"decompressed content SHA-256 mismatch: expected {content_sha256}, "
                                 f"got {hasher.hexdigest()} (damaged, or not the official file)")
    return buf.view(dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def write_idx(array: np.ndarray, fh: IO[bytes]) -> None:
    """Write ``array`` (uint8) in IDX format; used to make test fixtures."""
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    fh.write(bytes([0, 0, 0x08, arr.ndim]))
    for n in arr.shape:
        fh.write(int(n).to_bytes(4, "big"))
    fh.write(arr.tobytes())
