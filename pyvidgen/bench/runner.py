"""Run the registered benchmarks: build inputs, warm providers up, time them side by side.

Every provider of one (op, shape, mode) group is measured back to back, interleaved: in turn,
each provider still short of its budget gets a slice of ``1 / rounds`` of it (at least one call),
so that the slow phases of a shared machine hit all providers alike and the ratios stay
meaningful. The reported time is the median of the pooled samples.

* CPU: ``time.perf_counter`` around each call, repeated until the time budget is spent and at
  least ``min_runs`` calls were made (quick: 0.3 s / 5 runs per provider, full: 1 s / 10 runs).
* CUDA: ``triton.testing.do_bench`` (CUDA events, L2 flushed between calls), CUDA events with
  synchronisation when triton is not installed.

Forward+backward calls ``torch.autograd.grad(outputs, tensors, grad_outputs)`` with fixed random
output gradients for every provider, so no provider pays for ``.grad`` accumulation.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pyvidgen.bench import cases
from pyvidgen.bench.cases import OpBench, Shape, Unavailable


@dataclass
class Workload:
    """Inputs of one (op, shape, mode) group, shared by all its providers.

    Attributes:
        args: the op's arguments (schema order); its tensors require grad in fwd+bwd mode.
        tensors: the tensor arguments (the ones differentiated in fwd+bwd mode).
        grad_outputs: the fixed output gradients (fwd+bwd), one per output.
        expected: the eager reference outputs, to check each provider's forward against.
        nbytes: compulsory traffic of one call (``OpBench.bytes_moved``), None where GB/s does not apply.
    """

    entry: OpBench
    shape: Shape
    mode: str
    device: torch.device
    args: tuple[Any, ...]
    tensors: tuple[Tensor, ...]
    grad_outputs: tuple[Tensor, ...] | None
    expected: tuple[Tensor, ...]
    nbytes: int | None


def as_outputs(value: Any) -> tuple[Tensor, ...]:
    """An op's result as a tuple of tensors (ops with one output return a tensor)."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


@dataclass
class Prepared:
    """A warmed-up provider: call ``step()`` inside ``context()``."""

    name: str
    step: Callable[[], None]
    context: Callable[[], contextlib.AbstractContextManager]
    max_abs_diff: float | None


def make_workload(
    entry: OpBench,
    shape: Shape,
    mode: str,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    channels_last: bool = False,
) -> Workload:
    """Inputs, output gradient and expected output of one group.

    Args:
        entry: the op's registry entry.
        shape: the problem size.
        mode: "forward" or "fwd+bwd".
        device: where the tensors live.
        dtype: their dtype.
        seed: seed of the CPU generator the data is drawn from.
        channels_last: every 4-D input and output gradient channels_last-contiguous (a channels_last model's
            tensors) instead of contiguous; the same values.
    """
    device = torch.device(device)
    mode = cases.canonical_mode(mode)
    gen = torch.Generator().manual_seed(seed)
    args = entry.make_inputs(shape.dims, device, dtype, gen, shape.variant, shape.magnitude)
    if channels_last:
        args = tuple(_channels_last(a) for a in args)
    with torch.no_grad():
        expected = as_outputs(entry.reference(*args))
    grad_outputs = None
    if mode == "fwd+bwd":
        args = tuple(a.detach().requires_grad_() if isinstance(a, Tensor) else a for a in args)
        grad_outputs = tuple(
            torch.randn(out.shape, generator=gen).to(device=device, dtype=out.dtype) for out in expected
        )
        if channels_last:
            grad_outputs = tuple(_channels_last(g) for g in grad_outputs)
    tensors = tuple(a for a in args if isinstance(a, Tensor))
    nbytes = entry.bytes_moved(tensors, expected, mode)
    return Workload(entry, shape, mode, device, args, tensors, grad_outputs, expected, nbytes)


def _channels_last(value: Any) -> Any:
    """A 4-D tensor channels_last-contiguous; anything else unchanged."""
    if isinstance(value, Tensor) and value.dim() == 4:
        return value.contiguous(memory_format=torch.channels_last)
    return value


def _make_step(fn: Callable[..., Any], work: Workload) -> Callable[[], None]:
    args, tensors, grad_outputs = work.args, work.tensors, work.grad_outputs
    if work.mode == "forward":

        def step() -> None:
            fn(*args)

    else:

        def step() -> None:
            torch.autograd.grad(as_outputs(fn(*args)), tensors, grad_outputs)

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepare(entry: OpBench, name: str, work: Workload, warmup: int = 3) -> Prepared:
    """Build provider ``name`` for ``work``, check its forward once and warm it up.

    Warm-up includes ``torch.compile``'s compilation (forward and, in fwd+bwd, backward graphs),
    so no timed call pays for it.

    Raises:
        Unavailable: the provider cannot run on this machine.
        Exception: whatever the provider raised while warming up.
    """
    prov = cases.provider(entry, name, work.device)
    step = _make_step(prov.fn, work)
    with prov.context():
        # Not under no_grad: a compiled provider would compile a graph for that mode too.
        outputs = as_outputs(prov.fn(*work.args))
        diffs = [
            float((out.detach().double() - ref.double()).abs().nan_to_num(0.0).max())
            for out, ref in zip(outputs, work.expected, strict=True)
            if out.numel() and out.shape == ref.shape
        ]
        diff = max(diffs) if diffs else None
        for _ in range(warmup):
            step()
    _sync(work.device)
    return Prepared(name, step, prov.context, diff)


