"""Extract features and fingerprints from a music library (audio and MIDI) into
Parquet and SQLite. Incremental: files already processed are skipped.

With no PATH, a small demo library is synthesized under OUT/demo-library
and processed.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from actors.config import BatchConfig
from pipeline.config import PipelineConfig

__all__ = ["HELP", "add_arguments", "run"]


HELP = "extract features + fingerprints from audio/MIDI folders (incremental)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="audio/MIDI files or folders (default: a demo library)")
    parser.add_argument("--db", default="results/chromaray.db", help="SQLite database (default: %(default)s)")
    parser.add_argument("--out", default="results", help="output folder for Parquet (default: %(default)s)")
    parser.add_argument("--config", help="YAML config (sections dsp, batch, pipeline; see pipeline/config.py)")
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else Ray in-process)")
    parser.add_argument("--device", choices=["auto", "cpu", "gpu"], help="where the DSP runs (default: auto)")
    parser.add_argument("--actors", type=int, help="feature actors (default: one per free CPU or per GPU)")
    parser.add_argument("--chunk-seconds", type=float,
                        help=f"stream files longer than this in spans (default {PipelineConfig.chunk_seconds:g})")
    parser.add_argument("--memory-fraction", type=float,
                        help=f"share of free memory a batch may use (default {BatchConfig.memory_fraction:g})")
    parser.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    parser.add_argument("--retry-errors", action="store_true", help="retry files that failed before")
    parser.add_argument("--name", help="a name for this run (shown in the dashboard)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="show Ray's own logs and progress bars")


def _overrides(args: argparse.Namespace) -> dict[str, dict]:
    o: dict[str, dict] = {"batch": {}, "pipeline": {}}
    if args.device:
        o["batch"]["device"] = args.device
    if args.memory_fraction is not None:  # ranges are checked by the config (one line, exit 2)
        o["batch"]["memory_fraction"] = args.memory_fraction
    if args.actors is not None:
        o["pipeline"]["feature_actors"] = args.actors
    if args.chunk_seconds is not None:
        o["pipeline"]["chunk_seconds"] = args.chunk_seconds
    return o


def run(args: argparse.Namespace) -> int:
    from actors.errors import ChromarayError
    from pipeline.config import load_config
    from pipeline.runtime import prepare_environment, stop_on_signals
    from pipeline.text import shown

    prepare_environment()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from pipeline.ingest.run import run_fingerprint

    stop_on_signals()
    cfg = load_config(args.config, overrides=_overrides(args))
    paths = list(args.paths)
    if not paths:
        from pipeline.synth import make_demo_library

        demo = os.path.join(args.out, "demo-library")
        n = make_demo_library(demo)
        print(f"no PATH given: processing the demo library {shown(demo)} ({n} files)")
        paths = [demo]
    try:
        summary = run_fingerprint(paths, db=args.db, out=args.out, cfg=cfg, address=args.address,
                                  verbose=args.verbose, show_progress=not args.no_progress,
                                  retry_errors=args.retry_errors, num_cpus=args.num_cpus, name=args.name)
    except Exception as exc:
        from pipeline.ingest.diskfull import disk_full_message

        full = disk_full_message(exc, db=args.db, out=args.out)
        if full is None:
            raise
        raise ChromarayError(shown(full)) from None
    for path, stage, reason in summary.error_rows[:20]:
        print(f"  error [{stage}] {shown(path)}: {shown(reason)}", file=sys.stderr)
    if len(summary.error_rows) > 20:
        print(f"  ... {len(summary.error_rows) - 20} more errors in the database (table errors)", file=sys.stderr)
    print(f"done: {summary.processed} processed, {summary.skipped} skipped (already known or copies), "
          f"{summary.errors} errors"
          + (f" ({summary.skipped_paths} of them paths that are not readable files)" if summary.skipped_paths else "")
          + (f", {summary.known_errors} known errors not retried" if summary.known_errors else "")
          + (f", {summary.path_updates} paths updated" if summary.path_updates else "")
          + f" | {summary.audio_seconds / 3600:.3f} audio h in {summary.wall_s:.1f} s"
          f" ({summary.audio_hours_per_min:.2f} audio h/min) | db {shown(args.db)}, parquet {shown(args.out)}")
    if summary.processed == 0 and summary.skipped == 0 and summary.path_updates == 0 and summary.errors > 0:
        raise ChromarayError("no file could be processed (see the errors above)")
    return 0


if __name__ == "__main__":
    from jobs.cli import run_as_module

    run_as_module("fingerprint")
