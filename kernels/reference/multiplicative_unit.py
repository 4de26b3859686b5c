"""Reference multiplicative unit of Video Pixel Networks (Kalchbrenner et al. 2016).

``MU(h) = sigmoid(g1) * tanh(sigmoid(g2) * h + sigmoid(g3) * tanh(u))`` where the pre-activations
``(g1, g2, g3, u)`` are the four channel blocks of ``pre`` (in VPN, four convolutions of h).
"""

from __future__ import annotations

import torch
from torch import Tensor


def multiplicative_unit(pre: Tensor, h: Tensor) -> Tensor:
    """VPN's multiplicative unit (reference, differentiable).

    Args:
        pre: (B, 4C, H, W) pre-activations, channel blocks g1, g2, g3, u.
        h: (B, C, H, W) the unit's input.

    Returns:
        (B, C, H, W).
    """
    g1, g2, g3, u = pre.chunk(4, dim=1)
    return torch.sigmoid(g1) * torch.tanh(torch.sigmoid(g2) * h + torch.sigmoid(g3) * torch.tanh(u))


def multiplicative_unit_backward(
    grad_out: Tensor, pre: Tensor, h: Tensor, needs_grad: tuple[bool, bool] = (True, True)
) -> tuple[Tensor, Tensor]:
    """Closed-form gradients of :func:`multiplicative_unit`, recomputing the activations.

    Args:
        grad_out: (B, C, H, W).
        pre: (B, 4C, H, W).
        h: (B, C, H, W).
        needs_grad: which of (grad_pre, grad_h) the caller uses; both are computed.

    Returns:
        (grad_pre (B, 4C, H, W), grad_h (B, C, H, W)).
    """
    g1, g2, g3, u = pre.chunk(4, dim=1)
    s1, s2, s3, tu = torch.sigmoid(g1), torch.sigmoid(g2), torch.sigmoid(g3), torch.tanh(u)
    tz = torch.tanh(s2 * h + s3 * tu)
    d_g1 = grad_out * tz * s1 * (1 - s1)
    d_z = grad_out * s1 * (1 - tz * tz)
    d_g2 = d_z * h * s2 * (1 - s2)
    d_g3 = d_z * tu * s3 * (1 - s3)
    d_u = d_z * s3 * (1 - tu * tu)
    return torch.cat((d_g1, d_g2, d_g3, d_u), dim=1), d_z * s2