def _time_cpu(step: Callable[[], None], seconds: float, min_runs: int, max_runs: int = 100_000) -> list[float]:
    samples: list[float] = []
    spent = 0.0
    # A collection pass in the middle of a timed call would be charged to whichever provider ran.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        while (spent < seconds or len(samples) < min_runs) and len(samples) < max_runs:
            start = time.perf_counter()
            step()
            elapsed = time.perf_counter() - start
            samples.append(elapsed * 1e3)
            spent += elapsed
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def _time_cuda(step: Callable[[], None], seconds: float, min_runs: int) -> list[float]:
    try:
        from triton.testing import do_bench
    except ImportError:
        do_bench = None
    samples: list[float] = []
    while len(samples) < min_runs:
        if do_bench is not None:
            samples += do_bench(
                step, warmup=max(1, int(seconds * 250)), rep=max(1, int(seconds * 1e3)), return_mode="all"
            )
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        started = time.perf_counter()
        while time.perf_counter() - started < seconds or len(samples) < min_runs:
            start.record()
            step()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
    return samples


def measure(
    prepared: Prepared, device: torch.device, seconds: float, min_runs: int, max_runs: int = 100_000
) -> list[float]:
    """Per-call times (ms) of a prepared provider: ``seconds`` of calls, ``min_runs`` to ``max_runs`` of them."""
    with prepared.context():
        if device.type == "cuda":
            return _time_cuda(prepared.step, seconds, min_runs)[:max_runs]
        return _time_cpu(prepared.step, seconds, min_runs, max_runs)


@contextlib.contextmanager
def room_for_recompiles() -> Iterator[None]:
    """Raise dynamo's per-function recompile limit for the run.

    Each shape and mode is a separate static graph of the same reference function; past the
    default limit (8) dynamo silently runs the function eagerly, and "compiled" would time eager code.
    """
    import torch._dynamo

    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    with config.patch(**{name: max(getattr(config, name), 256)}):
        yield


def _base_row(
    plan: tuple[OpBench, Shape, str], device: torch.device, dtype: torch.dtype, channels_last: bool = False
) -> dict[str, Any]:
    entry, shape, mode = plan
    return {
        "op": entry.name,
        "shape": list(shape.dims),
        # A channels_last row is labelled apart: the targets are stated for contiguous inputs.
        "shape_label": f"{shape.label} channels_last" if channels_last else shape.label,
        "layout": "channels_last" if channels_last else "contiguous",
        "shape_doc": entry.shape_doc,
        "kwargs": entry.options(shape.variant, shape.dims),
        "mode": mode,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "quick": shape.quick,
        "target": shape.target,
        # A sweep point's side, channels, magnitude and elements.
        **shape.tags,
    }


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _summarise(row: dict[str, Any], samples: list[float], nbytes: int | None) -> None:
    ms = statistics.median(samples)
    q1, _, q3 = statistics.quantiles(samples, n=4) if len(samples) > 1 else (ms, ms, ms)
    row.update(status="ok", ms=ms, ms_min=min(samples), ms_q1=q1, ms_q3=q3, runs=len(samples))
    row["bytes"] = nbytes
    row["gbps"] = nbytes / (ms * 1e-3) / 1e9 if nbytes is not None and ms > 0 else None
    if row.get("elements"):
        row["ns_per_element"] = ms * 1e6 / row["elements"]


def _run_group(
    plan: tuple[OpBench, Shape, str],
    names: Sequence[str],
    device: torch.device,
    dtype: torch.dtype,
    budget: tuple[float, int, int, int],
    seed: int,
    deadline: float | None,
    advance: Callable[[str], None],
    channels_last: bool = False,
) -> list[dict[str, Any]]:
    entry, shape, mode = plan
    seconds, min_runs, max_runs, rounds = budget
    base = _base_row(plan, device, dtype, channels_last)
    rows = {name: {**base, "provider": name, "ms": None} for name in names}
    if deadline is not None and time.monotonic() > deadline:
        for name in names:
            rows[name].update(status="skipped", reason="time budget exhausted")
            advance(name)
        return list(rows.values())
    work = make_workload(entry, shape, mode, device, dtype, seed, channels_last)
    prepared: dict[str, Prepared] = {}
    for name in names:
        try:
            prepared[name] = prepare(entry, name, work)
            rows[name]["max_abs_diff"] = prepared[name].max_abs_diff
        except Unavailable as exc:
            rows[name].update(status="skipped", reason=str(exc))
            advance(name)
        except Exception as exc:  # noqa: BLE001 - one failing provider must not lose the others' numbers
            rows[name].update(status="error", reason=_one_line(exc))
            advance(name)
    samples: dict[str, list[float]] = {name: [] for name in prepared}
    pending = list(prepared)
    while pending:
        for name in list(pending):
            try:
                samples[name] += measure(prepared[name], device, seconds / rounds, 1, max_runs - len(samples[name]))
            except Exception as exc:  # noqa: BLE001
                rows[name].update(status="error", reason=_one_line(exc))
                del prepared[name]
                pending.remove(name)
                advance(name)
                continue
            taken = samples[name]
            if (sum(taken) >= seconds * 1e3 and len(taken) >= min_runs) or len(taken) >= max_runs:
                pending.remove(name)
                advance(name)
    for name in prepared:
        _summarise(rows[name], samples[name], work.nbytes)
    for row in rows.values():
        if row["ms"] is not None:
            row["speedup"] = {
                base: rows[base]["ms"] / row["ms"]
                for base in entry.comparisons()
                if base in rows and rows[base]["ms"] is not None
            }
    return list(rows.values())


