"""``pyvidgen.ops.draw_read``: DRAW's read attention, an N x N Gaussian glimpse of every channel.

The declaration below is the op's single description (see :mod:`pyvidgen.ops._spec`); semantics:
:mod:`pyvidgen.kernels.reference.draw_read` and :mod:`pyvidgen.kernels.reference.draw_filterbank`.
The sample builder of the attention parameters is shared with :mod:`pyvidgen.ops.draw_write`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from pyvidgen.ops._define import define
from pyvidgen.ops._spec import Bench, OpSpec, Samples, Shape, Target, Variant, square_sweep
from pyvidgen.tolerance import largest_finite

# Per-sample extremes drawn at magnitudes above 1, each what a diverging DRAW run feeds one glimpse.
_EXTREMES = ("image", "far", "narrow", "wide")


def sample_attention(
    batch: int, height: int, width: int, n: int, generator: torch.Generator, magnitude: float, on_pixels: bool = False
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Attention parameters (gx, gy, delta, sigma2, gamma), each (B,) float64, in pixel units.

    Typical (``magnitude`` <= 1): centres anywhere from half an image before it to half an image past it,
    a stride up to twice the one that tiles the image, ``sigma2 = exp(N(0, 1)) * (0.25 + delta^2 / 4)`` (the
    filters overlap their neighbours a little, as trained DRAW glimpses do), ``gamma = exp(N(0, 0.5^2))``.
    Above 1, every sample takes one extreme: ``"image"`` (only the image is scaled, by the caller),
    ``"far"`` (centres and stride times ``magnitude``: a glimpse far outside the image), ``"narrow"``
    (sigma2 divided by ``magnitude``: 1e-30 at 1e30) or ``"wide"`` (sigma2 times ``magnitude``).
    ``on_pixels``: integer centres and strides 0, 1 or 2 (every filter centred exactly on a pixel, a stride 0
    stacking them all on one).
    """
    extent = max(height, width)

    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(batch, generator=generator, dtype=torch.float64)

    if on_pixels:
        gx = torch.randint(0, width, (batch,), generator=generator).double()
        gy = torch.randint(0, height, (batch,), generator=generator).double()
        # An odd N centres its middle filter at g; an even N at g +- delta / 2: an even stride keeps it on pixels.
        delta = torch.randint(0, 3, (batch,), generator=generator).double()
        if n % 2 == 0:
            delta = 2 * (delta > 0).double()
    else:
        gx, gy = uniform(-width / 2, 1.5 * width), uniform(-height / 2, 1.5 * height)
        delta = uniform(0.05, 1.0) * 2 * extent / n
    sigma2 = torch.exp(torch.randn(batch, generator=generator, dtype=torch.float64)) * (0.25 + delta * delta / 4)
    gamma = torch.exp(0.5 * torch.randn(batch, generator=generator, dtype=torch.float64))
    if magnitude > 1:
        extreme = torch.randint(0, len(_EXTREMES), (batch,), generator=generator)
        far = extreme == _EXTREMES.index("far")
        sign = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0).double()
        gx = torch.where(far, sign * (gx.abs() + 1) * magnitude, gx)
        gy = torch.where(far, (gy.abs() + 1) * magnitude, gy)
        delta = torch.where(far, (delta + 1) * magnitude, delta)
        sigma2 = torch.where(extreme == _EXTREMES.index("narrow"), sigma2 / magnitude, sigma2)
        sigma2 = torch.where(extreme == _EXTREMES.index("wide"), sigma2 * magnitude, sigma2)
    return gx, gy, delta, sigma2, gamma


def _sample(
    dims: tuple[int, ...], generator: torch.Generator, magnitude: float, on_pixels: bool = False
) -> tuple[Tensor, ...]:
    """x ~ N(0, magnitude^2) (B, C, H, W) and :func:`sample_attention`'s parameters. ``dims`` = (B, C, H, W, N)."""
    batch, channels, height, width, n = dims
    x = torch.randn(batch, channels, height, width, generator=generator, dtype=torch.float64) * magnitude
    return (x, *sample_attention(batch, height, width, n, generator, magnitude, on_pixels))


