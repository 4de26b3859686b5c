"""Triton masked convolution (forward, input gradient, weight gradient) as implicit GEMMs.

Semantics are those of :mod:`pyvidgen.kernels.reference.masked_conv2d`: the kernel rows below the
centre are never read or computed; the rows ``0 .. k // 2`` are, with the hidden taps' weights loaded as
exact zeros (the centre tap by colour group), so a kernel reads exactly what the reference reads.

* forward: a program owns ``BLOCK_M`` output pixels (flat over batch and plane) x ``BLOCK_N`` output
  channels and accumulates ``x_tap (M x K) @ w_tap (K x N)`` over the visible rows' taps and blocks of
  ``BLOCK_K`` input channels;
* input gradient: a program owns ``BLOCK_M`` input pixels x ``BLOCK_K`` input channels and accumulates
  ``grad_out_shifted (M x N) @ w_tap^T (N x K)``;
* weight gradient: a program owns one tap x ``BLOCK_N`` x ``BLOCK_K`` and accumulates
  ``grad_out^T (N x M) @ x_shifted (M x K)`` over every pixel in a fixed order: deterministic, no atomics.

Products accumulate in float32 (float64 for float64); float32 products use IEEE multiplication
(``input_precision="ieee"``, not TF32), half inputs go to the dot as they are.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from pyvidgen.kernels.triton.elementwise import require_index_range

# One fixed configuration: the interpreter cannot autotune. 64 x 32 x 32 tiles keep every dot at the
# 16 x 16 minimum of the GPU's matrix units with masks for small channel counts.
_BLOCK_M = 64
_BLOCK_N = 32
_BLOCK_K = 32
_NUM_WARPS = 4


@triton.jit
def _centre_visible(group_in, group_out, TYPE_A: tl.constexpr):
    """The centre tap's visibility from the input and output channels' colour groups."""
    if TYPE_A:
        ok = group_in < group_out
    else:
        ok = group_in <= group_out
    return ok


@triton.jit
def _tap_visible(ci, n, r, s, Cout, Cin, G, centre, TYPE_A: tl.constexpr):
    """Whether tap (r, s) of rows 0 .. centre links input channels ci to output channels n: a boolean tile
    of their broadcast shape (ci and n are int64 tiles such as ci[:, None] and n[None, :])."""
    zero = ci * 0 + n * 0  # tap indices as tiles: scalar booleans do not mix into masks everywhere
    visible = ((zero + r) < centre) | ((zero + s) < centre)
    group_ok = _centre_visible((ci * G) // Cin, (n * G) // Cout, TYPE_A)
    return visible | (((zero + s) == centre) & group_ok)


@triton.jit
def _tap_weights(w_ptr, n, ci, r, s, Cout, Cin, K, G, centre, TYPE_A: tl.constexpr):
    """Weights of tap (r, s) as a (len(ci), len(n)) tile with hidden taps zero; n and ci int64 vectors."""
    visible = _tap_visible(ci[:, None], n[None, :], r, s, Cout, Cin, G, centre, TYPE_A)
    keep = visible & (ci[:, None] < Cin) & (n[None, :] < Cout)
    offsets = ((n[None, :] * Cin + ci[:, None]) * K + r) * K + s
    return tl.load(w_ptr + offsets, mask=keep, other=0.0)


@triton.jit
def _pixel_coordinates(m, H, W):
    """Flat pixel indices over (batch, plane) -> (batch b, plane offset p, row, column)."""
    hw = H * W
    b = m // hw
    p = m - b * hw
    row = p // W
    return b, p, row, p - row * W


@triton.jit
def _masked_conv2d_fwd_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    total,
    Cin,
    H,
    W,
    Cout,
    K,
    G,
    dilation,
    TYPE_A: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ACC_F64: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    n = tl.program_id(1).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = m < total
    b, p, i, j = _pixel_coordinates(m, H, W)
    centre = K // 2
    if ACC_F64:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for r in range(0, centre + 1):
        y = i + dilation * (r - centre)
        for s in range(0, K):
            z = j + dilation * (s - centre)
            inside = m_ok & (y >= 0) & (z >= 0) & (z < W)
            for c0 in range(0, Cin, BLOCK_K):
                ci = c0 + tl.arange(0, BLOCK_K).to(tl.int64)
                x_offsets = ((b[:, None] * Cin + ci[None, :]) * H + y[:, None]) * W + z[:, None]
                x_tile = tl.load(x_ptr + x_offsets, mask=inside[:, None] & (ci[None, :] < Cin), other=0.0)
                w_tile = _tap_weights(w_ptr, n, ci, r, s, Cout, Cin, K, G, centre, TYPE_A)
                if UPCAST:
                    x_tile = x_tile.to(tl.float32)
                    w_tile = w_tile.to(tl.float32)
                acc += tl.dot(x_tile, w_tile, input_precision=PRECISION, out_dtype=acc.dtype)
    if HAS_BIAS:
        acc += tl.load(b_ptr + n, mask=n < Cout, other=0.0).to(acc.dtype)[None, :]
    out_offsets = (b[:, None] * Cout + n[None, :]) * (H * W) + p[:, None]
    tl.store(out_ptr + out_offsets, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & (n[None, :] < Cout))


@triton.jit
def _masked_conv2d_bwd_x_kernel(
    g_ptr,
    w_ptr,
    gx_ptr,
    total,
    Cin,
    H,
    W,
    Cout,
    K,
    G,
    dilation,
    TYPE_A: tl.constexpr,
    ACC_F64: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # Input pixel (y, z) reaches output pixel (y + d (c - r), z + d (c - s)) through tap (r, s).
    m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    ci = tl.program_id(1).to(tl.int64) * BLOCK_K + tl.arange(0, BLOCK_K)
    m_ok = m < total
    b, p, y, z = _pixel_coordinates(m, H, W)
    centre = K // 2
    if ACC_F64:
        acc = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
    for r in range(0, centre + 1):
        i = y + dilation * (centre - r)
        for s in range(0, K):
            j = z + dilation * (centre - s)
            inside = m_ok & (i < H) & (j >= 0) & (j < W)
            for n0 in range(0, Cout, BLOCK_N):
                n = n0 + tl.arange(0, BLOCK_N).to(tl.int64)
                g_offsets = ((b[:, None] * Cout + n[None, :]) * H + i[:, None]) * W + j[:, None]
                g_tile = tl.load(g_ptr + g_offsets, mask=inside[:, None] & (n[None, :] < Cout), other=0.0)
                w_tile = _tap_weights(w_ptr, n, ci, r, s, Cout, Cin, K, G, centre, TYPE_A)  # (K ci, N n)
                if UPCAST:
                    g_tile = g_tile.to(tl.float32)
                    w_tile = w_tile.to(tl.float32)
                partial = tl.dot(g_tile, tl.trans(w_tile), input_precision=PRECISION, out_dtype=acc.dtype)
                # Pixels whose output lies beyond the border take no product at all (as in a transposed
                # convolution), rather than 0 * weight, which is NaN for an infinite weight.
                acc += tl.where(inside[:, None], partial, 0.0)
    gx_offsets = (b[:, None] * Cin + ci[None, :]) * (H * W) + p[:, None]
    tl.store(gx_ptr + gx_offsets, acc.to(gx_ptr.dtype.element_ty), mask=m_ok[:, None] & (ci[None, :] < Cin))


@triton.jit
def _masked_conv2d_bwd_w_kernel(
    g_ptr,
    x_ptr,
    gw_ptr,
    total,
    Cin,
    H,
    W,
    Cout,
    K,
    G,
    dilation,
    TYPE_A: tl.constexpr,
    ACC_F64: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    tap = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    ci = tl.program_id(2).to(tl.int64) * BLOCK_K + tl.arange(0, BLOCK_K)
    r = tap // K
    s = tap - r * K
    centre = K // 2
    hw = H * W
    if ACC_F64:
        acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    for m0 in range(0, total, BLOCK_M):
        m = m0 + tl.arange(0, BLOCK_M).to(tl.int64)
        m_ok = m < total
        b, p, i, j = _pixel_coordinates(m, H, W)
        y = i + dilation * (r - centre)
        z = j + dilation * (s - centre)
        inside = m_ok & (y >= 0) & (z >= 0) & (z < W)
        g_offsets = (b[None, :] * Cout + n[:, None]) * hw + p[None, :]
        g_tile = tl.load(g_ptr + g_offsets, mask=m_ok[None, :] & (n[:, None] < Cout), other=0.0)  # (N, M)
        x_offsets = ((b[:, None] * Cin + ci[None, :]) * H + y[:, None]) * W + z[:, None]
        x_tile = tl.load(x_ptr + x_offsets, mask=inside[:, None] & (ci[None, :] < Cin), other=0.0)  # (M, K)
        if UPCAST:
            g_tile = g_tile.to(tl.float32)
            x_tile = x_tile.to(tl.float32)
        acc += tl.dot(g_tile, x_tile, input_precision=PRECISION, out_dtype=acc.dtype)
    # Hidden taps get exact zeros: their (finite or not) sums are never stored.
    acc = tl.where(_tap_visible(ci[None, :], n[:, None], r, s, Cout, Cin, G, centre, TYPE_A), acc, 0.0)
    gw_offsets = ((n[:, None] * Cin + ci[None, :]) * K + r) * K + s
    tl.store(gw_ptr + gw_offsets, acc.to(gw_ptr.dtype.element_ty), mask=(n[:, None] < Cout) & (ci[None, :] < Cin))


def _settings(x: Tensor) -> dict[str, object]:
    """Compile-time settings: float64 accumulation, the dot's input precision, and whether half tiles are
    upcast before the dot (the interpreter multiplies bfloat16 wrongly; a GPU takes them as they are)."""
    interpreted = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    return {
        "ACC_F64": x.dtype == torch.float64,
        "PRECISION": "ieee" if x.dtype in (torch.float32, torch.float64) else "tf32",
        "UPCAST": interpreted and x.dtype == torch.bfloat16,
    }


def _check(x: Tensor, weight: Tensor) -> None:
    if x.dim() != 4 or weight.dim() != 4 or weight.shape[1] != x.shape[1] or weight.shape[2] != weight.shape[3]:
        shapes = f"{tuple(x.shape)}, {tuple(weight.shape)}"
        raise ValueError(f"masked_conv2d: expected x (B, Cin, H, W) and weight (Cout, Cin, K, K), got {shapes}")
    if not (x.is_contiguous() and weight.is_contiguous() and x.dtype == weight.dtype and x.device == weight.device):
        raise ValueError("masked_conv2d: the Triton launchers take contiguous tensors of one dtype and device")
    pixels = x.shape[0] * x.shape[2] * x.shape[3]
    require_index_range("masked_conv2d", "the program count over pixels", triton.cdiv(pixels, _BLOCK_M))


def masked_conv2d_fwd(
    x: Tensor, weight: Tensor, bias: Tensor | None, mask_type: str, color_groups: int, dilation: int
) -> Tensor:
    """The masked convolution.

    Args:
        x: (B, Cin, H, W) contiguous; float16/bfloat16/float32/float64.
        weight: (Cout, Cin, K, K) contiguous, K odd, same dtype and device.
        bias: optional (Cout,).
        mask_type: "A" or "B".
        color_groups: G.
        dilation: tap spacing.

    Returns:
        (B, Cout, H, W) in ``x.dtype``.
    """
    _check(x, weight)
    batch, cin, height, width = x.shape
    cout, k = weight.shape[0], weight.shape[-1]
    out = torch.empty(batch, cout, height, width, dtype=x.dtype, device=x.device)
    total = batch * height * width
    if out.numel() == 0:
        return out.zero_()
    grid = (triton.cdiv(total, _BLOCK_M), triton.cdiv(cout, _BLOCK_N))
    _masked_conv2d_fwd_kernel[grid](
        x, weight, bias if bias is not None else weight, out,
        total, cin, height, width, cout, k, color_groups, dilation,
        TYPE_A=mask_type == "A", HAS_BIAS=bias is not None, **_settings(x),
        BLOCK_M=_BLOCK_M, BLOCK_N=_BLOCK_N, BLOCK_K=_BLOCK_K, num_warps=_NUM_WARPS,
    )  # fmt: skip
    return out


def masked_conv2d_bwd(
    grad_out: Tensor,
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    mask_type: str,
    color_groups: int,
    dilation: int,
    needs_grad: tuple[bool, bool, bool] = (True, True, True),
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of :func:`masked_conv2d_fwd`: (grad_x, grad_weight with zeros at hidden taps, grad_bias)."""
    _check(x, weight)
    batch, cin, height, width = x.shape
    cout, k = weight.shape[0], weight.shape[-1]
    total = batch * height * width
    settings = _settings(x)
    common = dict(TYPE_A=mask_type == "A", **settings, BLOCK_M=_BLOCK_M,
                  BLOCK_N=_BLOCK_N, BLOCK_K=_BLOCK_K, num_warps=_NUM_WARPS)  # fmt: skip
    grad_x = grad_weight = grad_bias = None
    if needs_grad[0]:
        grad_x = torch.zeros_like(x)
        if total > 0 and cin > 0:
            grid = (triton.cdiv(total, _BLOCK_M), triton.cdiv(cin, _BLOCK_K))
            _masked_conv2d_bwd_x_kernel[grid](
                grad_out, weight, grad_x, total, cin, height, width, cout, k, color_groups, dilation, **common
            )
    if needs_grad[1]:
        grad_weight = torch.zeros_like(weight)
        if total > 0 and cin > 0 and cout > 0:
            # Only the visible rows' taps; the rows below the centre keep their zeros.
            grid = ((k // 2 + 1) * k, triton.cdiv(cout, _BLOCK_N), triton.cdiv(cin, _BLOCK_K))
            _masked_conv2d_bwd_w_kernel[grid](
                grad_out, x, grad_weight, total, cin, height, width, cout, k, color_groups, dilation, **common
            )
    if needs_grad[2] and bias is not None:
        acc = torch.float64 if settings["ACC_F64"] else torch.float32
        grad_bias = grad_out.sum(dim=(0, 2, 3), dtype=acc).to(bias.dtype)
    return grad_x, grad_weight, grad_bias
