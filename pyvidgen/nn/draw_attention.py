"""DRAW's read and write heads (Gregor et al. 2015): Gaussian glimpses placed by the decoder, or whole images.

A linear layer of the decoder state gives five numbers ``(g~x, g~y, log sigma2, log delta~, log gamma)``,
which the paper turns into a grid of N x N Gaussian filters::

    gx = (W + 1) / 2 * (g~x + 1)        gy = (H + 1) / 2 * (g~y + 1)
    delta = (max(H, W) - 1) / (N - 1) * delta~          sigma2 = exp(log sigma2)     gamma = exp(log gamma)

Coordinate convention. The paper counts pixels from 1, so ``g~ = 0`` puts ``gx = (W + 1) / 2``, the centre of
pixels 1..W. :func:`pyvidgen.ops.draw_read` and :func:`~pyvidgen.ops.draw_write` count pixels from 0
(``a = 0..W-1``), so the op is given ``gx_op = gx_paper - 1`` (and likewise gy): ``g~ = 0`` is then
``(W - 1) / 2``, the same centre, and ``g~ = -1`` / ``+1`` give -1 / W, one pixel outside the first and last
pixels, exactly as in the paper. The filter centres ``mu_i = g + (i - N/2 - 0.5) delta`` are the
same formula in both conventions, so nothing else moves. Every parameter this module returns is already in
the ops' 0-based pixel units.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from pyvidgen.ops import draw_read, draw_write

# delta~ of the read at initialisation: its N filters span half the image around the centre.
READ_INIT_STRIDE = 0.5


class GlimpseParams(NamedTuple):
    """The five attention parameters of a batch, each (B,), in the ops' 0-based pixel units."""

    gx: Tensor
    gy: Tensor
    delta: Tensor
    sigma2: Tensor
    gamma: Tensor

    def stacked(self) -> Tensor:
        """(B, 5): gx, gy, delta, sigma2, gamma (what pictures of the glimpses need)."""
        return torch.stack(tuple(self), dim=-1)


def glimpse_params(raw: Tensor, n: int, height: int, width: int) -> GlimpseParams:
    """The paper's parameterisation of the five raw outputs of an attention layer.

    Args:
        raw: (B, 5) = (g~x, g~y, log sigma2, log delta~, log gamma).
        n: the glimpse size N (filters per axis); for N = 1 the stride is irrelevant (a single filter sits
            at the centre) and the factor ``(max(H, W) - 1) / (N - 1)`` is taken with N - 1 replaced by 1.
        height: image height H.
        width: image width W.

    Returns:
        :class:`GlimpseParams` in 0-based pixel units: ``gx = (W + 1) / 2 (g~x + 1) - 1`` (see the module's
        docstring), ``delta = (max(H, W) - 1) / (N - 1) exp(log delta~)``, ``sigma2``, ``gamma`` = exp.
    """
    if raw.dim() != 2 or raw.shape[-1] != 5:
        raise ValueError(f"glimpse_params: raw must be (B, 5), got {tuple(raw.shape)}")
    gx_t, gy_t, log_sigma2, log_delta, log_gamma = raw.unbind(-1)
    gx = (width + 1) / 2 * (gx_t + 1) - 1
    gy = (height + 1) / 2 * (gy_t + 1) - 1
    delta = (max(height, width) - 1) / max(n - 1, 1) * log_delta.exp()
    return GlimpseParams(gx, gy, delta, log_sigma2.exp(), log_gamma.exp())


