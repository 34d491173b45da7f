"""`chromaray` console script: one subcommand per job module.

Each module in COMMANDS exposes ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int`` and keeps heavy imports (ray, torch) inside ``run`` so
``chromaray --help`` stays instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from actors.errors import ChromarayError
from pipeline.text import shown

__all__ = ["COMMANDS", "build_parser", "main", "run_as_module"]


COMMANDS = {
    "fingerprint": "jobs.fingerprint",
    "identify": "jobs.identify",
    "duplicates": "jobs.duplicates",
    "match-midi": "jobs.match_midi",
    "train": "jobs.train",
    "doctor": "jobs.doctor",
    "runs": "jobs.runs",
    "dashboard": "jobs.dashboard",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chromaray", description="Ray-distributed music library pipeline.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, modname in COMMANDS.items():
        mod = importlib.import_module(modname)
        mod.add_arguments(sub.add_parser(name, help=mod.HELP, description=mod.__doc__))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(importlib.import_module(COMMANDS[args.command]).run(args) or 0)
    except ChromarayError as exc:
        print(f"chromaray {args.command}: error: {shown(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"chromaray {args.command}: interrupted", file=sys.stderr)
        return 130


def run_as_module(command: str) -> None:
    """Body of ``python -m jobs.X``: same arguments as ``chromaray X``."""
    sys.exit(main([command, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
