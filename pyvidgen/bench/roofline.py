"""The bench's bandwidth roofline: the machine's copy bandwidth, and the fraction of it memory-bound ops reach.

A kernel that must read and write a given number of bytes cannot beat a plain copy of as many bytes, so
``dst.copy_(src)`` on buffers well beyond the last-level cache is the practical ceiling (a STREAM-style copy,
through torch so that it uses the same threads as the kernels; on CUDA a device copy, i.e. HBM). Its bytes are
read + write, counted as the ops' byte models (``Bench.bytes_moved``) count theirs, so the write-allocate reads of
a CPU's stores burden both alike. ``% copy`` = an op's GB/s / the copy's: above 100 means the op's working set
stayed in a cache between calls (small sizes), not a faster memory.

The copy is measured once per ``pyvidgen bench`` run, before the ops, as one extra row (op "copy").
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pyvidgen.bench import cases

Row = dict[str, Any]

# Floor of a copy buffer: 4x the 32 MiB L3 of the reference machine; grown to 4x the last-level cache where that
# is larger, so the copy streams from memory, not cache.
COPY_MIN_BYTES = {"cpu": 128 << 20, "cuda": 512 << 20}
COPY_MAX_BYTES = 1 << 30


def _llc_bytes() -> int | None:
    """The CPU's last-level cache size (Linux sysfs), None where unknown."""
    best = None
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        try:
            size = int(text.rstrip("KMG")) * scale
        except ValueError:
            continue
        best = size if best is None else max(best, size)
    return best


def copy_buffer_bytes(device: torch.device | str) -> int:
    """Bytes of each of the two copy buffers on ``device``: well beyond its last-level cache."""
    device = torch.device(device)
    if device.type == "cuda":
        cache = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0)
    else:
        cache = _llc_bytes() or 0
    return min(COPY_MAX_BYTES, max(COPY_MIN_BYTES.get(device.type, COPY_MIN_BYTES["cpu"]), 4 * cache))


def copy_row(device: torch.device | str, nbytes: int, samples: Sequence[float]) -> Row:
    """The "copy" row of ``samples`` (ms per ``dst.copy_(src)`` of ``nbytes``-byte buffers): GB/s of read + write."""
    ms = statistics.median(samples)
    q1, _, q3 = statistics.quantiles(samples, n=4) if len(samples) > 1 else (ms, ms, ms)
    moved = 2 * nbytes
    return {
        "op": "copy",
        "shape": [nbytes // 4],
        "shape_label": f"{nbytes / (1 << 20):g}MiB",
        "shape_doc": "dst.copy_(src) of two float32 buffers; bytes = read + write",
        "kwargs": {},
        "mode": "-",
        "device": str(torch.device(device)),
        "dtype": "float32",
        "quick": True,
        "target": False,
        "provider": "torch",
        "status": "ok",
        "ms": ms,
        "ms_min": min(samples),
        "ms_q1": q1,
        "ms_q3": q3,
        "runs": len(samples),
        "bytes": moved,
        "gbps": moved / (ms * 1e-3) / 1e9 if ms > 0 else None,
        "copy_fraction": 1.0,
    }


def measure_copy(device: torch.device | str, nbytes: int | None = None, runs: int = 11, warmup: int = 2) -> Row:
    """Time ``dst.copy_(src)`` ``runs`` times (median) after ``warmup`` copies; returns :func:`copy_row`.

    Both buffers are written before timing, so no timed copy pays for first-touch page faults.
    """
    device = torch.device(device)
    nbytes = nbytes if nbytes is not None else copy_buffer_bytes(device)
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.zeros_like(src)
    samples = []
    for i in range(warmup + runs):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            elapsed = start.elapsed_time(end)
        else:
            began = time.perf_counter()
            dst.copy_(src)
            elapsed = (time.perf_counter() - began) * 1e3
        if i >= warmup:
            samples.append(elapsed)
    del src, dst
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return copy_row(device, (nbytes // 4) * 4, samples)


def annotate(rows: Sequence[Row], copy: Row) -> None:
    """Set ``copy_fraction`` (GB/s / the copy's) on every measured row of a memory-bound op."""
    if not copy.get("gbps"):
        return
    for row in rows:
        entry = cases.REGISTRY.get(row["op"])
        if entry is None or not entry.bench.memory_bound:
            continue
        if row.get("status") == "ok" and row.get("gbps") is not None:
            row["copy_fraction"] = row["gbps"] / copy["gbps"]


def goal_lines(rows: Sequence[Row]) -> list[str]:
    """The copy-bandwidth goals (``Bench.copy_goal``) checked against ``rows``, one line each: MET / NOT MET."""
    lines = []
    for row in rows:
        entry = cases.REGISTRY.get(row["op"])
        goal = entry.bench.copy_goal if entry else None
        if goal is None or row.get("copy_fraction") is None:
            continue
        if row["mode"] != goal.mode or row["provider"] not in goal.providers or row["shape_label"] not in goal.shapes:
            continue
        verdict = "MET" if row["copy_fraction"] >= goal.fraction else "NOT MET"
        lines.append(
            f"target {row['op']} {row['shape_label']} {row['mode']} on {row['device']}: {row['provider']} at "
            f"{100 * row['copy_fraction']:.0f}% of copy bandwidth (goal >= {100 * goal.fraction:.0f}%) {verdict}"
        )
    return lines


def copy_note(rows: Sequence[Row]) -> list[str]:
    """One line on the copy row, where there is one: what "% copy" divides by."""
    for row in rows:
        if row["op"] == "copy" and row.get("gbps"):
            return [
                f"copy bandwidth {row['gbps']:.1f} GB/s (dst.copy_(src), 2 x {row['shape_label']}, read + write): "
                "% copy = a memory-bound op's GB/s / that (above 100: its working set stayed in cache)"
            ]
    return []
