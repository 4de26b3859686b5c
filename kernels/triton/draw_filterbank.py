"""Pieces shared by the Triton DRAW attention kernels (:mod:`.draw_read`, :mod:`.draw_write`).

A program builds the two Gaussian filterbanks of its sample in registers, never in global memory, as
tiles padded to powers of two (at least 16, the smallest ``tl.dot`` operand):

* ``Fx``: (N_P, W_P), row i the filter centred at ``mu_i = gx + (i - N/2 - 0.5) delta``, i = 1..N;
* ``Fy``: (N_P, H_P), likewise with ``gy`` over the rows of the image.

Padded rows and columns are exact zeros, and so is every padded entry of the products the kernels
form: a padded zero times an infinite pixel would otherwise be NaN, and that NaN would reach real
entries through the next contraction, where the reference has none.

The arithmetic follows :mod:`pyvidgen.kernels.reference.draw_filterbank` operation for operation
(which intermediate is formed, where sigma2 divides, which sums are taken before a factor), so that
non-finite inputs give the reference's NaN and infinity pattern, not only its finite values.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from pyvidgen.kernels.triton.elementwise import require_index_range

# Single-tile kernels: a whole image plane, both filterbanks and the products live in registers. DRAW
# glimpses read MNIST (28 x 28) to CIFAR/SVHN (32 x 32) images with N <= 12. ptxas for sm_90: 64 x 64
# planes with 16 filters fit in 8 warps without spilling, 32 filters spill a little (36-612 bytes);
# 128 x 128 planes spill ~54 kB and take minutes to compile, so larger sizes are refused with the limit.
MAX_PIXELS = 64
MAX_FILTERS = 32
# The smallest tile side: tl.dot needs every operand dimension >= 16.
MIN_TILE = 16


@triton.jit
def mask2(v, rows_ok, cols_ok):
    """``v`` (R, C) with the entries outside ``rows_ok`` x ``cols_ok`` set to exact zeros."""
    return tl.where(rows_ok[:, None] & cols_ok[None, :], v, 0.0)


@triton.jit
def filterbank(centre, delta, sigma2, N, k, k_ok, a, a_ok, cdt: tl.constexpr):
    """One normalised Gaussian filterbank and what its backward reuses.

    The reference's operations in its order (:func:`pyvidgen.kernels.reference.draw_filterbank.filterbank`),
    so that non-finite parameters give its NaN and infinity pattern.

    Args:
        centre, delta, sigma2: the sample's grid centre, stride and variance (scalars in ``cdt``).
        N: the number of filters.
        k: (N_P,) int32 filter indices 0..N_P-1 (filter i = k + 1); ``k_ok`` = k < N.
        a: (A_P,) int32 pixel indices; ``a_ok`` = a < the image side.
        cdt: the compute dtype (float32, float64 for float64 inputs).

    Returns:
        ``(F, d, s, off)``: the filters F (N_P, A_P), zero in padded entries; the distances
        d = a - mu_i (N_P, A_P); the unnormalised row sums s (N_P,); the filters' offsets from the
        centre in strides, off = i - N/2 - 0.5 (N_P,).
    """
    # (2k + 1 - N) / 2 = (k + 1) - N/2 - 0.5, a half-integer computed exactly in integers.
    off = (2 * k + 1 - N).to(cdt) * 0.5
    mu = centre + off * delta
    d = a.to(cdt)[None, :] - mu[:, None]
    e = mask2(tl.exp(-(d * d) / (2.0 * sigma2)), k_ok, a_ok)
    s = tl.sum(e, axis=1)
    # The floor in the compute dtype (a float literal would be a float32 constant), and a comparison
    # that keeps NaN sums NaN, as torch's clamp_min does.
    eps = tl.full(s.shape, 1e-8, cdt)
    z = tl.where(s < eps, eps, s)
    return e / z[:, None], d, s, off


@triton.jit
def filterbank_param_grads(grad_f, f, d, s, off, sigma2, k_ok, a_ok, cdt: tl.constexpr):
    """Gradients of (centre, delta, sigma2) from the gradient ``grad_f`` (N_P, A_P) of the filterbank f.

    The reference's closed form in its order of operations
    (:func:`pyvidgen.kernels.reference.draw_filterbank.filterbank_backward`): with q_i = sum_a grad_f f
    (0 where the 1e-8 floor holds), r = (grad_f - q) f, and only the pixels of nonzero weight taking part
    (0 * an infinite distance would be NaN), dL/dmu_i = sum_a r d / sigma2,
    dL/dsigma2 = sum r d^2 / sigma2 / (2 sigma2), dL/dcentre = sum_i dL/dmu_i and
    dL/ddelta = sum_i off_i dL/dmu_i.

    Returns:
        Three scalars in ``cdt``: the gradients of centre, delta and sigma2.
    """
    # A padded entry of grad_f may be 0 * inf (an infinite gamma): exact zeros before any sum.
    grad_f = mask2(grad_f, k_ok, a_ok)
    eps = tl.full(s.shape, 1e-8, cdt)
    q = tl.where(s >= eps, tl.sum(grad_f * f, axis=1), 0.0)
    r = (grad_f - q[:, None]) * f
    nonzero = f != 0.0
    rd = tl.where(nonzero, r * d, 0.0)
    rdd = tl.where(nonzero, rd * d, 0.0)
    # Padded filters would add 0 / sigma2 (NaN for sigma2 = 0) to the sums over filters.
    g_mu = tl.where(k_ok, tl.sum(rd, axis=1) / sigma2, 0.0)
    g_sigma2 = tl.sum(tl.sum(rdd, axis=1), axis=0) / sigma2 / (2.0 * sigma2)
    g_centre = tl.sum(g_mu, axis=0)
    g_delta = tl.sum(tl.where(k_ok, g_mu * off, 0.0), axis=0)
    return g_centre, g_delta, g_sigma2


def tile(n: int) -> int:
    """The padded tile side for a dimension of size ``n``: a power of two, at least :data:`MIN_TILE`."""
    return max(MIN_TILE, triton.next_power_of_2(n))


def num_warps(height_tile: int, width_tile: int) -> int:
    """Warps per program: 4 up to 16 x 32 planes, 8 beyond (ptxas for sm_90: the write backward needs
    254 registers a thread at 32 x 32 with 4 warps, 184 with 8; 64 x 64 planes spill with 4)."""
    return 4 if height_tile * width_tile <= 512 else 8


def check_sizes(op: str, planes: int, height: int, width: int, n: int) -> None:
    """Refuse sizes the single-tile kernels do not cover, and launches whose offsets overflow int32.

    Raises:
        ValueError: naming the limit: H, W <= 64, 1 <= N <= 32, B * C < 2^31 programs.
    """
    if height > MAX_PIXELS or width > MAX_PIXELS:
        raise ValueError(
            f"{op}: the Triton kernels hold a whole image plane in one tile and support H, W <= {MAX_PIXELS}, "
            f"got H={height}, W={width}"
        )
    if not 1 <= n <= MAX_FILTERS:
        raise ValueError(f"{op}: the Triton kernels support 1 <= N <= {MAX_FILTERS} filters, got N={n}")
    # Offsets inside a plane are int32 (at most 64 * 64); the plane's base offset is int64.
    require_index_range(op, "the program count B * C", planes)


def check_params(op: str, anchor: Tensor, params: tuple[Tensor, ...]) -> None:
    """The five attention parameters must be contiguous (B,) tensors of the anchor's dtype and device."""
    batch = anchor.shape[0]
    for name, p in zip(("gx", "gy", "delta", "sigma2", "gamma"), params, strict=True):
        if tuple(p.shape) != (batch,) or p.dtype != anchor.dtype or p.device != anchor.device:
            raise ValueError(
                f"{op}: {name} must be a ({batch},) tensor of {anchor.dtype} on {anchor.device}, "
                f"got {tuple(p.shape)} {p.dtype} on {p.device}"
            )
        if not p.is_contiguous():
            raise ValueError(f"{op}: the Triton launchers take contiguous tensors; {name} is not")
