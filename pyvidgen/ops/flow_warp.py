"""``pyvidgen.ops.flow_warp``: bilinear warping of feature maps by a dense flow field.

Registered as the custom ops ``pyvidgen::flow_warp`` and ``pyvidgen::flow_warp_backward``; the
backward writes both gradients in one call. Semantics: :mod:`pyvidgen.kernels.reference.flow_warp`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pyvidgen._backend import cpp_module, resolve
from pyvidgen.kernels.reference import flow_warp as reference
from pyvidgen.ops._checks import check_choice, check_floating, check_same, check_shape, deterministic

PADDING_MODES = reference.PADDING_MODES
_MODE_INDEX = {name: i for i, name in enumerate(PADDING_MODES)}


@torch.library.custom_op("pyvidgen::flow_warp", mutates_args=())
def _flow_warp(x: Tensor, flow: Tensor, padding_mode: str, normalized: bool) -> Tensor:
    x, flow = x.contiguous(), flow.contiguous()
    backend = resolve("flow_warp", x.device, x.dtype)
    if backend == "cpp":
        return cpp_module().flow_warp_forward(x, flow, _MODE_INDEX[padding_mode], normalized)
    if backend == "triton":
        from pyvidgen.kernels.triton import flow_warp as triton_flow_warp

        return triton_flow_warp.flow_warp_fwd(x, flow, padding_mode, normalized)
    return reference.flow_warp(x, flow, padding_mode, normalized)


@_flow_warp.register_fake
def _(x: Tensor, flow: Tensor, padding_mode: str, normalized: bool) -> Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("pyvidgen::flow_warp_backward", mutates_args=())
def _flow_warp_backward(
    grad_out: Tensor,
    x: Tensor,
    flow: Tensor,
    padding_mode: str,
    normalized: bool,
    x_needs_grad: bool,
    flow_needs_grad: bool,
) -> tuple[Tensor, Tensor]:
    grad_out, x, flow = grad_out.contiguous(), x.contiguous(), flow.contiguous()
    # Only the triton kernel scatters grad_x with atomics; it is skipped when grad_x is not needed.
    atomics_ok = not (x_needs_grad and deterministic())
    backend = resolve("flow_warp", x.device, x.dtype, atomics_ok=atomics_ok)
    if backend == "cpp":
        grad_x, grad_flow = cpp_module().flow_warp_backward(
            grad_out, x, flow, _MODE_INDEX[padding_mode], normalized, x_needs_grad, flow_needs_grad
        )
    elif backend == "triton":
        from pyvidgen.kernels.triton import flow_warp as triton_flow_warp

        grad_x, grad_flow = triton_flow_warp.flow_warp_bwd(
            grad_out, x, flow, padding_mode, normalized, x_needs_grad, flow_needs_grad
        )
    else:
        grad_x, grad_flow = reference.flow_warp_backward(grad_out, x, flow, padding_mode, normalized)
    # Custom ops return tensors, never None: an unneeded gradient comes back empty.
    grad_x = grad_x if x_needs_grad and grad_x is not None else x.new_empty(0)
    grad_flow = grad_flow if flow_needs_grad and grad_flow is not None else flow.new_empty(0)
    return grad_x, grad_flow


@_flow_warp_backward.register_fake
def _(grad_out, x, flow, padding_mode, normalized, x_needs_grad, flow_needs_grad):  # noqa: ANN001, ANN202
    grad_x = torch.empty_like(x, memory_format=torch.contiguous_format) if x_needs_grad else x.new_empty(0)
    grad_flow = torch.empty_like(flow, memory_format=torch.contiguous_format) if flow_needs_grad else flow.new_empty(0)
    return grad_x, grad_flow


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
    x, flow, padding_mode, normalized = inputs
    ctx.save_for_backward(x, flow)
    ctx.padding_mode, ctx.normalized = padding_mode, normalized


def _backward(ctx, grad_out: Tensor):  # noqa: ANN001, ANN202
    x, flow = ctx.saved_tensors
    x_needs_grad, flow_needs_grad = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    grad_x, grad_flow = _flow_warp_backward(
        grad_out, x, flow, ctx.padding_mode, ctx.normalized, x_needs_grad, flow_needs_grad
    )
    return (grad_x if x_needs_grad else None), (grad_flow if flow_needs_grad else None), None, None


_flow_warp.register_autograd(_backward, setup_context=_setup_context)


def flow_warp(x: Tensor, flow: Tensor, *, padding_mode: str = "zeros", normalized: bool = False) -> Tensor:
    """Warp ``x`` by a dense flow with bilinear sampling.

    ``out[b, c, i, j]`` is ``x[b, c]`` sampled at row ``i + flow[b, 1, i, j]`` and column
    ``j + flow[b, 0, i, j]``. Equal to ``F.grid_sample(x, grid, align_corners=True)`` on the
    normalised grid for H, W > 1, in one fused kernel, and defined for H or W = 1 too.

    Args:
        x: (B, C, H, W) image or feature map; float32/float64 (CPU), float16/bfloat16/float32 (CUDA).
        flow: (B, 2, H, W) displacement, same dtype and device as ``x``; channel 0 horizontal, 1 vertical.
        padding_mode: "zeros" (outside reads 0), "border" (edge pixel replicated) or "reflection"
            (mirrored about the first and last pixel centres).
        normalized: ``flow`` is in [-1, 1] units (1 = half the image extent, (W - 1) / 2 pixels)
            rather than pixels, as flows predicted by Patraucean et al.'s model are.

    Returns:
        (B, C, H, W) warped tensor. A non-finite flow gives NaN at that pixel.

    Raises:
        ValueError: wrong rank or shape, unknown padding mode.
        TypeError: non-floating or mismatched dtypes.
        RuntimeError: tensors on different devices, or an explicitly chosen backend that cannot run.
    """
    op = "flow_warp"
    check_floating(op, "x", x, 4, "(B, C, H, W)")
    check_floating(op, "flow", flow, 4, "(B, 2, H, W)")
    batch, _, height, width = x.shape
    check_shape(op, "flow", flow, (batch, 2, height, width), "(B, 2, H, W)", f"to match x {tuple(x.shape)}")
    check_same(op, "flow", flow, "x", x)
    check_choice(op, "padding_mode", padding_mode, PADDING_MODES)
    return torch.ops.pyvidgen.flow_warp(x, flow, padding_mode, bool(normalized))
