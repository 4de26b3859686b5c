"""Binarised handwritten digits for DRAW and the VAE, generated on the fly (no downloads).

Each image is one of scikit-learn's bundled digit glyphs (see `digit_glyphs`) under a random small
affine jitter (rotation, shear, scale, shift) and a random stroke thickness, placed as MNIST places
its digits (a ~20-pixel digit in a 28-pixel frame), then binarised. The jitter makes the set far
richer than the 1437 training glyphs it starts from. Items are pure functions of
``(seed, split, index)``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from pyvidgen.data.moving_digits import _SPLITS, _cached_glyphs, _check_positive_int, _item_seed

__all__ = ["BinarizedDigits", "BINARIZE_MODES", "binarize_images"]

BINARIZE_MODES = ("stochastic", "threshold", None)

# MNIST digits fill a 20 x 20 box centred in the 28 x 28 frame; the glyphs fill their whole square.
_BASE_SCALE = 20.0 / 28.0
_MAX_ROTATION = math.radians(15.0)
_SCALE_RANGE = (0.85, 1.12)
_MAX_SHEAR = 0.2
_MAX_SHIFT_FRACTION = 0.08  # of the frame side, in each direction
# Stroke thickness: the grey glyph is turned into crisp strokes by a linear ramp of half-width
# _RAMP_HALF_WIDTH around a level drawn from _LEVEL_RANGE (a low level keeps more of the blurred
# upscaled stroke, i.e. a thicker pen).
_LEVEL_RANGE = (0.3, 0.6)
_RAMP_HALF_WIDTH = 0.12
# Parameters drawn per item, in this order, from the item's own generator.
_PARAMS = 7


def _check_binarize(binarize: str | None) -> str | None:
    if binarize not in BINARIZE_MODES:
        raise ValueError(f"binarize must be one of {BINARIZE_MODES}, got {binarize!r}")
    return binarize


def binarize_images(grey: np.ndarray, mode: str | None, uniforms: np.ndarray | None = None) -> np.ndarray:
    """Binarise grey levels in [0, 1] (numpy arrays: the data sets work in numpy, single-threaded).

    Args:
        grey: float32 array of any shape, values in [0, 1].
        mode: ``"stochastic"`` (pixel = 1 with probability grey, as the usual stochastically binarised
            MNIST), ``"threshold"`` (pixel = grey > 0.5) or None (grey returned unchanged).
        uniforms: for ``"stochastic"``, uniform [0, 1) draws of ``grey``'s shape (pixel = uniform < grey);
            the caller draws them so that the result is reproducible.

    Returns:
        float32 array of ``grey``'s shape, values in {0, 1} (``grey`` itself for None).
    """
    mode = _check_binarize(mode)
    if mode is None:
        return grey
    if mode == "threshold":
        return (grey > 0.5).astype(np.float32)
    if uniforms is None or uniforms.shape != grey.shape:
        raise ValueError(
            f"stochastic binarisation needs uniforms of grey's shape {tuple(grey.shape)}, "
            f"got {None if uniforms is None else tuple(uniforms.shape)}"
        )
    return (uniforms < grey).astype(np.float32)


def _bilinear(images: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``images`` (n, H, W) at normalised positions ``x``, ``y`` (n, S, S) in [-1, 1].

    Pixel centres sit at (2i + 1) / H - 1 (``grid_sample``'s ``align_corners=False``); taps outside
    the image count as 0 (its ``padding_mode="zeros"``).
    """
    n, H, W = images.shape
    col = ((x + 1) * W - 1) / 2
    row = ((y + 1) * H - 1) / 2
    c0, r0 = np.floor(col), np.floor(row)
    fc, fr = col - c0, row - r0
    c0, r0 = c0.astype(np.int64), r0.astype(np.int64)
    item = np.arange(n)[:, None, None]
    out = np.zeros(x.shape, dtype=np.float64)
    for dr, wr in ((0, 1 - fr), (1, fr)):
        for dc, wc in ((0, 1 - fc), (1, fc)):
            r, c = r0 + dr, c0 + dc
            inside = (r >= 0) & (r < H) & (c >= 0) & (c < W)
            values = images[item, np.clip(r, 0, H - 1), np.clip(c, 0, W - 1)]
            out += np.where(inside, values * (wr * wc), 0.0)
    return out


