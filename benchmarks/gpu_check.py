#!/usr/bin/env python
"""One-call GPU check: every Triton kernel against the reference, then timings, in under ~5 minutes.

Run on a CUDA machine with the package installed (``pip install -e .``), from anywhere::

    python benchmarks/gpu_check.py            # writes benchmarks/results/gpu_check-<date>-<gpu>.json

1. Correctness, for every declared op with a Triton backend (:data:`pyvidgen.ops.OPS`), every
   variant, float32, float64, bfloat16 and float16, at the op's check size and at one of its benchmark
   sizes: the public op under ``pyvidgen.backend("triton")`` against the reference on the same
   (upcast) inputs, forward and every input gradient (:func:`pyvidgen.testing.check_backend`, the
   tolerance of :mod:`pyvidgen.tolerance`); float32 at the op's extreme magnitudes (exploded flows);
   and each op under ``torch.autocast("cuda")`` in bfloat16 and float16 with mixed-precision inputs
   (:func:`pyvidgen.testing.check_autocast`). Each check runs inside its own try/except: an exception
   is recorded, never fatal.
2. Timings: the device's copy bandwidth (``dst.copy_(src)`` of two 512 MiB buffers, read + write:
   the HBM ceiling), then ``triton.testing.do_bench`` medians of triton vs eager vs
   ``torch.compile(eager)`` (and the op's other baselines, e.g. ``F.grid_sample`` for flow_warp),
   forward and forward+backward, through :func:`pyvidgen.bench.runner.run` and its registry (the
   ops' benchmark sizes); then a ConvLSTM layer and an ST-AE training step.
3. The size sweep: every op over its ladder (sides 32..512, 3 and 32 channels, flow magnitudes
   0..32 px) at 2^24 values per tensor (64 MiB in float32, beyond the L2 of current GPUs, so the
   memory-bound kernels stream from HBM), forward+backward, triton against the non-compiled
   baselines. Each memory-bound op's rows get ``copy_fraction`` (its GB/s over the copy's); the
   summary lists the triton rows that move at least 4x the L2 against the 85% goal.
4. A JSON report (written after each phase, so an interrupted run keeps what it measured) and a
   printed summary.

Exit status: 0 when every correctness check passed, 1 when one failed, raised or was skipped for
time, 2 when there is no CUDA device (or ``TRITON_INTERPRET`` is set).

A new op needs nothing here: its declaration brings its checks and its timings.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pyvidgen.ops import OPS
from pyvidgen.ops._define import DeclaredOp
from pyvidgen.testing import check_autocast, check_backend

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BUDGET_S = 360.0
# Timing groups start only while this much of the budget is left: one group (two torch.compile
# warm-ups, forward and backward graphs) can take a minute.
TIMING_RESERVE_S = 60.0
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)
_HALF = (torch.bfloat16, torch.float16)
# Values per (B, C, H, W) tensor of a sweep point: 64 MiB in float32, beyond a GPU's L2 (50 MiB on an H100/H200).
SWEEP_ELEMENTS = 1 << 24
# The memory-bound kernels' goal on a GPU: this fraction of the measured copy (HBM) bandwidth.
HBM_GOAL = 0.85


@dataclass(frozen=True)
class Check:
    """One correctness check: ``run()`` returns ``{"ok": bool, "parts": {...}}`` or raises."""

    name: str
    op: str
    run: Callable[[], dict[str, Any]]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check_sizes(op: DeclaredOp, tiny: bool) -> list[tuple[int, ...]]:
    """The op's check size and, on a GPU, its first benchmark size (interpreted: its two smallest sizes)."""
    samples = op.spec.samples
    if tiny:
        return [tuple(d) for d in samples.dims[:2]]
    sizes = [tuple(samples.check_dims)]
    if op.spec.bench is not None:
        sizes.append(tuple(op.spec.bench.shapes[0].dims))
    return sizes


def _backend_check(op: DeclaredOp, device: torch.device, dtype: torch.dtype, dims, variant, magnitude, seed: int):  # noqa: ANN001, ANN202
    gen = torch.Generator().manual_seed(seed)
    args = op.sample(dims, dtype=dtype, device=device, generator=gen, variant=variant, magnitude=magnitude)
    return check_backend(op, "triton", args, gen, reference_dtype=torch.float32 if dtype in _HALF else None)


