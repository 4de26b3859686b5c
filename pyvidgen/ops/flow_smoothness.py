"""``pyvidgen.ops.flow_smoothness``: Huber penalty on the forward differences of a flow field.

The declaration below is the op's single description (see :mod:`pyvidgen.ops._spec`); semantics:
:mod:`pyvidgen.kernels.reference.flow_smoothness`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from pyvidgen.ops._define import define
from pyvidgen.ops._layout import check_same
from pyvidgen.ops._spec import Bench, OpSpec, Samples, Shape, Target, Variant, square_sweep


def _sample(dims: tuple[int, ...], generator: torch.Generator, magnitude: float) -> tuple[Tensor]:
    """Flows uniform in [-magnitude, magnitude]: at 1.5, differences either side of delta (both Huber branches)."""
    return ((torch.rand(dims, generator=generator, dtype=torch.float64) * 2 - 1) * magnitude,)


def _check(flow: Tensor, delta: float) -> None:
    # Comparisons rather than math.isfinite: under torch.compile(dynamic=True) delta may be symbolic.
    if not 0 < delta < math.inf:
        raise ValueError(f"flow_smoothness: delta must be a finite number > 0, got {delta!r}")


def _error_growth(output: str, args: tuple[Any, ...]) -> Mapping[str, float]:
    flow = args[0]
    # The penalty sums two terms per element; each gradient element four clamped differences.
    return {"terms": 2 * flow.numel()} if output == "loss" else {"terms": 4}


FLOW_SMOOTHNESS = define(
    OpSpec(
        name="flow_smoothness",
        args="Tensor flow, float delta",
        layouts={"flow": "(B, C, H, W)"},
        outputs={"loss": "()"},
        anchor="flow",
        defaults={"delta": 1.0},
        check=_check,
        # A loss: float32 under autocast (as torch does for smooth_l1_loss), and float32 for half flows,
        # whose sum overflows float16 at ordinary sizes (16 x 2 x 64 x 64 of order-one terms).
        autocast="float32",
        float32_outputs=("loss",),
        error_growth=_error_growth,
        samples=Samples(
            build=_sample,
            variants=(Variant("delta=1", options={"delta": 1.0}), Variant("delta=0.3", options={"delta": 0.3})),
            dims=((2, 2, 5, 7), (1, 1, 1, 1), (2, 2, 1, 9), (3, 1, 8, 1), (1, 3, 13, 11)),
            large_dims=((4, 2, 33, 47), (1, 2, 64, 64)),
            empty_dims=((0, 2, 4, 5), (2, 2, 0, 5)),
            check_dims=(3, 2, 17, 19),
            magnitudes=(1.5, 0.0, 1e3, 1e30, 3e38),
            property_ranges=((1, 3), (1, 4), (1, 24), (16, 40)),
        ),
        bench=Bench(
            shapes=(Shape((16, 2, 64, 64), quick=True, target=True), Shape((4, 2, 256, 256))),
            shape_doc="flow (B, 2, H, W)",
            targets=(Target("cpp", "compiled", 1.0),),
            # A flow has two channels: only the side varies.
            sweep=square_sweep(),
            sweep_channels=(2,),
            memory_bound=True,
        ),
    )
)


def flow_smoothness(flow: Tensor, *, delta: float = 1.0) -> Tensor:
    """Huber smoothness penalty of a flow field (Patraucean et al. 2015).

    ``sum_{b,c,i,j} huber(flow[b,c,i,j+1] - flow[b,c,i,j]) + huber(flow[b,c,i+1,j] - flow[b,c,i,j])``
    with ``huber(d) = d^2 / 2`` for ``|d| <= delta`` and ``delta * (|d| - delta / 2)`` beyond.

    Args:
        flow: (B, C, H, W), usually C = 2.
        delta: Huber threshold, > 0.

    Returns:
        0-dim tensor, differentiable w.r.t. ``flow``: in ``flow``'s dtype for float32/float64, in float32
        for float16/bfloat16 flows (and under ``torch.autocast``), whose sums would overflow.
    """
    return FLOW_SMOOTHNESS(flow, float(delta))


def flow_smoothness_grad(flow: Tensor, *, delta: float = 1.0, scale: Tensor | float = 1.0) -> Tensor:
    """``scale * d flow_smoothness(flow) / d flow`` in one fused call (what :class:`pyvidgen.nn.HuberPenalty` injects).

    Args:
        flow: (B, C, H, W).
        delta: Huber threshold, > 0.
        scale: multiplier, a Python number or a 0-dim tensor on ``flow``'s device.

    Returns:
        (B, C, H, W) gradient in ``flow``'s dtype, contiguous.
    """
    op = "flow_smoothness_grad"
    FLOW_SMOOTHNESS.check_arguments((flow, float(delta)))
    if not isinstance(scale, Tensor):
        scale = torch.tensor(float(scale), dtype=flow.dtype, device=flow.device)
    if scale.dim() != 0:
        raise ValueError(f"{op}: scale must be a 0-dim tensor or a number, got shape {tuple(scale.shape)}")
    check_same(op, "scale", scale, "flow", flow)
    return FLOW_SMOOTHNESS.backward_op(scale, flow, float(delta), [True])
