"""Tests of MNISTImages on small MNIST IDX image files the tests write."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pyvidgen.data import MNISTImages


def _idx_bytes(pixels: np.ndarray, magic: int = 2051) -> bytes:
    n, rows, cols = pixels.shape
    header = b"".join(v.to_bytes(4, "big") for v in (magic, n, rows, cols))
    return header + pixels.astype(np.uint8).tobytes()


@pytest.fixture
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)


@pytest.fixture(params=["plain", "gz"])
def idx_file(tmp_path, pixels, request):
    raw = _idx_bytes(pixels)
    if request.param == "gz":
        path = tmp_path / "train-images-idx3-ubyte.gz"
        path.write_bytes(gzip.compress(raw))
    else:
        path = tmp_path / "train-images-idx3-ubyte"
        path.write_bytes(raw)
    return path


def test_grey_items_are_the_file_bytes(idx_file, pixels):
    ds = MNISTImages(idx_file, binarize=None)
    assert len(ds) == 6 and ds.image_shape == (1, 28, 28)
    for i in (0, 5, -1):
        item = ds[i]
        assert item.shape == (1, 28, 28) and item.dtype == torch.float32
        torch.testing.assert_close(item[0], torch.from_numpy(pixels[i % 6].astype(np.float32) / 255), rtol=0, atol=0)


def test_threshold_and_stochastic_binarisation(idx_file, pixels):
    grey = torch.from_numpy(pixels.astype(np.float32) / 255)[:, None]
    assert torch.equal(MNISTImages(idx_file, binarize="threshold").batch(range(6)), (grey > 0.5).float())
    ds = MNISTImages(idx_file, seed=5)
    batch = ds.batch(range(6))
    assert set(batch.unique().tolist()) == {0.0, 1.0}
    assert abs(batch.mean().item() - grey.mean().item()) < 0.02  # 4704 Bernoulli draws
    # The same image for an index every time, in any batch; another seed draws other pixels.
    assert torch.equal(ds[3], MNISTImages(idx_file, seed=5)[3]) and torch.equal(batch[3], ds[3])
    assert not torch.equal(ds[3], MNISTImages(idx_file, seed=6)[3])
    assert torch.equal(torch.cat(list(DataLoader(ds, batch_size=4))), batch)


def test_indices_subset(idx_file, pixels):
    ds = MNISTImages(idx_file, binarize=None, indices=[4, 1])
    assert len(ds) == 2
    torch.testing.assert_close(ds[0][0], torch.from_numpy(pixels[4].astype(np.float32) / 255), rtol=0, atol=0)
    # Stochastic pixels belong to the file's image, not the subset's position.
    full, subset = MNISTImages(idx_file, seed=1), MNISTImages(idx_file, seed=1, indices=[4, 1])
    assert torch.equal(subset[1], full[1])
    with pytest.raises(IndexError, match=r"\[6\]"):
        MNISTImages(idx_file, indices=[0, 6])
    with pytest.raises(IndexError, match="out of range"):
        ds[2]


def test_errors(tmp_path, pixels):
    with pytest.raises(FileNotFoundError, match="no such file"):
        MNISTImages(tmp_path / "missing-idx3-ubyte")
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes((2049).to_bytes(4, "big") + (8).to_bytes(4, "big") + bytes(8))
    with pytest.raises(ValueError, match="label file"):
        MNISTImages(labels)
    truncated = tmp_path / "truncated-idx3-ubyte"
    truncated.write_bytes(_idx_bytes(pixels)[:-10])
    with pytest.raises(ValueError, match="pixel bytes"):
        MNISTImages(truncated)
    good = tmp_path / "good-idx3-ubyte"
    good.write_bytes(_idx_bytes(pixels))
    with pytest.raises(ValueError, match="binarize"):
        MNISTImages(good, binarize="yes")