def _autocast_check(op: DeclaredOp, device: torch.device, dtype: torch.dtype, dims, variant, seed: int):  # noqa: ANN001, ANN202
    gen = torch.Generator().manual_seed(seed)
    args = op.sample(dims, dtype=torch.float32, device=device, generator=gen, variant=variant)
    return check_autocast(op, "triton", args, device.type, dtype, gen)


def op_checks(op: DeclaredOp, device: torch.device, dtypes: Sequence[torch.dtype], tiny: bool) -> list[Check]:
    """Every variant x dtype x size, the extreme magnitudes in float32, and autocast, for one op."""
    checks: list[Check] = []
    sizes = _check_sizes(op, tiny)
    samples = op.spec.samples
    for dtype in dtypes:
        for dims in sizes:
            for variant in samples.variants:
                name = f"{op.name} {_dtype_name(dtype)} {dims} {variant.name}"
                run = functools.partial(_backend_check, op, device, dtype, dims, variant, None, len(checks))
                checks.append(Check(name, op.name, run))
    if torch.float32 in dtypes:
        for magnitude in samples.magnitudes[1:]:
            for variant in samples.variants:
                name = f"{op.name} float32 {sizes[0]} {variant.name} magnitude={magnitude:g}"
                run = functools.partial(
                    _backend_check, op, device, torch.float32, sizes[0], variant, magnitude, len(checks)
                )
                checks.append(Check(name, op.name, run))
    for dtype in AUTOCAST_DTYPES:
        if dtype in dtypes or not tiny:
            for variant in samples.variants:
                name = f"{op.name} autocast {_dtype_name(dtype)} {sizes[0]} {variant.name}"
                run = functools.partial(_autocast_check, op, device, dtype, sizes[0], variant, len(checks))
                checks.append(Check(name, op.name, run))
    return checks


def declared_checks(device: torch.device, dtypes: Sequence[torch.dtype], tiny: bool) -> list[Check]:
    """The checks of every declared op that has a Triton backend."""
    return [c for op in OPS.values() if "triton" in op.spec.backends for c in op_checks(op, device, dtypes, tiny)]


# Check factories: (device, dtypes, tiny) -> checks.
CHECKS: list[Callable[[torch.device, Sequence[torch.dtype], bool], list[Check]]] = [declared_checks]


def _failure_summary(result: dict[str, Any]) -> str:
    bad = [
        f"{k} ({v.get('bad', 'shape')} bad, max err {v.get('max_abs_err', float('nan')):.3g})"
        for k, v in result.get("parts", {}).items()
        if not v.get("ok")
    ]
    if not result.get("dtype_ok", True):
        bad.append("wrong output dtype")
    return "; ".join(bad)


