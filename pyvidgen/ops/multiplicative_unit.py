"""``pyvidgen.ops.multiplicative_unit``: VPN's multiplicative unit, fused.

Registered as ``pyvidgen::multiplicative_unit`` and ``pyvidgen::multiplicative_unit_backward``;
the backward recomputes the activations. Semantics: :mod:`pyvidgen.kernels.reference.multiplicative_unit`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pyvidgen._backend import cpp_module, resolve
from pyvidgen.kernels.reference import multiplicative_unit as reference
from pyvidgen.ops._checks import check_floating, check_same, check_shape

OP = "multiplicative_unit"


@torch.library.custom_op("pyvidgen::multiplicative_unit", mutates_args=())
def _multiplicative_unit(pre: Tensor, h: Tensor) -> Tensor:
    pre, h = pre.contiguous(), h.contiguous()
    backend = resolve(OP, h.device, h.dtype, cpp_entry="multiplicative_unit_forward")
    if backend == "cpp":
        return cpp_module().multiplicative_unit_forward(pre, h)
    if backend == "triton":
        from pyvidgen.kernels.triton import multiplicative_unit as triton_kernels

        return triton_kernels.multiplicative_unit_fwd(pre, h)
    return reference.multiplicative_unit(pre, h)


@_multiplicative_unit.register_fake
def _(pre: Tensor, h: Tensor) -> Tensor:
    return torch.empty_like(h, memory_format=torch.contiguous_format)


@torch.library.custom_op("pyvidgen::multiplicative_unit_backward", mutates_args=())
def _multiplicative_unit_backward(grad_out: Tensor, pre: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    grad_out, pre, h = grad_out.contiguous(), pre.contiguous(), h.contiguous()
    backend = resolve(OP, h.device, h.dtype, cpp_entry="multiplicative_unit_backward")
    if backend == "cpp":
        return tuple(cpp_module().multiplicative_unit_backward(grad_out, pre, h))
    if backend == "triton":
        from pyvidgen.kernels.triton import multiplicative_unit as triton_kernels

        return triton_kernels.multiplicative_unit_bwd(grad_out, pre, h)
    return reference.multiplicative_unit_backward(grad_out, pre, h)


@_multiplicative_unit_backward.register_fake
def _(grad_out: Tensor, pre: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    return torch.empty_like(pre, memory_format=torch.contiguous_format), torch.empty_like(
        h, memory_format=torch.contiguous_format
    )


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_out: Tensor):  # noqa: ANN001, ANN202
    pre, h = ctx.saved_tensors
    return _multiplicative_unit_backward(grad_out, pre, h)


_multiplicative_unit.register_autograd(_backward, setup_context=_setup_context)


def multiplicative_unit(pre: Tensor, h: Tensor) -> Tensor:
    """Video Pixel Networks' multiplicative unit: ``σ(g1)·tanh(σ(g2)·h + σ(g3)·tanh(u))``.

    Args:
        pre: (B, 4C, H, W) pre-activations (four convolutions of h), blocks g1, g2, g3, u.
        h: (B, C, H, W) the unit's input; same dtype and device as ``pre``.

    Returns:
        (B, C, H, W); differentiable w.r.t. pre and h.

    Raises:
        ValueError: wrong rank or shapes. TypeError: non-floating or mismatched dtypes.
        RuntimeError: tensors on different devices, or an explicit backend that cannot run.
    """
    check_floating(OP, "pre", pre, 4, "(B, 4C, H, W)")
    check_floating(OP, "h", h, 4, "(B, C, H, W)")
    batch, channels, height, width = h.shape
    check_shape(OP, "pre", pre, (batch, 4 * channels, height, width), "(B, 4C, H, W)", f"to match h {tuple(h.shape)}")
    check_same(OP, "pre", pre, "h", h)
    return torch.ops.pyvidgen.multiplicative_unit(pre, h)
