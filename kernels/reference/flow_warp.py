"""Reference bilinear flow warping: the specification every other backend is tested against.

Sampling model (one axis shown; the two axes are independent and combine bilinearly):
the source position of output column ``j`` is ``p = j + u`` (``u`` = horizontal flow in pixels,
or ``u * (W - 1) / 2`` with ``normalized=True``). Its taps are ``k0 = floor(p)`` and ``k0 + 1``
with weights ``1 - (p - k0)`` and ``p - k0``. The image is extended beyond its edges before
sampling:

* ``zeros``: taps outside ``[0, W - 1]`` read 0;
* ``border``: taps are clamped to ``[0, W - 1]`` (replicate the edge pixel);
* ``reflection``: taps are reflected about the first and last pixel centres (period ``2 (W - 1)``).

Sampling the extended image at ``p`` equals ``F.grid_sample(..., align_corners=True)`` for
``H, W > 1``; this formulation also covers ``H = 1`` or ``W = 1``. The derivative with respect to
the flow is the one of this piecewise-bilinear function, taken from the right at integer
positions (where ``floor`` jumps). A non-finite source position gives NaN in every channel of
that output pixel, no gradient to ``x`` and a zero gradient to the flow.

Everything here is plain differentiable PyTorch, so autograd gives the reference backward.
"""

from __future__ import annotations

import torch
from torch import Tensor

PADDING_MODES = ("zeros", "border", "reflection")


def source_positions(flow: Tensor, normalized: bool) -> tuple[Tensor, Tensor]:
    """Absolute sampling positions in pixels.

    Args:
        flow: (B, 2, H, W); channel 0 horizontal, channel 1 vertical displacement.
        normalized: flow in [-1, 1] units of the image extent (align_corners=True convention).

    Returns:
        (px, py), each (B, H, W): column and row positions.
    """
    _, _, height, width = flow.shape
    u, v = flow[:, 0], flow[:, 1]
    if normalized:
        u = u * ((width - 1) / 2)
        v = v * ((height - 1) / 2)
    cols = torch.arange(width, dtype=flow.dtype, device=flow.device).view(1, 1, width)
    rows = torch.arange(height, dtype=flow.dtype, device=flow.device).view(1, height, 1)
    return cols + u, rows + v


def _fold_position(p: Tensor, size: int, padding_mode: str) -> Tensor:
    """Move a finite ``p`` to an equivalent position whose taps are small integers (values and slopes unchanged).

    zeros/border: beyond ``[-2, size + 1]`` the sampled value is constant (0 or the edge pixel),
    so clamping there changes neither value nor derivative. reflection: the extended image is
    periodic, so subtracting whole periods changes nothing (``floor`` carries no gradient). The
    remainder lands in ``[0, period]`` up to one rounding; but where the dtype cannot resolve a
    period at ``|p|`` (float32 beyond about 2^24 periods, a flow that exploded) it is off by whole
    rounding steps, so it is clamped to ``[-1, period + 1]``: every tap stays in the image and the
    result is defined. Every backend does these operations in this order, each rounded (no FMA).
    """
    if padding_mode == "reflection" and size > 1:
        period = 2 * (size - 1)
        return (p - period * torch.floor(p / period)).clamp(-1.0, period + 1.0)
    return p.clamp(-2.0, size + 1.0)


def _tap_index(k: Tensor, size: int, padding_mode: str) -> tuple[Tensor, Tensor]:
    """Map integer taps to in-image indices and a validity mask (False only for ``zeros``)."""
    if padding_mode == "zeros":
        valid = (k >= 0) & (k < size)
        return k.clamp(0, size - 1), valid
    if padding_mode == "border" or size == 1:
        return k.clamp(0, size - 1), torch.ones_like(k, dtype=torch.bool)
    period = 2 * (size - 1)
    m = torch.remainder(k, period)
    return torch.where(m < size, m, period - m), torch.ones_like(k, dtype=torch.bool)


class _Taps:
    """Bilinear taps of every output pixel: indices into the flattened plane, validity, weights."""

    def __init__(self, flow: Tensor, height: int, width: int, padding_mode: str, normalized: bool) -> None:
        batch = flow.shape[0]
        px, py = source_positions(flow, normalized)
        self.finite = torch.isfinite(px) & torch.isfinite(py)
        zero = torch.zeros((), dtype=px.dtype, device=px.device)
        px = _fold_position(torch.where(self.finite, px, zero), width, padding_mode)
        py = _fold_position(torch.where(self.finite, py, zero), height, padding_mode)
        x0f, y0f = torch.floor(px), torch.floor(py)
        self.fx, self.fy = px - x0f, py - y0f  # (B, H, W), differentiable w.r.t. flow
        x0, y0 = x0f.long(), y0f.long()
        xs = (_tap_index(x0, width, padding_mode), _tap_index(x0 + 1, width, padding_mode))
        ys = (_tap_index(y0, height, padding_mode), _tap_index(y0 + 1, height, padding_mode))
        shape = (batch, 1, height * width)
        # index[a][b] / valid[a][b]: tap at row y0 + a, column x0 + b, each (B, 1, H*W).
        self.index = [[(ys[a][0] * width + xs[b][0]).reshape(shape) for b in (0, 1)] for a in (0, 1)]
        self.valid = [[(ys[a][1] & xs[b][1] & self.finite).reshape(shape) for b in (0, 1)] for a in (0, 1)]
        self.shape = shape

    def values(self, planes: Tensor) -> list[list[Tensor]]:
        """Tap values (B, C, H*W) of ``planes`` (B, C, H*W); invalid taps read 0."""
        zero = torch.zeros((), dtype=planes.dtype, device=planes.device)
        return [
            [
                torch.where(self.valid[a][b], torch.gather(planes, 2, self.index[a][b].expand_as(planes)), zero)
                for b in (0, 1)
            ]
            for a in (0, 1)
        ]

    def weights(self, dtype: torch.dtype) -> tuple[list[Tensor], list[Tensor]]:
        """([wx0, wx1], [wy0, wy1]), each (B, 1, H*W)."""
        wx1, wy1 = self.fx.reshape(self.shape).to(dtype), self.fy.reshape(self.shape).to(dtype)
        return [1 - wx1, wx1], [1 - wy1, wy1]


