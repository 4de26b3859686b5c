"""pytest-benchmark suites over the registry of :mod:`pyvidgen.bench.cases`.

Not collected by a plain ``pytest`` run (testpaths is ``tests``, and addopts skips benchmarks). Run::

    .venv/bin/python -m pytest benchmarks --benchmark-only            # everything
    .venv/bin/python -m pytest benchmarks --benchmark-only -m quick   # the quick shapes

``PYVIDGEN_BENCH_DEVICE=cpu|cuda`` picks the device (CUDA when available by default) and
``PYVIDGEN_BENCH_SECONDS`` the time spent per benchmark (default 1). Triton is never timed under
``TRITON_INTERPRET=1``, which is deliberately not set here.

``test_bench_ops.py`` times every op of the registry (every op declared with a benchmark entry):
op x shape x mode x provider, generated here, with providers unavailable on this machine skipped with
a reason. A new op needs nothing here.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import pytest
import torch

from pyvidgen.bench import cases, runner

DEVICE = torch.device(os.environ.get("PYVIDGEN_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
SECONDS = float(os.environ.get("PYVIDGEN_BENCH_SECONDS", "1.0"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "quick: the quick subset of benchmark shapes")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not {"op", "provider", "mode", "shape"} <= set(metafunc.fixturenames):
        return
    # Op, shape, then mode, then provider: the providers of one case run back to back.
    params = [
        pytest.param(
            name,
            provider,
            mode,
            shape,
            id=f"{name}-{shape.label}-{mode}-{provider}",
            marks=[pytest.mark.quick] * shape.quick,
        )
        for name, entry in cases.REGISTRY.items()
        for shape in entry.shapes
        for mode in cases.MODES
        for provider in entry.providers()
    ]
    metafunc.parametrize(("op", "provider", "mode", "shape"), params)


@pytest.fixture(scope="session", autouse=True)
def _room_for_recompiles():
    """Every shape and mode compiles the reference again: keep dynamo from falling back to eager."""
    with runner.room_for_recompiles():
        yield


@pytest.fixture
def bench_case(benchmark) -> Callable[[str, str, str, cases.Shape], None]:  # noqa: ANN001 - pytest-benchmark fixture
    """``bench_case(op, provider, mode, shape)``: warm the provider up, then time it with ``benchmark.pedantic``."""

    def run(op: str, provider: str, mode: str, shape: cases.Shape) -> None:
        entry = cases.get(op)
        work = runner.make_workload(entry, shape, mode, DEVICE)
        try:
            prepared = runner.prepare(entry, provider, work)
        except cases.Unavailable as exc:
            pytest.skip(f"{provider} unavailable: {exc}")
        step = prepared.step
        if DEVICE.type == "cuda":

            def step() -> None:
                prepared.step()
                torch.cuda.synchronize(DEVICE)

        with prepared.context():
            start = time.perf_counter()
            step()
            once = time.perf_counter() - start
            rounds = min(500, max(5, math.ceil(SECONDS / max(once, 1e-6))))
            benchmark.group = f"{op} {shape.label} {mode}"
            benchmark.extra_info.update(provider=provider, bytes=work.nbytes, max_abs_diff=prepared.max_abs_diff)
            benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=2)
        if work.nbytes is not None and benchmark.stats is not None:
            benchmark.extra_info["gbps"] = work.nbytes / benchmark.stats.stats.median / 1e9

    return run
