"""`codi2 …` command line. Each subcommand is a thin wrapper over the library."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="codi2", description="CoDi-2-style any-to-any multimodal chat")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_subparsers(dest="cmd", metavar="COMMAND")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.cmd is None:
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
