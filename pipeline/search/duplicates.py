"""Which tracks of the library are the same recording.

Every indexed track is looked up as a query (its stored codes, on the same code grid) and
pairs that verify (pipeline.search.score) at score <= ``duplicate_score`` over an overlap of at
least ``min_duplicate_overlap_s`` (or 80 % of the shorter track) and align clearly better than
they mis-align (``min_alignment_contrast``) are joined into groups (union-find); thresholds are
fields of :class:`pipeline.config.IdentifyConfig` (calibration: pipeline.search.identify).
Offsets come out of the votes, so trimmed or padded copies align; gain and codecs do not change
the codes much (see actors.fingerprint).

Tracks are grouped by their stored analysis settings exactly as identify groups them
(pipeline.search.settings) and compared within their group only: codes of other settings
cannot align. Tracks identify skips (unknown settings, stale index rows) are skipped here too;
:attr:`DuplicateFinder.note` says so in one line, and that tracks of different settings were
not compared with each other.
"""
from __future__ import annotations

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
from pipeline.search.index import FingerprintIndex
from pipeline.search.score import contrast, verify_codes
from pipeline.search.settings import group_by_settings
from pipeline.store import TrackPath

__all__ = ["DuplicateFinder", "DuplicateGroup", "find_duplicates"]


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
        self.index = FingerprintIndex.open(engine)
        self.settings = group_by_settings(engine, self.index, dsp)

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

    def find(self, *, max_score: float | None = None, min_overlap_s: float | None = None) -> list[DuplicateGroup]:
        """Groups of searched tracks that are the same recording (see module doc).

        ``max_score`` and ``min_overlap_s`` override ``config.duplicate_score`` and
        ``config.min_duplicate_overlap_s``. Identical files (one content hash at several paths)
        form a group too, with similarity 1.
        """
        cfg = self.config
        max_score = cfg.duplicate_score if max_score is None else max_score
        min_overlap_s = cfg.min_duplicate_overlap_s if min_overlap_s is None else min_overlap_s
        idx = self.index
        keys = sorted(k for _, group in self.settings.groups for k in group)
        edges: list[tuple[int, int, float, float]] = []  # (a, b, similarity, offset of b in a, s)
        for _, group in self.settings.groups:
            live = idx.mask(group)
            for a in group:
                edges.extend(self._edges_of(a, live, max_score, min_overlap_s))
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

    def _edges_of(self, a: int, live: np.ndarray, max_score: float,
                  min_overlap_s: float) -> list[tuple[int, int, float, float]]:
        """Verified duplicate pairs (a, b > a, similarity, offset of b in a, s) among ``live``."""
        idx, cfg = self.index, self.config
        ca = idx.track_codes(a)
        if len(ca) == 0:
            return []
        qi, kb, fb = idx.lookup(ca, live)
        other = kb > a  # each pair once
        if not other.any():
            return []
        edges: list[tuple[int, int, float, float]] = []
        qi, kb, fb = qi[other], kb[other].astype(np.int64), fb[other].astype(np.int64)
        d = fb - qi  # b's code index - a's code index
        span = np.int64(1 << 24)
        cells, counts = np.unique(kb * span + d + span // 2, return_counts=True)
        rate_a = idx.tracks[a].frame_rate_hz / DECIMATE
        # Strong cells only: at least 5 % of a's codes or 20 codes vote for the same alignment.
        strong = counts >= max(20, min(0.05 * len(ca), 200))
        seen: set[int] = set()
        for cell in cells[strong][np.argsort(-counts[strong], kind="stable")]:
            b = int(cell // span)
            if b in seen:
                continue
            seen.add(b)
            off = int(cell % span - span // 2)
            cb = idx.track_codes(b)
            best = (1.0, 0, off)
            for dd in range(off - 1, off + 2):
                v = verify_codes(ca, cb, dd)
                if v.n and v.score < best[0]:
                    best = (v.score, v.n, dd)
            score, n, dd = best
            shorter = min(len(ca), len(cb))
            if score <= max_score and (n >= min_overlap_s * rate_a or n >= 0.8 * shorter) \
                    and contrast(ca, cb, dd, shifts=cfg.contrast_shifts,
                                 min_codes=cfg.min_aligned_codes) >= cfg.min_alignment_contrast:
                edges.append((a, b, 1.0 - score / 0.5, dd / rate_a))
        return edges


def find_duplicates(engine: Engine, *, config: IdentifyConfig | None = None, max_score: float | None = None,
                    min_overlap_s: float | None = None, dsp: DSPConfig | None = None) -> list[DuplicateGroup]:
    """Python API of `chromaray duplicates` (:meth:`DuplicateFinder.find`); its note (skipped
    tracks, settings not compared) is reported as a warning."""
    finder = DuplicateFinder(engine, config=config, dsp=dsp)
    if finder.note:
        warnings.warn(finder.note, stacklevel=2)
    return finder.find(max_score=max_score, min_overlap_s=min_overlap_s)
