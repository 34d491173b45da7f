"""Match MIDI files to the audio recordings of the library that play the same piece.

1. **Features.** Each track's current row of the Parquet ``frames`` dataset
   (:func:`pipeline.train.rows.current_rows`, the rule training uses). Audio: its stored
   chroma, which is the chroma of the harmonic part (HPSS) of the recording. MIDI: recomputed
   from the ``midi_notes`` dataset as a recording of it would sound (:data:`HEARD_MODEL`:
   decaying notes, 6 harmonic partials folded to pitch classes, 0.4 s release tails, GM
   drums left out). Both become CENS features at ~5 Hz (actors.midi.align).
2. **Candidates.** The library's recordings are indexed once per run by chord-symbol n-grams
   (actors.midi.retrieval: each CENS frame's nearest triad, repeats collapsed so the sequence
   is tempo-invariant, n-grams in four quantisations, votes weighted by rarity; the index is
   built once per match_midi call, :func:`library_index`, and shared by every MIDI file and
   every Ray task). The ``max_candidates`` best-voted recordings (ties by pitch-class profile)
   are aligned by subsequence DTW at ~5 Hz; long pairs are ranked first by a ~1 Hz DTW and
   only the ``fine_candidates`` best kept (multiscale).
3. **Acceptance (calibrated per pair).** The best ``verify_candidates`` are aligned again with
   the MIDI file transposed by each of the 11 other semitone shifts. A recording of the
   piece agrees with it in one key only; an unrelated piece agrees about as well in several.
   A pair is accepted when its score reaches ``min_score`` and it beats every other shift by
   ``min_gap`` (the transposition gap, :class:`pipeline.config.MatchConfig`). With
   ``transpose`` the best shift is the match and is reported.
4. **Outputs.** Accepted pairs go to table ``midi_matches`` (a re-run replaces the rows of the
   MIDI files it matched). Their alignment paths (MIDI time -> audio time) go to a new part of
   the Parquet dataset ``midi_alignments`` (:func:`read_alignments`).

The work runs in Ray tasks when there are many MIDI files (``MatchConfig.workers``). The
Parquet folder is the one the database names (:func:`pipeline.store.results_dir`).

**How the settings were chosen** (benchmarks/bench_midi.py, train split only; 100 real MIDI
files of ../shared/data/midi rendered by FluidSynth + FluidR3_GM with tempo x0.9-1.1 and
10 dB noise, and by additive synthesis). Last round, against libraries of 2-78 recordings, the
true recording's transposition gap was at least 0.223 and a wrong one's at most 0.099 (0.13
was shipped). With the chord index the candidates DTW sees are harmonically much closer (the
same chord sequences), and at 10^3-10^4 recordings wrong candidates reach gaps of 0.19-0.25.
Learned on 204 train-split MIDI runs (fluidsynth and sine sets, negatives, 10^3 and 10^4
recordings) as the benchmark judges them (per MIDI file, the best accepted candidate): the
last wrong accept disappears above a gap of 0.235 and the lowest hit above it is 0.248, so
``min_gap`` is their midpoint, 0.242 (149 of 152 hits kept, none wrong). A gap normalised by
the alignment's length (``gap * sqrt(s / 30)``) was tried and separated worse (146 hits at 0
wrong). The raw score alone overlaps (true as low as 0.38, wrong up to 0.64), so
``min_score`` is only a floor (0.3). The figures reported on the test split are in the README
and benchmarks/out/bench_midi.json.
"""
from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import delete, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from actors.errors import ChromarayError
from actors.midi.align import (
    DEFAULT_RATE_HZ,
    MATCH_VERSION,
    Alignment,
    align,
    cens,
    coarsen,
    profile,
)
from actors.midi.analysis import midi_heard_chroma
from actors.midi.retrieval import ChordIndex
from pipeline.config import MatchConfig
from pipeline.ingest.discover import content_hash, discover
from pipeline.store import (
    ErrorRow,
    MidiMatchRow,
    ParquetPart,
    Track,
    TrackPath,
    claim_run,
    finish_run,
    parts_of,
    results_dir,
    utcnow,
)
from pipeline.store.parquet import list_of_vectors, write_part
from pipeline.train.rows import TrackRow, current_rows

