"""Triton bilinear flow warping (forward and closed-form backward).

Semantics are those of :mod:`pyvidgen.kernels.reference.flow_warp`: same position folding, tap
extension per padding mode, NaN output for non-finite source positions, and the flow derivative
taken from the right at integer positions.

Each program owns one batch item and a block of ``BLOCK`` output pixels. The geometry of a pixel
(source position, folded taps, weights) does not depend on the channel, so it is computed once
and then reused while the program walks over the channels in tiles of ``BLOCK_C``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from pyvidgen.kernels.reference.flow_warp import PADDING_MODES
from pyvidgen.kernels.triton.elementwise import require_index_range

# One fixed configuration: the interpreter cannot autotune, and the op is bandwidth bound, so a
# 128-pixel block with a channel tile small enough to keep the four tap tiles in registers is fine.
_BLOCK = 128
_BLOCK_C_FWD = 16
# The backward keeps the gradient tile and four tap tiles live at once: half the channel tile.
_BLOCK_C_BWD = 8
_NUM_WARPS = 4


@triton.jit
def _fold(p, size, MODE: tl.constexpr, USE_F64: tl.constexpr):
    """Equivalent position whose taps are small integers (see the reference ``_fold_position``).

    The kernels are compiled without FP fusion: ``p - period * floor(q)`` as one FMA would round
    differently from the reference, and land on another tap where floor jumps.
    """
    if MODE == 2:
        period = 2 * (size - 1)
        if USE_F64:
            q = p / period
        else:
            # Plain fp32 `/` may lower to an approximate division on GPUs; the reference rounds exactly.
            q = tl.math.div_rn(p, period * 1.0)
        p = p - period * tl.floor(q)
        # Off by whole rounding steps where the dtype cannot resolve a period at |p|: keep taps in the image.
        p = tl.minimum(tl.maximum(p, -1.0), period + 1.0)
    else:
        p = tl.minimum(tl.maximum(p, -2.0), size + 1.0)
    return p


@triton.jit
def _tap_index(k, size, MODE: tl.constexpr):
    """In-image index of integer tap ``k``: clamped (zeros, border) or reflected (reflection)."""
    if MODE == 2:
        period = 2 * (size - 1)
        m = k % period
        # Triton's `%` truncates like C (torch.remainder floors): bring negative taps into [0, period).
        m = tl.where(m < 0, m + period, m)
        k = tl.where(m < size, m, period - m)
    else:
        k = tl.minimum(tl.maximum(k, 0), size - 1)
    return k


@triton.jit
def _tap_valid(k, size, live, MODE: tl.constexpr):
    """Whether tap ``k`` reads the image: only ``zeros`` padding has taps that read 0."""
    if MODE == 0:
        live = live & (k >= 0) & (k < size)
    return live


@triton.jit
def _pixel_geometry(
    flow_ptr,
    b,
    offs,
    pmask,
    H,
    W,
    MODE_X: tl.constexpr,
    MODE_Y: tl.constexpr,
    NORMALIZED: tl.constexpr,
    USE_F64: tl.constexpr,
):
    """Per-pixel sampling geometry, shared by every channel.

    Returns ``finite`` (BLOCK,), then row vectors (1, BLOCK): the weights wx0, wx1, wy0, wy1, the
    in-plane tap indices i00, i01, i10, i11 and their masks m00, m01, m10, m11 (tap ``ab`` sits at
    row y0 + a, column x0 + b; a False mask means "reads 0" or "not a live pixel").
    """
    if USE_F64:
        cdt = tl.float64
    else:
        cdt = tl.float32
    hw = H * W
    row = offs // W
    col = offs - row * W
    flow_base = flow_ptr + b * 2 * hw
    u = tl.load(flow_base + offs, mask=pmask, other=0.0).to(cdt)
    v = tl.load(flow_base + hw + offs, mask=pmask, other=0.0).to(cdt)
    if NORMALIZED:
        # No `.to()` on W or H: Triton turns an int argument equal to 1 into a constexpr. The
        # half-integer factor is exact in fp32 and promotes to fp64 with u.
        u = u * ((W - 1) * 0.5)
        v = v * ((H - 1) * 0.5)
    px = col.to(cdt) + u
    py = row.to(cdt) + v
    # abs(NaN) < inf is False as well, so this single comparison rejects NaN and +-inf.
    finite = (tl.abs(px) < float("inf")) & (tl.abs(py) < float("inf"))
    px = _fold(tl.where(finite, px, 0.0), W, MODE_X, USE_F64)
    py = _fold(tl.where(finite, py, 0.0), H, MODE_Y, USE_F64)
    x0f = tl.floor(px)
    y0f = tl.floor(py)
    wx1 = px - x0f
    wy1 = py - y0f
    wx0 = 1.0 - wx1
    wy0 = 1.0 - wy1
    x0 = x0f.to(tl.int32)
    y0 = y0f.to(tl.int32)
    live = pmask & finite
    vx0 = _tap_valid(x0, W, live, MODE_X)
    vx1 = _tap_valid(x0 + 1, W, live, MODE_X)
    vy0 = _tap_valid(y0, H, live, MODE_Y)
    vy1 = _tap_valid(y0 + 1, H, live, MODE_Y)
    ix0 = _tap_index(x0, W, MODE_X)
    ix1 = _tap_index(x0 + 1, W, MODE_X)
    iy0 = _tap_index(y0, H, MODE_Y) * W
    iy1 = _tap_index(y0 + 1, H, MODE_Y) * W
    return (
        finite,
        wx0[None, :],
        wx1[None, :],
        wy0[None, :],
        wy1[None, :],
        (iy0 + ix0)[None, :],
        (iy0 + ix1)[None, :],
        (iy1 + ix0)[None, :],
        (iy1 + ix1)[None, :],
        (vy0 & vx0)[None, :],
        (vy0 & vx1)[None, :],
        (vy1 & vx0)[None, :],
        (vy1 & vx1)[None, :],
    )


@triton.jit
def _program_pixels(blocks_per_image, hw, BLOCK: tl.constexpr):
    """This program's batch index (int64), pixel offsets in the plane and their mask.

    A flat grid: the batch would be capped at 65535 on the second grid axis.
    """
    pid = tl.program_id(0)
    b = (pid // blocks_per_image).to(tl.int64)
    offs = (pid % blocks_per_image) * BLOCK + tl.arange(0, BLOCK)
    return b, offs, offs < hw


@triton.jit
def _flow_warp_fwd_kernel(
    x_ptr,
    flow_ptr,
    out_ptr,
    C,
    H,
    W,
    blocks_per_image,
    MODE_X: tl.constexpr,
    MODE_Y: tl.constexpr,
    NORMALIZED: tl.constexpr,
    USE_F64: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    if USE_F64:
        cdt = tl.float64
    else:
        cdt = tl.float32
    b, offs, pmask = _program_pixels(blocks_per_image, H * W, BLOCK)
    hw = H * W
    finite, wx0, wx1, wy0, wy1, i00, i01, i10, i11, m00, m01, m10, m11 = _pixel_geometry(
        flow_ptr, b, offs, pmask, H, W, MODE_X, MODE_Y, NORMALIZED, USE_F64
    )

    batch_off = b * C * hw
    for c0 in tl.range(0, C, BLOCK_C):
        ch = c0 + tl.arange(0, BLOCK_C)
        cmask = (ch < C)[:, None]
        plane = batch_off + ch.to(tl.int64)[:, None] * hw
        v00 = tl.load(x_ptr + plane + i00, mask=cmask & m00, other=0.0).to(cdt)
        v01 = tl.load(x_ptr + plane + i01, mask=cmask & m01, other=0.0).to(cdt)
        v10 = tl.load(x_ptr + plane + i10, mask=cmask & m10, other=0.0).to(cdt)
        v11 = tl.load(x_ptr + plane + i11, mask=cmask & m11, other=0.0).to(cdt)
        out = wy0 * (wx0 * v00 + wx1 * v01) + wy1 * (wx0 * v10 + wx1 * v11)
        out = tl.where(finite[None, :], out, float("nan"))
        tl.store(
            out_ptr + plane + offs[None, :],
            out.to(out_ptr.dtype.element_ty),
            mask=cmask & pmask[None, :],
        )


@triton.jit
def _flow_warp_bwd_kernel(
    grad_out_ptr,
    x_ptr,
    flow_ptr,
    grad_x_ptr,
    grad_flow_ptr,
    C,
    H,
    W,
    blocks_per_image,
    MODE_X: tl.constexpr,
    MODE_Y: tl.constexpr,
    NORMALIZED: tl.constexpr,
    USE_F64: tl.constexpr,
    NEEDS_X_GRAD: tl.constexpr,
    NEEDS_FLOW_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # grad_x is scattered with atomics, so its summation order (and its last bits) is not
    # deterministic; the ops layer routes deterministic mode elsewhere. grad_flow is a per-pixel
    # reduction over channels done inside one program, hence deterministic.
    if USE_F64:
        cdt = tl.float64
    else:
        cdt = tl.float32
    b, offs, pmask = _program_pixels(blocks_per_image, H * W, BLOCK)
    hw = H * W
    finite, wx0, wx1, wy0, wy1, i00, i01, i10, i11, m00, m01, m10, m11 = _pixel_geometry(
        flow_ptr, b, offs, pmask, H, W, MODE_X, MODE_Y, NORMALIZED, USE_F64
    )
    w00 = wy0 * wx0
    w01 = wy0 * wx1
    w10 = wy1 * wx0
    w11 = wy1 * wx1

    acc_px = tl.zeros([BLOCK], dtype=cdt)
    acc_py = tl.zeros([BLOCK], dtype=cdt)
    batch_off = b * C * hw
    for c0 in tl.range(0, C, BLOCK_C):
        ch = c0 + tl.arange(0, BLOCK_C)
        cmask = (ch < C)[:, None]
        plane = batch_off + ch.to(tl.int64)[:, None] * hw
        g = tl.load(grad_out_ptr + plane + offs[None, :], mask=cmask & pmask[None, :], other=0.0).to(cdt)
        if NEEDS_X_GRAD:
            tl.atomic_add(grad_x_ptr + plane + i00, w00 * g, mask=cmask & m00, sem="relaxed")
            tl.atomic_add(grad_x_ptr + plane + i01, w01 * g, mask=cmask & m01, sem="relaxed")
            tl.atomic_add(grad_x_ptr + plane + i10, w10 * g, mask=cmask & m10, sem="relaxed")
            tl.atomic_add(grad_x_ptr + plane + i11, w11 * g, mask=cmask & m11, sem="relaxed")
        if NEEDS_FLOW_GRAD:
            v00 = tl.load(x_ptr + plane + i00, mask=cmask & m00, other=0.0).to(cdt)
            v01 = tl.load(x_ptr + plane + i01, mask=cmask & m01, other=0.0).to(cdt)
            v10 = tl.load(x_ptr + plane + i10, mask=cmask & m10, other=0.0).to(cdt)
            v11 = tl.load(x_ptr + plane + i11, mask=cmask & m11, other=0.0).to(cdt)
            d_px = wy0 * (v01 - v00) + wy1 * (v11 - v10)
            d_py = wx0 * (v10 - v00) + wx1 * (v11 - v01)
            acc_px += tl.sum(g * d_px, axis=0)
            acc_py += tl.sum(g * d_py, axis=0)

    if NEEDS_FLOW_GRAD:
        # A non-finite gradient at a NaN pixel must not leak: the reference gives exactly 0 there.
        acc_px = tl.where(finite, acc_px, 0.0)
        acc_py = tl.where(finite, acc_py, 0.0)
        if NORMALIZED:
            acc_px = acc_px * ((W - 1) * 0.5)
            acc_py = acc_py * ((H - 1) * 0.5)
        gf_base = grad_flow_ptr + b * 2 * hw
        gf_ty = grad_flow_ptr.dtype.element_ty
        tl.store(gf_base + offs, acc_px.to(gf_ty), mask=pmask)
        tl.store(gf_base + hw + offs, acc_py.to(gf_ty), mask=pmask)


def _axis_modes(padding_mode: str, height: int, width: int) -> tuple[int, int]:
    """Padding code (index in PADDING_MODES) per axis (x, y); reflection of a size-1 axis is the border extension."""
    mode = PADDING_MODES.index(padding_mode)
    mode_x = 1 if mode == 2 and width == 1 else mode
    mode_y = 1 if mode == 2 and height == 1 else mode
    return mode_x, mode_y


def _check(x: Tensor, flow: Tensor) -> int:
    """The launch's program count; raises where an int32 offset could overflow."""
    if x.dim() != 4 or flow.shape != (x.shape[0], 2, *x.shape[2:]):
        raise ValueError(
            f"flow_warp: expected x (B, C, H, W) and flow (B, 2, H, W), got {tuple(x.shape)}, {tuple(flow.shape)}"
        )
    if not (x.is_contiguous() and flow.is_contiguous() and x.dtype == flow.dtype and x.device == flow.device):
        raise ValueError("flow_warp: the Triton launchers take contiguous tensors of one dtype and device")
    height, width = x.shape[2:]
    # Offsets inside one plane, tap indices and clamped positions (up to size + 1, or a reflection period
    # 2 (size - 1)) are int32; the batch/channel part of an address is int64.
    require_index_range("flow_warp", "H * W", height * width + _BLOCK)
    require_index_range("flow_warp", "2 * max(H, W)", 2 * max(height, width) + 2)
    programs = x.shape[0] * triton.cdiv(height * width, _BLOCK)
    require_index_range("flow_warp", "the program count B * cdiv(H * W, 128)", programs)
    return programs


