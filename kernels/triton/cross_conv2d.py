"""Triton cross convolution: each sample's feature maps cross-correlated with its own depthwise kernels.

Semantics are those of :mod:`pyvidgen.kernels.reference.cross_conv2d` (x (B, C, H, W), kernels (B, C, kh, kw),
kh and kw odd, zero "same" padding). Every (b, c) plane is independent, and so is its kernel.

* forward and input gradient (one kernel, ``FLIP``): a flat grid over (plane, tile of ``BLOCK_H x BLOCK_W``
  pixels). A program keeps its tile of sums in registers and loops over the kh x kw taps: per tap one shifted,
  masked load of the plane (zeros outside the image) and one scalar load of the tap. The input gradient is the
  correlation of ``grad_out`` with the kernel flipped in both directions: the same loop reading tap
  ``(kh - 1 - i, kw - 1 - j)`` instead of ``(i, j)``.
* kernel gradient: a flat grid over (plane, split). The plane's pixels, taken in chunks of ``BLOCK_M``, are
  divided into ``splits`` fixed ranges of whole chunks; a program sums ``grad_out * x_shifted`` over its range
  for one row of taps at a time, ``BLOCK_J`` taps of the row side by side (a (BLOCK_M, BLOCK_J) tile of
  shifted pixels, reduced over the pixels into a (BLOCK_J,) vector of partial sums), and stores its partial
  sums to a (planes, splits, kh, kw) buffer; ``torch.sum`` over the splits finishes. Every sum is taken in an
  order fixed by the shapes alone: deterministic, no atomics. ``splits`` grows with the plane only when there
  are too few planes to fill a GPU (so a plane's rounding can depend on B * C, never on the run). Rows of
  taps wider than ``BLOCK_J`` are taken in several passes, so no kernel size is refused.

Non-finite values follow the reference (a grouped convolution): the forward and the kernel gradient multiply
the zero padding like any pixel (an infinite tap, or an infinite ``grad_out`` at the border, gives NaN), the
input gradient takes no product for taps that reach beyond the border (a transposed convolution's col2im).

Products accumulate in float32 (float64 for float64 inputs); half inputs are upcast after each load and the
results rounded to the inputs' dtype once, at the end.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from pyvidgen.kernels.triton.elementwise import require_index_range

_OP = "cross_conv2d"
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Tiles (one fixed configuration per shape: the interpreter cannot autotune). Forward and input gradient:
# up to 1024 pixels a program, rows of up to 64 (coalesced 256-byte rows in float32), narrower and taller
# tiles for narrow images. The tests shrink these to cover many tiles at tiny sizes.
_TILE_ELEMENTS = 1024
_MAX_BLOCK_W = 64
# Kernel gradient: BLOCK_M pixels x BLOCK_J taps of one row per step, 2048 products in flight.
_GRAD_TILE_ELEMENTS = 2048
_MAX_BLOCK_J = 16
# Split a plane's kernel-gradient sum only while there are fewer programs than this (B * C planes usually
# fill the GPU on their own), and never into pieces of fewer than _MIN_CHUNKS_PER_SPLIT chunks.
_GRAD_PROGRAMS = 1024
_MIN_CHUNKS_PER_SPLIT = 4


@triton.jit
def _cross_conv2d_taps_kernel(
    src_ptr,
    k_ptr,
    out_ptr,
    H,
    W,
    KH,
    KW,
    tiles_w,
    tiles_per_plane,
    FLIP: tl.constexpr,
    USE_F64: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    """``out = src (*) k`` (FLIP False: the forward) or ``src (*) flip(k)`` (FLIP True: the input gradient,
    with ``src`` = grad_out) over one tile of one plane."""
    if USE_F64:
        cdt = tl.float64
    else:
        cdt = tl.float32
    pid = tl.program_id(0)
    plane = (pid // tiles_per_plane).to(tl.int64)
    tile = pid % tiles_per_plane
    tile_row = tile // tiles_w
    tile_col = tile - tile_row * tiles_w
    rows = tile_row * BLOCK_H + tl.arange(0, BLOCK_H)
    cols = tile_col * BLOCK_W + tl.arange(0, BLOCK_W)
    hw = H * W
    src = src_ptr + plane * hw
    taps = k_ptr + plane * (KH * KW)
    half_h = KH // 2
    half_w = KW // 2
    acc = tl.zeros([BLOCK_H, BLOCK_W], dtype=cdt)
    for i in range(0, KH):
        y = rows + (i - half_h)
        y_ok = (y >= 0) & (y < H)
        for j in range(0, KW):
            x = cols + (j - half_w)
            inside = y_ok[:, None] & ((x >= 0) & (x < W))[None, :]
            v = tl.load(src + (y[:, None] * W + x[None, :]), mask=inside, other=0.0).to(cdt)
            if FLIP:
                w = tl.load(taps + ((KH - 1 - i) * KW + (KW - 1 - j))).to(cdt)
                # A tap reaching beyond the border takes no product at all (0 * inf would be NaN).
                acc += tl.where(inside, w * v, 0.0)
            else:
                w = tl.load(taps + (i * KW + j)).to(cdt)
                # The padding's zeros multiply the tap, as in the reference.
                acc += w * v
    ok = (rows < H)[:, None] & (cols < W)[None, :]
    offsets = rows[:, None] * W + cols[None, :]
    tl.store(out_ptr + plane * hw + offsets, acc.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _cross_conv2d_grad_kernels_kernel(
    g_ptr,
    x_ptr,
    partial_ptr,
    H,
    W,
    KH,
    KW,
    splits,
    split_pixels,
    USE_F64: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_J: tl.constexpr,
):
    """Partial sums ``sum_p g[p] x[p + (i - kh // 2, j - kw // 2)]`` of every tap over one split's pixels."""
    if USE_F64:
        cdt = tl.float64
    else:
        cdt = tl.float32
    pid = tl.program_id(0)
    plane = (pid // splits).to(tl.int64)
    split = pid % splits
    hw = H * W
    g_plane = g_ptr + plane * hw
    x_plane = x_ptr + plane * hw
    # partial is (planes, splits, KH, KW): this program's block is number pid.
    out = partial_ptr + pid.to(tl.int64) * (KH * KW)
    start = split * split_pixels
    end = tl.minimum(start + split_pixels, hw)
    half_h = KH // 2
    half_w = KW // 2
    lanes = tl.arange(0, BLOCK_M)
    tap_lanes = tl.arange(0, BLOCK_J)
    for i in range(0, KH):
        for j0 in range(0, KW, BLOCK_J):
            j = j0 + tap_lanes
            j_ok = j < KW
            dx = j - half_w
            acc = tl.zeros([BLOCK_J], dtype=cdt)
            for m0 in range(start, end, BLOCK_M):
                p = m0 + lanes
                p_ok = p < end
                row = p // W
                col = p - row * W
                g = tl.load(g_plane + p, mask=p_ok, other=0.0).to(cdt)
                y = row + (i - half_h)
                y_ok = p_ok & (y >= 0) & (y < H)
                x = col[:, None] + dx[None, :]
                # Pixels past the split's end read nothing (their g is 0, and 0 * inf would be NaN); pixels
                # whose tap falls in the padding read its zero, which multiplies g as in the reference.
                inside = y_ok[:, None] & (x >= 0) & (x < W) & j_ok[None, :]
                v = tl.load(x_plane + ((y * W)[:, None] + x), mask=inside, other=0.0).to(cdt)
                acc += tl.sum(g[:, None] * v, axis=0)
            tl.store(out + (i * KW + j), acc, mask=j_ok)


def _check(x: Tensor, kernels: Tensor) -> None:
    if x.dim() != 4 or kernels.dim() != 4 or tuple(kernels.shape[:2]) != tuple(x.shape[:2]):
        shapes = f"{tuple(x.shape)}, {tuple(kernels.shape)}"
        raise ValueError(f"{_OP}: expected x (B, C, H, W) and kernels (B, C, kh, kw), got {shapes}")
    kh, kw = kernels.shape[-2:]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"{_OP}: the kernel sizes must be odd, got kh={kh}, kw={kw}")
    if not (x.is_contiguous() and kernels.is_contiguous() and x.dtype == kernels.dtype and x.device == kernels.device):
        raise ValueError(f"{_OP}: the Triton launchers take contiguous tensors of one dtype and device")
    if x.dtype not in _DTYPES:
        raise ValueError(f"{_OP}: the Triton launchers take float16/bfloat16/float32/float64, got {x.dtype}")
    # Offsets inside a plane are int32 (a chunk or tile may reach past its end); planes and kernels are int64.
    height, width = x.shape[-2:]
    require_index_range(_OP, "H * W plus a tile", height * width + max(_TILE_ELEMENTS, _GRAD_TILE_ELEMENTS))
    require_index_range(_OP, "kh * kw", kh * kw)


def _tile(height: int, width: int) -> tuple[int, int, int]:
    """(BLOCK_H, BLOCK_W, num_warps) of the forward and input-gradient tiles for an H x W plane."""
    block_w = min(_MAX_BLOCK_W, triton.next_power_of_2(width))
    block_h = min(triton.next_power_of_2(height), max(1, _TILE_ELEMENTS // block_w))
    return block_h, block_w, max(1, min(4, block_h * block_w // 128))


def _taps(src: Tensor, kernels: Tensor, flip: bool) -> Tensor:
    """Launch the tap loop over every tile of every plane of ``src``: the forward or the input gradient."""
    batch, channels, height, width = src.shape
    out = torch.empty_like(src)
    if out.numel() == 0:
        return out
    block_h, block_w, warps = _tile(height, width)
    tiles_w = triton.cdiv(width, block_w)
    tiles_per_plane = triton.cdiv(height, block_h) * tiles_w
    programs = batch * channels * tiles_per_plane
    require_index_range(_OP, "the program count", programs)
    _cross_conv2d_taps_kernel[(programs,)](
        src, kernels, out, height, width, kernels.shape[-2], kernels.shape[-1], tiles_w, tiles_per_plane,
        FLIP=flip, USE_F64=src.dtype == torch.float64, BLOCK_H=block_h, BLOCK_W=block_w, num_warps=warps,
        enable_fp_fusion=True,
    )  # fmt: skip
    return out


def _grad_kernels(grad_out: Tensor, x: Tensor, kernels: Tensor) -> Tensor:
    """The kernel gradient: per-split partial sums in float32 (float64), then a fixed-order sum over splits."""
    batch, channels, height, width = x.shape
    kh, kw = kernels.shape[-2:]
    planes, pixels = batch * channels, height * width
    if planes == 0 or pixels == 0:
        return torch.zeros_like(kernels)  # empty sums
    block_j = min(_MAX_BLOCK_J, triton.next_power_of_2(kw))
    block_m = min(triton.next_power_of_2(pixels), max(1, _GRAD_TILE_ELEMENTS // block_j))
    chunks = triton.cdiv(pixels, block_m)
    wanted = max(1, triton.cdiv(_GRAD_PROGRAMS, planes))
    chunks_per_split = max(_MIN_CHUNKS_PER_SPLIT, triton.cdiv(chunks, wanted))
    splits = triton.cdiv(chunks, chunks_per_split)
    programs = planes * splits
    require_index_range(_OP, "the program count", programs)
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    partial = torch.empty(planes, splits, kh, kw, dtype=acc_dtype, device=x.device)
    _cross_conv2d_grad_kernels_kernel[(programs,)](
        grad_out, x, partial, height, width, kh, kw, splits, chunks_per_split * block_m,
        USE_F64=x.dtype == torch.float64, BLOCK_M=block_m, BLOCK_J=block_j,
        num_warps=max(1, min(4, block_m * block_j // 256)), enable_fp_fusion=True,
    )  # fmt: skip
    summed = partial[:, 0] if splits == 1 else partial.sum(dim=1)
    return summed.to(kernels.dtype).view(kernels.shape)


def cross_conv2d_fwd(x: Tensor, kernels: Tensor) -> Tensor:
    """Cross convolution: ``out[b, c] = x[b, c] (*) kernels[b, c]`` (a cross-correlation), zero "same" padding.

    Args:
        x: (B, C, H, W) contiguous; float16/bfloat16/float32/float64.
        kernels: (B, C, kh, kw) contiguous, kh and kw odd (any size), same dtype and device.

    Returns:
        (B, C, H, W) in ``x.dtype`` (computed in float32, float64 for float64).

    Raises:
        ValueError: wrong shapes, even kernel sizes, non-contiguous or mismatched inputs, or offsets beyond int32.
    """
    _check(x, kernels)
    return _taps(x, kernels, flip=False)


def cross_conv2d_bwd(
    grad_out: Tensor, x: Tensor, kernels: Tensor, needs_grad: tuple[bool, bool] = (True, True)
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of :func:`cross_conv2d_fwd`, each computed only if needed.

    Args:
        grad_out: (B, C, H, W) contiguous gradient of the output, in x's dtype.
        x, kernels: as in the forward.
        needs_grad: (grad_x wanted, grad_kernels wanted).

    Returns:
        (grad_x (B, C, H, W) or None, grad_kernels (B, C, kh, kw) or None) in the inputs' dtype: grad_x the
        correlation of grad_out with the flipped kernels, grad_kernels summed in float32 (float64) in a fixed
        order (deterministic).
    """
    _check(x, kernels)
    if (
        tuple(grad_out.shape) != tuple(x.shape)
        or not grad_out.is_contiguous()
        or grad_out.dtype != x.dtype
        or grad_out.device != x.device
    ):
        raise ValueError(
            f"{_OP}: grad_out must be a contiguous {tuple(x.shape)} tensor of {x.dtype} on {x.device}, "
            f"got {tuple(grad_out.shape)} of {grad_out.dtype} on {grad_out.device}"
        )
    grad_x = _taps(grad_out, kernels, flip=True) if needs_grad[0] else None
    grad_kernels = _grad_kernels(grad_out, x, kernels) if needs_grad[1] else None
    return grad_x, grad_kernels