def run_correctness(
    device: torch.device | str,
    dtypes: Sequence[torch.dtype] = DTYPES,
    tiny: bool = False,
    deadline: float | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run every check of :data:`CHECKS`; one record each, with ``status`` pass/fail/error/skipped."""
    device = torch.device(device)
    records: list[dict[str, Any]] = []
    for factory in CHECKS:
        try:
            checks = factory(device, dtypes, tiny)
        except Exception:  # noqa: BLE001 - a broken factory is reported, the others still run
            records.append({"name": factory.__name__, "status": "error", "error": traceback.format_exc()})
            log(f"ERROR {factory.__name__}")
            continue
        for check in checks:
            record: dict[str, Any] = {"name": check.name, "op": check.op}
            if deadline is not None and time.monotonic() > deadline:
                record.update(status="skipped", error="time budget exhausted")
                records.append(record)
                continue
            started = time.perf_counter()
            try:
                result = check.run()
                record.update(result, status="pass" if result["ok"] else "fail")
            except Exception:  # noqa: BLE001
                record.update(status="error", error=traceback.format_exc())
            record["seconds"] = round(time.perf_counter() - started, 3)
            records.append(record)
            if record["status"] == "fail":
                log(f"FAIL  {check.name}: {_failure_summary(record)}")
            elif record["status"] == "error":
                log(f"ERROR {check.name}: {record['error'].strip().splitlines()[-1]}")
    return records


def run_timings(
    device: torch.device | str,
    deadline: float | None,
    shapes: dict[str, list[tuple[int, ...]]] | None = None,
    providers: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Timing rows of every registered op (no cpp: it is a CPU backend), first shapes of all ops first.

    Args:
        shapes: per op, the sizes to time instead of all of its benchmark sizes.
    """
    from pyvidgen.bench import cases, runner

    rows: list[dict[str, Any]] = []
    per_op = {
        name: [tuple(s) for s in (shapes or {}).get(name, [s.dims for s in entry.shapes])]
        for name, entry in cases.REGISTRY.items()
    }
    if providers is None:
        providers = sorted({p for entry in cases.REGISTRY.values() for p in entry.providers()} - {"cpp"})
    # Tier by tier (each op's first shape, then each op's second...): the headline shapes are timed
    # before the deadline can cut anything.
    for tier in range(max((len(v) for v in per_op.values()), default=0)):
        tier_shapes = {name: [s[tier]] for name, s in per_op.items() if tier < len(s)}
        rows += runner.run(
            ops=list(tier_shapes), quick=True, device=device, providers=providers, shapes=tier_shapes, deadline=deadline
        )
    return rows


def run_layer_timings(device: torch.device | str) -> dict[str, list[dict[str, Any]]]:
    """Whole-layer and whole-step timings, where launch overhead makes fusion count most: a ConvLSTM
    layer against the usual per-step implementation, and training steps of the small ST-AE and VPN on
    the fused ops against the reference."""
    from pyvidgen.bench.layers import time_conv_lstm_layer
    from pyvidgen.bench.model_step import time_model_step

    return {
        "conv_lstm_layer": time_conv_lstm_layer(device=device, seconds=1.0, min_runs=5, rounds=3),
        "st_ae_step": time_model_step("st-ae", device=device, seconds=2.0, min_runs=5, rounds=3),
        "vpn_step": time_model_step("vpn", device=device, seconds=2.0, min_runs=5, rounds=3),
    }


def run_sweep(
    device: torch.device | str,
    deadline: float | None,
    elements: int = SWEEP_ELEMENTS,
    sides: Sequence[int] | None = None,
    providers: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Forward+backward rows of every op's size sweep (see :func:`pyvidgen.bench.sweep.sweep_points`).

    Args:
        elements: values per point's (B, C, H, W) tensor.
        sides: the sides to walk instead of each op's ladder (tests use tiny ones).
        providers: default: every non-compiled provider that runs on ``device`` but cpp.
    """
    from pyvidgen.bench import cases, runner, sweep

    plan = {
        name: sweep.sweep_points(entry, elements, sides)
        for name, entry in cases.REGISTRY.items()
        if entry.bench.sweep is not None
    }
    if providers is None:
        providers = [p for p in sweep.sweep_providers(list(plan), device) if p != "cpp"]
    return runner.run(
        ops=list(plan),
        quick=True,
        modes=("fwd+bwd",),
        device=device,
        providers=providers,
        shapes=plan,
        deadline=deadline,
    )


def _cache_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0))
    from pyvidgen.bench.roofline import _llc_bytes

    return _llc_bytes() or 0


def bandwidth_lines(rows: Sequence[dict[str, Any]], device: torch.device | str, goal: float = HBM_GOAL) -> list[str]:
    """One line per triton row of a memory-bound op that moves at least 4x the device's last-level cache:
    its fraction of the copy bandwidth against ``goal`` (smaller rows are served partly from the cache)."""
    floor = 4 * _cache_bytes(torch.device(device))
    lines = []
    for row in rows:
        if row.get("provider") != "triton" or row.get("copy_fraction") is None or (row.get("bytes") or 0) < floor:
            continue
        verdict = "MET" if row["copy_fraction"] >= goal else "NOT MET"
        lines.append(
            f"{row['op']} {row['shape_label']} {row['mode']}: {100 * row['copy_fraction']:.0f}% of copy bandwidth "
            f"({row['gbps']:.0f} GB/s; goal >= {100 * goal:.0f}%) {verdict}"
        )
    return lines


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def default_report_path(device_name: str) -> Path:
    """``benchmarks/results/gpu_check-<YYYY-MM-DD>-<device-name-slug>.json``."""
    return RESULTS_DIR / f"gpu_check-{datetime.date.today().isoformat()}-{_slug(device_name)}.json"


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def execute(
    device: torch.device | str,
    out: Path | None = None,
    budget_s: float = BUDGET_S,
    dtypes: Sequence[torch.dtype] = DTYPES,
    tiny: bool = False,
    timings: bool = True,
    timing_shapes: dict[str, list[tuple[int, ...]]] | None = None,
    timing_providers: Sequence[str] | None = None,
    sweep_elements: int = SWEEP_ELEMENTS,
    sweep_sides: Sequence[int] | None = None,
    copy_bytes: int | None = None,
) -> int:
    """Every phase on ``device`` (no CUDA check: the caller makes it); returns the exit status.

    ``sweep_elements``, ``sweep_sides`` and ``copy_bytes`` shrink the sweep and the copy (tests)."""
    from pyvidgen.bench import report as bench_report
    from pyvidgen.bench import roofline

    started = time.monotonic()
    machine = bench_report.machine_info(device)
    path = out if out is not None else default_report_path(machine["device_name"])
    result: dict[str, Any] = {"script": "benchmarks/gpu_check.py", "machine": machine, "budget_s": budget_s}
    print(f"gpu_check on {machine['device_name']} (torch {machine['torch']}, triton {machine['triton']})")

    result["correctness"] = run_correctness(device, dtypes, tiny, deadline=started + budget_s * 0.6)
    statuses = [r["status"] for r in result["correctness"]]
    ok = bool(statuses) and all(s == "pass" for s in statuses)
    result["ok"] = ok
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    write_report(path, result)

    copy: dict[str, Any] = {}
    if timings:
        try:
            copy = result["copy"] = roofline.measure_copy(device, copy_bytes)
            deadline = started + max(0.0, 0.75 * budget_s - TIMING_RESERVE_S)
            result["timings"] = run_timings(device, deadline, timing_shapes, timing_providers)
            roofline.annotate(result["timings"], copy)
        except Exception:  # noqa: BLE001 - timings are informative; the correctness verdict stands
            result["timings_error"] = traceback.format_exc()
        result["elapsed_s"] = round(time.monotonic() - started, 1)
        write_report(path, result)

    if timings and time.monotonic() < started + 0.75 * budget_s - 30:
        try:
            result["layers"] = run_layer_timings(device)
        except Exception:  # noqa: BLE001 - informative, like the op timings
            result["layers_error"] = traceback.format_exc()
        result["elapsed_s"] = round(time.monotonic() - started, 1)
        write_report(path, result)

    if timings and time.monotonic() < started + budget_s - 30:
        try:
            sweep_providers = timing_providers if timing_providers is not None else None
            result["sweep"] = run_sweep(device, started + budget_s - 20, sweep_elements, sweep_sides, sweep_providers)
            if copy:
                roofline.annotate(result["sweep"], copy)
            result["bandwidth"] = bandwidth_lines(result.get("timings", []) + result["sweep"], device)
        except Exception:  # noqa: BLE001 - informative, like the op timings
            result["sweep_error"] = traceback.format_exc()
        result["elapsed_s"] = round(time.monotonic() - started, 1)
        write_report(path, result)

    counts = {s: statuses.count(s) for s in ("pass", "fail", "error", "skipped")}
    print("\ncorrectness: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for record in result["correctness"]:
        if record["status"] != "pass":
            detail = _failure_summary(record) or (record.get("error") or "").strip().splitlines()[-1:]
            print(f"  {record['status'].upper():7s} {record['name']}: {''.join(detail)}")
    if result.get("timings"):
        print("\n" + bench_report.format_table(result["timings"]))
    if result.get("layers"):
        from pyvidgen.bench.layers_report import format_layer_table, format_step_table

        print("\n" + format_layer_table(result["layers"]["conv_lstm_layer"]))
        print("\n" + format_step_table(result["layers"]["st_ae_step"] + result["layers"]["vpn_step"]))
    if result.get("sweep"):
        print("\n" + bench_report.format_table([*([copy] if copy else []), *result["sweep"]]))
    for line in result.get("bandwidth", []):
        print(line)
    if result.get("timings_error"):
        print("\ntimings failed:\n" + result["timings_error"])
    print(f"\n{'PASS' if ok else 'FAIL'} in {result['elapsed_s']} s; report: {path}")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="report path (default: benchmarks/results/...)")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds the whole run may take")
    parser.add_argument("--no-timings", action="store_true", help="correctness only")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            f"gpu_check.py needs a CUDA GPU: torch.cuda.is_available() is False (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda}). Run it on a machine with an NVIDIA GPU and a CUDA build of torch.",
            file=sys.stderr,
        )
        return 2
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("gpu_check.py: unset TRITON_INTERPRET; it must time and check compiled kernels", file=sys.stderr)
        return 2
    return execute(torch.device("cuda"), args.out, args.budget, timings=not args.no_timings)


if __name__ == "__main__":
    sys.exit(main())
