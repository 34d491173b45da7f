"""The single writer: turns finished rows into Parquet parts and SQLite rows.

Only the driver writes. A track is committed once, when all of its spans
have arrived: Parquet part first (atomic rename), then one SQLite
transaction that lists the part and inserts the track's rows. A crash in
between leaves an unlisted part (removed next run) and no rows (recomputed
next run), so nothing is lost and nothing is duplicated.

The DSP settings of each features version written are stored in the same
transaction as its first rows (table analysis_settings), and every stored rate is
the track's own: readers analyse their queries exactly like the library.
"""
from __future__ import annotations

import json
import pickle
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
from sqlalchemy import delete, select
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from actors.config import DSPConfig
from actors.fingerprint import DECIMATE
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
from pipeline.store.parquet import list_of_matrices, list_of_vectors, write_part

__all__ = ["Finished", "FrameRow", "ResultSink", "SinkCounts", "frames_table", "midi_tables"]


@dataclass
class Finished:
    """One track ready to store."""

    content_hash: str
    kind: str
    path: str
    size_bytes: int
    meta: dict[str, Any]
    result: Any  # audio: {"features", "fp_codes", "fp_version"}; midi: MidiAnalysis


@dataclass
class SinkCounts:
    done: int = 0
    errors: int = 0
    audio_seconds: float = 0.0
    error_rows: list[tuple[str, str, str]] = field(default_factory=list)  # (path, stage, reason)


