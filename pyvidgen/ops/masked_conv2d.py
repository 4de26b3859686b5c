"""``pyvidgen.ops.masked_conv2d``: the causal convolution of PixelCNN decoders, without the hidden taps' work.

The declaration below is the op's single description (see :mod:`pyvidgen.ops._spec`); semantics:
:mod:`pyvidgen.kernels.reference.masked_conv2d`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from pyvidgen.kernels.reference import masked_conv2d as reference
from pyvidgen.ops._define import define
from pyvidgen.ops._spec import Bench, OpSpec, Samples, Shape, Target, Variant, sweep_batch
from pyvidgen.tolerance import largest_finite

MASK_TYPES = reference.MASK_TYPES


def _sample(
    dims: tuple[int, ...], generator: torch.Generator, magnitude: float, bias: bool = True
) -> tuple[Tensor, Tensor, Tensor | None]:
    """x ~ N(0, magnitude^2) (B, Cin, H, W); weight ~ N(0, 1 / (Cin K^2)) (Cout, Cin, K, K) with K made odd;
    bias ~ N(0, 0.1^2). ``dims`` = (B, Cin, H, W, Cout, K)."""
    batch, cin, height, width, cout, kernel = dims
    kernel = kernel | 1
    x = torch.randn(batch, cin, height, width, generator=generator, dtype=torch.float64) * magnitude
    weight = torch.randn(cout, cin, kernel, kernel, generator=generator, dtype=torch.float64) / (cin * kernel**2) ** 0.5
    b = torch.randn(cout, generator=generator, dtype=torch.float64) * 0.1 if bias else None
    return x, weight, b


def _check(x: Tensor, weight: Tensor, bias: Tensor | None, mask_type: str, color_groups: int, dilation: int) -> None:
    if weight.shape[-1] % 2 == 0:
        raise ValueError(f"masked_conv2d: the kernel size K must be odd (for 'same' padding), got {weight.shape[-1]}")
    if not 1 <= color_groups <= min(x.shape[1], weight.shape[0]):
        limit = min(x.shape[1], weight.shape[0])
        raise ValueError(
            f"masked_conv2d: color_groups must be in [1, min(Cin, Cout)] = [1, {limit}], got {color_groups}"
        )
    if dilation < 1:
        raise ValueError(f"masked_conv2d: dilation must be >= 1, got {dilation}")


def _error_growth(output: str, args: tuple[Any, ...]) -> Mapping[str, float]:
    x, weight, _, _, _, _ = args
    cout, cin, k = weight.shape[0], weight.shape[1], weight.shape[-1]
    visible_taps = k * (k // 2 + 1)
    batch, _, height, width = x.shape
    if output == "out":
        return {"terms": cin * visible_taps, "scale": largest_finite(x)}
    if output == "grad_x":
        return {"terms": cout * visible_taps}
    # Weight and bias gradients sum over every output pixel.
    return {"terms": batch * height * width, "scale": largest_finite(x) if output == "grad_weight" else 1.0}


def _sweep_dims(side: int, channels: int, elements: int) -> tuple[int, ...]:
    """A ``channels`` -> ``channels`` layer with 3x3 taps at ``side``² (see the sweep in the declaration)."""
    return (sweep_batch(elements, channels, side), channels, side, side, channels, 3)


MASKED_CONV2D = define(
    OpSpec(
        name="masked_conv2d",
        args="Tensor x, Tensor weight, Tensor? bias, str mask_type, int color_groups, int dilation",
        layouts={"x": "(B, Cin, H, W)", "weight": "(Cout, Cin, K, K)", "bias": "(Cout,)"},
        outputs={"out": "(B, Cout, H, W)"},
        anchor="x",
        defaults={"mask_type": "A", "color_groups": 1, "dilation": 1},
        choices={"mask_type": MASK_TYPES},
        check=_check,
        # The dense part runs in oneDNN, whose weight-gradient reduction is split by thread.
        thread_invariant=False,
        # As torch does for conv2d.
        autocast="lower",
        # A channels_last model's feature maps stay channels_last, as conv2d's do; the C++ kernel then skips
        # its transposes.
        channels_last=("x", "out"),
        channels_last_backends=("cpp",),
        error_growth=_error_growth,
        samples=Samples(
            build=_sample,
            variants=(
                Variant("A", options={"mask_type": "A"}),
                Variant("B", options={"mask_type": "B"}),
                Variant("A/groups=3", options={"mask_type": "A", "color_groups": 3}),
                Variant(
                    "B/groups=3/dilation=2/no bias",
                    options={"mask_type": "B", "color_groups": 3, "dilation": 2},
                    inputs={"bias": False},
                ),
            ),
            # (B, Cin, H, W, Cout, K): 1x1 and single-pixel images, kernels wider than the image, odd sizes.
            dims=((2, 3, 5, 7, 4, 3), (1, 3, 1, 1, 3, 3), (1, 3, 4, 4, 3, 1), (2, 4, 6, 3, 5, 5)),
            large_dims=((4, 16, 17, 23, 24, 3), (2, 32, 16, 16, 32, 7), (3, 9, 20, 37, 12, 5)),
            empty_dims=((0, 3, 4, 5, 4, 3),),
            check_dims=(3, 6, 13, 11, 9, 5),
            magnitudes=(1.0, 0.0, 1e3, 1e30),
            # Three channels each side for the colour-group variants.
            gradcheck_dims=(1, 3, 3, 4, 3, 3),
            property_ranges=((1, 2), (3, 16), (1, 20), (16, 32), (3, 16), (1, 7)),
        ),
        bench=Bench(
            shapes=(
                Shape((16, 64, 32, 32, 64, 7), quick=True, target=True, variant="A"),
                Shape((16, 64, 32, 32, 64, 3), quick=True, target=True, variant="B"),
                Shape((16, 3, 64, 64, 64, 7), variant="A/groups=3"),
            ),
            shape_doc="x (B, Cin, H, W), weight (Cout, Cin, K, K): dims B x Cin x H x W x Cout x K / variant",
            variant="A",
            baselines={"masked_weight": reference.masked_conv2d_dense},
            # The usual implementation is a dense convolution of weight * mask.
            targets=(
                Target("cpp", "masked_weight", 1.6, shape="16x64x32x32x64x7/A"),
                Target("cpp", "masked_weight_compiled", 1.0, shape="16x64x32x32x64x7/A"),
                Target("cpp", "masked_weight", 1.3, shape="16x64x32x32x64x3/B"),
            ),
            # A 32 -> 32 channel layer with 3x3 taps, a PixelCNN body layer: its channel count is the model's width,
            # not the data's, so it is fixed. Sides up to 256 only: one 32-channel 512² image is already 4x the
            # element budget (B = 1), so that point alone (~14 GFLOP forward+backward) would cost as much as the
            # rest of the ladder together; PixelCNN-style decoders generate frames of 32² to 256².
            sweep=_sweep_dims,
            sweep_channels=(32,),
            sweep_sides=(32, 64, 128, 256),
        ),
    )
)


def masked_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    mask_type: str = "A",
    color_groups: int = 1,
    dilation: int = 1,
) -> Tensor:
    """Causal (masked) convolution of PixelCNN decoders: each output sees only earlier pixels (and colours).

    Visible taps: every row above the centre; in the centre row the taps left of the centre; the centre
    tap itself for mask "B" (hidden for "A"), or, with G colour groups (channel c of n is in group
    ``floor(c * G / n)``), iff the input's group precedes the output's ("A") or does not follow it ("B").
    The hidden taps' weights are ignored (never modified) and get an exactly zero gradient; the rows below
    the centre are not computed at all (about half the work of a dense convolution of ``weight * mask``).

    Args:
        x: (B, Cin, H, W).
        weight: (Cout, Cin, K, K), K odd.
        bias: optional (Cout,).
        mask_type: "A" for a decoder's first layer (a pixel never sees itself), "B" after it.
        color_groups: G >= 1 channel groups generated in order within a pixel (3 for RGB); G <= min(Cin, Cout).
        dilation: spacing of the taps; the padding keeps H x W.

    Returns:
        (B, Cout, H, W), contiguous, or channels_last-contiguous when x is (as ``conv2d`` returns it; x's
        gradient then is too). Under ``torch.autocast`` every input is cast to the autocast dtype (as
        for ``conv2d``).

    Raises:
        ValueError: wrong ranks or shapes, an even kernel, a bad mask type, colour group count or dilation.
        TypeError: non-floating or mismatched dtypes. RuntimeError: tensors on different devices.
    """
    return MASKED_CONV2D(x, weight, bias, mask_type, int(color_groups), int(dilation))