def run(
    ops: Sequence[str] | None = None,
    *,
    quick: bool = False,
    modes: Sequence[str] = cases.MODES,
    device: torch.device | str | None = None,
    providers: Sequence[str] | None = None,
    shapes: Mapping[str, Sequence[Sequence[int]]] | None = None,
    dtype: torch.dtype = torch.float32,
    seconds: float | None = None,
    min_runs: int | None = None,
    max_runs: int | None = None,
    rounds: int = 10,
    seed: int = 0,
    progress: bool = True,
    deadline: float | None = None,
    channels_last: bool = False,
) -> list[dict[str, Any]]:
    """Benchmark ``ops`` on every provider and return one row per (op, shape, mode, provider).

    Args:
        ops: registered op names; all of them by default.
        quick: the quick shapes only and a short time budget (0.3 s / 5 runs per provider, else 1 s / 10).
        modes: "forward" and/or "fwd+bwd".
        device: "cpu" or "cuda"; CUDA when available by default.
        providers: restrict to these provider names (those an op does not have are ignored).
        shapes: per op, sizes (dims, or :class:`Shape` for a magnitude or row tags) to run instead of the
            registry's (e.g. tiny ones in tests, ``--shape``, ``--sweep`` points).
        dtype: input dtype.
        seconds: time budget per provider and group (overrides the quick/full default).
        min_runs: minimum timed calls per provider and group (overrides the default).
        max_runs: stop a provider after this many calls even if its time budget is not spent
            (default 1000 quick, 5000 full: more samples do not move a median).
        rounds: the number of slices a provider's time budget is interleaved in.
        seed: data seed.
        progress: show a tqdm progress bar on stderr.
        deadline: a ``time.monotonic()`` value after which groups not yet started are skipped.
        channels_last: feed every 4-D input and output gradient channels_last-contiguous, as a channels_last
            model would (rows get ``layout`` "channels_last" and their shape label says so).

    Returns:
        Dicts with ``op, shape, shape_label, layout, mode, provider, device, dtype, status`` ("ok", "skipped"
        or "error"), ``reason`` (not ok), ``ms`` (median, None when not ok), ``ms_min, ms_q1, ms_q3,
        runs, bytes, gbps`` (None without a byte model), ``speedup`` ({baseline: its ms / this ms}),
        ``max_abs_diff`` (forward vs the eager reference), ``quick, target, kwargs, shape_doc``, and the shape's
        tags (a sweep point's ``side, channels, magnitude, elements``, then also ``ns_per_element``).
    """
    from tqdm.auto import tqdm

    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    modes = [cases.canonical_mode(m) for m in modes]
    entries = [cases.get(name) for name in (ops if ops else list(cases.REGISTRY))]
    budget = (
        seconds if seconds is not None else (0.3 if quick else 1.0),
        min_runs if min_runs is not None else (5 if quick else 10),
        max_runs if max_runs is not None else (1000 if quick else 5000),
        max(1, rounds),
    )
    plan: list[tuple[OpBench, Shape, str, list[str]]] = []
    for entry in entries:
        names = [p for p in entry.providers() if providers is None or p in providers]
        if shapes is not None and entry.name in shapes:
            given = shapes[entry.name]
            op_shapes = [s if isinstance(s, Shape) else Shape(tuple(int(d) for d in s), quick=True) for s in given]
        else:
            op_shapes = cases.select_shapes(entry, quick)
        plan += [(entry, shape, mode, names) for shape in op_shapes for mode in modes]
    rows: list[dict[str, Any]] = []
    total = sum(len(names) for *_, names in plan)
    with tqdm(total=total, file=sys.stderr, disable=not progress, desc="bench", unit="timing") as bar:

        def advance(name: str) -> None:
            bar.update(1)

        with room_for_recompiles():
            for entry, shape, mode, names in plan:
                bar.set_postfix_str(f"{entry.name} {shape.label} {mode}")
                rows += _run_group(
                    (entry, shape, mode), names, device, dtype, budget, seed, deadline, advance, channels_last
                )
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return rows
