"""``pyvidgen demo`` (what ``make demo`` runs): what is installed, a correctness check of every
kernel backend against the reference, and the benchmark table of the ops on the target shapes."""

from __future__ import annotations

import time

import torch


def run_demo(out_dir: str = "bench-results", seconds: float = 0.5) -> int:
    """Print info, run ``check``, run the quick benchmarks; 0 when every check passed."""
    from pyvidgen.bench import report, runner
    from pyvidgen.cli.check import format_check, run_check
    from pyvidgen.cli.info import info_lines

    started = time.perf_counter()
    print("== pyvidgen info")
    print("\n".join(info_lines()))

    print("\n== check: every kernel backend against the reference (fresh random inputs, fp32)")
    rows, ok = run_check(device="cpu")
    print(format_check(rows) if rows else "only the reference backend is available")
    print("all backends agree with the reference" if ok else "MISMATCH against the reference")

    print("\n== bench: quick shapes, median of interleaved runs (warm-up and torch.compile time excluded)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bench_rows = runner.run(quick=True, device=device, seconds=seconds, progress=True)
    print(report.format_table(bench_rows))
    paths = report.save(bench_rows, out_dir, report.machine_info(device))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0 if ok else 1
