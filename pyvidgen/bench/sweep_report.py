"""Reports of ``pyvidgen bench --sweep``: how the per-element cost moves along the ladder, and the sweep plot.

The table and JSON are :mod:`pyvidgen.bench.report`'s (sweep rows carry ``side, channels, magnitude, elements`` and
``ns_per_element``, which the table prints); this module adds what only a ladder shows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Row = dict[str, Any]

# The bar for "speed that holds at every size": a kernel's cost per element moves by at most this factor
# between the sides of one (channels, magnitude) series.
SPREAD_GOAL = 1.5
_KERNELS = ("cpp", "triton")


def _sweep_rows(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if r.get("status") == "ok" and "side" in r and r.get("ns_per_element") is not None]


def _series(row: Row) -> tuple[int, float | None]:
    return row["channels"], row.get("magnitude")


def _series_name(channels: int, magnitude: float | None) -> str:
    return f"C={channels}" + ("" if magnitude is None else f" m={magnitude:g}")


def spread_lines(rows: Sequence[Row]) -> list[str]:
    """Per (op, mode, provider): the largest max / min ns per element across the sides of one series.

    Channel counts and magnitudes are kept apart: they change the bytes and the access pattern per element (a
    3-channel warp reads its flow for every 3 values, a 32-channel one for every 32), so only the side is
    compared. The pyvidgen kernels get a verdict against :data:`SPREAD_GOAL`.
    """
    grouped: dict[tuple[str, str, str], dict[tuple[int, float | None], list[float]]] = {}
    for row in _sweep_rows(rows):
        key = (row["op"], row["mode"], row["provider"])
        grouped.setdefault(key, {}).setdefault(_series(row), []).append(row["ns_per_element"])
    lines = []
    for (op, mode, provider), by_series in grouped.items():
        spreads = {series: max(ns) / min(ns) for series, ns in by_series.items() if len(ns) > 1 and min(ns) > 0}
        if not spreads:
            continue
        worst = max(spreads, key=spreads.get)
        verdict = ""
        if provider in _KERNELS:
            verdict = f" (goal <= {SPREAD_GOAL:g}x) {'MET' if spreads[worst] <= SPREAD_GOAL else 'NOT MET'}"
        lines.append(
            f"ns/elem across sides: {op} {mode} {provider} varies up to {spreads[worst]:.2f}x "
            f"({_series_name(*worst)}){verdict}"
        )
    return lines


def plot_sweep(rows: Sequence[Row], path: str | os.PathLike, title: str | None = None) -> Path:
    """One row of axes per op: speedup vs eager against the side (one column per mode), then ns per element.

    One line per provider and channel count (and magnitude, for flow_warp): colour = provider, line style =
    channel count, marker = magnitude. Both axes are logarithmic (x in base 2: the ladder doubles); the speedup
    axes carry the 1x line. Drawn on matplotlib's Agg canvas directly, as :func:`pyvidgen.bench.report.plot`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    measured = _sweep_rows(rows)
    ops = list(dict.fromkeys(r["op"] for r in measured))
    modes = list(dict.fromkeys(r["mode"] for r in measured))
    providers = list(dict.fromkeys(r["provider"] for r in measured))
    columns = [("speedup", m) for m in modes] + [("ns", m) for m in modes]
    fig = Figure(figsize=(4.2 * max(1, len(columns)) + 2.5, 3.0 * max(1, len(ops))), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(1, len(ops)), max(1, len(columns)), squeeze=False)
    colours = {p: f"C{i % 10}" for i, p in enumerate(providers)}
    for i, op in enumerate(ops):
        here = [r for r in measured if r["op"] == op]
        channels = list(dict.fromkeys(r["channels"] for r in here))
        magnitudes = list(dict.fromkeys(r.get("magnitude") for r in here))
        sides = sorted({r["side"] for r in here})
        for j, (kind, mode) in enumerate(columns):
            ax = axes[i][j]
            for provider in providers:
                if kind == "speedup" and provider == "eager":
                    continue  # 1x by definition: the axhline
                for c in channels:
                    for m in magnitudes:
                        points = sorted(
                            (r["side"], r["speedup"].get("eager") if kind == "speedup" else r["ns_per_element"])
                            for r in here
                            if (r["mode"], r["provider"], _series(r)) == (mode, provider, (c, m))
                        )
                        points = [(x, y) for x, y in points if y is not None]
                        if not points:
                            continue
                        ax.plot(
                            *zip(*points, strict=True),
                            color=colours[provider],
                            linestyle=("-", "--", ":", "-.")[channels.index(c) % 4],
                            marker="osD^v*"[magnitudes.index(m) % 6],
                            markersize=3,
                            linewidth=1,
                            label=f"{provider} {_series_name(c, m)}",
                        )
            if kind == "speedup":
                ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(sides, [str(s) for s in sides])
            ax.set_title(f"{op} {mode}", fontsize=8)
            ax.set_xlabel("side (H = W)", fontsize=7)
            ax.set_ylabel("speedup vs eager" if kind == "speedup" else "ns per element", fontsize=7)
            ax.tick_params(labelsize=6)
        handles, labels = axes[i][len(columns) - 1].get_legend_handles_labels()
        if handles:
            axes[i][len(columns) - 1].legend(
                handles, labels, fontsize=5, loc="upper left", bbox_to_anchor=(1.0, 1.0), ncols=1 + len(labels) // 14
            )
    if title is None and measured:
        title = f"pyvidgen bench --sweep on {measured[0]['device']} ({measured[0]['dtype']})"
    fig.suptitle(title or "pyvidgen bench --sweep", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
