"""The IDX reader: real MNIST facts, round trips, and every kind of damaged file."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepnet.datasets import DatasetError, load_mnist_folder, parse_idx, read_idx, write_idx
from deepnet.datasets.idx import read_bytes
from tests.conftest import mnist_dir, requires_mnist


def idx_bytes(arr):
    buf = io.BytesIO()
    write_idx(arr, buf)
    return buf.getvalue()


def make_folder(tmp_path, n_train=20, n_test=10, labels=None, gz=True):
    rng = np.random.default_rng(0)
    tmp_path.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        lab = rng.integers(0, 10, size=n).astype(np.uint8) if labels is None else labels
        for kind, arr in (("images-idx3-ubyte", imgs), ("labels-idx1-ubyte", lab)):
            data = idx_bytes(arr)
            name = f"{prefix}-{kind}" + (".gz" if gz else "")
            (tmp_path / name).write_bytes(gzip.compress(data) if gz else data)
    return tmp_path


@requires_mnist
def test_real_mnist_facts():
    (X, y), (Xt, yt) = load_mnist_folder(mnist_dir(), scale="raw")
    assert X.shape == (60000, 784) and Xt.shape == (10000, 784)
    assert X.dtype == np.float32 and y.dtype == np.int64
    assert y[0] == 5 and yt[0] == 7
    assert np.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(yt).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(X.mean() - 33.32) < 0.01 and abs(Xt.mean() - 33.79) < 0.01
    assert X.min() == 0 and X.max() == 255


def test_scalings(tmp_path):
    folder = make_folder(tmp_path)
    (raw, _), _ = load_mnist_folder(folder, scale="raw")
    (unit, _), _ = load_mnist_folder(folder, scale="unit")
    (seed, _), _ = load_mnist_folder(folder, scale="seed")
    np.testing.assert_allclose(unit, raw / 255, rtol=1e-6)
    np.testing.assert_allclose(seed, raw / 255 * 0.99 + 0.01, rtol=1e-6)
    assert seed.min() >= 0.01 and seed.max() <= 1.0 + 1e-6


def test_uncompressed_files(tmp_path):
    (X, y), (Xt, yt) = load_mnist_folder(make_folder(tmp_path, gz=False))
    assert X.shape == (20, 784) and Xt.shape == (10, 784)


def test_any_valid_gzip_header(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    data = idx_bytes(arr)
    with gzip.GzipFile(tmp_path / "f.gz", "wb", mtime=12345, compresslevel=1) as fh:
        fh.name = "some-original-name"          # FNAME field in the header
        fh.write(data)
    np.testing.assert_array_equal(read_idx(tmp_path / "f.gz"), arr)


def test_wrong_magic_number(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros((20, 28, 28), np.uint8))))
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte\.gz: wrong magic number 2051: expected 2049"):
        load_mnist_folder(folder)
    (tmp_path / "junk").write_bytes(b"PK\x03\x04hello")
    with pytest.raises(DatasetError, match=r"junk: not an IDX file: magic number"):
        read_idx(tmp_path / "junk")


def test_header_disagrees_with_length(tmp_path):
    data = idx_bytes(np.zeros((5, 28, 28), np.uint8))
    (tmp_path / "short").write_bytes(data[:-100])
    with pytest.raises(DatasetError, match=r"short: header says shape \(5, 28, 28\) \(3920 data bytes\) but the file holds 3820 data bytes \(truncated\)"):
        read_idx(tmp_path / "short")
    (tmp_path / "long").write_bytes(data + b"\0")
    with pytest.raises(DatasetError, match="holds 3921 data bytes"):
        read_idx(tmp_path / "long")


def test_truncated_and_corrupt_gzip(tmp_path):
    gz = gzip.compress(idx_bytes(np.zeros((50, 28, 28), np.uint8)))
    (tmp_path / "trunc.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DatasetError, match=r"trunc\.gz: corrupt or truncated gzip data"):
        read_idx(tmp_path / "trunc.gz")
    bad = bytearray(gz)
    bad[len(bad) // 2] ^= 0xFF
    bad[-5] ^= 0xFF                                # and the CRC/length trailer
    (tmp_path / "flip.gz").write_bytes(bytes(bad))
    with pytest.raises(DatasetError, match=r"flip\.gz: corrupt or truncated gzip data"):
        read_idx(tmp_path / "flip.gz")


def test_label_out_of_range(tmp_path):
    labels = np.zeros(20, np.uint8)
    labels[7] = 12
    folder = make_folder(tmp_path, labels=labels, n_test=20)
    with pytest.raises(DatasetError, match=r"label 12 at index 7 is outside 0\.\.9"):
        load_mnist_folder(folder)


def test_count_mismatch(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(9, np.uint8))))
    with pytest.raises(DatasetError, match=r"9 labels but .*t10k-images-idx3-ubyte\.gz holds 10 images"):
        load_mnist_folder(folder)


def test_missing_files(tmp_path):
    with pytest.raises(DatasetError, match="no train-images-idx3-ubyte"):
        load_mnist_folder(tmp_path)
    with pytest.raises(DatasetError, match="file not found"):
        read_idx(tmp_path / "nope.gz")


# ---------------------------------------------------------------- fuzzing with an oracle
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def reference_idx(data: bytes) -> np.ndarray | None:
    """An independent reading of the format: the array, or None where the bytes are not a valid IDX file."""
    if len(data) < 4 or data[0] or data[1] or data[2] not in _IDX_TYPES or data[3] == 0:
        return None
    ndim, dtype = data[3], np.dtype(_IDX_TYPES[data[2]])
    if len(data) < 4 + 4 * ndim:
        return None
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = data[4 + 4 * ndim:]
    if len(body) != int(np.prod(shape, dtype=object)) * dtype.itemsize:
        return None
    return np.array([dtype.type(v) for v in np.frombuffer(body, dtype)], dtype.newbyteorder("=")).reshape(shape)


@st.composite
def idx_files(draw) -> bytes:
    """Mostly well-formed IDX files (every type code, 1-3 small dimensions, random values),
    then possibly damaged: the body cut or extended, a byte of the header or body changed,
    a size field rewritten, the number of dimensions changed, or the file cut inside its header."""
    code = draw(st.sampled_from(sorted(_IDX_TYPES)))
    shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3))
    dtype = np.dtype(_IDX_TYPES[code])
    size = int(np.prod(shape)) * dtype.itemsize
    body = draw(st.binary(min_size=size, max_size=size))
    data = bytearray(bytes([0, 0, code, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape) + body)
    damage = draw(st.sampled_from(["none", "none", "cut", "extend", "flip", "size", "ndim", "short header"]))
    if damage == "cut" and len(data) > 4 + 4 * len(shape):
        del data[draw(st.integers(4 + 4 * len(shape), len(data) - 1)):]
    elif damage == "extend":
        data += draw(st.binary(min_size=1, max_size=9))
    elif damage == "flip":
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= draw(st.integers(1, 255))
    elif damage == "size":
        i = draw(st.integers(0, len(shape) - 1))
        data[4 + 4 * i: 8 + 4 * i] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
    elif damage == "ndim":
        data[3] = draw(st.integers(0, 255))
    elif damage == "short header":
        del data[draw(st.integers(0, 3 + 4 * len(shape))):]
    return bytes(data)


def check_against_reference(data: bytes, read, name: str) -> str:
    """``read`` returns exactly the reference array, or raises a DatasetError naming the file
    where the reference finds the bytes invalid: "parsed" or "refused"."""
    want = reference_idx(data)
    try:
        got = read()
    except DatasetError as err:
        assert str(err).startswith(f"{name}: "), err
        assert want is None, f"a valid IDX file of shape {want.shape} was refused: {err}"
        return "refused"
    assert want is not None, f"invalid IDX bytes were accepted as shape {got.shape}"
    assert got.shape == want.shape and got.dtype == want.dtype and got.dtype.isnative
    np.testing.assert_array_equal(got, want)
    return "parsed"


def test_parser_never_crashes_on_random_bytes():
    """Valid headers with damaged bodies (and raw random bytes): each parse either gives the
    reference array or refuses bytes the reference finds invalid."""
    outcomes: Counter[str] = Counter()

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.one_of(idx_files(), st.binary(max_size=64)))
    def fuzz(data):
        outcomes[check_against_reference(data, lambda: parse_idx(data, "fuzz"), "fuzz")] += 1

    fuzz()
    assert outcomes["parsed"] >= 30 and outcomes["refused"] >= 30, outcomes   # both paths really fuzzed


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=3), st.data())
def test_round_trip_and_any_truncation(shape, data):
    arr = np.arange(int(np.prod(shape)), dtype=np.uint8).reshape(shape)
    raw = idx_bytes(arr)
    np.testing.assert_array_equal(parse_idx(raw), arr)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(DatasetError):
        parse_idx(raw[:cut], "cut")


# ---------------------------------------------------------------- streaming reads (issue 11, item 5)
_BOMB_READER = """
import json, resource, sys
from deepnet.datasets import DatasetError, read_idx
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    read_idx(sys.argv[1])
    outcome = "loaded"
