"""Which data files are trusted (issue 11): the checksum table and where each value comes
from, downloads accepted by SHA-256 or the authors' MD5 and then by decompressed content,
local files checked by decompressed content; and warnings about labels a model learns badly."""

from __future__ import annotations

import gzip
import hashlib
import re

import numpy as np
import pytest

from deepnet.datasets import (Dataset, DatasetError, content_digests, content_sha256_of, download, load_dataset,
                              locate, sha256_of)
from deepnet.datasets import sources as dl_module
from deepnet.datasets.sources import REMOTE, RemoteDataset, RemoteFile
from tests.conftest import mnist_dir, requires_mnist
from tests.test_datasets import server, sha  # noqa: F401  (the loopback HTTP server fixture)
from tests.test_idx import make_folder

STEMS = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


# ---------------------------------------------------------------- the table
def test_fashion_mnist_table_is_the_one_quoted_in_issue_11():
    files = {f.name: (f.sha256, f.md5, f.content_sha256) for f in REMOTE["fashion-mnist"].files}
    assert files == {
        "train-images-idx3-ubyte.gz": ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                                       "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                       "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        "train-labels-idx1-ubyte.gz": ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                                       "25c81989df183df01b3e8a0aad5dffbe",
                                       "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        "t10k-images-idx3-ubyte.gz": ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                                      "bef4ecab320f06d8554ea6380940ec79",
                                      "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        "t10k-labels-idx1-ubyte.gz": ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                                      "bb300cfdad3c16e7a12a480ee83cd310",
                                      "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    }


def test_every_known_file_has_all_three_digests():
    for remote in REMOTE.values():
        assert [f.name for f in remote.files] == [s + ".gz" for s in STEMS]
        for f in remote.files:
            assert re.fullmatch(r"[0-9a-f]{64}", f.sha256) and re.fullmatch(r"[0-9a-f]{32}", f.md5 or "")
            assert re.fullmatch(r"[0-9a-f]{64}", f.content_sha256 or "")
        assert content_digests(remote.name) == {f.name[:-3]: f.content_sha256 for f in remote.files}


@requires_mnist
def test_real_mnist_files_have_the_recorded_digests():
    for f in REMOTE["mnist"].files:
        path = mnist_dir() / f.name
        assert sha256_of(path) == f.sha256
        assert md5(path.read_bytes()) == f.md5
        assert content_sha256_of(path) == f.content_sha256


@requires_mnist
def test_real_mnist_loads_verified_with_no_label_warnings():
    ds = load_dataset("mnist", mnist_dir())
    assert ds.n_classes == 10 and ds.label_warnings() == []
    assert ds.description.endswith("(60,000 train / 10,000 test)")


# ---------------------------------------------------------------- local files
def _table_for(folder) -> RemoteDataset:
    """A Fashion-MNIST table describing the synthetic files in ``folder`` (all computed here)."""
    files = []
    for stem in STEMS:
        gz = (folder / (stem + ".gz")).read_bytes()
        files.append(RemoteFile(stem + ".gz", sha(gz), md5(gz), sha(gzip.decompress(gz))))
    return RemoteDataset("fashion-mnist", ("http://127.0.0.1:9/",), tuple(files))


@pytest.fixture
def fashion(tmp_path, monkeypatch):
    """Synthetic Fashion-MNIST files, registered as the official ones."""
    folder = make_folder(tmp_path / "official")
    monkeypatch.setitem(dl_module.REMOTE, "fashion-mnist", _table_for(folder))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DEEPNET_DATA", raising=False)
    return folder


def test_recompressed_local_files_load(fashion, tmp_path):
    """A distribution package recompresses the same bytes: another gzip header, level, or none."""
    repack = tmp_path / "repack"
    repack.mkdir()
    for i, stem in enumerate(STEMS):
        data = gzip.decompress((fashion / (stem + ".gz")).read_bytes())
        if i == 3:
            (repack / stem).write_bytes(data)                     # stored uncompressed
            continue
        with gzip.GzipFile(repack / (stem + ".gz"), "wb", mtime=1234567 + i, compresslevel=1 + i) as fh:
            fh.name = "repacked-" + stem                           # FNAME field in the header
            fh.write(data)
        assert sha256_of(repack / (stem + ".gz")) != sha256_of(fashion / (stem + ".gz"))
    ds = load_dataset("fashion-mnist", repack, scale="raw")
    ref = load_dataset("fashion-mnist", fashion, scale="raw")
    np.testing.assert_array_equal(ds.X_train, ref.X_train)
    np.testing.assert_array_equal(ds.y_test, ref.y_test)
    assert ds.class_names[9] == "Ankle boot"


def _alter(folder, stem: str) -> tuple[str, str]:
    """Change one pixel of ``stem`` (recompressed); (expected, actual) content SHA-256."""
    data = bytearray(gzip.decompress((folder / (stem + ".gz")).read_bytes()))
    before = sha(bytes(data))
    data[-1] ^= 0x01
    (folder / (stem + ".gz")).write_bytes(gzip.compress(bytes(data)))
    return before, sha(bytes(data))


def test_altered_local_file_is_refused_naming_file_and_digests(fashion, tmp_path, monkeypatch):
    want, got = _alter(fashion, "t10k-images-idx3-ubyte")
    msg = (rf"official/t10k-images-idx3-ubyte\.gz: decompressed content SHA-256 mismatch: "
           rf"expected {want}, got {got} \(damaged, or not the official file\); load a deliberate variant "
           rf"with --dataset idx \(in Python: verify=False\)$")
    with pytest.raises(DatasetError, match=msg):
        load_dataset("fashion-mnist", fashion)                     # a folder given by the user
    monkeypatch.setenv("DEEPNET_DATA", str(fashion))
    with pytest.raises(DatasetError, match=msg):
        load_dataset("fashion-mnist", download=False)              # found through $DEEPNET_DATA
    # the ways out for a deliberate variant: verify=False, or the generic "idx" loader
    assert load_dataset("fashion-mnist", fashion, verify=False).X_test.shape == (10, 784)
    ds = load_dataset("idx", fashion)
    assert ds.name == "idx" and ds.X_test.shape == (10, 784) and "not checked" in ds.description


def test_altered_file_in_the_cache_is_refused(fashion, tmp_path):
    cached = tmp_path / "cache" / "deepnet" / "fashion-mnist"
    cached.mkdir(parents=True)
    for stem in STEMS:
        (cached / (stem + ".gz")).write_bytes((fashion / (stem + ".gz")).read_bytes())
    assert load_dataset("fashion-mnist", download=False).X_train.shape == (20, 784)
    _alter(cached, "train-labels-idx1-ubyte")
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte\.gz: decompressed content SHA-256 mismatch"):
        load_dataset("fashion-mnist", download=False)


# ---------------------------------------------------------------- downloads
def test_download_accepts_the_published_md5_when_the_sha256_is_wrong(server, tmp_path):
    url, h = server
    body = gzip.compress(b"payload" * 100)
    h.files["f.gz"] = body
    wrong_sha = sha(b"some other file")
    said: list[str] = []
    out = download([url + "f.gz"], tmp_path / "f.gz", wrong_sha, backoff=0, md5=md5(body),
                   content_sha256=sha(b"payload" * 100), log=said.append)
    assert out.read_bytes() == body
    assert said[-1] == f"note: SHA-256 {sha(body)} is not the recorded {wrong_sha}; accepted by its published MD5"


def test_download_refused_when_neither_digest_matches(server, tmp_path):
    url, h = server
    h.files["f.gz"] = gzip.compress(b"payload")
    want_sha, want_md5 = sha(b"x"), md5(b"x")
    got_sha, got_md5 = sha(h.files["f.gz"]), md5(h.files["f.gz"])
    with pytest.raises(DatasetError, match=rf"SHA-256 checksum mismatch: expected {want_sha}, got {got_sha} "
                                           rf"\(MD5 expected {want_md5}, got {got_md5}\)"):
        download([url + "f.gz"], tmp_path / "f.gz", want_sha, backoff=0, md5=want_md5)
    assert list(tmp_path.iterdir()) == []


def test_download_refused_when_the_content_differs(server, tmp_path):
    url, h = server
    body = gzip.compress(b"payload")
    h.files["f.gz"] = body
    want = sha(b"other payload")
    with pytest.raises(DatasetError, match=rf"decompressed content SHA-256 mismatch: expected {want}, "
                                           rf"got {sha(b'payload')}"):
        download([url + "f.gz"], tmp_path / "f.gz", sha(body), backoff=0, content_sha256=want)
    assert list(tmp_path.iterdir()) == []


def test_fashion_mnist_download_into_the_cache_end_to_end(server, tmp_path, monkeypatch):
    url, h = server
    src = make_folder(tmp_path / "src")
    table = _table_for(src)
    for f in table.files:
        h.files[f.name] = (src / f.name).read_bytes()
    monkeypatch.setitem(dl_module.REMOTE, "fashion-mnist", RemoteDataset("fashion-mnist", (url,), table.files))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DEEPNET_DATA", raising=False)
    folder = locate("fashion-mnist")
    assert sorted(p.name for p in folder.iterdir()) == sorted(f.name for f in table.files)
    ds = load_dataset("fashion-mnist")
    assert ds.X_train.shape == (20, 784) and ds.class_names[0] == "T-shirt/top"


# ---------------------------------------------------------------- names and labels (item 7)
def test_unknown_name_is_named_before_asking_for_a_path():
    with pytest.raises(DatasetError, match=r"^unknown data set 'nosuch': expected one of digits, mnist"):
        load_dataset("nosuch")
    with pytest.raises(DatasetError, match=r"data set 'idx' needs a path \(--data FOLDER\)"):
        load_dataset("idx")


def _ds(y_train, y_test, class_names=()) -> Dataset:
    y_train, y_test = np.asarray(y_train, np.int64), np.asarray(y_test, np.int64)
    return Dataset("t", np.zeros((len(y_train), 2), np.float32), y_train,
                   np.zeros((len(y_test), 2), np.float32), y_test, class_names=list(class_names))


def test_label_warnings():
    assert _ds([0, 1, 2, 2], [2, 0]).label_warnings() == []
    sparse = _ds([0, 1, 2, 1000], [0, 1])
    assert sparse.n_classes == 1001
    assert sparse.label_warnings() == [
        "labels are not dense: the largest label is 1000, so the model gets 1001 outputs, "
        "but only 4 distinct labels occur in training (997 outputs never occur there)"]
    unseen = _ds([0, 1, 3], [0, 2, 3, 2], ["zero", "one", "two", "three"])
    assert unseen.label_warnings() == [
        "labels are not dense: the largest label is 3, so the model gets 4 outputs, "
        "but only 3 distinct labels occur in training (1 output never occurs there)",
        "1 test class occurs but never in training, so it can only score 0%: 2 (two)"]
    many = _ds([0, 20], list(range(21)))
    assert many.label_warnings()[1].startswith("19 test classes occur but never in training, so they can only "
                                               "score 0%: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ... (19 in all)")


def test_n_classes_with_an_empty_split():
    assert _ds([0, 4], []).n_classes == 5
    assert _ds([], [2]).n_classes == 3
    assert _ds([], []).n_classes == 0


def test_npz_label_1000_is_reported_and_negative_labels_refused(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((4, 3)), y_train=np.array([0, 1, 2, 1000]),
             x_test=np.zeros((2, 3)), y_test=np.array([0, 7]))
    ds = load_dataset("npz", tmp_path / "d.npz")
    assert ds.n_classes == 1001
    warnings = ds.label_warnings()
    assert len(warnings) == 2 and "997 outputs never occur" in warnings[0] and warnings[1].endswith("0%: 7")
    np.savez(tmp_path / "n.npz", x_train=np.zeros((2, 3)), y_train=np.array([0, -1]),
             x_test=np.zeros((1, 3)), y_test=np.array([0]))
    with pytest.raises(DatasetError, match=r"n\.npz: y_train holds label -1: expected class numbers 0, 1, 2"):
        load_dataset("npz", tmp_path / "n.npz")
