"""What a worker stores for finished tracks: the Parquet datasets it writes itself
and the small receipt it sends back to the driver.

Bulky per-frame data (chroma, onset, MIDI notes, tokens) never travels to the
driver: the worker writes it as Parquet parts under ``--out`` (shared storage
on a cluster) under names no other call can pick, and returns one receipt row:
the parts (name, dataset, row count), one summary per track (what the SQLite
tables hold: durations, tempo, chroma mean, key, fingerprint codes) and the
error rows. The driver lists the parts in SQLite in the same transaction as the
tracks' rows (a two-phase commit: a part on disk that no committed row lists is
a crash leftover, removed by the next run).
"""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

__all__ = ["DATASETS", "RECEIPT_SCHEMA", "Finished", "FrameRow", "frames_table", "list_of_matrices",
           "list_of_vectors", "midi_tables", "part_name", "receipt_row", "result_tables", "track_result",
           "track_summary", "write_part", "write_parts"]

#: Every Parquet dataset under ``--out`` (the last is written by match-midi, not by workers); the
#: start-up cleanup of a run removes the parts of each that no committed row lists.
DATASETS = ("frames", "tracks", "fingerprints", "midi_notes", "tokens", "midi_alignments")

#: One row per worker call: ``receipt`` is JSON (parts, tracks, errors, batch records),
#: ``codes`` the tracks' fingerprint codes back to back (uint32 little-endian; each track
#: names its offset and count), so no array is pickled.
RECEIPT_SCHEMA = pa.schema([("receipt", pa.string()), ("codes", pa.large_binary())])


@dataclass
class Finished:
    """One track ready to store."""

    content_hash: str
    kind: str  # audio | midi
    path: str
    size_bytes: int
    meta: dict[str, Any]
    result: Any  # audio: track_result(...) {"features", "fp_codes", "fp_version"}; midi: MidiAnalysis


def track_result(features: Any, dsp: Any) -> dict[str, Any]:
    """Everything stored for one finished audio track: features + fingerprint codes."""
    from actors.fingerprint import FP_VERSION, fingerprint_codes

    codes = fingerprint_codes(features.chroma, frame_rate_hz=features.frame_rate_hz)
    return {"features": features, "fp_codes": np.asarray(codes, dtype="<u4"), "fp_version": FP_VERSION}


# ----------------------------------------------------------------- Arrow helpers
def list_of_matrices(mats: Sequence[np.ndarray], width: int, value_type: pa.DataType | None = None) -> pa.Array:
    """list<fixed_size_list<value, width>> from arrays shaped (n_i, width) (values: float32 unless given)."""
    value_type = pa.float32() if value_type is None else value_type
    offsets = np.zeros(len(mats) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum([m.shape[0] for m in mats])
    flat = np.concatenate([np.asarray(m).reshape(-1) for m in mats]) if mats else np.zeros(0)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=value_type), width)
    return pa.ListArray.from_arrays(pa.array(offsets), inner)


def list_of_vectors(vecs: Sequence[np.ndarray], value_type: pa.DataType) -> pa.Array:
    offsets = np.zeros(len(vecs) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum([len(v) for v in vecs])
    flat = np.concatenate([np.asarray(v).reshape(-1) for v in vecs]) if vecs else np.zeros(0)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=value_type))


def write_part(out_dir: Path, dataset: str, name: str, table: pa.Table) -> str:
    """Write ``table`` as ``<out>/<dataset>/<name>.parquet`` atomically; returns the relative name."""
    import pyarrow.parquet as pq

    folder = Path(out_dir) / dataset
    folder.mkdir(parents=True, exist_ok=True)
    rel = f"{dataset}/{name}.parquet"
    tmp = folder / f".{name}.parquet.tmp"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, Path(out_dir) / rel)
    return rel


def part_name(run_id: str) -> str:
    """A part name no other call, worker or retry picks: the run's prefix (cleanup tells a run's parts
    by it) and a random token."""
    return f"part-{run_id[:12]}-{uuid.uuid4().hex[:12]}"


# ----------------------------------------------------------------- datasets
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


def _key_of(chroma_mean: Any) -> str:
    from actors.midi.analysis import estimate_key

    return estimate_key(np.asarray(chroma_mean, dtype=np.float64))


def _code_rate(feats: Any) -> float:
    """Fingerprint codes per second of a track: one code every DECIMATE analysis frames."""
    from actors.fingerprint import DECIMATE

    return float(feats.frame_rate_hz) / DECIMATE


def track_summary(f: Finished, versions: Mapping[str, str], sample_rate: int) -> dict[str, Any]:
    """The SQLite rows of one track as plain JSON values (the fingerprint codes apart)."""
    base = {"content_hash": f.content_hash, "kind": f.kind, "path": f.path, "size_bytes": int(f.size_bytes),
            "features_version": versions[f.kind]}
    if f.kind == "audio":
        x = f.result["features"]
        return {**base, "format": str(f.meta.get("format", "")), "duration_s": float(x.n_samples) / sample_rate,
                "source_sample_rate": f.meta.get("source_sample_rate"), "channels": f.meta.get("channels"),
                "n_frames": int(x.n_frames), "meta": dict(f.meta),
                "feature": {"frame_rate_hz": float(x.frame_rate_hz), "tempo_bpm": float(x.tempo_bpm),
                            "onset_mean": float(x.onset_mean), "onset_std": float(x.onset_std),
                            "harmonic_ratio": float(x.harmonic_ratio), "rms_mean": float(x.rms_mean),
                            "chroma_mean": [float(v) for v in x.chroma_mean], "key_estimate": _key_of(x.chroma_mean),
                            "extra": {"warnings": list(f.meta["warnings"])} if f.meta.get("warnings") else {}},
                "fp": {"version": f.result["fp_version"], "frame_rate_hz": _code_rate(x),
                       "n_codes": int(np.asarray(f.result["fp_codes"]).size)}}
    m = f.result
    return {**base, "format": "MIDI", "duration_s": float(m.duration_s), "source_sample_rate": None,
            "channels": None, "n_frames": int(m.chroma.shape[-1]), "meta": dict(f.meta),
            "feature": {"frame_rate_hz": float(m.frame_rate_hz),
                        "tempo_bpm": float(m.tempo_map[0][1]) if m.tempo_map else 120.0,
                        "onset_mean": float(np.mean(m.onset)) if m.onset.size else 0.0,
                        "onset_std": float(np.std(m.onset)) if m.onset.size else 0.0,
                        "harmonic_ratio": 1.0, "rms_mean": 0.0,
                        "chroma_mean": [float(v) for v in (m.chroma.mean(axis=1) if m.chroma.size else np.zeros(12))],
                        "key_estimate": m.key, "extra": json.loads(json.dumps(m.stats, default=float))},
            "fp": None}


