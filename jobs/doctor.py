"""Placeholder: `chromaray doctor` is being built (owned by another issue)."""
from __future__ import annotations

import argparse

from actors.errors import ChromarayError

HELP = "(not built yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise ChromarayError("doctor is not built yet")


if __name__ == "__main__":
    from jobs.cli import run_as_module

    run_as_module("doctor")