def flow_warp(x: Tensor, flow: Tensor, padding_mode: str = "zeros", normalized: bool = False) -> Tensor:
    """Warp ``x`` by ``flow`` with bilinear sampling (reference implementation, differentiable).

    Args:
        x: (B, C, H, W) image or feature map.
        flow: (B, 2, H, W) displacement; see the module docstring for units and padding.
        padding_mode: "zeros", "border" or "reflection".
        normalized: flow given in [-1, 1] units instead of pixels.

    Returns:
        (B, C, H, W): ``out[b, c, i, j]`` = x[b, c] sampled at (i + flow[b, 1, i, j], j + flow[b, 0, i, j]).
    """
    batch, channels, height, width = x.shape
    taps = _Taps(flow, height, width, padding_mode, normalized)
    v = taps.values(x.reshape(batch, channels, height * width))
    wx, wy = taps.weights(x.dtype)
    out = wy[0] * (wx[0] * v[0][0] + wx[1] * v[0][1]) + wy[1] * (wx[0] * v[1][0] + wx[1] * v[1][1])
    out = torch.where(taps.finite.reshape(taps.shape), out, torch.full((), float("nan"), dtype=x.dtype))
    return out.reshape(batch, channels, height, width)


def flow_warp_backward(
    grad_out: Tensor,
    x: Tensor,
    flow: Tensor,
    padding_mode: str = "zeros",
    normalized: bool = False,
    needs_grad: tuple[bool, bool] = (True, True),
) -> tuple[Tensor, Tensor]:
    """Closed-form gradients of :func:`flow_warp` (equal to autograd of it; tested so).

    Args:
        grad_out: (B, C, H, W) gradient of the loss w.r.t. the warped output.
        x: (B, C, H, W) the warped input.
        flow: (B, 2, H, W).
        padding_mode: as in :func:`flow_warp`.
        normalized: as in :func:`flow_warp`.
        needs_grad: which of (grad_x, grad_flow) the caller uses; both are computed.

    Returns:
        (grad_x (B, C, H, W), grad_flow (B, 2, H, W)).
    """
    batch, channels, height, width = x.shape
    taps = _Taps(flow.detach(), height, width, padding_mode, normalized)
    g = grad_out.reshape(batch, channels, height * width)
    wx, wy = taps.weights(x.dtype)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    grad_x = torch.zeros(batch, channels, height * width, dtype=x.dtype, device=x.device)
    for a in (0, 1):
        for b in (0, 1):
            contribution = torch.where(taps.valid[a][b], wy[a] * wx[b] * g, zero)
            grad_x.scatter_add_(2, taps.index[a][b].expand_as(g), contribution)
    v = taps.values(x.reshape(batch, channels, height * width))
    d_px = wy[0] * (v[0][1] - v[0][0]) + wy[1] * (v[1][1] - v[1][0])
    d_py = wx[0] * (v[1][0] - v[0][0]) + wx[1] * (v[1][1] - v[0][1])
    grad_px = torch.where(taps.finite.reshape(taps.shape), (g * d_px).sum(1, keepdim=True), zero)
    grad_py = torch.where(taps.finite.reshape(taps.shape), (g * d_py).sum(1, keepdim=True), zero)
    if normalized:
        grad_px = grad_px * ((width - 1) / 2)
        grad_py = grad_py * ((height - 1) / 2)
    grad_flow = torch.cat((grad_px, grad_py), dim=1).reshape(batch, 2, height, width).to(flow.dtype)
    return grad_x.reshape(batch, channels, height, width), grad_flow


def flow_warp_grid_sample(x: Tensor, flow: Tensor, padding_mode: str = "zeros", normalized: bool = False) -> Tensor:
    """The same warp written the way most PyTorch code does it: ``F.grid_sample`` on a normalised grid.

    Equal to :func:`flow_warp` for H, W > 1 away from the kinks of the sampling function (it rounds
    while normalising, and treats non-finite flows differently). Kept as the benchmark baseline.

    Args:
        x: (B, C, H, W).
        flow: (B, 2, H, W).
        padding_mode: "zeros", "border" or "reflection".
        normalized: flow given in [-1, 1] units instead of pixels.

    Returns:
        (B, C, H, W).
    """
    _, _, height, width = x.shape
    if normalized:
        gx = torch.linspace(-1, 1, width, dtype=flow.dtype, device=flow.device).view(1, 1, width) + flow[:, 0]
        gy = torch.linspace(-1, 1, height, dtype=flow.dtype, device=flow.device).view(1, height, 1) + flow[:, 1]
    else:
        px, py = source_positions(flow, normalized=False)
        gx = px * (2 / (width - 1)) - 1
        gy = py * (2 / (height - 1)) - 1
    grid = torch.stack((gx, gy), dim=-1)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
