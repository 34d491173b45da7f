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


def test_every_path_that_cannot_be_used_is_reported_with_its_reason(tmp_path):
    import socket

    from pipeline.ingest.discover import scan

    lib = tmp_path / "lib"
    good_library(lib, n=2)
    os.mkfifo(lib / "pipe.wav")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(lib / "sock.flac"))
    os.symlink("/dev/null", lib / "null.mp3")
    os.symlink(lib / "gone.wav", lib / "dangling.wav")
    os.symlink(lib / "loop.ogg", lib / "loop.ogg")  # a link to itself
    (lib / "album.wav").mkdir()
    write_song(lib / "album.wav" / "inside.wav", 7, 1.0)
    os.mkfifo(lib / "pipe.txt")  # not named like an input inside a folder: not ours to report
    (lib / ".hidden.wav").mkdir()
    try:
        d = scan([lib])
    finally:
        sock.close()
    got = {os.path.relpath(s.path, lib): s.reason for s in d.skipped}
    assert got == {
        "album.wav": "not a regular file: a folder (its contents are scanned)",
        "dangling.wav": f"dangling symbolic link: its target {lib / 'gone.wav'} does not exist",
        "loop.ogg": "symbolic link loop: the link never reaches a file",
        "null.mp3": "not a regular file: a character device",
        "pipe.wav": "not a regular file: a named pipe (FIFO)",
        "sock.flac": "not a regular file: a socket",
    }
    assert sorted(os.path.relpath(f.path, lib) for f in d.files) == ["album.wav/inside.wav", "track000.wav",
                                                                    "track001.FLAC"]
    assert [f.path for f in discover([lib])] == [f.path for f in d.files]


def test_a_path_named_on_the_command_line_is_never_dropped_silently(tmp_path):
    from pipeline.ingest.discover import scan

    os.mkfifo(tmp_path / "p.wav")
    (tmp_path / "notes.txt").write_text("x")
    os.symlink(tmp_path / "nowhere.ogg", tmp_path / "d.ogg")
    ok = write_song(tmp_path / "ok.wav", 1, 1.0)
    d = scan([tmp_path / "p.wav", tmp_path / "notes.txt", tmp_path / "d.ogg", ok])
    assert [f.path for f in d.files] == [str(ok)]
    assert {os.path.basename(s.path): s.reason for s in d.skipped} == {
        "p.wav": "not a regular file: a named pipe (FIFO)",
        "notes.txt": "not an audio or MIDI file name (extension .txt)",
        "d.ogg": f"dangling symbolic link: its target {tmp_path / 'nowhere.ogg'} does not exist",
    }


def test_an_unreadable_folder_is_reported():
    """Root lists any folder, so as root the scan runs in a forked child that became user nobody."""
    import json
    import tempfile
    from pathlib import Path

    from pipeline.ingest.discover import scan

    top = tempfile.mkdtemp(prefix="cr-locked-")  # outside root's private pytest folder
    locked = os.path.join(top, "locked")
    try:
        os.chmod(top, 0o755)
        os.mkdir(locked)
        write_song(Path(locked) / "a.wav", 1, 1.0)
        os.chmod(locked, 0)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: no exec, so the loaded interpreter needs no permission of nobody's
            try:
                os.close(read_end)
                if os.geteuid() == 0:
                    os.setgid(65534)
                    os.setuid(65534)
                out = json.dumps([[s.path, s.reason] for s in scan([top]).skipped])
                os.write(write_end, out.encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as fh:
            got = fh.read()
        os.waitpid(pid, 0)
        assert json.loads(got) == [[locked, "cannot list the folder: Permission denied"]]
    finally:
        os.chmod(locked, 0o755)
        shutil.rmtree(top)
