"""``pyvidgen bench``: time every provider of the registered ops, print the table, write JSON and PNG.

Examples::

    pyvidgen bench --quick                       # all ops, quick shapes, both modes
    pyvidgen bench --op flow_warp --mode fwd+bwd --out bench-results/
    pyvidgen bench --op flow_warp --shape 8,3,256,256 --shape 64,32,32,32     # exactly these sizes
    pyvidgen bench --op draw_read --shape 32,3,64,64,5                         # draw dims: B,C,H,W,N
    pyvidgen bench --op masked_conv2d --shape 4,3,128,128    # Cout, K from its first shape (64, 7)
    pyvidgen bench --sweep --quick                # every op over the side ladder (~5 min on 2 cores, estimated)
    pyvidgen bench --op flow_warp --sweep --mode fwd+bwd --provider eager --provider cpp --out /tmp/sweep
    pyvidgen bench --sweep --dry-run              # list the sweep's points, time nothing
    pyvidgen bench --models --quick --threads 2   # each model's training step: fused vs usual, eager and compiled
    pyvidgen bench --op masked_conv2d --quick --channels-last   # inputs as a channels_last model has them

``--shape B,C,H,W[,...]`` (repeatable) times the dims given, in the order of the op's shape_doc; an op whose dims
have more entries (draw_read/draw_write: N; masked_conv2d: Cout,K; cross_conv2d: kh,kw) takes them from the text
too, and those not given from the op's first benchmark shape. With several ops, each shape applies to each op.

``--models`` times one training step of each model (ST-AE, VPN, DRAW, cross-conv; small presets) on the fused ops
against the same model written the usual way (``F.grid_sample``, masked dense convolutions, materialised
filterbanks, the popular ConvLSTM), each eager and under ``torch.compile`` (``--no-compile``: eager only), after
checking that both give the same loss and gradients; it prints one line per model and provider and writes
``OUT/models.json``.

``--sweep`` times each op over a size ladder: sides 32 to 512 (H = W), channel counts 3 and 32 where the op leaves
them free, flow magnitudes 0, 2, 8 and 32 pixels for flow_warp, the batch filling a fixed element budget
(``--sweep-elements``, default 2^21 values in the (B, C, H, W) tensor), so ns per element compare along the ladder.
Each op declares its ladder (``Bench.sweep`` in ``pyvidgen/ops/<op>.py``). Compiled providers are left out unless
``--provider`` names them (each point would compile again); ``--quick`` shortens the budget per point.

Every run first measures the copy bandwidth (``dst.copy_(src)`` well beyond the last-level cache; the "copy" row)
and reports memory-bound ops' GB/s as a percentage of it ("% copy").
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any


def parse_dims(text: str) -> tuple[int, ...]:
    """``--shape``'s type: "16,3,64,64" (or "16x3x64x64", as the table prints it) -> (16, 3, 64, 64).

    Raises:
        argparse.ArgumentTypeError: not at least four positive integers (argparse then exits with code 2, naming
            the flag).
    """
    try:
        dims = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if len(dims) < 4:
        raise argparse.ArgumentTypeError(f"{text!r} has {len(dims)} entries; expected at least B,C,H,W")
    if min(dims) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every entry must be >= 1")
    return dims


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 1")
    return value


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
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument(
        "--shape",
        action="append",
        type=parse_dims,
        metavar="B,C,H,W[,...]",
        help="time exactly these dims instead of the registry's (repeatable; each applies to every --op): the op's "
        "dims as its shape_doc lists them; ops with more (draw_read/draw_write: N; masked_conv2d: Cout,K; "
        "cross_conv2d: kh,kw) take the entries not given from their first benchmark shape",
    )
    sizes.add_argument(
        "--sweep",
        action="store_true",
        help="each op over its size ladder (sides 32..512, channels 3 and 32, flow_warp's flow magnitudes 0..32 px) "
        "at a fixed element budget; compiled providers only when --provider names them",
    )
    sizes.add_argument(
        "--layers",
        action="store_true",
        help="instead of the ops: a ConvLSTM layer against the usual implementation, training steps of the "
        "small ST-AE, VPN, DRAW and cross-conv network on the fused ops against the reference, and the VPN's cached "
        "and naive samplers",
    )
    sizes.add_argument(
        "--models",
        action="store_true",
        help="instead of the ops: a training step of each model on the fused ops against the same model written the "
        "usual way (plain PyTorch), eager and torch.compile'd; writes OUT/models.json",
    )
    parser.add_argument("--no-compile", action="store_true", help="--models: eager providers only")
    parser.add_argument(
        "--sweep-elements",
        type=_positive,
        default=None,
        metavar="N",
        help="values in a sweep point's (B, C, H, W) tensor (default 2^21 = 2097152); B = max(1, N // (C H W))",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the sizes that would be timed and exit")
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="feed the ops channels_last-contiguous inputs and output gradients (a channels_last model's tensors), "
        "for every provider alike",
    )
    parser.add_argument(
        "--cache-cpu-tensors",
        action="store_true",
        help="serve every CPU tensor of 4 MiB or more from pyvidgen's cache of freed memory, for every provider "
        "alike (pyvidgen.set_cache_all_cpu_tensors; `pyvidgen train` does this by default)",
    )


def _plan(args: argparse.Namespace, ops: list[str], device: Any) -> tuple[dict | None, list[str] | None, tuple | None]:
    """(shapes per op or None for the registry's, providers, (seconds, min_runs) or None) of the run on ``device``."""
    from pyvidgen.bench import sweep
    from pyvidgen.ops._spec import SWEEP_ELEMENTS

    if args.sweep_elements is not None and not args.sweep:
        raise ValueError("--sweep-elements applies to --sweep only")
    if args.shape:
        return sweep.user_shapes(ops, args.shape), args.provider, None
    if args.sweep:
        plan = sweep.sweep_plan(ops, args.sweep_elements or SWEEP_ELEMENTS)
        providers = args.provider if args.provider else sweep.sweep_providers(list(plan), device)
        return plan, providers, sweep.SWEEP_BUDGET[args.quick]
    return None, args.provider, None


def _print_plan(shapes: dict, ops: list[str], quick: bool) -> None:
    from pyvidgen.bench import cases

    for name in ops:
        labels = [s.label for s in (shapes[name] if shapes else cases.select_shapes(cases.get(name), quick))]
        print(f"{name}: {len(labels)} shapes: {', '.join(labels)}")


def run_bench(args: argparse.Namespace) -> int:
    """Run the sub-command; 0 on success, 2 on bad arguments."""
    from pyvidgen.output_cache import cache_all_cpu_tensors

    if args.cache_cpu_tensors:
        with cache_all_cpu_tensors():
            return _run_bench(args)
    return _run_bench(args)


def _run_bench(args: argparse.Namespace) -> int:
    import torch

    from pyvidgen.bench import cases, report, roofline, runner, sweep, sweep_report

    if args.device == "cuda" and not torch.cuda.is_available():
        print("pyvidgen bench: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.channels_last and (args.layers or args.models):
        print("pyvidgen bench: --channels-last applies to the op benchmarks only", file=sys.stderr)
        return 2
    if args.layers:
        return _run_layers()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.models:
        return _run_models(args, device)
    if args.no_compile:
        print("pyvidgen bench: --no-compile applies to --models only", file=sys.stderr)
        return 2
    modes = ("forward", "fwd+bwd") if args.mode == "both" else (args.mode,)
    try:
        ops = [cases.get(name).name for name in (args.op or cases.REGISTRY)]
        shapes, providers, budget = _plan(args, ops, device)
    except ValueError as exc:
        print(f"pyvidgen bench: {exc}", file=sys.stderr)
        return 2
    if args.sweep:
        ops = list(shapes)
        points, timings = sweep.count_timings(shapes, modes, providers, device)
        print(
            f"sweep: {points} points ({', '.join(f'{n} {len(s)}' for n, s in shapes.items())}) x {len(modes)} modes "
            f"x providers {', '.join(providers)} = {timings} timings of >= {budget[0]} s / {budget[1]} calls each"
        )
    if args.dry_run:
        _print_plan(shapes, ops, args.quick)
        return 0
    started = time.perf_counter()
    # Once per run, before the ops: the ceiling of the memory-bound ops' GB/s.
    copy = roofline.measure_copy(device)
    try:
        rows = runner.run(
            ops=ops,
            quick=args.quick,
            modes=modes,
            device=device,
            providers=providers,
            shapes=shapes,
            seconds=budget[0] if budget else None,
            min_runs=budget[1] if budget else None,
            progress=not args.no_progress,
            channels_last=args.channels_last,
        )
    except ValueError as exc:
        print(f"pyvidgen bench: {exc}", file=sys.stderr)
        return 2
    roofline.annotate(rows, copy)
    rows = [copy, *rows]
    elapsed = time.perf_counter() - started
    machine = report.machine_info(device)
    print(
        f"pyvidgen bench on {machine['device_name']} ({device}, {machine['cpu_threads']} CPU threads, "
        f"torch {machine['torch']}): median ms over interleaved runs; vs X = X's median / this median"
    )
    print(report.format_table(rows))
    paths = {"json": report.write_json(rows, f"{args.out}/bench.json", machine)}
    try:
        draw = sweep_report.plot_sweep if args.sweep else report.plot
        paths["png"] = draw(rows, f"{args.out}/bench.png")
    except ImportError as exc:
        # matplotlib is an optional (bench extra) dependency: the table and JSON still stand.
        print(f"pyvidgen bench: no plot ({exc}); pip install matplotlib", file=sys.stderr)
    print(f"\nwrote {', '.join(str(p) for p in paths.values())} in {elapsed:.0f} s")
    return 0


def _run_layers() -> int:
    from pyvidgen.bench.layers import time_conv_lstm_layer
    from pyvidgen.bench.layers_report import format_layer_table, format_sampling_table, format_step_table
    from pyvidgen.bench.model_step import PROBLEMS, time_model_step
    from pyvidgen.bench.sampling import time_vpn_sampling

    print(format_layer_table(time_conv_lstm_layer()))
    print()
    print(format_step_table([row for name in PROBLEMS for row in time_model_step(name)]))
    print()
    print(format_sampling_table(time_vpn_sampling()))
    return 0


def _run_models(args: argparse.Namespace, device: Any) -> int:
    from pyvidgen.bench import report
    from pyvidgen.bench.models import time_models
    from pyvidgen.bench.models_report import format_models_table

    ignored = [flag for flag, value in (("--op", args.op), ("--provider", args.provider)) if value]
    ignored += ["--sweep-elements"] if args.sweep_elements is not None else []
    ignored += ["--dry-run"] if args.dry_run else []
    if ignored:
        print(f"pyvidgen bench: {', '.join(ignored)} do not apply to --models", file=sys.stderr)
        return 2
    seconds, min_runs = (1.5, 3) if args.quick else (6.0, 4)
    started = time.perf_counter()

    def progress(line: str) -> None:
        print(f"  {line} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    rows = time_models(
        seconds=seconds,
        min_runs=min_runs,
        rounds=3,
        compile=not args.no_compile,
        device=device,
        progress=None if args.no_progress else progress,
    )
    elapsed = time.perf_counter() - started
    machine = report.machine_info(device)
    print(
        f"pyvidgen bench --models on {machine['device_name']} ({device}, {machine['cpu_threads']} CPU threads, "
        f"torch {machine['torch']}{', CPU tensor cache' if machine['cpu_tensor_cache'] else ''}): one training step "
        "(forward, backward, RMSprop), median ms over interleaved "
        "runs; fused is Nx faster = this provider's median / the eager fused median; |dloss|, |dgrad| against the "
        "usual eager model"
    )
    print(format_models_table(rows))
    path = report.write_json(rows, f"{args.out}/models.json", machine)
    print(f"\nwrote {path} in {elapsed:.0f} s")
    return 0
