"""Finding data files, and downloading them safely when they are not found.

Search order for a named data set (:func:`locate`):

1. a path the user gives (a folder holding the files);
2. ``$DEEPNET_DATA`` (the files directly in it, or in ``$DEEPNET_DATA/<name>``);
3. the cache folder ``$XDG_CACHE_HOME/deepnet/<name>`` (``~/.cache/deepnet/<name>``);
4. a download from the data set's public mirrors into the cache.

Downloads are verified against SHA-256 checksums written below; a transfer is written to
a temporary file in the destination folder and renamed only once its checksum matches,
so a partial or corrupt file never sits under the final name.
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import DatasetError


@dataclass(frozen=True)
class RemoteFile:
    name: str
    sha256: str


@dataclass(frozen=True)
class RemoteDataset:
    name: str
    mirrors: tuple[str, ...]
    files: tuple[RemoteFile, ...]


# SHA-256 of the canonical files.  MNIST's were computed from the original download
# (whose published MD5s they match); Fashion-MNIST's are the published values.
REMOTE: dict[str, RemoteDataset] = {
    "mnist": RemoteDataset(
        "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        (RemoteFile("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
         RemoteFile("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
         RemoteFile("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
         RemoteFile("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6")),
    ),
    "fashion-mnist": RemoteDataset(
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        (RemoteFile("train-images-idx3-ubyte.gz", "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc"),
         RemoteFile("train-labels-idx1-ubyte.gz", "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc"),
         RemoteFile("t10k-images-idx3-ubyte.gz", "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229"),
         RemoteFile("t10k-labels-idx1-ubyte.gz", "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf")),
    ),
}


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/deepnet`` or ``~/.cache/deepnet``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "deepnet"


def sha256_of(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: str | os.PathLike[str], expected: str) -> None:
    """Raise :class:`DatasetError` naming the file and both checksums if they differ."""
    actual = sha256_of(path)
    if actual != expected:
        raise DatasetError(path, f"SHA-256 checksum mismatch: expected {expected}, got {actual}")


def download(urls: Sequence[str], dest: str | os.PathLike[str], sha256: str, retries: int = 3,
             timeout: float = 60.0, backoff: float = 1.0,
             log: Callable[[str], None] | None = None) -> Path:
    """Fetch the first URL that yields a file with the right checksum into ``dest``.

    Each URL is tried up to ``retries`` times (waiting ``backoff``·2^k seconds between
    tries).  Data goes to ``<dest>.part-<pid>`` beside ``dest`` and is renamed only after
    the checksum matches; on any failure the partial file is removed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.part-{os.getpid()}")
    errors: list[str] = []
    for url in urls:
        for attempt in range(retries):
            try:
                if log:
                    log(f"downloading {url}" + (f" (try {attempt + 1}/{retries})" if attempt else ""))
                with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
                    expected_len = resp.headers.get("Content-Length")
                    got = 0
                    while True:
                        block = resp.read(1 << 16)
                        if not block:
                            break
                        out.write(block)
                        got += len(block)
                    out.flush()
                    os.fsync(out.fileno())
                if expected_len is not None and got != int(expected_len):
                    raise OSError(f"transfer interrupted: got {got} of {expected_len} bytes")
                verify(tmp, sha256)
                os.replace(tmp, dest)
                return dest
            except DatasetError as err:
                errors.append(f"{url}: {err.problem}")
                break          # a wrong checksum will not fix itself: try the next mirror
            except (urllib.error.URLError, OSError, ValueError) as err:
                errors.append(f"{url}: {getattr(err, 'reason', None) or err}")
                if attempt + 1 < retries:
                    time.sleep(backoff * (2 ** attempt))
            finally:
                if tmp.exists():
                    tmp.unlink()
    raise DatasetError(dest, "download failed: " + "; ".join(errors))


def _has_files(folder: Path, names: Sequence[str]) -> bool:
    return all((folder / n).is_file() or (folder / n.removesuffix(".gz")).is_file() for n in names)


def locate(name: str, path: str | os.PathLike[str] | None = None, download_ok: bool = True,
           log: Callable[[str], None] | None = None, mirrors: Sequence[str] | None = None) -> Path:
    """The folder holding data set ``name``'s files, following the search order above."""
    remote = REMOTE.get(name)
    if remote is None:
        raise DatasetError(None, f"unknown data set {name!r}: expected one of {sorted(REMOTE)}")
    names = [f.name for f in remote.files]
    if path is not None:
        folder = Path(path)
        if not folder.is_dir():
            raise DatasetError(folder, "no such folder")
        if _has_files(folder, names):
            return folder
        raise DatasetError(folder, f"missing {name} files: expected {', '.join(names)} (or uncompressed)")
    env = os.environ.get("DEEPNET_DATA")
    if env:
        for folder in (Path(env), Path(env) / name):
            if folder.is_dir() and _has_files(folder, names):
                return folder
    folder = cache_dir() / name
    if _has_files(folder, names):
        return folder
    if not download_ok:
        raise DatasetError(folder, f"{name} is not in the cache and downloading is off; "
                                   f"pass a folder or set DEEPNET_DATA")
    for f in remote.files:
        if not (folder / f.name).is_file():
            download([m + f.name for m in (mirrors or remote.mirrors)], folder / f.name, f.sha256, log=log)
    return folder
