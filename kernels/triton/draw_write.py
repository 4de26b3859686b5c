"""Triton DRAW write attention: ``Fy^T w Fx / gamma`` per channel, and its backward.

Semantics are those of :mod:`pyvidgen.kernels.reference.draw_write`, whose intermediates the kernels
form in the same order (``w Fx`` then ``Fy^T (w Fx)``; ``V = (G / gamma) Fx^T`` and ``R = Fy (G / gamma)``),
so that non-finite inputs give the reference's NaN and infinity pattern. The filterbanks Fx (N x W) and
Fy (N x H) are built in registers (:mod:`.draw_filterbank`), never in global memory, and both
contractions run in the same program.

* forward: one program per (sample, channel) plane, a flat grid over B * C;
* backward: one program per sample, looping over its channels: it stores each channel's patch
  gradient ``Fy V`` and sums the filterbanks' gradients ``w^T R`` and ``w V^T`` and gamma's
  ``grad_w * w`` over the channels in registers, then turns them into the five parameter gradients.
  Each parameter gradient is written by one program in a fixed order: no atomics, deterministic.

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

_OP = "draw_write"


@triton.jit
def _draw_write_fwd_kernel(
    w_ptr,
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

    w_offsets = k[:, None] * N + k[None, :]
    w = tl.load(w_ptr + plane * N * N + w_offsets, mask=k_ok[:, None] & k_ok[None, :], other=0.0).to(cdt)
    # Fy^T (w Fx): padded columns times an infinite entry are NaN, zeroed before the next product.
    w_fx = mask2(tl.dot(w, fx, input_precision="ieee", out_dtype=cdt), k_ok, cols_ok)
    canvas = tl.dot(tl.trans(fy), w_fx, input_precision="ieee", out_dtype=cdt)
    out = canvas / gamma

    out_offsets = rows[:, None] * W + cols[None, :]
    tl.store(
        out_ptr + plane * H * W + out_offsets,
        out.to(out_ptr.dtype.element_ty),
        mask=rows_ok[:, None] & cols_ok[None, :],
    )


@triton.jit
def _draw_write_bwd_kernel(
    grad_ptr,
    w_ptr,
    gx_ptr,
    gy_ptr,
    delta_ptr,
    sigma2_ptr,
    gamma_ptr,
    grad_w_ptr,
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

    patch_ok = k_ok[:, None] & k_ok[None, :]
    w_offsets = k[:, None] * N + k[None, :]
    g_offsets = rows[:, None] * W + cols[None, :]
    g_ok = rows_ok[:, None] & cols_ok[None, :]
    # Sums over the channels, as the reference's.
    sum_fx = tl.zeros([N_P, W_P], dtype=cdt)
    sum_fy = tl.zeros([N_P, H_P], dtype=cdt)
    sum_gamma = tl.zeros([N_P], dtype=cdt)
    for c in range(0, C):
        plane = b * C + c
        w = tl.load(w_ptr + plane * N * N + w_offsets, mask=patch_ok, other=0.0).to(cdt)
        g = tl.load(grad_ptr + plane * H * W + g_offsets, mask=g_ok, other=0.0).to(cdt)
        # Every product is masked to its real extent before it enters another one (see draw_filterbank);
        # the padded zeros of G / gamma are NaN for gamma = 0.
        scaled = mask2(g / gamma, rows_ok, cols_ok)
        v = mask2(tl.dot(scaled, tl.trans(fx), input_precision="ieee", out_dtype=cdt), rows_ok, k_ok)  # (H, N)
        r = mask2(tl.dot(fy, scaled, input_precision="ieee", out_dtype=cdt), k_ok, cols_ok)  # (N, W)
        grad_w = tl.dot(fy, v, input_precision="ieee", out_dtype=cdt)
        tl.store(grad_w_ptr + plane * N * N + w_offsets, grad_w.to(grad_w_ptr.dtype.element_ty), mask=patch_ok)
        sum_gamma += tl.sum(mask2(grad_w * w, k_ok, k_ok), axis=1)
        sum_fx += mask2(tl.dot(tl.trans(w), r, input_precision="ieee", out_dtype=cdt), k_ok, cols_ok)
        sum_fy += mask2(tl.dot(w, tl.trans(v), input_precision="ieee", out_dtype=cdt), k_ok, rows_ok)

    g_gx, g_delta_x, g_sigma2_x = filterbank_param_grads(sum_fx, fx, dx, sx, off, sigma2, k_ok, cols_ok, cdt)
    g_gy, g_delta_y, g_sigma2_y = filterbank_param_grads(sum_fy, fy, dy, sy, off, sigma2, k_ok, rows_ok, cdt)
    ty = grad_gx_ptr.dtype.element_ty
    tl.store(grad_gx_ptr + b, g_gx.to(ty))
    tl.store(grad_gy_ptr + b, g_gy.to(ty))
    tl.store(grad_delta_ptr + b, (g_delta_x + g_delta_y).to(ty))
    tl.store(grad_sigma2_ptr + b, (g_sigma2_x + g_sigma2_y).to(ty))
    tl.store(grad_gamma_ptr + b, (-tl.sum(sum_gamma, axis=0) / gamma).to(ty))


def _check(w: Tensor, params: tuple[Tensor, ...], height: int, width: int) -> None:
    if w.dim() != 4 or w.shape[2] != w.shape[3] or not w.is_contiguous():
        raise ValueError(f"{_OP}: the Triton launchers take a contiguous (B, C, N, N) w, got {tuple(w.shape)}")
    if height < 1 or width < 1:
        raise ValueError(f"{_OP}: H and W must be >= 1, got H={height}, W={width}")
    check_params(_OP, w, params)
    batch, channels, n, _ = w.shape
    check_sizes(_OP, batch * channels, height, width, n)


def _constants(w: Tensor, height: int, width: int) -> dict[str, object]:
    return {
        "USE_F64": w.dtype == torch.float64,
        "N_P": tile(w.shape[-1]),
        "H_P": tile(height),
        "W_P": tile(width),
        "num_warps": num_warps(tile(height), tile(width)),
        # Filter centres g + offset * delta must round as the reference's separate multiply and add: at extreme
        # magnitudes the sum cancels, and a fused multiply-add moves a filter from inside the image to far outside.
        "enable_fp_fusion": False,
    }


def draw_write_fwd(
    w: Tensor, gx: Tensor, gy: Tensor, delta: Tensor, sigma2: Tensor, gamma: Tensor, H: int, W: int
) -> Tensor:
    """DRAW's write: every channel's N x N patch spread over an H x W canvas through Gaussian filterbanks.

    Args:
        w: (B, C, N, N) contiguous patch; float16/bfloat16/float32/float64, 1 <= N <= 32.
        gx, gy: (B,) grid centre in pixels (column, row), same dtype and device.
        delta: (B,) stride between the filters in pixels.
        sigma2: (B,) variance of the Gaussians in pixels^2.
        gamma: (B,) intensity the canvas is divided by.
        H, W: the canvas size, 1..64 each.

    Returns:
        (B, C, H, W) ``Fy^T w Fx / gamma`` in ``w.dtype`` (computed in float32, float64 for float64).

    Raises:
        ValueError: non-contiguous or mismatched inputs, or sizes beyond the single-tile kernels.
    """
    params = (gx, gy, delta, sigma2, gamma)
    _check(w, params, H, W)
    batch, channels, n, _ = w.shape
    out = torch.empty(batch, channels, H, W, dtype=w.dtype, device=w.device)
    planes = batch * channels
    if planes > 0:
        _draw_write_fwd_kernel[(planes,)](w, *params, out, channels, H, W, n, **_constants(w, H, W))
    return out


def draw_write_bwd(
    grad_out: Tensor,
    w: Tensor,
    gx: Tensor,
    gy: Tensor,
    delta: Tensor,
    sigma2: Tensor,
    gamma: Tensor,
    H: int,
    W: int,
    needs_grad: tuple[bool, ...] = (True,) * 6,
) -> tuple[Tensor | None, ...]:
    """Gradients of :func:`draw_write_fwd`, all six from one launch (one program per sample).

    Args:
        grad_out: (B, C, H, W) contiguous gradient of the canvas.
        w, gx, gy, delta, sigma2, gamma, H, W: as in the forward.
        needs_grad: one flag per tensor argument (w, gx, gy, delta, sigma2, gamma); every gradient is
            computed, the unneeded ones are returned as None.

    Returns:
        (grad_w (B, C, N, N), grad_gx, grad_gy, grad_delta, grad_sigma2, grad_gamma (B,) each), in the
        inputs' dtype; the parameter gradients are summed over channels in float32 (float64).
    """
    params = (gx, gy, delta, sigma2, gamma)
    _check(w, params, H, W)
    batch, channels, n, _ = w.shape
    if tuple(grad_out.shape) != (batch, channels, H, W) or not grad_out.is_contiguous():
        raise ValueError(
            f"{_OP}: grad_out must be a contiguous ({batch}, {channels}, {H}, {W}) tensor, got {tuple(grad_out.shape)}"
        )
    grad_w = torch.empty_like(w)
    # Separate tensors (every sample writes its entry): the op's outputs may not alias one another.
    grad_params = tuple(torch.empty_like(p) for p in params)
    if batch > 0:
        # A sample with no channels gets the reference's empty sums.
        _draw_write_bwd_kernel[(batch,)](
            grad_out, w, *params, grad_w, *grad_params, channels, H, W, n, **_constants(w, H, W)
        )  # fmt: skip
    grads = (grad_w, *grad_params)
    return tuple(g if wanted else None for g, wanted in zip(grads, needs_grad, strict=True))
