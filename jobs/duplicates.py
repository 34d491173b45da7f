"""Find tracks in a fingerprinted library that are the same recording.

Other encodings and bitrates, trimmed or padded copies, louder or quieter ones: every indexed
track is looked up in the fingerprint index and pairs that align with a low bit error rate are
grouped. Prints each group with a similarity score (1 = identical fingerprints, 0 = chance) and
each member's offset in seconds; --json prints one JSON object per group and line.
"""
from __future__ import annotations

import argparse

from jobs.identify import add_config_argument

__all__ = ["HELP", "add_arguments", "run"]

HELP = "group tracks of the library that are the same recording"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, help="SQLite database written by `chromaray fingerprint`")
    parser.add_argument("--json", action="store_true", help="one JSON object per group and line")
    parser.add_argument("--max-score", type=float, default=None,
                        help="largest mismatch score (bit error rates, 0..0.5) of a duplicate pair "
                             "(default: the calibrated one)")
    parser.add_argument("--min-overlap", type=float, default=None, metavar="SECONDS",
                        help="shortest aligned overlap of a duplicate pair (or 80%% of the shorter track)")
    parser.add_argument("--no-sync", action="store_true", help="do not bring a stale fingerprint index up to date")
    add_config_argument(parser)


def run(args: argparse.Namespace) -> int:
    import json

    from actors.errors import ChromarayError
    from pipeline.config import load_config
    from pipeline.search import duplicates as q
    from pipeline.search.index import open_synced

    config = load_config(args.config).identify
    engine = open_synced(args.db, sync=not args.no_sync)
    if args.max_score is not None and not 0.0 < args.max_score < 0.5:
        raise ChromarayError("--max-score must be between 0 and 0.5")
    groups = q.find_duplicates(engine, config=config, max_score=args.max_score, min_overlap_s=args.min_overlap)
    if args.json:
        for g in groups:
            print(json.dumps(g.to_json()), flush=True)
        return 0
    if not groups:
        print("no duplicates")
        return 0
    for i, g in enumerate(groups, 1):
        print(f"group {i}: {len(g.members)} tracks, similarity {g.similarity:.2f}")
        for m in g.members:
            paths = ", ".join(m["paths"]) or "(no path)"
            print(f"  {m['content_hash'][:12]}  offset {m['offset_s']:+.2f} s  "
                  f"similarity {m['similarity']:.2f}  {paths}")
    return 0


if __name__ == "__main__":
    from jobs.cli import run_as_module

    run_as_module("duplicates")
