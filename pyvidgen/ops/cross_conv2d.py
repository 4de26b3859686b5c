"""``pyvidgen.ops.cross_conv2d``: Visual Dynamics' cross convolution, per-sample depthwise kernels in one call.

The declaration below is the op's single description (see :mod:`pyvidgen.ops._spec`); semantics:
:mod:`pyvidgen.kernels.reference.cross_conv2d`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from pyvidgen.ops._define import define
from pyvidgen.ops._spec import Bench, OpSpec, Samples, Shape, Target, Variant, square_sweep
from pyvidgen.tolerance import largest_finite


def _sample(dims: tuple[int, ...], generator: torch.Generator, magnitude: float) -> tuple[Tensor, Tensor]:
    """x ~ N(0, magnitude^2) (B, C, H, W); kernels ~ N(0, 1 / (kh kw)) (B, C, kh, kw) with kh, kw made odd.
    ``dims`` = (B, C, H, W, kh, kw)."""
    batch, channels, height, width, kh, kw = dims
    x = torch.randn(batch, channels, height, width, generator=generator, dtype=torch.float64) * magnitude
    kernels = torch.randn(batch, channels, kh | 1, kw | 1, generator=generator, dtype=torch.float64)
    return x, kernels / ((kh | 1) * (kw | 1)) ** 0.5


def _check(x: Tensor, kernels: Tensor) -> None:
    for name, size in (("kh", kernels.shape[-2]), ("kw", kernels.shape[-1])):
        if size % 2 == 0:
            raise ValueError(f"cross_conv2d: the kernel size {name} must be odd (for 'same' padding), got {size}")


def _error_growth(output: str, args: tuple[Any, ...]) -> Mapping[str, float]:
    x, kernels = args
    taps = kernels.shape[-2] * kernels.shape[-1]
    if output == "out":
        return {"terms": taps, "scale": largest_finite(x)}
    if output == "grad_x":
        return {"terms": taps}
    # The kernel gradient sums over every pixel of the sample's channel.
    return {"terms": x.shape[-2] * x.shape[-1], "scale": largest_finite(x)}


CROSS_CONV2D = define(
    OpSpec(
        name="cross_conv2d",
        args="Tensor x, Tensor kernels",
        layouts={"x": "(B, C, H, W)", "kernels": "(B, C, KH, KW)"},
        outputs={"out": "(B, C, H, W)"},
        anchor="x",
        check=_check,
        backends=("reference", "cpp", "triton"),
        # As torch does for conv2d.
        autocast="lower",
        error_growth=_error_growth,
        samples=Samples(
            build=_sample,
            variants=(Variant("depthwise"),),
            # (B, C, H, W, kh, kw): 1x1 kernels and images, kernels wider than the image, rectangular kernels, primes.
            dims=((2, 3, 5, 7, 3, 3), (1, 1, 1, 1, 1, 1), (1, 2, 3, 2, 5, 7), (3, 2, 6, 5, 1, 3), (2, 1, 4, 9, 5, 5)),
            large_dims=((4, 32, 17, 23, 5, 5), (2, 16, 32, 32, 9, 9), (3, 9, 20, 37, 3, 7), (1, 3, 64, 64, 11, 11)),
            empty_dims=((0, 3, 4, 5, 3, 3), (2, 0, 4, 5, 3, 3)),
            check_dims=(3, 6, 13, 11, 5, 5),
            magnitudes=(1.0, 0.0, 1e3, 1e30),
            gradcheck_dims=(1, 2, 3, 3, 3, 3),
            property_ranges=((1, 4), (1, 32), (1, 40), (16, 40), (1, 9), (1, 9)),
        ),
        bench=Bench(
            shapes=(
                Shape((32, 32, 64, 64, 5, 5), quick=True, target=True),
                Shape((32, 32, 64, 64, 9, 9), quick=True, target=True),
                Shape((32, 32, 16, 16, 5, 5)),
                Shape((8, 32, 128, 128, 5, 5)),
            ),
            shape_doc="x (B, C, H, W), kernels (B, C, kh, kw): dims B x C x H x W x kh x kw",
            # The usual implementation is the reference itself: one grouped convolution with the batch folded
            # into the channels.
            targets=(
                Target("cpp", "eager", 4.0, shape="32x32x64x64x5x5"),
                Target("cpp", "compiled", 1.0, shape="32x32x64x64x5x5"),
                Target("cpp", "eager", 4.0, shape="32x32x64x64x9x9"),
                Target("cpp", "compiled", 1.0, shape="32x32x64x64x9x9"),
            ),
            # The first shape's 5x5 motion kernels, on 3-channel images and 32-channel feature maps.
            sweep=square_sweep(5, 5),
        ),
    )
)


def cross_conv2d(x: Tensor, kernels: Tensor) -> Tensor:
    """Cross convolution: each sample's feature maps cross-correlated with that sample's own kernels.

    ``out[b, c] = x[b, c] (*) kernels[b, c]`` (as ``F.conv2d``: a cross-correlation), zero "same" padding, the
    whole batch in one call: the layer of Visual Dynamics (Xue et al. 2016) that applies motion kernels decoded
    from a latent code to image feature maps. Deterministic: the kernel gradient, a sum over H x W per sample and
    channel, is reduced without atomics on every backend.

    Args:
        x: (B, C, H, W) feature maps.
        kernels: (B, C, kh, kw) one kernel per sample and channel; kh and kw odd (kh != kw allowed).

    Returns:
        (B, C, H, W), contiguous; differentiable w.r.t. x and kernels. Under ``torch.autocast`` both inputs are
        cast to the autocast dtype (as for ``conv2d``).

    Raises:
        ValueError: wrong ranks, kernels not (B, C, kh, kw) for x's B and C, or an even kernel size.
        TypeError: non-floating or mismatched dtypes. RuntimeError: tensors on different devices.
    """
    return CROSS_CONV2D(x, kernels)
