"""MNIST IDX image files a user already has, as a data set of (optionally binarised) images.

Nothing here downloads: the user passes the path of ``train-images-idx3-ubyte`` (or ``t10k-...``,
plain or ``.gz``).
"""

from __future__ import annotations

import operator
import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pyvidgen.data.binarized_digits import _check_binarize, binarize_images
from pyvidgen.data.moving_digits import _MASK64, _splitmix64
from pyvidgen.data.moving_mnist_file import load_mnist_idx

__all__ = ["MNISTImages"]

# Keeps MNISTImages' binarisation streams apart from BinarizedDigits' streams of the same seed.
_STREAM_TAG = 0x4D4E495354  # "MNIST"


def _pixel_seed(seed: int, index: int) -> int:
    h = _splitmix64((seed & _MASK64) ^ _STREAM_TAG)
    h = _splitmix64(h ^ (index & _MASK64))
    return h & ((1 << 63) - 1)


class MNISTImages(Dataset):
    """Images of an MNIST IDX file (``load_mnist_idx``) as float32 (1, rows, cols) items.

    The whole file is read once (47 MB for MNIST's 60000 training images) and kept as uint8.

    Args:
        images_path: an IDX image file, plain or gzip-compressed.
        binarize: ``"stochastic"`` (pixel = 1 with probability byte / 255, drawn per item from
            ``(seed, index)``, so an index always gives the same image), ``"threshold"``
            (byte / 255 > 0.5) or None (grey levels byte / 255 in [0, 1]).
        seed: seed of the stochastic binarisation.
        indices: optional subset of the file's images; item ``i`` is image ``indices[i]``.

    Raises:
        FileNotFoundError: no file at ``images_path``.
        ValueError: not an IDX image file (see `load_mnist_idx`), a bad ``binarize`` or ``indices``.
        IndexError: an entry of ``indices`` outside the file.
    """

    def __init__(
        self,
        images_path: str | os.PathLike,
        *,
        binarize: str | None = "stochastic",
        seed: int = 0,
        indices: Sequence[int] | None = None,
    ) -> None:
        self.binarize = _check_binarize(binarize)
        self.path = os.fspath(images_path)
        self.seed = operator.index(seed)
        self._images = load_mnist_idx(self.path)  # (N, rows, cols) uint8
        count = self._images.shape[0]
        if indices is None:
            self.indices = torch.arange(count)
        else:
            idx = torch.as_tensor(list(indices) if not isinstance(indices, torch.Tensor) else indices)
            if idx.ndim != 1 or (idx.numel() and idx.dtype.is_floating_point):
                raise ValueError(f"indices must be a 1-D sequence of ints, got {indices!r}")
            idx = idx.to(torch.int64)
            bad = idx[(idx < 0) | (idx >= count)]
            if bad.numel():
                raise IndexError(f"indices {bad[:5].tolist()} out of range [0, {count}) for {self.path!r}")
            self.indices = idx

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(1, rows, cols) of every item."""
        return (1, *self._images.shape[1:])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index) -> torch.Tensor:
        """One image.

        Args:
            index: item index in ``[-len, len)``.

        Returns:
            float32 tensor (1, rows, cols): values in {0, 1}, or in [0, 1] with ``binarize=None``.
        """
        return self.batch([index])[0]

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        return list(self.batch(indices).unbind(0))

    def batch(self, indices: Iterable[int]) -> torch.Tensor:
        """Several images stacked (each identical to ``self[i]``).

        Args:
            indices: item indices.

        Returns:
            float32 tensor (n, 1, rows, cols).
        """
        rows = []
        for index in indices:
            i = operator.index(index)
            if i < 0:
                i += len(self)
            if not 0 <= i < len(self):
                raise IndexError(f"index {index} out of range for MNISTImages of length {len(self)}")
            rows.append(i)
        chosen = self.indices[rows].tolist()
        # numpy rather than torch for the batch-sized work: single-threaded, so no intra-op thread stalls
        # on a busy machine (see MovingDigits).
        grey = self._images.numpy()[chosen].astype(np.float32)[:, None] / np.float32(255.0)  # (n, 1, rows, cols)
        if self.binarize == "stochastic":
            # Each image's pixels come from its own generator: the same draw whatever batch it is in.
            uniforms = np.empty_like(grey)
            for row, j in enumerate(chosen):
                generator = torch.Generator().manual_seed(_pixel_seed(self.seed, j))
                uniforms[row] = torch.rand(grey.shape[1:], generator=generator).numpy()
            return torch.from_numpy(binarize_images(grey, "stochastic", uniforms))
        return torch.from_numpy(binarize_images(grey, self.binarize))

    def __repr__(self) -> str:
        return f"MNISTImages({self.path!r}, items={len(self)}, binarize={self.binarize!r}, seed={self.seed})"
