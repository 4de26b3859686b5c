"""Slow, obviously-correct loop oracles for the flow ops: one pixel at a time in plain Python floats.

Written from the op contracts in DESIGN.md, independently of pyvidgen.kernels.reference.
"""

from __future__ import annotations

import math

import torch


def _extended(plane: list[list[float]], row: int, col: int, mode: str) -> float:
    """Pixel (row, col) of the image extended beyond its edges by ``mode``."""
    height, width = len(plane), len(plane[0])

    def fold(k: int, size: int) -> int | None:
        if mode == "zeros":
            return k if 0 <= k < size else None
        if mode == "border" or size == 1:
            return min(max(k, 0), size - 1)
        # Reflection about the first and last pixel centres: walk back and forth.
        period = 2 * (size - 1)
        k = k % period
        return k if k < size else period - k

    r, c = fold(row, height), fold(col, width)
    if r is None or c is None:
        return 0.0
    return plane[r][c]


def sample(plane: list[list[float]], py: float, px: float, mode: str) -> float:
    """Bilinear sample of ``plane`` at (row py, column px)."""
    if not (math.isfinite(px) and math.isfinite(py)):
        return math.nan
    r0, c0 = math.floor(py), math.floor(px)
    fy, fx = py - r0, px - c0
    top = (1 - fx) * _extended(plane, r0, c0, mode) + fx * _extended(plane, r0, c0 + 1, mode)
    bottom = (1 - fx) * _extended(plane, r0 + 1, c0, mode) + fx * _extended(plane, r0 + 1, c0 + 1, mode)
    return (1 - fy) * top + fy * bottom


def flow_warp_oracle(x: torch.Tensor, flow: torch.Tensor, mode: str, normalized: bool = False) -> torch.Tensor:
    """out[b, c, i, j] = x[b, c] sampled at (i + v, j + u), in float64."""
    batch, channels, height, width = x.shape
    out = torch.empty(batch, channels, height, width, dtype=torch.float64)
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                u, v = float(flow[b, 0, i, j]), float(flow[b, 1, i, j])
                if normalized:
                    u, v = u * (width - 1) / 2, v * (height - 1) / 2
                for c in range(channels):
                    out[b, c, i, j] = sample(x[b, c].double().tolist(), i + v, j + u, mode)
    return out


def flow_warp_flow_derivative_oracle(
    x: torch.Tensor, flow: torch.Tensor, grad_out: torch.Tensor, mode: str, step: float = 1e-7
) -> torch.Tensor:
    """d(sum grad_out * warp)/d flow by one-sided (right) differences: exact for this piecewise-linear
    function when no kink lies within ``step`` to the right, and it matches the contract's
    right-derivative at integer positions."""
    batch, channels, height, width = x.shape
    grad = torch.zeros(batch, 2, height, width, dtype=torch.float64)
    for b in range(batch):
        planes = [x[b, c].double().tolist() for c in range(channels)]
        for i in range(height):
            for j in range(width):
                u, v = float(flow[b, 0, i, j]), float(flow[b, 1, i, j])
                for axis, (du, dv) in enumerate(((step, 0.0), (0.0, step))):
                    total = 0.0
                    for c in range(channels):
                        g = float(grad_out[b, c, i, j])
                        hi = sample(planes[c], i + v + dv, j + u + du, mode)
                        lo = sample(planes[c], i + v, j + u, mode)
                        total += g * (hi - lo) / step
                    grad[b, axis, i, j] = total
    return grad


def huber(d: float, delta: float) -> float:
    return 0.5 * d * d if abs(d) <= delta else delta * (abs(d) - 0.5 * delta)


def flow_smoothness_oracle(flow: torch.Tensor, delta: float) -> float:
    """Sum of Huber penalties of every horizontal and vertical neighbour difference, in float64."""
    batch, channels, height, width = flow.shape
    f = flow.double().tolist()
    total = 0.0
    for b in range(batch):
        for c in range(channels):
            for i in range(height):
                for j in range(width):
                    if j + 1 < width:
                        total += huber(f[b][c][i][j + 1] - f[b][c][i][j], delta)
                    if i + 1 < height:
                        total += huber(f[b][c][i + 1][j] - f[b][c][i][j], delta)
    return total