__all__ = [
    "ALIGNMENTS_DATASET",
    "HEARD_MODEL",
    "AudioMatch",
    "Candidate",
    "LibraryIndex",
    "MidiMatchResult",
    "accepts",
    "alignments_table",
    "library_index",
    "load_sequences",
    "match_midi",
    "match_one",
    "midi_features",
    "read_alignments",
    "resolve_midi",
    "resolve_out",
    "retrieve",
    "stored_matches",
    "verify",
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
    shift: int = 0  # semitones the MIDI file was transposed up by to match
    gap: float = 0.0  # transposition gap (see MatchConfig)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "score": round(self.score, 4), "content_hash": self.audio_hash,
                "similarity": round(self.similarity, 4), "tempo_ratio": round(self.tempo_ratio, 4),
                "audio_start_s": round(self.audio_start_s, 2), "audio_end_s": round(self.audio_end_s, 2),
                "shift": self.shift, "gap": round(self.gap, 4)}


@dataclass
class MidiMatchResult:
    """Matches of one MIDI content (possibly present at several paths), best first."""

    midi_hash: str
    midi_paths: list[str]
    matches: list[AudioMatch]
    n_candidates: int = 0  # audio tracks aligned by DTW after pruning
    best_rejected: float | None = None  # best score of a pair not accepted (diagnostics)
    seconds: float = 0.0
    candidates: list[Candidate] = field(default_factory=list, repr=False)  # every aligned pair, best first

    @property
    def accepted(self) -> list[Candidate]:
        return [c for c in self.candidates if c.accepted]

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


#: How a MIDI file is made to look like a recording of it (actors.midi.analysis.midi_heard_chroma):
#: struck notes fade (decay_s, floor), each note sounds through its harmonics (n_partials,
#: rolloff) and rings on after its note-off (release_s). Chosen on the train split of
#: benchmarks/bench_midi.py (FluidSynth renderings); see MatchConfig for the acceptance.
HEARD_MODEL: dict[str, Any] = {"decay_s": 2.0, "floor": 0.1, "n_partials": 6, "rolloff": 0.6, "release_s": 0.4}


def midi_features(notes: dict[str, np.ndarray], *, frame_rate_hz: float, n_frames: int,
                  target_rate_hz: float = DEFAULT_RATE_HZ) -> tuple[np.ndarray, float]:
    """CENS features (12, N) and their rate of a MIDI file's notes, as a recording sounds."""
    chroma = midi_heard_chroma(notes, frame_rate_hz=frame_rate_hz, n_frames=n_frames, **HEARD_MODEL)
    return cens(chroma, frame_rate_hz=frame_rate_hz, target_rate_hz=target_rate_hz)


def _read_chroma(out_dir: Path, rows: dict[str, TrackRow], ) -> Iterator[tuple[str, str, float, np.ndarray]]:
    """(hash, kind, frame_rate_hz, chroma (12, T)) of each chosen frames row, part by part.

    ``frame_rate_hz`` is the row's own (the sink stores each track's analysis rate), so tracks
    fingerprinted with other DSP settings are read at their true rate."""
    by_part: dict[str, set[str]] = {}
    for h, r in rows.items():
        by_part.setdefault(r.path, set()).add(h)
    for path, want in by_part.items():
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=64, columns=["content_hash", "kind", "features_version",
                                                              "frame_rate_hz", "chroma"]):
            hashes = batch.column("content_hash").to_pylist()
            if not want.intersection(hashes):
                continue
            kinds = batch.column("kind").to_pylist()
            versions = batch.column("features_version").to_pylist()
            rates = batch.column("frame_rate_hz").to_numpy(zero_copy_only=False)
            chroma = batch.column("chroma")
            # flatten() honours slicing at both levels; offsets are made relative to row 0
            flat = chroma.flatten().flatten().to_numpy(zero_copy_only=False)
            offsets = chroma.offsets.to_numpy().astype(np.int64)
            offsets -= offsets[0]
            valid = chroma.is_valid().to_numpy(zero_copy_only=False)
            for i, h in enumerate(hashes):
                if h not in want or not valid[i] or versions[i] != rows[h].version:
                    continue
                mat = flat[offsets[i] * 12: offsets[i + 1] * 12].reshape(-1, 12).T
                yield h, kinds[i], float(rates[i]), mat


