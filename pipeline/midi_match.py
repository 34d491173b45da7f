"""Match MIDI files to the audio recordings of the library that play the same piece.

Reads the per-frame chroma of both kinds from the Parquet ``frames`` dataset (committed
parts only, via pipeline.store.parts_of) -- for MIDI files the chroma is recomputed from the
``midi_notes`` dataset with decaying notes (actors.midi.analysis.midi_heard_chroma), closer to
what a recording sounds like -- turns each track into CENS features at ~5 Hz
(actors.midi.align), prunes candidates by their pitch-class profile, aligns each MIDI file
with its candidates by subsequence DTW and keeps those whose chance-corrected alignment
score reaches ``min_score``, best first. Results go to table ``midi_matches`` (re-running
replaces the rows of the MIDI files matched). Every threshold and budget is a field of
:class:`pipeline.config.MatchConfig` (section ``match`` of a --config file).

Threshold (``MatchConfig.min_score`` = 0.55), chosen on renderings (pretty_midi additive synthesis,
tempo x0.9-1.1 with +-3 % wobble, white noise at 10 dB SNR; audio chroma from
actors.features):
- 96 real files of /work/shared/data/midi vs their 96 renderings: every rendering ranked
  first for its MIDI file, scores >= 0.556 (mean 0.74); the best wrong recording per MIDI
  file scored up to 0.69, but the two highest (BWV 67.4 / 145.5) are two harmonisations of
  the same chorale tune; next 0.563 (BWV 104.6 / 359), then <= 0.52. The 4 files pretty_midi
  cannot render (no recording) scored at most 0.545 -> no match at 0.55, one false match at 0.5.
- generated pieces (tests/pipeline/test_midi_match.py): true >= 0.69, unrelated <= 0.42; with tempo
  x0.6-1.6, +-10 % wobble and -5 dB SNR still 30/30 top-1 but true scores down to 0.51.
Lower it (--min-score, or ``match: {min_score: ...}`` in a --config file) for recordings far
from the score (other arrangement, heavy reverb).
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from sqlalchemy import delete, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from actors.errors import ChromarayError
from actors.midi.align import DEFAULT_RATE_HZ, MATCH_VERSION, align, cens, coarsen, profile
from actors.midi.analysis import midi_heard_chroma
from pipeline.config import MatchConfig
from pipeline.ingest.discover import content_hash, discover
from pipeline.store import ErrorRow, MidiMatchRow, Track, TrackPath, parts_of, utcnow

__all__ = [
    "AudioMatch",
    "MidiMatchResult",
    "load_sequences",
    "match_midi",
    "match_one",
    "resolve_midi",
    "stored_matches",
]


@dataclass
class AudioMatch:
    audio_hash: str
    path: str
    score: float
    similarity: float
    tempo_ratio: float
    audio_start_s: float
    audio_end_s: float

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "score": round(self.score, 4), "content_hash": self.audio_hash,
                "similarity": round(self.similarity, 4), "tempo_ratio": round(self.tempo_ratio, 4),
                "audio_start_s": round(self.audio_start_s, 2), "audio_end_s": round(self.audio_end_s, 2)}


@dataclass
class MidiMatchResult:
    """Matches of one MIDI content (possibly present at several paths), best first."""

    midi_hash: str
    midi_paths: list[str]
    matches: list[AudioMatch]
    n_candidates: int = 0  # audio tracks aligned by DTW after pruning
    best_rejected: float | None = None  # best score under min_score (diagnostics)
    seconds: float = 0.0
    alignments: list = field(default_factory=list, repr=False)  # [(audio_hash, Alignment)]

    def json_objects(self) -> list[dict[str, Any]]:
        """One object per MIDI path: {midi, content_hash, matches: [{path, score, ...}]}."""
        return [{"midi": p, "content_hash": self.midi_hash, "matches": [m.to_json() for m in self.matches]}
                for p in (self.midi_paths or [""])]


@dataclass
class _Seq:
    content_hash: str
    kind: str
    feat: np.ndarray  # (12, N) CENS unit columns
    rate: float
    prof: np.ndarray  # pitch-class profile (pruning)


def _iter_frame_rows(out_dir: Path, parts: list[str],
                     kinds: set[str]) -> Iterator[tuple[str, str, str, float, np.ndarray]]:
    """(hash, kind, features_version, frame_rate_hz, chroma (12, T)) of every frames row, oldest part first.

    ``frame_rate_hz`` is the row's own (the sink stores each track's analysis rate), so tracks
    fingerprinted with other DSP settings are read at their true rate."""
    for rel in parts:
        path = out_dir / rel
        if not path.exists():
            raise ChromarayError(f"Parquet part {path} is listed in the database but missing; "
                                 "re-run `chromaray fingerprint` with the same --out")
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=64, columns=["content_hash", "kind", "features_version",
                                                              "frame_rate_hz", "chroma"]):
            kind_col = batch.column("kind").to_pylist()
            if not any(k in kinds for k in kind_col):
                continue
            hashes = batch.column("content_hash").to_pylist()
            versions = batch.column("features_version").to_pylist()
            rates = batch.column("frame_rate_hz").to_numpy(zero_copy_only=False)
            chroma = batch.column("chroma")
            # flatten() honours slicing at both levels; offsets are made relative to row 0
            flat = chroma.flatten().flatten().to_numpy(zero_copy_only=False)
            offsets = chroma.offsets.to_numpy().astype(np.int64)
            offsets -= offsets[0]
            valid = chroma.is_valid().to_numpy(zero_copy_only=False)
            for i, k in enumerate(kind_col):
                if k not in kinds or not valid[i]:
                    continue
                mat = flat[offsets[i] * 12: offsets[i + 1] * 12].reshape(-1, 12).T
                yield hashes[i], k, versions[i], float(rates[i]), mat


def _load_notes(out_dir: Path, parts: list[str], want: set[str] | None) -> dict[str, dict[str, np.ndarray]]:
    """Note tables of the midi_notes dataset (newest part wins), restricted to ``want``."""
    cols = ("pitch", "start", "end", "velocity", "program", "is_drum")
    found: dict[str, dict[str, np.ndarray]] = {}
    for rel in parts:
        path = out_dir / rel
        if not path.exists():
            continue  # frames are what matters; fall back to their chroma
        for batch in pq.ParquetFile(path).iter_batches(batch_size=256, columns=["content_hash", *cols]):
            hashes = batch.column("content_hash").to_pylist()
            arrays = {c: batch.column(c) for c in cols}
            for i, h in enumerate(hashes):
                if want is not None and h not in want:
                    continue
                found[h] = {c: np.asarray(arrays[c][i].values.to_numpy(zero_copy_only=False)) for c in cols}
    return found


def load_sequences(engine: Engine, out_dir: str | os.PathLike, *, midi_hashes: Iterable[str] | None = None,
                   target_rate_hz: float = DEFAULT_RATE_HZ) -> tuple[dict[str, _Seq], dict[str, _Seq]]:
    """CENS sequences of all audio tracks and of the requested MIDI files: (midi, audio) by hash.

    A content stored at several versions uses the row of the track's current
    features_version (else the newest part's row).
    """
    out = Path(out_dir).expanduser().resolve()
    with Session(engine) as s:
        current = {h: (k, v) for h, k, v in s.execute(select(Track.content_hash, Track.kind, Track.features_version))}
    want_midi = set(midi_hashes) if midi_hashes is not None else None
    notes = _load_notes(out, parts_of(engine, "midi_notes"), want_midi)
    midi: dict[str, _Seq] = {}
    audio: dict[str, _Seq] = {}
    exact: set[str] = set()
    for h, kind, version, rate, stored in _iter_frame_rows(out, parts_of(engine, "frames"), {"audio", "midi"}):
        if h not in current or current[h][0] != kind:
            continue  # row of a track no longer in the database
        if kind == "midi" and want_midi is not None and h not in want_midi:
            continue
        is_exact = current[h][1] == version
        if h in exact and not is_exact:
            continue
        chroma = stored
        if kind == "midi" and h in notes:
            # match on the chroma a recording of these notes would have (decaying notes)
            chroma = midi_heard_chroma(notes[h], frame_rate_hz=rate, n_frames=stored.shape[1])
        feat, frate = cens(chroma, frame_rate_hz=rate, target_rate_hz=target_rate_hz)
        seq = _Seq(h, kind, feat, frate, profile(feat))
        (midi if kind == "midi" else audio)[h] = seq
        if is_exact:
            exact.add(h)
    return midi, audio


def resolve_midi(engine: Engine, paths: Iterable[str | os.PathLike]) -> tuple[list[str], list[str]]:
    """(content hashes, absolute paths) of the MIDI files at or under ``paths``, in the order
    found. A file moved or copied since the last fingerprint run is found by its content; one
    the database does not hold raises one ChromarayError saying why (the fingerprint run's
    error, or that it was never fingerprinted)."""
    files = [f.path for f in discover(paths) if f.kind == "midi"]
    if not files:
        raise ChromarayError("no .mid/.midi files under the given MIDI_PATH arguments")
    hashes: list[str] = []
    with Session(engine) as s:
        for p in files:
            h = s.scalar(select(TrackPath.content_hash).where(TrackPath.path == p))
            if h is None:
                h = content_hash(p) if os.access(p, os.R_OK) else None
            kind = s.scalar(select(Track.kind).where(Track.content_hash == h)) if h else None
            if h is None or kind != "midi":
                err = s.scalar(select(ErrorRow.reason).where(ErrorRow.path == p).order_by(ErrorRow.last_seen.desc()))
                if err:
                    raise ChromarayError(f"{p} could not be used by `chromaray fingerprint`: {err}")
                raise ChromarayError(f"{p} is not in the database; run `chromaray fingerprint` on it first")
            hashes.append(h)
    return hashes, files


def _paths_by_hash(engine: Engine, hashes: Iterable[str]) -> dict[str, list[str]]:
    hs = list(set(hashes))
    out: dict[str, list[str]] = {h: [] for h in hs}
    with Session(engine) as s:
        for i in range(0, len(hs), 500):
            for path, h in s.execute(select(TrackPath.path, TrackPath.content_hash)
                                     .where(TrackPath.content_hash.in_(hs[i:i + 500]))):
                out[h].append(path)
    for v in out.values():
        v.sort()
    return out


def _resample(feat: np.ndarray, rate: float, target: float) -> np.ndarray:
    """Nearest-frame resampling of unit-column features to another rate (rates rarely differ)."""
    if abs(rate - target) < 1e-6 or feat.shape[1] == 0:
        return feat
    n = max(1, round(feat.shape[1] * target / rate))
    idx = np.minimum((np.arange(n) * rate / target).astype(np.int64), feat.shape[1] - 1)
    return feat[:, idx]


def match_one(m: _Seq, audio: dict[str, _Seq], config: MatchConfig,
              ) -> tuple[list[tuple[str, Any]], int, float | None]:
    """[(audio_hash, Alignment)] best first with score >= ``config.min_score`` (at most
    ``config.top_k``), candidates aligned at full rate, best rejected score."""
    if not audio:
        return [], 0, None
    hashes = list(audio)
    profs = np.stack([audio[h].prof for h in hashes])
    # Pruning 1: cosine of pitch-class profiles. The same piece shares its key and harmony,
    # so its rendering ranks near the top (rank <= 3 of 60 on generated data); only the
    # best `max_candidates` go through DTW (the costly step).
    order = [hashes[i] for i in np.argsort(-(profs @ m.prof), kind="stable")[:config.max_candidates]]
    feats = {h: _resample(audio[h].feat, audio[h].rate, m.rate) for h in order}
    # Pruning 2: long pairs (more DTW cells than coarse_min_cells at ~5 Hz, i.e. both over
    # ~100 s) are ranked by a DTW at ~1 Hz first; only the fine_candidates best go through the
    # ~5 Hz DTW. DTW cost grows with the product of lengths: a 5 min x 5 min pair costs ~0.4 s
    # at 5 Hz, ~20 ms at 1 Hz.
    long = [h for h in order if m.feat.shape[1] * feats[h].shape[1] > config.coarse_min_cells]
    if len(long) > config.fine_candidates:
        factor = config.coarse_factor
        mc = coarsen(m.feat, factor)
        coarse = {}
        for h in long:
            al = align(mc, coarsen(feats[h], factor), rate_hz=m.rate / factor)
            coarse[h] = al.score if al is not None else -np.inf
        keep = set(sorted(long, key=lambda h: -coarse[h])[:config.fine_candidates])
        order = [h for h in order if h not in coarse or h in keep]
    found = []
    best_rejected = None
    for h in order:
        al = align(m.feat, feats[h], rate_hz=m.rate)
        if al is None:
            continue
        if al.score >= config.min_score:
            found.append((h, al))
        elif best_rejected is None or al.score > best_rejected:
            best_rejected = al.score
    found.sort(key=lambda x: (-x[1].score, x[0]))
    return found[:config.top_k], len(order), best_rejected


def match_midi(engine: Engine, out_dir: str | os.PathLike, *, config: MatchConfig | None = None,
               midi_hashes: Iterable[str] | None = None, top_k: int | None = None, min_score: float | None = None,
               max_candidates: int | None = None, fine_candidates: int | None = None,
               coarse_min_cells: int | None = None, store: bool = True) -> list[MidiMatchResult]:
    """Rank the audio recordings playing the same piece as each MIDI file.

    ``config``: thresholds and budgets (default ``MatchConfig()``); ``top_k``, ``min_score``,
    ``max_candidates``, ``fine_candidates`` and ``coarse_min_cells`` override its fields (checked
    like the config: a bad value raises one ChromarayError).
    midi_hashes: restrict to these MIDI contents (default: every MIDI file in the library).
    Stores the matches in table midi_matches (replacing earlier rows of these MIDI files)
    unless ``store`` is False. Results are sorted by the MIDI file's first path.
    n_candidates of a result counts the pairs aligned at full rate.
    """
    given = {"top_k": top_k, "min_score": min_score, "max_candidates": max_candidates,
             "fine_candidates": fine_candidates, "coarse_min_cells": coarse_min_cells}
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    cfg = config or MatchConfig()
    if overrides:
        cfg = cfg.replace(**overrides)
    if not Path(out_dir).expanduser().is_dir():
        raise ChromarayError(f"output folder {out_dir} does not exist (give the --out of `chromaray fingerprint`)")
    wanted = list(dict.fromkeys(midi_hashes)) if midi_hashes is not None else None
    midi, audio = load_sequences(engine, out_dir, midi_hashes=wanted)
    if wanted is not None:
        missing = [h for h in wanted if h not in midi]
        if missing:
            raise ChromarayError(f"{len(missing)} requested MIDI file(s) have no stored chroma "
                                 f"(e.g. {missing[0][:12]}…); run `chromaray fingerprint` on them first")
    paths = _paths_by_hash(engine, list(midi) + list(audio))
    results: list[MidiMatchResult] = []
    for h, m in midi.items():
        t0 = time.perf_counter()
        found, n_cand, best_rej = match_one(m, audio, cfg)
        matches = [AudioMatch(ah, (paths.get(ah) or [""])[0], al.score, al.similarity, al.tempo_ratio,
                              al.audio_start_s, al.audio_end_s) for ah, al in found]
        results.append(MidiMatchResult(h, paths.get(h, []), matches, n_cand, best_rej,
                                       time.perf_counter() - t0, found))
    if store:
        _store(engine, results)
    results.sort(key=lambda r: ((r.midi_paths or ["\uffff"])[0], r.midi_hash))
    return results


def _store(engine: Engine, results: list[MidiMatchResult]) -> None:
    now = utcnow()
    with Session(engine) as s, s.begin():
        hashes = [r.midi_hash for r in results]
        for i in range(0, len(hashes), 500):
            s.execute(delete(MidiMatchRow).where(MidiMatchRow.midi_hash.in_(hashes[i:i + 500])))
        for r in results:
            for rank, (ah, al) in enumerate(r.alignments, start=1):
                s.add(MidiMatchRow(midi_hash=r.midi_hash, audio_hash=ah, rank=rank, score=al.score,
                                   similarity=al.similarity, chance=al.chance, tempo_ratio=al.tempo_ratio,
                                   audio_start_s=al.audio_start_s, audio_end_s=al.audio_end_s,
                                   midi_start_s=al.midi_start_s, midi_end_s=al.midi_end_s,
                                   matcher_version=MATCH_VERSION, created_at=now))


def stored_matches(engine: Engine, midi_hash: str) -> list[MidiMatchRow]:
    """Stored rows of one MIDI content, best first (none in an older database without the
    table: this only reads, also on a read-only engine)."""
    if not inspect(engine).has_table(MidiMatchRow.__tablename__):
        return []
    with Session(engine) as s:
        rows = list(s.scalars(select(MidiMatchRow).where(MidiMatchRow.midi_hash == midi_hash)
                              .order_by(MidiMatchRow.rank)))
        s.expunge_all()
    return rows
