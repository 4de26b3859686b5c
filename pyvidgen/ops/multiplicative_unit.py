"""``pyvidgen.ops.multiplicative_unit``: Video Pixel Networks' multiplicative unit, fused.

The declaration below is the op's single description (see :mod:`pyvidgen.ops._spec`); the backward
recomputes the activations. Semantics: :mod:`pyvidgen.kernels.reference.multiplicative_unit`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from pyvidgen.ops._define import define
from pyvidgen.ops._spec import Bench, CopyGoal, OpSpec, Samples, Shape, Target, Variant, square_sweep
from pyvidgen.tolerance import largest_finite


def _sample(dims: tuple[int, ...], generator: torch.Generator, magnitude: float) -> tuple[Tensor, Tensor]:
    """Pre-activations ~ N(0, magnitude^2) (at 2: neither linear nor saturated), h ~ N(0, 1) (scaled beyond)."""
    batch, channels, height, width = dims
    pre = torch.randn(batch, 4 * channels, height, width, generator=generator, dtype=torch.float64) * magnitude
    h = torch.randn(dims, generator=generator, dtype=torch.float64) * max(1.0, magnitude / 2)
    return pre, h


def _error_growth(output: str, args: tuple[Any, ...]) -> Mapping[str, float]:
    pre, h = args
    # The gradient of g2 is a product with h: its rounding grows with |h|.
    return {"terms": 4, "scale": largest_finite(h) if output == "grad_pre" else 1.0}


MULTIPLICATIVE_UNIT = define(
    OpSpec(
        name="multiplicative_unit",
        args="Tensor pre, Tensor h",
        layouts={"pre": "(B, 4C, H, W)", "h": "(B, C, H, W)"},
        outputs={"out": "(B, C, H, W)"},
        anchor="h",
        # A gate nonlinearity like lstm_cell: everything in the autocast dtype (computed in float32).
        autocast="lower",
        # A channels_last model's feature maps stay channels_last; the C++ kernel runs each pixel's channels.
        channels_last=("pre", "h", "out"),
        channels_last_backends=("cpp",),
        error_growth=_error_growth,
        samples=Samples(
            build=_sample,
            variants=(Variant("MU"),),
            dims=((2, 3, 5, 7), (1, 1, 1, 1), (3, 1, 2, 3), (2, 5, 1, 1), (1, 2, 1, 9)),
            large_dims=((4, 19, 17, 23), (2, 3, 50, 47), (1, 64, 16, 16)),
            empty_dims=((0, 3, 4, 5), (2, 0, 4, 5)),
            check_dims=(3, 5, 9, 7),
            magnitudes=(2.0, 0.0, 40.0, 1e4, 1e30),
            property_ranges=((1, 3), (1, 64), (1, 24), (16, 40)),
        ),
        bench=Bench(
            shapes=(
                Shape((16, 128, 32, 32), quick=True, target=True),
                Shape((4, 256, 16, 16)),
                # The target shape at 4x the elements (64² frames), well beyond the last-level cache: where the
                # copy-bandwidth goal is judged on memory traffic.
                Shape((16, 128, 64, 64)),
            ),
            shape_doc="h (B, C, H, W); pre (B, 4C, H, W)",
            targets=(Target("cpp", "eager", 3.0), Target("cpp", "compiled", 1.0)),
            sweep=square_sweep(),
            # Elementwise: 6 floats per (b, c, pixel) forward, 17 forward+backward.
            memory_bound=True,
            copy_goal=CopyGoal(0.75, shapes=("16x128x32x32", "16x128x64x64")),
        ),
    )
)


def multiplicative_unit(pre: Tensor, h: Tensor) -> Tensor:
    """Video Pixel Networks' multiplicative unit: ``σ(g1)·tanh(σ(g2)·h + σ(g3)·tanh(u))``.

    Args:
        pre: (B, 4C, H, W) pre-activations (four convolutions of h), blocks g1, g2, g3, u.
        h: (B, C, H, W) the unit's input; same dtype and device as ``pre``.

    Returns:
        (B, C, H, W), contiguous, or channels_last-contiguous when h is (a channels_last model's feature
        map; the gradients of pre and h then are too); differentiable w.r.t. pre and h. Under
        ``torch.autocast`` both inputs are cast to the autocast dtype; the math runs in float32 for
        half-precision inputs.

    Raises:
        ValueError: wrong rank or shapes. TypeError: non-floating or mismatched dtypes.
        RuntimeError: tensors on different devices, or an explicit backend that cannot run.
    """
    return MULTIPLICATIVE_UNIT(pre, h)
