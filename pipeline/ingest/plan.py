"""What a fingerprint run must do: which contents are new, which paths moved, which
failed before (driver side, reads the database only)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.config import ChromarayConfig
from pipeline.ingest.discover import ManifestRow, input_root
from pipeline.store import ErrorRow, Track, TrackPath

__all__ = ["WorkPlan", "apply_path_changes", "plan_work", "versions_for"]


def versions_for(cfg: ChromarayConfig) -> dict[str, str]:
    """Stored rows of another version are recomputed, never mixed."""
    from actors.fingerprint import FP_VERSION
    from actors.midi.analysis import midi_features_version

    return {"audio": f"{cfg.dsp.version()}+{FP_VERSION}", "midi": midi_features_version(cfg.dsp.frame_rate_hz)}


@dataclass
class WorkPlan:
    to_process: list[ManifestRow]  # one path per new content
    paths_by_hash: dict[str, list[tuple[str, int, int]]]
    path_updates: list[ManifestRow]  # known content at a path not yet recorded for it
    stale_paths: list[str]  # recorded under the scanned roots, gone now
    read_errors: list[ManifestRow]
    # (path, content hash) error rows under the scanned roots that no longer describe the path: the
    # file is gone, or the path holds other content now (whose own outcome this run records).
    cleared_errors: list[tuple[str, str]]
    copied_errors: list[tuple[ManifestRow, str, str]]  # (row, stage, reason) of known-bad content at a new path
    skipped: int
    known_errors: int


def plan_work(engine: Engine, manifest: Sequence[ManifestRow], roots: Sequence[str], versions: dict[str, str],
              *, retry_errors: bool = False, skipped_paths: Sequence[str] = ()) -> WorkPlan:
    with Session(engine) as s:
        current = {h: (k, v) for h, k, v in s.execute(select(Track.content_hash, Track.kind, Track.features_version))}
        recorded = dict(s.execute(select(TrackPath.path, TrackPath.content_hash)).all())
        failed = {h: (stage, reason) for h, stage, reason, v in s.execute(
            select(ErrorRow.content_hash, ErrorRow.stage, ErrorRow.reason, ErrorRow.features_version))
            if v == versions["audio"] and h}
        error_rows = list(s.execute(select(ErrorRow.path, ErrorRow.content_hash)).tuples())
    error_keys = set(error_rows)
    paths_by_hash: dict[str, list[tuple[str, int, int]]] = {}
    to_process: dict[str, ManifestRow] = {}
    path_updates, read_errors, copied_errors = [], [], []
    skipped = known_errors = 0
    for row in manifest:
        if not row.content_hash:
            read_errors.append(row)
            continue
        paths_by_hash.setdefault(row.content_hash, []).append((row.path, row.size_bytes, row.mtime_ns))
        done = current.get(row.content_hash)
        if done is not None and done[1] == versions[done[0]]:
            if recorded.get(row.path) != row.content_hash:
                path_updates.append(row)
            skipped += 1
        elif not retry_errors and row.content_hash in failed:
            known_errors += 1  # same bytes failed before: same error, at this path too
            if (row.path, row.content_hash) not in error_keys:
                copied_errors.append((row, *failed[row.content_hash]))
        elif row.content_hash not in to_process:
            to_process[row.content_hash] = row
        else:
            skipped += 1  # byte-identical copy: computed once, recorded at both paths
    seen = {r.path for r in manifest}
    roots_abs = [input_root(r) for r in roots]

    def under_roots(p: str) -> bool:
        return any(p == r or p.startswith(r.rstrip(os.sep) + os.sep) for r in roots_abs)

    stale = [p for p in recorded if p not in seen and under_roots(p)]
    holds = {r.path: r.content_hash or "" for r in manifest} | dict.fromkeys(skipped_paths, "")
    cleared = sorted((p, h) for p, h in error_rows if under_roots(p) and holds.get(p) != h)
    return WorkPlan(list(to_process.values()), paths_by_hash, path_updates, stale, read_errors, cleared,
                    copied_errors, skipped, known_errors)


def apply_path_changes(engine: Engine, plan: WorkPlan, run_id: str) -> None:
    with Session(engine) as s, s.begin():
        if plan.stale_paths:
            s.execute(delete(TrackPath).where(TrackPath.path.in_(plan.stale_paths)))
        for path, content_hash in plan.cleared_errors:
            s.execute(delete(ErrorRow).where(ErrorRow.path == path, ErrorRow.content_hash == content_hash))
        for row in plan.path_updates:
            stmt = insert(TrackPath).values(path=row.path, content_hash=row.content_hash, size_bytes=row.size_bytes,
                                            mtime_ns=row.mtime_ns, last_seen_run=run_id)
            s.execute(stmt.on_conflict_do_update(index_elements=["path"], set_={
                "content_hash": row.content_hash, "size_bytes": row.size_bytes, "mtime_ns": row.mtime_ns,
                "last_seen_run": run_id}))
