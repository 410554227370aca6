"""torchopt_review.data: IDX reading (gz and raw), every corrupt-file error, splits, batches."""

from __future__ import annotations

import gzip
import struct

import pytest
import torch

from conftest import make_synthetic, write_idx, write_synthetic_dir
from torchopt_review import data as fm
from torchopt_review.errors import DataError


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_reads_what_was_written(tmp_path, gz):
    tensors = make_synthetic(n_train=50, n_test=20)
    d = write_synthetic_dir(tmp_path, gz=gz, n_train=50, n_test=20)
    ds = fm.load_fashion_mnist(d)
    assert ds.train_images.dtype == torch.uint8 and ds.train_images.shape == (50, 784)
    assert torch.equal(ds.train_images, tensors["train-images-idx3-ubyte"].reshape(50, 784))
    assert torch.equal(ds.test_labels, tensors["t10k-labels-idx1-ubyte"].long())
    assert ds.train_labels.dtype == torch.int64


def test_read_idx_header_by_hand(tmp_path):
    # an IDX file assembled byte by byte, independent of write_idx
    body = bytes(range(6))
    (tmp_path / "x").write_bytes(b"\x00\x00\x08\x02" + struct.pack(">II", 2, 3) + body)
    t = fm.read_idx(tmp_path / "x")
    assert t.tolist() == [[0, 1, 2], [3, 4, 5]]


def _corrupt_dir(tmp_path, name, data: bytes):
    d = write_synthetic_dir(tmp_path / "d", n_train=30, n_test=10)
    (d / (name + ".gz")).write_bytes(data)
    return d


@pytest.mark.parametrize("case,make,message", [
    ("wrong magic", lambda: gzip.compress(b"\x00\x00\x08\x07" + b"\x00" * 20), "wrong magic number"),
    ("float idx", lambda: gzip.compress(b"\x00\x00\x0d\x03" + b"\x00" * 20), "wrong magic number"),
    ("truncated data", lambda: gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">III", 30, 28, 28) + b"\x00" * 100), "truncated or padded"),
    ("truncated header", lambda: gzip.compress(b"\x00\x00\x08\x03\x00\x00"), "truncated inside its header"),
    ("corrupt gzip", lambda: b"\x1f\x8b" + b"garbage" * 10, "cannot read"),
    ("empty", lambda: b"", "not an IDX file"),
])
def test_corrupt_images_name_the_file(tmp_path, case, make, message):
    d = _corrupt_dir(tmp_path, "train-images-idx3-ubyte", make())
    with pytest.raises(DataError, match=message) as err:
        fm.load_fashion_mnist(d)
    assert "train-images-idx3-ubyte" in str(err.value)


def test_label_out_of_range(tmp_path):
    d = write_synthetic_dir(tmp_path, n_train=30, n_test=10)
    write_idx(d / "t10k-labels-idx1-ubyte.gz", torch.full((10,), 12, dtype=torch.uint8))
    with pytest.raises(DataError, match="label 12 out of range 0-9"):
        fm.load_fashion_mnist(d)


def test_count_mismatch(tmp_path):
    d = write_synthetic_dir(tmp_path, n_train=30, n_test=10)
    write_idx(d / "train-labels-idx1-ubyte.gz", torch.zeros(29, dtype=torch.uint8))
    with pytest.raises(DataError, match="30 images but .* 29 labels"):
        fm.load_fashion_mnist(d)


def test_wrong_image_size(tmp_path):
    d = write_synthetic_dir(tmp_path, n_train=30, n_test=10)
    write_idx(d / "t10k-images-idx3-ubyte.gz", torch.zeros(10, 32, 32, dtype=torch.uint8))
    with pytest.raises(DataError, match="32x32|\\(32, 32\\)"):
        fm.load_fashion_mnist(d)


def test_missing_dir_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as err:
        fm.find_data_dir(tmp_path / "nope")
    assert "nope" in str(err.value) and "--data-dir" in str(err.value)


def test_search_order_and_package_hint(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setattr(fm, "TORCHVISION_DIR", tmp_path / "tv")
    with pytest.raises(DataError) as err:
        fm.find_data_dir()
    assert "dataset-fashion-mnist" in str(err.value) and str(tmp_path / "debian") in str(err.value)
    write_synthetic_dir(tmp_path / "tv", n_train=20, n_test=5, gz=False)
    assert fm.find_data_dir() == tmp_path / "tv"
    write_synthetic_dir(tmp_path / "env", n_train=20, n_test=5)
    monkeypatch.setenv("TORCHOPT_DATA_DIR", str(tmp_path / "env"))
    assert fm.find_data_dir() == tmp_path / "env"


def test_keras_split_is_the_last_part():
    train, val = fm.split_indices(100, "keras", 10, seed=3)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))


def test_random_split_seeded_disjoint_complete():
    a = fm.split_indices(100, "random", 10, seed=1)
    b = fm.split_indices(100, "random", 10, seed=1)
    c = fm.split_indices(100, "random", 10, seed=2)
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    assert sorted(a[0].tolist() + a[1].tolist()) == list(range(100))


def test_batches_cover_epoch_once_and_keep_partial_batch():
    x = torch.arange(100, dtype=torch.uint8).unsqueeze(1)
    y = torch.arange(100)
    b = fm.ChunkedBatches(x, y, batch_size=32, steps=2, seed=0)
    assert b.num_batches == 4 and len(b) == 2  # 3 batches of 32 and one of 4, Keras style
    seen = torch.cat([labels for _, labels in b])
    assert sorted(seen.tolist()) == list(range(100))
    assert [len(l) for _, l in b] == [64, 36]


def test_epoch_order_depends_only_on_seed_and_epoch():
    x, y = torch.zeros(50, 1, dtype=torch.uint8), torch.arange(50)
    b = fm.ChunkedBatches(x, y, batch_size=10, steps=5, seed=4)
    b.epoch = 3
    first = torch.cat([l for _, l in b])
    b2 = fm.ChunkedBatches(x, y, batch_size=10, steps=1, seed=4)
    b2.epoch = 3
    assert torch.equal(first, torch.cat([l for _, l in b2]))  # chunking does not change the order
    b2.epoch = 4
    assert not torch.equal(first, torch.cat([l for _, l in b2]))


def test_limit_batches():
    b = fm.ChunkedBatches(torch.zeros(100, 1, dtype=torch.uint8), torch.arange(100), batch_size=10, steps=3, seed=0, limit_batches=4)
    assert sum(len(l) for _, l in b) == 40 and len(b) == 2


@pytest.mark.dataset
def test_real_dataset_shapes():
    ds = fm.load_fashion_mnist()
    assert ds.train_images.shape == (60000, 784) and ds.test_images.shape == (10000, 784)
    assert torch.bincount(ds.train_labels).tolist() == [6000] * 10
