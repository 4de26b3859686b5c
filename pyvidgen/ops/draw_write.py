"""``pyvidgen.ops.draw_write``: DRAW's write attention, an N x N patch spread over an H x W canvas.

The declaration below is the op's single description (see :mod:`pyvidgen.ops._spec`); semantics:
:mod:`pyvidgen.kernels.reference.draw_write` and :mod:`pyvidgen.kernels.reference.draw_filterbank`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from pyvidgen.ops._define import define
from pyvidgen.ops._spec import Bench, OpSpec, Samples, Shape, Variant
from pyvidgen.ops.draw_read import (
    ATTENTION_SIZES,
    ATTENTION_SWEEP,
    ATTENTION_TARGETS,
    attention_error_growth,
    sample_attention,
)
from pyvidgen.tolerance import largest_finite


def _sample(
    dims: tuple[int, ...], generator: torch.Generator, magnitude: float, on_pixels: bool = False
) -> tuple[Tensor, ...]:
    """w ~ N(0, magnitude^2) (B, C, N, N) and the attention parameters of
    :func:`pyvidgen.ops.draw_read.sample_attention`. ``dims`` = (B, C, H, W, N): H x W is the canvas."""
    batch, channels, height, width, n = dims
    w = torch.randn(batch, channels, n, n, generator=generator, dtype=torch.float64) * magnitude
    return (w, *sample_attention(batch, height, width, n, generator, magnitude, on_pixels))


def _check(w: Tensor, gx: Tensor, gy: Tensor, delta: Tensor, sigma2: Tensor, gamma: Tensor, H: int, W: int) -> None:  # noqa: N803
    for name, size in (("H", H), ("W", W)):
        if size < 1:
            raise ValueError(f"draw_write: the canvas size {name} must be >= 1, got {size}")


def _error_growth(output: str, args: tuple[Any, ...]) -> Mapping[str, float]:
    w, gx, gy, delta, sigma2, gamma, height, width = args
    n = w.shape[-1]
    params = attention_error_growth(output, w, gamma, height * width, n)
    if params is not None:
        return params
    finite = gamma[torch.isfinite(gamma) & (gamma != 0)]
    gain = max(1.0, 1.0 / float(finite.abs().min())) if finite.numel() else 1.0
    if output == "out":
        return {"terms": n * n, "scale": largest_finite(w) * gain}
    return {"terms": height * width, "scale": gain}  # grad_w: Fy G Fx^T / gamma


DRAW_WRITE = define(
    OpSpec(
        name="draw_write",
        args="Tensor w, Tensor gx, Tensor gy, Tensor delta, Tensor sigma2, Tensor gamma, int H, int W",
        layouts={
            "w": "(B, C, N, N)",
            "gx": "(B,)",
            "gy": "(B,)",
            "delta": "(B,)",
            "sigma2": "(B,)",
            "gamma": "(B,)",
        },
        outputs={"out": "(B, C, H, W)"},
        anchor="w",
        defaults={"H": 28, "W": 28},
        check=_check,
        backends=("reference", "cpp", "triton"),
        # As draw_read: a normalised exponential over positions (torch's autocast runs softmax in float32), and
        # a float32 result keeps DRAW's canvas, a sum of T writes, from accumulating half-precision rounding.
        autocast="float32",
        error_growth=_error_growth,
        samples=Samples(
            build=_sample,
            options=lambda dims: {"H": dims[2], "W": dims[3]},
            variants=(Variant("glimpse"), Variant("on pixels", inputs={"on_pixels": True})),
            **ATTENTION_SIZES,
        ),
        bench=Bench(
            shapes=(
                Shape((256, 3, 32, 32, 12), quick=True, target=True),
                Shape((64, 1, 28, 28, 5), quick=True, target=True),
                Shape((64, 3, 64, 64, 12)),
            ),
            shape_doc="w (B, C, N, N) written onto (B, C, H, W): dims B x C x H x W x N",
            targets=ATTENTION_TARGETS,
            **ATTENTION_SWEEP,
        ),
    )
)


def draw_write(
    w: Tensor,
    gx: Tensor,
    gy: Tensor,
    delta: Tensor,
    sigma2: Tensor,
    gamma: Tensor,
    H: int,  # noqa: N803 - the canvas's H
    W: int,  # noqa: N803 - the canvas's W
) -> Tensor:
    """DRAW write attention: ``Fy^T w Fx / gamma`` per channel, an N x N patch spread over an H x W canvas.

    The filterbanks are :func:`pyvidgen.ops.draw_read.draw_read`'s (Fx over W columns around gx, Fy over H
    rows around gy); write is read's adjoint up to gamma: ``<read(x), w> = gamma^2 <x, write(w)>``.

    Args:
        w: (B, C, N, N) patches, any number of channels.
        gx, gy: (B,) patch centre in pixels (column, row).
        delta: (B,) stride between filter centres in pixels.
        sigma2: (B,) filter variance in pixels^2, positive (a non-positive one is not checked and follows IEEE
            arithmetic, see :func:`~pyvidgen.ops.draw_read.draw_read`).
        gamma: (B,) intensity the patch is divided by; 0 gives infinities (division by zero), unchecked.
        H, W: canvas size, each >= 1.

    Returns:
        (B, C, H, W), contiguous; differentiable w.r.t. w and all five parameters. Under ``torch.autocast``
        every input is cast to float32 and the result is float32; half-precision inputs are computed in float32.

    Raises:
        ValueError: wrong ranks or shapes (parameters must be (B,)), or H, W < 1.
        TypeError: non-floating or mismatched dtypes. RuntimeError: tensors on different devices.
    """
    return DRAW_WRITE(w, gx, gy, delta, sigma2, gamma, int(H), int(W))
