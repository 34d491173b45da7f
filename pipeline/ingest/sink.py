"""The single SQLite writer: commits the receipts the workers send back.

Workers write the bulky Parquet parts themselves (actors.results, under
``--out``) and return one small receipt per call: the parts' names and row
counts, one summary per track, error rows. Here each receipt becomes one
SQLite transaction that lists its parts and inserts its tracks' rows (a
two-phase commit). A crash between a worker's write and this commit leaves
parts no row lists (removed by the next run, or at the end of this one) and no
rows (recomputed next run), so nothing is lost and nothing is duplicated.

The driver keeps nothing per track beyond the run's plan: counts, and the error
rows it prints in the summary.

The DSP settings of each features version written are stored in the same
transaction as its first rows (table analysis_settings), and every stored rate is
the track's own: readers analyse their queries exactly like the library.
"""
from __future__ import annotations

import json
import pickle
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from sqlalchemy import delete, select
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from actors.config import DSPConfig
from actors.results import Finished, FrameRow, frames_table, midi_tables, part_name, receipt_row, write_parts
from pipeline.store import (
    BatchLog,
    ErrorRow,
    Feature,
    Fingerprint,
    ParquetPart,
    Run,
    Track,
    TrackPath,
    record_settings,
    utcnow,
)

__all__ = ["Finished", "FrameRow", "ResultSink", "SinkCounts", "frames_table", "midi_tables"]


@dataclass
class SinkCounts:
    done: int = 0
    errors: int = 0
    audio_seconds: float = 0.0
    error_rows: list[tuple[str, str, str]] = field(default_factory=list)  # (path, stage, reason)


