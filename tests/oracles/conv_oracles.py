"""Slow loop oracles of the masked and the cross convolution, written from DESIGN.md's rules tap by tap."""

from __future__ import annotations

import torch
from torch import Tensor


def tap_visible(co: int, ci: int, r: int, s: int, k: int, cout: int, cin: int, mask_type: str, groups: int) -> bool:
    """Whether tap (r, s) connects input channel ci to output channel co."""
    centre = k // 2
    if r < centre:
        return True
    if r > centre:
        return False
    if s < centre:
        return True
    if s > centre:
        return False
    group_in, group_out = ci * groups // cin, co * groups // cout
    if groups == 1:
        return mask_type == "B"
    return group_in < group_out if mask_type == "A" else group_in <= group_out


def masked_conv2d_oracle(
    x: Tensor, weight: Tensor, bias: Tensor | None, mask_type: str, groups: int, dilation: int
) -> Tensor:
    """out[b, co, i, j] = bias[co] + sum over visible taps and in-image positions, one term at a time."""
    batch, cin, height, width = x.shape
    cout, _, k, _ = weight.shape
    centre = k // 2
    out = torch.zeros(batch, cout, height, width, dtype=torch.float64)
    for b in range(batch):
        for co in range(cout):
            for i in range(height):
                for j in range(width):
                    total = float(bias[co]) if bias is not None else 0.0
                    for ci in range(cin):
                        for r in range(k):
                            for s in range(k):
                                if not tap_visible(co, ci, r, s, k, cout, cin, mask_type, groups):
                                    continue
                                y, z = i + dilation * (r - centre), j + dilation * (s - centre)
                                if 0 <= y < height and 0 <= z < width:
                                    total += float(weight[co, ci, r, s]) * float(x[b, ci, y, z])
                    out[b, co, i, j] = total
    return out


def cross_conv2d_oracle(x: Tensor, kernels: Tensor) -> Tensor:
    """out[b, c, y, x] = sum_{i, j} kernels[b, c, i, j] * x[b, c, y + i - kh // 2, x + j - kw // 2] over in-image
    positions, one tap and one sample at a time (slices, so autograd differentiates it)."""
    batch, channels, height, width = x.shape
    kh, kw = kernels.shape[-2:]
    out = torch.zeros(batch, channels, height, width, dtype=x.dtype)
    for b in range(batch):
        for i in range(kh):
            for j in range(kw):
                dy, dx = i - kh // 2, j - kw // 2
                # Output rows y with 0 <= y + dy < height, columns likewise.
                y0, y1 = max(0, -dy), min(height, height - dy)
                x0, x1 = max(0, -dx), min(width, width - dx)
                if y0 >= y1 or x0 >= x1:
                    continue
                shifted = x[b, :, y0 + dy : y1 + dy, x0 + dx : x1 + dx]
                tap = kernels[b, :, i, j][:, None, None]
                out[b, :, y0:y1, x0:x1] = out[b, :, y0:y1, x0:x1] + tap * shifted
    return out