class BinarizedDigits(Dataset):
    """Binarised 28 x 28 digits (MNIST-like) made from scikit-learn's glyphs with a random affine jitter.

    Per item: a glyph drawn uniformly from the split's bank (`digit_glyphs`), rotated by up to
    +-15 degrees, sheared by up to 0.2, scaled by 0.85-1.12 around MNIST's 20-pixel digit size, shifted
    by up to 8% of the frame, with a random stroke thickness; then binarised (``binarize``).

    Items are deterministic in ``(seed, split, index)`` in any process: each item draws from its own
    ``torch.Generator``, also for its stochastic binarisation (so the same index always gives the
    same binary image, as with a fixed stochastically binarised MNIST). ``"train"`` and ``"test"``
    use disjoint glyph banks, so test digits are handwriting the model never saw.

    Args:
        length: number of images (``len(dataset)``).
        split: ``"train"`` or ``"test"``.
        seed: base seed.
        size: image side H = W in pixels (28 as MNIST).
        binarize: ``"stochastic"`` (Bernoulli of the grey level), ``"threshold"`` (grey > 0.5) or None
            (grey levels in [0, 1]).

    Example:
        >>> ds = BinarizedDigits(1000)
        >>> ds[0].shape
        torch.Size([1, 28, 28])
    """

    def __init__(
        self,
        length: int,
        *,
        split: str = "train",
        seed: int = 0,
        size: int = 28,
        binarize: str | None = "stochastic",
    ) -> None:
        self.length = operator.index(length)
        if self.length < 0:
            raise ValueError(f"length must be >= 0, got {self.length}")
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        self.split = split
        self.seed = operator.index(seed)
        self.size = _check_positive_int(size, "size")
        self.binarize = _check_binarize(binarize)

    def __len__(self) -> int:
        return self.length

    def _normalise_index(self, index) -> int:
        i = operator.index(index)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"index {index} out of range for BinarizedDigits of length {self.length}")
        return i

    def _render(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(binary or grey images (n, 1, S, S), grey images (n, 1, S, S), glyph indices (n,)) of ``indices``."""
        glyphs = _cached_glyphs(self.size, self.split)[0]
        n, S = len(indices), self.size
        which = torch.empty(n, dtype=torch.int64)
        params = torch.empty(n, _PARAMS, dtype=torch.float64)
        uniforms = torch.empty(n, S * S)
        for row, i in enumerate(indices):
            # Per-item generators keep every item independent of which batch it is drawn in.
            gen = torch.Generator().manual_seed(_item_seed(self.seed, self.split, i))
            which[row] = torch.randint(glyphs.shape[0], (1,), generator=gen)
            params[row] = torch.rand(_PARAMS, generator=gen, dtype=torch.float64)
            if self.binarize == "stochastic":
                uniforms[row] = torch.rand(S * S, generator=gen)
        # The batched geometry runs in numpy, which is single-threaded: torch's intra-op threads stall for
        # milliseconds per op when other processes compete for the cores (as in MovingDigits).
        u = params.numpy().T  # (7, n) uniforms in [0, 1)
        angle = (2 * u[0] - 1) * _MAX_ROTATION
        scale = _BASE_SCALE * (_SCALE_RANGE[0] + (_SCALE_RANGE[1] - _SCALE_RANGE[0]) * u[1])
        shear = (2 * u[2] - 1) * _MAX_SHEAR
        # Shifts in normalised coordinates (the frame spans [-1, 1]).
        shift_x = (2 * u[3] - 1) * (2 * _MAX_SHIFT_FRACTION)
        shift_y = (2 * u[4] - 1) * (2 * _MAX_SHIFT_FRACTION)
        level = _LEVEL_RANGE[0] + (_LEVEL_RANGE[1] - _LEVEL_RANGE[0]) * u[5]
        # u[6] is reserved so new jitter can be added without changing the existing draws' order.

        # Inverse map, output pixel -> glyph coordinates: undo the shift, rotation, shear and scale.
        # Elementwise only (no matmul), so each item's result is bitwise the same in any batch.
        coords = (np.arange(S, dtype=np.float64) * 2 + 1) / S - 1  # pixel centres in [-1, 1]
        ys, xs = coords[None, :, None], coords[None, None, :]
        dx = xs - shift_x[:, None, None]
        dy = ys - shift_y[:, None, None]
        cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
        rx, ry = cos * dx + sin * dy, -sin * dx + cos * dy
        rx = rx - shear[:, None, None] * ry
        inv_scale = 1.0 / scale[:, None, None]
        grey = _bilinear(glyphs.numpy()[which.numpy()], rx * inv_scale, ry * inv_scale)  # (n, S, S)
        grey = np.clip((grey - level[:, None, None]) / (2 * _RAMP_HALF_WIDTH) + 0.5, 0.0, 1.0)
        grey = grey.astype(np.float32)[:, None]  # (n, 1, S, S)
        stochastic = self.binarize == "stochastic"
        images = binarize_images(grey, self.binarize, uniforms.numpy().reshape(grey.shape) if stochastic else None)
        if images is grey:
            images = grey.copy()  # the two returned tensors must not share memory
        return torch.from_numpy(images), torch.from_numpy(grey), which

    def __getitem__(self, index) -> torch.Tensor:
        """One image.

        Args:
            index: item index in ``[-len, len)``.

        Returns:
            float32 tensor (1, size, size), values in {0, 1} (in [0, 1] for ``binarize=None``).
        """
        return self._render([self._normalise_index(index)])[0][0]

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        # DataLoader calls this with a whole batch of indices: one batched resampling instead of n.
        return list(self.batch(indices).unbind(0))

    def batch(self, indices: Iterable[int]) -> torch.Tensor:
        """Several images stacked (each identical to ``self[i]``).

        Args:
            indices: item indices.

        Returns:
            float32 tensor (n, 1, size, size).
        """
        indices = [self._normalise_index(i) for i in indices]
        if not indices:
            return torch.zeros(0, 1, self.size, self.size)
        return self._render(indices)[0]

    def item_info(self, index) -> dict[str, torch.Tensor]:
        """The ground truth behind one image (the same draw as ``self[index]``).

        Args:
            index: item index in ``[-len, len)``.

        Returns:
            dict with ``"image"`` (1, size, size) as ``self[index]``; ``"grey"`` (1, size, size), the grey
            levels before binarisation; ``"glyph_index"`` int64 scalar, the glyph's row in
            ``digit_glyphs(size, split)``; ``"label"`` int64 scalar, its class 0..9.
        """
        images, grey, which = self._render([self._normalise_index(index)])
        label = _cached_glyphs(self.size, self.split)[1][which[0]]
        return {"image": images[0], "grey": grey[0], "glyph_index": which[0], "label": label}

    def __repr__(self) -> str:
        return (
            f"BinarizedDigits(length={self.length}, split={self.split!r}, seed={self.seed}, size={self.size}, "
            f"binarize={self.binarize!r})"
        )
