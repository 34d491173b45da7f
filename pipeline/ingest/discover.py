"""Find the files of a library and key them by content.

A file is identified by the BLAKE2b hash of its bytes, so a moved, renamed or
copied file is the same track. Hashing a whole library on every run is the
slow part of a no-op run, so a path whose (size, mtime) did not change keeps
the hash recorded last time.
"""
from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from actors.errors import ChromarayError
from pipeline.config import AUDIO_EXTENSIONS, MIDI_EXTENSIONS

__all__ = ["HASH_BLOCK", "FoundFile", "ManifestRow", "build_manifest", "content_hash", "discover", "input_root",
           "kind_of"]


HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class FoundFile:
    path: str  # absolute
    kind: str  # audio | midi
    size_bytes: int
    mtime_ns: int


@dataclass(frozen=True)
class ManifestRow:
    path: str
    kind: str
    size_bytes: int
    mtime_ns: int
    content_hash: str  # "" when the file could not be read
    error: str = ""  # why it could not be hashed


def kind_of(path: str | os.PathLike) -> str | None:
    ext = os.path.splitext(str(path))[1].lower()
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    if ext in MIDI_EXTENSIONS:
        return "midi"
    return None


def input_root(raw: str | os.PathLike) -> str:
    """An input path as every step compares it: ``~`` expanded, absolute (links kept as given)."""
    return os.path.abspath(os.path.expanduser(os.fspath(raw)))


def discover(paths: Iterable[str | os.PathLike]) -> list[FoundFile]:
    """Audio and MIDI files under ``paths`` (files or folders), sorted, no duplicates.

    Extensions are case-insensitive; hidden files and folders are skipped;
    symlinks are followed, each real directory entered once (no loops).
    """
    found: dict[str, FoundFile] = {}
    for raw in paths:
        root = Path(input_root(raw))
        if not root.exists():
            raise ChromarayError(f"input path {raw} does not exist")
        for file in _walk(root):
            kind = kind_of(file)
            if kind is None:
                continue
            try:
                st = os.stat(file)
            except OSError:
                continue  # vanished or dangling link between listing and stat
            path = os.path.abspath(file)
            found[path] = FoundFile(path, kind, st.st_size, st.st_mtime_ns)
    return [found[p] for p in sorted(found)]


def _walk(root: Path) -> Iterator[str]:
    if root.is_file():
        yield str(root)
        return
    seen: set[str] = set()
    queue = deque([str(root)])  # breadth first, sorted: a real folder is met before links to it
    while queue:
        folder = queue.popleft()
        real = os.path.realpath(folder)
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue  # unreadable folder: nothing to list (its files never reach an error row)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=True):
                    queue.append(entry.path)
                elif entry.is_file(follow_symlinks=True):
                    yield entry.path
            except OSError:
                continue


def content_hash(path: str) -> str:
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as fh:
        while block := fh.read(HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def build_manifest(files: Iterable[FoundFile],
                   known: Mapping[str, tuple[int, int, str]] | None = None) -> list[ManifestRow]:
    """Hash each file; ``known`` maps path -> (size, mtime_ns, hash) from the last run."""
    known = known or {}
    rows = []
    for f in files:
        prev = known.get(f.path)
        if prev is not None and prev[0] == f.size_bytes and prev[1] == f.mtime_ns:
            rows.append(ManifestRow(f.path, f.kind, f.size_bytes, f.mtime_ns, prev[2]))
            continue
        try:
            digest = content_hash(f.path)
        except PermissionError:
            reason = "permission denied: cannot read the file"
        except OSError as exc:
            reason = f"cannot read the file: {exc.strerror}"
        else:
            rows.append(ManifestRow(f.path, f.kind, f.size_bytes, f.mtime_ns, digest))
            continue
        rows.append(ManifestRow(f.path, f.kind, f.size_bytes, f.mtime_ns, "", reason))
    return rows