def flow_warp_fwd(x: Tensor, flow: Tensor, padding_mode: str, normalized: bool) -> Tensor:
    """Warp ``x`` by ``flow`` with bilinear sampling.

    Args:
        x: (B, C, H, W) contiguous, float16/bfloat16/float32/float64.
        flow: (B, 2, H, W) contiguous, same dtype and device as ``x``; channel 0 horizontal.
        padding_mode: "zeros", "border" or "reflection".
        normalized: flow given in [-1, 1] units of the image extent instead of pixels.

    Returns:
        (B, C, H, W) in ``x.dtype``; NaN in every channel of a pixel whose source position is not finite.
    """
    programs = _check(x, flow)
    batch, channels, height, width = x.shape
    out = torch.empty_like(x)
    if out.numel() == 0:
        return out
    mode_x, mode_y = _axis_modes(padding_mode, height, width)
    blocks_per_image = triton.cdiv(height * width, _BLOCK)
    _flow_warp_fwd_kernel[(programs,)](
        x,
        flow,
        out,
        channels,
        height,
        width,
        blocks_per_image,
        MODE_X=mode_x,
        MODE_Y=mode_y,
        NORMALIZED=bool(normalized),
        USE_F64=x.dtype == torch.float64,
        BLOCK=_BLOCK,
        BLOCK_C=_BLOCK_C_FWD,
        num_warps=_NUM_WARPS,
        enable_fp_fusion=False,
    )
    return out


