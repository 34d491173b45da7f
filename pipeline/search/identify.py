"""Queries on the fingerprint index: "what is this clip?" and "which tracks are the same recording?".

identify (per clip)
    1. decode to mono float32 at the analysis rate (actors.decode) and run the pipeline's own
       feature chain (actors.features.FeatureExtractor: STFT -> HPSS -> harmonic chroma), so a
       query is analysed exactly like the library;
    2. query codes at *every* analysis frame with per-bit reliabilities
       (actors.fingerprint.query_codes), dropping the frames near the clip's edges whose
       smoothing window is incomplete;
    3. look up the clip's exact codes, their rarest ``quick_postings`` postings (most clips of
       library tracks end here, at step 5), then, without an accepted match, each code and its
       variants with one of the ``n_flips`` least reliable bits flipped; every posting votes for
       (track, offset) where offset = library analysis frame - query frame; each query frame
       votes at most once per (track, offset);
    4. the best-voted (track, offset) pairs (votes pooled over ±1 frame) are verified: bit error
       rate (BER) between the clip's codes on the library's code grid and the track's stored
       codes over the whole aligned window, offset refined ±3 frames;
    5. score = (BER + BER of the 12 temporal bits) / 2 (pipeline.search.score); accepted when
       score <= the threshold for the number of compared codes (:func:`accept_threshold`),
       at least ``min_aligned_codes`` codes. Without an accepted match at speed 1, the clip is
       tried again at speed factors 1.02 and 0.98 (resampled before analysis, which undoes a
       ±2 % turntable-style speed change in tempo *and* pitch exactly); the first speed with an
       accepted match ends the search.
    6. without an accepted match, music over music (:func:`search_partial`, at speed 1): another
       recording mixed over the target at 0 dB leaves ~0.4 % of the clip's codes intact but ~5 %
       within 2 bits (measured on real tracks, see the #12 note), and the target dominates some
       seconds and not others. So: multi-probe lookups (:func:`probes`, 2 of the 16 least reliable
       bits); the tracks with most votes (at any offset) and the tracks of the best-voted
       (track, offset) cells are swept at every alignment (pipeline.search.score.alignment_sweep),
       scored on windows of ~1.5 s by the mean of their best half; the best track is accepted when
       that score is low *and* clearly below the best score of every other swept track (the
       *gap*: a calibration against the clip's other candidates, :func:`accepts`).
    Confidence = 1 - score / 0.5 (1: identical codes, 0: chance level), reported for the match
    (the partial score for a partial match, ``Match.method == "partial"``).
    Every threshold is a field of :class:`pipeline.config.IdentifyConfig`.

The clip is analysed with the DSP settings the library was fingerprinted with (stored with it,
pipeline.store.track_settings). A library holding tracks of several settings is searched once
per setting: the clip analysed with those settings against those tracks only (the grouping of
pipeline.search.settings, which duplicates uses too). Tracks whose settings are unknown are not
searched and listed in ``Identifier.skipped``.

duplicates: see pipeline.search.duplicates.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from actors.config import BatchConfig, DSPConfig
from actors.fingerprint import DECIMATE, frames_for, query_codes
from pipeline.config import IdentifyConfig
from pipeline.search.index import FingerprintIndex, counted
from pipeline.search.score import (
    alignment_sweep,
    on_code_grid,
    query_contrast,
    verify_codes,
    verify_query,
)
from pipeline.search.settings import STALE_RATE, UNKNOWN_SETTINGS, group_by_settings
from pipeline.store import TrackPath

__all__ = [
    "DEFAULTS",
    "STALE_RATE",
    "UNKNOWN_SETTINGS",
    "Candidate",
    "Identifier",
    "Match",
    "accept_threshold",
    "accepts",
    "confidence_of",
    "identify",
    "probes",
    "search",
    "search_partial",
]

# Where IdentifyConfig's numbers come from (pipeline.config; a --config `identify:` section
# overrides them). Accept at or below accept_score_short when fewer than short_codes codes were
# compared (≈3 s clips), else accept_score_long. Learned from data this project generates,
# reproducibly: `benchmarks/bench_identify.py --learn --n-library 24 --queries-per-cond 6
# --n-negative 150 --scale-tracks 0 --seed 7 --negative-seed-base 500000` (library of the 8 shared
# tracks + 16 seeded songs; query cuts, noise and out-of-library songs from seeds disjoint from the
# evaluation's defaults 1234 / 100000) puts the threshold a third of the way from the worst
# in-library score to the best out-of-library score (erring towards no false positives). Run on
# 2026-11-24 (54/108 in-library, 56/80 out-of-library verifications short/long): short 0.134 /
# 0.199 -> 0.156; long 0.156 / 0.294 -> 0.202. duplicate_score is the long-clip threshold.
# Contrast (min_query_contrast, min_alignment_contrast: median score at shifts of about 3 and 6 s
# minus the aligned score): >= 0.37 for re-encoded copies of the demo songs and a real track,
# <= 0.08 between unrelated drum-only demo tracks. Clips are short and noisy, so identify asks
# less (0.10) than duplicates (0.15); at 0.10 the identify benchmark keeps its hit rates
# (bench_identify.py, 0 false positives in 200).
DEFAULTS = IdentifyConfig()


@dataclass
class Match:
    content_hash: str
    path: str | None
    paths: list[str]
    offset_s: float
    confidence: float
    ber: float
    votes: int
    aligned_codes: int
    speed: float
    #: "whole": the whole clip agrees; "partial": only its agreeing windows (another recording
    #: mixed in), confidence from their score.
    method: str = "whole"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Candidate:
    key: int
    offset: int  # analysis frames: library frame = query frame + offset
    votes: int
    ber: float = 1.0
    n: int = 0
    ber_delta: float = 1.0  # BER of the temporal bits (12-23) alone
    #: Set by search_partial: score of the clip's agreeing windows at the track's best alignment,
    #: and how much better it is than any other candidate track's best (None: a whole-clip
    #: candidate of search).
    partial: float | None = None
    mix_gap: float = 0.0
    #: Set by search_partial: the track's median alignment score minus its best one.
    mix_contrast: float = 0.0

    @property
    def score(self) -> float:
        return 0.5 * (self.ber + self.ber_delta)


def accept_threshold(n_codes: int, config: IdentifyConfig = DEFAULTS) -> float:
    """Largest accepted score for a verification over ``n_codes`` aligned codes."""
    return config.accept_score_short if n_codes < config.short_codes else config.accept_score_long


def confidence_of(score: float) -> float:
    """1 for identical codes, 0 at chance level (score 0.5)."""
    return round(max(0.0, min(1.0, 1.0 - score / 0.5)), 4)


# ----------------------------------------------------------------------------------------------
# Core: one clip's chroma against the index
# ----------------------------------------------------------------------------------------------

def _edge(frame_rate_hz: float, n_frames: int, min_aligned_codes: int) -> int:
    """Frames to drop at each end of a clip: their smoothing/temporal windows run off the clip."""
    w, d = frames_for(frame_rate_hz)
    e = w // 2 + d
    # Short clips keep more of their frames (the window is then partly padded, still useful).
    return min(e, max(0, (n_frames - 4 * min_aligned_codes) // 2))


def probes(codes: np.ndarray, rel: np.ndarray, frames: np.ndarray, *, weak_bits: int,
           max_flips: int) -> tuple[np.ndarray, np.ndarray]:
    """Lookup keys for the query frames ``frames``: each code and its variants with 1..``max_flips``
    of its ``weak_bits`` least reliable bits flipped (multi-probe). Returns (keys, query frame of
    each key). ``max_flips`` = 1 is the single-flip probing of the whole-clip search."""
    c = codes[frames]
    keys = [c]
    if weak_bits and max_flips:
        weak = np.argsort(rel[:, frames], axis=0, kind="stable")[:weak_bits].astype(np.uint32)  # (weak_bits, n)
        masks = np.uint32(1) << weak
        for f in range(1, max_flips + 1):
            for comb in combinations(range(len(masks)), f):
                m = masks[comb[0]].copy()
                for i in comb[1:]:
                    m ^= masks[i]
                keys.append(c ^ m)
    return np.concatenate(keys), np.tile(frames, len(keys))


def _cells(qi: np.ndarray, keys: np.ndarray, frames: np.ndarray, qj: np.ndarray, t: int,
           n_best: int) -> list[Candidate]:
    """The ``n_best`` best-voted (track, offset) cells of postings (lookup index ``qi``, track
    ``keys``, code frame ``frames``) of lookups made for query frames ``qj`` (clip of ``t``
    frames): one vote per (query frame, track, offset), votes pooled over ±1 frame, cells within
    2 codes of a better one of the same track dropped; ties go to the lower (track, offset)."""
    if len(qi) == 0:
        return []
    j = qj[qi].astype(np.int64)
    off = frames.astype(np.int64) * DECIMATE - j
    span = np.int64(1 << 22)  # offsets fit in ±2^21 analysis frames (≈ 13 h)
    tk = keys.astype(np.int64) * span + (off + span // 2)
    if len(np.unique(qj)) == len(qj):  # one lookup per query frame: its postings are distinct cells
        cells, counts = counted(tk)
    else:  # one vote per (query frame, track, offset): several probes may hit the same posting
        uniq = counted(tk * np.int64(t + 1) + j)[0]
        cells, counts = counted(uniq // np.int64(t + 1), is_sorted=True)  # sorted, as uniq is
    # Pool ±1 frame (the clip's best phase may fall next to the library grid); cells are sorted,
    # so a cell's neighbours are next to it.
    pooled = counts.copy()
    adjacent = cells[1:] == cells[:-1] + 1
    pooled[:-1][adjacent] += counts[1:][adjacent]
    pooled[1:][adjacent] += counts[:-1][adjacent]
    # The best cells in order (ties by position): a partial sort of enough of them that the
    # dropped neighbours still leave n_best, a full one when they do not.
    rank = (pooled.max() - pooled) * np.int64(len(cells)) + np.arange(len(cells))
    k = 16 * n_best
    if k < len(rank):
        top = np.argpartition(rank, k)[:k]
        cands = _distinct_cells(cells, pooled, top[np.argsort(rank[top])], span, n_best)
        if len(cands) == n_best:
            return cands
    return _distinct_cells(cells, pooled, np.argsort(rank), span, n_best)


def _distinct_cells(cells: np.ndarray, pooled: np.ndarray, order: np.ndarray, span: np.int64,
                    n_best: int) -> list[Candidate]:
    """Cells in ``order``, skipping those within 2 codes of a kept one of the same track, up to ``n_best``."""
    cands: list[Candidate] = []
    for i in order:
        key = int(cells[i] // span)
        o = int(cells[i] % span - span // 2)
        if any(c.key == key and abs(c.offset - o) <= 2 * DECIMATE for c in cands):
            continue
        cands.append(Candidate(key, o, int(pooled[i])))
        if len(cands) >= n_best:
            break
    return cands


def _track_votes(qi: np.ndarray, keys: np.ndarray, qj: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """(tracks, votes) from postings of lookups made for query frames ``qj``: one vote per
    (query frame, track) at any offset, most votes first."""
    if len(qi) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    per = counted(keys.astype(np.int64) * np.int64(t + 1) + qj[qi])[0] // np.int64(t + 1)
    tracks, votes = counted(per, is_sorted=True)
    order = np.argsort(-votes, kind="stable")
    return tracks[order], votes[order]


def _query(chroma: np.ndarray, frame_rate_hz: float,
           config: IdentifyConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes at every frame, per-bit reliabilities, validity mask) of a clip's chroma."""
    codes, rel = query_codes(np.asarray(chroma, dtype=np.float32), frame_rate_hz=frame_rate_hz)
    codes = np.asarray(codes)
    t = len(codes)
    e = _edge(frame_rate_hz, t, config.min_aligned_codes)
    valid = np.zeros(t, dtype=bool)
    valid[e: t - e] = True
    return codes, np.asarray(rel), valid


