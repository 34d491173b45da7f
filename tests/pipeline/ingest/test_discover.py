"""pipeline.ingest.discover: walking folders, symlinks and loops, content hashing. No Ray."""
from __future__ import annotations

import os
import shutil

import pytest

from actors.errors import ChromarayError
from pipeline.ingest.discover import build_manifest, discover
from pipeline.synth import good_library, write_song


def test_discover_recursive_case_insensitive_hidden_symlinks(tmp_path):
    lib = tmp_path / "lib"
    good_library(lib / "a", n=3)
    (lib / "b" / "deep").mkdir(parents=True)
    write_song(lib / "b" / "deep" / "x.WaV", 1, 1.0)
    (lib / ".hidden").mkdir()
    write_song(lib / ".hidden" / "secret.wav", 2, 1.0)
    write_song(lib / "a" / ".dotfile.wav", 3, 1.0)
    (lib / "notes.txt").write_text("not music")
    (lib / "a" / "song.mid").write_bytes(b"MThd")
    os.symlink(lib / "a", lib / "link-to-a")  # same folder twice through a link
    os.symlink(lib, lib / "b" / "loop")  # a cycle
    found = discover([lib])
    names = sorted(os.path.relpath(f.path, lib) for f in found)
    assert "b/deep/x.WaV" in names and "a/track001.FLAC" in names
    assert not any(".hidden" in n or ".dotfile" in n or n.endswith(".txt") for n in names)
    assert {f.kind for f in found} == {"audio", "midi"}
    # each real file is reachable through a link too (link-to-a, b/loop), but is listed once, under
    # the real folder met first, and the loop does not recurse
    assert names == ["a/song.mid", "a/track000.wav", "a/track001.FLAC", "a/track002.ogg", "b/deep/x.WaV"]


def test_missing_input_is_a_user_error(tmp_path):
    with pytest.raises(ChromarayError, match="does not exist"):
        discover([tmp_path / "nope"])


def test_manifest_hash_identifies_content_and_reuses_known_hashes(tmp_path):
    a = write_song(tmp_path / "a.wav", 1, 1.0)
    shutil.copy(a, tmp_path / "copy.wav")
    write_song(tmp_path / "b.wav", 2, 1.0)
    rows = {os.path.basename(r.path): r for r in build_manifest(discover([tmp_path]))}
    assert rows["a.wav"].content_hash == rows["copy.wav"].content_hash != rows["b.wav"].content_hash
    # unchanged (size, mtime) -> the recorded hash is trusted, the file is not read again
    known = {rows["a.wav"].path: (rows["a.wav"].size_bytes, rows["a.wav"].mtime_ns, "cached")}
    again = {os.path.basename(r.path): r for r in build_manifest(discover([tmp_path]), known)}
    assert again["a.wav"].content_hash == "cached"
    assert again["copy.wav"].content_hash == rows["a.wav"].content_hash
