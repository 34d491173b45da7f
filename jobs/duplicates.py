"""Find tracks in a fingerprinted library that are the same recording.

Other encodings and bitrates, trimmed or padded copies, louder or quieter ones: every indexed
track is looked up in the fingerprint index and pairs that align with a low bit error rate are
grouped. Prints each group with a similarity score (1 = identical fingerprints, 0 = chance) and
each member's offset in seconds, then how long the comparison took and where (large libraries:
in parallel Ray tasks); --json prints one JSON object per group and line. Tracks are
compared with tracks fingerprinted with the same analysis settings; like identify, a warning
line on stderr names the tracks that cannot be searched and why.
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
                        help="shortest aligned overlap of a duplicate pair (or all of a shorter track); the "
                             "overlap also covers 80%% of the shorter track and half the longer one")
    parser.add_argument("--no-sync", action="store_true", help="do not bring a stale fingerprint index up to date")
    parser.add_argument("--workers", choices=("auto", "driver", "ray"), default="auto",
                        help="compare tracks in this process (driver) or in parallel Ray tasks on this machine "
                             "(ray: a local Ray, or the one RAY_ADDRESS names); auto: on Ray from 20,000 tracks on")
    add_config_argument(parser)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from actors.errors import ChromarayError
    from pipeline.config import load_config
    from pipeline.search import duplicates as q
    from pipeline.search.index import open_synced
    from pipeline.text import shown

    flags = {"duplicate_score": args.max_score, "min_duplicate_overlap_s": args.min_overlap}
    config = load_config(args.config, overrides={"identify": {k: v for k, v in flags.items() if v is not None}})
    engine = open_synced(args.db, sync=not args.no_sync)
    finder = q.DuplicateFinder(engine, config=config.identify)
    if finder.index.tracks and not finder.settings.groups:
        raise ChromarayError(f"no track of {args.db} can be searched: {finder.note}")
    if finder.note:
        print(f"chromaray duplicates: warning: {finder.note}", file=sys.stderr, flush=True)
    groups = finder.find(workers=args.workers)
    if args.json:
        for g in groups:
            print(json.dumps(g.to_json()), flush=True)
        return 0
    if not groups:
        print("no duplicates")
    for i, g in enumerate(groups, 1):
        print(f"group {i}: {len(g.members)} tracks, similarity {g.similarity:.2f}")
        for m in g.members:
            paths = ", ".join(shown(p) for p in m["paths"]) or "(no path)"
            print(f"  {m['content_hash'][:12]}  offset {m['offset_s']:+.2f} s  "
                  f"similarity {m['similarity']:.2f}  {paths}")
    t = finder.timing
    where = "on Ray" if t["workers"] == "ray" else "in this process"
    print(f"compared {t['tracks']} tracks in {t['edges_s']:.1f} s ({where})")
    return 0


if __name__ == "__main__":
    from jobs.cli import run_as_module

    run_as_module("duplicates")
