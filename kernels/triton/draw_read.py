"""Triton DRAW read attention: ``gamma * Fy x Fx^T`` per channel, and its backward.

Semantics are those of :mod:`pyvidgen.kernels.reference.draw_read`, whose intermediates the kernels
form in the same order (``U = Fy x`` then ``U Fx^T``; ``M = G Fx``), so that non-finite inputs give the
reference's NaN and infinity pattern. The filterbanks Fx (N x W) and Fy (N x H) are built in registers
(:mod:`.draw_filterbank`), never in global memory, and both contractions run in the same program.

* forward: one program per (sample, channel) plane, a flat grid over B * C;
* backward: one program per sample, looping over its channels: it stores each channel's image
  gradient ``gamma Fy^T M`` and sums the filterbanks' gradients ``G^T U`` and ``M x^T`` and gamma's
  ``M * U`` over the channels in registers, then turns them into the five parameter gradients. Each
  parameter gradient is written by one program in a fixed order: no atomics, deterministic.

Products accumulate in float32 (float64 for float64 inputs); half inputs are upcast after each load.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from pyvidgen.kernels.triton.draw_filterbank import (
    check_params,
    check_sizes,
    filterbank,
    filterbank_param_grads,
    mask2,
    num_warps,
    tile,
)

_OP = "draw_read"


@triton.jit
def _draw_read_fwd_kernel(
    x_ptr,
    gx_ptr,
    gy_ptr,
    delta_ptr,
    sigma2_ptr,
    gamma_ptr,
    out_ptr,
    C,
    H,
    W,
    N,
    USE_F64: tl.constexpr,
    N_P: tl.constexpr,
    H_P: tl.constexpr,
    W_P: tl.constexpr,
):
    if USE_F64:
        cdt = tl.float64
    else:
        cdt = tl.float32
    plane = tl.program_id(0).to(tl.int64)
    b = plane // C
    gx = tl.load(gx_ptr + b).to(cdt)
    gy = tl.load(gy_ptr + b).to(cdt)
    delta = tl.load(delta_ptr + b).to(cdt)
    sigma2 = tl.load(sigma2_ptr + b).to(cdt)
    gamma = tl.load(gamma_ptr + b).to(cdt)

    k = tl.arange(0, N_P)
    k_ok = k < N
    rows = tl.arange(0, H_P)
    rows_ok = rows < H
    cols = tl.arange(0, W_P)
    cols_ok = cols < W
    fx, _, _, _ = filterbank(gx, delta, sigma2, N, k, k_ok, cols, cols_ok, cdt)
    fy, _, _, _ = filterbank(gy, delta, sigma2, N, k, k_ok, rows, rows_ok, cdt)

    x_offsets = rows[:, None] * W + cols[None, :]
    x = tl.load(x_ptr + plane * H * W + x_offsets, mask=rows_ok[:, None] & cols_ok[None, :], other=0.0).to(cdt)
    # (Fy x) Fx^T: padded filter rows times an infinite pixel are NaN, zeroed before the next product.
    fy_x = mask2(tl.dot(fy, x, input_precision="ieee", out_dtype=cdt), k_ok, cols_ok)
    glimpse = tl.dot(fy_x, tl.trans(fx), input_precision="ieee", out_dtype=cdt)
    out = gamma * glimpse

    out_offsets = k[:, None] * N + k[None, :]
    tl.store(
        out_ptr + plane * N * N + out_offsets, out.to(out_ptr.dtype.element_ty), mask=k_ok[:, None] & k_ok[None, :]
    )


@triton.jit
def _draw_read_bwd_kernel(
    grad_ptr,
    x_ptr,
    gx_ptr,
    gy_ptr,
    delta_ptr,
    sigma2_ptr,
    gamma_ptr,
    grad_x_ptr,
    grad_gx_ptr,
    grad_gy_ptr,
    grad_delta_ptr,
    grad_sigma2_ptr,
    grad_gamma_ptr,
    C,
    H,
    W,
    N,
    USE_F64: tl.constexpr,
    N_P: tl.constexpr,
    H_P: tl.constexpr,
    W_P: tl.constexpr,
):
    if USE_F64:
        cdt = tl.float64
    else:
        cdt = tl.float32
    b = tl.program_id(0).to(tl.int64)
    gx = tl.load(gx_ptr + b).to(cdt)
    gy = tl.load(gy_ptr + b).to(cdt)
    delta = tl.load(delta_ptr + b).to(cdt)
    sigma2 = tl.load(sigma2_ptr + b).to(cdt)
    gamma = tl.load(gamma_ptr + b).to(cdt)

    k = tl.arange(0, N_P)
    k_ok = k < N
    rows = tl.arange(0, H_P)
    rows_ok = rows < H
    cols = tl.arange(0, W_P)
    cols_ok = cols < W
    fx, dx, sx, off = filterbank(gx, delta, sigma2, N, k, k_ok, cols, cols_ok, cdt)
    fy, dy, sy, _ = filterbank(gy, delta, sigma2, N, k, k_ok, rows, rows_ok, cdt)

    plane_ok = rows_ok[:, None] & cols_ok[None, :]
    x_offsets = rows[:, None] * W + cols[None, :]
    g_offsets = k[:, None] * N + k[None, :]
    g_ok = k_ok[:, None] & k_ok[None, :]
    # Sums over the channels (the reference's, in its order: gamma multiplies after the channel sum).
    sum_fx = tl.zeros([N_P, W_P], dtype=cdt)
    sum_fy = tl.zeros([N_P, H_P], dtype=cdt)
    sum_gamma = tl.zeros([N_P], dtype=cdt)
    for c in range(0, C):
        plane = b * C + c
        x = tl.load(x_ptr + plane * H * W + x_offsets, mask=plane_ok, other=0.0).to(cdt)
        g = tl.load(grad_ptr + plane * N * N + g_offsets, mask=g_ok, other=0.0).to(cdt)
        # Every product is masked to its real extent before it enters another one (see draw_filterbank).
        m = mask2(tl.dot(g, fx, input_precision="ieee", out_dtype=cdt), k_ok, cols_ok)  # G Fx (N, W)
        u = mask2(tl.dot(fy, x, input_precision="ieee", out_dtype=cdt), k_ok, cols_ok)  # Fy x (N, W)
        grad_x = gamma * tl.dot(tl.trans(fy), m, input_precision="ieee", out_dtype=cdt)
        tl.store(grad_x_ptr + plane * H * W + x_offsets, grad_x.to(grad_x_ptr.dtype.element_ty), mask=plane_ok)
        sum_gamma += tl.sum(m * u, axis=1)
        sum_fx += mask2(tl.dot(tl.trans(g), u, input_precision="ieee", out_dtype=cdt), k_ok, cols_ok)
        sum_fy += mask2(tl.dot(m, tl.trans(x), input_precision="ieee", out_dtype=cdt), k_ok, rows_ok)

    g_gx, g_delta_x, g_sigma2_x = filterbank_param_grads(gamma * sum_fx, fx, dx, sx, off, sigma2, k_ok, cols_ok, cdt)
    g_gy, g_delta_y, g_sigma2_y = filterbank_param_grads(gamma * sum_fy, fy, dy, sy, off, sigma2, k_ok, rows_ok, cdt)
    ty = grad_gx_ptr.dtype.element_ty
    tl.store(grad_gx_ptr + b, g_gx.to(ty))
    tl.store(grad_gy_ptr + b, g_gy.to(ty))
    tl.store(grad_delta_ptr + b, (g_delta_x + g_delta_y).to(ty))
    tl.store(grad_sigma2_ptr + b, (g_sigma2_x + g_sigma2_y).to(ty))
    tl.store(grad_gamma_ptr + b, tl.sum(sum_gamma, axis=0).to(ty))


def _check(x: Tensor, params: tuple[Tensor, ...], n: int) -> None:
    if x.dim() != 4 or not x.is_contiguous():
        raise ValueError(f"{_OP}: the Triton launchers take a contiguous (B, C, H, W) x, got {tuple(x.shape)}")
    check_params(_OP, x, params)
    batch, channels, height, width = x.shape
    check_sizes(_OP, batch * channels, height, width, n)


def _constants(x: Tensor, n: int) -> dict[str, object]:
    return {
        "USE_F64": x.dtype == torch.float64,
        "N_P": tile(n),
        "H_P": tile(x.shape[2]),
        "W_P": tile(x.shape[3]),
        "num_warps": num_warps(tile(x.shape[2]), tile(x.shape[3])),
        # Filter centres g + offset * delta must round as the reference's separate multiply and add: at extreme
        # magnitudes the sum cancels, and a fused multiply-add moves a filter from inside the image to far outside.
        "enable_fp_fusion": False,
    }


def draw_read_fwd(x: Tensor, gx: Tensor, gy: Tensor, delta: Tensor, sigma2: Tensor, gamma: Tensor, N: int) -> Tensor:
    """DRAW's read: an N x N glimpse of every channel through Gaussian filterbanks.

    Args:
        x: (B, C, H, W) contiguous image; float16/bfloat16/float32/float64, H, W <= 64.
        gx, gy: (B,) grid centre in pixels (column, row), same dtype and device.
        delta: (B,) stride between the filters in pixels.
        sigma2: (B,) variance of the Gaussians in pixels^2.
        gamma: (B,) intensity the glimpse is multiplied by.
        N: the number of filters along each axis, 1..32.

    Returns:
        (B, C, N, N) ``gamma * Fy x Fx^T`` in ``x.dtype`` (computed in float32, float64 for float64).

    Raises:
        ValueError: non-contiguous or mismatched inputs, or sizes beyond the single-tile kernels.
    """
    params = (gx, gy, delta, sigma2, gamma)
    _check(x, params, N)
    batch, channels, _, width = x.shape
    out = torch.empty(batch, channels, N, N, dtype=x.dtype, device=x.device)
    planes = batch * channels
    if planes > 0:
        _draw_read_fwd_kernel[(planes,)](
            x, *params, out, channels, x.shape[2], width, N, **_constants(x, N)
        )  # fmt: skip
    return out


def draw_read_bwd(
    grad_out: Tensor,
    x: Tensor,
    gx: Tensor,
    gy: Tensor,
    delta: Tensor,
    sigma2: Tensor,
    gamma: Tensor,
    N: int,
    needs_grad: tuple[bool, ...] = (True,) * 6,
) -> tuple[Tensor | None, ...]:
    """Gradients of :func:`draw_read_fwd`, all six from one launch (one program per sample).

    Args:
        grad_out: (B, C, N, N) contiguous gradient of the glimpse.
        x, gx, gy, delta, sigma2, gamma, N: as in the forward.
        needs_grad: one flag per tensor argument (x, gx, gy, delta, sigma2, gamma); every gradient is
            computed, the unneeded ones are returned as None.

    Returns:
        (grad_x (B, C, H, W), grad_gx, grad_gy, grad_delta, grad_sigma2, grad_gamma (B,) each), in the
        inputs' dtype; the parameter gradients are summed over channels in float32 (float64).
    """
    params = (gx, gy, delta, sigma2, gamma)
    _check(x, params, N)
    batch, channels, height, width = x.shape
    if tuple(grad_out.shape) != (batch, channels, N, N) or not grad_out.is_contiguous():
        raise ValueError(
            f"{_OP}: grad_out must be a contiguous ({batch}, {channels}, {N}, {N}) tensor, got {tuple(grad_out.shape)}"
        )
    grad_x = torch.empty_like(x)
    # Separate tensors (every sample writes its entry): the op's outputs may not alias one another.
    grad_params = tuple(torch.empty_like(p) for p in params)
    if batch > 0:
        # A sample with no channels gets zero parameter gradients, as the reference's empty sums.
        _draw_read_bwd_kernel[(batch,)](
            grad_out, x, *params, grad_x, *grad_params, channels, height, width, N, **_constants(x, N)
        )  # fmt: skip
    grads = (grad_x, *grad_params)
    return tuple(g if wanted else None for g, wanted in zip(grads, needs_grad, strict=True))
