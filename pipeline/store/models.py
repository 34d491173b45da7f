"""Every table of the results database (SQLAlchemy 2 ORM), in one place.

Importing this module registers all tables on ``Base.metadata``, so
``pipeline.store.db.open_db`` always creates the same schema whatever was
imported before. ``SCHEMA_VERSION`` is stored in table ``meta`` and checked
when a database is opened.

Versions: 1 had no ``meta`` table; 2 added it; 3 added ``analysis_settings`` (the DSP
settings of each features version) and fingerprint rows at their true code rate; 4 added the
process columns of ``runs`` (host, pid, pid_started, heartbeat_at, heartbeat_s) that tell a live
run from a dead one; 5 added the ``shift`` and ``gap`` columns of ``midi_matches`` (the
transposition used and the transposition gap that accepted the pair).
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "SCHEMA_VERSION",
    "AnalysisSettings",
    "Base",
    "BatchLog",
    "ErrorRow",
    "Feature",
    "Fingerprint",
    "FpIndexSegment",
    "FpIndexTrack",
    "Meta",
    "MidiMatchRow",
    "ParquetPart",
    "ProgressEvent",
    "Run",
    "Track",
    "TrackPath",
    "TrainMetric",
    "utcnow",
]

#: Bump when a table changes shape; open_db refuses a newer database and a writer upgrades an older one.
SCHEMA_VERSION = 5


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Run(Base):
    """One invocation of a job (fingerprint, train, ...)."""

    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # fingerprint | train | index
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    # running | finished | failed | stopped (Ctrl-C, SIGTERM) | interrupted (its process died)
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # The process behind the run, so others can tell whether it is alive (pipeline/store/runs.py):
    # on its own host by pid (and the pid's start time, against reuse), elsewhere by heartbeat.
    host: Mapped[str | None] = mapped_column(String(255), default=None)
    pid: Mapped[int | None] = mapped_column(Integer, default=None)
    pid_started: Mapped[float | None] = mapped_column(Float, default=None)  # process start, Unix seconds
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(default=None)  # last seen alive
    heartbeat_s: Mapped[float | None] = mapped_column(Float, default=None)  # None: the run has no heartbeat
    ray_address: Mapped[str | None] = mapped_column(String(200), default=None)
    ray_dashboard_url: Mapped[str | None] = mapped_column(String(200), default=None)
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    n_total: Mapped[int] = mapped_column(Integer, default=0)
    n_done: Mapped[int] = mapped_column(Integer, default=0)
    n_skipped: Mapped[int] = mapped_column(Integer, default=0)
    n_errors: Mapped[int] = mapped_column(Integer, default=0)
    audio_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    summary: Mapped[dict] = mapped_column(JSON, default=dict)


class Track(Base):
    """One distinct content (audio or MIDI), whatever paths it lives at."""

    __tablename__ = "tracks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    kind: Mapped[str] = mapped_column(String(8))  # audio | midi
    format: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(Integer)
    duration_s: Mapped[float] = mapped_column(Float)
    source_sample_rate: Mapped[int | None] = mapped_column(Integer, default=None)
    channels: Mapped[int | None] = mapped_column(Integer, default=None)
    n_frames: Mapped[int] = mapped_column(Integer, default=0)
    features_version: Mapped[str] = mapped_column(String(32))
    parquet_part: Mapped[str | None] = mapped_column(String(200), default=None)
    run_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class TrackPath(Base):
    """Where a content lives. A moved file updates this row, not the track."""

    __tablename__ = "track_paths"
    path: Mapped[str] = mapped_column(Text, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    mtime_ns: Mapped[int] = mapped_column(Integer)
    last_seen_run: Mapped[str] = mapped_column(String(32))


class Feature(Base):
    """Per-track summary statistics (per-frame arrays live in Parquet)."""

    __tablename__ = "features"
    content_hash: Mapped[str] = mapped_column(
        String(64), ForeignKey("tracks.content_hash", ondelete="CASCADE"), primary_key=True
    )
    frame_rate_hz: Mapped[float] = mapped_column(Float)
    tempo_bpm: Mapped[float] = mapped_column(Float)
    onset_mean: Mapped[float] = mapped_column(Float)
    onset_std: Mapped[float] = mapped_column(Float)
    harmonic_ratio: Mapped[float] = mapped_column(Float)  # harmonic energy / total
    rms_mean: Mapped[float] = mapped_column(Float)
    chroma_mean: Mapped[list] = mapped_column(JSON)  # 12 floats, C..B
    key_estimate: Mapped[str | None] = mapped_column(String(8), default=None)
    extra: Mapped[dict] = mapped_column(JSON, default=dict)


class Fingerprint(Base):
    """Sub-fingerprint codes of a track (uint32 little-endian bytes)."""

    __tablename__ = "fingerprints"
    content_hash: Mapped[str] = mapped_column(
        String(64), ForeignKey("tracks.content_hash", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[str] = mapped_column(String(32))
    frame_rate_hz: Mapped[float] = mapped_column(Float)  # of the codes: analysis frame rate / DECIMATE
    n_codes: Mapped[int] = mapped_column(Integer)
    codes: Mapped[bytes] = mapped_column(LargeBinary)


class AnalysisSettings(Base):
    """The DSP settings (``actors.config.DSPConfig.to_dict()``) that produced every row of one
    features version, so readers (identify, duplicates, match-midi) analyse like the library.
    Read them with :func:`pipeline.store.db.library_settings`."""

    __tablename__ = "analysis_settings"
    features_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # audio | midi
    dsp: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ErrorRow(Base):
    """A file that could not be used, with the stage and a reason a user understands.

    Keyed by (path, content_hash) so re-running over the same broken file
    updates one row instead of adding another.
    """

    __tablename__ = "errors"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64), default="")  # "" when unreadable
    stage: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    run_id: Mapped[str] = mapped_column(String(32))
    features_version: Mapped[str] = mapped_column(String(32), default="")
    first_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)
    __table_args__ = (Index("ux_errors_path_hash", "path", "content_hash", unique=True),)


class ParquetPart(Base):
    """A Parquet file that is part of the results. Files not listed here are
    leftovers of a crash between writing and committing, and are removed."""

    __tablename__ = "parquet_parts"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # relative to --out
    dataset: Mapped[str] = mapped_column(String(32))  # frames | tracks | midi_notes | tokens ...
    run_id: Mapped[str] = mapped_column(String(32))
    n_rows: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ProgressEvent(Base):
    """Time series for the dashboard: one row every few seconds per run (and stage)."""

    __tablename__ = "progress"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), index=True)
    ts: Mapped[dt.datetime] = mapped_column(default=utcnow)
    stage: Mapped[str] = mapped_column(String(32), default="features")
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    audio_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)  # batch sizes, memory per actor, ...


class BatchLog(Base):
    """What the batch planner chose and every OOM split, per actor."""

    __tablename__ = "batch_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), index=True)
    ts: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    device: Mapped[str] = mapped_column(String(16))
    n_tracks: Mapped[int] = mapped_column(Integer)
    audio_seconds: Mapped[float] = mapped_column(Float)
    oom_splits: Mapped[int] = mapped_column(Integer, default=0)
    time_chunked: Mapped[int] = mapped_column(Integer, default=0)
    budget_bytes: Mapped[int] = mapped_column(Integer, default=0)
    peak_bytes: Mapped[int] = mapped_column(Integer, default=0)


class TrainMetric(Base):
    """Per-step training metrics (run kind = train)."""

    __tablename__ = "train_metrics"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), index=True)
    step: Mapped[int] = mapped_column(Integer)
    ts: Mapped[dt.datetime] = mapped_column(default=utcnow)
    loss: Mapped[float] = mapped_column(Float)
    lr: Mapped[float] = mapped_column(Float, default=0.0)
    items_per_s: Mapped[float] = mapped_column(Float, default=0.0)  # tokens or frames per second
    split: Mapped[str] = mapped_column(String(8), default="train")  # train | eval
    __table_args__ = (Index("ux_train_metrics", "run_id", "step", "split", unique=True),)


class FpIndexSegment(Base):
    """A live segment file of the fingerprint index (relative to the index directory)."""

    __tablename__ = "fp_index_segments"
    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    version: Mapped[str] = mapped_column(String(32))
    n_postings: Mapped[int] = mapped_column(Integer)
    n_tracks: Mapped[int] = mapped_column(Integer)
    max_key: Mapped[int] = mapped_column(Integer, default=0)  # keys are never reused while postings live
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class FpIndexTrack(Base):
    """A track whose codes are in the index."""

    __tablename__ = "fp_index_tracks"
    content_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    track_key: Mapped[int] = mapped_column(Integer, unique=True, index=True)
    version: Mapped[str] = mapped_column(String(32))
    frame_rate_hz: Mapped[float] = mapped_column(Float)  # of the analysis frames (codes: / DECIMATE)
    n_codes: Mapped[int] = mapped_column(Integer)
    segment: Mapped[str] = mapped_column(String(80))


class MidiMatchRow(Base):
    """One (MIDI, audio) pair judged to play the same piece, with its rank for that MIDI."""

    __tablename__ = "midi_matches"
    midi_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    audio_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer)  # 1 = best
    score: Mapped[float] = mapped_column(Float)  # chance-corrected DTW similarity (<= 1)
    similarity: Mapped[float] = mapped_column(Float)  # mean cosine along the path
    chance: Mapped[float] = mapped_column(Float)  # mean cosine over all frame pairs
    tempo_ratio: Mapped[float] = mapped_column(Float)  # MIDI seconds per audio second (>1: faster recording)
    audio_start_s: Mapped[float] = mapped_column(Float)
    audio_end_s: Mapped[float] = mapped_column(Float)
    midi_start_s: Mapped[float] = mapped_column(Float)
    midi_end_s: Mapped[float] = mapped_column(Float)
    matcher_version: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # schema 5: the semitones the MIDI file was transposed up by to match (--transpose) and the
    # transposition gap that accepted the pair (pipeline.midi_match; null in rows of before 5)
    shift: Mapped[int] = mapped_column(Integer, default=0)
    gap: Mapped[float | None] = mapped_column(Float, nullable=True)


class Meta(Base):
    """Key/value facts about the database itself (schema version)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
