"""Pieces shared by the elementwise Triton kernels (conv_lstm_gates, multiplicative_unit).

Tensors are (B, C, H, W) contiguous, with four-block inputs such as gate pre-activations laid out
(B, 4C, H, W): block k of element (b, q) sits at ``(4 b + k) * chw + q``.
"""

from __future__ import annotations

import triton
import triton.language as tl

INT32_LIMIT = 2**31


def require_index_range(op: str, what: str, value: int) -> None:
    """Raise unless ``value`` (a largest int32 offset, count or position a launch computes) fits an int32.

    The kernels keep per-item offsets in int32 (cheaper address arithmetic) and widen only the batch
    part to int64; a launch that would overflow is refused with the sizes, never run.
    """
    if value >= INT32_LIMIT:
        raise ValueError(f"{op}: the Triton kernels need {what} < 2^31, got {value}")


@triton.jit
def item_elements(chw, blocks_per_item, BLOCK: tl.constexpr):
    """This program's batch item and its block of elements in that item.

    Args:
        chw: elements per batch item, C * H * W (the launcher checks ``chw + BLOCK < 2**31``).
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
def load_blocks4(ptr, b, q, chw, mask, cdt: tl.constexpr):
    """The four channel blocks of a (B, 4C, H, W) tensor at elements (b, q), in ``cdt``.

    Pointer steps of ``chw`` keep ``k * chw`` out of int32 arithmetic.
    """
    p0 = ptr + (b * 4 * chw + q)
    p1 = p0 + chw
    p2 = p1 + chw
    p3 = p2 + chw
    v0 = tl.load(p0, mask=mask, other=0.0).to(cdt)
    v1 = tl.load(p1, mask=mask, other=0.0).to(cdt)
    v2 = tl.load(p2, mask=mask, other=0.0).to(cdt)
    v3 = tl.load(p3, mask=mask, other=0.0).to(cdt)
    return v0, v1, v2, v3


@triton.jit
def store_blocks4(ptr, b, q, chw, mask, v0, v1, v2, v3):
    """Store four values as the channel blocks of a (B, 4C, H, W) tensor at elements (b, q)."""
    ty = ptr.dtype.element_ty
    p0 = ptr + (b * 4 * chw + q)
    tl.store(p0, v0.to(ty), mask=mask)
    tl.store(p0 + chw, v1.to(ty), mask=mask)
    tl.store(p0 + chw + chw, v2.to(ty), mask=mask)
    tl.store(p0 + chw + chw + chw, v3.to(ty), mask=mask)