def _load_notes(out_dir: Path, parts: list[str], want: set[str]) -> dict[str, dict[str, np.ndarray]]:
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
                if h not in want:
                    continue
                found[h] = {c: np.asarray(arrays[c][i].values.to_numpy(zero_copy_only=False)) for c in cols}
    return found


def load_sequences(engine: Engine, out_dir: str | os.PathLike, *, midi_hashes: Iterable[str] | None = None,
                   target_rate_hz: float = DEFAULT_RATE_HZ) -> tuple[dict[str, _Seq], dict[str, _Seq]]:
    """CENS sequences of all audio tracks and of the requested MIDI files: (midi, audio) by hash.

    Each track is read from its current row (:func:`pipeline.train.rows.current_rows`, the
    rule training uses too). MIDI features come from the notes (:func:`midi_features`), or
    from the stored frame chroma when the midi_notes dataset is gone.
    """
    out = Path(out_dir).expanduser().resolve()
    files = []
    for rel in parts_of(engine, "frames"):
        path = out / rel
        if not path.exists():
            raise ChromarayError(f"Parquet part {path} is listed in the database but missing; "
                                 "re-run `chromaray fingerprint` with the same --out")
        files.append(str(path))
    rows = current_rows(engine, files, "frames", kinds=("audio", "midi"))
    if midi_hashes is not None:
        want = set(midi_hashes)
        rows = {h: r for h, r in rows.items() if r.kind == "audio" or h in want}
    notes = _load_notes(out, parts_of(engine, "midi_notes"), {h for h, r in rows.items() if r.kind == "midi"})
    midi: dict[str, _Seq] = {}
    audio: dict[str, _Seq] = {}
    for h, kind, rate, stored in _read_chroma(out, rows):
        if kind == "midi" and h in notes:
            feat, frate = midi_features(notes[h], frame_rate_hz=rate, n_frames=stored.shape[1],
                                        target_rate_hz=target_rate_hz)
        else:
            feat, frate = cens(stored, frame_rate_hz=rate, target_rate_hz=target_rate_hz)
        (midi if kind == "midi" else audio)[h] = _Seq(h, kind, feat, frate, profile(feat))
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


@dataclass
class Candidate:
    """One aligned (MIDI, recording) pair: the alignment at ``shift`` semitones (the MIDI
    transposed up by it), its transposition gap (score minus the best score at the 11 other
    shifts; None when not verified) and the verdict of MatchConfig's acceptance."""

    audio_hash: str
    alignment: Alignment
    shift: int = 0
    gap: float | None = None
    accepted: bool = False

    @property
    def score(self) -> float:
        return self.alignment.score


def accepts(c: Candidate, config: MatchConfig) -> bool:
    """MatchConfig's acceptance of a verified candidate: its score and its transposition gap."""
    return c.gap is not None and c.score >= config.min_score and c.gap >= config.min_gap


def _shifted(feat: np.ndarray, k: int) -> np.ndarray:
    """Unit-column chroma features transposed up by ``k`` semitones."""
    return np.roll(feat, k, axis=0) if k % 12 else feat


def verify(m: _Seq, a_feat: np.ndarray, al: Alignment, shift: int, *, transpose: bool
           ) -> tuple[Alignment, int, float]:
    """(alignment, shift, transposition gap) of a pair, from its alignments at all 12 shifts.

    With ``transpose`` the best shift wins; else the given one is kept. The gap is its score
    minus the best other shift's (negative: another key fits better)."""
    alignments: dict[int, Alignment | None] = {shift: al}
    for k in range(12):
        if k not in alignments:
            alignments[k] = align(_shifted(m.feat, k), a_feat, rate_hz=m.rate)
    scores = {k: (v.score if v is not None else -1.0) for k, v in alignments.items()}
    best = max(scores, key=lambda k: (scores[k], -k)) if transpose else shift
    other = max(v for k, v in scores.items() if k != best)
    chosen = alignments[best]
    assert chosen is not None
    return chosen, best, float(scores[best] - other)


