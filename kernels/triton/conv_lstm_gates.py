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

# One fixed configuration (the interpreter cannot autotune): bandwidth bound and elementwise. The
# backward has about twice the live values per element; half its block keeps both kernels at a
# similar register count (ptxas for sm_90: 42 to 56 registers, no spills).
_BLOCK = 1024
_BLOCK_BWD = 512
_NUM_WARPS = 4


@triton.jit
def item_elements(chw, blocks_per_item, BLOCK: tl.constexpr):
    """This program's batch item and its block of elements in that item.

    Args:
        chw: elements per batch item, C * H * W (the launcher asserts ``chw + BLOCK < 2**31``).
        blocks_per_item: ``cdiv(chw, BLOCK)``; the grid has B * blocks_per_item programs (a flat
            grid: a second grid axis would cap the batch at 65535).

    Returns:
        ``b`` int64 batch index, ``q`` (BLOCK,) int32 offsets ``ch * H * W + pixel`` in the item
        and ``mask`` q < chw. Element (b, q) of a (B, C, H, W) tensor is at ``b * chw + q``.
    """
    pid = tl.program_id(0)
    b = (pid // blocks_per_item).to(tl.int64)
    q = (pid % blocks_per_item) * BLOCK + tl.arange(0, BLOCK)
    return b, q, q < chw


@triton.jit
def stable_sigmoid(x):
    """``1 / (1 + exp(-x))`` through ``exp(-|x|)``: no overflow for any x; NaN stays NaN."""
    e = tl.exp(-tl.abs(x))
    r = 1.0 / (1.0 + e)
    # NaN fails the comparison and takes e * r, which is NaN.
    return tl.where(x >= 0, r, e * r)


@triton.jit
def stable_tanh(x, USE_F64: tl.constexpr):
    """``tanh(x)`` through ``exp(-2|x|)``: +-1 for large |x| (and +-inf), NaN stays NaN.

    ``(1 - e) / (1 + e)`` loses the relative precision of small results to cancellation, so below
    0.15 (0.005 in float64) the Taylor polynomial to x^7 takes over: its truncation error there is
    below half an ulp of the compute dtype.
    """
    a = tl.abs(x)
    e = tl.exp(-2.0 * a)
    t = (1.0 - e) / (1.0 + e)
    if USE_F64:
        small = a < 0.005
    else:
        small = a < 0.15
    # Only small values enter the polynomial: no overflow in the discarded branch.
    s = tl.where(small, a, 0.0)
    s2 = s * s
    p = s * (1.0 + s2 * (-0.3333333333333333 + s2 * (0.13333333333333333 + s2 * -0.05396825396825397)))
    t = tl.where(small, p, t)
    return tl.where(x < 0, -t, t)


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
    # Gate block k of element (b, q) sits at (4b + k) * chw + q. Successive pointer steps of chw:
    # k * chw itself could overflow int32 where 4 * chw does not fit.
    gi_ptrs = gates_ptr + (b * 4 * chw + q)
    gf_ptrs = gi_ptrs + chw
    gg_ptrs = gf_ptrs + chw
    go_ptrs = gg_ptrs + chw
    gi = tl.load(gi_ptrs, mask=mask, other=0.0).to(cdt)
    gf = tl.load(gf_ptrs, mask=mask, other=0.0).to(cdt)
    gg = tl.load(gg_ptrs, mask=mask, other=0.0).to(cdt)
    go = tl.load(go_ptrs, mask=mask, other=0.0).to(cdt)
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
    gate_off = b * 4 * chw + q
    gi_ptrs = gates_ptr + gate_off
    gf_ptrs = gi_ptrs + chw
    gg_ptrs = gf_ptrs + chw
    go_ptrs = gg_ptrs + chw
    gi = tl.load(gi_ptrs, mask=mask, other=0.0).to(cdt)
    gf = tl.load(gf_ptrs, mask=mask, other=0.0).to(cdt)
    gg = tl.load(gg_ptrs, mask=mask, other=0.0).to(cdt)
    go = tl.load(go_ptrs, mask=mask, other=0.0).to(cdt)
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

    gty = grad_gates_ptr.dtype.element_ty
    dgi_ptrs = grad_gates_ptr + gate_off
    dgf_ptrs = dgi_ptrs + chw
    dgg_ptrs = dgf_ptrs + chw
    dgo_ptrs = dgg_ptrs + chw
    tl.store(dgi_ptrs, d_gi.to(gty), mask=mask)
    tl.store(dgf_ptrs, d_gf.to(gty), mask=mask)
    tl.store(dgg_ptrs, d_gg.to(gty), mask=mask)
    tl.store(dgo_ptrs, d_go.to(gty), mask=mask)
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
    assert c.dim() == 4 and gates.dim() == 4
    batch, channels, height, width = c.shape
    assert tuple(gates.shape) == (batch, 4 * channels, height, width)
    assert gates.is_contiguous() and c.is_contiguous()
    assert gates.dtype == c.dtype and gates.device == c.device
    if peephole is not None:
        assert tuple(peephole.shape) in ((3, channels, height, width), (3, channels, 1, 1))
        assert peephole.is_contiguous() and peephole.dtype == c.dtype and peephole.device == c.device
    # Offsets inside one batch item are int32 (see item_elements); the item's offset is int64.
    assert channels * height * width + block < 2**31


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
    )
    return h, c_next


def conv_lstm_gates_bwd(
    grad_h: Tensor, grad_c_next: Tensor, gates: Tensor, c: Tensor, peephole: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Gradients of :func:`conv_lstm_gates_fwd`, recomputing the activations.

    Deterministic: no atomics; the peephole gradient is reduced by torch from per-element terms.

    Args:
        grad_h: (B, C, H, W) contiguous gradient w.r.t. h.
        grad_c_next: (B, C, H, W) contiguous gradient w.r.t. c_next.
        gates: (B, 4C, H, W) contiguous, as in the forward.
        c: (B, C, H, W) contiguous, as in the forward.
        peephole: as in the forward, or None.

    Returns:
        (grad_gates (B, 4C, H, W), grad_c (B, C, H, W), grad_peephole shaped like ``peephole`` or
        None), all in ``c.dtype``.
    """
    _check(gates, c, peephole, _BLOCK_BWD)
    for grad in (grad_h, grad_c_next):
        assert grad.shape == c.shape and grad.is_contiguous() and grad.device == c.device
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
        )
    grad_peephole = None
    if partial is not None:
        # An empty batch sums to zeros, as in the reference.
        parts = partial.view(3, batch, channels, height * width)
        summed = parts.sum(dim=1) if per_pixel else parts.sum(dim=(1, 3))
        grad_peephole = summed.reshape(peephole.shape).to(peephole.dtype)
    return grad_gates, grad_c, grad_peephole
