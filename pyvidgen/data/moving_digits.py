"""Moving-MNIST-like bouncing digits, generated on the fly (no downloads).

The glyphs are scikit-learn's bundled 8x8 handwritten digits (``sklearn.datasets.load_digits``, 1797
images shipped inside the package), upscaled in torch. Each video is a pure function of
``(seed, split, index)``: every call of ``MovingDigits(...)[i]`` gives the same tensor, in any process.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["MovingDigits", "digit_glyphs"]

_SPLITS = ("train", "test")
_TRAIN_FRACTION = 0.8
_MASK64 = (1 << 64) - 1


@functools.lru_cache(maxsize=1)
def _source_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1797 raw 8x8 glyphs (float32, 0..16) and their labels (int64), read once per process."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - scikit-learn is a declared dependency
        raise ImportError(
            "MovingDigits needs scikit-learn for its bundled 8x8 digit glyphs: pip install scikit-learn"
        ) from exc
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return images, labels


def _split_range(split: str, n: int) -> slice:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    cut = int(n * _TRAIN_FRACTION)
    return slice(0, cut) if split == "train" else slice(cut, n)


@functools.lru_cache(maxsize=8)
def _cached_glyphs(digit_size: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = _source_digits()
    part = _split_range(split, images.shape[0])
    images, labels = images[part], labels[part]
    up = F.interpolate(images[:, None], size=(digit_size, digit_size), mode="bicubic", align_corners=False)
    up = up[:, 0].clamp_(min=0.0)
    peak = up.amax(dim=(1, 2), keepdim=True).clamp_(min=1e-12)
    up = (up / peak).clamp_(0.0, 1.0).contiguous()
    return up, labels.contiguous()


def digit_glyphs(digit_size: int = 28, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """The glyph bank used by `MovingDigits`.

    scikit-learn's 1797 bundled 8x8 digits, upscaled bicubically to ``digit_size`` and clamped,
    each glyph scaled so its brightest pixel is 1. The first 80% of the images (1437) form the
    ``"train"`` bank and the last 20% (360) the ``"test"`` bank, so the two share no glyph.

    Args:
        digit_size: side of the square glyphs in pixels (>= 1).
        split: ``"train"`` or ``"test"``.

    Returns:
        ``(glyphs, labels)``: glyphs float32 (N, digit_size, digit_size) in [0, 1], labels int64 (N,)
        with the digit class 0..9 of each glyph. The tensors are fresh copies (the bank itself is
        cached once per process).

    Raises:
        ValueError: bad ``digit_size`` or ``split``.
    """
    digit_size = _check_positive_int(digit_size, "digit_size")
    glyphs, labels = _cached_glyphs(digit_size, split)
    return glyphs.clone(), labels.clone()


def _hue_to_rgb(hue: float) -> tuple[float, float, float]:
    """A fully saturated, full-value colour of hue in [0, 1) (HSV with S = V = 1)."""
    sector, fraction = divmod(hue * 6.0, 1.0)
    rising, falling = fraction, 1.0 - fraction
    return (
        (1.0, rising, 0.0),
        (falling, 1.0, 0.0),
        (0.0, 1.0, rising),
        (0.0, falling, 1.0),
        (rising, 0.0, 1.0),
        (1.0, 0.0, falling),
    )[int(sector) % 6]


def _check_positive_int(value, name: str) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive int, got {value!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _item_seed(seed: int, split: str, index: int) -> int:
    """A well-mixed 63-bit seed for one item; distinct streams per split."""
    h = _splitmix64(seed & _MASK64)
    h = _splitmix64(h ^ (_SPLITS.index(split) + 1))
    h = _splitmix64(h ^ (index & _MASK64))
    return h & ((1 << 63) - 1)


class MovingDigits(Dataset):
    """Bouncing handwritten digits on a black square canvas (Moving-MNIST-like), made on the fly.

    Each digit starts at a uniformly random position (fully inside the frame) with a uniformly random
    direction and a speed drawn uniformly from ``speed``; it moves in a straight line and bounces off
    the frame borders (the velocity component is reflected, the digit stays inside). Positions are
    rounded to whole pixels and the digits are composited with a pixel-wise max, as in Moving MNIST.

    Items are deterministic in ``(seed, split, index)``: each ``__getitem__`` builds its own
    ``torch.Generator``, so the data set is picklable and works with ``DataLoader(num_workers > 0)``
    and the default collate function.

    Args:
        length: number of videos (``len(dataset)``).
        seq_len: frames per video T.
        size: canvas side H = W in pixels.
        digits: digits per video (>= 1).
        digit_size: glyph side in pixels (<= ``size``).
        speed: ``(low, high)`` range of speeds in pixels per frame, or one float for a fixed speed.
        seed: base seed.
        split: ``"train"`` or ``"test"``: picks both the seed stream and a disjoint glyph bank
            (see `digit_glyphs`).
        colors: RGB videos (T, 3, H, W): each digit gets its own saturated colour (a random hue), and
            overlapping digits mix channel by channel (max). The grey video of the same index is the
            brightest channel of the RGB one's digits (the draws of positions and glyphs are shared).

    Example:
        >>> ds = MovingDigits(length=100, seq_len=20)
        >>> ds[0].shape
        torch.Size([20, 1, 64, 64])
    """

    def __init__(
        self,
        length: int = 10000,
        seq_len: int = 20,
        size: int = 64,
        digits: int = 2,
        digit_size: int = 28,
        speed: float | tuple[float, float] = (2.0, 4.0),
        seed: int = 0,
        split: str = "train",
        colors: bool = False,
    ) -> None:
        self.length = operator.index(length)
        self.colors = bool(colors)
        if self.length < 0:
            raise ValueError(f"length must be >= 0, got {self.length}")
        self.seq_len = _check_positive_int(seq_len, "seq_len")
        self.size = _check_positive_int(size, "size")
        self.digits = _check_positive_int(digits, "digits")
        self.digit_size = _check_positive_int(digit_size, "digit_size")
        if self.digit_size > self.size:
            raise ValueError(f"digit_size ({self.digit_size}) must be <= size ({self.size})")
        if isinstance(speed, numbers.Real):
            low = high = float(speed)
        else:
            try:
                low, high = (float(s) for s in speed)
            except (TypeError, ValueError):
                raise ValueError(f"speed must be a float or a (low, high) pair, got {speed!r}") from None
        if not (0.0 <= low <= high) or not math.isfinite(high):
            raise ValueError(f"speed must satisfy 0 <= low <= high < inf, got ({low}, {high})")
        self.speed = (low, high)
        self.seed = operator.index(seed)
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        self.split = split
        self._glyphs: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None

    # -- pickling: the glyph bank is rebuilt (and cached) in each worker process, never shipped --
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_glyphs"] = None
        state["_labels"] = None
        return state

    def _bank(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._glyphs is None:
            self._glyphs, self._labels = _cached_glyphs(self.digit_size, self.split)
        return self._glyphs, self._labels

    def __len__(self) -> int:
        return self.length

    def _normalise_index(self, index) -> int:
        i = operator.index(index)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"index {index} out of range for MovingDigits of length {self.length}")
        return i

    def _generate(self, index) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i = self._normalise_index(index)
        glyphs = self._bank()[0]
        gen = torch.Generator().manual_seed(_item_seed(self.seed, self.split, i))
        T, D, S, d = self.seq_len, self.digits, self.size, self.digit_size
        room = S - d  # top-left corner ranges over [0, room]

        # Draw everything for the item in a fixed order (glyphs, start, direction, speed).
        which = torch.randint(glyphs.shape[0], (D,), generator=gen)
        start = torch.rand(D, 2, generator=gen, dtype=torch.float64) * room
        angle = torch.rand(D, generator=gen, dtype=torch.float64) * (2.0 * math.pi)
        low, high = self.speed
        speed = low + (high - low) * torch.rand(D, generator=gen, dtype=torch.float64)
        velocity = torch.stack((torch.sin(angle), torch.cos(angle)), dim=1) * speed[:, None]  # (D, 2) rows, cols

        # Straight-line motion unfolded in time, then folded back into [0, room]: a triangle wave is
        # exactly the trajectory of a point bouncing elastically between 0 and room.
        t = torch.arange(T, dtype=torch.float64)[:, None, None]
        unfolded = start[None] + t * velocity[None]  # (T, D, 2)
        if room > 0:
            m = torch.remainder(unfolded, 2.0 * room)
            folded = torch.where(m > room, 2.0 * room - m, m)
        else:
            folded = torch.zeros_like(unfolded)
        pos = folded.round().to(torch.int64).clamp_(0, room)  # (T, D, 2) integer top-left (row, col)
        # Drawn last, so grey and RGB videos of one index share every other draw.
        hues = torch.rand(D, generator=gen, dtype=torch.float64) if self.colors else None

        # Paste: one fancy-indexed gather/max/scatter per digit, each covering all T frames at once (a digit
        # never overlaps itself within a frame, so this is exact max compositing). Done in numpy, which is
        # single-threaded: torch's intra-op parallel fill/scatter on tensors this size stalls for milliseconds
        # when its threads compete with other processes (e.g. DataLoader workers) for the cores.
        pos_np = pos.numpy()
        glyphs_np = glyphs.numpy()
        channels = 3 if self.colors else 1
        canvas = np.zeros((channels, T, S, S), dtype=np.float32)
        frame = np.arange(T)[:, None, None]
        ar = np.arange(d)
        for k, g in enumerate(which.tolist()):
            rows = (pos_np[:, k, 0, None] + ar)[:, :, None]  # (T, d, 1)
            cols = (pos_np[:, k, 1, None] + ar)[:, None, :]  # (T, 1, d)
            tints = _hue_to_rgb(float(hues[k])) if hues is not None else (1.0,)
            for ch, tint in enumerate(tints):
                plane = canvas[ch]
                if k == 0:
                    plane[frame, rows, cols] = glyphs_np[g] * tint
                else:
                    plane[frame, rows, cols] = np.maximum(plane[frame, rows, cols], glyphs_np[g] * tint)
        video = torch.from_numpy(canvas).transpose(0, 1)  # (T, C, S, S)
        return video.contiguous(), pos, which

    def __getitem__(self, index) -> torch.Tensor:
        """One video.

        Args:
            index: item index in ``[-len, len)``.

        Returns:
            float32 tensor (T, C, H, W) with T = ``seq_len``, C = 3 with ``colors`` else 1, H = W = ``size``,
            values in [0, 1].
        """
        return self._generate(index)[0]

    def item_info(self, index) -> dict[str, torch.Tensor]:
        """The ground truth behind one video (the same draw as ``self[index]``).

        Args:
            index: item index in ``[-len, len)``.

        Returns:
            dict with ``"video"`` float32 (T, C, H, W) as ``self[index]``; ``"positions"`` int64 (T, digits, 2), the
            top-left pixel (row, col) of each digit in each frame, always in ``[0, size - digit_size]``;
            ``"labels"`` int64 (digits,), the class 0..9 of each digit; ``"glyph_indices"`` int64 (digits,),
            each digit's row in ``digit_glyphs(digit_size, split)``.
        """
        video, pos, which = self._generate(index)
        return {"video": video, "positions": pos, "labels": self._bank()[1][which], "glyph_indices": which}

    def batch(self, indices: Iterable[int]) -> torch.Tensor:
        """Several videos stacked.

        Args:
            indices: item indices.

        Returns:
            float32 tensor (B, T, C, H, W).
        """
        items = [self[i] for i in indices]
        if not items:
            return torch.zeros(0, self.seq_len, 3 if self.colors else 1, self.size, self.size)
        return torch.stack(items)

    def __repr__(self) -> str:
        return (
            f"MovingDigits(length={self.length}, seq_len={self.seq_len}, size={self.size}, digits={self.digits}, "
            f"digit_size={self.digit_size}, speed={self.speed}, seed={self.seed}, split={self.split!r}, "
            f"colors={self.colors})"
        )
