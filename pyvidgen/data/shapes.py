"""The synthetic shapes data set of Visual Dynamics (Xue et al. 2016, cross convolutional networks), made on the fly.

Each item is a pair of frames showing one coloured shape (circle, square or triangle) on a black background,
the second frame being the first translated by an integer velocity. Each class moves with its own
multi-modal velocity law (circles vertically, squares horizontally, triangles diagonally, up or down /
left or right with equal chance), so a deterministic next-frame predictor cannot match the data: a model
has to sample. `estimate_velocities`, `velocity_histogram` and `velocity_kl` compare the velocities of
predicted next frames with the true law `Shapes.velocity_distribution`, class by class.

Items are pure functions of ``(seed, split, index)``.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from pyvidgen.data.moving_digits import _SPLITS, _check_positive_int, _item_seed

__all__ = ["SHAPE_CLASSES", "Shapes", "estimate_velocities", "velocity_histogram", "velocity_kl"]

SHAPE_CLASSES = ("circle", "square", "triangle")

_MIN_SIZE = 16
# Shape radius (circle radius, square half-side, triangle half-width = half-height) as a fraction of `size`.
_RADIUS_RANGE = (3.0 / 32.0, 6.0 / 32.0)
_SUBSAMPLES = 4  # anti-aliasing: coverage of a 4 x 4 grid of samples per pixel
# Uniforms drawn per item, in this order: class, speed, sign, radius, x, y, hue, one reserved.
_DRAWS = 8


def _check_index_int(value, name: str) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int, got {value!r}") from None


def _hsv_to_rgb(hue: np.ndarray) -> np.ndarray:
    """(n,) hues in [0, 1) -> (n, 3) RGB of full saturation and value (the brightest channel is 1)."""
    k = (np.array([5.0, 3.0, 1.0]) + 6.0 * hue[:, None]) % 6.0
    return 1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


class Shapes(Dataset):
    """Pairs of frames with one moving shape, after the shapes data set of Visual Dynamics (Xue et al. 2016).

    Per item: a class drawn uniformly from `SHAPE_CLASSES`; a radius r drawn uniformly in
    [3/32, 6/32] * ``size`` (a circle of radius r, a square of half-side r, or an upward-pointing
    isosceles triangle whose bounding box is the 2r x 2r square); a colour of uniformly random hue at
    full saturation and value (HSV), so its brightest channel is 1; an integer velocity (dx, dy) from the
    class's law (``max_speed`` = R):

    - circle: dx = 0, dy = +-s (up or down);
    - square: dx = +-s, dy = 0 (left or right);
    - triangle: dx = dy = +-s (along the main diagonal, either way);

    with the speed s uniform in {1, .., R} and the sign uniform, independently (no shape stands still);
    `velocity_distribution` returns this law. The centre (x, y) (of the bounding box) is uniform over the
    positions that keep the whole shape inside both frames. The shape is rendered anti-aliased (pixel
    coverage by a 4 x 4 grid of samples) on a black background; frame 1 is frame 0 shifted by exactly
    (dx, dy) pixels (one rendering pasted twice), so it holds the same mass. Velocities are in pixels per
    frame whatever the ``size``. Pixel (row y, column x) covers [y, y + 1) x [x, x + 1) in the continuous
    coordinates of ``position``; x grows to the right and y downwards.

    Items are deterministic in ``(seed, split, index)`` in any process and whatever batch they are drawn
    in; the data set is picklable (DataLoader workers) and builds a batch at once via ``__getitems__``.

    Args:
        length: number of items (``len(dataset)``).
        size: frame side H = W in pixels (>= 16).
        split: ``"train"`` or ``"test"`` (distinct seed streams; the laws are the same).
        seed: base seed.
        max_speed: R, the largest |dx|, |dy| in pixels per frame (>= 1; the largest shape moving R pixels
            must fit: R <= size - 2 * 6/32 * size).

    Example:
        >>> ds = Shapes(1000)
        >>> ds[0].shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(self, length: int, size: int = 32, split: str = "train", seed: int = 0, max_speed: int = 4) -> None:
        self.length = _check_index_int(length, "length")
        if self.length < 0:
            raise ValueError(f"length must be >= 0, got {self.length}")
        self.size = _check_index_int(size, "size")
        if self.size < _MIN_SIZE:
            raise ValueError(f"size must be >= {_MIN_SIZE}, got {self.size}")
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        self.split = split
        self.seed = _check_index_int(seed, "seed")
        self.max_speed = _check_positive_int(max_speed, "max_speed")
        room = self.size - 2.0 * _RADIUS_RANGE[1] * self.size
        if self.max_speed > room:
            raise ValueError(
                f"max_speed ({self.max_speed}) too large for size {self.size}: the largest shape (2 * 6/32 * size = "
                f"{self.size - room:g} pixels across) moving max_speed pixels must fit, so max_speed <= "
                f"{math.floor(room)}"
            )
        # Patch side holding any shape's rendering, whatever its sub-pixel offset.
        self._patch = math.ceil(2.0 * _RADIUS_RANGE[1] * self.size) + 2

    def __len__(self) -> int:
        return self.length

    def _normalise_index(self, index) -> int:
        i = operator.index(index)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"index {index} out of range for Shapes of length {self.length}")
        return i

    def _params(self, indices: list[int]) -> dict[str, np.ndarray]:
        """The random draws of items ``indices`` (already normalised), as (n,) arrays."""
        n, S, R = len(indices), self.size, self.max_speed
        u = np.empty((n, _DRAWS))
        for row, i in enumerate(indices):
            # Per-item generators keep every item independent of which batch it is drawn in.
            gen = torch.Generator().manual_seed(_item_seed(self.seed, self.split, i))
            u[row] = torch.rand(_DRAWS, generator=gen, dtype=torch.float64).numpy()
        u = u.T
        label = np.minimum(np.floor(u[0] * len(SHAPE_CLASSES)), len(SHAPE_CLASSES) - 1).astype(np.int64)
        speed = 1 + np.minimum(np.floor(u[1] * R), R - 1).astype(np.int64)
        step = np.where(u[2] < 0.5, -speed, speed)
        dx = np.where(label == 0, 0, step)  # circles move vertically only
        dy = np.where(label == 1, 0, step)  # squares horizontally only; triangles dx = dy
        radius = S * (_RADIUS_RANGE[0] + (_RADIUS_RANGE[1] - _RADIUS_RANGE[0]) * u[3])
        centre = []
        for d, uniform in ((dx, u[4]), (dy, u[5])):
            low = radius + np.maximum(0, -d)
            high = S - radius - np.maximum(0, d)
            centre.append(low + uniform * (high - low))
        return {"label": label, "dx": dx, "dy": dy, "radius": radius, "x": centre[0], "y": centre[1], "hue": u[6]}

    def _render(self, indices: list[int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(frames float32 (n, 2, 3, S, S), the draws) of items ``indices`` (already normalised)."""
        p = self._params(indices)
        n, S, P, k = len(indices), self.size, self._patch, _SUBSAMPLES
        # Render each shape in a P x P patch whose top-left pixel is (oy, ox) in frame 0; elementwise numpy only
        # (single-threaded, and an item's bits do not depend on its batch).
        ox, oy = np.floor(p["x"] - p["radius"]), np.floor(p["y"] - p["radius"])
        lx, ly, r = (p["x"] - ox)[:, None, None], (p["y"] - oy)[:, None], p["radius"][:, None]
        t = (np.arange(P * k) + 0.5) / k  # sample positions in patch coordinates
        d = t[None, :] - ly  # (n, P k) vertical offset of each sample row from the centre
        inside_rows = np.abs(d) <= r
        # Half-width of the shape along each sample row (negative: the row misses the shape).
        half = np.select(
            [p["label"][:, None] == 0, p["label"][:, None] == 1],
            [np.sqrt(np.maximum(r * r - d * d, 0.0)), np.broadcast_to(r, d.shape)],
            (d + r) / 2.0,  # triangle: apex at the top (y = centre - r), base at the bottom
        )
        half = np.where(inside_rows, half, -1.0)
        inside = np.abs(t[None, None, :] - lx) <= half[:, :, None]  # (n, P k, P k)
        coverage = inside.reshape(n, P, k, P, k).sum(axis=(2, 4), dtype=np.int32) / float(k * k)
        rgb = _hsv_to_rgb(p["hue"])
        patches = (coverage[:, None] * rgb[:, :, None, None]).astype(np.float32)  # (n, 3, P, P)

        # Paste the same patch twice, at (oy, ox) and (oy + dy, ox + dx), on a canvas padded by P so no patch is cut;
        # the shape itself lies inside both frames, so the crop removes only zeros.
        canvas = np.zeros((n, 2, 3, S + P, S + P), dtype=np.float32)
        ox, oy = ox.astype(np.int64), oy.astype(np.int64)
        for j in range(n):
            x0, y0, x1, y1 = ox[j], oy[j], ox[j] + p["dx"][j], oy[j] + p["dy"][j]
            canvas[j, 0, :, y0 : y0 + P, x0 : x0 + P] = patches[j]
            canvas[j, 1, :, y1 : y1 + P, x1 : x1 + P] = patches[j]
        return np.ascontiguousarray(canvas[..., :S, :S]), p

    def __getitem__(self, index) -> torch.Tensor:
        """One pair of frames.

        Args:
            index: item index in ``[-len, len)``.

        Returns:
            float32 tensor (2, 3, size, size) in [0, 1]: frame 0 and frame 1.
        """
        return torch.from_numpy(self._render([self._normalise_index(index)])[0][0])

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        # DataLoader calls this with a whole batch of indices: one batched rendering instead of n.
        return list(self.batch(indices).unbind(0))

    def batch(self, indices: Iterable[int]) -> torch.Tensor:
        """Several items stacked (each identical to ``self[i]``).

        Args:
            indices: item indices.

        Returns:
            float32 tensor (n, 2, 3, size, size).
        """
        indices = [self._normalise_index(i) for i in indices]
        if not indices:
            return torch.zeros(0, 2, 3, self.size, self.size)
        return torch.from_numpy(self._render(indices)[0])

    def item_info(self, index) -> dict[str, torch.Tensor]:
        """The ground truth behind one item (the same draw as ``self[index]``).

        Args:
            index: item index in ``[-len, len)``.

        Returns:
            dict with ``"frames"`` float32 (2, 3, size, size) as ``self[index]``; ``"label"`` int64 (), the class
            index into `SHAPE_CLASSES`; ``"velocity"`` int64 (2,), (dx, dy) in pixels from frame 0 to frame 1;
            ``"position"`` float32 (2,), the centre (x, y) of the shape's bounding box in frame 0 (in pixels, see
            the class docstring); ``"radius"`` float32 (), the circle's radius, the square's half-side or half the
            triangle's base (and height).
        """
        frames, p = self._render([self._normalise_index(index)])
        return {
            "frames": torch.from_numpy(frames[0]),
            "label": torch.tensor(int(p["label"][0]), dtype=torch.int64),
            "velocity": torch.tensor([int(p["dx"][0]), int(p["dy"][0])], dtype=torch.int64),
            "position": torch.tensor([p["x"][0], p["y"][0]], dtype=torch.float32),
            "radius": torch.tensor(p["radius"][0], dtype=torch.float32),
        }

    def velocity_distribution(self, label: int) -> torch.Tensor:
        """The exact law of the velocity of shapes of class ``label``.

        Args:
            label: class index into `SHAPE_CLASSES` (0 circle, 1 square, 2 triangle).

        Returns:
            float64 tensor (2R + 1, 2R + 1), R = ``max_speed``: entry ``[dy + R, dx + R]`` is the probability of
            velocity (dx, dy); it sums to 1.
        """
        if isinstance(label, bool) or not isinstance(label, numbers.Integral | torch.Tensor):
            raise ValueError(f"label must be a class index in 0..{len(SHAPE_CLASSES) - 1}, got {label!r}")
        label = int(label)
        if not 0 <= label < len(SHAPE_CLASSES):
            raise ValueError(f"label must be a class index in 0..{len(SHAPE_CLASSES) - 1}, got {label}")
        R = self.max_speed
        law = torch.zeros(2 * R + 1, 2 * R + 1, dtype=torch.float64)
        steps = torch.cat((torch.arange(-R, 0), torch.arange(1, R + 1)))
        dx = torch.zeros_like(steps) if label == 0 else steps
        dy = torch.zeros_like(steps) if label == 1 else steps
        law[dy + R, dx + R] = 1.0 / (2 * R)
        return law

    def __repr__(self) -> str:
        return (
            f"Shapes(length={self.length}, size={self.size}, split={self.split!r}, seed={self.seed}, "
            f"max_speed={self.max_speed})"
        )


def estimate_velocities(frame0: torch.Tensor, frame1: torch.Tensor, max_speed: int) -> torch.Tensor:
    """The integer translation taking each ``frame0`` closest to its ``frame1``.

    For every shift s = (dx, dy) in [-R, R]^2 (R = ``max_speed``), ``frame0`` is shifted by s (content moves
    dx pixels right and dy pixels down; zeros shift in) and compared with ``frame1`` by the squared error summed
    over channels and pixels; the shift of least error is returned (ties go to the shortest shift). Works on a
    predicted ``frame1`` that is blurry or noisy. Vectorised over the n pairs (one pass per shift).

    Args:
        frame0: (n, C, H, W) float frames.
        frame1: (n, C, H, W) float frames, e.g. predicted next frames.
        max_speed: R >= 1, the largest |dx|, |dy| searched.

    Returns:
        int64 tensor (n, 2), the (dx, dy) of each pair.
    """
    R = _check_positive_int(max_speed, "max_speed")
    if not (isinstance(frame0, torch.Tensor) and isinstance(frame1, torch.Tensor)):
        raise ValueError("frame0 and frame1 must be tensors")
    if frame0.dim() != 4 or frame0.shape != frame1.shape:
        raise ValueError(
            f"frame0 and frame1 must both be (n, C, H, W) of one shape, got {tuple(frame0.shape)} and "
            f"{tuple(frame1.shape)}"
        )
    n, _, H, W = frame0.shape
    dtype = torch.promote_types(torch.promote_types(frame0.dtype, frame1.dtype), torch.float32)
    a, b = frame0.to(dtype), frame1.to(dtype)
    padded = torch.nn.functional.pad(a, (R, R, R, R))
    # Shortest shifts first, so that argmin's first minimum breaks ties toward small motion.
    shifts = sorted(
        ((dx, dy) for dy in range(-R, R + 1) for dx in range(-R, R + 1)),
        key=lambda s: (abs(s[0]) + abs(s[1]), s[1], s[0]),
    )
    errors = torch.empty(n, len(shifts), dtype=dtype, device=frame0.device)
    for j, (dx, dy) in enumerate(shifts):
        shifted = padded[:, :, R - dy : R - dy + H, R - dx : R - dx + W]
        errors[:, j] = (shifted - b).square().flatten(1).sum(dim=1)
    best = errors.argmin(dim=1).cpu()
    return torch.tensor(shifts, dtype=torch.int64)[best].to(frame0.device)


def velocity_histogram(velocities: torch.Tensor, max_speed: int) -> torch.Tensor:
    """The empirical distribution of integer velocities.

    Args:
        velocities: int (n, 2) tensor of (dx, dy), n >= 1, each in [-R, R] (R = ``max_speed``).
        max_speed: R >= 1.

    Returns:
        float64 tensor (2R + 1, 2R + 1): entry ``[dy + R, dx + R]`` is the fraction of velocities equal to (dx, dy);
        it sums to 1.
    """
    R = _check_positive_int(max_speed, "max_speed")
    if not isinstance(velocities, torch.Tensor) or velocities.dim() != 2 or velocities.shape[1] != 2:
        raise ValueError(f"velocities must be an (n, 2) tensor, got {getattr(velocities, 'shape', velocities)!r}")
    if velocities.dtype.is_floating_point or velocities.dtype.is_complex or velocities.dtype == torch.bool:
        raise ValueError(f"velocities must be an integer tensor, got {velocities.dtype}")
    if velocities.shape[0] == 0:
        raise ValueError("velocities must hold at least one velocity")
    v = velocities.to(torch.int64).cpu()
    if v.abs().max() > R:
        raise ValueError(f"velocities must lie in [-max_speed, max_speed] = [{-R}, {R}], got {v.abs().max().item()}")
    side = 2 * R + 1
    counts = torch.bincount((v[:, 1] + R) * side + (v[:, 0] + R), minlength=side * side)
    return (counts.to(torch.float64) / v.shape[0]).reshape(side, side)


def velocity_kl(true: torch.Tensor, predicted: torch.Tensor, smoothing: float = 1e-3) -> torch.Tensor:
    """KL(true || predicted) in nats, with ``predicted`` smoothed toward the uniform distribution.

    The divergence is sum_v p(v) log(p(v) / q(v)) with p = ``true`` and q = (1 - smoothing) * ``predicted`` +
    smoothing / bins (bins = number of entries): the mix keeps it finite when an empirical ``predicted``
    histogram leaves bins that ``true`` uses empty. Bins where p = 0 contribute 0. The smoothing biases the value:
    for identical inputs it is at most -log(1 - smoothing) (about ``smoothing``), and exactly 0 for
    ``smoothing=0``.

    Args:
        true: the reference distribution, e.g. `Shapes.velocity_distribution`: a non-negative tensor summing to 1,
            typically (2R + 1, 2R + 1).
        predicted: a distribution of the same shape, e.g. a `velocity_histogram` of estimated velocities.
        smoothing: weight in [0, 1] of the uniform distribution in the mix.

    Returns:
        float64 scalar tensor (), >= 0 (inf possible only with ``smoothing=0``).
    """
    if not isinstance(smoothing, numbers.Real) or not 0.0 <= float(smoothing) <= 1.0:
        raise ValueError(f"smoothing must be a float in [0, 1], got {smoothing!r}")
    dists = []
    for name, d in (("true", true), ("predicted", predicted)):
        if not isinstance(d, torch.Tensor) or d.numel() == 0:
            raise ValueError(f"{name} must be a non-empty tensor, got {d!r}")
        d = d.detach().to(torch.float64).cpu()
        if not torch.isfinite(d).all() or (d < 0).any() or abs(d.sum().item() - 1.0) > 1e-6:
            raise ValueError(f"{name} must be a distribution: finite, non-negative and summing to 1")
        dists.append(d)
    p, q = dists
    if p.shape != q.shape:
        raise ValueError(f"true and predicted must have one shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    s = float(smoothing)
    q = (1.0 - s) * q + s / q.numel()
    used = p > 0
    return (p[used] * (p[used].log() - q[used].log())).sum().clamp(min=0.0)