@dataclass
class LibraryIndex:
    """What candidate retrieval needs of a library, built once per library
    (:func:`library_index`) and shared by every MIDI file matched against it (the Ray tasks get
    it through the object store): recording hashes, their pitch-class profiles (tie-break) and
    the chord n-gram index (actors.midi.retrieval)."""

    hashes: list[str]
    profiles: np.ndarray  # (n, 12)
    chords: ChordIndex


def library_index(audio: dict[str, _Seq]) -> LibraryIndex:
    """The retrieval index of a library's recordings (their CENS features, in dict order)."""
    hashes = list(audio)
    profs = np.stack([audio[h].prof for h in hashes]) if hashes else np.zeros((0, 12), np.float32)
    return LibraryIndex(hashes, profs, ChordIndex.build([audio[h].feat for h in hashes]))


def retrieve(m: _Seq, lib: LibraryIndex, config: MatchConfig) -> tuple[list[str], dict[str, int]]:
    """The ``max_candidates`` recordings most likely to play ``m``, best first, and the shift
    each is tried at: ranked by chord n-gram votes (actors.midi.retrieval), ties (e.g. a query
    too short for any n-gram) by pitch-class profile cosine."""
    n = len(lib.hashes)
    ks = range(12) if config.transpose else range(1)
    votes = np.stack([lib.chords.scores(_shifted(m.feat, k)) for k in ks])  # (shifts, n)
    sims_k = np.stack([lib.profiles @ np.roll(m.prof, k) for k in ks])
    best_vote = votes.argmax(axis=0)
    any_vote = votes.max(axis=0) > 0
    # a recording with votes is tried at its best-voted shift, one without at its best profile shift
    shift = np.where(any_vote, best_vote, sims_k.argmax(axis=0))
    cols = np.arange(n)
    order = np.lexsort((-sims_k[shift, cols], -votes[shift, cols]))[:config.max_candidates]
    chosen = [lib.hashes[i] for i in order]
    return chosen, {lib.hashes[i]: int(shift[i]) for i in order}


def match_one(m: _Seq, audio: dict[str, _Seq], config: MatchConfig, lib: LibraryIndex | None = None
              ) -> tuple[list[Candidate], int]:
    """Candidates of one MIDI file best first (the accepted ones among them, at most
    ``config.top_k`` of those), and the number of recordings aligned at full rate.
    ``lib``: the library's retrieval index (:func:`library_index`; built here when not given,
    which costs a pass over the library: give it when matching many files)."""
    if not audio:
        return [], 0
    if lib is None:
        lib = library_index(audio)
    # Retrieval: only the best `max_candidates` by chord n-grams go through DTW (the costly step).
    order, shifts = retrieve(m, lib, config)
    feats = {h: _resample(audio[h].feat, audio[h].rate, m.rate) for h in order}
    # Pruning 2: long pairs (more DTW cells than coarse_min_cells at ~5 Hz, i.e. both over
    # ~100 s) are ranked by a DTW at ~1 Hz first; only the fine_candidates best go through the
    # ~5 Hz DTW (cost grows with the product of lengths).
    long = [h for h in order if m.feat.shape[1] * feats[h].shape[1] > config.coarse_min_cells]
    if len(long) > config.fine_candidates:
        factor = config.coarse_factor
        coarse = {}
        for h in long:
            al = align(coarsen(_shifted(m.feat, shifts[h]), factor), coarsen(feats[h], factor),
                       rate_hz=m.rate / factor)
            coarse[h] = al.score if al is not None else -np.inf
        keep = set(sorted(long, key=lambda h: -coarse[h])[:config.fine_candidates])
        order = [h for h in order if h not in coarse or h in keep]
    cands = []
    for h in order:
        al = align(_shifted(m.feat, shifts[h]), feats[h], rate_hz=m.rate)
        if al is not None:
            cands.append(Candidate(h, al, shifts[h]))
    cands.sort(key=lambda c: (-c.score, c.audio_hash))
    # Calibration: the best few are aligned at the 11 other transpositions (see MatchConfig).
    for c in cands[:config.verify_candidates]:
        c.alignment, c.shift, c.gap = verify(m, feats[c.audio_hash], c.alignment, c.shift,
                                             transpose=config.transpose)
        c.accepted = accepts(c, config)
    cands.sort(key=lambda c: (-c.score, c.audio_hash))
    return cands, len(order)


