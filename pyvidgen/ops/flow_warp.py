"""``pyvidgen.ops.flow_warp``: bilinear warping of feature maps by a dense flow field.

The declaration below is the op's single description (see :mod:`pyvidgen.ops._spec`); semantics:
:mod:`pyvidgen.kernels.reference.flow_warp`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from pyvidgen.kernels.reference import flow_warp as reference
from pyvidgen.ops._define import define
from pyvidgen.ops._spec import Bench, OpSpec, Samples, Shape, Target, Variant, square_sweep
from pyvidgen.tolerance import largest_finite

PADDING_MODES = reference.PADDING_MODES


def _sample(
    dims: tuple[int, ...], generator: torch.Generator, magnitude: float, normalized: bool = False
) -> tuple[Tensor, Tensor]:
    """x ~ N(0, 1); flows uniform in [-magnitude, magnitude] pixels (a quarter of that in [-1, 1] units).

    At the default magnitude (3 pixels, as between neighbouring video frames) taps near the edges leave
    the image, so the padding is exercised; at 1e9 or 3e38 the flow has exploded.
    """
    batch, _, height, width = dims
    x = torch.randn(dims, generator=generator, dtype=torch.float64)
    reach = magnitude / 4 if normalized else magnitude
    flow = (torch.rand(batch, 2, height, width, generator=generator, dtype=torch.float64) * 2 - 1) * reach
    return x, flow


def _error_growth(output: str, args: tuple[Any, ...]) -> Mapping[str, float]:
    x, flow, _, normalized = args
    height, width = x.shape[-2:]
    if output == "grad_flow":
        # A sum over the channels, then scaled by (size - 1) / 2 for normalised flows.
        return {"terms": x.shape[1], "scale": (max(height, width) - 1) / 2 if normalized else 1.0}
    if output == "grad_x":
        # Far flows pile many samples onto the same source pixel (an edge, or anywhere when reflected).
        far = largest_finite(flow) > max(height, width) / 2
        return {"terms": height * width if far else 16}
    return {"terms": 4}


FLOW_WARP = define(
    OpSpec(
        name="flow_warp",
        args="Tensor x, Tensor flow, str padding_mode, bool normalized",
        layouts={"x": "(B, C, H, W)", "flow": "(B, 2, H, W)"},
        outputs={"out": "(B, C, H, W)"},
        anchor="x",
        defaults={"padding_mode": "zeros", "normalized": False},
        choices={"padding_mode": PADDING_MODES},
        # The Triton backward scatters grad_x with atomic adds.
        atomic_grads=("x",),
        # As torch does for grid_sample: the widest input dtype, so a float32 flow is never rounded to half.
        autocast="promote",
        error_growth=_error_growth,
        samples=Samples(
            build=_sample,
            variants=tuple(
                Variant(
                    f"{mode}{'/normalized' if normalized else ''}",
                    options={"padding_mode": mode, "normalized": normalized},
                    inputs={"normalized": normalized},
                )
                for mode in PADDING_MODES
                for normalized in (False, True)
            ),
            dims=((2, 3, 5, 7), (1, 1, 1, 1), (2, 2, 1, 9), (3, 2, 8, 1), (1, 5, 13, 11)),
            large_dims=((4, 19, 17, 23), (1, 64, 16, 16), (2, 3, 20, 37)),
            empty_dims=((0, 3, 4, 5), (2, 0, 4, 5)),
            check_dims=(3, 7, 13, 11),
            magnitudes=(3.0, 0.0, 50.0, 1e4, 1e9, 3e38),
            property_ranges=((1, 3), (1, 64), (1, 24), (16, 40)),
        ),
        bench=Bench(
            shapes=(
                Shape((16, 64, 64, 64), quick=True, target=True),
                Shape((4, 32, 128, 128)),
                Shape((16, 3, 64, 64), quick=True),
                Shape((1, 64, 32, 32), quick=True),
            ),
            shape_doc="x (B, C, H, W); flow (B, 2, H, W)",
            baselines={"grid_sample": reference.flow_warp_grid_sample},
            # The CPU kernel's goals, stated against the F.grid_sample formulation.
            targets=(Target("cpp", "grid_sample", 3.0), Target("cpp", "grid_sample_compiled", 1.0)),
            sweep=square_sweep(),
            # The flow's reach in pixels: 0 (every tap on a pixel centre), 2 (neighbouring frames), 8 and 32 (fast
            # motion: the taps of a row spread over rows far apart, which the caches no longer hold together).
            sweep_magnitudes=(0.0, 2.0, 8.0, 32.0),
            # Four taps per output, all but the compulsory traffic absorbed by the caches.
            memory_bound=True,
        ),
    )
)


def flow_warp(x: Tensor, flow: Tensor, *, padding_mode: str = "zeros", normalized: bool = False) -> Tensor:
    """Warp ``x`` by a dense flow with bilinear sampling.

    ``out[b, c, i, j]`` is ``x[b, c]`` sampled at row ``i + flow[b, 1, i, j]`` and column
    ``j + flow[b, 0, i, j]``. Equal to ``F.grid_sample(x, grid, align_corners=True)`` on the
    normalised grid for H, W > 1, in one fused kernel, and defined for H or W = 1 too.

    Args:
        x: (B, C, H, W) image or feature map; float16, bfloat16, float32 or float64 (positions and sums
            are computed in float32 for the half types).
        flow: (B, 2, H, W) displacement, same dtype and device as ``x``; channel 0 horizontal, 1 vertical.
        padding_mode: "zeros" (outside reads 0), "border" (edge pixel replicated) or "reflection"
            (mirrored about the first and last pixel centres).
        normalized: ``flow`` is in [-1, 1] units (1 = half the image extent, (W - 1) / 2 pixels)
            rather than pixels, as flows predicted by Patraucean et al.'s model are.

    Returns:
        (B, C, H, W) warped tensor, contiguous. A non-finite flow gives NaN at that pixel; a finite flow
        of any magnitude samples inside the image. Under ``torch.autocast`` both inputs are cast to the
        wider of their dtypes.

    Raises:
        ValueError: wrong rank or shape, unknown padding mode.
        TypeError: non-floating or mismatched dtypes.
        RuntimeError: tensors on different devices, or an explicitly chosen backend that cannot run.
    """
    return FLOW_WARP(x, flow, padding_mode, bool(normalized))
