#!/usr/bin/env python
"""One-call GPU check: every Triton kernel against the reference, then timings, in under ~5 minutes.

Run on a CUDA machine with the package installed (``pip install -e .``), from anywhere::

    python benchmarks/gpu_check.py            # writes benchmarks/results/gpu_check-<date>-<gpu>.json

1. Correctness: each Triton kernel, called through its public op under ``pyvidgen.backend("triton")``,
   against the reference (:mod:`pyvidgen.kernels.reference`): forward and every input gradient,
   fp32 (tight tolerance) and bf16 (loose tolerance, against the fp32 reference of the same rounded
   inputs). Each check runs inside its own try/except: an exception is recorded, never fatal.
2. Timings: ``triton.testing.do_bench`` medians of triton vs eager vs ``torch.compile(eager)`` (and
   the op's other baselines, e.g. ``F.grid_sample`` for flow_warp), forward and forward+backward,
   through :func:`pyvidgen.bench.runner.run` and its registry.
3. A JSON report (written after each phase, so an interrupted run keeps what it measured) and a
   printed summary.

Exit status: 0 when every correctness check passed, 1 when one failed, raised or was skipped for
time, 2 when there is no CUDA device (or ``TRITON_INTERPRET`` is set).

Adding an op: write ``check_<op>`` and ``<op>_checks`` and append the latter to :data:`CHECKS`;
its timings come from the benchmark registry (shapes in :data:`TIMING_SHAPES`, else its quick ones).
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
from torch import Tensor

import pyvidgen
from pyvidgen import ops
from pyvidgen.kernels.reference import conv_lstm_gates as ref_conv_lstm_gates
from pyvidgen.kernels.reference import flow_smoothness as ref_flow_smoothness
from pyvidgen.kernels.reference import flow_warp as ref_flow_warp
from pyvidgen.kernels.reference import multiplicative_unit as ref_multiplicative_unit

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BUDGET_S = 270.0
# Timing groups start only while this much of the budget is left: one group (two torch.compile
# warm-ups, forward and backward graphs) can take a minute.
TIMING_RESERVE_S = 60.0
DTYPES = (torch.float32, torch.bfloat16)
TOLERANCES = {
    # fp32: reduction order and FMA contraction differ between the kernel and the reference.
    torch.float32: {"atol": 1e-4, "rtol": 1e-4},
    torch.float16: {"atol": 5e-3, "rtol": 5e-3},
    torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2},
}
FLOW_WARP_SHAPES = [(3, 5, 17, 23), (2, 64, 64, 64)]
FLOW_SMOOTHNESS_SHAPES = [(3, 2, 17, 23), (16, 2, 64, 64)]
# c's / h's (B, C, H, W); the gates / pre-activations have 4C channels. Odd sizes, 1x1 planes, a real one.
CONV_LSTM_GATES_SHAPES = [(3, 5, 17, 23), (2, 7, 1, 1), (16, 64, 32, 32)]
MULTIPLICATIVE_UNIT_SHAPES = [(3, 5, 17, 23), (2, 7, 1, 1), (16, 64, 32, 32)]
# Interpreted Triton on CPU (tests/test_gpu_check_script.py): keep every launch a few programs.
TINY_SHAPES = {
    "flow_warp": [(1, 2, 5, 7), (2, 3, 4, 9)],
    "flow_smoothness": [(1, 2, 5, 7), (2, 1, 9, 3)],
    "conv_lstm_gates": [(1, 2, 5, 7), (2, 3, 1, 1)],
    "multiplicative_unit": [(1, 2, 5, 7), (2, 3, 1, 1)],
}
# Ops missing from the benchmark registry are simply not timed; the dims are each registry entry's
# shape_doc (for conv_lstm_gates and multiplicative_unit: c's / h's (B, C, H, W)).
TIMING_SHAPES = {
    "flow_warp": [(16, 64, 64, 64), (16, 64, 128, 128)],
    "flow_smoothness": [(16, 2, 64, 64), (16, 2, 128, 128)],
    "conv_lstm_gates": [(16, 64, 32, 32), (16, 256, 32, 32)],
    "multiplicative_unit": [(16, 64, 32, 32), (16, 256, 32, 32)],
}
PEEPHOLE_KINDS = ("none", "per_pixel", "per_channel")


@dataclass(frozen=True)
class Check:
    """One correctness check: ``run()`` returns ``{"ok": bool, "parts": {...}}`` or raises."""

    name: str
    op: str
    run: Callable[[], dict[str, Any]]


def compare(actual: Tensor, expected: Tensor, atol: float, rtol: float) -> dict[str, Any]:
    """Elementwise ``|actual - expected| <= atol + rtol * |expected|``, NaN only where expected is NaN.

    Returns:
        ``ok``, ``max_abs_err`` (over finite pairs), ``bad`` (elements out of tolerance or NaN-mismatched),
        ``numel``, ``dtype`` and, when they differ, ``shape``/``expected_shape``.
    """
    if actual.shape != expected.shape:
        return {"ok": False, "shape": list(actual.shape), "expected_shape": list(expected.shape)}
    a, e = actual.detach().double(), expected.detach().double()
    nan_mismatch = torch.isnan(a) != torch.isnan(e)
    finite = torch.isfinite(a) & torch.isfinite(e)
    err = torch.where(finite, (a - e).abs(), torch.zeros_like(a))
    bad = nan_mismatch | (err > atol + rtol * e.abs()) | (~finite & ~torch.isnan(e) & (a != e))
    n_bad = int(bad.sum())
    return {
        "ok": n_bad == 0,
        "max_abs_err": float(err.max()) if err.numel() else 0.0,
        "bad": n_bad,
        "numel": a.numel(),
        "dtype": str(actual.dtype).removeprefix("torch."),
    }


def _verdict(parts: dict[str, dict[str, Any]], dtype: torch.dtype, outputs: Sequence[Tensor]) -> dict[str, Any]:
    dtype_ok = all(t.dtype == dtype for t in outputs)
    return {"ok": dtype_ok and all(p["ok"] for p in parts.values()), "dtype_ok": dtype_ok, "parts": parts}


def kink_safe_flow(shape: Sequence[int], normalized: bool, far: bool, gen: torch.Generator) -> Tensor:
    """A flow whose source positions stay at least ~0.2 px from integers.

    At integer positions the flow gradient jumps (the reference takes it from the right), so a
    one-ulp difference in how a kernel rounds ``j + u`` (FMA, bf16 inputs) would flip it and fail a
    correct kernel. Whole-pixel parts in [-4, 4] (and, with ``far``, up to twice the image size for a
    tenth of the pixels, to exercise padding) plus a fraction in [0.2, 0.8].

    Args:
        shape: (B, 2, H, W).
        normalized: return the flow in [-1, 1] units of the image extent.
        far: include the large displacements (they lose their fraction in bf16, so fp32 only).
        gen: CPU generator.

    Returns:
        (B, 2, H, W) float64 on the CPU.
    """
    batch, _, height, width = shape
    whole = torch.randint(-4, 5, tuple(shape), generator=gen).double()
    if far:
        extent = torch.tensor([2 * width, 2 * height], dtype=torch.float64).view(1, 2, 1, 1)
        big = (torch.rand(tuple(shape), generator=gen, dtype=torch.float64) * 2 - 1) * extent
        whole = torch.where(torch.rand(tuple(shape), generator=gen) < 0.1, big.round(), whole)
    flow = whole + 0.2 + 0.6 * torch.rand(tuple(shape), generator=gen, dtype=torch.float64)
    if normalized:
        scale = torch.tensor([max(width - 1, 1) / 2, max(height - 1, 1) / 2], dtype=torch.float64)
        flow = flow / scale.view(1, 2, 1, 1)
    return flow


def check_flow_warp(
    device: torch.device, dtype: torch.dtype, shape: Sequence[int], padding_mode: str, normalized: bool, seed: int
) -> dict[str, Any]:
    """Triton ``flow_warp`` forward, grad_x and grad_flow vs autograd of the fp32 reference.

    Args:
        device: the tensors' device (CUDA; CPU under TRITON_INTERPRET=1).
        dtype: input dtype of the Triton call; the reference runs in fp32 on the same rounded values.
        shape: x's (B, C, H, W).
        padding_mode: "zeros", "border" or "reflection".
        normalized: flow in [-1, 1] units.
        seed: data seed.
    """
    gen = torch.Generator().manual_seed(seed)
    batch, _, height, width = shape
    x = torch.randn(tuple(shape), generator=gen).to(device, dtype)
    flow_shape = (batch, 2, height, width)
    flow = kink_safe_flow(flow_shape, normalized, far=dtype == torch.float32, gen=gen).to(device, dtype)
    grad_out = torch.randn(tuple(shape), generator=gen).to(device, dtype)

    xt, ft = x.clone().requires_grad_(), flow.clone().requires_grad_()
    with pyvidgen.backend("triton"):
        out = ops.flow_warp(xt, ft, padding_mode=padding_mode, normalized=normalized)
        grad_x, grad_flow = torch.autograd.grad(out, (xt, ft), grad_out)

    xr, fr = x.float().requires_grad_(), flow.float().requires_grad_()
    ref = ref_flow_warp.flow_warp(xr, fr, padding_mode, normalized)
    ref_gx, ref_gf = torch.autograd.grad(ref, (xr, fr), grad_out.float())
    tol = TOLERANCES[dtype]
    parts = {
        "out": compare(out, ref, **tol),
        "grad_x": compare(grad_x, ref_gx, **tol),
        "grad_flow": compare(grad_flow, ref_gf, **tol),
    }
    return _verdict(parts, dtype, (out, grad_x, grad_flow))


def check_flow_smoothness(
    device: torch.device, dtype: torch.dtype, shape: Sequence[int], delta: float, seed: int
) -> dict[str, Any]:
    """Triton ``flow_smoothness`` (scalar) and its gradient vs autograd of the fp32 reference."""
    gen = torch.Generator().manual_seed(seed)
    # Differences of a few units: both Huber branches for every delta.
    flow = (torch.randn(tuple(shape), generator=gen) * 1.5).to(device, dtype)
    grad = (torch.rand((), generator=gen) + 0.5).to(device, dtype)
    ft = flow.clone().requires_grad_()
    with pyvidgen.backend("triton"):
        loss = ops.flow_smoothness(ft, delta=delta)
        (grad_flow,) = torch.autograd.grad(loss, ft, grad)
    fr = flow.float().requires_grad_()
    ref = ref_flow_smoothness.flow_smoothness(fr, delta)
    (ref_grad,) = torch.autograd.grad(ref, fr, grad.float())
    tol = TOLERANCES[dtype]
    parts = {"loss": compare(loss, ref, **tol), "grad_flow": compare(grad_flow, ref_grad, **tol)}
    return _verdict(parts, dtype, (loss, grad_flow))


def check_conv_lstm_gates(
    device: torch.device, dtype: torch.dtype, shape: Sequence[int], peephole: str, seed: int
) -> dict[str, Any]:
    """Triton ``conv_lstm_gates`` h, c_next and the gradients of gates, c and peephole vs the fp32 reference.

    Args:
        device: the tensors' device (CUDA; CPU under TRITON_INTERPRET=1).
        dtype: input dtype of the Triton call; the reference runs in fp32 on the same rounded values.
        shape: c's (B, C, H, W); gates have 4C channels.
        peephole: "none", "per_pixel" ((3, C, H, W) weights) or "per_channel" ((3, C, 1, 1)).
        seed: data seed.
    """
    gen = torch.Generator().manual_seed(seed)
    batch, channels, height, width = shape
    # Pre-activations of a few units: the activations are neither linear nor saturated.
    gates = (torch.randn((batch, 4 * channels, height, width), generator=gen) * 2).to(device, dtype)
    c = torch.randn(tuple(shape), generator=gen).to(device, dtype)
    weights = None
    if peephole != "none":
        weight_shape = (3, channels, height, width) if peephole == "per_pixel" else (3, channels, 1, 1)
        weights = (torch.randn(weight_shape, generator=gen) * 0.5).to(device, dtype)
    grad_h = torch.randn(tuple(shape), generator=gen).to(device, dtype)
    grad_c_next = torch.randn(tuple(shape), generator=gen).to(device, dtype)

    def run(fn: Callable[..., tuple[Tensor, Tensor]], *tensors: Tensor | None) -> list[Tensor]:
        inputs = [t.requires_grad_() for t in tensors if t is not None]
        h, c_next = fn(*tensors)
        grads = torch.autograd.grad((h, c_next), inputs, (grad_h.to(h.dtype), grad_c_next.to(h.dtype)))
        return [h, c_next, *grads]

    with pyvidgen.backend("triton"):
        got = run(ops.conv_lstm_gates, gates.clone(), c.clone(), None if weights is None else weights.clone())
    expected = run(
        ref_conv_lstm_gates.conv_lstm_gates, gates.float(), c.float(), None if weights is None else weights.float()
    )
    names = ["h", "c_next", "grad_gates", "grad_c"] + ([] if weights is None else ["grad_peephole"])
    tol = TOLERANCES[dtype]
    parts = {name: compare(a, e, **tol) for name, a, e in zip(names, got, expected, strict=True)}
    return _verdict(parts, dtype, got)


def check_multiplicative_unit(
    device: torch.device, dtype: torch.dtype, shape: Sequence[int], seed: int
) -> dict[str, Any]:
    """Triton ``multiplicative_unit`` and the gradients of pre and h vs the fp32 reference."""
    gen = torch.Generator().manual_seed(seed)
    batch, channels, height, width = shape
    pre = (torch.randn((batch, 4 * channels, height, width), generator=gen) * 2).to(device, dtype)
    h = torch.randn(tuple(shape), generator=gen).to(device, dtype)
    grad_out = torch.randn(tuple(shape), generator=gen).to(device, dtype)
    pt, ht = pre.clone().requires_grad_(), h.clone().requires_grad_()
    with pyvidgen.backend("triton"):
        out = ops.multiplicative_unit(pt, ht)
        grad_pre, grad_h = torch.autograd.grad(out, (pt, ht), grad_out)
    pr, hr = pre.float().requires_grad_(), h.float().requires_grad_()
    ref = ref_multiplicative_unit.multiplicative_unit(pr, hr)
    ref_pre, ref_h = torch.autograd.grad(ref, (pr, hr), grad_out.float())
    tol = TOLERANCES[dtype]
    parts = {
        "out": compare(out, ref, **tol),
        "grad_pre": compare(grad_pre, ref_pre, **tol),
        "grad_h": compare(grad_h, ref_h, **tol),
    }
    return _verdict(parts, dtype, (out, grad_pre, grad_h))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def flow_warp_checks(device: torch.device, dtypes: Sequence[torch.dtype], tiny: bool) -> list[Check]:
    """Every padding mode x normalized x dtype x shape."""
    shapes = TINY_SHAPES["flow_warp"] if tiny else FLOW_WARP_SHAPES
    checks = []
    for dtype in dtypes:
        for shape in shapes:
            for mode in ops.PADDING_MODES:
                for normalized in (False, True):
                    name = f"flow_warp {_dtype_name(dtype)} {tuple(shape)} {mode} normalized={normalized}"
                    run = functools.partial(check_flow_warp, device, dtype, shape, mode, normalized, len(checks))
                    checks.append(Check(name, "flow_warp", run))
    return checks


def flow_smoothness_checks(device: torch.device, dtypes: Sequence[torch.dtype], tiny: bool) -> list[Check]:
    """Two deltas x dtype x shape."""
    shapes = TINY_SHAPES["flow_smoothness"] if tiny else FLOW_SMOOTHNESS_SHAPES
    checks = []
    for dtype in dtypes:
        for shape in shapes:
            for delta in (1.0, 0.3):
                name = f"flow_smoothness {_dtype_name(dtype)} {tuple(shape)} delta={delta}"
                run = functools.partial(check_flow_smoothness, device, dtype, shape, delta, len(checks))
                checks.append(Check(name, "flow_smoothness", run))
    return checks


def conv_lstm_gates_checks(device: torch.device, dtypes: Sequence[torch.dtype], tiny: bool) -> list[Check]:
    """Every peephole kind x dtype x shape."""
    shapes = TINY_SHAPES["conv_lstm_gates"] if tiny else CONV_LSTM_GATES_SHAPES
    checks = []
    for dtype in dtypes:
        for shape in shapes:
            for peephole in PEEPHOLE_KINDS:
                name = f"conv_lstm_gates {_dtype_name(dtype)} {tuple(shape)} peephole={peephole}"
                run = functools.partial(check_conv_lstm_gates, device, dtype, shape, peephole, len(checks))
                checks.append(Check(name, "conv_lstm_gates", run))
    return checks


def multiplicative_unit_checks(device: torch.device, dtypes: Sequence[torch.dtype], tiny: bool) -> list[Check]:
    """Every dtype x shape."""
    shapes = TINY_SHAPES["multiplicative_unit"] if tiny else MULTIPLICATIVE_UNIT_SHAPES
    checks = []
    for dtype in dtypes:
        for shape in shapes:
            name = f"multiplicative_unit {_dtype_name(dtype)} {tuple(shape)}"
            run = functools.partial(check_multiplicative_unit, device, dtype, shape, len(checks))
            checks.append(Check(name, "multiplicative_unit", run))
    return checks


# One factory per op: (device, dtypes, tiny) -> checks. Append later ops here.
CHECKS: list[Callable[[torch.device, Sequence[torch.dtype], bool], list[Check]]] = [
    flow_warp_checks,
    flow_smoothness_checks,
    conv_lstm_gates_checks,
    multiplicative_unit_checks,
]


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
    """Timing rows of every registered op (no cpp: it is a CPU backend), first shapes of all ops first."""
    from pyvidgen.bench import cases, runner

    shapes = TIMING_SHAPES if shapes is None else shapes
    rows: list[dict[str, Any]] = []
    per_op = {
        name: [tuple(s) for s in shapes.get(name, [s.dims for s in cases.select_shapes(entry, quick=True)])]
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
    layer against the usual per-step implementation, and a training step of the small ST-AE on the
    fused ops against the reference."""
    from pyvidgen.bench.layers import time_conv_lstm_layer
    from pyvidgen.bench.model_step import time_st_ae_step

    return {
        "conv_lstm_layer": time_conv_lstm_layer(device=device, seconds=1.0, min_runs=5, rounds=3),
        "st_ae_step": time_st_ae_step(device=device, seconds=2.0, min_runs=5, rounds=3),
    }


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
) -> int:
    """Both phases on ``device`` (no CUDA check: the caller makes it); returns the exit status."""
    from pyvidgen.bench import report as bench_report

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

    if timings:
        try:
            deadline = started + max(0.0, budget_s - TIMING_RESERVE_S)
            result["timings"] = run_timings(device, deadline, timing_shapes, timing_providers)
        except Exception:  # noqa: BLE001 - timings are informative; the correctness verdict stands
            result["timings_error"] = traceback.format_exc()
        result["elapsed_s"] = round(time.monotonic() - started, 1)
        write_report(path, result)

    if timings and time.monotonic() < started + budget_s - 30:
        try:
            result["layers"] = run_layer_timings(device)
        except Exception:  # noqa: BLE001 - informative, like the op timings
            result["layers_error"] = traceback.format_exc()
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
        print("\n" + format_step_table(result["layers"]["st_ae_step"]))
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
