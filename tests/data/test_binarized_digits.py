"""Tests of the generated binarised digits (BinarizedDigits) for DRAW and the VAE."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader

from pyvidgen.data import BinarizedDigits, digit_glyphs


@pytest.mark.parametrize("binarize", ["stochastic", "threshold"])
def test_items_are_binary_images(binarize):
    ds = BinarizedDigits(50, binarize=binarize)
    batch = ds.batch(range(50))
    assert batch.shape == (50, 1, 28, 28) and batch.dtype == torch.float32
    assert set(batch.unique().tolist()) == {0.0, 1.0}
    # About as much ink as MNIST (13% of the pixels), and never an empty frame.
    assert 0.05 < batch.mean().item() < 0.25
    assert (batch.sum(dim=(1, 2, 3)) > 10).all()


def test_grey_levels_and_other_sizes():
    grey = BinarizedDigits(20, binarize=None, size=32).batch(range(20))
    assert grey.shape == (20, 1, 32, 32) and grey.min() >= 0 and grey.max() <= 1
    assert 0 < grey.mean() < 0.3
    # The frame's border stays background (digits are placed MNIST-style, inside the frame).
    assert grey[..., 0, :].max() < 0.5 and grey[..., :, -1].max() < 0.5


def test_deterministic_per_seed_split_index():
    a, b = BinarizedDigits(100, seed=3), BinarizedDigits(100, seed=3)
    assert torch.equal(a[7], b[7]) and torch.equal(a[-1], a[99])
    assert not torch.equal(a[7], a[8])
    assert not torch.equal(a[7], BinarizedDigits(100, seed=4)[7])
    assert not torch.equal(a[7], BinarizedDigits(100, seed=3, split="test")[7])
    # An item does not depend on the batch it is drawn in, nor on the data set's length.
    batch = a.batch([9, 7, 2])
    assert torch.equal(batch[1], a[7]) and torch.equal(batch[0], a[9])
    assert torch.equal(BinarizedDigits(10_000, seed=3)[7], a[7])
    assert a.batch([]).shape == (0, 1, 28, 28)


def test_same_items_in_another_process():
    ds = BinarizedDigits(100, seed=11, split="test")
    code = (
        "import torch; from pyvidgen.data import BinarizedDigits;"
        "print(int(BinarizedDigits(100, seed=11, split='test').batch([5, 60]).flatten().nonzero().sum()))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert int(out) == int(ds.batch([5, 60]).flatten().nonzero().sum())


def test_dataloader_and_pickle_agree_with_batch():
    ds = BinarizedDigits(40, seed=1)
    loaded = torch.cat(list(DataLoader(ds, batch_size=16)))
    assert torch.equal(loaded, ds.batch(range(40)))
    assert torch.equal(pickle.loads(pickle.dumps(ds))[3], ds[3])


def test_stochastic_binarisation_follows_the_grey_levels():
    info = [BinarizedDigits(300, seed=2).item_info(i) for i in range(300)]
    grey = torch.stack([d["grey"] for d in info])
    binary = torch.stack([d["image"] for d in info])
    assert abs(binary.mean().item() - grey.mean().item()) < 0.005
    # Background never turns on; saturated stroke pixels always do.
    assert binary[grey == 0].max() == 0 and binary[grey == 1].min() == 1
    threshold = BinarizedDigits(300, seed=2, binarize="threshold")
    for i in (0, 5, 299):
        assert torch.equal(threshold[i], (info[i]["grey"] > 0.5).float())
        assert torch.equal(BinarizedDigits(300, seed=2, binarize=None)[i], info[i]["grey"])


def test_train_and_test_use_disjoint_glyphs():
    train_bank, _ = digit_glyphs(28, "train")
    test_bank, test_labels = digit_glyphs(28, "test")
    distances = torch.cdist(test_bank.flatten(1), train_bank.flatten(1))
    assert distances.min() > 0
    ds = BinarizedDigits(50, split="test")
    for i in range(0, 50, 7):
        info = ds.item_info(i)
        assert 0 <= info["glyph_index"] < test_bank.shape[0]
        assert info["label"] == test_labels[info["glyph_index"]]


def test_jitter_makes_copies_of_one_glyph_differ():
    ds = BinarizedDigits(400, seed=0, binarize=None)
    seen: dict[int, int] = {}
    pairs = []
    for i in range(400):
        g = int(ds.item_info(i)["glyph_index"])
        if g in seen:
            pairs.append((seen[g], i))
        seen[g] = i
    assert pairs, "expected repeated glyphs among 400 draws from 1437"
    for a, b in pairs:
        assert (ds[a] - ds[b]).abs().sum() > 5.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        BinarizedDigits(10, split="valid")
    with pytest.raises(ValueError, match="binarize"):
        BinarizedDigits(10, binarize="dither")
    with pytest.raises(ValueError, match="size"):
        BinarizedDigits(10, size=0)
    with pytest.raises(ValueError, match="length"):
        BinarizedDigits(-1)
    with pytest.raises(IndexError, match="out of range"):
        BinarizedDigits(10)[10]
    with pytest.raises(IndexError, match="out of range"):
        BinarizedDigits(10).batch([0, -11])
