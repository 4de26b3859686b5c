"""``pyvidgen`` command: entry point and sub-command dispatch."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyvidgen", description="Fused kernels for generative video models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions and available backends")
    args = parser.parse_args(argv)
    if args.command == "info":
        from pyvidgen.cli.info import run_info

        return run_info()
    return 2


if __name__ == "__main__":
    sys.exit(main())
