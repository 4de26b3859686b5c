"""``pyvidgen`` command: entry point and sub-command dispatch (each sub-command lives in its own module)."""

from __future__ import annotations

import argparse
import sys

from pyvidgen.cli import bench, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyvidgen", description="Fused kernels for generative video models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions and available backends")
    check = sub.add_parser("check", help="compare every kernel backend with the reference on random inputs")
    check.add_argument("--seed", type=int, default=None, help="input seed (default: fresh)")
    check.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    bench.add_arguments(sub.add_parser("bench", help="time the kernels against eager and torch.compile"))
    train.add_train_arguments(sub.add_parser("train", help="train a paper's model (e.g. st-ae)"))
    train.add_sample_arguments(sub.add_parser("sample", help="roll out predictions from a checkpoint"))
    demo = sub.add_parser("demo", help="info, check and the quick benchmark table (what `make demo` runs)")
    demo.add_argument("--out", default="bench-results", metavar="DIR", help="where bench.json and bench.png go")
    args = parser.parse_args(argv)
    if args.command == "info":
        from pyvidgen.cli.info import run_info

        return run_info()
    if args.command == "check":
        from pyvidgen.cli.check import main_check

        return main_check(args.seed, args.device)
    if args.command == "bench":
        return bench.run_bench(args)
    if args.command == "train":
        return train.run_train(args)
    if args.command == "sample":
        return train.run_sample(args)
    if args.command == "demo":
        from pyvidgen.cli.demo import run_demo

        return run_demo(args.out)
    return 2


if __name__ == "__main__":
    sys.exit(main())
