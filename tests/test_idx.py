"""The IDX reader: real MNIST facts, round trips, and every kind of damaged file."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepnet.datasets import DatasetError, load_mnist_folder, parse_idx, read_idx, write_idx
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


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_parser_never_crashes_on_random_bytes(data):
    try:
        parse_idx(data, "fuzz")
    except DatasetError as err:
        assert str(err).startswith("fuzz: ")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=3), st.data())
def test_round_trip_and_any_truncation(shape, data):
    arr = np.arange(int(np.prod(shape)), dtype=np.uint8).reshape(shape)
    raw = idx_bytes(arr)
    np.testing.assert_array_equal(parse_idx(raw), arr)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(DatasetError):
        parse_idx(raw[:cut], "cut")
