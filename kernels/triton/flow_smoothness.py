"""Triton Huber smoothness penalty on a flow field and its gradient.

Semantics are those of :mod:`pyvidgen.kernels.reference.flow_smoothness`. The (B, C) planes are
independent, so the grid is flat over (plane, block of ``BLOCK`` pixels); each pixel reads its
right/down neighbours (forward) or all four neighbours (backward) straight from memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from pyvidgen.kernels.triton.elementwise import require_index_range

# One fixed configuration (the interpreter cannot autotune); a purely elementwise, bandwidth-bound
# pattern, so a large block keeps the number of partial sums small.
_BLOCK = 1024
_NUM_WARPS = 4


@triton.jit
def _huber(d, delta):
    a = tl.abs(d)
    # A NaN difference takes the second branch and stays NaN, as in the reference.
    return tl.where(a <= delta, 0.5 * d * d, delta * (a - 0.5 * delta))


@triton.jit
def _clamp(d, delta):
    # Comparisons rather than tl.minimum/maximum: those may drop NaN on GPUs; torch.clamp keeps it.
    return tl.where(d < -delta, -delta, tl.where(d > delta, delta, d))


@triton.jit
def _flow_smoothness_fwd_kernel(
    flow_ptr,
    partial_ptr,
    H,
    W,
    blocks_per_plane,
    delta_ptr,
    USE_F64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    if USE_F64:
        cdt = tl.float64
    else:
        cdt = tl.float32
    pid = tl.program_id(0)
    plane = (pid // blocks_per_plane).to(tl.int64)
    blk = pid % blocks_per_plane
    hw = H * W
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    pmask = offs < hw
    row = offs // W
    col = offs - row * W
    base = flow_ptr + plane * hw
    dlt = tl.load(delta_ptr).to(cdt)

    f = tl.load(base + offs, mask=pmask, other=0.0).to(cdt)
    has_right = pmask & (col < W - 1)
    has_down = pmask & (row < H - 1)
    f_right = tl.load(base + offs + 1, mask=has_right, other=0.0).to(cdt)
    f_down = tl.load(base + offs + W, mask=has_down, other=0.0).to(cdt)
    hx = tl.where(has_right, _huber(f_right - f, dlt), 0.0)
    hy = tl.where(has_down, _huber(f_down - f, dlt), 0.0)
    total = tl.sum(hx, axis=0) + tl.sum(hy, axis=0)
    tl.store(partial_ptr + pid, total)


@triton.jit
def _flow_smoothness_bwd_kernel(
    grad_ptr,
    flow_ptr,
    out_ptr,
    H,
    W,
    blocks_per_plane,
    delta_ptr,
    USE_F64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    if USE_F64:
        cdt = tl.float64
    else:
        cdt = tl.float32
    pid = tl.program_id(0)
    plane = (pid // blocks_per_plane).to(tl.int64)
    blk = pid % blocks_per_plane
    hw = H * W
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    pmask = offs < hw
    row = offs // W
    col = offs - row * W
    base = flow_ptr + plane * hw
    dlt = tl.load(delta_ptr).to(cdt)
    # Read on the device: no host sync on the upstream gradient.
    grad = tl.load(grad_ptr).to(cdt)

    f = tl.load(base + offs, mask=pmask, other=0.0).to(cdt)
    has_left = pmask & (col > 0)
    has_right = pmask & (col < W - 1)
    has_up = pmask & (row > 0)
    has_down = pmask & (row < H - 1)
    f_left = tl.load(base + offs - 1, mask=has_left, other=0.0).to(cdt)
    f_right = tl.load(base + offs + 1, mask=has_right, other=0.0).to(cdt)
    f_up = tl.load(base + offs - W, mask=has_up, other=0.0).to(cdt)
    f_down = tl.load(base + offs + W, mask=has_down, other=0.0).to(cdt)
    g_left = tl.where(has_left, _clamp(f - f_left, dlt), 0.0)
    g_right = tl.where(has_right, _clamp(f_right - f, dlt), 0.0)
    g_up = tl.where(has_up, _clamp(f - f_up, dlt), 0.0)
    g_down = tl.where(has_down, _clamp(f_down - f, dlt), 0.0)
    # Same summation order as the reference's four in-place updates.
    res = grad * (((g_left - g_right) + g_up) - g_down)
    tl.store(out_ptr + plane * hw + offs, res.to(out_ptr.dtype.element_ty), mask=pmask)


def _check(flow: Tensor) -> int:
    """The launch's program count; raises where an int32 offset could overflow."""
    if flow.dim() != 4 or not flow.is_contiguous():
        raise ValueError(
            f"flow_smoothness: the Triton launchers take a contiguous (B, C, H, W) flow, got {tuple(flow.shape)}"
        )
    batch, channels, height, width = flow.shape
    # Offsets inside one plane are int32 (a neighbour sits up to W + 1 past the block); the plane part is int64.
    require_index_range("flow_smoothness", "H * W + W + BLOCK", height * width + width + _BLOCK)
    programs = batch * channels * triton.cdiv(height * width, _BLOCK)
    require_index_range("flow_smoothness", "the program count", programs)
    return programs


