"""Small generated libraries for the training tests, written like the pipeline writes them:
Parquet parts registered in ``parquet_parts`` and one ``tracks`` row per content.

- tokens: a sparse global Markov chain over 24 ids (next = succ1[t] w.p. 0.7,
  succ2[t] w.p. 0.2, uniform w.p. 0.1): its entropy rate is ~1.0 nat/token
  while a unigram predictor needs ~3.1, so a model that learns the
  transitions beats the trivial baseline by far.
- frames: chord progressions (I-V-vi-IV triads in C or G per track, 8 frames
  per chord) as 12-bin chroma with noise, onset 1 at chord changes and 0.3 on
  the beat: far from the mean frame, predictable from context.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import update
from sqlalchemy.orm import Session

from pipeline.ingest.sink import FrameRow
from pipeline.ingest.sink import frames_table as sink_frames_table
from pipeline.store import ParquetPart, Track, finish_run, new_run, open_db
from pipeline.synth.sequences import VOCAB, chord_frames, markov_tokens

__all__ = ["FRAME_RATE_HZ", "VERSION", "add_parts", "frames_table", "make_library", "reanalyse", "tokens_table",
           "track_hash"]

#: The features version and frame rate every generated row and track has.
VERSION = "test"
FRAME_RATE_HZ = 43.07

def track_hash(i: int, kind: str) -> str:
    """Content hash of generated track ``i`` of ``kind`` (audio | midi)."""
    return hashlib.sha256(f"{kind}-{i}".encode()).hexdigest()


def tokens_table(hashes: list[str], seqs: list[np.ndarray]) -> pa.Table:
    return pa.table({
        "content_hash": hashes,
        "tokenizer": ["REMI"] * len(hashes),
        "n_tokens": pa.array([len(t) for t in seqs], pa.int32()),
        "tokens": pa.array([np.asarray(t).tolist() for t in seqs], pa.list_(pa.int32())),
    })


def frames_table(hashes: list[str], frames: list[tuple[np.ndarray, np.ndarray]], *, version: str = VERSION,
                 frame_rate_hz: float = FRAME_RATE_HZ) -> pa.Table:
    """Audio rows of the frames dataset, written by the pipeline's own writer; ``frames`` are
    (chroma (T, 12), onset (T,)) pairs."""
    return sink_frames_table([FrameRow(h, "audio", version, frame_rate_hz, chroma.T, onset)
                              for h, (chroma, onset) in zip(hashes, frames)])


def add_parts(root: Path, parts: list[tuple[str, str, pa.Table]]) -> None:
    """Write (name, dataset, table) parts under ``root`` and list them in ``root/lib.db``."""
    engine = open_db(root / "lib.db")
    for name, _, t in parts:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, root / name)
    with Session(engine) as s, s.begin():
        for name, ds, t in parts:
            s.add(ParquetPart(name=name, dataset=ds, run_id="test", n_rows=t.num_rows))
    engine.dispose()


def make_library(root: Path, *, n_tracks: int = 12, n_steps: int = 700, seed: int = 0) -> Path:
    """Write tokens + frames Parquet parts under ``root`` and register them (and their tracks)
    in ``root/lib.db``."""
    rng = np.random.default_rng(seed)
    succ1, succ2 = rng.permutation(VOCAB), rng.permutation(VOCAB)
    midi = [track_hash(i, "midi") for i in range(n_tracks)]
    audio = [track_hash(i, "audio") for i in range(n_tracks)]
    tok = tokens_table(midi, [markov_tokens(rng, n_steps, succ1, succ2) for _ in range(n_tracks)])
    fr = frames_table(audio, [chord_frames(rng, n_steps) for _ in range(n_tracks)])
    # Two parts per dataset, as a run with two batches would write them.
    h = n_tracks // 2
    add_parts(root, [("tokens/part-0.parquet", "tokens", tok.slice(0, h)),
                     ("tokens/part-1.parquet", "tokens", tok.slice(h)),
                     ("frames/part-0.parquet", "frames", fr.slice(0, h)),
                     ("frames/part-1.parquet", "frames", fr.slice(h))])
    (root / "tokens" / "vocab.json").write_text(json.dumps({f"tok{i}": i for i in range(VOCAB)}))
    engine = open_db(root / "lib.db")
    # the fingerprint run a real library comes from: readers find the Parquet folder through it
    finish_run(engine, new_run(engine, "fingerprint", config={"out": str(root)}), "done")
    with Session(engine) as s, s.begin():
        for kind, hashes in (("midi", midi), ("audio", audio)):
            s.add_all(Track(content_hash=c, kind=kind, format="MIDI" if kind == "midi" else "OGG", size_bytes=1,
                            duration_s=n_steps / FRAME_RATE_HZ, n_frames=n_steps, features_version=VERSION,
                            run_id="test") for c in hashes)
    engine.dispose()
    return root / "lib.db"


def reanalyse(root: Path, part: str, table: pa.Table, *, kind: str, version: str) -> None:
    """What fingerprinting again with other settings leaves: a newer part with the tracks of
    ``table`` at ``version`` (their ``tracks`` rows now say it), the old parts still listed."""
    add_parts(root, [(part, part.split("/", 1)[0], table)])
    engine = open_db(root / "lib.db")
    with Session(engine) as s, s.begin():
        s.execute(update(Track).where(Track.kind == kind, Track.content_hash.in_(table.column("content_hash")
                                                                                 .to_pylist()))
                  .values(features_version=version))
    engine.dispose()