def _check(x: Tensor, gx: Tensor, gy: Tensor, delta: Tensor, sigma2: Tensor, gamma: Tensor, N: int) -> None:  # noqa: N803
    if N < 1:
        raise ValueError(f"draw_read: the glimpse size N must be >= 1, got {N}")


def attention_error_growth(
    output: str, image: Tensor, gamma: Tensor, pixels: int, n: int
) -> Mapping[str, float] | None:
    """The error growth of the five parameter gradients, shared by read and write (None for other outputs).

    Each sums ``C N (H + W)``-odd rounded products (every channel's contraction, then every filter's pixels),
    of the size of the image (or patch) times gamma or 1 / gamma; the derivative factors ``d / sigma2`` scale
    the terms and their sum alike, so the relative tolerance covers them.
    """
    if output not in ("grad_gx", "grad_gy", "grad_delta", "grad_sigma2", "grad_gamma"):
        return None
    finite = gamma[torch.isfinite(gamma) & (gamma != 0)].abs()
    gain = max(1.0, float(finite.max()), 1.0 / float(finite.min())) if finite.numel() else 1.0
    return {"terms": math.prod(image.shape[1:]) * max(n, 1) + pixels, "scale": largest_finite(image) * gain}


def _error_growth(output: str, args: tuple[Any, ...]) -> Mapping[str, float]:
    x, gx, gy, delta, sigma2, gamma, n = args
    _, _, height, width = x.shape
    params = attention_error_growth(output, x, gamma, height * width, n)
    if params is not None:
        return params
    gain = max(1.0, largest_finite(gamma))
    if output == "out":
        # Two chained sums (over the columns, then the rows) of a normalised filter's weights.
        return {"terms": height * width, "scale": largest_finite(x) * gain}
    return {"terms": n * n, "scale": gain}  # grad_x: gamma Fy^T G Fx


# What read and write share: both take (B, C, H, W, N) sample and benchmark dims (H x W the image or canvas).
#: Sample sizes: a one-pixel image, N = 1, N larger than the image, primes, one, two and three channels.
ATTENTION_SIZES: dict[str, Any] = {
    "dims": ((2, 3, 5, 7, 3), (1, 1, 1, 1, 1), (3, 1, 4, 1, 2), (2, 3, 2, 3, 5), (1, 2, 11, 13, 4)),
    "large_dims": ((4, 3, 32, 32, 12), (3, 1, 28, 28, 5), (2, 5, 23, 37, 7)),
    "empty_dims": ((0, 3, 4, 5, 3), (2, 0, 4, 5, 3)),
    "check_dims": (4, 3, 17, 19, 6),
    "magnitudes": (1.0, 0.0, 1e3, 1e30),
    "gradcheck_dims": (2, 2, 4, 3, 3),
    "property_ranges": ((1, 4), (1, 3), (16, 40), (16, 40), (1, 12)),
}
#: The speed goals: at least 2x the eager reference and faster than its torch.compile, at a colour batch
#: (N = 12) and at MNIST sizes (N = 5).
ATTENTION_TARGETS = (
    Target("cpp", "eager", 2.0, shape="256x3x32x32x12"),
    Target("cpp", "compiled", 1.0, shape="256x3x32x32x12"),
    Target("cpp", "eager", 2.0, shape="64x1x28x28x5"),
    Target("cpp", "compiled", 1.0, shape="64x1x28x28x5"),
)
# The size sweep. N stays at the first shape's 12: the glimpse size sets the cost per image pixel (each meets N
# filters per axis), so the ladder shows what the image size alone changes, the per-sample filterbank set-up spread
# over more pixels. Colour images only (DRAW attends over images, not feature maps), up to 256²: DRAW works on 28² to
# 64² images, and at 512² two images would leave 6 (batch, channel) work items.
ATTENTION_SWEEP: dict[str, Any] = {
    "sweep": square_sweep(12),
    "sweep_channels": (3,),
    "sweep_sides": (32, 64, 128, 256),
}


