"""The table of the model benchmark (``pyvidgen bench --models``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_models_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of :func:`pyvidgen.bench.models.time_models`: one line per model and provider.

    Columns: median ms of a training step, its interquartile range, how many times faster the eager fused step is
    ("fused is Nx faster": this provider's median / the fused median), compile seconds, the first step's loss and
    largest gradient difference against the usual eager model, the hot-spot and convolution shares of the eager
    providers' profiles, and the notes (module swaps, failures, graph breaks).
    """
    lines = [
        f"{'training step':30s} {'provider':15s} {'median ms':>10s} {'iqr ms':>13s} {'fused is':>9s} "
        f"{'compile s':>9s} {'|dloss|':>8s} {'|dgrad|':>8s} {'hot spot':>8s} {'convs':>6s}  notes"
    ]
    for r in rows:
        problem = f"{r['model']} {r['preset']} {r['batch']}x{r['seq_len']}x{r['size']}^2"
        iqr = "-" if r["ms"] is None else f"{r['ms_q1']:.1f}-{r['ms_q3']:.1f}"
        faster = "-" if r["provider"] == "fused" else _number(r["fused_speedup"], ".2f") + "x"
        lines.append(
            f"{problem:30s} {r['provider']:15s} {_number(r['ms'], '10.1f'):>10s} {iqr:>13s} {faster:>9s} "
            f"{_number(r['compile_s'], '9.1f'):>9s} {_number(r['loss_diff_vs_usual'], '8.1e'):>8s} "
            f"{_number(r['max_grad_diff_vs_usual'], '8.1e'):>8s} {_share(r['hot_spot_share']):>8s} "
            f"{_share(r['convolution_share']):>6s}  {r['notes']}".rstrip()
        )
    return "\n".join(lines)
