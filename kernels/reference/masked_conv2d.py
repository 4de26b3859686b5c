"""Reference masked (causal) convolution of PixelCNN decoders (van den Oord et al. 2016; VPN's decoders).

A k x k convolution (k odd, stride 1, zero "same" padding of ``dilation * (k // 2)``) whose taps are
restricted to the pixels that precede the output pixel in raster order:

* every row above the centre row is visible;
* in the centre row, the taps left of the centre are visible;
* the centre tap: with one colour group, visible for mask "B" and hidden for mask "A"; with G groups
  (channel c of n is in group ``floor(c * G / n)``), tap (in, out) is visible iff
  ``group(in) < group(out)`` for "A" and ``group(in) <= group(out)`` for "B";
* every tap below the centre row, and right of the centre, is hidden.

The output never depends on hidden taps (their weights are replaced by exact zeros, so a NaN there
does not leak) and their weight gradient is exactly zero. The rows below the centre are never read:
the convolution runs over kernel rows ``0 .. k // 2`` on the input padded above and at the sides only,
which skips about half of a dense k x k convolution's work. The centre row is read whole (its hidden
right half against zero weights), so a non-finite input value right of the output pixel in its own row
propagates as 0 * inf = NaN would, while values in later rows never reach it. For finite inputs the
result equals ``F.conv2d(x, weight * causal_mask(...), bias, padding=dilation * (k // 2), dilation=dilation)``
(:func:`masked_conv2d_dense`, the usual implementation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MASK_TYPES = ("A", "B")


def channel_groups(channels: int, groups: int, device: torch.device | str | None = None) -> Tensor:
    """Group of each of ``channels`` channels: ``floor(c * groups / channels)`` (int64, (channels,))."""
    return torch.div(torch.arange(channels, device=device) * groups, max(channels, 1), rounding_mode="floor")


def causal_mask(
    out_channels: int,
    in_channels: int,
    kernel_size: int,
    mask_type: str = "A",
    color_groups: int = 1,
    device: torch.device | str | None = None,
) -> Tensor:
    """The visibility of every tap: bool (out_channels, in_channels, k, k), True where visible."""
    k, centre = kernel_size, kernel_size // 2
    mask = torch.zeros(out_channels, in_channels, k, k, dtype=torch.bool, device=device)
    mask[:, :, :centre, :] = True
    mask[:, :, centre, :centre] = True
    group_out = channel_groups(out_channels, color_groups, device)[:, None]
    group_in = channel_groups(in_channels, color_groups, device)[None, :]
    mask[:, :, centre, centre] = group_in < group_out if mask_type == "A" else group_in <= group_out
    return mask


def visible_rows(weight: Tensor, mask_type: str, color_groups: int) -> Tensor:
    """Kernel rows 0 .. k // 2 with every hidden tap an exact zero: (Cout, Cin, k // 2 + 1, k)."""
    out_channels, in_channels, k, _ = weight.shape
    mask = causal_mask(out_channels, in_channels, k, mask_type, color_groups, weight.device)[:, :, : k // 2 + 1]
    rows = weight[:, :, : k // 2 + 1]
    return torch.where(mask, rows, torch.zeros((), dtype=weight.dtype, device=weight.device))


def _pad_above(x: Tensor, kernel_size: int, dilation: int) -> Tensor:
    reach = dilation * (kernel_size // 2)
    return F.pad(x, (reach, reach, reach, 0))


def masked_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    mask_type: str = "A",
    color_groups: int = 1,
    dilation: int = 1,
) -> Tensor:
    """Masked convolution (reference, differentiable by autograd).

    Args:
        x: (B, Cin, H, W).
        weight: (Cout, Cin, k, k), k odd; hidden taps are ignored, never modified.
        bias: optional (Cout,).
        mask_type: "A" (centre hidden within a group: a first layer) or "B" (centre visible: later layers).
        color_groups: G channel groups (3 for RGB) ordered within a pixel.
        dilation: spacing of the taps.

    Returns:
        (B, Cout, H, W).
    """
    rows = visible_rows(weight, mask_type, color_groups)
    return F.conv2d(_pad_above(x, weight.shape[-1], dilation), rows, bias, dilation=dilation)


def masked_conv2d_backward(
    grad_out: Tensor,
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    mask_type: str = "A",
    color_groups: int = 1,
    dilation: int = 1,
    needs_grad: tuple[bool, bool, bool] = (True, True, True),
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of :func:`masked_conv2d` (torch's convolution gradients of the visible rows).

    Returns:
        (grad_x (B, Cin, H, W), grad_weight (Cout, Cin, k, k) with exact zeros at hidden taps,
        grad_bias (Cout,) or None without a bias).
    """
    k = weight.shape[-1]
    rows = visible_rows(weight, mask_type, color_groups)
    padded = _pad_above(x, k, dilation)
    grad_x = grad_weight = grad_bias = None
    if needs_grad[0]:
        grad_padded = torch.nn.grad.conv2d_input(padded.shape, rows, grad_out, dilation=dilation)
        reach = dilation * (k // 2)
        grad_x = grad_padded[:, :, reach:, reach : reach + x.shape[-1]]
    if needs_grad[1]:
        grad_rows = torch.nn.grad.conv2d_weight(padded, rows.shape, grad_out, dilation=dilation)
        mask = causal_mask(*weight.shape[:3], mask_type, color_groups, weight.device)[:, :, : k // 2 + 1]
        grad_weight = torch.zeros_like(weight)
        grad_weight[:, :, : k // 2 + 1] = torch.where(mask, grad_rows, torch.zeros((), dtype=weight.dtype))
    if needs_grad[2] and bias is not None:
        grad_bias = grad_out.sum(dim=(0, 2, 3))
    return grad_x, grad_weight, grad_bias


def masked_conv2d_dense(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    mask_type: str = "A",
    color_groups: int = 1,
    dilation: int = 1,
) -> Tensor:
    """The usual implementation: a dense k x k convolution of ``weight * mask`` (the benchmark baseline).

    Equal to :func:`masked_conv2d` for finite inputs; it spends the arithmetic of every hidden tap.
    """
    mask = causal_mask(*weight.shape[:3], mask_type, color_groups, weight.device)
    reach = dilation * (weight.shape[-1] // 2)
    return F.conv2d(x, weight * mask, bias, padding=reach, dilation=dilation)
