"""The ``chronolog`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
    """Run the live demo."""
    from chronolog.demo import run_demo

    return asyncio.run(run_demo(args.data_dir, seconds=args.seconds))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``chronolog`` command."""
    parser = argparse.ArgumentParser(prog="chronolog", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the demo on an embedded data directory")
    demo.add_argument("--data-dir", help="where to keep the demo's data (default: a new temp dir)")
    demo.add_argument("--seconds", type=float, default=12.0, help="how long to watch (default 12)")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chronolog`` command."""
    args = build_parser().parse_args(argv)
    handler = args.handler
    return int(handler(args))


if __name__ == "__main__":
    sys.exit(main())