def search(idx: FingerprintIndex, chroma: np.ndarray, frame_rate_hz: float, *, config: IdentifyConfig = DEFAULTS,
           live: np.ndarray | None = None) -> Candidate | None:
    """Best verified (track, offset) for one clip's chroma (12, T) analysed at ``frame_rate_hz``,
    among the tracks of ``live`` (an ``idx.mask``; default all), or None without candidates.

    Two passes with the same verification: first the clip's exact codes alone, their rarest
    ``config.quick_postings`` postings; then, when that accepts nothing, every code with its
    one-bit variants under the index's full posting budget. Most clips of library tracks are
    accepted by the first pass at a few times less lookup and vote counting; the second pass
    is the search as it was, so a clip that needs it costs the first pass more."""
    codes, rel, valid = _query(chroma, frame_rate_hz, config)
    jj = np.flatnonzero(valid)
    if len(jj) == 0:
        return None
    passes: list[tuple[int, int | None]] = [(config.n_flips, None)]
    if config.quick_postings:
        passes.insert(0, (0, config.quick_postings))
    best: Candidate | None = None
    for flips, budget in passes:
        q, qj = probes(codes, rel, jj, weak_bits=flips, max_flips=1)
        qi, keys, frames = idx.lookup(q, live, max_postings=budget)
        cands = _cells(qi, keys, frames, qj, len(codes), config.n_verify)
        found = _verified(idx, cands, codes, valid, len(jj), config)
        if found is not None and (best is None or found.score < best.score):
            best = found
        if best is not None and accepts(best, config):
            break
    return best


