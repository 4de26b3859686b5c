"""``pyvidgen.ops.conv_lstm_gates``: the fused ConvLSTM cell update (gates -> h, c_next).

The declaration below is the op's single description (see :mod:`pyvidgen.ops._spec`); the backward
recomputes the activations from the pre-activations instead of saving four activated gates.
Semantics: :mod:`pyvidgen.kernels.reference.conv_lstm_gates`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from pyvidgen.ops._define import define
from pyvidgen.ops._spec import Bench, CopyGoal, OpSpec, Samples, Shape, Target, Variant, square_sweep
from pyvidgen.tolerance import largest_finite

PEEPHOLE_KINDS = (None, "pixel", "channel")


def _sample(
    dims: tuple[int, ...], generator: torch.Generator, magnitude: float, peephole: str | None = None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Pre-activations ~ N(0, magnitude^2) (at 2: neither linear nor saturated; at 1e30 a diverged
    layer), c ~ N(0, 1.5^2) growing with the magnitude up to ten times that (a cell state cannot explode
    like the pre-activations: |c_next| <= |c| + 1 per step), peepholes ~ N(0, 1) per pixel or channel."""
    batch, channels, height, width = dims
    gates = torch.randn(batch, 4 * channels, height, width, generator=generator, dtype=torch.float64) * magnitude
    c = torch.randn(dims, generator=generator, dtype=torch.float64) * 1.5 * min(max(1.0, magnitude / 2), 10.0)
    weights = None
    if peephole is not None:
        shape = (3, channels, height, width) if peephole == "pixel" else (3, channels, 1, 1)
        weights = torch.randn(shape, generator=generator, dtype=torch.float64)
    return gates, c, weights


def _error_growth(output: str, args: tuple[Any, ...]) -> Mapping[str, float]:
    gates, c, peephole = args
    # The forget gate's gradient and the peephole gradients are products with the cell state: their
    # rounding grows with |c| (tens, when the gates saturate).
    scale = largest_finite(c) if output in ("grad_gates", "grad_peephole") else 1.0
    if output == "grad_c" and peephole is not None:
        # grad_c gathers the gates' gradients through the peephole weights (w_ci, w_cf): their rounding
        # is scaled by |w|.
        scale = largest_finite(peephole)
    if output == "grad_peephole":
        # Summed over the batch, and over the pixels for per-channel weights.
        per_weight = c.shape[0] * (1 if peephole.shape[-2:] != (1, 1) else c.shape[2] * c.shape[3])
        return {"terms": per_weight, "scale": scale}
    return {"terms": 4, "scale": scale}


_GATE_TARGETS = (Target("cpp", "eager", 3.0), Target("cpp", "compiled", 1.0))

CONV_LSTM_GATES = define(
    OpSpec(
        name="conv_lstm_gates",
        args="Tensor gates, Tensor c, Tensor? peephole",
        layouts={"gates": "(B, 4C, H, W)", "c": "(B, C, H, W)", "peephole": ("(3, C, H, W)", "(3, C, 1, 1)")},
        outputs={"h": "(B, C, H, W)", "c_next": "(B, C, H, W)"},
        anchor="c",
        # As torch does for lstm_cell: everything in the autocast dtype (the kernels compute in float32).
        autocast="lower",
        error_growth=_error_growth,
        samples=Samples(
            build=_sample,
            variants=tuple(Variant(f"peephole={kind or 'none'}", inputs={"peephole": kind}) for kind in PEEPHOLE_KINDS),
            # Sizes 1, primes, non-powers of two; large: planes longer than one cpp work tile (2048 pixels)
            # with ragged tails, many channels, and few (channel, tile) items per batch.
            dims=((2, 3, 5, 7), (1, 1, 1, 1), (3, 1, 2, 3), (2, 5, 1, 1), (1, 2, 1, 9), (2, 2, 7, 1)),
            large_dims=((4, 19, 17, 23), (2, 3, 50, 47), (1, 64, 16, 16), (40, 2, 3, 3)),
            empty_dims=((0, 3, 4, 5), (2, 0, 4, 5), (0, 1, 1, 1)),
            check_dims=(3, 5, 9, 7),
            magnitudes=(2.0, 0.0, 40.0, 1e4, 1e30),
            property_ranges=((1, 3), (1, 64), (1, 24), (16, 40)),
        ),
        bench=Bench(
            shapes=(
                Shape((16, 64, 32, 32), quick=True, target=True),
                Shape((4, 256, 16, 16)),
                # The spatio-temporal autoencoder's memory (Patraucean et al.): 45 channels.
                Shape((16, 45, 32, 32), quick=True),
                # The target shape at 4x the elements (64² frames): 3x the 32 MiB L3 of the reference machine in
                # gates alone, so the copy-bandwidth goal is judged on memory, not cache, traffic.
                Shape((16, 64, 64, 64)),
            ),
            shape_doc="c (B, C, H, W); gates (B, 4C, H, W); no peepholes (as Patraucean et al.)",
            # Elementwise and bound by exp/tanh: fusion saves the intermediates, and the backward's
            # recomputation saves storing the activations.
            targets=_GATE_TARGETS,
            sweep=square_sweep(),
            # Elementwise: 7 floats per (b, c, pixel) forward, 19 forward+backward. A CPU spends more on exp/tanh
            # than on those bytes at 2 cores, a GPU does not: the goal is that the fused pass streams.
            memory_bound=True,
            copy_goal=CopyGoal(0.75, shapes=("16x64x32x32", "16x64x64x64")),
        ),
    )
)


def conv_lstm_gates(gates: Tensor, c: Tensor, peephole: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Fused ConvLSTM cell update: activations, cell and hidden state in one pass.

    ``i = σ(g_i + w_ci·c)``, ``f = σ(g_f + w_cf·c)``, ``g = tanh(g_g)``, ``c_next = f·c + i·g``,
    ``o = σ(g_o + w_co·c_next)``, ``h = o·tanh(c_next)`` (peephole terms only when given).

    Args:
        gates: (B, 4C, H, W) gate pre-activations (input conv + hidden conv), blocks i, f, g, o.
        c: (B, C, H, W) previous cell state; same dtype and device as ``gates``.
        peephole: optional (3, C, H, W) or (3, C, 1, 1) peephole weights (w_ci, w_cf, w_co).

    Returns:
        (h, c_next), each (B, C, H, W), contiguous; differentiable w.r.t. gates, c and peephole. Under
        ``torch.autocast`` all inputs are cast to the autocast dtype (as ``torch.lstm_cell`` is); the
        math runs in float32 for every half-precision input.

    Raises:
        ValueError: wrong rank or shapes. TypeError: non-floating or mismatched dtypes.
        RuntimeError: tensors on different devices, or an explicit backend that cannot run.
    """
    return CONV_LSTM_GATES(gates, c, peephole)
