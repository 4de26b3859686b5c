"""Triton multiplicative unit of Video Pixel Networks (forward and closed-form backward).

Semantics are those of :mod:`pyvidgen.kernels.reference.multiplicative_unit`:
``out = σ(g1)·tanh(σ(g2)·h + σ(g3)·tanh(u))`` with ``(g1, g2, g3, u)`` the four channel blocks of
``pre``. Elementwise over the B * C * H * W cells of ``h``, with the grid (flat over batch item x
block of the item's cells) and the overflow-free activations of
:mod:`pyvidgen.kernels.triton.conv_lstm_gates`; the backward recomputes the activations and
involves no reduction, so it is deterministic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from pyvidgen.kernels.triton.elementwise import (
    item_elements,
    load_blocks4,
    require_index_range,
    stable_sigmoid,
    stable_tanh,
    store_blocks4,
)

# One fixed configuration (the interpreter cannot autotune): bandwidth bound and elementwise. The
# backward has about twice the live values per element; half its block keeps both kernels at a
# similar register count (ptxas for sm_90: 40 registers each, no spills).
_BLOCK = 1024
_BLOCK_BWD = 512
_NUM_WARPS = 4


@triton.jit
def _multiplicative_unit_fwd_kernel(
    pre_ptr,
    h_ptr,
    out_ptr,
    chw,
    blocks_per_item,
    USE_F64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    if USE_F64:
        cdt = tl.float64
    else:
        cdt = tl.float32
    b, q, mask = item_elements(chw, blocks_per_item, BLOCK)
    idx = b * chw + q
    g1, g2, g3, u = load_blocks4(pre_ptr, b, q, chw, mask, cdt)
    h = tl.load(h_ptr + idx, mask=mask, other=0.0).to(cdt)
    z = stable_sigmoid(g2) * h + stable_sigmoid(g3) * stable_tanh(u, USE_F64)
    out = stable_sigmoid(g1) * stable_tanh(z, USE_F64)
    tl.store(out_ptr + idx, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _multiplicative_unit_bwd_kernel(
    grad_out_ptr,
    pre_ptr,
    h_ptr,
    grad_pre_ptr,
    grad_h_ptr,
    chw,
    blocks_per_item,
    USE_F64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    if USE_F64:
        cdt = tl.float64
    else:
        cdt = tl.float32
    b, q, mask = item_elements(chw, blocks_per_item, BLOCK)
    idx = b * chw + q
    g1, g2, g3, u = load_blocks4(pre_ptr, b, q, chw, mask, cdt)
    h = tl.load(h_ptr + idx, mask=mask, other=0.0).to(cdt)
    grad_out = tl.load(grad_out_ptr + idx, mask=mask, other=0.0).to(cdt)

    # The reference's closed form, in its order of operations.
    s1 = stable_sigmoid(g1)
    s2 = stable_sigmoid(g2)
    s3 = stable_sigmoid(g3)
    tu = stable_tanh(u, USE_F64)
    tz = stable_tanh(s2 * h + s3 * tu, USE_F64)
    d_g1 = grad_out * tz * s1 * (1.0 - s1)
    d_z = grad_out * s1 * (1.0 - tz * tz)
    d_g2 = d_z * h * s2 * (1.0 - s2)
    d_g3 = d_z * tu * s3 * (1.0 - s3)
    d_u = d_z * s3 * (1.0 - tu * tu)

    store_blocks4(grad_pre_ptr, b, q, chw, mask, d_g1, d_g2, d_g3, d_u)
    tl.store(grad_h_ptr + idx, (d_z * s2).to(grad_h_ptr.dtype.element_ty), mask=mask)


def _check(pre: Tensor, h: Tensor, block: int) -> None:
    batch, channels, height, width = h.shape
    if tuple(pre.shape) != (batch, 4 * channels, height, width):
        raise ValueError(f"multiplicative_unit: pre {tuple(pre.shape)} does not match h {tuple(h.shape)}")
    if not (pre.is_contiguous() and h.is_contiguous() and pre.dtype == h.dtype and pre.device == h.device):
        raise ValueError("multiplicative_unit: the Triton launchers take contiguous tensors of one dtype and device")
    # Offsets inside one batch item are int32 (see item_elements); the item's offset is int64.
    require_index_range("multiplicative_unit", "C * H * W + BLOCK", channels * height * width + block)
    require_index_range(
        "multiplicative_unit", "the program count", batch * triton.cdiv(channels * height * width, block)
    )


def multiplicative_unit_fwd(pre: Tensor, h: Tensor) -> Tensor:
    """VPN's multiplicative unit.

    Args:
        pre: (B, 4C, H, W) contiguous pre-activations, blocks g1, g2, g3, u;
            float16/bfloat16/float32/float64.
        h: (B, C, H, W) contiguous, same dtype and device.

    Returns:
        (B, C, H, W) in ``h.dtype`` (computed in float32, float64 for float64).
    """
    _check(pre, h, _BLOCK)
    batch, channels, height, width = h.shape
    out = torch.empty_like(h)
    chw = channels * height * width
    if batch * chw > 0:
        blocks_per_item = triton.cdiv(chw, _BLOCK)
        _multiplicative_unit_fwd_kernel[(batch * blocks_per_item,)](
            pre,
            h,
            out,
            chw,
            blocks_per_item,
            USE_F64=h.dtype == torch.float64,
            BLOCK=_BLOCK,
            num_warps=_NUM_WARPS,
            enable_fp_fusion=True,
        )
    return out


def multiplicative_unit_bwd(
    grad_out: Tensor, pre: Tensor, h: Tensor, needs_grad: tuple[bool, bool] = (True, True)
) -> tuple[Tensor, Tensor]:
    """Gradients of :func:`multiplicative_unit_fwd`, recomputing the activations.

    Args:
        grad_out: (B, C, H, W) contiguous gradient w.r.t. the output.
        pre: (B, 4C, H, W) contiguous, as in the forward.
        h: (B, C, H, W) contiguous, as in the forward.
        needs_grad: which of the two gradients are used; both come out of the one pass.

    Returns:
        (grad_pre (B, 4C, H, W), grad_h (B, C, H, W)), in ``h.dtype``.
    """
    _check(pre, h, _BLOCK_BWD)
    if grad_out.shape != h.shape or not grad_out.is_contiguous() or grad_out.device != h.device:
        raise ValueError(f"multiplicative_unit: grad_out must be contiguous like h {tuple(h.shape)}")
    batch, channels, height, width = h.shape
    grad_pre = torch.empty_like(pre)
    grad_h = torch.empty_like(h)
    chw = channels * height * width
    if batch * chw > 0:
        blocks_per_item = triton.cdiv(chw, _BLOCK_BWD)
        _multiplicative_unit_bwd_kernel[(batch * blocks_per_item,)](
            grad_out,
            pre,
            h,
            grad_pre,
            grad_h,
            chw,
            blocks_per_item,
            USE_F64=h.dtype == torch.float64,
            BLOCK=_BLOCK_BWD,
            num_warps=_NUM_WARPS,
            enable_fp_fusion=True,
        )
    return grad_pre, grad_h