class ResultSink:
    def __init__(self, engine: Engine, out_dir: Path, run_id: str, *, dsp: DSPConfig,
                 versions: Mapping[str, str], paths_by_hash: Mapping[str, list[tuple[str, int, int]]],
                 rows_per_part: int = 64, flush_interval_s: float = 10.0,
                 on_commit: Callable[[list[Finished]], None] | None = None, metrics: Any = None):
        self.engine, self.out_dir, self.run_id, self.dsp = engine, out_dir, run_id, dsp
        self.versions = dict(versions)
        self.paths_by_hash = paths_by_hash
        self.rows_per_part = rows_per_part
        self.flush_interval_s = flush_interval_s
        self.on_commit = on_commit
        self.metrics = metrics
        self.counts = SinkCounts()
        self._spans: dict[str, dict[int, Any]] = {}
        self._n_spans: dict[str, int] = {}
        self._ready: list[Finished] = []
        self._errors: list[dict[str, Any]] = []
        self._batch_logs: list[dict[str, Any]] = []
        self._recent: deque[dict[str, Any]] = deque(maxlen=20)
        self._seq = 0
        self._extractor: Any = None
        self._last_flush = time.monotonic()
        self._settings_recorded: set[str] = set()

    # -- intake ---------------------------------------------------------
    def add(self, table: pa.Table) -> None:
        for row in table.to_pylist():
            if row["worker_log"]:
                self._take_worker_log(row["worker_log"])
            if row["error_stage"]:
                self.error(row["path"], row["content_hash"], row["error_stage"], row["error_reason"])
                continue
            payload = pickle.loads(row["payload"]) if row["payload"] else None
            meta = json.loads(row["meta"] or "{}")
            if row["kind"] == "midi" or (row["n_spans"] == 1 and "features" in (payload or {})):
                self._finish(row, meta, payload)
            else:
                self._add_span(row, meta, payload)
        if len(self._ready) >= self.rows_per_part or time.monotonic() - self._last_flush > self.flush_interval_s:
            self.flush()

    def _add_span(self, row: dict[str, Any], meta: dict[str, Any], payload: Any) -> None:
        h = row["content_hash"]
        self._spans.setdefault(h, {})[row["span_index"]] = payload["span"]
        if row["n_spans"] > 0:
            self._n_spans[h] = row["n_spans"]
        n = self._n_spans.get(h)
        if n is None or len(self._spans[h]) < n:
            return
        from actors.stages import track_result

        spans = self._spans.pop(h)
        del self._n_spans[h]
        try:
            result = track_result(self._joiner().finalize_track([spans[i] for i in range(n)]), self.dsp)
        except Exception as exc:  # noqa: BLE001 - a per-file boundary, like actors/stages.py: one error row
            self.error(row["path"], h, "features", f"could not join the spans of a long file: {exc}")
            return
        self._finish(row, meta, result)

    def _finish(self, row: dict[str, Any], meta: dict[str, Any], result: Any) -> None:
        self._ready.append(Finished(row["content_hash"], row["kind"], row["path"], row["size_bytes"], meta, result))

    def _joiner(self) -> Any:
        """A CPU extractor on the driver, only to join spans (tempo + summaries: cheap)."""
        if self._extractor is None:
            from actors.config import BatchConfig
            from actors.features import FeatureExtractor

            self._extractor = FeatureExtractor(self.dsp, BatchConfig(device="cpu"))
        return self._extractor

    def error(self, path: str, content_hash: str, stage: str, reason: str, *, counted: bool = True) -> None:
        """Record a failed file, and every other path holding the same bytes."""
        paths = {p for p, _, _ in self.paths_by_hash.get(content_hash, [])} if content_hash else set()
        for p in sorted(paths | {path}):
            self._errors.append({"path": p, "content_hash": content_hash or "", "stage": stage, "reason": reason})
        if not counted:
            return
        self.counts.errors += 1
        self.counts.error_rows.append((path, stage, reason))
        if self.metrics is not None:
            self.metrics.error(stage)

    def _take_worker_log(self, text: str) -> None:
        info = json.loads(text)
        for batch in info.get("batches", []):
            rec = dict(batch, actor=info.get("worker", "?"))
            self._batch_logs.append(rec)
            self._recent.append(rec)
            if self.metrics is not None:
                self.metrics.batch(info.get("worker", "?"), int(rec.get("n_tracks", 0)), int(rec.get("peak_bytes", 0)))

    @property
    def done_so_far(self) -> int:
        """Tracks finished, committed or waiting for the next part."""
        return self.counts.done + len(self._ready)

    @property
    def pending_spans(self) -> int:
        return len(self._spans)

    @property
    def recent_batches(self) -> list[dict[str, Any]]:
        return list(self._recent)

    # -- output ---------------------------------------------------------
    def flush(self) -> None:
        self._last_flush = time.monotonic()
        ready, self._ready = self._ready, []
        errors, self._errors = self._errors, []
        logs, self._batch_logs = self._batch_logs, []
        if not ready and not errors and not logs:
            return
        parts: list[tuple[str, str, int]] = []
        if ready:
            name = f"part-{self.run_id[:12]}-{self._seq:05d}"
            self._seq += 1
            for dataset, table in self._tables(ready).items():
                if table.num_rows:
                    parts.append((write_part(self.out_dir, dataset, name, table), dataset, table.num_rows))
            if any(f.kind == "midi" for f in ready):
                self._write_vocab()
        unrecorded = sorted({f.kind for f in ready if self.versions[f.kind] not in self._settings_recorded})
        with Session(self.engine) as s, s.begin():
            for kind in unrecorded:
                # A MIDI version depends on the frame rate alone: any run's settings of that rate describe it.
                record_settings(s, self.versions[kind], kind, self.dsp)
            for rel, dataset, n in parts:
                s.add(ParquetPart(name=rel, dataset=dataset, run_id=self.run_id, n_rows=n))
            frames_part = next((rel for rel, ds, _ in parts if ds == "frames"), None)
            for f in ready:
                self._store_track(s, f, frames_part)
            for e in errors:
                self._store_error(s, e)
            for rec in logs:
                s.add(BatchLog(run_id=self.run_id, actor=str(rec.get("actor", "?"))[:64],
                               device=str(rec.get("device", "cpu"))[:16], n_tracks=int(rec.get("n_tracks", 0)),
                               audio_seconds=float(rec.get("audio_seconds", 0.0)),
                               oom_splits=int(rec.get("oom_splits", 0)), time_chunked=int(rec.get("time_chunked", 0)),
                               budget_bytes=int(rec.get("budget_bytes", 0)), peak_bytes=int(rec.get("peak_bytes", 0))))
            run = s.get(Run, self.run_id)
            if run is not None:
                run.n_done += len(ready)
                run.n_errors += len(errors)
                run.audio_seconds += sum(self._duration(f) for f in ready if f.kind == "audio")
                run.updated_at = utcnow()
        self._settings_recorded.update(self.versions[k] for k in unrecorded)
        for f in ready:
            self.counts.done += 1
            if f.kind == "audio":
                secs = self._duration(f)
                self.counts.audio_seconds += secs
                if self.metrics is not None:
                    self.metrics.track_done(secs)
        if self.on_commit is not None and ready:
            self.on_commit(ready)

    def _write_vocab(self) -> None:
        """The token vocabulary beside the tokens parts (same tokenizer for every row of a version)."""
        path = self.out_dir / "tokens" / "vocab.json"
        if path.exists():
            return
        from actors.midi.analysis import vocab_json

        tmp = path.with_name(".vocab.json.tmp")
        tmp.write_text(vocab_json())
        tmp.replace(path)

    def _duration(self, f: Finished) -> float:
        if f.kind == "midi":
            return float(f.result.duration_s)
        return float(f.result["features"].n_samples) / self.dsp.sample_rate

    def _store_track(self, s: Session, f: Finished, frames_part: str | None) -> None:
        version = self.versions[f.kind]
        old = s.scalar(select(Track).where(Track.content_hash == f.content_hash))
        if old is not None:  # stale version: replace, never mix
            s.execute(delete(Fingerprint).where(Fingerprint.content_hash == f.content_hash))
            s.execute(delete(Feature).where(Feature.content_hash == f.content_hash))
            s.delete(old)
            s.flush()
        meta = f.meta
        if f.kind == "audio":
            feats = f.result["features"]
            n_frames = int(feats.n_frames)
            s.add(Track(content_hash=f.content_hash, kind="audio", format=str(meta.get("format", ""))[:16],
                        size_bytes=f.size_bytes, duration_s=self._duration(f),
                        source_sample_rate=meta.get("source_sample_rate"), channels=meta.get("channels"),
                        n_frames=n_frames, features_version=version, parquet_part=frames_part, run_id=self.run_id))
            s.flush()
            s.add(Feature(content_hash=f.content_hash, frame_rate_hz=float(feats.frame_rate_hz),
                          tempo_bpm=float(feats.tempo_bpm), onset_mean=float(feats.onset_mean),
                          onset_std=float(feats.onset_std), harmonic_ratio=float(feats.harmonic_ratio),
                          rms_mean=float(feats.rms_mean), chroma_mean=[float(x) for x in feats.chroma_mean],
                          key_estimate=_key_of(feats.chroma_mean)))
            codes = f.result["fp_codes"]
            s.add(Fingerprint(content_hash=f.content_hash, version=f.result["fp_version"],
                              frame_rate_hz=_code_rate(feats), n_codes=int(codes.size), codes=codes.tobytes()))
        else:
            m = f.result
            s.add(Track(content_hash=f.content_hash, kind="midi", format="MIDI", size_bytes=f.size_bytes,
                        duration_s=float(m.duration_s), n_frames=int(m.chroma.shape[-1]), features_version=version,
                        parquet_part=frames_part, run_id=self.run_id))
            s.flush()
            tempo = float(m.tempo_map[0][1]) if m.tempo_map else 120.0
            s.add(Feature(content_hash=f.content_hash, frame_rate_hz=float(m.frame_rate_hz), tempo_bpm=tempo,
                          onset_mean=float(np.mean(m.onset)) if m.onset.size else 0.0,
                          onset_std=float(np.std(m.onset)) if m.onset.size else 0.0, harmonic_ratio=1.0, rms_mean=0.0,
                          chroma_mean=[float(x) for x in (m.chroma.mean(axis=1) if m.chroma.size else np.zeros(12))],
                          key_estimate=m.key, extra=json.loads(json.dumps(m.stats, default=float))))
        for path, size, mtime in self.paths_by_hash.get(f.content_hash, [(f.path, f.size_bytes, 0)]):
            stmt = insert(TrackPath).values(path=path, content_hash=f.content_hash, size_bytes=size, mtime_ns=mtime,
                                            last_seen_run=self.run_id)
            s.execute(stmt.on_conflict_do_update(index_elements=["path"], set_={
                "content_hash": f.content_hash, "size_bytes": size, "mtime_ns": mtime, "last_seen_run": self.run_id}))
        # A file that failed before and now works has no error any more.
        s.execute(delete(ErrorRow).where(ErrorRow.content_hash == f.content_hash))

    def _store_error(self, s: Session, e: dict[str, Any]) -> None:
        version = self.versions.get("audio", "")
        stmt = insert(ErrorRow).values(path=e["path"], content_hash=e["content_hash"], stage=e["stage"],
                                       reason=e["reason"], run_id=self.run_id, features_version=version)
        s.execute(stmt.on_conflict_do_update(index_elements=["path", "content_hash"], set_={
            "stage": e["stage"], "reason": e["reason"], "run_id": self.run_id, "features_version": version,
            "last_seen": utcnow()}))

    def _tables(self, ready: list[Finished]) -> dict[str, pa.Table]:
        audio = [f for f in ready if f.kind == "audio"]
        midi = [f for f in ready if f.kind == "midi"]
        # Each row's own rate: a reader of the frames never assumes the run's (or the default) settings.
        frames = frames_table(
            [FrameRow(f.content_hash, "audio", self.versions["audio"], float(f.result["features"].frame_rate_hz),
                      f.result["features"].chroma, f.result["features"].onset) for f in audio]
            + [FrameRow(f.content_hash, "midi", self.versions["midi"], float(f.result.frame_rate_hz),
                        f.result.chroma, f.result.onset) for f in midi])
        feats = [f.result["features"] for f in audio]
        tracks = pa.table({
            "content_hash": [f.content_hash for f in audio],
            "kind": ["audio"] * len(audio),
            "path": [f.path for f in audio],
            "duration_s": pa.array([self._duration(f) for f in audio], pa.float64()),
            "tempo_bpm": pa.array([float(x.tempo_bpm) for x in feats], pa.float64()),
            "onset_mean": pa.array([float(x.onset_mean) for x in feats], pa.float64()),
            "onset_std": pa.array([float(x.onset_std) for x in feats], pa.float64()),
            "harmonic_ratio": pa.array([float(x.harmonic_ratio) for x in feats], pa.float64()),
            "rms_mean": pa.array([float(x.rms_mean) for x in feats], pa.float64()),
            "chroma_mean": list_of_vectors([np.asarray(x.chroma_mean, np.float32) for x in feats], pa.float32()),
            "key_estimate": [_key_of(x.chroma_mean) for x in feats],
            "features_version": [self.versions["audio"]] * len(audio),
        })
        fps = pa.table({
            "content_hash": [f.content_hash for f in audio],
            "version": [f.result["fp_version"] for f in audio],
            "frame_rate_hz": pa.array([_code_rate(x) for x in feats], pa.float64()),
            "codes": list_of_vectors([f.result["fp_codes"] for f in audio], pa.uint32()),
        })
        out = {"frames": frames, "tracks": tracks, "fingerprints": fps}
        if midi:
            out.update(midi_tables([(f.content_hash, f.result) for f in midi],
                                   features_version=self.versions["midi"]))
        return out


