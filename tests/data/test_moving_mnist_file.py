"""Tests of the loaders for user-supplied Moving MNIST (.npy) and MNIST IDX files."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pyvidgen.data import MovingMNISTFile, load_mnist_idx


@pytest.fixture
def seq_file(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, size=(20, 5, 64, 64), dtype=np.uint8)
    path = tmp_path / "mnist_test_seq.npy"
    np.save(path, array)
    return path, array


def test_values_and_ordering(seq_file):
    path, array = seq_file
    ds = MovingMNISTFile(path)
    assert len(ds) == 5
    for i in range(5):
        v = ds[i]
        assert v.shape == (20, 1, 64, 64) and v.dtype == torch.float32
        assert v.min() >= 0.0 and v.max() <= 1.0
        for t in (0, 7, 19):
            expected = torch.from_numpy(array[t, i].astype(np.float32) / 255.0)
            torch.testing.assert_close(v[t, 0], expected, rtol=0, atol=1e-7)
    assert torch.equal(ds[-1], ds[4])
    with pytest.raises(IndexError, match="out of range"):
        ds[5]


def test_memory_mapped(seq_file):
    ds = MovingMNISTFile(seq_file[0])
    assert isinstance(ds._data, np.memmap)


def test_seq_len_and_indices(seq_file):
    path, array = seq_file
    ds = MovingMNISTFile(path, seq_len=10, indices=[4, 1])
    assert len(ds) == 2
    v = ds[0]
    assert v.shape == (10, 1, 64, 64)
    torch.testing.assert_close(v[:, 0], torch.from_numpy(array[:10, 4].astype(np.float32) / 255.0), rtol=0, atol=1e-7)
    torch.testing.assert_close(ds[1][9, 0], torch.from_numpy(array[9, 1].astype(np.float32) / 255.0), rtol=0, atol=1e-7)
    assert len(MovingMNISTFile(path, indices=torch.tensor([0, 2, 3]))) == 3
    with pytest.raises(ValueError, match="seq_len"):
        MovingMNISTFile(path, seq_len=21)
    with pytest.raises(ValueError, match="seq_len"):
        MovingMNISTFile(path, seq_len=0)
    with pytest.raises(IndexError, match=r"\[5\]"):
        MovingMNISTFile(path, indices=[0, 5])
    with pytest.raises(ValueError, match="indices"):
        MovingMNISTFile(path, indices=[[0, 1]])


def test_pickle_and_workers(seq_file):
    path, _ = seq_file
    ds = MovingMNISTFile(path, seq_len=4)
    assert len(pickle.dumps(ds)) < 10_000  # the memmap is reopened, not copied
    got = torch.cat(list(DataLoader(ds, batch_size=2, num_workers=2)))
    assert torch.equal(got, torch.stack([ds[i] for i in range(5)]))


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.npy"
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        MovingMNISTFile(missing)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((20, 5, 64), dtype=np.uint8),
        np.zeros((20, 5, 64, 64), dtype=np.float32),
        np.zeros((2, 20, 5, 64, 64), dtype=np.uint8),
    ],
)
def test_wrong_shape_or_dtype(tmp_path, array):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(ValueError, match=r"uint8 array of shape \(T, N, H, W\)") as info:
        MovingMNISTFile(path)
    assert str(array.dtype) in str(info.value) and str(tuple(array.shape)) in str(info.value)


def test_not_an_npy_file(tmp_path):
    path = tmp_path / "garbage.npy"
    path.write_bytes(b"this is not numpy")
    with pytest.raises(ValueError, match="garbage.npy"):
        MovingMNISTFile(path)


def _idx_bytes(images: np.ndarray, magic: int = 2051) -> bytes:
    n, rows, cols = images.shape
    header = b"".join(int(x).to_bytes(4, "big") for x in (magic, n, rows, cols))
    return header + images.astype(np.uint8).tobytes()


@pytest.fixture
def images():
    return np.random.default_rng(1).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)


def test_idx_plain_and_gzip(tmp_path, images):
    plain = tmp_path / "t10k-images-idx3-ubyte"
    plain.write_bytes(_idx_bytes(images))
    packed = tmp_path / "t10k-images-idx3-ubyte.gz"
    packed.write_bytes(gzip.compress(_idx_bytes(images)))
    for path in (plain, packed, str(plain)):
        out = load_mnist_idx(path)
        assert out.dtype == torch.uint8 and out.shape == (3, 28, 28)
        assert torch.equal(out, torch.from_numpy(images))
    odd = np.arange(2 * 5 * 7, dtype=np.uint8).reshape(2, 5, 7)
    (tmp_path / "odd").write_bytes(_idx_bytes(odd))
    assert torch.equal(load_mnist_idx(tmp_path / "odd"), torch.from_numpy(odd))


def test_idx_errors(tmp_path, images):
    with pytest.raises(FileNotFoundError, match="missing-idx"):
        load_mnist_idx(tmp_path / "missing-idx")
    labels = tmp_path / "labels"
    labels.write_bytes(_idx_bytes(images, magic=2049))
    with pytest.raises(ValueError, match="bad magic number 2049.*label file"):
        load_mnist_idx(labels)
    junk = tmp_path / "junk"
    junk.write_bytes(_idx_bytes(images, magic=1234))
    with pytest.raises(ValueError, match="bad magic number 1234.*expected 2051"):
        load_mnist_idx(junk)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(_idx_bytes(images)[:-10])
    with pytest.raises(ValueError, match="pixel bytes"):
        load_mnist_idx(truncated)
    short = tmp_path / "short"
    short.write_bytes(b"\x00\x00\x08")
    with pytest.raises(ValueError, match="too short"):
        load_mnist_idx(short)
