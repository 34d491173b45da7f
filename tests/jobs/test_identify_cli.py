"""`chromaray identify` on paths that are not regular files: refused at once, one line (#14)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.synth import varied_song

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def library_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.search import index
    from pipeline.store import open_db
    from pipeline.synth import store_signals

    d = tmp_path_factory.mktemp("identify_cli")
    engine = open_db(d / "lib.sqlite")
    store_signals(engine, d / "parts", [("song-a.wav", varied_song(3, 8.0))])
    index.sync(engine)
    engine.dispose()
    return d / "lib.sqlite"


def _identify(*argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", HF_HUB_OFFLINE="1")
    # The old code opened a FIFO for decoding and blocked forever: the timeout turns that into a failure.
    return subprocess.run([sys.executable, "-m", "jobs.identify", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs mkfifo")
def test_fifo_is_refused_at_once_with_one_escaped_line(tmp_path: Path, library_db: Path) -> None:
    fifo = tmp_path / "p\x1b]0;owned\x07.wav"
    os.mkfifo(fifo)
    p = _identify(str(fifo), "--db", str(library_db))
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "FIFO" in lines[0] and "not a regular file" in lines[0]
    assert "\x1b" not in p.stderr and "\x07" not in p.stderr and "\\x1b]0;owned\\x07.wav" in lines[0]
    assert p.stdout == ""


def test_directory_and_dangling_link_are_refused(tmp_path: Path, library_db: Path) -> None:
    folder = tmp_path / "x.wav"
    folder.mkdir()
    p = _identify(str(folder), "--db", str(library_db))
    assert p.returncode == 2 and "is a directory" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    link = tmp_path / "gone.wav"
    link.symlink_to(tmp_path / "nowhere.wav")
    p = _identify(str(link), "--db", str(library_db))
    assert p.returncode == 2 and "dangling symbolic link" in p.stderr and "Traceback" not in p.stderr
