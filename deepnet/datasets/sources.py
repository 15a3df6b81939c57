"""Finding data files, and downloading them safely when they are not found.

Search order for a named data set (:func:`locate`):

1. a path the user gives (a folder holding the files);
2. ``$DEEPNET_DATA`` (the files directly in it, or in ``$DEEPNET_DATA/<name>``);
3. the cache folder ``$XDG_CACHE_HOME/deepnet/<name>`` (``~/.cache/deepnet/<name>``);
4. a download from the data set's public mirrors into the cache.

A download is accepted when its SHA-256 or its published MD5 matches (both are hashed
while the bytes arrive) and then its decompressed bytes have the recorded SHA-256.  It is
written to a temporary file beside its destination and renamed only once accepted, so a
partial or corrupt file never sits under the final name.  Local files of a known data set
are checked by the SHA-256 of their decompressed bytes when read (see :func:`content_digests`),
so a recompressed copy (e.g. from a Linux distribution's package) loads and an altered one
does not.
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
from .idx import open_stream


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set and the digests that identify it (lowercase hex).

    ``sha256`` and ``md5`` are of the file as served (compressed); ``content_sha256`` is of
    its decompressed bytes, the same for the official file and for a recompressed copy.
    """

    name: str
    sha256: str
    md5: str | None = None
    content_sha256: str | None = None


@dataclass(frozen=True)
class RemoteDataset:
    name: str
    mirrors: tuple[str, ...]
    files: tuple[RemoteFile, ...]


# Where every digest below comes from (none is typed in from memory):
# * MNIST: ``sha256`` are the values this table has always held (computed from the original
#   download).  The project's shared MNIST copy (shared/data/mnist) has exactly these .gz
#   SHA-256s, so those are the canonical files and their MD5s are the canonical MD5s: ``md5``
#   (md5sum) and ``content_sha256`` (gzip -dc FILE | sha256sum) were computed from them.
# * Fashion-MNIST: all three digests are quoted from the project's issue 11; its ``md5`` values
#   are the ones the data set's authors publish (github.com/zalandoresearch/fashion-mnist).
#   (The earlier SHA-256s in this table matched no official file.)
REMOTE: dict[str, RemoteDataset] = {
    "mnist": RemoteDataset(
        "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        (RemoteFile("train-images-idx3-ubyte.gz",
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
         RemoteFile("train-labels-idx1-ubyte.gz",
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
         RemoteFile("t10k-images-idx3-ubyte.gz",
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                    "9fb629c4189551a2d022fa330f9573f3",
                    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
         RemoteFile("t10k-labels-idx1-ubyte.gz",
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2")),
    ),
    "fashion-mnist": RemoteDataset(
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        (RemoteFile("train-images-idx3-ubyte.gz",
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
         RemoteFile("train-labels-idx1-ubyte.gz",
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                    "25c81989df183df01b3e8a0aad5dffbe",
                    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
         RemoteFile("t10k-images-idx3-ubyte.gz",
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                    "bef4ecab320f06d8554ea6380940ec79",
                    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
         RemoteFile("t10k-labels-idx1-ubyte.gz",
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34")),
    ),
}


def content_digests(name: str) -> dict[str, str]:
    """SHA-256 of each known file's decompressed bytes, keyed by the name without ``.gz``.

    Read from :data:`REMOTE` at call time; files without a recorded digest are left out.
    """
    remote = REMOTE.get(name)
    if remote is None:
        raise DatasetError(None, f"unknown data set {name!r}: expected one of {sorted(REMOTE)}")
    return {f.name.removesuffix(".gz"): f.content_sha256 for f in remote.files if f.content_sha256}


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


def content_sha256_of(path: str | os.PathLike[str]) -> str:
    """SHA-256 of the file's bytes after gzip decompression (streamed; raw files as they are)."""
    h = hashlib.sha256()
    with open_stream(path) as (fh, _, _):
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _accept(path: Path, sha256: str, got_sha256: str, md5: str | None, got_md5: str,
            content_sha256: str | None, log: Callable[[str], None] | None) -> None:
    """Raise :class:`DatasetError` unless the SHA-256 or MD5 matches, then the content."""
    if got_sha256 != sha256 and (md5 is None or got_md5 != md5):
        raise DatasetError(path, f"SHA-256 checksum mismatch: expected {sha256}, got {got_sha256}"
                                 + (f" (MD5 expected {md5}, got {got_md5})" if md5 else ""))
    if got_sha256 != sha256 and log:
        log(f"note: SHA-256 {got_sha256} is not the recorded {sha256}; accepted by its published MD5")
    if content_sha256 is not None:
        got = content_sha256_of(path)
        if got != content_sha256:
            raise DatasetError(path, f"decompressed content SHA-256 mismatch: expected {content_sha256}, got {got}")


def download(urls: Sequence[str], dest: str | os.PathLike[str], sha256: str, retries: int = 3,
             timeout: float = 60.0, backoff: float = 1.0,
             log: Callable[[str], None] | None = None, *, md5: str | None = None,
             content_sha256: str | None = None) -> Path:
    """Fetch the first URL that yields an accepted file into ``dest``.

    Accepted: the SHA-256 equals ``sha256`` or the MD5 equals ``md5``, and then the
    decompressed bytes hash to ``content_sha256`` (when given).  Each URL is tried up to
    ``retries`` times (waiting ``backoff``·2^k seconds between tries).  Data goes to
    ``<dest>.part-<pid>`` beside ``dest`` and is renamed only once accepted; on any
    failure the partial file is removed.
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
                h_sha, h_md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
                with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
                    expected_len = resp.headers.get("Content-Length")
                    got = 0
                    while True:
                        block = resp.read(1 << 16)
                        if not block:
                            break
                        out.write(block)
                        h_sha.update(block)
                        h_md5.update(block)
                        got += len(block)
                    out.flush()
                    os.fsync(out.fileno())
                if expected_len is not None and got != int(expected_len):
                    raise OSError(f"transfer interrupted: got {got} of {expected_len} bytes")
                _accept(tmp, sha256, h_sha.hexdigest(), md5, h_md5.hexdigest(), content_sha256, log)
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
            download([m + f.name for m in (mirrors or remote.mirrors)], folder / f.name, f.sha256, log=log,
                     md5=f.md5, content_sha256=f.content_sha256)
    return folder