except DatasetError as err:
    outcome = str(err)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcome": outcome, "peak_delta_mib": (after - before) / 1024}))
"""


def test_gzip_bomb_is_refused_without_expanding_it(tmp_path):
    """A 1 MB .gz whose header declares 7,840 bytes but which expands to 1 GiB is refused
    after reading 7,841 of them; the old reader peaked at 2 GiB of RSS on this file."""
    head = idx_bytes(np.zeros((10, 28, 28), np.uint8))
    zeros = gzip.compress(bytes(16 << 20))            # one gzip member: 16 MiB of zeros
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(head) + zeros * 64)  # concatenated members are valid gzip
    assert bomb.stat().st_size < 2 << 20
    run = subprocess.run([sys.executable, "-c", _BOMB_READER, str(bomb)], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr
    res = json.loads(run.stdout)
    assert "header says shape (10, 28, 28) (7840 data bytes) but the decompressed file holds more data" \
        in res["outcome"]
    assert res["peak_delta_mib"] < 200


def test_header_declaring_more_than_gzip_can_expand_to_is_refused_before_allocating(tmp_path):
    header = bytes([0, 0, 0x08, 3]) + (2**31).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (tmp_path / "huge.gz").write_bytes(gzip.compress(header + bytes(100)))
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match=r"huge\.gz: header says shape \(2147483648, 28, 28\) "
                                               r"\(1683627180032 data bytes\) but a \d+-byte gzip file "
                                               r"expands to at most \d+ bytes"):
            read_idx(tmp_path / "huge.gz")
        assert tracemalloc.get_traced_memory()[1] < 4 << 20
    finally:
        tracemalloc.stop()


def test_read_peak_memory_is_about_one_array(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, size=(2000, 64, 64), dtype=np.uint8)   # 8 MiB
    (tmp_path / "big.gz").write_bytes(gzip.compress(idx_bytes(arr), compresslevel=1))
    tracemalloc.start()
    try:
        out = read_idx(tmp_path / "big.gz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(out, arr)
    assert peak < 1.3 * arr.nbytes                 # the array and 1 MiB chunks, not 3 copies


def test_trailing_data_after_a_gzipped_idx_is_refused(tmp_path):
    (tmp_path / "t.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(10, np.uint8)) + b"\0" * 100))
    with pytest.raises(DatasetError, match=r"t\.gz: header says shape \(10,\) \(10 data bytes\) but the "
                                           r"decompressed file holds more data after them"):
        read_idx(tmp_path / "t.gz")


def test_short_gzipped_idx_says_how_much_it_holds(tmp_path):
    (tmp_path / "s.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(10, np.uint8))[:-3]))
    with pytest.raises(DatasetError, match=r"s\.gz: header says shape \(10,\) \(10 data bytes\) but the file "
                                           r"holds 7 data bytes \(truncated\)"):
        read_idx(tmp_path / "s.gz")


def test_sizes_whose_product_overflows_int64_are_a_dataset_error():
    header = bytes([0, 0, 0x08, 4]) + (65536).to_bytes(4, "big") * 4      # 2**64 bytes declared
    with pytest.raises(DatasetError, match=r"fuzz: header says shape \(65536, 65536, 65536, 65536\)"):
        parse_idx(header, "fuzz")


def test_wider_types_read_in_native_byte_order(tmp_path):
    arr = np.arange(-6, 6, dtype=">i4").reshape(3, 4)
    raw = bytes([0, 0, 0x0C, 2]) + (3).to_bytes(4, "big") + (4).to_bytes(4, "big") + arr.tobytes()
    (tmp_path / "i4.gz").write_bytes(gzip.compress(raw))
    out = read_idx(tmp_path / "i4.gz")
    assert out.dtype == np.dtype("=i4")
    np.testing.assert_array_equal(out, arr)
    np.testing.assert_array_equal(parse_idx(raw), arr)


def test_content_digest_is_checked_while_reading(tmp_path):
    data = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))
    (tmp_path / "a.gz").write_bytes(gzip.compress(data, mtime=0))
    with gzip.GzipFile(tmp_path / "b.gz", "wb", mtime=99, compresslevel=1) as fh:   # another gzip header
        fh.write(data)
    want = hashlib.sha256(data).hexdigest()
    for name in ("a.gz", "b.gz"):
        np.testing.assert_array_equal(read_idx(tmp_path / name, content_sha256=want), np.arange(12).reshape(3, 4))
    (tmp_path / "c.gz").write_bytes(gzip.compress(data[:-1] + b"\x63"))
    got = hashlib.sha256(data[:-1] + b"\x63").hexdigest()
    with pytest.raises(DatasetError, match=rf"c\.gz: decompressed content SHA-256 mismatch: expected {want}, "
                                           rf"got {got} \(damaged, or not the official file\)$"):
        read_idx(tmp_path / "c.gz", content_sha256=want)


def test_read_bytes_limit(tmp_path):
    (tmp_path / "t.csv.gz").write_bytes(gzip.compress(b"1,2\n" * 1000))
    assert read_bytes(tmp_path / "t.csv.gz", limit=4000) == b"1,2\n" * 1000
    with pytest.raises(DatasetError, match=r"t\.csv\.gz: decompresses to more than the 3999 bytes allowed"):
        read_bytes(tmp_path / "t.csv.gz", limit=3999)
    (tmp_path / "t.csv").write_bytes(b"1,2\n" * 1000)
    with pytest.raises(DatasetError, match=r"t\.csv: file is 4000 bytes, more than the 100 bytes allowed"):
        read_bytes(tmp_path / "t.csv", limit=100)


def test_streaming_reader_only_raises_dataset_errors(tmp_path):
    outcomes: Counter[str] = Counter()
    path = tmp_path / "f"

    @settings(max_examples=150, deadline=None, database=None)
    @given(st.one_of(idx_files(), st.binary(max_size=64)), st.booleans())
    def fuzz(data, gz):
        path.write_bytes(gzip.compress(data) if gz else data)
        outcomes[check_against_reference(data, lambda: read_idx(path), str(path))] += 1

    fuzz()
    assert outcomes["parsed"] >= 15 and outcomes["refused"] >= 15, outcomes
