"""Find, for each MIDI file of the library, the audio recordings that play the same piece.

Aligns the chroma of each MIDI file with the chroma of the audio tracks (stored by
`chromaray fingerprint`) by dynamic time warping, which absorbs tempo differences, and
ranks the recordings by alignment score. Results are stored in the database (table
midi_matches; re-running replaces them) and printed; --json prints one JSON object per
line per MIDI file: {"midi": path, "matches": [{"path": ..., "score": ...}, ...]}.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["HELP", "add_arguments", "run"]

HELP = "rank the audio recordings that play the same piece as each MIDI file (chroma + DTW)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("midi_paths", nargs="*", metavar="MIDI_PATH",
                        help="MIDI files or folders already fingerprinted (default: every MIDI file in the database)")
    parser.add_argument("--db", default="results/chromaray.db", help="SQLite database (default: %(default)s)")
    parser.add_argument("--out", default="results",
                        help="output folder of `chromaray fingerprint` holding the Parquet frames "
                             "(default: %(default)s)")
    parser.add_argument("--top-k", type=int, default=5, help="matches kept per MIDI file (default: %(default)s)")
    parser.add_argument("--min-score", type=float, default=None,
                        help="lowest alignment score reported as a match (default: 0.55, see pipeline.midi_match)")
    parser.add_argument("--max-candidates", type=int, default=None,
                        help="audio tracks aligned per MIDI file after pitch-profile pruning (default: 64)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line per MIDI file")


def _resolve_midi(engine: Engine, paths: list[str]) -> tuple[list[str], list[str]]:
    """(content hash, absolute path) of each MIDI file named on the command line, in order."""
    import os

    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from actors.errors import ChromarayError
    from pipeline.ingest.discover import content_hash, discover
    from pipeline.store import ErrorRow, Track, TrackPath

    files = [f.path for f in discover(paths) if f.kind == "midi"]
    if not files:
        raise ChromarayError("no .mid/.midi files under the given MIDI_PATH arguments")
    hashes: list[str] = []
    with Session(engine) as s:
        for p in files:
            h = s.scalar(select(TrackPath.content_hash).where(TrackPath.path == p))
            if h is None:
                # moved or copied since the last fingerprint run: find it by content
                h = content_hash(p) if os.access(p, os.R_OK) else None
            kind = s.scalar(select(Track.kind).where(Track.content_hash == h)) if h else None
            if h is None or kind != "midi":
                err = s.scalar(select(ErrorRow.reason).where(ErrorRow.path == p).order_by(ErrorRow.last_seen.desc()))
                if err:
                    raise ChromarayError(f"{p} could not be used by `chromaray fingerprint`: {err}")
                raise ChromarayError(f"{p} is not in the database; run `chromaray fingerprint` on it first")
            hashes.append(h)
    return hashes, files


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    import time
    from pathlib import Path

    from actors.errors import ChromarayError
    from pipeline.midi_match import MAX_CANDIDATES, MIN_SCORE, match_midi
    from pipeline.store import open_db

    if args.top_k < 1:
        raise ChromarayError("--top-k must be at least 1")
    if args.max_candidates is not None and args.max_candidates < 1:
        raise ChromarayError("--max-candidates must be at least 1")
    db = Path(args.db).expanduser()
    if not db.exists():
        raise ChromarayError(f"database {db} does not exist (run `chromaray fingerprint` first)")
    if not Path(args.out).expanduser().is_dir():
        raise ChromarayError(f"output folder {args.out} does not exist (give the --out of `chromaray fingerprint`)")
    engine = open_db(db)
    wanted_hashes: list[str] | None = None
    wanted_paths: list[str] | None = None
    if args.midi_paths:
        wanted_hashes, wanted_paths = _resolve_midi(engine, args.midi_paths)
    t0 = time.perf_counter()
    results = match_midi(engine, args.out, midi_hashes=wanted_hashes, top_k=args.top_k,
                         min_score=MIN_SCORE if args.min_score is None else args.min_score,
                         max_candidates=args.max_candidates or MAX_CANDIDATES)
    wall = time.perf_counter() - t0
    if wanted_hashes is not None and wanted_paths is not None:
        # print what was asked, under the names given (a moved file is found by content)
        by_hash = {r.midi_hash: r for r in results}
        for h in wanted_hashes:
            by_hash[h].midi_paths = []
        for h, p in zip(wanted_hashes, wanted_paths):
            by_hash[h].midi_paths.append(p)
        results = [by_hash[h] for h in dict.fromkeys(wanted_hashes)]
    for r in results:
        for obj in r.json_objects():
            if args.json:
                print(json.dumps(obj))
                continue
            print(obj["midi"] or f"(MIDI {r.midi_hash[:12]}, no path)")
            if not obj["matches"]:
                extra = f" (best score {r.best_rejected:.2f} < threshold)" if r.best_rejected is not None else ""
                print(f"    no recording plays this piece{extra}")
            for i, m in enumerate(obj["matches"], start=1):
                print(f"    {i}. score {m['score']:.3f}  tempo x{m['tempo_ratio']:.2f}  "
                      f"[{m['audio_start_s']:.1f}-{m['audio_end_s']:.1f} s]  {m['path']}")
    if not args.json:
        n_matched = sum(1 for r in results if r.matches)
        print(f"{len(results)} MIDI file(s), {n_matched} with a matching recording, {wall:.1f} s "
              f"(stored in table midi_matches of {db})", file=sys.stderr)
    if not results:
        print("no MIDI files in the database (run `chromaray fingerprint` on a folder with .mid files)",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    from jobs.cli import run_as_module

    run_as_module("match-midi")
