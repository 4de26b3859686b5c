"""Benchmark machinery shared by ``pyvidgen bench``, ``pyvidgen demo``, the pytest-benchmark suites
in ``benchmarks/`` and ``benchmarks/gpu_check.py``.

* :mod:`pyvidgen.bench.cases`: the registry (ops, shapes, providers, input builders, targets).
* :mod:`pyvidgen.bench.runner`: :func:`~pyvidgen.bench.runner.run` times them, returning rows.
* :mod:`pyvidgen.bench.report`: :func:`~pyvidgen.bench.report.format_table`, JSON and PNG output.
"""

from pyvidgen.bench.report import format_table
from pyvidgen.bench.runner import run

__all__ = ["format_table", "run"]