def flow_warp_bwd(
    grad_out: Tensor,
    x: Tensor,
    flow: Tensor,
    padding_mode: str,
    normalized: bool,
    needs_grad: tuple[bool, bool],
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of :func:`flow_warp_fwd`.

    ``grad_x`` is accumulated with atomics (float32, or float64 for float64 inputs), so it is not
    bitwise deterministic; ``grad_flow`` is.

    Args:
        grad_out: (B, C, H, W) contiguous gradient of the loss w.r.t. the warped output.
        x: (B, C, H, W) contiguous, the warped input.
        flow: (B, 2, H, W) contiguous, same dtype and device as ``x``.
        padding_mode: "zeros", "border" or "reflection".
        normalized: as in :func:`flow_warp_fwd`.
        needs_grad: (compute ``grad_x``, compute ``grad_flow``).

    Returns:
        (grad_x (B, C, H, W) in ``x.dtype`` or None, grad_flow (B, 2, H, W) in ``flow.dtype`` or None).
    """
    programs = _check(x, flow)
    if grad_out.shape != x.shape or not grad_out.is_contiguous() or grad_out.device != x.device:
        raise ValueError(f"flow_warp: grad_out must be contiguous like x {tuple(x.shape)}, got {tuple(grad_out.shape)}")
    needs_x_grad, needs_flow_grad = needs_grad
    batch, channels, height, width = x.shape
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    grad_x = torch.zeros(x.shape, dtype=acc_dtype, device=x.device) if needs_x_grad else None
    grad_flow = torch.empty_like(flow) if needs_flow_grad else None
    if (needs_x_grad or needs_flow_grad) and batch * height * width > 0:
        mode_x, mode_y = _axis_modes(padding_mode, height, width)
        blocks_per_image = triton.cdiv(height * width, _BLOCK)
        _flow_warp_bwd_kernel[(programs,)](
            grad_out,
            x,
            flow,
            # Unused pointers (gradient not requested) still need a valid tensor argument.
            grad_x if grad_x is not None else x,
            grad_flow if grad_flow is not None else flow,
            channels,
            height,
            width,
            blocks_per_image,
            MODE_X=mode_x,
            MODE_Y=mode_y,
            NORMALIZED=bool(normalized),
            USE_F64=x.dtype == torch.float64,
            NEEDS_X_GRAD=bool(needs_x_grad),
            NEEDS_FLOW_GRAD=bool(needs_flow_grad),
            BLOCK=_BLOCK,
            BLOCK_C=_BLOCK_C_BWD,
            num_warps=_NUM_WARPS,
            enable_fp_fusion=False,
        )
    if grad_x is not None:
        grad_x = grad_x.to(x.dtype)
    return grad_x, grad_flow
