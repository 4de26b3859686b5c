"""Triton ConvLSTM gate step (forward and closed-form backward).

Semantics are those of :mod:`pyvidgen.kernels.reference.conv_lstm_gates`: gate blocks i, f, g, o,
optional peepholes (3, C, H, W) or (3, C, 1, 1), and a backward that recomputes the activations
from the pre-activations.

The op is elementwise over the B * C * H * W cells. The grid is flat over (batch item, block of
``BLOCK`` of the item's C * H * W cells): each element reads its four gate pre-activations at the
same (channel, pixel) of the four channel blocks of its item, and since a block never straddles
two items, all its addresses are contiguous runs that the compiler can vectorise (a per-element
batch index would hide that, and cost an integer division per element). The activations are
written with ``tl.exp`` only (the interpreter has no libdevice) in forms that never overflow; the
helpers here (:func:`stable_sigmoid`, :func:`stable_tanh`, :func:`item_elements`) are shared with
the multiplicative unit's kernels.

The peephole gradient is a reduction over the batch (and over the pixels for (3, C, 1, 1)). It is
kept deterministic without atomics: the backward kernel writes each element's three contributions
to a (3, B, C, H, W) buffer (float32, float64 for float64 inputs) and torch sums it in the launcher.
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
# similar register count (ptxas for sm_90: 42 to 56 registers, no spills).
_BLOCK = 1024
_BLOCK_BWD = 512
_NUM_WARPS = 4


@triton.jit
def _peephole_ptrs(peephole_ptr, q, hw, C, chw, PER_PIXEL: tl.constexpr):
    """Pointers to w_ci for each element and the stride between the three weight blocks."""
    if PER_PIXEL:
        ptrs = peephole_ptr + q
        stride = chw
    else:
        ptrs = peephole_ptr + q // hw
        stride = C
    return ptrs, stride


@triton.jit
def _conv_lstm_gates_fwd_kernel(
    gates_ptr,
    c_ptr,
    peephole_ptr,
    h_ptr,
    c_next_ptr,
    chw,
    hw,
    C,
    blocks_per_item,
    HAS_PEEPHOLE: tl.constexpr,
    PEEPHOLE_PER_PIXEL: tl.constexpr,
    USE_F64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    if USE_F64:
        cdt = tl.float64
    else:
        cdt = tl.float32
    b, q, mask = item_elements(chw, blocks_per_item, BLOCK)
    idx = b * chw + q
    gi, gf, gg, go = load_blocks4(gates_ptr, b, q, chw, mask, cdt)
    c = tl.load(c_ptr + idx, mask=mask, other=0.0).to(cdt)
    if HAS_PEEPHOLE:
        w_ptrs, w_stride = _peephole_ptrs(peephole_ptr, q, hw, C, chw, PEEPHOLE_PER_PIXEL)
        w_ci = tl.load(w_ptrs, mask=mask, other=0.0).to(cdt)
        w_cf = tl.load(w_ptrs + w_stride, mask=mask, other=0.0).to(cdt)
        w_co = tl.load(w_ptrs + w_stride + w_stride, mask=mask, other=0.0).to(cdt)
        gi = gi + w_ci * c
        gf = gf + w_cf * c
    c_next = stable_sigmoid(gf) * c + stable_sigmoid(gi) * stable_tanh(gg, USE_F64)
    if HAS_PEEPHOLE:
        go = go + w_co * c_next
    h = stable_sigmoid(go) * stable_tanh(c_next, USE_F64)
    tl.store(h_ptr + idx, h.to(h_ptr.dtype.element_ty), mask=mask)
    tl.store(c_next_ptr + idx, c_next.to(c_next_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _conv_lstm_gates_bwd_kernel(
    grad_h_ptr,
    grad_c_next_ptr,
    gates_ptr,
    c_ptr,
    peephole_ptr,
    grad_gates_ptr,
    grad_c_ptr,
    partial_ptr,
    n,
    chw,
    hw,
    C,
    blocks_per_item,
    HAS_PEEPHOLE: tl.constexpr,
    PEEPHOLE_PER_PIXEL: tl.constexpr,
    USE_F64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    if USE_F64:
        cdt = tl.float64
    else:
        cdt = tl.float32
    b, q, mask = item_elements(chw, blocks_per_item, BLOCK)
    idx = b * chw + q
    gi, gf, gg, go = load_blocks4(gates_ptr, b, q, chw, mask, cdt)
    c = tl.load(c_ptr + idx, mask=mask, other=0.0).to(cdt)
    grad_h = tl.load(grad_h_ptr + idx, mask=mask, other=0.0).to(cdt)
    grad_c_next = tl.load(grad_c_next_ptr + idx, mask=mask, other=0.0).to(cdt)
    if HAS_PEEPHOLE:
        w_ptrs, w_stride = _peephole_ptrs(peephole_ptr, q, hw, C, chw, PEEPHOLE_PER_PIXEL)
        w_ci = tl.load(w_ptrs, mask=mask, other=0.0).to(cdt)
        w_cf = tl.load(w_ptrs + w_stride, mask=mask, other=0.0).to(cdt)
        w_co = tl.load(w_ptrs + w_stride + w_stride, mask=mask, other=0.0).to(cdt)
        gi = gi + w_ci * c
        gf = gf + w_cf * c

    # Recompute the forward, then the reference's closed form in the same order of operations.
    i = stable_sigmoid(gi)
    f = stable_sigmoid(gf)
    g = stable_tanh(gg, USE_F64)
    c_next = f * c + i * g
    if HAS_PEEPHOLE:
        go = go + w_co * c_next
    o = stable_sigmoid(go)
    tc = stable_tanh(c_next, USE_F64)

    d_go = grad_h * tc * o * (1.0 - o)
    d_c_next = grad_c_next + grad_h * o * (1.0 - tc * tc)
    if HAS_PEEPHOLE:
        d_c_next = d_c_next + d_go * w_co
    d_gi = d_c_next * g * i * (1.0 - i)
    d_gf = d_c_next * c * f * (1.0 - f)
    d_gg = d_c_next * i * (1.0 - g * g)
    grad_c = d_c_next * f
    if HAS_PEEPHOLE:
        grad_c = grad_c + d_gi * w_ci + d_gf * w_cf

    store_blocks4(grad_gates_ptr, b, q, chw, mask, d_gi, d_gf, d_gg, d_go)
    tl.store(grad_c_ptr + idx, grad_c.to(grad_c_ptr.dtype.element_ty), mask=mask)
    if HAS_PEEPHOLE:
        # (3, B, C, H, W) contributions: block k at k * n + idx.
        pi_ptrs = partial_ptr + idx
        pf_ptrs = pi_ptrs + n
        po_ptrs = pf_ptrs + n
        pty = partial_ptr.dtype.element_ty
        tl.store(pi_ptrs, (d_gi * c).to(pty), mask=mask)
        tl.store(pf_ptrs, (d_gf * c).to(pty), mask=mask)
        tl.store(po_ptrs, (d_go * c_next).to(pty), mask=mask)


def _check(gates: Tensor, c: Tensor, peephole: Tensor | None, block: int) -> None:
    batch, channels, height, width = c.shape
    peephole_shapes = ((3, channels, height, width), (3, channels, 1, 1))
    if tuple(gates.shape) != (batch, 4 * channels, height, width) or (
        peephole is not None and tuple(peephole.shape) not in peephole_shapes
    ):
        raise ValueError(f"conv_lstm_gates: shapes do not match c {tuple(c.shape)}")
    tensors = [t for t in (gates, c, peephole) if t is not None]
    if not all(t.is_contiguous() and t.dtype == c.dtype and t.device == c.device for t in tensors):
        raise ValueError("conv_lstm_gates: the Triton launchers take contiguous tensors of one dtype and device")
    # Offsets inside one batch item are int32 (see item_elements); the item's offset is int64.
    require_index_range("conv_lstm_gates", "C * H * W + BLOCK", channels * height * width + block)
    require_index_range("conv_lstm_gates", "the program count", batch * triton.cdiv(channels * height * width, block))


def _peephole_flags(peephole: Tensor | None) -> tuple[bool, bool]:
    """(HAS_PEEPHOLE, PEEPHOLE_PER_PIXEL); (3, C, 1, 1) is per channel, as in the reference."""
    if peephole is None:
        return False, False
    return True, tuple(peephole.shape[-2:]) != (1, 1)


def conv_lstm_gates_fwd(gates: Tensor, c: Tensor, peephole: Tensor | None) -> tuple[Tensor, Tensor]:
    """One ConvLSTM cell update from gate pre-activations.

    Args:
        gates: (B, 4C, H, W) contiguous pre-activations, blocks i, f, g, o; float16/bfloat16/float32/float64.
        c: (B, C, H, W) contiguous previous cell state, same dtype and device.
        peephole: None, or (3, C, H, W) or (3, C, 1, 1) contiguous weights (w_ci, w_cf, w_co), same
            dtype and device.

    Returns:
        (h, c_next), each (B, C, H, W) in ``c.dtype`` (computed in float32, float64 for float64).
    """
    _check(gates, c, peephole, _BLOCK)
    batch, channels, height, width = c.shape
    h = torch.empty_like(c)
    c_next = torch.empty_like(c)
    n = c.numel()
    if n == 0:
        return h, c_next
    has_peephole, per_pixel = _peephole_flags(peephole)
    chw = channels * height * width
    blocks_per_item = triton.cdiv(chw, _BLOCK)
    _conv_lstm_gates_fwd_kernel[(batch * blocks_per_item,)](
        gates,
        c,
        # An unused pointer argument still needs a valid tensor.
        peephole if peephole is not None else c,
        h,
        c_next,
        chw,
        height * width,
        channels,
        blocks_per_item,
        HAS_PEEPHOLE=has_peephole,
        PEEPHOLE_PER_PIXEL=per_pixel,
        USE_F64=c.dtype == torch.float64,
        BLOCK=_BLOCK,
        num_warps=_NUM_WARPS,
        enable_fp_fusion=True,
    )
    return h, c_next


def conv_lstm_gates_bwd(
    grad_h: Tensor,
    grad_c_next: Tensor,
    gates: Tensor,
    c: Tensor,
    peephole: Tensor | None,
    needs_grad: tuple[bool, bool, bool] = (True, True, True),
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Gradients of :func:`conv_lstm_gates_fwd`, recomputing the activations.

    Deterministic: no atomics; the peephole gradient is reduced by torch from per-element terms.

    Args:
        grad_h: (B, C, H, W) contiguous gradient w.r.t. h.
        grad_c_next: (B, C, H, W) contiguous gradient w.r.t. c_next.
        gates: (B, 4C, H, W) contiguous, as in the forward.
        c: (B, C, H, W) contiguous, as in the forward.
        peephole: as in the forward, or None.
        needs_grad: which of the three gradients are used; all come out of the one pass.

    Returns:
        (grad_gates (B, 4C, H, W), grad_c (B, C, H, W), grad_peephole shaped like ``peephole`` or
        None), all in ``c.dtype``.
    """
    _check(gates, c, peephole, _BLOCK_BWD)
    for grad in (grad_h, grad_c_next):
        if grad.shape != c.shape or not grad.is_contiguous() or grad.device != c.device:
            raise ValueError(f"conv_lstm_gates: output gradients must be contiguous like c {tuple(c.shape)}")
    batch, channels, height, width = c.shape
    grad_gates = torch.empty_like(gates)
    grad_c = torch.empty_like(c)
    n = c.numel()
    has_peephole, per_pixel = _peephole_flags(peephole)
    acc_dtype = torch.float64 if c.dtype == torch.float64 else torch.float32
    partial = torch.empty((3, n), dtype=acc_dtype, device=c.device) if has_peephole else None
    if n > 0:
        chw = channels * height * width
        blocks_per_item = triton.cdiv(chw, _BLOCK_BWD)
        _conv_lstm_gates_bwd_kernel[(batch * blocks_per_item,)](
            grad_h,
            grad_c_next,
            gates,
            c,
            peephole if peephole is not None else c,
            grad_gates,
            grad_c,
            partial if partial is not None else grad_c,
            n,
            chw,
            height * width,
            channels,
            blocks_per_item,
            HAS_PEEPHOLE=has_peephole,
            PEEPHOLE_PER_PIXEL=per_pixel,
            USE_F64=c.dtype == torch.float64,
            BLOCK=_BLOCK_BWD,
            num_warps=_NUM_WARPS,
            enable_fp_fusion=True,
        )
    grad_peephole = None
    if partial is not None:
        # An empty batch sums to zeros, as in the reference.
        parts = partial.view(3, batch, channels, height * width)
        summed = parts.sum(dim=1) if per_pixel else parts.sum(dim=(1, 3))
        grad_peephole = summed.reshape(peephole.shape).to(peephole.dtype)
    return grad_gates, grad_c, grad_peephole
