"""Benchmark reports: the text table, the performance-target lines, JSON and a PNG plot.

All functions take the rows returned by :func:`pyvidgen.bench.runner.run`.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pyvidgen.bench import cases, roofline, sweep_report

Row = dict[str, Any]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Versions and hardware the numbers were measured on (stored with every JSON report)."""
    import pyvidgen
    from pyvidgen._backend import _load_cpp

    device = torch.device(device)
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    cpp, _ = _load_cpp()
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "pyvidgen": pyvidgen.__version__,
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_threads": torch.get_num_threads(),
        "cpp_capability": getattr(cpp, "cpu_capability", None) if cpp is not None else None,
        # Whether every large CPU tensor came from pyvidgen's cache (bench --cache-cpu-tensors).
        "cpu_tensor_cache": bool(pyvidgen.output_cache_info()["all_cpu_tensors"]),
        "device": str(device),
        "device_name": _cpu_name(),
        "cuda": torch.version.cuda,
        "triton_interpret": os.environ.get("TRITON_INTERPRET"),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def _comparisons(rows: Sequence[Row]) -> list[str]:
    """Baselines in registry order, restricted to those some row has a speedup against."""
    present = {base for row in rows for base in row.get("speedup", {})}
    ordered: list[str] = []
    for row in rows:
        entry = cases.REGISTRY.get(row["op"])
        for base in entry.comparisons() if entry else sorted(row.get("speedup", {})):
            if base in present and base not in ordered:
                ordered.append(base)
    return ordered


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def _spread(row: Row) -> str:
    """Interquartile range as a percentage of the median: how much to trust the row."""
    if row.get("ms_q1") is None or row.get("ms_q3") is None or not row["ms"]:
        return "-"
    return f"{100 * (row['ms_q3'] - row['ms_q1']) / row['ms']:.0f}"


def _gbps(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def _render(header: list[str], body: list[list[str]], separators: set[int]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    right = [i >= 4 for i in range(len(header))]  # numbers right-aligned

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)).rstrip()

    rule = "-" * len(line(header))
    out = [line(header), rule]
    for i, cells in enumerate(body):
        if i in separators:
            out.append("")
        out.append(line(cells))
    return out


def _notes(rows: Sequence[Row]) -> list[str]:
    """One line per (provider, reason) that was not measured, instead of a row per case."""
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for row in rows:
        if row.get("status") != "ok":
            key = (row["status"], row["provider"], row.get("reason", ""))
            grouped.setdefault(key, [])
            case = f"{row['op']} {row['shape_label']} {row['mode']}"
            if case not in grouped[key]:
                grouped[key].append(case)
    lines = []
    for (status, provider, reason), where in grouped.items():
        scope = f"{len(where)} cases" if len(where) > 3 else ", ".join(where)
        lines.append(f"{'not measured' if status == 'skipped' else 'FAILED'}: {provider} ({scope}): {reason}")
    return lines


def target_lines(rows: Sequence[Row]) -> list[str]:
    """The performance targets of the registry checked against ``rows`` (one line each, MET / NOT MET)."""
    lines = []
    for row in rows:
        # The targets are stated for contiguous inputs (a --channels-last row is a different measurement).
        if not row.get("target") or row.get("status") != "ok" or row.get("layout") == "channels_last":
            continue
        entry = cases.REGISTRY.get(row["op"])
        for goal in entry.targets if entry else ():
            if goal.provider != row["provider"] or goal.mode != row["mode"]:
                continue
            if goal.shape is not None and goal.shape != row["shape_label"]:
                continue
            speedup = row.get("speedup", {}).get(goal.baseline)
            verdict = "not measured" if speedup is None else "MET" if speedup >= goal.min_speedup else "NOT MET"
            got = "-" if speedup is None else f"{speedup:.2f}x"
            lines.append(
                f"target {row['op']} {row['shape_label']} {row['mode']} on {row['device']}: "
                f"{goal.provider} vs {goal.baseline} {got} (goal >= {goal.min_speedup:.2f}x) {verdict}"
            )
    return lines + roofline.goal_lines(rows)


