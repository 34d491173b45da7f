"""Storage: the SQLite results database (every table in :mod:`pipeline.store.models`)
and the numbered Parquet parts beside it (:mod:`pipeline.store.parquet`)."""
from pipeline.store.db import (
    check_schema,
    finish_run,
    known_parts,
    new_run,
    open_db,
    parts_of,
    record_metrics,
)
from pipeline.store.models import (
    SCHEMA_VERSION,
    BatchLog,
    Base,
    ErrorRow,
    Feature,
    Fingerprint,
    FpIndexSegment,
    FpIndexTrack,
    Meta,
    MidiMatchRow,
    ParquetPart,
    ProgressEvent,
    Run,
    Track,
    TrackPath,
    TrainMetric,
    utcnow,
)

__all__ = [
    "SCHEMA_VERSION", "BatchLog", "Base", "ErrorRow", "Feature", "Fingerprint", "FpIndexSegment",
    "FpIndexTrack", "Meta", "MidiMatchRow", "ParquetPart", "ProgressEvent", "Run", "Track", "TrackPath",
    "TrainMetric", "check_schema", "finish_run", "known_parts", "new_run", "open_db", "parts_of",
    "record_metrics", "utcnow",
]
