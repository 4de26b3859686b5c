"""Which sizes ``pyvidgen bench`` times besides the registry's: sizes a user names, and the size ladder.

* ``--shape B,C,H,W[,...]``: :func:`fit_shape` completes the dims a user gave for an op whose dims have more
  entries (DRAW's N, a convolution's Cout and K) from that op's first benchmark shape.
* ``--sweep``: :func:`sweep_points` walks an op's declared ladder (``Bench.sweep``): every side of
  ``Bench.sweep_sides`` (square frames) at every channel count of ``Bench.sweep_channels`` (and every magnitude
  of ``Bench.sweep_magnitudes``), with the batch chosen so that each point holds the same number of elements.
  Per-element costs are then comparable along the ladder, and what changes is only what the image size changes:
  per-image and per-row overheads, edge effects, the parallel work items left at few large images.

Both return, per op, the :class:`~pyvidgen.ops._spec.Shape` list that :func:`pyvidgen.bench.runner.run` takes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from pyvidgen.bench import cases
from pyvidgen.bench.cases import OpBench, Shape
from pyvidgen.ops._spec import SWEEP_ELEMENTS

__all__ = [
    "SWEEP_BUDGET",
    "SWEEP_ELEMENTS",
    "count_timings",
    "fit_shape",
    "sweep_plan",
    "sweep_points",
    "sweep_providers",
    "user_shapes",
]

# (seconds, min_runs) per provider and point, by --quick. Tens of points per op: a fraction of the ordinary
# budget keeps ``--sweep --quick`` of every op in both modes to a few minutes on two cores (about 450 timings),
# and the plain sweep at the ordinary quick budget to about twice that.
SWEEP_BUDGET = {True: (0.1, 3), False: (0.3, 5)}


def fit_shape(entry: OpBench, dims: Sequence[int]) -> Shape:
    """``dims`` as a shape of ``entry``: entries it lacks (past B, C, H, W) come from the op's first benchmark shape.

    Raises:
        ValueError: more entries than the op's dims have (the message names ``--shape`` and the op's dims).
    """
    first = entry.shapes[0].dims
    if len(dims) > len(first):
        raise ValueError(
            f"--shape {','.join(map(str, dims))}: {entry.name} takes {len(first)} dims ({entry.shape_doc}), "
            f"got {len(dims)}"
        )
    return Shape((*dims, *first[len(dims) :]), quick=True)


def user_shapes(ops: Sequence[str], shapes: Sequence[Sequence[int]]) -> dict[str, list[Shape]]:
    """Every ``--shape`` fitted to every op of ``ops`` (a shape applies to each op); ValueError as :func:`fit_shape`."""
    return {name: [fit_shape(cases.get(name), dims) for dims in shapes] for name in ops}


def sweep_points(entry: OpBench, elements: int = SWEEP_ELEMENTS, sides: Sequence[int] | None = None) -> list[Shape]:
    """The op's sweep: one shape per (channels, magnitude, side), each series in side order.

    Args:
        entry: the op (its ``Bench.sweep`` must be declared).
        elements: the element budget of a point's (B, C, H, W) tensor.
        sides: the sides to walk instead of the declared ladder (tests use tiny ones).

    Returns:
        Shapes tagged with ``side, channels, elements`` (B * C * H * W, the budget or just below, more only where
        one image exceeds it) and, where the op sweeps magnitudes, ``magnitude``.
    """
    bench = entry.bench
    if bench.sweep is None:
        raise ValueError(f"{entry.name} declares no sweep")
    points = []
    for channels in bench.sweep_channels:
        for magnitude in bench.sweep_magnitudes or (None,):
            for side in sides if sides is not None else bench.sweep_sides:
                dims = tuple(bench.sweep(side, channels, elements))
                tags = {"side": side, "channels": channels, "elements": math.prod(dims[:4])}
                if magnitude is not None:
                    tags["magnitude"] = magnitude
                points.append(Shape(dims, quick=True, magnitude=magnitude, tags=tags))
    return points


def sweep_plan(ops: Sequence[str], elements: int = SWEEP_ELEMENTS) -> dict[str, list[Shape]]:
    """The sweep points of every op of ``ops`` that declares a sweep."""
    return {name: sweep_points(cases.get(name), elements) for name in ops if cases.get(name).bench.sweep is not None}


def _runs(entry: OpBench, name: str, device: torch.device | str) -> bool:
    try:
        cases.provider(entry, name, device)
    except cases.Unavailable:
        return False
    return True


def sweep_providers(ops: Sequence[str], device: torch.device | str) -> list[str]:
    """The providers a sweep times unless told otherwise: those that run on ``device``, but not the compiled ones.

    ``torch.compile`` with static shapes compiles every point again, tens of seconds each on a small CPU: more
    than the rest of the sweep together. ``--provider compiled`` still adds them.
    """
    names: dict[str, None] = {}
    for op in ops:
        entry = cases.get(op)
        for name in entry.providers():
            if not name.endswith("compiled") and _runs(entry, name, device):
                names[name] = None
    return list(names)


def count_timings(
    plan: Mapping[str, Sequence[Shape]],
    modes: Sequence[str],
    providers: Sequence[str] | None,
    device: torch.device | str,
) -> tuple[int, int]:
    """(points, timings) of a plan: shapes over all ops, and (shape, mode, provider) measurements on ``device``
    (providers that cannot run there are not counted: they are skipped at once)."""
    points = sum(len(shapes) for shapes in plan.values())
    timings = 0
    for name, shapes in plan.items():
        entry = cases.get(name)
        names = [p for p in entry.providers() if (providers is None or p in providers) and _runs(entry, p, device)]
        timings += len(shapes) * len(modes) * len(names)
    return points, timings
