"""Tests of the on-the-fly bouncing digits data set."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch.utils.data import DataLoader

from pyvidgen.data import MovingDigits, digit_glyphs


def _paste_oracle(positions: torch.Tensor, glyphs: torch.Tensor, size: int) -> torch.Tensor:
    """Slow loop reference: paste each glyph at its top-left corner, composite with max."""
    T, D, _ = positions.shape
    d = glyphs.shape[-1]
    out = torch.zeros(T, 1, size, size)
    for t in range(T):
        for k in range(D):
            r, c = positions[t, k].tolist()
            region = out[t, 0, r : r + d, c : c + d]
            out[t, 0, r : r + d, c : c + d] = torch.maximum(region, glyphs[k])
    return out


def _centre_of_mass(video: torch.Tensor) -> torch.Tensor:
    """(T, 1, H, W) -> (T, 2) intensity-weighted (row, col) centre."""
    frames = video[:, 0].double()
    H, W = frames.shape[-2:]
    mass = frames.sum(dim=(1, 2))
    rows = (frames.sum(dim=2) * torch.arange(H, dtype=torch.float64)).sum(dim=1) / mass
    cols = (frames.sum(dim=1) * torch.arange(W, dtype=torch.float64)).sum(dim=1) / mass
    return torch.stack((rows, cols), dim=1)


def test_default_shape_dtype_range():
    ds = MovingDigits(length=5)
    assert len(ds) == 5
    v = ds[0]
    assert v.shape == (20, 1, 64, 64)
    assert v.dtype == torch.float32
    assert v.min() >= 0.0 and v.max() <= 1.0
    assert v.max() == 1.0  # each glyph peaks at 1
    assert (v.flatten(1).amax(dim=1) > 0).all()  # no empty frame


def test_determinism():
    a = MovingDigits(length=10, seed=3)
    b = MovingDigits(length=10, seed=3)
    for i in (0, 7):
        assert torch.equal(a[i], a[i])
        assert torch.equal(a[i], b[i])
    assert torch.equal(a[-1], a[9])
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a[0], MovingDigits(length=10, seed=4)[0])
    assert not torch.equal(a[0], MovingDigits(length=10, seed=3, split="test")[0])


def test_index_errors():
    ds = MovingDigits(length=3)
    with pytest.raises(IndexError, match="out of range"):
        ds[3]
    with pytest.raises(IndexError, match="out of range"):
        ds[-4]


def test_glyph_banks_disjoint():
    train, train_labels = digit_glyphs(28, "train")
    test, test_labels = digit_glyphs(28, "test")
    assert train.shape == (1437, 28, 28) and test.shape == (360, 28, 28)
    assert train.dtype == torch.float32 and train_labels.dtype == torch.int64
    assert train_labels.shape == (1437,) and test_labels.shape == (360,)
    assert set(train_labels.tolist()) == set(range(10)) == set(test_labels.tolist())
    for bank in (train, test):
        assert bank.min() >= 0.0
        assert torch.allclose(bank.amax(dim=(1, 2)), torch.ones(bank.shape[0]))
    # No test glyph equals (or nearly equals) a train glyph.
    dist = torch.cdist(test.flatten(1), train.flatten(1))
    assert dist.min() > 1.0
    small, _ = digit_glyphs(12, "test")
    assert small.shape == (360, 12, 12)
    # Returned tensors are copies: mutating them leaves the cached bank alone.
    train.zero_()
    assert digit_glyphs(28, "train")[0].amax() == 1.0


def test_video_uses_split_glyphs():
    for split in ("train", "test"):
        ds = MovingDigits(length=4, seq_len=2, digits=1, split=split)
        bank, labels = digit_glyphs(28, split)
        for i in range(4):
            info = ds.item_info(i)
            (r, c) = info["positions"][0, 0].tolist()
            crop = info["video"][0, 0, r : r + 28, c : c + 28]
            g = info["glyph_indices"][0]
            assert torch.equal(crop, bank[g])
            assert info["labels"][0] == labels[g]


@pytest.mark.parametrize(
    ("digits", "size", "digit_size", "seq_len"),
    [(1, 64, 28, 12), (2, 64, 28, 20), (3, 64, 28, 9), (2, 48, 20, 7), (3, 40, 16, 5), (1, 28, 28, 4)],
)
def test_matches_paste_oracle(digits, size, digit_size, seq_len):
    ds = MovingDigits(length=3, seq_len=seq_len, size=size, digits=digits, digit_size=digit_size, seed=11)
    bank, _ = digit_glyphs(digit_size, "train")
    for i in range(3):
        info = ds.item_info(i)
        v, pos = info["video"], info["positions"]
        assert v.shape == (seq_len, 1, size, size) and v.dtype == torch.float32
        assert pos.shape == (seq_len, digits, 2) and pos.dtype == torch.int64
        assert info["labels"].shape == (digits,)
        assert pos.min() >= 0 and pos.max() <= size - digit_size
        assert torch.equal(v, ds[i])
        assert torch.equal(v, _paste_oracle(pos, bank[info["glyph_indices"]], size))


def test_single_digit_stays_inside_and_moves_at_speed():
    speed = 3.0
    ds = MovingDigits(length=6, seq_len=40, digits=1, speed=speed, seed=5)
    bank, _ = digit_glyphs(28, "train")
    for i in range(6):
        info = ds.item_info(i)
        v = info["video"]
        # The whole glyph is on the canvas in every frame: nothing clipped at the border.
        mass = bank[info["glyph_indices"][0]].sum()
        torch.testing.assert_close(v.sum(dim=(1, 2, 3)), mass.expand(40), rtol=1e-5, atol=1e-4)
        step = _centre_of_mass(v).diff(dim=0).norm(dim=1)
        assert step.max() <= speed + 2**0.5 + 1e-6  # straight-line step, up to pixel rounding
        assert abs(step.median().item() - speed) <= 1.0  # most frames move at about the speed
        assert (step > 0).float().mean() > 0.9


def test_bouncing_keeps_positions_in_bounds():
    size, digit_size, T = 48, 20, 200
    room = size - digit_size
    ds = MovingDigits(length=4, seq_len=T, size=size, digit_size=digit_size, digits=3, speed=(3.0, 5.0), seed=2)
    bounces = 0
    for i in range(4):
        pos = ds.item_info(i)["positions"]
        assert pos.min() >= 0 and pos.max() <= room
        step = pos.diff(dim=0)
        assert step.abs().max() <= 5 + 1  # never a jump: reflection, not wrap-around
        # Velocity reversals along an axis (a bounce) happen: the step sign flips.
        flips = (step[1:] * step[:-1] < 0).sum().item()
        bounces += flips
        # Positions cover the frame: both walls are approached.
        assert pos.min() <= 2 and pos.max() >= room - 2
    assert bounces > 20


def test_speed_range_and_zero_speed():
    still = MovingDigits(length=2, seq_len=5, speed=0.0)
    v = still[0]
    assert torch.equal(v, v[:1].expand_as(v))
    fast = MovingDigits(length=2, seq_len=5, digits=1, speed=(6.0, 6.0))
    step = _centre_of_mass(fast[1]).diff(dim=0).norm(dim=1)
    assert step.median() > 4.0


def test_full_size_digit_is_static():
    ds = MovingDigits(length=1, seq_len=3, size=28, digit_size=28)
    assert (ds.item_info(0)["positions"] == 0).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"digit_size": 70}, "digit_size"),
        ({"split": "val"}, "split"),
        ({"speed": (4.0, 2.0)}, "speed"),
        ({"speed": -1.0}, "speed"),
        ({"speed": "fast"}, "speed"),
        ({"digits": 0}, "digits"),
        ({"seq_len": 0}, "seq_len"),
        ({"length": -1}, "length"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MovingDigits(**kwargs)
    with pytest.raises(ValueError, match="split"):
        digit_glyphs(28, "val")


def test_batch_pickle_and_dataloader_workers():
    ds = MovingDigits(length=8, seq_len=6, size=48, digit_size=20, seed=9)
    expected = ds.batch(range(8))
    assert expected.shape == (8, 6, 1, 48, 48)
    assert ds.batch([]).shape == (0, 6, 1, 48, 48)
    blob = pickle.dumps(ds)
    assert len(blob) < 10_000  # the glyph bank is rebuilt in the worker, not shipped
    clone = pickle.loads(blob)
    assert torch.equal(clone[3], expected[3])
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    got = torch.cat(list(loader))
    assert torch.equal(got, expected)


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_colored_digits_are_tinted_copies_of_the_grey_video(index):
    # Every tint is a full-value colour (its largest channel is exactly 1) and compositing is a max, so the
    # channel-wise max of an RGB video is exactly the grey video of the same index, overlaps included.
    kwargs = dict(length=4, seq_len=6, digits=3, seed=21)
    grey = MovingDigits(**kwargs)[index]
    rgb_ds = MovingDigits(colors=True, **kwargs)
    rgb = rgb_ds[index]
    assert rgb.shape == (6, 3, 64, 64) and rgb.dtype == torch.float32
    assert torch.equal(rgb.amax(dim=1, keepdim=True), grey)
    assert torch.equal(rgb_ds.item_info(index)["video"], rgb)
    assert rgb_ds.batch([0, 1]).shape == (2, 6, 3, 64, 64)
    assert MovingDigits(colors=True, **kwargs).batch([]).shape == (0, 6, 3, 64, 64)
    # The digits are coloured, not grey: some pixel has unequal channels.
    assert (rgb.amax(dim=1) - rgb.amin(dim=1)).max() > 0.5