def result_tables(ready: Sequence[Finished], versions: Mapping[str, str], sample_rate: int) -> dict[str, pa.Table]:
    """Every dataset's rows for ``ready`` (empty datasets left out)."""
    audio = [f for f in ready if f.kind == "audio"]
    midi = [f for f in ready if f.kind == "midi"]
    # Each row's own rate: a reader of the frames never assumes the run's (or the default) settings.
    frames = frames_table(
        [FrameRow(f.content_hash, "audio", versions["audio"], float(f.result["features"].frame_rate_hz),
                  f.result["features"].chroma, f.result["features"].onset) for f in audio]
        + [FrameRow(f.content_hash, "midi", versions["midi"], float(f.result.frame_rate_hz),
                    f.result.chroma, f.result.onset) for f in midi])
    feats = [f.result["features"] for f in audio]
    out: dict[str, pa.Table] = {"frames": frames}
    if audio:
        out["tracks"] = pa.table({
            "content_hash": [f.content_hash for f in audio],
            "kind": ["audio"] * len(audio),
            "path": [f.path for f in audio],
            "duration_s": pa.array([float(x.n_samples) / sample_rate for x in feats], pa.float64()),
            "tempo_bpm": pa.array([float(x.tempo_bpm) for x in feats], pa.float64()),
            "onset_mean": pa.array([float(x.onset_mean) for x in feats], pa.float64()),
            "onset_std": pa.array([float(x.onset_std) for x in feats], pa.float64()),
            "harmonic_ratio": pa.array([float(x.harmonic_ratio) for x in feats], pa.float64()),
            "rms_mean": pa.array([float(x.rms_mean) for x in feats], pa.float64()),
            "chroma_mean": list_of_vectors([np.asarray(x.chroma_mean, np.float32) for x in feats], pa.float32()),
            "key_estimate": [_key_of(x.chroma_mean) for x in feats],
            "features_version": [versions["audio"]] * len(audio),
        })
        out["fingerprints"] = pa.table({
            "content_hash": [f.content_hash for f in audio],
            "version": [f.result["fp_version"] for f in audio],
            "frame_rate_hz": pa.array([_code_rate(x) for x in feats], pa.float64()),
            "codes": list_of_vectors([f.result["fp_codes"] for f in audio], pa.uint32()),
        })
    if midi:
        out.update(midi_tables([(f.content_hash, f.result) for f in midi], features_version=versions["midi"]))
    return {k: t for k, t in out.items() if t.num_rows}


def _write_vocab(out_dir: Path) -> None:
    """The token vocabulary beside the tokens parts (same tokenizer for every row of a version)."""
    path = Path(out_dir) / "tokens" / "vocab.json"
    if path.exists():
        return
    from actors.midi.analysis import vocab_json

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".vocab.json.{uuid.uuid4().hex[:8]}.tmp")  # workers may race: each its own temp
    tmp.write_text(vocab_json())
    tmp.replace(path)


def write_parts(out_dir: Path, name: str, ready: Sequence[Finished], versions: Mapping[str, str],
                sample_rate: int) -> list[tuple[str, str, int]]:
    """Write one part per dataset for ``ready`` as ``<dataset>/<name>.parquet``;
    returns (relative name, dataset, rows) of each."""
    if not ready:
        return []
    parts = [(write_part(out_dir, dataset, name, table), dataset, table.num_rows)
             for dataset, table in result_tables(ready, versions, sample_rate).items()]
    if any(f.kind == "midi" for f in ready):
        _write_vocab(out_dir)
    return parts


def receipt_row(*, worker: str, parts: Sequence[tuple[str, str, int]], ready: Sequence[Finished],
                errors: Sequence[Mapping[str, Any]], batches: Sequence[Mapping[str, Any]],
                versions: Mapping[str, str], sample_rate: int) -> dict[str, Any]:
    """The one small row a worker call returns (see RECEIPT_SCHEMA)."""
    tracks, codes, offset = [], [], 0
    for f in ready:
        summary = track_summary(f, versions, sample_rate)
        if summary["fp"] is not None:
            c = np.ascontiguousarray(f.result["fp_codes"], dtype="<u4")
            summary["fp"]["offset"] = offset
            offset += c.size
            codes.append(c.tobytes())
        tracks.append(summary)
    receipt = {"worker": worker, "parts": [list(p) for p in parts], "tracks": tracks, "errors": list(errors),
               "batches": list(batches)}
    return {"receipt": json.dumps(receipt, default=float), "codes": b"".join(codes)}
