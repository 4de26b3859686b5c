"""Modules around flow fields: warping by a flow and the Huber smoothness prior on it."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from pyvidgen.ops import PADDING_MODES, flow_smoothness_grad, flow_warp
from pyvidgen.ops._checks import check_choice


class FlowWarp(nn.Module):
    """Bilinear warping of a feature map by a dense flow (the sampler of Patraucean et al.).

    Args:
        padding_mode: "zeros", "border" or "reflection".
        normalized: flows in [-1, 1] units of the image extent instead of pixels.

    Shape:
        - x: (B, C, H, W)
        - flow: (B, 2, H, W), channel 0 horizontal, 1 vertical
        - output: (B, C, H, W)
    """

    def __init__(self, padding_mode: str = "zeros", normalized: bool = False) -> None:
        super().__init__()
        self.padding_mode = check_choice("FlowWarp", "padding_mode", padding_mode, PADDING_MODES)
        self.normalized = normalized

    def forward(self, x: Tensor, flow: Tensor) -> Tensor:
        return flow_warp(x, flow, padding_mode=self.padding_mode, normalized=self.normalized)

    def extra_repr(self) -> str:
        return f"padding_mode={self.padding_mode!r}, normalized={self.normalized}"


def _fused_smoothness_gradient(flow: Tensor, delta: float, weight: float) -> Tensor:
    return flow_smoothness_grad(flow, delta=delta, scale=weight)


class _InjectSmoothnessGradient(torch.autograd.Function):
    """Identity whose backward adds ``gradient(flow, delta, weight)`` (``weight * d flow_smoothness / d flow``)
    to the incoming gradient."""

    @staticmethod
    def forward(ctx, flow: Tensor, weight: float, delta: float, gradient: Callable) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(flow)
        ctx.weight, ctx.delta, ctx.gradient = weight, delta, gradient
        return flow.view_as(flow)

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: ANN001, ANN205
        (flow,) = ctx.saved_tensors
        return grad + ctx.gradient(flow, ctx.delta, ctx.weight), None, None, None


class HuberPenalty(nn.Module):
    """Identity in the forward pass; in the backward pass adds the gradient of ``weight * flow_smoothness``.

    This is how Patraucean et al. (2015) regularise the predicted flow: the smoothness prior never
    appears in the loss value, only in the gradient that reaches the flow regressor.

    Args:
        weight: penalty weight (1e-3 in the paper's configuration).
        delta: Huber threshold, > 0.

    Shape:
        - flow: (B, C, H, W); output: the same tensor values.
    """

    #: ``(flow, delta, weight) -> weight * d flow_smoothness / d flow``, the gradient the backward adds.
    smoothness_gradient = staticmethod(_fused_smoothness_gradient)

    def __init__(self, weight: float = 1e-3, delta: float = 1.0) -> None:
        super().__init__()
        if not delta > 0:
            raise ValueError(f"HuberPenalty: delta must be > 0, got {delta!r}")
        self.weight, self.delta = float(weight), float(delta)

    def forward(self, flow: Tensor) -> Tensor:
        if not (torch.is_grad_enabled() and flow.requires_grad) or self.weight == 0.0:
            return flow
        return _InjectSmoothnessGradient.apply(flow, self.weight, self.delta, self.smoothness_gradient)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, delta={self.delta}"
