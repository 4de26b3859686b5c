"""Reference DRAW read attention (Gregor et al. 2015, eq. 27): an N x N glimpse of every channel.

``read[b, c, i, j] = gamma[b] * sum_{y, a} Fy[b, i, y] * x[b, c, y, a] * Fx[b, j, a]``, i.e.
``gamma * Fy x Fx^T`` per channel, with the filterbanks of :mod:`pyvidgen.kernels.reference.draw_filterbank`
(Fx over the W columns centred around gx, Fy over the H rows around gy; delta and sigma2 shared).

This is the usual implementation: materialised (B, N, W) and (B, N, H) filterbanks and two batched
matmuls, ``U = Fy x`` (B, C, N, W) then ``U Fx^T``. The C++ kernels form the same intermediates in the
same order (per sample, on the fly) so that non-finite inputs give the same NaN/infinity pattern.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from pyvidgen.kernels.reference.draw_filterbank import filter_offsets, filterbank, filterbank_backward


def draw_read(x: Tensor, gx: Tensor, gy: Tensor, delta: Tensor, sigma2: Tensor, gamma: Tensor, N: int) -> Tensor:  # noqa: N803 - the paper's N
    """DRAW read (reference, differentiable by autograd).

    Args:
        x: (B, C, H, W) images.
        gx, gy: (B,) glimpse centre in pixels (column, row).
        delta: (B,) stride between filter centres in pixels.
        sigma2: (B,) filter variance in pixels^2 (positive).
        gamma: (B,) intensity.
        N: glimpse size.

    Returns:
        (B, C, N, N).
    """
    _, _, height, width = x.shape
    fx = filterbank(gx, delta, sigma2, N, width)[0]
    fy = filterbank(gy, delta, sigma2, N, height)[0]
    u = fy[:, None] @ x
    return gamma[:, None, None, None] * (u @ fx[:, None].transpose(-1, -2))


def draw_read_backward(
    grad_out: Tensor,
    x: Tensor,
    gx: Tensor,
    gy: Tensor,
    delta: Tensor,
    sigma2: Tensor,
    gamma: Tensor,
    N: int,  # noqa: N803 - the paper's N
    needs_grad: Sequence[bool] = (True,) * 6,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Closed-form gradients of :func:`draw_read`, recomputing the filterbanks.

    With ``M = G Fx`` (B, C, N, W) and ``U = Fy x`` (B, C, N, W): ``grad_x = gamma Fy^T M``,
    ``grad_gamma = sum M * U``, ``dL/dFx = gamma sum_c G^T U``, ``dL/dFy = gamma sum_c M x^T``; the
    filterbanks' gradients then go to the centres, the stride and the variance
    (:func:`~pyvidgen.kernels.reference.draw_filterbank.filterbank_backward`).

    Args:
        grad_out: (B, C, N, N).
        x, gx, gy, delta, sigma2, gamma, N: as :func:`draw_read`.
        needs_grad: which of the six gradients the caller uses; all are computed.

    Returns:
        ``(grad_x (B, C, H, W), grad_gx, grad_gy, grad_delta, grad_sigma2, grad_gamma)``, the last five (B,).
    """
    _, _, height, width = x.shape
    fx, dx, total_x = filterbank(gx, delta, sigma2, N, width)
    fy, dy, total_y = filterbank(gy, delta, sigma2, N, height)
    m = grad_out @ fx[:, None]
    u = fy[:, None] @ x
    scale = gamma[:, None, None]
    grad_x = gamma[:, None, None, None] * (fy[:, None].transpose(-1, -2) @ m)
    grad_gamma = (m * u).sum((1, 2, 3))
    grad_fx = scale * (grad_out.transpose(-1, -2) @ u).sum(1)
    grad_fy = scale * (m @ x.transpose(-1, -2)).sum(1)
    offsets = filter_offsets(N, gx)
    grad_gx, grad_delta_x, grad_sigma2_x = filterbank_backward(grad_fx, fx, dx, total_x, offsets, sigma2)
    grad_gy, grad_delta_y, grad_sigma2_y = filterbank_backward(grad_fy, fy, dy, total_y, offsets, sigma2)
    return grad_x, grad_gx, grad_gy, grad_delta_x + grad_delta_y, grad_sigma2_x + grad_sigma2_y, grad_gamma