class FrameRow(NamedTuple):
    """One row of the frames dataset: a track's per-frame chroma and onset strength."""

    content_hash: str
    kind: str  # audio | midi
    features_version: str
    frame_rate_hz: float  # the track's own analysis rate
    chroma: np.ndarray  # (12, T)
    onset: np.ndarray  # (T,)


def frames_table(rows: Sequence[FrameRow]) -> pa.Table:
    """The frames dataset (one row per track, chroma stored frame-major) for ``rows``."""
    chroma = [np.asarray(r.chroma, np.float32).T for r in rows]
    return pa.table({
        "content_hash": [r.content_hash for r in rows],
        "kind": [r.kind for r in rows],
        "features_version": [r.features_version for r in rows],
        "frame_rate_hz": pa.array([float(r.frame_rate_hz) for r in rows], pa.float64()),
        "n_frames": pa.array([c.shape[0] for c in chroma], pa.int32()),
        "chroma": list_of_matrices(chroma, 12),
        "onset": list_of_vectors([np.asarray(r.onset, np.float32) for r in rows], pa.float32()),
    })


def midi_tables(items: list[tuple[str, Any]], *, features_version: str) -> dict[str, pa.Table]:
    """The midi_notes and tokens datasets for (content_hash, MidiAnalysis) pairs; every row
    carries ``features_version`` so readers keep only a track's current rows."""
    hashes = [h for h, _ in items]
    notes = [a.notes for _, a in items]
    versions = [features_version] * len(items)
    cols: dict[str, Any] = {"content_hash": hashes, "features_version": versions}
    for name, typ in (("pitch", pa.int16()), ("start", pa.float32()), ("end", pa.float32()),
                      ("velocity", pa.int16()), ("program", pa.int16()), ("is_drum", pa.bool_())):
        cols[name] = list_of_vectors([np.asarray(n[name]) for n in notes], typ)
    tokens = pa.table({
        "content_hash": hashes,
        "features_version": versions,
        "tokenizer": [a.tokenizer_name for _, a in items],
        "n_tokens": pa.array([len(a.tokens) for _, a in items], pa.int32()),
        "tokens": list_of_vectors([np.asarray(a.tokens, np.int32) for _, a in items], pa.int32()),
    })
    return {"midi_notes": pa.table(cols), "tokens": tokens}


def _code_rate(feats: Any) -> float:
    """Fingerprint codes per second of a track: one code every DECIMATE analysis frames."""
    return float(feats.frame_rate_hz) / DECIMATE


def _key_of(chroma_mean: Any) -> str:
    from actors.midi.analysis import estimate_key

    return estimate_key(np.asarray(chroma_mean, dtype=np.float64))
