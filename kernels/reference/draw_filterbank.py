"""DRAW's Gaussian attention filterbanks (Gregor et al. 2015, eqs. 19-22), shared by read and write.

Filter i = 1..N along an axis of L pixels is centred at ``mu_i = g + (i - N/2 - 0.5) * delta`` and is

    F[i, a] = exp(-(a - mu_i)^2 / (2 * sigma2)) / max(sum_a' exp(-(a' - mu_i)^2 / (2 * sigma2)), 1e-8)

for pixels a = 0..L-1 (g, delta and sigma2 in pixel units). The normalising sum runs over the pixels
of one filter (not over the filters), and the exponent divides by ``sigma2`` itself (not its square):
the two slips public DRAW ports are known for. The 1e-8 floor keeps a glimpse that falls entirely
outside the image (every weight underflows to 0) at F = 0 instead of 0/0.

The arithmetic here is the specification the C++ kernels mirror operation for operation (which
intermediate is formed, where sigma2 divides), so that both give the same NaN and infinity pattern on
non-finite inputs, not only the same finite values.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-8


def filter_offsets(n: int, like: Tensor) -> Tensor:
    """``i - N/2 - 0.5`` for i = 1..N: (N,), exact (half-integers) in like's dtype and device."""
    return torch.arange(1, n + 1, dtype=like.dtype, device=like.device) - (n / 2 + 0.5)


def filterbank(g: Tensor, delta: Tensor, sigma2: Tensor, n: int, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """The normalised filterbank of one axis, with what its backward needs.

    Args:
        g: (B,) glimpse centre in pixels.
        delta: (B,) stride between filter centres in pixels.
        sigma2: (B,) variance of every filter in pixels^2.
        n: the number of filters N.
        size: the number of pixels L along the axis.

    Returns:
        ``(F, d, total)``: F (B, N, L) the filters, d (B, N, L) the offsets ``a - mu_i`` and total (B, N, 1)
        each filter's unnormalised sum.
    """
    mu = g[:, None] + filter_offsets(n, g) * delta[:, None]
    d = torch.arange(size, dtype=g.dtype, device=g.device) - mu[:, :, None]
    weights = torch.exp(-(d * d) / (2 * sigma2)[:, None, None])
    total = weights.sum(-1, keepdim=True)
    return weights / total.clamp_min(EPS), d, total


def filterbank_backward(
    grad_f: Tensor, f: Tensor, d: Tensor, total: Tensor, delta_offsets: Tensor, sigma2: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of one axis's filterbank with respect to its centre, stride and variance.

    With ``r = (grad_f - q) * F`` and ``q`` the filter's ``sum_a grad_f * F`` (0 where the 1e-8 floor
    holds: the floor's gradient is 0), ``dL/dmu_i = sum_a r d / sigma2`` and
    ``dL/dsigma2 = sum_{i,a} r d^2 / sigma2 / (2 sigma2)``. Pixels whose weight is exactly 0 (underflowed,
    or a glimpse at an infinite position) contribute exactly 0: their true derivative vanishes there, and
    ``0 * d`` would turn an infinite offset into NaN. Dividing the sums by sigma2 twice, not by
    ``2 sigma2^2``, keeps a tiny sigma2 (1e-30) from squaring to 0 in float32.

    Args:
        grad_f: (B, N, L) gradient of the loss with respect to F.
        f, d, total: :func:`filterbank`'s outputs.
        delta_offsets: (N,) :func:`filter_offsets`.
        sigma2: (B,).

    Returns:
        ``(grad_g, grad_delta, grad_sigma2)``, each (B,).
    """
    q = torch.where(total >= EPS, (grad_f * f).sum(-1, keepdim=True), 0.0)
    r = (grad_f - q) * f
    nonzero = f != 0
    rd = torch.where(nonzero, r * d, 0.0)
    rdd = torch.where(nonzero, rd * d, 0.0)
    grad_mu = rd.sum(-1) / sigma2[:, None]
    grad_sigma2 = rdd.sum((-2, -1)) / sigma2 / (2 * sigma2)
    return grad_mu.sum(-1), (grad_mu * delta_offsets).sum(-1), grad_sigma2