def _verified(idx: FingerprintIndex, cands: list[Candidate], codes: np.ndarray, valid: np.ndarray, n_valid: int,
              config: IdentifyConfig) -> Candidate | None:
    """The best-scoring of ``cands`` after verification over the whole clip (offset refined ±3
    frames) that aligns clearly better than the same clip shifted along the same track."""
    best: Candidate | None = None
    idx.prefetch(c.key for c in cands)
    min_n = min(config.min_aligned_codes, max(1, n_valid // DECIMATE))
    for c in cands:
        lib = idx.track_codes(c.key)
        for o in range(c.offset - 3, c.offset + 4):
            v = verify_query(codes, valid, lib, o)
            if v.n >= min_n and v.score < c.score:
                c.ber, c.n, c.offset, c.ber_delta = v.ber, v.n, o, v.ber_delta
        # Static chroma (drum loops, drones) agrees at any offset: a real match must align
        # clearly better than the same clip shifted by a few seconds along the same track.
        if c.n and query_contrast(codes, valid, lib, c.offset, shifts=config.contrast_shifts,
                                  min_codes=min(config.min_aligned_codes, c.n)) >= config.min_query_contrast \
                and (best is None or c.score < best.score):
            best = c
    return best


def search_partial(idx: FingerprintIndex, chroma: np.ndarray, frame_rate_hz: float, *,
                   config: IdentifyConfig = DEFAULTS, live: np.ndarray | None = None) -> Candidate | None:
    """Music over music: the track whose best alignment scores best on the clip's agreeing windows,
    calibrated against the other candidate tracks' best alignments.

    Candidates: multi-probe lookups (up to ``config.mix_max_flips`` of the ``config.mix_weak_bits``
    least reliable bits flipped: with another song mixed in at 0 dB ~0.4 % of query codes survive
    intact but ~5 % within two bits, see the module notes); the ``config.mix_tracks`` tracks with
    most votes (one per query frame and track, any offset) and the tracks of the
    ``config.mix_verify`` best-voted (track, offset) cells; every track of a library of at most
    ``config.mix_tracks`` tracks. Each candidate track is swept at every
    alignment and code phase (:func:`pipeline.search.score.alignment_sweep`): windows of
    ``config.mix_window`` codes, score = mean of the best ``config.mix_keep`` fraction. The best
    track's score is ``Candidate.partial``; ``Candidate.mix_gap`` is how much better it is than
    the best alignment of any *other* swept track (tracks that are the same recording as the best
    one left out): a clip that matches nothing has a best track that only happens to agree a
    little better than the next, by a margin that does not grow with the library, while a
    real match stands apart (like the MIDI matcher's transposition gap). With no other track to
    compare, the gap is taken against the same track's best alignment a clip length away.
    Returns the best track's candidate (accepted or not, see :func:`accepts`), None without
    candidates or for a clip shorter than ``config.mix_min_windows`` windows."""
    w = config.mix_window
    codes, rel, valid = _query(chroma, frame_rate_hz, config)
    jj = np.flatnonzero(valid)
    if config.mix_verify == 0 or len(jj) < config.mix_min_windows * w * DECIMATE:
        return None
    q, qj = probes(codes, rel, jj, weak_bits=config.mix_weak_bits, max_flips=config.mix_max_flips)
    qi, keys, frames = idx.lookup(q, live)
    tracks, votes = _track_votes(qi, keys, qj, len(codes))
    chosen: dict[int, int] = {int(k): int(v) for k, v in zip(tracks[: config.mix_tracks], votes[: config.mix_tracks])}
    for c in _cells(qi, keys, frames, qj, len(codes), config.mix_verify):
        chosen.setdefault(c.key, c.votes)
    searched = idx.live if live is None else live  # a mask over track keys, true for indexed tracks only
    if np.count_nonzero(searched) <= config.mix_tracks:
        # The votes give some mixes no vote at all for their track (6 of 80 real mixes of the
        # identify benchmark, #12 note) while the sweep would find it: a library within the
        # sweep budget is swept whole.
        for k in np.flatnonzero(searched):
            chosen.setdefault(int(k), 0)
    if not chosen:
        return None
    idx.prefetch(chosen)
    grids = [on_code_grid(codes, valid, -j0)[:2] for j0 in range(DECIMATE)]

    def sweep_track(key: int, votes: int, phases: Sequence[int],
                    best: tuple[float, Candidate, np.ndarray, np.ndarray] | None = None
                    ) -> tuple[float, Candidate, np.ndarray, np.ndarray] | None:
        lib = idx.track_codes(key)
        for j0 in phases:
            a, va = grids[j0]
            ds, sweep = alignment_sweep(a, lib, va, window=w, keep=config.mix_keep, min_windows=config.mix_min_windows)
            if len(sweep) == 0:
                continue
            k = int(np.argmin(sweep))
            if best is None or sweep[k] < best[0]:
                best = (float(sweep[k]), Candidate(key, int(ds[k]) * DECIMATE - j0, votes, partial=float(sweep[k])),
                        ds, sweep)
        return best

    # Every other code phase first (neighbouring phases are 23 ms apart, the codes are smoothed
    # over 0.37 s: their scores differ little); the two best tracks then at all four phases.
    # Static chroma (drum loops, drones) agrees with a clip at every alignment, so its sweep is
    # flat: such tracks are neither a match nor a competitor.
    coarse = list(range(0, DECIMATE, 2))
    swept = [sb for key, nv in chosen.items()
             if (sb := sweep_track(key, nv, coarse)) is not None and _sweep_contrast(sb) >= STATIC_SWEEP_CONTRAST]
    if not swept:
        return None
    swept.sort(key=lambda x: x[0])
    fine = [j for j in range(DECIMATE) if j not in coarse]
    swept[:2] = [sweep_track(sb[1].key, sb[1].votes, fine, sb) or sb for sb in swept[:2]]
    swept.sort(key=lambda x: x[0])
    top, c, ds1, sw1 = swept[0]
    c.mix_contrast = _sweep_contrast(swept[0])
    lib1 = idx.track_codes(c.key)
    n_codes = len(grids[0][0])
    others = [s for s, o, _, _ in swept[1:]
              if not _same_recording(lib1, c.offset, idx.track_codes(o.key), o.offset, n_codes, config)]
    if not others:  # one track to compare with: its own best alignment a clip length away
        d1 = round(c.offset / DECIMATE)
        far = sw1[np.abs(ds1 - d1) > n_codes]
        others = [float(far.min())] if len(far) else []
    c.mix_gap = (min(others) - top) if others else 0.0
    v = verify_query(codes, valid, lib1, c.offset)
    c.ber, c.n, c.ber_delta = v.ber, v.n, v.ber_delta
    return c


#: A sweep whose best alignment is less than this below its median is flat: static chroma. Drum
#: loops and drones measured <= 0.001; every track of the identify benchmark's real mixes >= 0.024.
STATIC_SWEEP_CONTRAST = 0.01


def _sweep_contrast(swept: tuple[float, Candidate, np.ndarray, np.ndarray]) -> float:
    """How far a swept track's best alignment lies below its median alignment."""
    return float(np.median(swept[3])) - swept[0]


def _same_recording(lib1: np.ndarray, off1: int, lib2: np.ndarray, off2: int, n_codes: int,
                    config: IdentifyConfig) -> bool:
    """Whether track 2 at its best alignment (``off2``) is the same recording as track 1 at
    ``off1`` over the clip's span of ``n_codes`` codes (a duplicate in the library: it must not
    count as the competitor that a match has to beat)."""
    d1, d2 = round(off1 / DECIMATE), round(off2 / DECIMATE)
    lo1 = max(0, d1)
    # lib1[lo1 + i] (clip code lo1 + i - d1) against lib2[d2 + lo1 + i - d1]
    v = verify_codes(lib1[lo1: max(lo1, d1 + n_codes)], lib2, d2 - d1 + lo1)
    return v.n >= config.min_aligned_codes and v.score <= config.duplicate_score


def accepts(c: Candidate, config: IdentifyConfig = DEFAULTS) -> bool:
    """Whether a candidate is a match: by its whole-clip score, or (from :func:`search_partial`)
    by the score of its agreeing windows, its gap to the other swept tracks (``mix_gap``) and how
    far its best alignment lies below its typical one (``mix_contrast``)."""
    if c.partial is not None:
        return c.partial <= config.mix_max_score and c.mix_gap >= config.mix_min_gap \
            and c.mix_contrast >= config.mix_min_sweep_contrast
    return c.n > 0 and c.score <= accept_threshold(c.n, config)


# ----------------------------------------------------------------------------------------------
# Clips: decode + features + search
# ----------------------------------------------------------------------------------------------

class Identifier:
    """Holds the index and the feature extractors; identify many clips with one instance.

    ``config``: thresholds (default ``IdentifyConfig()``); ``speeds`` overrides ``config.speeds``.
    ``dsp``: analysis settings assumed for indexed tracks whose settings the database does not
    record (default: those tracks are skipped, see :attr:`skipped`).
    """

    def __init__(self, engine: Engine, *, config: IdentifyConfig | None = None, dsp: DSPConfig | None = None,
                 speeds: Sequence[float] | None = None):
        self.engine = engine
        self.config = config or DEFAULTS
        if speeds is not None:
            self.config = self.config.replace(speeds=tuple(speeds))
        self.index = FingerprintIndex.open(engine)
        self._settings = group_by_settings(engine, self.index, dsp)
        #: (analysis settings, index mask of their tracks), one per setting, most tracks first.
        self.groups: list[tuple[DSPConfig, np.ndarray]] = [
            (d, self.index.mask(keys)) for d, keys in self._settings.groups]
        #: The settings of most tracks: the sample rate identify_signal expects by default.
        self.dsp = self.groups[0][0] if self.groups else (dsp or DSPConfig())
        self._extractors: dict[DSPConfig, Any] = {}
        self._paths: dict[str, list[str]] = {}
        self.timings: list[dict[str, float]] = []
        #: Best candidate of the last query, accepted or not: (Candidate, speed) or None.
        self.last_best: tuple[Candidate, float] | None = None

    @property
    def speeds(self) -> tuple[float, ...]:
        return self.config.speeds

    @property
    def skipped(self) -> dict[str, str]:
        """Indexed tracks not searched (content hash -> reason)."""
        return self._settings.skipped

    @property
    def skipped_note(self) -> str | None:
        """One line saying which indexed tracks are not searched and why (None: all are)."""
        return self._settings.skipped_note

    # -- features ------------------------------------------------------------------------------
    def _extractor(self, dsp: DSPConfig) -> Any:
        if dsp not in self._extractors:
            from actors.features import FeatureExtractor

            self._extractors[dsp] = FeatureExtractor(dsp, BatchConfig(device="cpu"))
        return self._extractors[dsp]

    def chroma(self, signals: list[np.ndarray], dsp: DSPConfig | None = None) -> list[np.ndarray]:
        """Harmonic chroma (12, T) of each mono float32 signal (at ``dsp.sample_rate``; default
        :attr:`dsp`), by the pipeline's feature chain (``FeatureExtractor.clip_chroma``: its
        chroma kernels alone, the same numbers as ``FeatureExtractor(...)(signals)[i].chroma``)."""
        fx = self._extractor(dsp or self.dsp)
        return [fx.clip_chroma(np.asarray(y, dtype=np.float32)) for y in signals]

    def paths_of(self, content_hash: str) -> list[str]:
        if content_hash not in self._paths:
            with Session(self.engine) as s:
                self._paths[content_hash] = sorted(s.scalars(select(TrackPath.path)
                                                             .where(TrackPath.content_hash == content_hash)))
        return self._paths[content_hash]

    # -- queries -------------------------------------------------------------------------------
    def identify_signal(self, y: np.ndarray, sr: int | None = None) -> Match | None:
        """Identify one decoded clip: mono float32 at ``sr`` (default: ``self.dsp.sample_rate``),
        resampled for settings of another sample rate."""
        sr = sr or self.dsp.sample_rate
        return self._identify(lambda rate: y if rate == sr else _resample(y, sr, rate))

    def identify_file(self, path: str) -> Match | None:
        from actors.decode import decode_file

        decoded: dict[int, np.ndarray] = {}

        def at(rate: int) -> np.ndarray:
            if rate not in decoded:
                decoded[rate] = decode_file(str(path), rate)
            return decoded[rate]

        return self._identify(at)

    def _identify(self, signal_at: Callable[[int], np.ndarray]) -> Match | None:
        """Search each setting's tracks with the clip analysed by that setting; best score wins.
        The other speed factors are tried only when speed 1 gives no accepted match. Without an
        accepted whole-clip match, the clip (at its own speed) is searched again for its
        agreeing parts (music over music, :func:`search_partial`)."""
        cfg = self.config
        timing: dict[str, float] = {"decode_s": 0.0, "features_s": 0.0, "search_s": 0.0}

        def decoded(rate: int) -> np.ndarray:
            t0 = time.perf_counter()
            y = signal_at(rate)
            timing["decode_s"] += time.perf_counter() - t0
            return y

        best: tuple[Candidate, float, DSPConfig] | None = None
        plain: dict[DSPConfig, np.ndarray] = {}  # chroma at speed 1, per setting
        for speed in self.speeds:
            for dsp, live in self.groups:
                y = decoded(dsp.sample_rate)
                t0 = time.perf_counter()
                sig = y if speed == 1.0 else _resample_speed(y, speed, dsp.sample_rate)
                chroma = self.chroma([sig], dsp)[0]
                if speed == 1.0:
                    plain[dsp] = chroma
                t1 = time.perf_counter()
                cand = search(self.index, chroma, dsp.frame_rate_hz, config=cfg, live=live)
                timing["features_s"] += t1 - t0
                timing["search_s"] += time.perf_counter() - t1
                if cand is not None and (best is None or cand.score < best[0].score):
                    best = (cand, speed, dsp)
            if best is not None and accepts(best[0], cfg):
                break
        if (best is None or not accepts(best[0], cfg)) and cfg.mix_verify:
            mixed: tuple[Candidate, float, DSPConfig] | None = None
            for dsp, live in self.groups:
                if dsp not in plain:
                    y = decoded(dsp.sample_rate)
                    t0 = time.perf_counter()
                    plain[dsp] = self.chroma([y], dsp)[0]
                    timing["features_s"] += time.perf_counter() - t0
                t1 = time.perf_counter()
                cand = search_partial(self.index, plain[dsp], dsp.frame_rate_hz, config=cfg, live=live)
                timing["search_s"] += time.perf_counter() - t1
                if cand is not None and cand.partial is not None and (
                        mixed is None or cand.partial < (mixed[0].partial or 1.0)):
                    mixed = (cand, 1.0, dsp)
            if mixed is not None:  # accepted, or the more telling near miss (last_best)
                best = mixed
        self.timings.append(timing)
        self.last_best = None if best is None else best[:2]
        if best is None or not accepts(best[0], cfg):
            return None
        c, speed, dsp = best
        info = self.index.tracks[c.key]
        paths = self.paths_of(info.content_hash)
        score = c.score if c.partial is None else c.partial
        return Match(content_hash=info.content_hash, path=paths[0] if paths else None, paths=paths,
                     offset_s=round(c.offset / dsp.frame_rate_hz, 3),
                     confidence=confidence_of(score), ber=round(c.ber, 4),
                     votes=c.votes, aligned_codes=c.n, speed=speed,
                     method="whole" if c.partial is None else "partial")


def _resample(y: np.ndarray, sr: float, rate: float) -> np.ndarray:
    import soxr

    return soxr.resample(y, sr, rate, quality="HQ").astype(np.float32)


def _resample_speed(y: np.ndarray, speed: float, sr: int) -> np.ndarray:
    """Undo a playback at ``speed`` x: stretch the clip by ``speed`` (tempo and pitch)."""
    return _resample(y, sr, sr * speed)


def identify(engine: Engine, clips: Sequence[str], **kwargs: Any) -> list[Match | None]:
    """Python API of `chromaray identify`: one Match (or None: no match) per clip path.
    ``kwargs`` go to :class:`Identifier`; skipped tracks are reported as a warning."""
    ident = Identifier(engine, **kwargs)
    if ident.skipped_note:
        warnings.warn(ident.skipped_note, stacklevel=2)
    return [ident.identify_file(c) for c in clips]