def _sweep_columns(rows: Sequence[Row]) -> list[tuple[str, str]]:
    """(header, row key) of the sweep's columns that some row has."""
    columns = [("side", "side"), ("C", "channels"), ("mag", "magnitude"), ("elements", "elements")]
    return [(head, key) for head, key in columns if any(key in row for row in rows)]


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def format_table(rows: Sequence[Row], *, notes: bool = True) -> str:
    """The benchmark table: one line per measured (op, shape, mode, provider).

    Columns: op, shape, mode, provider, median ms, iqr % (interquartile range / median: the noise),
    then ``vs <baseline>`` = baseline's median / this median (above 1 = faster than that baseline)
    for eager, compiled and the op's own baselines (flow_warp: grid_sample, grid_sample_compiled;
    "-" where an op has no such baseline), and the effective bandwidth GB/s
    (``OpBench.bytes_moved`` / median; "-" where it does not apply). Where rows have them: a sweep point's
    side, channels C, magnitude and elements (after the provider) and its ns per element (last), and
    "% copy", a memory-bound op's GB/s as a percentage of the copy row's (:mod:`pyvidgen.bench.roofline`).

    Args:
        rows: rows of :func:`pyvidgen.bench.runner.run`.
        notes: append the providers that were not measured (and why) and the target verdicts.
    """
    measured = [r for r in rows if r.get("status") == "ok"]
    bases = _comparisons(measured)
    sweep = _sweep_columns(measured)
    copy = any(r.get("copy_fraction") is not None for r in measured)
    per_element = any(r.get("ns_per_element") is not None for r in measured)
    header = ["op", "shape", "mode", "provider", *(h for h, _ in sweep), "median ms", "iqr %"]
    header += [*(f"vs {b}" for b in bases), "GB/s", *["% copy"] * copy, *["ns/elem"] * per_element]
    body, separators, previous = [], set(), None
    for row in measured:
        group = (row["op"], row["shape_label"], row["mode"])
        if previous is not None and group != previous:
            separators.add(len(body))
        previous = group
        speedups = row.get("speedup", {})
        body.append(
            [
                row["op"],
                row["shape_label"],
                row["mode"],
                row["provider"],
                *(_cell(row.get(key)) for _, key in sweep),
                _ms(row["ms"]),
                _spread(row),
                *(f"{speedups[b]:.2f}x" if b in speedups else "-" for b in bases),
                _gbps(row.get("gbps")),
            ]
        )
        if copy:
            fraction = row.get("copy_fraction")
            body[-1].append("-" if fraction is None else f"{100 * fraction:.0f}")
        if per_element:
            body[-1].append("-" if row.get("ns_per_element") is None else f"{row['ns_per_element']:.3g}")
    lines = _render(header, body, separators) if body else ["(no measurements)"]
    if notes:
        extra = roofline.copy_note(rows) + _notes(rows) + target_lines(rows) + sweep_report.spread_lines(rows)
        if extra:
            lines += ["", *extra]
    return "\n".join(lines)


def write_json(rows: Sequence[Row], path: str | os.PathLike, machine: dict[str, Any] | None = None) -> Path:
    """Write ``{"machine": ..., "rows": [...]}`` to ``path`` (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = rows[0]["device"] if rows else "cpu"
    payload = {"machine": machine if machine is not None else machine_info(device), "rows": list(rows)}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def plot(rows: Sequence[Row], path: str | os.PathLike, title: str | None = None) -> Path:
    """Grouped bars of the speedup vs eager of each provider, one group per (op, shape, mode).

    Uses matplotlib's Agg canvas directly (no pyplot), so it neither needs a display nor changes
    the backend of a caller's session.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    measured = [r for r in rows if r.get("status") == "ok" and "eager" in r.get("speedup", {})]
    groups: list[tuple[str, str, str]] = []
    providers: list[str] = []
    for row in measured:
        group = (row["op"], row["shape_label"], row["mode"])
        if group not in groups:
            groups.append(group)
        if row["provider"] != "eager" and row["provider"] not in providers:
            providers.append(row["provider"])
    value = {(r["op"], r["shape_label"], r["mode"], r["provider"]): r["speedup"]["eager"] for r in measured}

    fig = Figure(figsize=(max(6.0, 1.4 * len(groups) + 2), 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(providers))
    for k, provider in enumerate(providers):
        xs = [i + (k - (len(providers) - 1) / 2) * width for i in range(len(groups))]
        heights = [value.get((*g, provider), float("nan")) for g in groups]
        bars = ax.bar(xs, heights, width, label=provider)
        ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=1)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("speedup vs eager reference (median, log scale)")
    ax.set_xticks(range(len(groups)), [f"{op}\n{shape}\n{mode}" for op, shape, mode in groups], fontsize=7)
    if title is None and rows:
        title = f"pyvidgen bench on {rows[0]['device']} ({rows[0]['dtype']})"
    ax.set_title(title or "pyvidgen bench")
    if providers:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    return path


def save(rows: Sequence[Row], out_dir: str | os.PathLike, machine: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``bench.json`` and ``bench.png`` into ``out_dir``; returns their paths by kind."""
    out_dir = Path(out_dir)
    return {"json": write_json(rows, out_dir / "bench.json", machine), "png": plot(rows, out_dir / "bench.png")}
