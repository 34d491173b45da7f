"""Find the files of a library and key them by content.

A file is identified by the BLAKE2b hash of its bytes, so a moved, renamed or
copied file is the same track. Hashing a whole library on every run is the
slow part of a no-op run, so a path whose (size, mtime) did not change keeps
the hash recorded last time.
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from actors.errors import ChromarayError
from pipeline.config import AUDIO_EXTENSIONS, MIDI_EXTENSIONS

__all__ = ["HASH_BLOCK", "Discovery", "FoundFile", "ManifestRow", "SkippedPath", "build_manifest", "content_hash",
           "discover", "input_root", "kind_of", "scan"]


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


@dataclass(frozen=True)
class SkippedPath:
    """A path that looked like an input (or was named on the command line) but cannot be read as one."""

    path: str  # absolute, links kept as met
    reason: str


@dataclass
class Discovery:
    files: list[FoundFile]
    skipped: list[SkippedPath]  # sorted by path, one per path


def discover(paths: Iterable[str | os.PathLike]) -> list[FoundFile]:
    """Audio and MIDI files under ``paths`` (files or folders), sorted, no duplicates.

    Extensions are case-insensitive; hidden files and folders are skipped;
    symlinks are followed, each real directory entered once (no loops).
    What cannot be used is in :func:`scan`'s ``skipped``.
    """
    return scan(paths).files


def scan(paths: Iterable[str | os.PathLike]) -> Discovery:
    """:func:`discover`, plus every path it had to leave out and why.

    Reported, per path: an entry named like an audio/MIDI file that is not a regular file (a FIFO,
    socket or device, a folder called ``x.wav``), a dangling symlink, a symlink loop, a folder that
    cannot be listed, and any path named explicitly in ``paths`` that is not used (whatever its
    name). Not reported, by design: hidden entries, files of other types inside folders, and a
    second way (a link) into a folder already walked.
    """
    found: dict[str, FoundFile] = {}
    skipped: dict[str, str] = {}
    for raw in paths:
        given = input_root(raw)
        if not os.path.lexists(given):
            raise ChromarayError(f"input path {raw} does not exist")
        if os.path.isdir(given):
            for path, reason in _walk(Path(given)):
                _take(path, reason, found, skipped, explicit=False)
        else:
            _take(given, _why_not_a_file(given), found, skipped, explicit=True)
    for p in found:
        skipped.pop(p, None)  # also reached through a usable path
    return Discovery([found[p] for p in sorted(found)], [SkippedPath(p, skipped[p]) for p in sorted(skipped)])


def _take(path: str, reason: str | None, found: dict[str, FoundFile], skipped: dict[str, str], *,
          explicit: bool) -> None:
    kind = kind_of(path)
    if reason is None and kind is not None:
        try:
            st = os.stat(path)
        except OSError as exc:
            reason = f"cannot read the file: {exc.strerror}"  # vanished between listing and stat
        else:
            found[path] = FoundFile(path, kind, st.st_size, st.st_mtime_ns)
            return
    if reason is None:  # a regular file of another type: only reported when named on the command line
        if explicit:
            skipped.setdefault(path, f"not an audio or MIDI file name (extension {_ext(path)})")
        return
    if kind is not None or explicit or reason.startswith("cannot list"):
        skipped.setdefault(path, reason)


def _ext(path: str) -> str:
    return os.path.splitext(path)[1].lower() or "(none)"


def _why_not_a_file(path: str) -> str | None:
    """None for a regular file (through links); else the reason it cannot be an input file."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if os.path.islink(path):
            if exc.errno == errno.ELOOP:
                return "symbolic link loop: the link never reaches a file"
            return f"dangling symbolic link: its target {os.readlink(path)} does not exist"
        return f"cannot read the file: {exc.strerror}"
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return None
    what = ("a folder" if stat.S_ISDIR(mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "not a regular file")
    return f"not a regular file: {what}"


def _walk(root: Path) -> Iterator[tuple[str, str | None]]:
    """(path, None) for each regular file under ``root``; (path, reason) for what cannot be one."""
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
        except OSError as exc:
            yield folder, f"cannot list the folder: {exc.strerror}"
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=True):
                    queue.append(entry.path)
                    if kind_of(entry.name) is not None:
                        yield entry.path, "not a regular file: a folder (its contents are scanned)"
                    continue
                if entry.is_file(follow_symlinks=True):
                    yield entry.path, None
                    continue
            except OSError:
                pass
            yield entry.path, _why_not_a_file(entry.path)


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