class ResultSink:
    def __init__(self, engine: Engine, out_dir: Path, run_id: str, *, dsp: DSPConfig,
                 versions: Mapping[str, str], paths_by_hash: Mapping[str, list[tuple[str, int, int]]],
                 rows_per_part: int = 64, metrics: Any = None):
        self.engine, self.out_dir, self.run_id, self.dsp = engine, Path(out_dir), run_id, dsp
        self.versions = dict(versions)
        self.paths_by_hash = paths_by_hash
        self.rows_per_part = rows_per_part
        self.metrics = metrics
        self.counts = SinkCounts()
        self._ready: list[Finished] = []  # in-process tracks (store) waiting for a part
        self._errors: list[dict[str, Any]] = []  # driver-side error rows waiting for the next commit
        self._recent: deque[dict[str, Any]] = deque(maxlen=20)
        self._settings_recorded: set[str] = set()

    # -- intake ---------------------------------------------------------
    def add_receipts(self, table: pa.Table) -> None:
        """Commit worker receipts (actors.results.RECEIPT_SCHEMA rows), one transaction each."""
        receipts = table.column("receipt").to_pylist()
        codes = table.column("codes").to_pylist()
        for text, blob in zip(receipts, codes):
            self._commit(json.loads(text), blob or b"")

    def store(self, finished: Sequence[Finished]) -> None:
        """Store tracks computed in this process (no Ray): parts written here, then committed
        exactly like a worker's receipt, ``rows_per_part`` tracks per part."""
        self._ready.extend(finished)
        while len(self._ready) >= self.rows_per_part:
            chunk, self._ready = self._ready[:self.rows_per_part], self._ready[self.rows_per_part:]
            self._store_now(chunk)

    def add(self, table: pa.Table) -> None:
        """In-process rows (actors.stages.ROW_SCHEMA: whole audio tracks, MIDI analyses) -> :meth:`store`."""
        finished = []
        for row in table.to_pylist():
            meta = json.loads(row["meta"] or "{}")
            result = pickle.loads(row["payload"])  # trusted: made by the caller in this process
            finished.append(Finished(row["content_hash"], row["kind"], row["path"], int(row["size_bytes"]), meta,
                                     result))
        self.store(finished)

    def _store_now(self, ready: list[Finished]) -> None:
        parts = write_parts(self.out_dir, part_name(self.run_id), ready, self.versions, self.dsp.sample_rate)
        row = receipt_row(worker="driver", parts=parts, ready=ready, errors=[], batches=[], versions=self.versions,
                          sample_rate=self.dsp.sample_rate)
        self._commit(json.loads(row["receipt"]), row["codes"])

    def error(self, path: str, content_hash: str, stage: str, reason: str, *, counted: bool = True) -> None:
        """Record a failed file, and every other path holding the same bytes (committed with the
        next receipt, or by :meth:`flush`)."""
        paths = {p for p, _, _ in self.paths_by_hash.get(content_hash, [])} if content_hash else set()
        for p in sorted(paths | {path}):
            self._errors.append({"path": p, "content_hash": content_hash or "", "stage": stage, "reason": reason})
        if not counted:
            return
        self.counts.errors += 1
        self.counts.error_rows.append((path, stage, reason))
        if self.metrics is not None:
            self.metrics.error(stage)

    @property
    def done_so_far(self) -> int:
        """Tracks committed (or, in process, waiting for their part)."""
        return self.counts.done + len(self._ready)

    @property
    def recent_batches(self) -> list[dict[str, Any]]:
        return list(self._recent)

    # -- output ---------------------------------------------------------
    def flush(self) -> None:
        """Commit what waits: in-process tracks and driver-side error rows."""
        if self._ready:
            ready, self._ready = self._ready, []
            self._store_now(ready)
        if self._errors:
            self._commit({"parts": [], "tracks": [], "errors": [], "batches": []}, b"")

    def _commit(self, receipt: dict[str, Any], blob: bytes) -> None:
        worker = str(receipt.get("worker", "?"))
        for e in receipt.get("errors", []):
            self.error(e["path"], e["content_hash"], e["stage"], e["reason"])
        tracks = receipt.get("tracks", [])
        parts = [tuple(p) for p in receipt.get("parts", [])]
        batches = [dict(b, actor=worker) for b in receipt.get("batches", [])]
        errors, self._errors = self._errors, []
        if not (tracks or parts or errors or batches):
            return
        codes = np.frombuffer(blob, dtype="<u4")
        unrecorded = sorted({t["kind"] for t in tracks if t["features_version"] not in self._settings_recorded})
        with Session(self.engine) as s, s.begin():
            for kind in unrecorded:
                # A MIDI version depends on the frame rate alone: any run's settings of that rate describe it.
                record_settings(s, self.versions[kind], kind, self.dsp)
            for rel, dataset, n in parts:
                s.add(ParquetPart(name=rel, dataset=dataset, run_id=self.run_id, n_rows=int(n)))
            frames_part = next((rel for rel, ds, _ in parts if ds == "frames"), None)
            for t in tracks:
                self._store_track(s, t, codes, frames_part)
            for e in errors:
                self._store_error(s, e)
            for rec in batches:
                s.add(BatchLog(run_id=self.run_id, actor=str(rec.get("actor", "?"))[:64],
                               device=str(rec.get("device", "cpu"))[:16], n_tracks=int(rec.get("n_tracks", 0)),
                               audio_seconds=float(rec.get("audio_seconds", 0.0)),
                               oom_splits=int(rec.get("oom_splits", 0)), time_chunked=int(rec.get("time_chunked", 0)),
                               budget_bytes=int(rec.get("budget_bytes", 0)), peak_bytes=int(rec.get("peak_bytes", 0))))
            run = s.get(Run, self.run_id)
            if run is not None:
                run.n_done += len(tracks)
                run.n_errors += len(errors)
                run.audio_seconds += sum(float(t["duration_s"]) for t in tracks if t["kind"] == "audio")
                run.updated_at = utcnow()
        self._settings_recorded.update(self.versions[k] for k in unrecorded)
        for rec in batches:
            self._recent.append(rec)
            if self.metrics is not None:
                self.metrics.batch(worker, int(rec.get("n_tracks", 0)), int(rec.get("peak_bytes", 0)))
        for t in tracks:
            self.counts.done += 1
            if t["kind"] == "audio":
                self.counts.audio_seconds += float(t["duration_s"])
            if self.metrics is not None:
                self.metrics.track_done(float(t["duration_s"]) if t["kind"] == "audio" else 0.0)

    def _store_track(self, s: Session, t: dict[str, Any], codes: np.ndarray, frames_part: str | None) -> None:
        h = t["content_hash"]
        old = s.scalar(select(Track).where(Track.content_hash == h))
        if old is not None:  # stale version: replace, never mix
            s.execute(delete(Fingerprint).where(Fingerprint.content_hash == h))
            s.execute(delete(Feature).where(Feature.content_hash == h))
            s.delete(old)
            s.flush()
        s.add(Track(content_hash=h, kind=t["kind"], format=str(t["format"])[:16], size_bytes=int(t["size_bytes"]),
                    duration_s=float(t["duration_s"]), source_sample_rate=t["source_sample_rate"],
                    channels=t["channels"], n_frames=int(t["n_frames"]), features_version=t["features_version"],
                    parquet_part=frames_part, run_id=self.run_id))
        s.flush()
        f = t["feature"]
        s.add(Feature(content_hash=h, frame_rate_hz=f["frame_rate_hz"], tempo_bpm=f["tempo_bpm"],
                      onset_mean=f["onset_mean"], onset_std=f["onset_std"], harmonic_ratio=f["harmonic_ratio"],
                      rms_mean=f["rms_mean"], chroma_mean=f["chroma_mean"], key_estimate=f["key_estimate"],
                      extra=f["extra"]))
        fp = t.get("fp")
        if fp is not None:
            c = codes[fp["offset"]:fp["offset"] + fp["n_codes"]]
            s.add(Fingerprint(content_hash=h, version=fp["version"], frame_rate_hz=fp["frame_rate_hz"],
                              n_codes=int(fp["n_codes"]), codes=c.astype("<u4").tobytes()))
        paths = self.paths_by_hash.get(h, [(t["path"], int(t["size_bytes"]), 0)])
        for path, size, mtime in paths:
            stmt = insert(TrackPath).values(path=path, content_hash=h, size_bytes=size, mtime_ns=mtime,
                                            last_seen_run=self.run_id)
            s.execute(stmt.on_conflict_do_update(index_elements=["path"], set_={
                "content_hash": h, "size_bytes": size, "mtime_ns": mtime, "last_seen_run": self.run_id}))
        # Content that failed before and now works has no error any more, and neither has a path that
        # now holds working content (an earlier unreadable file, a dangling link since fixed).
        s.execute(delete(ErrorRow).where(
            (ErrorRow.content_hash == h) | ErrorRow.path.in_(sorted({p for p, _, _ in paths}))))

    def _store_error(self, s: Session, e: dict[str, Any]) -> None:
        version = self.versions.get("audio", "")
        stmt = insert(ErrorRow).values(path=e["path"], content_hash=e["content_hash"], stage=e["stage"],
                                       reason=e["reason"], run_id=self.run_id, features_version=version)
        s.execute(stmt.on_conflict_do_update(index_elements=["path", "content_hash"], set_={
            "stage": e["stage"], "reason": e["reason"], "run_id": self.run_id, "features_version": version,
            "last_seen": utcnow()}))
