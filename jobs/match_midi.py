"""Find, for each MIDI file of the library, the audio recordings that play the same piece.

Aligns the chroma of each MIDI file (modelled as a recording of it sounds) with the harmonic
chroma of the audio tracks (stored by `chromaray fingerprint`) by dynamic time warping, which
absorbs tempo differences; a pair is accepted when it aligns well and much better than with
the MIDI file transposed (pipeline.midi_match). Results are stored in the database (table
midi_matches; re-running replaces them), the alignment paths (MIDI time -> audio time) in the
Parquet dataset midi_alignments, and printed; --json prints one JSON object per line per MIDI
file: {"midi": path, "matches": [{"path": ..., "score": ..., "gap": ..., "shift": ...}, ...]}.
The Parquet folder is the one the database records (--out overrides it). Thresholds come from
the `match` section of --config (pipeline.config.MatchConfig); the options --top-k,
--min-score, --min-gap, --max-candidates, --transpose and --workers override it.
A run holds the database's match-midi writer role and the Parquet folder's lock while it runs
(refused with one line while another match-midi or a fingerprint run on that folder holds them).
"""
from __future__ import annotations

import argparse

from pipeline.config import MatchConfig

__all__ = ["HELP", "add_arguments", "run"]

HELP = "rank the audio recordings that play the same piece as each MIDI file (chroma + DTW)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("midi_paths", nargs="*", metavar="MIDI_PATH",
                        help="MIDI files or folders already fingerprinted (default: every MIDI file in the database)")
    parser.add_argument("--db", default="results/chromaray.db", help="SQLite database (default: %(default)s)")
    parser.add_argument("--out", default=None,
                        help="override the Parquet folder (default: the --out of the latest "
                             "`chromaray fingerprint` run, as the database records it)")
    parser.add_argument("--config", help="YAML config whose `match` section sets the thresholds below "
                                         "(these options override it)")
    # Defaults are the config's (None here: an option given overrides the --config file).
    parser.add_argument("--top-k", type=int, default=None,
                        help=f"matches kept per MIDI file (default: {MatchConfig.top_k})")
    parser.add_argument("--min-score", type=float, default=None,
                        help=f"lowest alignment score reported as a match (default: {MatchConfig.min_score:g}, "
                             "see pipeline.midi_match)")
    parser.add_argument("--min-gap", type=float, default=None,
                        help=f"how much better than at the 11 other transpositions a pair must align "
                             f"(default: {MatchConfig.min_gap:g}, see pipeline.midi_match)")
    parser.add_argument("--max-candidates", type=int, default=None,
                        help=f"audio tracks aligned per MIDI file, retrieved by chord n-grams "
                             f"(default: {MatchConfig.max_candidates})")
    parser.add_argument("--transpose", action="store_true", default=None,
                        help="also match recordings in another key (tries the 12 transpositions, reports the shift)")
    parser.add_argument("--workers", type=int, default=None,
                        help="Ray tasks (CPUs) matching in parallel; 0: in this process "
                             "(default: Ray for 64 or more MIDI files)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line per MIDI file")


def _overrides(args: argparse.Namespace) -> dict[str, dict]:
    """The `match` options given on the command line (ranges are checked by MatchConfig)."""
    given = {"top_k": args.top_k, "min_score": args.min_score, "min_gap": args.min_gap,
             "max_candidates": args.max_candidates,
             "transpose": args.transpose, "workers": args.workers}
    return {"match": {k: v for k, v in given.items() if v is not None}}


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    import time
    from pathlib import Path

    from pipeline.config import load_config
    from pipeline.midi_match import match_midi, resolve_midi
    from pipeline.store import open_db
    from pipeline.text import shown

    config = load_config(args.config, overrides=_overrides(args)).match
    engine = open_db(args.db, must_exist=True)
    wanted_hashes: list[str] | None = None
    wanted_paths: list[str] | None = None
    if args.midi_paths:
        wanted_hashes, wanted_paths = resolve_midi(engine, args.midi_paths)
    t0 = time.perf_counter()
    results = match_midi(engine, args.out, config=config, midi_hashes=wanted_hashes)
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
            print(shown(obj["midi"]) if obj["midi"] else f"(MIDI {r.midi_hash[:12]}, no path)")
            if not obj["matches"]:
                extra = f" (best score {r.best_rejected:.2f}, not accepted)" if r.best_rejected is not None else ""
                print(f"    no recording plays this piece{extra}")
            for i, m in enumerate(obj["matches"], start=1):
                key = f"  transposed {m['shift']:+d}" if m["shift"] else ""
                print(f"    {i}. score {m['score']:.3f}  gap {m['gap']:.2f}  tempo x{m['tempo_ratio']:.2f}{key}  "
                      f"[{m['audio_start_s']:.1f}-{m['audio_end_s']:.1f} s]  {shown(m['path'])}")
    if not args.json:
        n_matched = sum(1 for r in results if r.matches)
        print(f"{len(results)} MIDI file(s), {n_matched} with a matching recording, {wall:.1f} s "
              f"(stored in table midi_matches of {Path(args.db).expanduser()})", file=sys.stderr)
    if not results:
        print("no MIDI files in the database (run `chromaray fingerprint` on a folder with .mid files)",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    from jobs.cli import run_as_module

    run_as_module("match-midi")
