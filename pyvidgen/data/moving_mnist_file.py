"""Loaders for standard files a user already has: ``mnist_test_seq.npy`` and MNIST IDX image files.

Nothing here downloads: the user passes a path.
"""

from __future__ import annotations

import gzip
import operator
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["MovingMNISTFile", "load_mnist_idx"]

_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension


def _check_file(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    return path


class MovingMNISTFile(Dataset):
    """The standard Moving MNIST file (``mnist_test_seq.npy``) as a map-style data set.

    The file holds a uint8 array of shape (T, N, H, W) — time first, then sequences — (20, 10000, 64, 64)
    for the standard file. It is memory-mapped, so only the items read are loaded. The data set is
    picklable (the map is reopened lazily in each DataLoader worker).

    Args:
        path: path of the ``.npy`` file.
        seq_len: keep only the first ``seq_len`` frames of each sequence (default: all T).
        indices: optional subset of sequence indices (into N); item ``i`` is sequence ``indices[i]``.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        ValueError: the file is not a uint8 array of shape (T, N, H, W), or a bad ``seq_len``.
        IndexError: an entry of ``indices`` is outside ``[0, N)``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        seq_len: int | None = None,
        indices: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    ) -> None:
        self.path = _check_file(path)
        data = self._open()
        if data.ndim != 4 or data.dtype != np.uint8:
            raise ValueError(
                f"{self.path!r}: expected a uint8 array of shape (T, N, H, W) (time, sequences, height, width), "
                f"got dtype {data.dtype} and shape {tuple(data.shape)}"
            )
        total_t, n, self.height, self.width = (int(s) for s in data.shape)
        if seq_len is None:
            seq_len = total_t
        seq_len = operator.index(seq_len)
        if not 1 <= seq_len <= total_t:
            raise ValueError(f"seq_len must be in [1, {total_t}] for {self.path!r}, got {seq_len}")
        self.seq_len = seq_len
        self.num_sequences = n
        if indices is None:
            self.indices = np.arange(n, dtype=np.int64)
        else:
            idx = np.asarray(indices.tolist() if isinstance(indices, torch.Tensor) else indices)
            if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
                raise ValueError(f"indices must be a 1-D sequence of ints, got {indices!r}")
            idx = idx.astype(np.int64)
            bad = idx[(idx < 0) | (idx >= n)]
            if bad.size:
                raise IndexError(f"indices {bad[:5].tolist()} out of range [0, {n}) for {self.path!r}")
            self.indices = idx
        self._data: np.ndarray | None = data

    def _open(self) -> np.ndarray:
        try:
            return np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ValueError(f"{self.path!r} is not a readable .npy array file: {exc}") from exc

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_data"] = None  # a memmap would pickle as a full in-memory copy
        return state

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index) -> torch.Tensor:
        """One sequence.

        Args:
            index: item index in ``[-len, len)``.

        Returns:
            float32 tensor (seq_len, 1, H, W) with values in [0, 1] (the file's bytes / 255).
        """
        i = operator.index(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {index} out of range for MovingMNISTFile of length {len(self)}")
        if self._data is None:
            self._data = self._open()
        # (T, H, W) uint8 read out of the map; converted in numpy (single-threaded: no intra-op thread stalls).
        frames = self._data[: self.seq_len, self.indices[i]].astype(np.float32)
        frames /= np.float32(255.0)
        return torch.from_numpy(frames).unsqueeze_(1)

    def __repr__(self) -> str:
        return f"MovingMNISTFile({self.path!r}, seq_len={self.seq_len}, items={len(self)})"


def load_mnist_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read an MNIST IDX image file (e.g. ``train-images-idx3-ubyte``, optionally gzip-compressed).

    The format: a big-endian int32 magic number 2051 (unsigned bytes, 3 dimensions), three big-endian
    int32 sizes (N, rows, cols), then N*rows*cols bytes. Gzip files are recognised by their content.

    Args:
        path: path of the IDX file (plain or ``.gz``).

    Returns:
        uint8 tensor (N, rows, cols); (N, 28, 28) for MNIST.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: wrong magic number (e.g. a label file, magic 2049), or a truncated/oversized file.
    """
    path = _check_file(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path!r}: corrupt gzip data: {exc}") from exc
    if len(raw) < 16:
        raise ValueError(f"{path!r}: too short for an IDX image header (16 bytes), got {len(raw)} bytes")
    magic = int.from_bytes(raw[:4], "big")
    if magic != _IDX_IMAGES_MAGIC:
        hint = " (that is an IDX label file)" if magic == _IDX_LABELS_MAGIC else ""
        raise ValueError(
            f"{path!r}: bad magic number {magic} (0x{magic:08x}){hint}; expected {_IDX_IMAGES_MAGIC} "
            f"(0x{_IDX_IMAGES_MAGIC:08x}, IDX unsigned-byte images)"
        )
    n, rows, cols = (int.from_bytes(raw[k : k + 4], "big") for k in (4, 8, 12))
    expected = n * rows * cols
    if len(raw) - 16 != expected:
        raise ValueError(f"{path!r}: header says {n}x{rows}x{cols} = {expected} pixel bytes, file has {len(raw) - 16}")
    array = np.frombuffer(raw, dtype=np.uint8, count=expected, offset=16).reshape(n, rows, cols)
    return torch.from_numpy(array.copy())
