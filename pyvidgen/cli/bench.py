"""``pyvidgen bench``: time every provider of the registered ops, print the table, write JSON and PNG.

Example::

    pyvidgen bench --quick                       # all ops, quick shapes, both modes
    pyvidgen bench --op flow_warp --mode fwd+bwd --out bench-results/
"""

from __future__ import annotations

import argparse
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the ``bench`` sub-command."""
    parser.add_argument("--op", action="append", metavar="NAME", help="op to benchmark (repeatable; default: all)")
    parser.add_argument("--quick", action="store_true", help="quick shapes and a short time budget")
    parser.add_argument("--mode", choices=("forward", "fwd+bwd", "both"), default="both", help="default: both")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    parser.add_argument("--provider", action="append", metavar="NAME", help="restrict to providers (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before timing")
    parser.add_argument("--out", default="bench-results", metavar="DIR", help="where bench.json and bench.png go")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument(
        "--layers",
        action="store_true",
        help="instead of the ops: a ConvLSTM layer against the usual implementation, training steps of the "
        "small ST-AE, VPN and DRAW on the fused ops against the reference, and the VPN's cached and naive samplers",
    )


def run_bench(args: argparse.Namespace) -> int:
    """Run the sub-command; 0 on success, 2 on bad arguments."""
    import torch

    from pyvidgen.bench import report, runner

    if args.device == "cuda" and not torch.cuda.is_available():
        print("pyvidgen bench: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.layers:
        return _run_layers()
    modes = ("forward", "fwd+bwd") if args.mode == "both" else (args.mode,)
    started = time.perf_counter()
    try:
        rows = runner.run(
            ops=args.op,
            quick=args.quick,
            modes=modes,
            device=args.device,
            providers=args.provider,
            progress=not args.no_progress,
        )
    except ValueError as exc:
        print(f"pyvidgen bench: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    device = rows[0]["device"] if rows else (args.device or "cpu")
    machine = report.machine_info(device)
    print(
        f"pyvidgen bench on {machine['device_name']} ({device}, {machine['cpu_threads']} CPU threads, "
        f"torch {machine['torch']}): median ms over interleaved runs; vs X = X's median / this median"
    )
    print(report.format_table(rows))
    paths = {"json": report.write_json(rows, f"{args.out}/bench.json", machine)}
    try:
        paths["png"] = report.plot(rows, f"{args.out}/bench.png")
    except ImportError as exc:
        # matplotlib is an optional (bench extra) dependency: the table and JSON still stand.
        print(f"pyvidgen bench: no plot ({exc}); pip install matplotlib", file=sys.stderr)
    print(f"\nwrote {', '.join(str(p) for p in paths.values())} in {elapsed:.0f} s")
    return 0


def _run_layers() -> int:
    from pyvidgen.bench.layers import time_conv_lstm_layer
    from pyvidgen.bench.layers_report import format_layer_table, format_sampling_table, format_step_table
    from pyvidgen.bench.model_step import time_draw_step, time_st_ae_step, time_vpn_step
    from pyvidgen.bench.sampling import time_vpn_sampling

    print(format_layer_table(time_conv_lstm_layer()))
    print()
    print(format_step_table(time_st_ae_step() + time_vpn_step() + time_draw_step()))
    print()
    print(format_sampling_table(time_vpn_sampling()))
    return 0
