"""Identify audio clips against a library processed by `chromaray fingerprint`.

Each clip is decoded, analysed with the pipeline's feature chain, fingerprinted, looked up in the
fingerprint index (votes on track and offset) and verified by bit error rate. Prints the track,
its path, the clip's offset in the track (seconds) and a confidence, or "no match".
With --json: one JSON object per clip and line: {"clip", "match": null | {"path", "offset_s",
"confidence", ...}}.
"""
from __future__ import annotations

import argparse

from actors.errors import ChromarayError

HELP = "identify audio clips against the fingerprinted library"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("clips", nargs="+", metavar="CLIP", help="audio files to identify")
    parser.add_argument("--db", required=True, help="SQLite database written by `chromaray fingerprint`")
    parser.add_argument("--json", action="store_true", help="one JSON object per clip and line")
    parser.add_argument("--no-sync", action="store_true",
                        help="do not bring a stale fingerprint index up to date (query it as it is)")


def run(args: argparse.Namespace) -> int:
    import json
    import os
    import sys

    from actors.errors import InputFileError
    from pipeline.search.identify import Identifier

    engine = _engine_with_index(args.db, sync=not args.no_sync)
    ident = Identifier(engine)
    if not ident.index.tracks:
        raise ChromarayError(f"the fingerprint index of {args.db} is empty: run `chromaray fingerprint` on your "
                             "library first")
    status = 0
    for clip in args.clips:
        if not os.path.exists(clip):
            raise ChromarayError(f"clip {clip} does not exist")
        try:
            m = ident.identify_file(clip)
        except InputFileError as exc:
            status = 1
            if args.json:
                print(json.dumps({"clip": clip, "match": None, "error": exc.reason}), flush=True)
            else:
                print(f"{clip}: error: {exc.reason}", file=sys.stderr, flush=True)
            continue
        if args.json:
            print(json.dumps({"clip": clip, "match": m.to_json() if m else None}), flush=True)
        elif m is None:
            print(f"{clip}: no match", flush=True)
        else:
            speed = f"  speed {m.speed:g}x" if m.speed != 1.0 else ""
            print(f"{clip}: {m.content_hash[:12]}  {m.path}  offset {m.offset_s:.2f} s  "
                  f"confidence {m.confidence:.2f}{speed}", flush=True)
    return status


def _engine_with_index(db: str, *, sync: bool):
    """Read-only engine on ``db``; first brings the index up to date when it is stale (that one
    write needs the database to be writable)."""
    from pipeline.search import index
    from pipeline.store import open_db

    engine = open_db(db, readonly=True)
    if sync and index.is_stale(engine):
        engine.dispose()
        try:
            writer = open_db(db, create=False)
        except ChromarayError as exc:
            raise ChromarayError(f"the fingerprint index of {db} is out of date and cannot be updated: {exc} "
                                 "(use --no-sync to query it as it is)") from None
        index.sync(writer)
        writer.dispose()
        engine = open_db(db, readonly=True)
    return engine


if __name__ == "__main__":
    from jobs.cli import run_as_module

    run_as_module("identify")
