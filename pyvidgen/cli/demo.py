"""``pyvidgen demo`` (what ``make demo`` runs): what is installed, a correctness check of every
kernel backend against the reference, the benchmark table of the ops on the target shapes, and
about two minutes of training of the small spatio-temporal video autoencoder."""

from __future__ import annotations

import time
from pathlib import Path

import torch


def run_demo(out_dir: str = "bench-results", seconds: float = 0.5, train_steps: int = 120) -> int:
    """Print info, run ``check``, run the quick benchmarks, train briefly; 0 when every check passed."""
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

    if train_steps > 0:
        print(f"\n== train: the small spatio-temporal video autoencoder, {train_steps} steps on bouncing digits")
        from pyvidgen._backend import _load_cpp
        from pyvidgen.output_cache import cache_all_cpu_tensors
        from pyvidgen.training.loop import TrainConfig, train
        from pyvidgen.training.st_ae import STAETask

        run = Path("runs/demo-st-ae")
        config = TrainConfig(
            task="st-ae",
            steps=train_steps,
            out=str(run),
            eval_every=train_steps,
            eval_batches=4,
            options={"seq_len": 10},
        )
        # As `pyvidgen train` does: large CPU tensors reuse freed memory while it trains.
        with cache_all_cpu_tensors(_load_cpp()[0] is not None):
            metrics = train(STAETask(), config).metrics
        print(
            f"held-out next-frame MSE {metrics['next_frame_mse']:.4f}, copy-last-frame {metrics['copy_last_mse']:.4f} "
            f"({100 * (1 - metrics['next_frame_vs_copy_last']):.0f}% lower), {metrics['samples_per_s']:.1f} videos/s"
        )
        print(f"samples (true rows above predicted rows): {run / 'samples.png'}, {run / 'samples.gif'}")
        print(f"checkpoint: {run / 'checkpoint.pt'}  (roll out more: pyvidgen sample st-ae --checkpoint ...)")
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0 if ok else 1
