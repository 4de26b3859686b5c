"""Reference Huber smoothness penalty on a flow field (Patraucean et al. 2015, eq. for the flow prior).

``flow_smoothness(flow, delta) = sum over b, c, i, j of huber(flow[b,c,i,j+1] - flow[b,c,i,j])
+ huber(flow[b,c,i+1,j] - flow[b,c,i,j])`` with ``huber(d) = d^2 / 2`` if ``|d| <= delta`` else
``delta * (|d| - delta / 2)``. Differences only between neighbours inside the image.
"""

from __future__ import annotations

import torch
from torch import Tensor


def huber(d: Tensor, delta: float) -> Tensor:
    """Elementwise Huber function with threshold ``delta`` (its derivative is ``clamp(d, -delta, delta)``)."""
    a = d.abs()
    return torch.where(a <= delta, 0.5 * d * d, delta * (a - 0.5 * delta))


def flow_smoothness(flow: Tensor, delta: float = 1.0) -> Tensor:
    """Huber penalty on forward differences of the flow (reference implementation).

    Args:
        flow: (B, C, H, W), usually C = 2.
        delta: Huber threshold, > 0.

    Returns:
        0-dim tensor of flow's dtype: the sum over the batch, channels and both directions.
    """
    dx = flow[..., :, 1:] - flow[..., :, :-1]
    dy = flow[..., 1:, :] - flow[..., :-1, :]
    return huber(dx, delta).sum() + huber(dy, delta).sum()


def flow_smoothness_grad(flow: Tensor, delta: float = 1.0) -> Tensor:
    """Gradient of :func:`flow_smoothness` with respect to ``flow``, in closed form.

    Args:
        flow: (B, C, H, W).
        delta: Huber threshold.

    Returns:
        (B, C, H, W).
    """
    gx = (flow[..., :, 1:] - flow[..., :, :-1]).clamp(-delta, delta)
    gy = (flow[..., 1:, :] - flow[..., :-1, :]).clamp(-delta, delta)
    grad = torch.zeros_like(flow, memory_format=torch.contiguous_format)
    grad[..., :, 1:] += gx
    grad[..., :, :-1] -= gx
    grad[..., 1:, :] += gy
    grad[..., :-1, :] -= gy
    return grad


def flow_smoothness_backward(
    grad_loss: Tensor, flow: Tensor, delta: float = 1.0, needs_grad: tuple[bool] = (True,)
) -> tuple[Tensor]:
    """``grad_loss * d flow_smoothness / d flow``: the backward of :func:`flow_smoothness`.

    Args:
        grad_loss: 0-dim gradient of the loss w.r.t. the penalty.
        flow: (B, C, H, W).
        delta: Huber threshold.
        needs_grad: (whether grad_flow is used,); it is computed either way.

    Returns:
        (grad_flow (B, C, H, W),).
    """
    return (flow_smoothness_grad(flow, delta) * grad_loss,)
