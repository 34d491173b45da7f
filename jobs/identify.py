"""Identify audio clips against a library processed by `chromaray fingerprint`.

Each clip is decoded, analysed with the pipeline's feature chain (with the DSP settings the library
was fingerprinted with, stored in the database), fingerprinted, looked up in the fingerprint index
(votes on track and offset) and verified by bit error rate. Prints the track,
its path, the clip's offset in the track (seconds) and a confidence, or "no match".
With --json: one JSON object per clip and line: {"clip", "match": null | {"path", "offset_s",
"confidence", ...}}.
"""
from __future__ import annotations

import argparse

from actors.errors import ChromarayError

__all__ = ["HELP", "add_arguments", "run"]

HELP = "identify audio clips against the fingerprinted library"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("clips", nargs="+", metavar="CLIP", help="audio files to identify")
    parser.add_argument("--db", required=True, help="SQLite database written by `chromaray fingerprint`")
    parser.add_argument("--json", action="store_true", help="one JSON object per clip and line")
    parser.add_argument("--no-sync", action="store_true",
                        help="do not bring a stale fingerprint index up to date (query it as it is)")
    add_config_argument(parser)


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config whose `identify` section sets the decision thresholds "
                                         "(analysis settings always come from the library)")


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from actors.errors import InputFileError
    from pipeline.config import load_config
    from pipeline.search.identify import Identifier
    from pipeline.search.index import open_synced
    from pipeline.text import shown

    for clip in args.clips:
        # Before anything is opened: a FIFO or a device would block the decoder forever.
        problem = _not_a_clip(clip)
        if problem:
            raise ChromarayError(f"clip {shown(clip)} {problem}")
    config = load_config(args.config).identify
    engine = open_synced(args.db, sync=not args.no_sync)
    ident = Identifier(engine, config=config)
    if not ident.index.tracks:
        raise ChromarayError(f"the fingerprint index of {args.db} is empty: run `chromaray fingerprint` on your "
                             "library first")
    if not ident.groups:
        raise ChromarayError(f"no track of {args.db} can be searched: {ident.skipped_note}")
    if ident.skipped_note:
        print(f"chromaray identify: warning: {ident.skipped_note}", file=sys.stderr, flush=True)
    status = 0
    for clip in args.clips:
        try:
            m = ident.identify_file(clip)
        except InputFileError as exc:
            status = 1
            if args.json:
                print(json.dumps({"clip": clip, "match": None, "error": exc.reason}), flush=True)
            else:
                print(f"{shown(clip)}: error: {shown(exc.reason)}", file=sys.stderr, flush=True)
            continue
        if args.json:
            print(json.dumps({"clip": clip, "match": m.to_json() if m else None}), flush=True)
        elif m is None:
            print(f"{shown(clip)}: no match", flush=True)
        else:
            speed = f"  speed {m.speed:g}x" if m.speed != 1.0 else ""
            print(f"{shown(clip)}: {m.content_hash[:12]}  {shown(m.path)}  offset {m.offset_s:.2f} s  "
                  f"confidence {m.confidence:.2f}{speed}", flush=True)
    return status


def _not_a_clip(clip: str) -> str | None:
    """Why ``clip`` cannot be read as an audio file (None: a regular file, links followed)."""
    import os
    import stat

    try:
        mode = os.stat(clip).st_mode
    except FileNotFoundError:
        return "does not exist" if not os.path.islink(clip) else "is a dangling symbolic link"
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    if stat.S_ISDIR(mode):
        return "is a directory, not an audio file"
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) \
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"
        return f"is {kind}, not a regular file: identify reads only regular files"
    return None


if __name__ == "__main__":
    from jobs.cli import run_as_module

    run_as_module("identify")
