"""Tests of the moving shapes data set (Visual Dynamics) and its velocity-distribution evaluation helpers."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pyvidgen.data import SHAPE_CLASSES, Shapes, estimate_velocities, velocity_histogram, velocity_kl


def _coverage_oracle(label: int, x: float, y: float, r: float, size: int) -> torch.Tensor:
    """Slow reference: fraction of a 4 x 4 grid of samples per pixel inside the shape, in image coordinates."""
    t = (torch.arange(size * 4, dtype=torch.float64) + 0.5) / 4
    sy, sx = t[:, None] - y, t[None, :] - x
    if label == 0:
        inside = sx.square() + sy.square() <= r * r
    elif label == 1:
        inside = (sx.abs() <= r) & (sy.abs() <= r)
    else:  # apex up at (x, y - r), base from (x - r, y + r) to (x + r, y + r)
        inside = (sy.abs() <= r) & (2 * sx.abs() <= sy + r)
    return inside.double().reshape(size, 4, size, 4).mean(dim=(1, 3))


def _infos(ds: Shapes, n: int) -> list[dict[str, torch.Tensor]]:
    return [ds.item_info(i) for i in range(n)]


def test_shape_dtype_range():
    ds = Shapes(10)
    assert len(ds) == 10 and ds.size == 32 and ds.max_speed == 4
    assert repr(ds) == "Shapes(length=10, size=32, split='train', seed=0, max_speed=4)"
    x = ds[0]
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    b = ds.batch(range(10))
    assert b.shape == (10, 2, 3, 32, 32) and b.dtype == torch.float32
    assert b.min() >= 0.0 and b.max() <= 1.0
    # Every frame shows a shape whose brightest channel reaches 1 inside it; the background is black.
    assert torch.equal(b.amax(dim=(2, 3, 4)), torch.ones(10, 2))
    assert (b[:, :, :, 0, 0] == 0).float().mean() > 0.5
    assert Shapes(3, size=64).batch([0, 2]).shape == (2, 2, 3, 64, 64)
    assert ds.batch([]).shape == (0, 2, 3, 32, 32)


def test_item_info_types():
    info = Shapes(5, size=48, max_speed=3).item_info(4)
    assert set(info) == {"frames", "label", "velocity", "position", "radius"}
    assert info["frames"].shape == (2, 3, 48, 48) and info["frames"].dtype == torch.float32
    assert info["label"].shape == () and info["label"].dtype == torch.int64
    assert info["velocity"].shape == (2,) and info["velocity"].dtype == torch.int64
    assert info["position"].shape == (2,) and info["position"].dtype == torch.float32
    assert info["radius"].shape == () and info["radius"].dtype == torch.float32
    assert 0 <= info["label"] < len(SHAPE_CLASSES)
    assert 1 <= info["velocity"].abs().max() <= 3


def test_determinism_and_splits():
    a, b = Shapes(100, seed=3), Shapes(100, seed=3)
    assert torch.equal(a[7], b[7]) and torch.equal(a[7], a[7])
    assert torch.equal(a[-1], a[99]) and torch.equal(a[-100], a[0])
    assert not torch.equal(a[7], a[8])
    assert not torch.equal(a[7], Shapes(100, seed=4)[7])
    assert not torch.equal(a[7], Shapes(100, seed=3, split="test")[7])
    # An item depends neither on the batch it is drawn in nor on the data set's length.
    batch = a.batch([9, 7, 2, -1])
    assert torch.equal(batch[1], a[7]) and torch.equal(batch[0], a[9]) and torch.equal(batch[3], a[99])
    assert torch.equal(Shapes(10_000, seed=3)[7], a[7])
    assert torch.equal(a.item_info(7)["frames"], a[7])


def test_same_items_in_another_process():
    ds = Shapes(100, seed=11, split="test", size=40)
    code = (
        "from pyvidgen.data import Shapes;"
        "print(repr(Shapes(100, seed=11, split='test', size=40).batch([5, 60]).double().sum().item()))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert float(out) == ds.batch([5, 60]).double().sum().item()


def test_index_errors():
    ds = Shapes(3)
    for bad in (3, -4):
        with pytest.raises(IndexError, match="out of range"):
            ds[bad]
        with pytest.raises(IndexError, match="out of range"):
            ds.batch([0, bad])
        with pytest.raises(IndexError, match="out of range"):
            ds.item_info(bad)
    with pytest.raises(IndexError, match="out of range"):
        Shapes(0)[0]


@pytest.mark.parametrize(("size", "max_speed"), [(16, 1), (16, 10), (32, 4), (32, 20), (64, 4), (37, 7)])
def test_frame1_is_frame0_shifted_and_shape_stays_inside(size, max_speed):
    ds = Shapes(150, size=size, max_speed=max_speed, seed=size + max_speed)
    R = max_speed
    frames = ds.batch(range(150))
    for i in range(150):
        info = ds.item_info(i)
        dx, dy = info["velocity"].tolist()
        x0, x1 = frames[i, 0], frames[i, 1]
        # Exactly a pixel shift: pad, roll, crop gives frame 1.
        padded = F.pad(x0, (R, R, R, R))
        assert torch.equal(torch.roll(padded, shifts=(dy, dx), dims=(1, 2))[:, R:-R, R:-R], x1)
        # No mass lost at the border, and the bounding box lies inside both frames.
        assert x0.double().sum() == x1.double().sum() > 0
        (x, y), r = info["position"].double().tolist(), info["radius"].item()
        for cx, cy in ((x, y), (x + dx, y + dy)):
            assert -1e-4 <= cx - r and cx + r <= size + 1e-4
            assert -1e-4 <= cy - r and cy + r <= size + 1e-4
        assert 3 / 32 * size - 1e-4 <= r <= 6 / 32 * size + 1e-4


@pytest.mark.parametrize("size", [16, 32, 64])
def test_matches_rendering_oracle(size):
    ds = Shapes(60, size=size, seed=5)
    for i in range(60):
        info = ds.item_info(i)
        frames = info["frames"].double()
        (x, y), r = info["position"].double().tolist(), info["radius"].item()
        want = _coverage_oracle(int(info["label"]), x, y, r, size)
        # The brightest channel of the colour is 1, so it carries the coverage; the others are scaled copies.
        coverage = frames[0].amax(dim=0)
        diff = (coverage - want).abs()
        # position and radius come back in float32: a handful of boundary samples may fall the other way.
        assert diff.max() <= 2 / 16 + 1e-9 and (diff > 0).sum() <= 3
        colour = frames[0].flatten(1).sum(dim=1) / frames[0].amax(dim=0).sum()
        torch.testing.assert_close(frames[0], colour[:, None, None] * coverage)
        assert colour.max() == 1.0


def test_classes_look_different_fill_ratio():
    # Mass of the coverage over the area of the 2r x 2r bounding box: square 1 > circle pi / 4 > triangle 1 / 2.
    ds = Shapes(240, size=64, seed=2)
    ratios = {0: [], 1: [], 2: []}
    for info in _infos(ds, 240):
        coverage = info["frames"][0].amax(dim=0).double()
        ratios[int(info["label"])].append(coverage.sum().item() / (2 * info["radius"].item()) ** 2)
    expected = {0: math.pi / 4, 1: 1.0, 2: 0.5}
    for label, values in ratios.items():
        values = torch.tensor(values)
        assert len(values) > 50
        assert (values - expected[label]).abs().max() < 0.05, SHAPE_CLASSES[label]
        assert abs(values.mean().item() - expected[label]) < 0.01, SHAPE_CLASSES[label]


def test_velocity_distribution_values():
    ds = Shapes(1, max_speed=2)
    circle, square, triangle = (ds.velocity_distribution(c) for c in range(3))
    for law in (circle, square, triangle):
        assert law.shape == (5, 5) and law.dtype == torch.float64
        assert law.sum().item() == pytest.approx(1.0, abs=1e-12)
        assert law[2, 2] == 0  # nothing stands still
    q = 0.25
    assert torch.equal(circle[:, 2], torch.tensor([q, q, 0, q, q], dtype=torch.float64))  # dx = 0, dy = +-1, +-2
    assert torch.equal(square[2], torch.tensor([q, q, 0, q, q], dtype=torch.float64))  # dy = 0
    assert torch.equal(triangle, torch.diag(torch.tensor([q, q, 0, q, q], dtype=torch.float64)))  # dx = dy
    assert torch.equal(ds.velocity_distribution(torch.tensor(1)), square)


def test_empirical_velocity_laws_and_class_frequencies():
    R, n = 4, 6000
    ds = Shapes(n, size=24, max_speed=R, seed=1)
    infos = [ds.item_info(i) for i in range(n)]
    labels = torch.stack([info["label"] for info in infos])
    velocities = torch.stack([info["velocity"] for info in infos])
    freq = torch.bincount(labels, minlength=3).double() / n
    assert (freq - 1 / 3).abs().max() < 0.025
    for label in range(3):
        law = ds.velocity_distribution(label)
        own = velocities[labels == label]
        hist = velocity_histogram(own, R)
        assert (hist[law == 0] == 0).all()  # never a velocity outside the class's support
        assert (hist - law).abs().max() < 0.03
        # Pearson chi-square over the 2R support bins (7 degrees of freedom; 24.3 is its 0.999 quantile).
        support = law > 0
        expected = law[support] * own.shape[0]
        chi2 = ((hist[support] * own.shape[0] - expected).square() / expected).sum().item()
        assert chi2 < 24.3, (SHAPE_CLASSES[label], chi2)
        assert velocity_kl(law, hist, smoothing=0.0) < 0.01


def _velocity_batch(size: int, n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    ds = Shapes(n, size=size, seed=seed)
    frames = ds.batch(range(n))
    truth = torch.stack([ds.item_info(i)["velocity"] for i in range(n)])
    return frames, truth


@pytest.mark.parametrize("size", [32, 64])
def test_estimate_velocities_clean_noisy_blurred(size):
    frames, truth = _velocity_batch(size, seed=size)
    f0, f1 = frames[:, 0], frames[:, 1]
    got = estimate_velocities(f0, f1, 4)
    assert got.shape == (64, 2) and got.dtype == torch.int64
    assert torch.equal(got, truth)
    noise = 0.1 * torch.randn(f1.shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(estimate_velocities(f0, f1 + noise, 4), truth)
    box = torch.full((3, 1, 3, 3), 1 / 9)
    assert torch.equal(estimate_velocities(f0, F.conv2d(f1, box, padding=1, groups=3), 4), truth)
    g = torch.exp(-0.5 * torch.arange(-2.0, 3.0).square())
    gauss = (g[:, None] * g[None, :] / g.sum() ** 2).expand(3, 1, 5, 5)
    assert torch.equal(estimate_velocities(f0, F.conv2d(f1, gauss, padding=2, groups=3) + noise, 4), truth)
    # A larger search window still finds the true shift; float64 and a single channel work too.
    assert torch.equal(estimate_velocities(f0.double(), f1.double(), 6), truth)
    assert torch.equal(estimate_velocities(f0.amax(1, keepdim=True), f1.amax(1, keepdim=True), 4), truth)


def test_estimate_velocities_conventions():
    a = torch.zeros(3, 1, 10, 12)
    a[:, 0, 4, 5] = 1.0
    b = torch.zeros_like(a)
    b[0, 0, 4, 7] = 1.0  # moved 2 to the right: dx = +2
    b[1, 0, 1, 4] = 1.0  # 3 up, 1 left: (dx, dy) = (-1, -3)
    b[2, 0, 4, 5] = 1.0  # still
    assert estimate_velocities(a, b, 3).tolist() == [[2, 0], [-1, -3], [0, 0]]
    # Blank pairs tie everywhere: the shortest shift wins.
    blank = torch.zeros(2, 3, 8, 8)
    assert estimate_velocities(blank, blank, 2).tolist() == [[0, 0], [0, 0]]
    assert estimate_velocities(torch.zeros(0, 1, 8, 8), torch.zeros(0, 1, 8, 8), 2).shape == (0, 2)


def test_velocity_histogram():
    v = torch.tensor([[1, 0], [1, 0], [-2, 2], [0, -1]])
    h = velocity_histogram(v, 2)
    assert h.shape == (5, 5) and h.dtype == torch.float64
    assert h.sum().item() == pytest.approx(1.0)
    want = torch.zeros(5, 5, dtype=torch.float64)
    want[2, 3] = 0.5  # (dx, dy) = (1, 0) at [dy + 2, dx + 2]
    want[4, 0] = 0.25
    want[1, 2] = 0.25
    assert torch.equal(h, want)
    assert torch.equal(velocity_histogram(v.int(), 3)[3, 4], torch.tensor(0.5, dtype=torch.float64))


def test_velocity_kl():
    law = Shapes(1).velocity_distribution(0)
    assert velocity_kl(law, law, smoothing=0.0).item() == 0.0
    same = velocity_kl(law, law).item()
    assert 0.0 <= same <= -math.log(1 - 1e-3)
    other = Shapes(1).velocity_distribution(2)
    assert velocity_kl(law, other).item() > 1.0
    # A deterministic predictor (always still) against the circles' law: finite with smoothing, infinite without.
    still = velocity_histogram(torch.zeros(10, 2, dtype=torch.int64), 4)
    kl = velocity_kl(law, still)
    assert kl.dtype == torch.float64 and kl.shape == () and math.isfinite(kl.item())
    assert kl.item() == pytest.approx(math.log(1 / 8 / (1e-3 / 81)))
    assert velocity_kl(law, still, smoothing=0.0).item() == math.inf
    # A 3 x 3 example by hand: q is mixed as 0.91 * q + 0.09 / 9.
    p = torch.tensor([[0.0, 0.5, 0.0], [0.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
    q = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    want = 0.5 * math.log(0.5 / 0.92) + 0.5 * math.log(0.5 / 0.01)
    assert velocity_kl(p, q, smoothing=0.09).item() == pytest.approx(want, rel=1e-12)
    # Direction: KL(p || q) != KL(q || p).
    assert velocity_kl(q, p, smoothing=0.09).item() == pytest.approx(math.log(1.0 / (0.91 * 0.5 + 0.01)))


def test_pickle_and_dataloader_workers():
    ds = Shapes(24, size=32, seed=9)
    expected = ds.batch(range(24))
    blob = pickle.dumps(ds)
    assert len(blob) < 1_000
    assert torch.equal(pickle.loads(blob)[5], expected[5])
    loader = DataLoader(ds, batch_size=8, num_workers=2, shuffle=False)
    assert torch.equal(torch.cat(list(loader)), expected)
    assert torch.equal(torch.cat(list(DataLoader(ds, batch_size=5))), expected)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"length": -1}, "length must be >= 0"),
        ({"length": 2.5}, "length must be an int"),
        ({"size": 15}, "size must be >= 16"),
        ({"size": 32.0}, "size must be an int"),
        ({"split": "val"}, "split must be one of"),
        ({"seed": "a"}, "seed must be an int"),
        ({"max_speed": 0}, "max_speed must be a positive int"),
        ({"max_speed": 1.5}, "max_speed must be a positive int"),
        ({"max_speed": 21}, r"max_speed \(21\) too large for size 32.*max_speed <= 20"),
        ({"size": 16, "max_speed": 11}, r"max_speed \(11\) too large for size 16"),
    ],
)
def test_bad_dataset_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Shapes(**({"length": 4} | kwargs))


def test_bad_helper_arguments():
    ds = Shapes(4)
    for label in (3, -1, "circle", True, 1.0):
        with pytest.raises(ValueError, match="label must be a class index"):
            ds.velocity_distribution(label)
    f = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match="max_speed must be a positive int"):
        estimate_velocities(f, f, 0)
    with pytest.raises(ValueError, match=r"must both be \(n, C, H, W\) of one shape"):
        estimate_velocities(f, f[:1], 2)
    with pytest.raises(ValueError, match=r"must both be \(n, C, H, W\)"):
        estimate_velocities(f[0], f[0], 2)
    with pytest.raises(ValueError, match="must be tensors"):
        estimate_velocities(f.numpy(), f, 2)
    v = torch.tensor([[1, 0], [3, 0]])
    with pytest.raises(ValueError, match=r"must lie in \[-max_speed, max_speed\] = \[-2, 2\]"):
        velocity_histogram(v, 2)
    with pytest.raises(ValueError, match="integer tensor"):
        velocity_histogram(v.float(), 3)
    with pytest.raises(ValueError, match=r"\(n, 2\) tensor"):
        velocity_histogram(v[:, 0], 3)
    with pytest.raises(ValueError, match="at least one velocity"):
        velocity_histogram(v[:0], 3)
    with pytest.raises(ValueError, match="max_speed must be a positive int"):
        velocity_histogram(v, 0)
    law = ds.velocity_distribution(0)
    with pytest.raises(ValueError, match="one shape"):
        velocity_kl(law, torch.full((3, 3), 1 / 9))
    with pytest.raises(ValueError, match="predicted must be a distribution"):
        velocity_kl(law, 2 * law)
    with pytest.raises(ValueError, match="true must be a distribution"):
        velocity_kl(-law, law)
    with pytest.raises(ValueError, match="non-empty tensor"):
        velocity_kl(law.numpy(), law)
    with pytest.raises(ValueError, match=r"smoothing must be a float in \[0, 1\]"):
        velocity_kl(law, law, smoothing=1.5)
