"""Video Pixel Networks' multiplicative unit (MU) and residual multiplicative block (RMB).

Kalchbrenner et al. (2016): ``MU(h) = σ(W1∗h)·tanh(σ(W2∗h)·h + σ(W3∗h)·tanh(W4∗h))``; an RMB is
a 1x1 convolution 2c -> c, two MUs, a 1x1 convolution c -> 2c and a skip connection. The four
convolutions W1..W4 run as one convolution with 4c output channels; the gating is
:func:`pyvidgen.ops.multiplicative_unit`.

In VPN's decoders every convolution is masked (``mask_type``, :class:`pyvidgen.nn.MaskedConv2d`), so
that a pixel, and with colour groups a colour, sees only what precedes it. With G colour groups the
MU's convolution computes its 4c outputs interleaved (output 4j + b is channel j of gate block b), so
that channel j of every gate block falls in the group of channel j of h; the blocks are then
separated for the fused gating. This needs c to be a multiple of G.
"""

from __future__ import annotations

from torch import Tensor, nn

from pyvidgen.nn.masked import MaskedConv2d
from pyvidgen.ops import multiplicative_unit


def _check(owner: str, channels: int, kernel_size: int, dilation: int) -> None:
    if channels < 1:
        raise ValueError(f"{owner}: channels must be >= 1, got {channels}")
    if not (isinstance(kernel_size, int) and kernel_size > 0 and kernel_size % 2 == 1):
        raise ValueError(f"{owner}: kernel_size must be a positive odd int (for 'same' padding), got {kernel_size!r}")
    if not (isinstance(dilation, int) and dilation >= 1):
        raise ValueError(f"{owner}: dilation must be an int >= 1, got {dilation!r}")


def _check_groups(owner: str, channels: int, color_groups: int) -> None:
    if color_groups < 1 or channels % color_groups:
        raise ValueError(f"{owner}: channels ({channels}) must be a multiple of color_groups ({color_groups})")


class MultiplicativeUnit(nn.Module):
    """VPN's multiplicative unit on a feature map.

    Args:
        channels: channels c of the input and output.
        kernel_size: odd kernel size of W1..W4.
        dilation: dilation of W1..W4 (the dilated VPN encoder uses 1, 2, 4, 8); padding keeps H, W.
        bias: whether W1..W4 have biases.
        mask_type: None (an encoder's MU), or "A"/"B" for a decoder's masked MU.
        color_groups: colour groups of a masked MU (c a multiple of them).

    Attributes:
        conv: ``nn.Conv2d(c, 4c, kernel_size, dilation=dilation)`` (a :class:`MaskedConv2d` when masked);
            output blocks W1, W2, W3, W4 (the pre-activations g1, g2, g3, u of the op), interleaved
            when masked with colour groups (see the module docstring).

    Shape:
        - h: (B, c, H, W)
        - output: (B, c, H, W)
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        dilation: int = 1,
        bias: bool = True,
        mask_type: str | None = None,
        color_groups: int = 1,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        _check(name, channels, kernel_size, dilation)
        self.channels, self.mask_type, self.color_groups = channels, mask_type, color_groups
        if mask_type is None:
            self.conv: nn.Module = nn.Conv2d(
                channels, 4 * channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation, bias=bias
            )
        else:
            _check_groups(name, channels, color_groups)
            self.conv = MaskedConv2d(channels, 4 * channels, kernel_size, mask_type, color_groups, dilation, bias)

    def pre_activations(self, h: Tensor) -> Tensor:
        """The four gate blocks (B, 4c, H, W), in block order g1, g2, g3, u."""
        pre = self.conv(h)
        if self.mask_type is not None and self.color_groups > 1:
            pre = pre.unflatten(1, (self.channels, 4)).transpose(1, 2).flatten(1, 2)
        return pre

    def forward(self, h: Tensor) -> Tensor:
        if not isinstance(h, Tensor) or h.dim() != 4 or h.shape[1] != self.channels:
            got = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise ValueError(f"{type(self).__name__}: h must be (B, C, H, W) with C = {self.channels}, got {got}")
        return multiplicative_unit(self.pre_activations(h), h)


class ResidualMultiplicativeBlock(nn.Module):
    """VPN's residual multiplicative block: ``x + conv1x1_up(MU(MU(conv1x1_down(x))))``.

    Args:
        channels: channels 2c of the block's input and output (even).
        kernel_size: odd kernel size of the MUs' convolutions.
        dilation: dilation of the MUs' convolutions.
        masked: a decoder's block: every convolution masked (mask B, the 1x1s included), so that a pixel
            and colour see only what precedes them, as in the block's input.
        color_groups: colour groups of a masked block (c a multiple of them).

    Attributes:
        down: 1x1 ``nn.Conv2d(2c, c)`` (masked: :class:`MaskedConv2d`).
        mu1, mu2: :class:`MultiplicativeUnit` (c channels).
        up: 1x1 ``nn.Conv2d(c, 2c)`` (masked: :class:`MaskedConv2d`).

    Shape:
        - x: (B, 2c, H, W)
        - output: (B, 2c, H, W)
    """

    def __init__(
        self, channels: int, kernel_size: int = 3, dilation: int = 1, masked: bool = False, color_groups: int = 1
    ) -> None:
        super().__init__()
        name = type(self).__name__
        _check(name, channels, kernel_size, dilation)
        if channels % 2:
            raise ValueError(f"{name}: channels (2c) must be even, got {channels}")
        half = channels // 2
        self.channels, self.masked = channels, masked
        mask = "B" if masked else None
        if masked:
            _check_groups(name, half, color_groups)
            self.down: nn.Module = MaskedConv2d(channels, half, 1, "B", color_groups)
            self.up: nn.Module = MaskedConv2d(half, channels, 1, "B", color_groups)
        else:
            self.down = nn.Conv2d(channels, half, 1)
            self.up = nn.Conv2d(half, channels, 1)
        self.mu1 = MultiplicativeUnit(half, kernel_size, dilation, mask_type=mask, color_groups=color_groups)
        self.mu2 = MultiplicativeUnit(half, kernel_size, dilation, mask_type=mask, color_groups=color_groups)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != self.channels:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{type(self).__name__}: x must be (B, C, H, W) with C = {self.channels}, got {got}")
        return x + self.up(self.mu2(self.mu1(self.down(x))))
