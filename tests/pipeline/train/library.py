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
from pipeline.store import ParquetPart, Track, open_db

__all__ = ["FRAME_RATE_HZ", "VERSION", "VOCAB", "add_parts", "chord_frames", "frames_table", "make_library",
           "markov_tokens", "reanalyse", "tokens_table", "track_hash"]

#: The features version and frame rate every generated row and track has.
VERSION = "test"
FRAME_RATE_HZ = 43.07

VOCAB = 24


def track_hash(i: int, kind: str) -> str:
    """Content hash of generated track ``i`` of ``kind`` (audio | midi)."""
    return hashlib.sha256(f"{kind}-{i}".encode()).hexdigest()


def markov_tokens(rng: np.random.Generator, n: int, succ1: np.ndarray, succ2: np.ndarray) -> np.ndarray:
    seq = np.empty(n, np.int32)
    seq[0] = rng.integers(VOCAB)
    u = rng.random(n)
    noise = rng.integers(0, VOCAB, n)
    for i in range(1, n):
        t = seq[i - 1]
        seq[i] = succ1[t] if u[i] < 0.7 else succ2[t] if u[i] < 0.9 else noise[i]
    return seq


def chord_frames(rng: np.random.Generator, n: int, hold: int = 8) -> tuple[np.ndarray, np.ndarray]:
    key = int(rng.choice([0, 7]))  # C or G major: held-out tracks share keys with training ones
    degrees = [(0, 4, 7), (7, 11, 2), (9, 0, 4), (5, 9, 0)]  # I V vi IV (pitch classes rel. to key)
    chroma = np.zeros((n, 12), np.float32)
    onset = np.zeros(n, np.float32)
    for t in range(n):
        for pc in degrees[(t // hold) % 4]:
            chroma[t, (pc + key) % 12] = 1.0
        onset[t] = 1.0 if t % hold == 0 else 0.3 if t % (hold // 2) == 0 else 0.0
    chroma = np.clip(chroma * 0.9 + 0.1 * rng.random(chroma.shape, dtype=np.float32), 0, None)
    chroma /= chroma.max(axis=1, keepdims=True)
    onset = onset + 0.05 * rng.random(n, dtype=np.float32)
    return chroma.astype(np.float32), onset.astype(np.float32)


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
