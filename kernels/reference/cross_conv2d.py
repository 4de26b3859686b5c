"""Reference cross convolution (Xue et al. 2016, Visual Dynamics): each sample's feature maps convolved
with that sample's own depthwise kernels.

``out[b, c, y, x] = sum_{i, j} kernels[b, c, i, j] * x[b, c, y + i - kh // 2, x + j - kw // 2]`` with zeros
outside the image (a cross-correlation, as ``F.conv2d``; zero "same" padding; kh and kw odd).

The usual implementation, and this one: fold the batch into the channels and run one grouped convolution
with B * C groups of one channel each (the official Torch7 demo looped over the batch instead, one
convolution per sample). Its kernel gradient is torch's grouped weight gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _folded(x: Tensor, kernels: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
    batch, channels, height, width = x.shape
    kh, kw = kernels.shape[-2:]
    return (
        x.reshape(1, batch * channels, height, width),
        kernels.reshape(batch * channels, 1, kh, kw),
        (kh // 2, kw // 2),
    )


def cross_conv2d(x: Tensor, kernels: Tensor) -> Tensor:
    """Cross convolution (reference, differentiable by autograd).

    Args:
        x: (B, C, H, W) feature maps.
        kernels: (B, C, kh, kw) one kernel per sample and channel, kh and kw odd.

    Returns:
        (B, C, H, W).
    """
    if x.numel() == 0:  # no groups to fold into (a grouped convolution needs at least one)
        return x.new_zeros(x.shape)
    folded_x, folded_k, padding = _folded(x, kernels)
    return F.conv2d(folded_x, folded_k, padding=padding, groups=folded_k.shape[0]).view(x.shape)


def cross_conv2d_backward(
    grad_out: Tensor, x: Tensor, kernels: Tensor, needs_grad: Sequence[bool] = (True, True)
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of :func:`cross_conv2d` (torch's grouped convolution gradients).

    ``grad_x`` is the cross convolution of ``grad_out`` with the kernels flipped in both directions;
    ``grad_kernels[b, c, i, j] = sum_{y, x} grad_out[b, c, y, x] * x[b, c, y + i - kh // 2, x + j - kw // 2]``.

    Returns:
        (grad_x (B, C, H, W) or None, grad_kernels (B, C, kh, kw) or None), as ``needs_grad`` asks.
    """
    if x.numel() == 0:
        return (
            x.new_zeros(x.shape) if needs_grad[0] else None,
            kernels.new_zeros(kernels.shape) if needs_grad[1] else None,
        )
    folded_x, folded_k, padding = _folded(x, kernels)
    folded_grad = grad_out.reshape(folded_x.shape)
    groups = folded_k.shape[0]
    grad_x = grad_kernels = None
    if needs_grad[0]:
        grad_x = torch.nn.grad.conv2d_input(folded_x.shape, folded_k, folded_grad, padding=padding, groups=groups)
        grad_x = grad_x.view(x.shape)
    if needs_grad[1]:
        grad_kernels = torch.nn.grad.conv2d_weight(
            folded_x, folded_k.shape, folded_grad, padding=padding, groups=groups
        )
        grad_kernels = grad_kernels.view(kernels.shape)
    return grad_x, grad_kernels
