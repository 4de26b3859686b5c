"""PixelCNN's masked convolution as a module (van den Oord et al. 2016; the decoders of Video Pixel Networks)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pyvidgen.ops import masked_conv2d
from pyvidgen.ops._checks import check_choice
from pyvidgen.ops.masked_conv2d import MASK_TYPES


class MaskedConv2d(nn.Module):
    """A k x k convolution that sees only earlier pixels (and earlier colour groups) of its input.

    Args:
        in_channels: Cin.
        out_channels: Cout.
        kernel_size: odd k.
        mask_type: "A" (a decoder's first layer: a pixel never sees itself) or "B" (every later layer).
        color_groups: G channel groups generated in order within a pixel (3 for RGB); channel c of n is in
            group ``floor(c * G / n)``, in input and output.
        dilation: spacing of the taps (the padding keeps H x W).
        bias: learn a bias.

    Attributes:
        weight: (Cout, Cin, k, k); its hidden taps are never used and get zero gradients.
        bias: (Cout,) or None.

    Shape:
        - x: (B, Cin, H, W)
        - output: (B, Cout, H, W)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        mask_type: str = "B",
        color_groups: int = 1,
        dilation: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if not (isinstance(kernel_size, int) and kernel_size > 0 and kernel_size % 2 == 1):
            raise ValueError(f"{name}: kernel_size must be a positive odd int, got {kernel_size!r}")
        if not 1 <= color_groups <= min(in_channels, out_channels):
            raise ValueError(
                f"{name}: color_groups must be in [1, min(in_channels, out_channels)] = "
                f"[1, {min(in_channels, out_channels)}], got {color_groups}"
            )
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.mask_type = check_choice(name, "mask_type", mask_type, MASK_TYPES)
        self.color_groups, self.dilation = color_groups, dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Conv2d's initialisation, with the fan-in of the visible taps only (about half of k^2)."""
        visible = self.kernel_size * (self.kernel_size // 2) + self.kernel_size // 2 + 1
        bound = 1.0 / math.sqrt(max(1, self.in_channels * visible))
        nn.init.uniform_(self.weight, -bound * math.sqrt(3.0), bound * math.sqrt(3.0))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return masked_conv2d(
            x,
            self.weight,
            self.bias,
            mask_type=self.mask_type,
            color_groups=self.color_groups,
            dilation=self.dilation,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, mask_type={self.mask_type!r}, "
            f"color_groups={self.color_groups}, dilation={self.dilation}, bias={self.bias is not None}"
        )
