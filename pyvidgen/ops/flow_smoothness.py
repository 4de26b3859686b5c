"""``pyvidgen.ops.flow_smoothness``: Huber penalty on the forward differences of a flow field.

Registered as ``pyvidgen::flow_smoothness`` (scalar) and ``pyvidgen::flow_smoothness_backward``.
Semantics: :mod:`pyvidgen.kernels.reference.flow_smoothness`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pyvidgen._backend import cpp_module, resolve
from pyvidgen.kernels.reference import flow_smoothness as reference
from pyvidgen.ops._checks import check_floating, check_same, check_shape


@torch.library.custom_op("pyvidgen::flow_smoothness", mutates_args=())
def _flow_smoothness(flow: Tensor, delta: float) -> Tensor:
    flow = flow.contiguous()
    backend = resolve("flow_smoothness", flow.device, flow.dtype)
    if backend == "cpp":
        return cpp_module().flow_smoothness_forward(flow, delta)
    if backend == "triton":
        from pyvidgen.kernels.triton import flow_smoothness as triton_flow_smoothness

        return triton_flow_smoothness.flow_smoothness_fwd(flow, delta)
    return reference.flow_smoothness(flow, delta)


@_flow_smoothness.register_fake
def _(flow: Tensor, delta: float) -> Tensor:
    return flow.new_empty(())


@torch.library.custom_op("pyvidgen::flow_smoothness_backward", mutates_args=())
def _flow_smoothness_backward(grad: Tensor, flow: Tensor, delta: float) -> Tensor:
    flow = flow.contiguous()
    backend = resolve("flow_smoothness", flow.device, flow.dtype)
    if backend == "cpp":
        return cpp_module().flow_smoothness_backward(grad, flow, delta)
    if backend == "triton":
        from pyvidgen.kernels.triton import flow_smoothness as triton_flow_smoothness

        return triton_flow_smoothness.flow_smoothness_bwd(grad, flow, delta)
    return reference.flow_smoothness_grad(flow, delta) * grad


@_flow_smoothness_backward.register_fake
def _(grad: Tensor, flow: Tensor, delta: float) -> Tensor:
    return torch.empty_like(flow, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
    ctx.save_for_backward(inputs[0])
    ctx.delta = inputs[1]


def _backward(ctx, grad: Tensor):  # noqa: ANN001, ANN202
    (flow,) = ctx.saved_tensors
    return _flow_smoothness_backward(grad, flow, ctx.delta), None


_flow_smoothness.register_autograd(_backward, setup_context=_setup_context)


def _check(flow: object, delta: float) -> float:
    op = "flow_smoothness"
    check_floating(op, "flow", flow, 4, "(B, C, H, W)")
    delta = float(delta)
    if not (delta > 0 and math.isfinite(delta)):
        raise ValueError(f"{op}: delta must be a finite number > 0, got {delta!r}")
    return delta


def flow_smoothness(flow: Tensor, *, delta: float = 1.0) -> Tensor:
    """Huber smoothness penalty of a flow field (Patraucean et al. 2015).

    ``sum_{b,c,i,j} huber(flow[b,c,i,j+1] - flow[b,c,i,j]) + huber(flow[b,c,i+1,j] - flow[b,c,i,j])``
    with ``huber(d) = d^2 / 2`` for ``|d| <= delta`` and ``delta * (|d| - delta / 2)`` beyond.

    Args:
        flow: (B, C, H, W), usually C = 2.
        delta: Huber threshold, > 0.

    Returns:
        0-dim tensor of ``flow``'s dtype; differentiable w.r.t. ``flow``.
    """
    delta = _check(flow, delta)
    return torch.ops.pyvidgen.flow_smoothness(flow, delta)


def flow_smoothness_grad(flow: Tensor, *, delta: float = 1.0, scale: Tensor | float = 1.0) -> Tensor:
    """``scale * d flow_smoothness(flow) / d flow`` in one fused call (what :class:`pyvidgen.nn.HuberPenalty` injects).

    Args:
        flow: (B, C, H, W).
        delta: Huber threshold, > 0.
        scale: multiplier, a Python number or a 0-dim tensor on ``flow``'s device.

    Returns:
        (B, C, H, W) gradient, contiguous.
    """
    delta = _check(flow, delta)
    if not isinstance(scale, Tensor):
        scale = torch.tensor(float(scale), dtype=flow.dtype, device=flow.device)
    check_shape("flow_smoothness_grad", "scale", scale, (), "()")
    check_same("flow_smoothness_grad", "scale", scale, "flow", flow)
    return torch.ops.pyvidgen.flow_smoothness_backward(scale, flow, delta)
