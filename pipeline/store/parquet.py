"""Numbered Parquet parts under the output folder.

A part is written (by a worker, actors.results) to a hidden temp file and renamed
into place, then listed in SQLite (table parquet_parts) by the driver in the same
transaction as its rows. A part on disk but not in that table is the leftover
of a crash between the two steps; ``remove_orphans`` deletes it before the next
run writes anything, ``remove_run_leftovers`` those of a run at its end.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from actors.errors import ChromarayError

# Workers write the parts (actors.results); the driver lists and cleans them up.
from actors.results import DATASETS, list_of_matrices, list_of_vectors, write_part

__all__ = ["DATASETS", "list_of_matrices", "list_of_vectors", "prepare_out_dir", "remove_old_journals",
           "remove_orphans", "remove_run_leftovers", "write_part"]


def prepare_out_dir(out: str | os.PathLike) -> Path:
    p = Path(out).expanduser().resolve()
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ChromarayError(f"cannot create output directory {p}: {exc.strerror}") from exc
    if not os.access(p, os.W_OK | os.X_OK):
        raise ChromarayError(f"output directory {p} is not writable")
    return p


def _dataset_files(out_dir: Path) -> Iterator[tuple[str, Path]]:
    """(name relative to ``out_dir``, path) of every file in the dataset folders."""
    for dataset in DATASETS:
        folder = out_dir / dataset
        if folder.is_dir():
            for f in sorted(folder.iterdir()):
                yield f"{dataset}/{f.name}", f


def remove_orphans(out_dir: Path, committed: set[str]) -> list[str]:
    removed = []
    for rel, f in _dataset_files(out_dir):
        if (f.suffix == ".parquet" and rel not in committed) or f.name.endswith(".parquet.tmp"):
            f.unlink(missing_ok=True)
            removed.append(rel)
    return removed


def remove_old_journals(out_dir: Path) -> int:
    """Crash journals (``.attempts/<run id>``) of earlier runs that stopped or died before their
    end; called by a run holding the folder's writer lock, so none of them belongs to a live run.
    Returns how many were removed."""
    from actors.stages import ATTEMPTS_DIR

    folder = out_dir / ATTEMPTS_DIR
    old = sorted(folder.iterdir()) if folder.is_dir() else []
    for journal in old:
        if journal.is_dir():
            shutil.rmtree(journal, ignore_errors=True)
        else:
            journal.unlink(missing_ok=True)
    return len(old)


def remove_run_leftovers(out_dir: Path, run_id: str, committed: set[str]) -> list[str]:
    """At the end of a run: the parts of this run that no committed row lists (a worker died
    between writing them and returning its receipt; its retry wrote others), and the run's
    crash journal. Only this run's names (``part-<run id[:12]>-``) are touched."""
    from actors.stages import ATTEMPTS_DIR

    prefix = f"part-{run_id[:12]}-"
    removed = []
    for rel, f in _dataset_files(out_dir):
        mine = (f.name.startswith(prefix) and f.suffix == ".parquet" and rel not in committed) or (
            f.name.startswith(f".{prefix}") and f.name.endswith(".parquet.tmp"))
        if mine:
            f.unlink(missing_ok=True)
            removed.append(rel)
    shutil.rmtree(out_dir / ATTEMPTS_DIR / run_id, ignore_errors=True)
    return removed
