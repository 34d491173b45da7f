"""`chromaray fingerprint` as a user runs it, on paths it cannot use (#14 defects 4 and 9).

No Ray: when nothing can be processed the job stops before starting it. Real CLI processes,
real SQLite files.
"""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.paths import REPO


def _fingerprint(tmp: Path, *paths: str | Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "jobs.fingerprint", *map(str, paths), "--db", str(tmp / "c.db"),
                           "--out", str(tmp / "out"), "--no-progress"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def _errors(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as c:
        return sorted(c.execute("SELECT path, stage, reason FROM errors").fetchall())


def test_a_fifo_as_the_only_path_is_reported_not_silently_ignored(tmp_path):
    fifo = tmp_path / "p.wav"
    os.mkfifo(fifo)
    r = _fingerprint(tmp_path, fifo)
    # Before: "nothing new: 0 file(s) found", exit 0, nothing in the database.
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"  error [discover] {fifo}: not a regular file: a named pipe (FIFO)" in r.stderr.splitlines()
    assert "1 path(s) skipped" in r.stdout
    assert "1 errors (1 of them paths that are not readable files)" in r.stdout
    assert r.stderr.splitlines()[-1] == ("chromaray fingerprint: error: no file could be processed "
                                         "(see the errors above)")
    assert _errors(tmp_path / "c.db") == [(str(fifo), "discover", "not a regular file: a named pipe (FIFO)")]


def test_skipped_paths_in_a_folder_are_error_rows_and_counted(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    os.mkfifo(lib / "pipe.ogg")
    os.symlink(lib / "missing.flac", lib / "dangling.flac")
    os.symlink(lib / "self.mp3", lib / "self.mp3")
    (lib / "folder.wav").mkdir()
    r = _fingerprint(tmp_path, lib)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "4 path(s) skipped" in r.stdout and "4 errors (4 of them paths" in r.stdout
    assert _errors(tmp_path / "c.db") == [
        (str(lib / "dangling.flac"), "discover", f"dangling symbolic link: its target {lib / 'missing.flac'} "
                                                 "does not exist"),
        (str(lib / "folder.wav"), "discover", "not a regular file: a folder (its contents are scanned)"),
        (str(lib / "pipe.ogg"), "discover", "not a regular file: a named pipe (FIFO)"),
        (str(lib / "self.mp3"), "discover", "symbolic link loop: the link never reaches a file"),
    ]
    # A re-run records the same rows once more, not twice.
    again = _fingerprint(tmp_path, lib)
    assert again.returncode == 2 and len(_errors(tmp_path / "c.db")) == 4


def test_names_are_escaped_in_every_line(tmp_path):
    """A newline in a name cannot forge an extra error line; escape sequences never reach the terminal."""
    lib = tmp_path / "lib\x1b]0;owned\x07"
    lib.mkdir()
    os.mkfifo(lib / "a\n  error [decode] forged: x.wav")
    os.mkfifo(lib / "\x1b[2Jclear.flac")
    r = _fingerprint(tmp_path, lib)
    assert r.returncode == 2, (r.stdout, r.stderr)
    out = r.stdout + r.stderr
    assert "\x1b" not in out and "\x07" not in out
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("  error")]
    assert len(lines) == 2, r.stderr
    assert all("\\x1b]0;owned\\x07" in ln for ln in lines)
    assert any(ln.endswith("/a\\n  error [decode] forged: x.wav: not a regular file: a named pipe (FIFO)")
               for ln in lines), lines
    assert any("\\x1b[2Jclear.flac" in ln for ln in lines), lines
