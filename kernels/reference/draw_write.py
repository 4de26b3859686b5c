"""Reference DRAW write attention (Gregor et al. 2015, eq. 29): an N x N patch spread over the canvas.

``write[b, c, y, a] = sum_{i, j} Fy[b, i, y] * w[b, c, i, j] * Fx[b, j, a] / gamma[b]``, i.e.
``Fy^T w Fx / gamma`` per channel, with the filterbanks of :mod:`pyvidgen.kernels.reference.draw_filterbank`.
It is the adjoint of read up to gamma: ``<read(x), w> = gamma^2 <x, write(w)>``.

The usual implementation: materialised filterbanks and two batched matmuls, ``w Fx`` (B, C, N, W) then
``Fy^T (w Fx)``; the C++ kernels form the same intermediates in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from pyvidgen.kernels.reference.draw_filterbank import filter_offsets, filterbank, filterbank_backward


def draw_write(
    w: Tensor,
    gx: Tensor,
    gy: Tensor,
    delta: Tensor,
    sigma2: Tensor,
    gamma: Tensor,
    H: int,  # noqa: N803 - the image's H
    W: int,  # noqa: N803 - the image's W
) -> Tensor:
    """DRAW write (reference, differentiable by autograd).

    Args:
        w: (B, C, N, N) patches.
        gx, gy: (B,) patch centre on the canvas in pixels (column, row).
        delta: (B,) stride between filter centres in pixels.
        sigma2: (B,) filter variance in pixels^2 (positive).
        gamma: (B,) intensity (the patch is divided by it).
        H, W: canvas size.

    Returns:
        (B, C, H, W).
    """
    n = w.shape[-1]
    fx = filterbank(gx, delta, sigma2, n, W)[0]
    fy = filterbank(gy, delta, sigma2, n, H)[0]
    return (fy[:, None].transpose(-1, -2) @ (w @ fx[:, None])) / gamma[:, None, None, None]


def draw_write_backward(
    grad_out: Tensor,
    w: Tensor,
    gx: Tensor,
    gy: Tensor,
    delta: Tensor,
    sigma2: Tensor,
    gamma: Tensor,
    H: int,  # noqa: N803
    W: int,  # noqa: N803
    needs_grad: Sequence[bool] = (True,) * 6,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Closed-form gradients of :func:`draw_write`, recomputing the filterbanks.

    With ``G' = G / gamma``, ``V = G' Fx^T`` (B, C, H, N) and ``R = Fy G'`` (B, C, N, W):
    ``grad_w = Fy V``, ``dL/dFx = sum_c w^T R``, ``dL/dFy = sum_c w V^T`` and
    ``grad_gamma = -sum grad_w * w / gamma`` (``-sum G write / gamma`` without forming write).

    Args:
        grad_out: (B, C, H, W).
        w, gx, gy, delta, sigma2, gamma, H, W: as :func:`draw_write`.
        needs_grad: which of the six gradients the caller uses; all are computed.

    Returns:
        ``(grad_w (B, C, N, N), grad_gx, grad_gy, grad_delta, grad_sigma2, grad_gamma)``, the last five (B,).
    """
    n = w.shape[-1]
    fx, dx, total_x = filterbank(gx, delta, sigma2, n, W)
    fy, dy, total_y = filterbank(gy, delta, sigma2, n, H)
    scaled = grad_out / gamma[:, None, None, None]
    v = scaled @ fx[:, None].transpose(-1, -2)
    grad_w = fy[:, None] @ v
    r = fy[:, None] @ scaled
    grad_fx = (w.transpose(-1, -2) @ r).sum(1)
    grad_fy = (w @ v.transpose(-1, -2)).sum(1)
    grad_gamma = -(grad_w * w).sum((1, 2, 3)) / gamma
    offsets = filter_offsets(n, gx)
    grad_gx, grad_delta_x, grad_sigma2_x = filterbank_backward(grad_fx, fx, dx, total_x, offsets, sigma2)
    grad_gy, grad_delta_y, grad_sigma2_y = filterbank_backward(grad_fy, fy, dy, total_y, offsets, sigma2)
    return grad_w, grad_gx, grad_gy, grad_delta_x + grad_delta_y, grad_sigma2_x + grad_sigma2_y, grad_gamma
