"""Which tracks of the library are the same recording.

Every indexed track is looked up as a query (its stored codes, on the same code grid) and
pairs that verify (pipeline.search.score) at score <= ``duplicate_score`` over an overlap that
covers 80 % of the shorter track and half the longer one and lasts ``min_duplicate_overlap_s``
(or all of a shorter track), that agree along the whole overlap (:func:`agrees_throughout`) and align clearly better
than they mis-align (``min_alignment_contrast``) are joined into groups (union-find); thresholds
are fields of :class:`pipeline.config.IdentifyConfig` (calibration: pipeline.search.identify).
Tracks that share a passage only (an intro, a sample, a loop, the same bars at their ends, a
short track inside a long one) are partial overlaps, not duplicates, and are not grouped.

At scale: each track's lookup has a posting budget (:data:`LOOKUP_POSTINGS`, its rarest codes
first), only its best-covered candidates are verified (:data:`VERIFY_PER_TRACK`), and from
:data:`RAY_MIN_TRACKS` tracks on the tracks are compared in parallel Ray tasks over key ranges,
each reading the memory-mapped index (``find(workers=...)``); the groups are the same.
Offsets come out of the votes, so trimmed or padded copies align; gain and codecs do not change
the codes much (see actors.fingerprint).

Tracks are grouped by their stored analysis settings exactly as identify groups them
(pipeline.search.settings) and compared within their group only: codes of other settings
cannot align. Tracks identify skips (unknown settings, stale index rows) are skipped here too;
:attr:`DuplicateFinder.note` says so in one line, and that tracks of different settings were
not compared with each other.
"""
from __future__ import annotations

import itertools
import logging
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from actors.config import DSPConfig
from actors.fingerprint import DECIMATE
from pipeline.config import IdentifyConfig
from pipeline.search.index import FingerprintIndex, counted
from pipeline.search.score import contrast, verify_codes, window_scores
from pipeline.search.settings import group_by_settings
from pipeline.store import TrackPath

__all__ = ["AGREE_SHARE", "AGREE_WINDOW", "AGREE_WINDOW_SCORE", "LOOKUP_POSTINGS", "MIN_COVERAGE",
           "MIN_COVER_LONGER", "MIN_COVER_SHORTER",
           "RAY_MIN_TRACKS", "TRACKS_PER_TASK", "VERIFY_PER_TRACK", "DuplicateFinder", "DuplicateGroup",
           "agrees_throughout", "find_duplicates"]

log = logging.getLogger(__name__)

#: ``find(workers="auto")`` compares on Ray from this many searched tracks on.
RAY_MIN_TRACKS = 20_000
#: Tracks per Ray task (a key range).
TRACKS_PER_TASK = 2_000
#: Postings one track's lookup reads, about: beyond it every s-th code is looked up (see
#: DuplicateFinder._edges_of); whole-track lookups in a library of 10^5 tracks would otherwise
#: read ~250 postings per code. A weak copy (a few % of its codes intact) can then fall below the
#: 20 votes a candidate needs.
LOOKUP_POSTINGS = 100_000
#: Candidates verified per track: the best voted whose aligned overlap could make a duplicate and
#: whose coverage (share of the looked-up codes inside the overlap that vote for it) is at least
#: MIN_COVERAGE (copies of the same recording: 0.03 for Ogg at other STFT settings, similarity
#: 0.79, to 0.97 for MP3 128k).
VERIFY_PER_TRACK = 8
MIN_COVERAGE = 0.02
#: A duplicate pair's aligned overlap covers at least these shares of the shorter and the longer track.
MIN_COVER_SHORTER = 0.8
MIN_COVER_LONGER = 0.5
#: Agreement along the overlap (:func:`agrees_throughout`): windows of ≤ ≈5 s, each clearly better
#: than chance (0.5; a duplicate pair's whole-overlap score is <= 0.202), nearly all of them.
AGREE_WINDOW = 54
AGREE_WINDOW_SCORE = 0.35
AGREE_SHARE = 0.9


