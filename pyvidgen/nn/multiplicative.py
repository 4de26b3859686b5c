"""Video Pixel Networks' multiplicative unit (MU) and residual multiplicative block (RMB).

Kalchbrenner et al. (2016): ``MU(h) = σ(W1∗h)·tanh(σ(W2∗h)·h + σ(W3∗h)·tanh(W4∗h))``; an RMB is
a 1x1 convolution 2c -> c, two MUs, a 1x1 convolution c -> 2c and a skip connection. The four
convolutions W1..W4 run as one convolution with 4c output channels; the gating is
:func:`pyvidgen.ops.multiplicative_unit`.
"""

from __future__ import annotations

from torch import Tensor, nn

from pyvidgen.ops import multiplicative_unit


def _check(owner: str, channels: int, kernel_size: int, dilation: int) -> None:
    if channels < 1:
        raise ValueError(f"{owner}: channels must be >= 1, got {channels}")
    if not (isinstance(kernel_size, int) and kernel_size > 0 and kernel_size % 2 == 1):
        raise ValueError(f"{owner}: kernel_size must be a positive odd int (for 'same' padding), got {kernel_size!r}")
    if not (isinstance(dilation, int) and dilation >= 1):
        raise ValueError(f"{owner}: dilation must be an int >= 1, got {dilation!r}")


class MultiplicativeUnit(nn.Module):
    """VPN's multiplicative unit on a feature map.

    Args:
        channels: channels c of the input and output.
        kernel_size: odd kernel size of W1..W4.
        dilation: dilation of W1..W4 (the dilated VPN encoder uses 1, 2, 4, 8); padding keeps H, W.
        bias: whether W1..W4 have biases.

    Attributes:
        conv: ``nn.Conv2d(c, 4c, kernel_size, dilation=dilation)``; output blocks W1, W2, W3, W4
            (the pre-activations g1, g2, g3, u of the op).

    Shape:
        - h: (B, c, H, W)
        - output: (B, c, H, W)
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1, bias: bool = True) -> None:
        super().__init__()
        _check(type(self).__name__, channels, kernel_size, dilation)
        self.channels = channels
        self.conv = nn.Conv2d(
            channels, 4 * channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation, bias=bias
        )

    def forward(self, h: Tensor) -> Tensor:
        if not isinstance(h, Tensor) or h.dim() != 4 or h.shape[1] != self.channels:
            got = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise ValueError(f"{type(self).__name__}: h must be (B, C, H, W) with C = {self.channels}, got {got}")
        return multiplicative_unit(self.conv(h), h)


class ResidualMultiplicativeBlock(nn.Module):
    """VPN's residual multiplicative block: ``x + conv1x1_up(MU(MU(conv1x1_down(x))))``.

    Args:
        channels: channels 2c of the block's input and output (even).
        kernel_size: odd kernel size of the MUs' convolutions.
        dilation: dilation of the MUs' convolutions.

    Attributes:
        down: 1x1 ``nn.Conv2d(2c, c)``.
        mu1, mu2: :class:`MultiplicativeUnit` (c channels).
        up: 1x1 ``nn.Conv2d(c, 2c)``.

    Shape:
        - x: (B, 2c, H, W)
        - output: (B, 2c, H, W)
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__()
        name = type(self).__name__
        _check(name, channels, kernel_size, dilation)
        if channels % 2:
            raise ValueError(f"{name}: channels (2c) must be even, got {channels}")
        half = channels // 2
        self.channels = channels
        self.down = nn.Conv2d(channels, half, 1)
        self.mu1 = MultiplicativeUnit(half, kernel_size, dilation)
        self.mu2 = MultiplicativeUnit(half, kernel_size, dilation)
        self.up = nn.Conv2d(half, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != self.channels:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{type(self).__name__}: x must be (B, C, H, W) with C = {self.channels}, got {got}")
        return x + self.up(self.mu2(self.mu1(self.down(x))))