def _delta_tensor(delta: float, flow: Tensor) -> Tensor:
    """``delta`` as a one-element tensor in the compute dtype.

    A Python float kernel argument is fp32 (and the interpreter types it as an fp32 constant), which
    would round delta for float64 flows; a fill kernel also avoids a host-to-device copy.
    """
    dtype = torch.float64 if flow.dtype == torch.float64 else torch.float32
    return torch.full((1,), float(delta), dtype=dtype, device=flow.device)


def flow_smoothness_fwd(flow: Tensor, delta: float) -> Tensor:
    """Huber penalty on the forward differences of ``flow``, summed over everything.

    Deterministic: every program writes one partial sum (float32, float64 for float64 flows), and
    torch reduces the partial sums in a fixed order.

    Args:
        flow: (B, C, H, W) contiguous, float16/bfloat16/float32/float64.
        delta: Huber threshold, > 0.

    Returns:
        0-dim tensor: float64 for float64 flows, else float32 (a half-precision sum would overflow).
    """
    n_programs = _check(flow)
    batch, channels, height, width = flow.shape
    acc_dtype = torch.float64 if flow.dtype == torch.float64 else torch.float32
    blocks_per_plane = triton.cdiv(height * width, _BLOCK)
    partial = torch.empty(n_programs, dtype=acc_dtype, device=flow.device)
    if n_programs > 0:
        _flow_smoothness_fwd_kernel[(n_programs,)](
            flow,
            partial,
            height,
            width,
            blocks_per_plane,
            _delta_tensor(delta, flow),
            USE_F64=flow.dtype == torch.float64,
            BLOCK=_BLOCK,
            num_warps=_NUM_WARPS,
            enable_fp_fusion=True,
        )
    return partial.sum()


def flow_smoothness_bwd(
    grad: Tensor, flow: Tensor, delta: float, needs_grad: tuple[bool] = (True,)
) -> tuple[Tensor | None]:
    """Gradient of :func:`flow_smoothness_fwd` scaled by the upstream gradient.

    Args:
        grad: 0-dim (or one-element) upstream gradient of the scalar penalty, on ``flow.device``.
        flow: (B, C, H, W) contiguous.
        delta: Huber threshold, > 0.
        needs_grad: (whether grad_flow is needed,).

    Returns:
        (grad_flow,): (B, C, H, W) in ``flow.dtype``, ``grad * (clamp(d_left) - clamp(d_right) + clamp(d_up) -
        clamp(d_down))`` with ``d`` the forward differences ending/starting at each pixel and ``clamp`` to
        ``[-delta, delta]``; None when not needed.
    """
    n_programs = _check(flow)
    if grad.numel() != 1 or grad.device != flow.device:
        raise ValueError(f"flow_smoothness: grad must be one element on {flow.device}, got {tuple(grad.shape)}")
    if not needs_grad[0]:
        return (None,)
    batch, channels, height, width = flow.shape
    out = torch.empty_like(flow)
    blocks_per_plane = triton.cdiv(height * width, _BLOCK)
    if n_programs > 0:
        _flow_smoothness_bwd_kernel[(n_programs,)](
            grad.contiguous(),
            flow,
            out,
            height,
            width,
            blocks_per_plane,
            _delta_tensor(delta, flow),
            USE_F64=flow.dtype == torch.float64,
            BLOCK=_BLOCK,
            num_warps=_NUM_WARPS,
            enable_fp_fusion=True,
        )
    return (out,)