#: Parquet dataset of the alignment paths of accepted matches (one row per pair).
ALIGNMENTS_DATASET = "midi_alignments"


def _match_shard(ms: list[_Seq], audio: dict[str, _Seq], lib: LibraryIndex, config: MatchConfig
                 ) -> list[tuple[str, list[Candidate], int, float]]:
    """(midi hash, candidates, aligned count, seconds) of each MIDI sequence (a Ray task body)."""
    out = []
    for m in ms:
        t0 = time.perf_counter()
        cands, n = match_one(m, audio, config, lib)
        # only the verified candidates travel back: the rest carry no verdict
        out.append((m.content_hash, cands[:max(config.verify_candidates, config.top_k)], n,
                    time.perf_counter() - t0))
    return out


def _n_workers(config: MatchConfig, n_midi: int) -> int:
    if config.workers >= 0:
        return config.workers
    if n_midi < config.ray_min_midi:
        return 0
    return max(1, min(os.cpu_count() or 1, -(-n_midi // 16)))


def _match_all(midi: dict[str, _Seq], audio: dict[str, _Seq], config: MatchConfig
               ) -> list[tuple[str, list[Candidate], int, float]]:
    """Every MIDI file against the library: in this process, or sharded over Ray tasks (one
    CPU each; the library's features go to the object store once and are shared)."""
    ms = list(midi.values())
    if not ms:
        return []
    lib = library_index(audio)  # once per library, for every MIDI file
    workers = _n_workers(config, len(ms))
    if workers == 0:
        return _match_shard(ms, audio, lib, config)
    import ray

    from pipeline.runtime import init_ray

    init_ray()
    task = ray.remote(num_cpus=1)(_match_shard)
    audio_ref, lib_ref = ray.put(audio), ray.put(lib)
    n_shards = min(len(ms), workers * 4)  # a few shards per worker balance long and short files
    shards = [ms[i::n_shards] for i in range(n_shards)]
    refs = [task.remote(shard, audio_ref, lib_ref, config) for shard in shards]
    return [row for part in ray.get(refs) for row in part]


def match_midi(engine: Engine, out_dir: str | os.PathLike | None = None, *, config: MatchConfig | None = None,
               midi_hashes: Iterable[str] | None = None, top_k: int | None = None, min_score: float | None = None,
               max_candidates: int | None = None, fine_candidates: int | None = None,
               coarse_min_cells: int | None = None, store: bool = True) -> list[MidiMatchResult]:
    """Rank the audio recordings playing the same piece as each MIDI file.

    ``out_dir``: the Parquet folder; default the one the database names
    (:func:`pipeline.store.results_dir`, the --out of the latest fingerprint run).
    ``config``: thresholds and budgets (default ``MatchConfig()``); ``top_k``, ``min_score``,
    ``max_candidates``, ``fine_candidates`` and ``coarse_min_cells`` override its fields (checked
    like the config: a bad value raises one ChromarayError).
    midi_hashes: restrict to these MIDI contents (default: every MIDI file in the library).
    Unless ``store`` is False, stores the accepted matches in table midi_matches (replacing
    earlier rows of these MIDI files) and their alignment paths as a new part of the Parquet
    dataset ``midi_alignments`` (:func:`read_alignments`). Results are sorted by the MIDI
    file's first path. n_candidates of a result counts the pairs aligned at full rate.
    """
    given = {"top_k": top_k, "min_score": min_score, "max_candidates": max_candidates,
             "fine_candidates": fine_candidates, "coarse_min_cells": coarse_min_cells}
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    cfg = config or MatchConfig()
    if overrides:
        cfg = cfg.replace(**overrides)
    out = resolve_out(engine, out_dir)
    wanted = list(dict.fromkeys(midi_hashes)) if midi_hashes is not None else None
    if not store:
        return _match_and_collect(engine, out, wanted, cfg)
    # A storing run holds the writer role of the database (one match-midi at a time) and of the
    # Parquet folder (no fingerprint run's start-up cleanup while an alignments part is written),
    # as `chromaray fingerprint` does: refused with one line (WriterBusy/FolderBusy) while held.
    run_id = claim_run(engine, "match-midi", out_dir=out,
                       config={"out": str(out), "midi_files": len(wanted) if wanted is not None else "all",
                               **cfg.to_dict()})
    status, n = "failed", 0
    try:
        results = _match_and_collect(engine, out, wanted, cfg)
        _store(engine, out, results, cfg.top_k)
        status, n = "finished", len(results)
        return results
    except KeyboardInterrupt:
        status = "stopped"
        raise
    finally:
        finish_run(engine, run_id, status, summary={"midi_files": n}, n_done=n)


def _match_and_collect(engine: Engine, out: Path, wanted: list[str] | None, cfg: MatchConfig
                       ) -> list[MidiMatchResult]:
    """match_midi's work without storing: results sorted by the MIDI file's first path."""
    midi, audio = load_sequences(engine, out, midi_hashes=wanted)
    if wanted is not None:
        missing = [h for h in wanted if h not in midi]
        if missing:
            raise ChromarayError(f"{len(missing)} requested MIDI file(s) have no stored chroma "
                                 f"(e.g. {missing[0][:12]}…); run `chromaray fingerprint` on them first")
    paths = _paths_by_hash(engine, list(midi) + list(audio))
    results: list[MidiMatchResult] = []
    for h, cands, n_cand, seconds in _match_all(midi, audio, cfg):
        acc = [c for c in cands if c.accepted][:cfg.top_k]
        rejected = [c.score for c in cands if not c.accepted]
        matches = [AudioMatch(c.audio_hash, (paths.get(c.audio_hash) or [""])[0], c.score, c.alignment.similarity,
                              c.alignment.tempo_ratio, c.alignment.audio_start_s, c.alignment.audio_end_s,
                              c.shift, c.gap if c.gap is not None else 0.0) for c in acc]
        results.append(MidiMatchResult(h, paths.get(h, []), matches, n_cand, max(rejected) if rejected else None,
                                       seconds, cands))
    results.sort(key=lambda r: ((r.midi_paths or ["\uffff"])[0], r.midi_hash))
    return results


def resolve_out(engine: Engine, out_dir: str | os.PathLike | None) -> Path:
    """The Parquet folder: ``out_dir`` when given (an override), else the database's own."""
    if out_dir is None:
        found = results_dir(engine)
        if found is None:
            raise ChromarayError("the database names no output folder (no fingerprint run); give --out")
        out_dir = found
    p = Path(out_dir).expanduser()
    if not p.is_dir():
        raise ChromarayError(f"output folder {p} does not exist (give the --out of `chromaray fingerprint`)")
    return p.resolve()


def alignments_table(rows: list[tuple[str, Candidate, int]]) -> pa.Table:
    """The midi_alignments dataset for (midi_hash, accepted candidate, rank) rows: the pair,
    its score, gap and shift, and the alignment path as ``midi_time_s`` -> ``audio_time_s``
    (float32 lists of one length, MIDI time strictly increasing; see Alignment.time_map)."""
    maps = [c.alignment.time_map() for _, c, _ in rows]
    return pa.table({
        "midi_hash": [h for h, _, _ in rows],
        "audio_hash": [c.audio_hash for _, c, _ in rows],
        "rank": pa.array([r for _, _, r in rows], pa.int32()),
        "score": pa.array([c.score for _, c, _ in rows], pa.float32()),
        "gap": pa.array([c.gap if c.gap is not None else float("nan") for _, c, _ in rows], pa.float32()),
        "shift": pa.array([c.shift for _, c, _ in rows], pa.int8()),
        "tempo_ratio": pa.array([c.alignment.tempo_ratio for _, c, _ in rows], pa.float32()),
        "matcher_version": [MATCH_VERSION] * len(rows),
        "midi_time_s": list_of_vectors([m for m, _ in maps], pa.float32()),
        "audio_time_s": list_of_vectors([a for _, a in maps], pa.float32()),
    })


def _store(engine: Engine, out: Path, results: list[MidiMatchResult], top_k: int) -> None:
    now = utcnow()
    rows = [(r.midi_hash, c, rank) for r in results for rank, c in enumerate(r.accepted[:top_k], start=1)]
    part = None
    if rows:
        # The part is renamed into place first and listed in the same transaction as the match
        # rows; a crash in between leaves an unlisted file that is never read.
        name = f"part-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        part = write_part(out, ALIGNMENTS_DATASET, name, alignments_table(rows))
    with Session(engine) as s, s.begin():
        hashes = [r.midi_hash for r in results]
        for i in range(0, len(hashes), 500):
            s.execute(delete(MidiMatchRow).where(MidiMatchRow.midi_hash.in_(hashes[i:i + 500])))
        for h, c, rank in rows:
            al = c.alignment
            s.add(MidiMatchRow(midi_hash=h, audio_hash=c.audio_hash, rank=rank, score=al.score,
                               similarity=al.similarity, chance=al.chance, tempo_ratio=al.tempo_ratio,
                               audio_start_s=al.audio_start_s, audio_end_s=al.audio_end_s,
                               midi_start_s=al.midi_start_s, midi_end_s=al.midi_end_s,
                               matcher_version=MATCH_VERSION, created_at=now, shift=c.shift, gap=c.gap))
        if part is not None:
            s.add(ParquetPart(name=part, dataset=ALIGNMENTS_DATASET, run_id=f"match-midi-{now:%Y%m%d%H%M%S}",
                              n_rows=len(rows), created_at=now))


def read_alignments(engine: Engine, out_dir: str | os.PathLike | None = None) -> pa.Table:
    """The current rows of the midi_alignments dataset: per MIDI file, those of the newest part
    that matched it (a re-run supersedes older parts), i.e. the pairs now in midi_matches."""
    out = resolve_out(engine, out_dir)
    with Session(engine) as s:
        current = {(m, a) for m, a in s.execute(select(MidiMatchRow.midi_hash, MidiMatchRow.audio_hash))}
    tables = []
    seen: set[str] = set()
    for rel in reversed(parts_of(engine, ALIGNMENTS_DATASET)):  # newest first
        t = pq.read_table(out / rel)
        hashes = t.column("midi_hash").to_pylist()
        keep = [i for i, (m, a) in enumerate(zip(hashes, t.column("audio_hash").to_pylist()))
                if m not in seen and (m, a) in current]
        seen.update(hashes)
        if keep:
            tables.append(t.take(keep))
    if not tables:
        return alignments_table([])
    return pa.concat_tables(tables)


def stored_matches(engine: Engine, midi_hash: str) -> list[MidiMatchRow]:
    """Stored rows of one MIDI content, best first (none in an older database without the
    table: this only reads, also on a read-only engine)."""
    insp = inspect(engine)
    if not insp.has_table(MidiMatchRow.__tablename__):
        return []
    present = {c["name"] for c in insp.get_columns(MidiMatchRow.__tablename__)}
    cols = [c for c in MidiMatchRow.__table__.columns if c.name in present]  # schema < 5: no shift, gap
    with engine.connect() as conn:
        found = conn.execute(select(*cols).where(MidiMatchRow.midi_hash == midi_hash).order_by(MidiMatchRow.rank))
        return [MidiMatchRow(**dict(r._mapping)) for r in found]
