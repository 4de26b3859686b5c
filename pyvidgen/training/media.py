"""Pictures of videos: a PNG grid and an animated GIF of true versus predicted frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def _to_uint8(frames: Tensor) -> np.ndarray:
    return (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def video_grid(rows: list[Tensor], pad: int = 2) -> np.ndarray:
    """Tile videos into one image: one row per video, one column per frame.

    Args:
        rows: each (T, C, H, W) with C = 1 or 3, values in [0, 1]; all the same shape.
        pad: white pixels between tiles.

    Returns:
        (rows * (H + pad) - pad, T * (W + pad) - pad[, 3]) uint8 image.
    """
    steps, channels, height, width = rows[0].shape
    canvas = torch.ones(channels, len(rows) * (height + pad) - pad, steps * (width + pad) - pad)
    for r, video in enumerate(rows):
        for t in range(steps):
            y, x = r * (height + pad), t * (width + pad)
            canvas[:, y : y + height, x : x + width] = video[t].float().cpu()
    image = _to_uint8(canvas)
    return image[0] if channels == 1 else image.transpose(1, 2, 0)


def save_png_grid(path: str | Path, rows: list[Tensor]) -> Path:
    """Write :func:`video_grid` of ``rows`` as a PNG."""
    import imageio.v3 as iio

    path = Path(path)
    iio.imwrite(path, video_grid(rows))
    return path


def save_gif(path: str | Path, videos: list[Tensor], fps: int = 4) -> Path:
    """Write the videos side by side as an animated GIF (looping).

    Args:
        path: output file.
        videos: each (T, C, H, W) in [0, 1], the same T.
        fps: frames per second.
    """
    import imageio.v3 as iio

    path = Path(path)
    steps = videos[0].shape[0]
    # Frame t of the GIF: frame t of every video, left to right.
    frames = [video_grid([torch.stack([v[t] for v in videos])]) for t in range(steps)]
    iio.imwrite(path, np.stack(frames), duration=1000 // fps, loop=0)
    return path