DRAW_READ = define(
    OpSpec(
        name="draw_read",
        args="Tensor x, Tensor gx, Tensor gy, Tensor delta, Tensor sigma2, Tensor gamma, int N",
        layouts={
            "x": "(B, C, H, W)",
            "gx": "(B,)",
            "gy": "(B,)",
            "delta": "(B,)",
            "sigma2": "(B,)",
            "gamma": "(B,)",
        },
        outputs={"out": "(B, C, N, N)"},
        anchor="x",
        defaults={"N": 5},
        check=_check,
        backends=("reference", "cpp", "triton"),
        # The filterbank is a normalised exponential over pixel positions, a softmax, which torch's autocast
        # runs in float32; half-precision centres would also be off by up to half a pixel at W = 256.
        autocast="float32",
        error_growth=_error_growth,
        samples=Samples(
            build=_sample,
            options=lambda dims: {"N": dims[4]},
            variants=(Variant("glimpse"), Variant("on pixels", inputs={"on_pixels": True})),
            **ATTENTION_SIZES,
        ),
        bench=Bench(
            shapes=(
                Shape((256, 3, 32, 32, 12), quick=True, target=True),
                Shape((64, 1, 28, 28, 5), quick=True, target=True),
                Shape((64, 1, 28, 28, 2)),
                Shape((64, 3, 64, 64, 12)),
            ),
            shape_doc="x (B, C, H, W) read into (B, C, N, N): dims B x C x H x W x N",
            targets=ATTENTION_TARGETS,
            **ATTENTION_SWEEP,
        ),
    )
)


def draw_read(
    x: Tensor,
    gx: Tensor,
    gy: Tensor,
    delta: Tensor,
    sigma2: Tensor,
    gamma: Tensor,
    N: int,  # noqa: N803 - the paper's N
) -> Tensor:
    """DRAW read attention: ``gamma * Fy x Fx^T`` per channel, an N x N glimpse of each image.

    Filter i = 1..N of Fx is centred at ``mu_i = gx + (i - N/2 - 0.5) * delta`` over the columns a = 0..W-1:
    ``Fx[i, a] = exp(-(a - mu_i)^2 / (2 sigma2)) / max(sum_a exp(...), 1e-8)``; Fy likewise with gy over the
    rows. The filterbanks are built on the fly (never materialised per batch) by the C++ kernels.

    Args:
        x: (B, C, H, W) images, any number of channels.
        gx, gy: (B,) glimpse centre in pixels (column, row); any finite value (a glimpse may lie outside).
        delta: (B,) stride between filter centres in pixels (0 stacks every filter on the centre).
        sigma2: (B,) filter variance in pixels^2. DRAW predicts it as an exponential, so it is positive; a
            non-positive value is not checked (on a GPU that needs a device sync) and follows IEEE arithmetic:
            0 makes exactly-centred pixels NaN (0/0) and the others 0, a negative one overflows to NaN.
        gamma: (B,) intensity the glimpse is multiplied by.
        N: glimpse size, >= 1.

    Returns:
        (B, C, N, N), contiguous; differentiable w.r.t. x and all five parameters. A glimpse entirely outside
        the image reads 0 (the normaliser's 1e-8 floor), never NaN. Under ``torch.autocast`` every input is
        cast to float32 and the result is float32; half-precision inputs are computed in float32.

    Raises:
        ValueError: wrong ranks or shapes (parameters must be (B,)), or N < 1.
        TypeError: non-floating or mismatched dtypes. RuntimeError: tensors on different devices.
    """
    return DRAW_READ(x, gx, gy, delta, sigma2, gamma, int(N))