@dataclass
class DuplicateGroup:
    members: list[dict[str, Any]] = field(default_factory=list)  # content_hash, paths, offset_s, similarity
    similarity: float = 0.0  # weakest link of the group (1 - score/0.5)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class DuplicateFinder:
    """The index and its settings groups; :meth:`find` groups the same recordings.

    ``config``: thresholds (default ``IdentifyConfig()``). ``dsp``: analysis settings assumed for
    indexed tracks whose settings the database does not record (default: those tracks are
    skipped, see :attr:`skipped`), as for :class:`pipeline.search.identify.Identifier`.
    """

    def __init__(self, engine: Engine, *, config: IdentifyConfig | None = None, dsp: DSPConfig | None = None):
        self.engine = engine
        self.config = config or IdentifyConfig()
        self.dsp = dsp
        self.index = FingerprintIndex.open(engine)
        self.settings = group_by_settings(engine, self.index, dsp)
        #: Of the last :meth:`find`: tracks compared, "driver" or "ray", seconds the comparison took.
        self.timing: dict[str, Any] = {}

    @property
    def skipped(self) -> dict[str, str]:
        """Indexed tracks not searched (content hash -> reason), the same as identify's."""
        return self.settings.skipped

    @property
    def note(self) -> str | None:
        """One line: the tracks not searched and why, and that tracks of different analysis
        settings are not compared with each other (None: every track is compared with every other)."""
        parts = [self.settings.skipped_note] if self.settings.skipped_note else []
        groups = self.settings.groups
        if len(groups) > 1:
            sizes = ", ".join(str(len(keys)) for _, keys in groups)
            parts.append(f"the library holds tracks of {len(groups)} analysis settings ({sizes} tracks): tracks "
                         "are compared only with tracks of the same settings")
        return "; ".join(parts) or None

    def find(self, *, max_score: float | None = None, min_overlap_s: float | None = None,
             workers: str = "auto") -> list[DuplicateGroup]:
        """Groups of searched tracks that are the same recording (see module doc).

        ``max_score`` and ``min_overlap_s`` override ``config.duplicate_score`` and
        ``config.min_duplicate_overlap_s``. Identical files (one content hash at several paths)
        form a group too, with similarity 1. ``workers``: "driver" compares in this process,
        "ray" in Ray tasks over ranges of tracks (each reads the memory-mapped index), "auto" (the
        default) on Ray from :data:`RAY_MIN_TRACKS` tracks on; the groups are the same.
        :attr:`timing` then says how long the comparison took, and where.
        """
        if workers not in ("auto", "driver", "ray"):
            raise ValueError(f"workers must be 'auto', 'driver' or 'ray', got {workers!r}")
        cfg = self.config
        max_score = cfg.duplicate_score if max_score is None else max_score
        min_overlap_s = cfg.min_duplicate_overlap_s if min_overlap_s is None else min_overlap_s
        idx = self.index
        keys = sorted(k for _, group in self.settings.groups for k in group)
        t0 = time.perf_counter()
        use_ray = workers == "ray" or (workers == "auto" and len(keys) >= RAY_MIN_TRACKS)
        # (a, b, similarity, offset of b in a, s), sorted: the same edges in the same order however found.
        found = self._edges_on_ray(max_score, min_overlap_s) if use_ray else None
        use_ray = found is not None
        if found is None:
            found = self.edges(list(range(len(self.settings.groups))), None, max_score, min_overlap_s)
        edges = sorted(found)
        self.timing = {"tracks": len(keys), "workers": "ray" if use_ray else "driver",
                       "edges_s": round(time.perf_counter() - t0, 3)}
        # Union-find over edges.
        parent = {k: k for k in keys}

        def root_of(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for a, b, _, _ in edges:
            ra, rb = root_of(a), root_of(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        # Per group: members, edges (linear in tracks + edges, whatever the library size).
        members_of: dict[int, list[int]] = {}
        edges_of: dict[int, list[tuple[int, int, float, float]]] = {}
        for e in edges:
            edges_of.setdefault(root_of(e[0]), []).append(e)
        for k in keys:
            r = root_of(k)
            if r in edges_of:
                members_of.setdefault(r, []).append(k)
        with Session(self.engine) as s:
            all_paths: dict[str, list[str]] = {}
            for p, h in s.execute(select(TrackPath.path, TrackPath.content_hash)):
                all_paths.setdefault(h, []).append(p)
        out: list[DuplicateGroup] = []
        for root in sorted(edges_of):
            members = sorted(members_of[root])
            group_edges = edges_of[root]
            # offset_s of a member: its time (s) at which the group's first member starts (an edge
            # (a, b, o) says t_b = t_a + o).
            offs = {root: 0.0}
            changed = True
            while changed:
                changed = False
                for a, b, _, o in group_edges:
                    if a in offs and b not in offs:
                        offs[b] = offs[a] + o
                        changed = True
                    elif b in offs and a not in offs:
                        offs[a] = offs[b] - o
                        changed = True
            best_sim: dict[int, float] = {}
            for a, b, sim, _ in group_edges:
                best_sim[a] = max(best_sim.get(a, 0.0), sim)
                best_sim[b] = max(best_sim.get(b, 0.0), sim)
            g = DuplicateGroup(similarity=round(min(e[2] for e in group_edges), 4))
            for m in members:
                h = idx.tracks[m].content_hash
                g.members.append({"content_hash": h, "paths": sorted(all_paths.get(h, [])),
                                  "offset_s": round(offs.get(m, 0.0), 3), "similarity": round(best_sim.get(m, 1.0), 4)})
            out.append(g)
        # Identical content at several paths (searched tracks only, like every other group).
        grouped = {m["content_hash"] for g in out for m in g.members}
        searched = {idx.tracks[k].content_hash for k in keys}
        for h, ps in sorted(all_paths.items()):
            if len(ps) > 1 and h not in grouped and h in searched:
                out.append(DuplicateGroup(members=[{"content_hash": h, "paths": sorted(ps), "offset_s": 0.0,
                                                    "similarity": 1.0}], similarity=1.0))
        return out

    def edges(self, groups: list[int], keys: tuple[int, int] | None, max_score: float,
              min_overlap_s: float) -> list[tuple[int, int, float, float]]:
        """Verified pairs (a, b > a, similarity, offset of b in a, s) of the settings groups
        ``groups`` (indices into ``settings.groups``) whose first track ``a`` has a key in
        ``keys`` = [lo, hi) (None: all)."""
        edges: list[tuple[int, int, float, float]] = []
        for g in groups:
            group = self.settings.groups[g][1]
            live = self.index.mask(group)
            mine = [a for a in group if keys is None or keys[0] <= a < keys[1]]
            for i in range(0, len(mine), 256):
                self.index.prefetch(mine[i: i + 256])
                for a in mine[i: i + 256]:
                    edges.extend(self._edges_of(a, live, max_score, min_overlap_s))
        return edges

    def _edges_on_ray(self, max_score: float, min_overlap_s: float) -> list[tuple[int, int, float, float]] | None:
        """:meth:`edges` in Ray tasks over key ranges of about :data:`TRACKS_PER_TASK` tracks, each
        opening the database read-only and the memory-mapped index itself; pinned to this node,
        which holds the files. None when this node has no CPU for Ray tasks (a cluster head)."""
        import ray

        from pipeline.runtime import here_if_it_has_cpus, ray_session
        from pipeline.search.index import db_path

        keys = sorted(k for _, group in self.settings.groups for k in group)
        cuts = [*keys[::TRACKS_PER_TASK], keys[-1] + 1] if keys else []
        with ray_session():
            here = here_if_it_has_cpus()
            if here is None:
                log.warning("no CPU for Ray tasks on this node: comparing tracks in this process")
                return None
            task = ray.remote(_edges_task).options(num_cpus=1, scheduling_strategy=here)
            args = (str(db_path(self.engine)), self.config, self.dsp, max_score, min_overlap_s)
            parts = ray.get([task.remote(*args, (lo, hi)) for lo, hi in itertools.pairwise(cuts)])
        return [e for part in parts for e in part]

    def _edges_of(self, a: int, live: np.ndarray, max_score: float,
                  min_overlap_s: float) -> list[tuple[int, int, float, float]]:
        """Verified duplicate pairs (a, b > a, similarity, offset of b in a, s) among ``live``."""
        idx, cfg = self.index, self.config
        ca = idx.track_codes(a)
        if len(ca) == 0:
            return []
        # Codes shared with many tracks would make a's lookup read ~250 postings per code at 10^5
        # tracks. Beyond LOOKUP_POSTINGS, every s-th code is looked up (spread along the track:
        # a copy of the recording keeps its votes in proportion, while the budget's rarest-first
        # choice would gather them in one passage, which hundreds of tracks may share verbatim).
        uniq, inv = np.unique(ca, return_inverse=True)
        total = sum((hi - lo for lo, hi in idx.ranges(uniq)), np.zeros(len(uniq), dtype=np.int64))
        cost = int(np.minimum(total, idx.stop_postings + 1)[inv].sum())
        step = max(1, -(-cost // LOOKUP_POSTINGS))
        pos = np.arange(0, len(ca), step)
        qi, kb, fb = idx.lookup(ca[pos], live, max_postings=2 * LOOKUP_POSTINGS)
        qi = pos[qi]
        # The codes of a that were looked up (not stop-listed, within the budget): each finds a itself.
        looked = counted(qi[kb == a])[0]
        other = kb > a  # each pair once
        if not other.any():
            return []
        edges: list[tuple[int, int, float, float]] = []
        qi, kb, fb = qi[other], kb[other].astype(np.int64), fb[other].astype(np.int64)
        d = fb - qi  # b's code index - a's code index
        span = np.int64(1 << 24)
        cells, counts_a = counted(kb * span + d + span // 2)
        rate_a = idx.tracks[a].frame_rate_hz / DECIMATE
        # Strong cells only: at least 5 % of a's looked-up codes or 20 codes vote for the same alignment.
        strong = np.flatnonzero(counts_a >= max(20, min(0.05 * len(looked), 200)))
        if len(strong) == 0:
            return []
        bs = (cells[strong] // span).astype(np.int64)
        ds = cells[strong] % span - span // 2
        # Coverage: the share of a's looked-up codes inside the aligned overlap that voted. A copy of
        # the same recording agrees along the whole overlap, a track sharing a passage (an intro, a
        # sample) along that passage only.
        n_b = np.array([idx.tracks[int(b)].n_codes for b in bs], dtype=np.int64)
        inside = np.searchsorted(looked, n_b - ds) - np.searchsorted(looked, -ds)
        cover = counts_a[strong] / np.maximum(1, inside)
        # Alignments whose overlap is too short for a duplicate (see below) are not verified: in a
        # large library many tracks share a passage with a at their ends, fully covered.
        overlap = np.minimum(len(ca), n_b - ds) - np.maximum(0, -ds)
        short_n, long_n = np.minimum(len(ca), n_b), np.maximum(len(ca), n_b)
        long_enough = overlap >= np.maximum(np.maximum(MIN_COVER_SHORTER * short_n, MIN_COVER_LONGER * long_n),
                                            np.minimum(min_overlap_s * rate_a, short_n))
        # Most votes first (a copy of a's recording holds most of its looked-up codes; a track
        # sharing a passage, those inside it only), at least MIN_COVERAGE of the codes inside.
        order = np.argsort(-counts_a[strong], kind="stable")
        picked: list[tuple[int, int]] = []
        for i in order:
            b = int(bs[i])
            if len(picked) >= VERIFY_PER_TRACK:
                break
            if cover[i] < MIN_COVERAGE or not long_enough[i]:
                continue
            if all(b != pb for pb, _ in picked):
                picked.append((b, int(ds[i])))
        idx.prefetch(b for b, _ in picked)
        for b, off in picked:
            cb = idx.track_codes(b)
            best = (1.0, 0, off)
            for dd in range(off - 1, off + 2):
                v = verify_codes(ca, cb, dd)
                if v.n and v.score < best[0]:
                    best = (v.score, v.n, dd)
            score, n, dd = best
            shorter = min(len(ca), len(cb))
            # The overlap covers most of the shorter track (a trimmed or padded copy is covered
            # whole), half the longer one and lasts min_overlap_s (or the whole of a shorter
            # track): two tracks whose ends hold the same passage overlap there only, identically,
            # and a short track inside a long one (a jingle in a medley, a preview) is a part of it.
            longer = max(len(ca), len(cb))
            if score <= max_score and n >= max(MIN_COVER_SHORTER * shorter, MIN_COVER_LONGER * longer,
                                               min(min_overlap_s * rate_a, shorter)) \
                    and contrast(ca, cb, dd, shifts=cfg.contrast_shifts,
                                 min_codes=cfg.min_aligned_codes) >= cfg.min_alignment_contrast \
                    and agrees_throughout(ca, cb, dd):
                edges.append((a, b, 1.0 - score / 0.5, dd / rate_a))
        return edges


def agrees_throughout(a: np.ndarray, b: np.ndarray, d: int) -> bool:
    """Whether codes ``a`` and ``b`` (``b[i + d]`` aligned to ``a[i]``) agree along their whole
    overlap: at least :data:`AGREE_SHARE` of its windows of :data:`AGREE_WINDOW` codes (a tenth
    of a shorter overlap) score at
    most :data:`AGREE_WINDOW_SCORE`. A copy of the same recording agrees everywhere; two tracks
    that share a long intro (or a sample, a quoted passage) agree along that part only, which a
    low score over a short overlap would otherwise let through."""
    lo = max(0, -d)
    hi = min(len(a), len(b) - d)
    # At least 10 windows over a short overlap (16 codes at the least, ≈1.5 s).
    w = window_scores(a[lo:hi], b, d + lo, window=int(np.clip((hi - lo) // 10, 16, AGREE_WINDOW)))
    return len(w) == 0 or float(np.mean(w <= AGREE_WINDOW_SCORE)) >= AGREE_SHARE


def _edges_task(db: str, config: IdentifyConfig, dsp: DSPConfig | None, max_score: float, min_overlap_s: float,
                keys: tuple[int, int]) -> list[tuple[int, int, float, float]]:
    """Ray task of :meth:`DuplicateFinder._edges_on_ray`: the edges of the tracks with keys in
    [lo, hi), from a read-only engine of its own."""
    from pipeline.store import open_db

    engine = open_db(db, readonly=True)
    try:
        finder = DuplicateFinder(engine, config=config, dsp=dsp)
        return finder.edges(list(range(len(finder.settings.groups))), keys, max_score, min_overlap_s)
    finally:
        engine.dispose()


def find_duplicates(engine: Engine, *, config: IdentifyConfig | None = None, max_score: float | None = None,
                    min_overlap_s: float | None = None, dsp: DSPConfig | None = None) -> list[DuplicateGroup]:
    """Python API of `chromaray duplicates` (:meth:`DuplicateFinder.find`); its note (skipped
    tracks, settings not compared) is reported as a warning."""
    finder = DuplicateFinder(engine, config=config, dsp=dsp)
    if finder.note:
        warnings.warn(finder.note, stacklevel=2)
    return finder.find(max_score=max_score, min_overlap_s=min_overlap_s)
