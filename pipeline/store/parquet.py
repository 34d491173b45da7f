"""Numbered Parquet parts under the output folder.

A part is written to a hidden temp file and renamed into place, then listed
in SQLite (table parquet_parts) in the same transaction as its rows. A part
on disk but not in that table is the leftover of a crash between the two
steps; ``remove_orphans`` deletes it before the next run writes anything.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from actors.errors import ChromarayError

__all__ = ["DATASETS", "list_of_matrices", "list_of_vectors", "prepare_out_dir", "remove_orphans", "write_part"]

DATASETS = ("frames", "tracks", "fingerprints", "midi_notes", "tokens")


def prepare_out_dir(out: str | os.PathLike) -> Path:
    p = Path(out).expanduser().resolve()
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ChromarayError(f"cannot create output directory {p}: {exc.strerror}") from exc
    if not os.access(p, os.W_OK | os.X_OK):
        raise ChromarayError(f"output directory {p} is not writable")
    return p


def write_part(out_dir: Path, dataset: str, name: str, table: pa.Table) -> str:
    """Write ``table`` as ``<out>/<dataset>/<name>.parquet`` atomically; returns the relative name."""
    folder = out_dir / dataset
    folder.mkdir(parents=True, exist_ok=True)
    rel = f"{dataset}/{name}.parquet"
    tmp = folder / f".{name}.parquet.tmp"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, out_dir / rel)
    return rel


def remove_orphans(out_dir: Path, committed: set[str]) -> list[str]:
    removed = []
    for dataset in DATASETS:
        folder = out_dir / dataset
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            rel = f"{dataset}/{f.name}"
            if (f.suffix == ".parquet" and rel not in committed) or f.name.endswith(".parquet.tmp"):
                f.unlink(missing_ok=True)
                removed.append(rel)
    return removed


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
