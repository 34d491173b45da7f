"""The one "current row per track" rule for readers of the Parquet datasets (train, match-midi).

A track analysed again keeps its older parts listed; each reader takes, per track of table
``tracks``, the row of the newest part holding the track's current ``features_version``, so
every track counts once and never at a stale version.
"""
from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.store import Track

__all__ = ["TrackRow", "current_rows"]


class TrackRow(NamedTuple):
    """Where the one row a track is trained on lives, and what the driver read of it."""

    path: str  # the Parquet part (as passed to ``read_parquet``)
    version: str  # the track's current features_version
    frame_rate_hz: float | None  # frames: the row's analysis frame rate
    max_token: int  # tokens: the largest id in the row (-1 when empty)
    kind: str = "audio"  # the track's kind (audio | midi)


def current_rows(engine: Engine, files: list[str], dataset: str,
                 kinds: Collection[str] | None = None) -> dict[str, TrackRow]:
    """For each track of table ``tracks`` (of ``kinds``; default audio for frames, midi for
    tokens), its row at the track's current ``features_version``, read from the small
    columns of ``files`` (oldest part first). A track analysed again keeps its older parts listed: the newest
    part holding a current row wins, so every track counts once. Tokens rows carry no
    version (the tokenizer is the MIDI version's): there the newest part's row is current."""
    wanted = set(kinds) if kinds is not None else {"midi" if dataset == "tokens" else "audio"}
    with Session(engine) as s:
        current = {h: (k, v) for h, k, v in s.execute(select(Track.content_hash, Track.kind, Track.features_version)
                                                      .where(Track.kind.in_(sorted(wanted))))}
    found: dict[str, TrackRow] = {}
    for f in files:
        versioned = "features_version" in pq.read_schema(f).names
        cols = ["content_hash"] + (["features_version"] if versioned else [])
        cols += ["kind", "frame_rate_hz"] if dataset == "frames" else ["tokens"]
        t = pq.read_table(f, columns=cols)
        hashes = t.column("content_hash").to_pylist()
        versions = t.column("features_version").to_pylist() if versioned else [None] * len(hashes)
        if dataset == "frames":
            kinds_ = t.column("kind").to_pylist()
            rates = t.column("frame_rate_hz").to_pylist()
            maxes = [-1] * len(hashes)
        else:
            kinds_ = [None] * len(hashes)
            rates, maxes = [None] * len(hashes), _row_max(t.column("tokens"))
        for h, v, k, rate, m in zip(hashes, versions, kinds_, rates, maxes):
            cur = current.get(h)
            if cur is not None and (k is None or k == cur[0]) and (v is None or v == cur[1]):
                found[h] = TrackRow(f, cur[1], None if rate is None else float(rate), m, cur[0])
    return found


def _row_max(column: pa.ChunkedArray) -> list[int]:
    """Largest value of each list row (-1 for an empty or null row)."""
    lists = column.combine_chunks()
    lengths = np.asarray(pc.fill_null(pc.list_value_length(lists), 0), dtype=np.int64)
    values = np.asarray(lists.flatten().to_numpy(zero_copy_only=False), dtype=np.int64)
    out = np.full(len(lengths), -1, np.int64)
    filled = lengths > 0
    if filled.any():
        starts = np.cumsum(lengths) - lengths
        # Empty rows between two filled ones add no values, so each segment is one row's.
        out[filled] = np.maximum.reduceat(values, starts[filled])
    return out.tolist()