def _check_positive(name: str, **values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: {key} must be a positive int, got {value!r}")


class _ReadWrite(nn.Module):
    """What both heads share: sizes, input checks and the feature count of a read."""

    read_features: int

    def __init__(self, in_features: int, height: int, width: int, channels: int, **sizes: int) -> None:
        super().__init__()
        _check_positive(type(self).__name__, in_features=in_features, height=height, width=width, channels=channels)
        _check_positive(type(self).__name__, **sizes)
        self.in_features, self.height, self.width, self.channels = in_features, height, width, channels

    def _check_read(self, x: Tensor, x_hat: Tensor, h: Tensor) -> None:
        expected = (self.channels, self.height, self.width)
        for arg, value in (("x", x), ("x_hat", x_hat)):
            if not isinstance(value, Tensor) or value.dim() != 4 or tuple(value.shape[1:]) != expected:
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(
                    f"{type(self).__name__}.read: {arg} must be (B, {', '.join(map(str, expected))}), got {got}"
                )
        if x.shape != x_hat.shape:
            raise ValueError(f"{type(self).__name__}.read: x {tuple(x.shape)} and x_hat {tuple(x_hat.shape)} differ")
        self._check_state(h, x.shape[0], "read")

    def _check_state(self, h: Tensor, batch: int | None, method: str) -> None:
        if not isinstance(h, Tensor) or h.dim() != 2 or h.shape[1] != self.in_features:
            got = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise ValueError(f"{type(self).__name__}.{method}: h must be (B, {self.in_features}), got {got}")
        if batch is not None and h.shape[0] != batch:
            raise ValueError(f"{type(self).__name__}.{method}: h has batch {h.shape[0]}, the images {batch}")


class DrawAttention(_ReadWrite):
    """DRAW's selective attention: an N x N Gaussian glimpse read from the image and the error image, and an
    N' x N' patch written through another grid of filters, both placed by the decoder state.

    Args:
        in_features: size of the decoder state h.
        height: image height H.
        width: image width W.
        read_n: read glimpse size N (2 in the paper's MNIST network).
        write_n: write patch size N' (5 in the paper's MNIST network).
        channels: image channels C (the same filters serve every channel).

    Attributes:
        read_layer: Linear(in_features, 5), the read's raw attention parameters.
        write_layer: Linear(in_features, 5), the write's own raw attention parameters.
        patch_layer: Linear(in_features, C * write_n^2), the patch the write draws.
        read_features: 2 C read_n^2, the size of :meth:`read`'s output.

    Shape:
        - h: (B, in_features)
        - read: x, x_hat (B, C, H, W) -> (B, 2 C read_n^2) (image glimpse, then error glimpse)
        - write: -> (B, C, H, W)
    """

    def __init__(self, in_features: int, height: int, width: int, read_n: int, write_n: int, channels: int = 1) -> None:
        super().__init__(in_features, height, width, channels, read_n=read_n, write_n=write_n)
        self.read_n, self.write_n = read_n, write_n
        self.read_layer = nn.Linear(in_features, 5)
        self.write_layer = nn.Linear(in_features, 5)
        self.patch_layer = nn.Linear(in_features, channels * write_n * write_n)
        self.read_features = 2 * channels * read_n * read_n
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's initialisation, then a read that starts on the image.

        With zero biases the first read glimpse (from the zero initial decoder state) spans the whole image
        with filters of one pixel's width: its N filters sit on the image's edges and, on digits, read blank
        borders. The encoder then sees nothing, the KL term pushes every z_t to the prior, and training
        settles on the mean image (seen at ~200 nats on binarised digits). Starting the read's biases at a
        stride of half the image over N - 1 and filters as wide as the stride (sigma^2 = delta^2 / 4 + 1)
        keeps the first glimpses on the strokes; the parameterisation is the paper's, only its start moves.
        """
        for layer in (self.read_layer, self.write_layer, self.patch_layer):
            layer.reset_parameters()
        extent = max(self.height, self.width)
        delta = (extent - 1) / max(self.read_n - 1, 1) * READ_INIT_STRIDE
        with torch.no_grad():
            self.read_layer.bias.zero_()
            self.read_layer.bias[2] = math.log(delta * delta / 4 + 1)
            self.read_layer.bias[3] = math.log(READ_INIT_STRIDE)

    def params(self, h: Tensor, kind: str = "read") -> GlimpseParams:
        """The read's or the write's attention parameters for decoder states ``h`` (B, in_features).

        Args:
            h: (B, in_features).
            kind: "read" or "write" (each has its own linear layer and glimpse size).

        Returns:
            :class:`GlimpseParams`, each (B,), in the ops' 0-based pixel units.
        """
        if kind not in ("read", "write"):
            raise ValueError(f"DrawAttention.params: kind must be 'read' or 'write', got {kind!r}")
        self._check_state(h, None, "params")
        layer, n = (self.read_layer, self.read_n) if kind == "read" else (self.write_layer, self.write_n)
        return glimpse_params(layer(h), n, self.height, self.width)

    def read(self, x: Tensor, x_hat: Tensor, h: Tensor) -> Tensor:
        """Glimpses of the image and of the error image: (B, 2 C read_n^2), image channels first."""
        self._check_read(x, x_hat, h)
        p = self.params(h, "read")
        # One op call on the channel-concatenated pair: both share the filterbank, built once.
        glimpse = draw_read(torch.cat((x, x_hat), dim=1), *p, self.read_n)
        return glimpse.flatten(1)

    def write(self, h: Tensor) -> Tensor:
        """The patch of ``h`` drawn onto a blank (B, C, H, W) canvas through the write's filters."""
        self._check_state(h, None, "write")
        p = self.params(h, "write")
        patch = self.patch_layer(h).unflatten(1, (self.channels, self.write_n, self.write_n))
        return draw_write(patch, *p, self.height, self.width)

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, height={self.height}, width={self.width}, read_n={self.read_n}, "
            f"write_n={self.write_n}, channels={self.channels}"
        )


class DrawNoAttention(_ReadWrite):
    """DRAW without attention, the paper's baseline: read the whole image and error image, write the whole
    canvas through a linear layer.

    Args:
        in_features: size of the decoder state h.
        height: image height H.
        width: image width W.
        channels: image channels C.

    Attributes:
        write_layer: Linear(in_features, C H W).
        read_features: 2 C H W.

    Shape:
        - read: x, x_hat (B, C, H, W), h (B, in_features) -> (B, 2 C H W) (h is unused: the read is fixed)
        - write: h (B, in_features) -> (B, C, H, W)
    """

    def __init__(self, in_features: int, height: int, width: int, channels: int = 1) -> None:
        super().__init__(in_features, height, width, channels)
        self.write_layer = nn.Linear(in_features, channels * height * width)
        self.read_features = 2 * channels * height * width

    def read(self, x: Tensor, x_hat: Tensor, h: Tensor) -> Tensor:
        """The image and the error image flattened and concatenated: (B, 2 C H W)."""
        self._check_read(x, x_hat, h)
        return torch.cat((x.flatten(1), x_hat.flatten(1)), dim=1)

    def write(self, h: Tensor) -> Tensor:
        """A whole (B, C, H, W) canvas update from ``h``."""
        self._check_state(h, None, "write")
        return self.write_layer(h).unflatten(1, (self.channels, self.height, self.width))

    def extra_repr(self) -> str:
        return f"{self.in_features}, height={self.height}, width={self.width}, channels={self.channels}"
