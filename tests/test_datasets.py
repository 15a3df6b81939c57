"""Loaders and downloads: CSV, .npz, digits, search order, and downloads against a
real HTTP server on loopback (good file, corrupt file, interrupted transfer)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepnet.datasets import (DatasetError, download, load_csv, load_dataset, load_npz, load_seed_csv, locate,
                              parse_csv, train_val_split)
from deepnet.datasets import sources as dl_module
from deepnet.datasets.sources import RemoteDataset, RemoteFile
from tests.test_idx import make_folder


# ---------------------------------------------------------------- a loopback server
class Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    truncate: set[str] = set()
    hits: dict[str, int] = {}

    def do_GET(self):  # noqa: N802
        name = self.path.lstrip("/")
        self.hits[name] = self.hits.get(name, 0) + 1
        body = self.files.get(name)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in self.truncate:
            self.wfile.write(body[: len(body) // 3])   # then hang up: an interrupted transfer
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Handler.files, Handler.truncate, Handler.hits = {}, set(), {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", Handler
    httpd.shutdown()
    httpd.server_close()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_download_good_file(server, tmp_path):
    url, h = server
    h.files["good.gz"] = gzip.compress(b"hello" * 1000)
    out = download([url + "good.gz"], tmp_path / "good.gz", sha(h.files["good.gz"]), backoff=0)
    assert out.read_bytes() == h.files["good.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.gz"]


def test_download_corrupt_file_is_refused_and_not_kept(server, tmp_path):
    url, h = server
    h.files["bad.gz"] = b"not what we expected"
    want = sha(b"the real thing")
    with pytest.raises(DatasetError, match=rf"SHA-256 checksum mismatch: expected {want}, got {sha(b'not what we expected')}"):
        download([url + "bad.gz"], tmp_path / "bad.gz", want, backoff=0)
    assert list(tmp_path.iterdir()) == []          # no partial file under any name


def test_download_interrupted_transfer_retries_then_fails_cleanly(server, tmp_path):
    url, h = server
    h.files["cut.gz"] = b"x" * 100_000
    h.truncate.add("cut.gz")
    with pytest.raises(DatasetError, match=r"download failed: .*cut\.gz"):
        download([url + "cut.gz"], tmp_path / "cut.gz", sha(h.files["cut.gz"]), retries=3, backoff=0, timeout=5)
    assert h.hits["cut.gz"] == 3
    assert list(tmp_path.iterdir()) == []


def test_download_falls_back_to_the_next_mirror(server, tmp_path):
    url, h = server
    h.files["m2/f"] = b"payload"
    out = download([url + "missing/f", url + "m2/f"], tmp_path / "f", sha(b"payload"), retries=1, backoff=0)
    assert out.read_bytes() == b"payload"


def test_locate_search_order_and_download_into_cache(server, tmp_path, monkeypatch):
    url, h = server
    src = make_folder(tmp_path / "src")
    files = sorted(p.name for p in src.iterdir())
    for name in files:
        h.files[name] = (src / name).read_bytes()
    remote = RemoteDataset("mnist", (url,), tuple(RemoteFile(n, sha(h.files[n])) for n in files))
    monkeypatch.setitem(dl_module.REMOTE, "mnist", remote)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DEEPNET_DATA", raising=False)
    # 1. an explicit path wins
    assert locate("mnist", src) == src
    # 4. nothing local: downloaded into the cache, verified
    folder = locate("mnist")
    assert folder == tmp_path / "cache" / "deepnet" / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == files
    # 3. now found in the cache without another request
    before = dict(h.hits)
    assert locate("mnist") == folder and h.hits == before
    # 2. DEEPNET_DATA beats the cache (files directly in it, or in <name>/)
    monkeypatch.setenv("DEEPNET_DATA", str(tmp_path / "src"))
    assert locate("mnist") == src
    ds = load_dataset("mnist")
    assert ds.X_train.shape == (20, 784) and ds.X_train.dtype == np.float32


def test_locate_without_download(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("DEEPNET_DATA", raising=False)
    with pytest.raises(DatasetError, match="not in the cache and downloading is off"):
        locate("fashion-mnist", download_ok=False)
    with pytest.raises(DatasetError, match="missing mnist files"):
        locate("mnist", tmp_path)


def test_seed_csv_format(tmp_path):
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.integers(0, 10, 5), rng.integers(0, 256, (5, 784))])
    (tmp_path / "mnist_train.csv").write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n")
    X, y = load_seed_csv(tmp_path / "mnist_train.csv")
    np.testing.assert_array_equal(y, rows[:, 0])
    np.testing.assert_array_equal(X, rows[:, 1:])
    ds = load_dataset("seed-csv", tmp_path / "mnist_train.csv", scale="seed", test_fraction=0.4)
    assert ds.X_train.min() >= 0.01


def test_seed_csv_bad_rows(tmp_path):
    good = "3," + ",".join(["0"] * 784)
    (tmp_path / "w.csv").write_text(good + "\n" + "3," + ",".join(["0"] * 783) + "\n")
    with pytest.raises(DatasetError, match=r"w\.csv: line 2: expected 785 columns, got 784"):
        load_seed_csv(tmp_path / "w.csv")
    (tmp_path / "l.csv").write_text(good + "\n" + "12," + ",".join(["0"] * 784) + "\n")
    with pytest.raises(DatasetError, match=r"l\.csv: line 2: label 12 is outside 0\.\.9"):
        load_seed_csv(tmp_path / "l.csv")
    (tmp_path / "n.csv").write_text(good + "\n" + "1," + ",".join(["0"] * 783) + ",abc\n")
    with pytest.raises(DatasetError, match=r"n\.csv: line 2, column 785: 'abc' is not a number"):
        load_seed_csv(tmp_path / "n.csv")


def test_user_csv_with_label_column(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,label,c\n1,2,0,3\n4,5,1,6\n7,8,2,9\n")
    X, y, names = load_csv(tmp_path / "d.csv", "label")
    assert names == ["a", "b", "c"]
    np.testing.assert_array_equal(y, [0, 1, 2])
    np.testing.assert_array_equal(X, [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    with pytest.raises(DatasetError, match=r"no column named 'target'"):
        load_csv(tmp_path / "d.csv", "target")
    (tmp_path / "f.csv").write_text("x,label\n1,0.5\n")
    with pytest.raises(DatasetError, match=r"line 2: label '0\.5' is not a class number"):
        load_csv(tmp_path / "f.csv")


def test_npz(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.random((6, 4, 4)), y_train=np.arange(6) % 3,
             x_test=rng.random((3, 4, 4)), y_test=np.arange(3))
    ds = load_dataset("npz", tmp_path / "d.npz")
    assert ds.X_train.shape == (6, 16) and ds.image_shape == (4, 4)
    np.savez(tmp_path / "obj.npz", x_train=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DatasetError, match=r"obj\.npz: not a readable \.npz file"):
        load_npz(tmp_path / "obj.npz")
    np.savez(tmp_path / "m.npz", x_train=np.zeros(2))
    with pytest.raises(DatasetError, match=r"missing arrays \['y_train', 'x_test', 'y_test'\]"):
        load_npz(tmp_path / "m.npz")


def test_digits_offline_default():
    ds = load_dataset("digits")
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.X_train.shape[1] == 64 and len(ds.X_train) + len(ds.X_test) == 1797
    assert 0.0 <= ds.X_train.min() and ds.X_train.max() <= 1.0
    again = load_dataset("digits")
    np.testing.assert_array_equal(ds.y_test, again.y_test)


def test_validation_split_is_deterministic():
    X, y = np.arange(100.0).reshape(50, 2), np.arange(50)
    a = train_val_split(X, y, 0.2, seed=3)
    b = train_val_split(X, y, 0.2, seed=3)
    c = train_val_split(X, y, 0.2, seed=4)
    np.testing.assert_array_equal(a[1][1], b[1][1])
    assert not np.array_equal(a[1][1], c[1][1])
    assert len(a[1][1]) == 10 and len(set(a[0][1]) | set(a[1][1])) == 50


# a cell that breaks a table, and the message (after "fuzz.csv: line N") it must give
_NOT_NUMBERS = ["a", "", " ", "1;5", "x1", "--1", "1e", "0x10"]
_BAD_LABELS = ["-1", "1.5", "nan", "inf", "-inf", "1e30", "2147483649"]
_NON_FINITE = ["nan", "inf", "-inf", "1e39", "-1e39"]          # 1e39 overflows float32


@st.composite
def csv_tables(draw):
    """A valid table (labels 0..9, numbers in several spellings, optional header, the label in
    any column), rendered as CSV text and possibly damaged in one place; with the outcome
    parse_csv must give: ("ok", X, y, names) or ("error", message)."""
    n, d = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    header = draw(st.booleans())
    label_col = draw(st.integers(0, d))
    numbers = st.one_of(st.integers(-1000, 1000).map(str),
                        st.floats(-1e6, 1e6, allow_nan=False, width=32).map(repr),
                        st.floats(-1e6, 1e6, allow_nan=False, width=32).map(lambda v: f"{v:.3e}"))
    values = [[draw(numbers) for _ in range(d)] for _ in range(n)]
    labels = [str(draw(st.integers(0, 9))) for _ in range(n)]
    rows = [v[:label_col] + [lab] + v[label_col:] for v, lab in zip(values, labels)]
    names = [f"f{j}" for j in range(d)]
    head = names[:label_col] + ["label"] + names[label_col:]
    first = 2 if header else 1                               # the file line of rows[0]
    damage = draw(st.sampled_from(["none", "none", "spaces", "not a number", "bad label", "non-finite", "width"]))
    expect: tuple = ("ok",
                     np.array([[np.float32(float(c)) for c in v] for v in values], np.float32).reshape(n, d),
                     np.array([int(lab) for lab in labels]), names if header else None)
    i = draw(st.integers(0, n - 1))
    if damage == "spaces":                                    # spaces around numbers are allowed
        rows = [[f" {c} " for c in r] for r in rows]
    elif damage == "not a number":
        j, cell = draw(st.integers(0, d)), draw(st.sampled_from(_NOT_NUMBERS))
        rows[i][j] = cell
        expect = ("error", f"line {first + i}, column {j + 1}: {cell!r} is not a number")
    elif damage == "bad label":
        cell = draw(st.sampled_from(_BAD_LABELS))
        rows[i][label_col] = cell
        expect = ("error", f"line {first + i}: label {cell!r} is not a class number 0, 1, 2, ...")
    elif damage == "non-finite":
        j = draw(st.integers(0, d).filter(lambda j: j != label_col))
        rows[i][j] = draw(st.sampled_from(_NON_FINITE))
        expect = ("error", f"line {first + i}: NaN or infinite value")
    elif damage == "width" and (header or n > 1):
        i = draw(st.integers(0 if header else 1, n - 1))   # not the first row of a file without header
        rows[i] = rows[i][:-1] if draw(st.booleans()) else rows[i] + ["0"]
        expect = ("error", f"line {first + i}: expected {d + 1} columns, got {len(rows[i])}")
    lines = ([",".join(head)] if header else []) + [",".join(r) for r in rows]
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\n\n"])), header, label_col, expect


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")   # 1e39 → inf in float32
@settings(max_examples=300, deadline=None)
@given(csv_tables())
def test_csv_parser_only_raises_dataset_errors(case):
    """Valid tables and tables damaged in one place: a parse that succeeds returns exactly
    the table; one that fails raises a DatasetError naming the file, the line and the problem."""
    text, header, label_col, expect = case
    try:
        X, y, names = parse_csv(text, "fuzz.csv", label_column=label_col, header=header)
    except DatasetError as err:
        assert expect[0] == "error", f"a valid table was refused: {err}"
        assert str(err) == f"fuzz.csv: {expect[1]}"
        return
    assert expect[0] == "ok", f"a damaged table was accepted; expected: {expect[1]}"
    _, want_X, want_y, want_names = expect
    assert X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(X, want_X)
    np.testing.assert_array_equal(y, want_y)
    if want_names is not None:
        assert names == want_names


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="0123456789,.-ab \n", max_size=80))
def test_csv_parser_on_random_text(text):
    """Random text: a DatasetError naming the file, or a table of whole non-negative labels and finite values."""
    try:
        X, y, _ = parse_csv(text, "fuzz.csv", label_column=0, header=False)
    except DatasetError as err:
        assert str(err).startswith("fuzz.csv: ")
        return
    rows = [r for r in text.splitlines() if r.strip(" ,")]
    assert len(y) == len(X) == len(rows) and X.shape[1] == rows[0].count(",")
    assert y.dtype == np.int64 and (y >= 0).all() and np.isfinite(X).all()
    np.testing.assert_array_equal(y, [float(r.split(",")[0]) for r in rows])


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.data())
def test_csv_round_trip(n, d, data):
    X = np.array(data.draw(st.lists(st.lists(st.integers(0, 255), min_size=d, max_size=d), min_size=n, max_size=n)))
    y = np.array(data.draw(st.lists(st.integers(0, 9), min_size=n, max_size=n)))
    text = "\n".join(",".join(map(str, [y[i], *X[i]])) for i in range(n))
    Xp, yp, _ = parse_csv(text, label_column=0, header=False)
    np.testing.assert_array_equal(Xp, X)
    np.testing.assert_array_equal(yp, y)


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="unknown data set 'cifar'"):
        load_dataset("cifar", Path("."))


def test_csv_huge_label_is_refused():
    with pytest.raises(DatasetError, match=r"line 1: label '1e30' is not a class number"):
        parse_csv("1e30,0,0\n", "h.csv", label_column=0, header=False)


def test_csv_errors_name_the_file_line_after_blank_lines():
    from deepnet.datasets.tabular import parse_csv

    with pytest.raises(DatasetError, match="line 3, column 2: 'a' is not a number"):
        parse_csv("0,1\n\n1,a")
    with pytest.raises(DatasetError, match="line 4: expected 2 columns, got 3"):
        parse_csv("label,x\n0,1\n\n1,2,3\n")
