"""Fault: hostile entries in a library, through the real fingerprint job (#14 defects 4 and 11).

One library holds good tracks beside a 1-sample WAV, an ID3-only MP3, a FIFO, a dangling
symlink, a symlink loop and a folder named like an audio file. The run must go on, process the
good tracks, and leave one error row per hostile path with a true reason; the summary counts
them. Before: the 1-sample WAV was a track (tempo 117 BPM, a key, one code), the MP3 was told
"possibly a pipe?", and the four paths that are not files were skipped without a trace.
Real Ray (in-process, this session's), real files, real SQLite.
"""
from __future__ import annotations

import os
import sqlite3

import numpy as np
import soundfile as sf

from pipeline.ingest.run import run_fingerprint
from pipeline.synth import good_library


def _id3_only(path) -> None:
    frame = b"TIT2" + (6).to_bytes(4, "big") + b"\x00\x00" + b"\x03title"
    path.write_bytes(b"ID3\x04\x00\x00" + bytes([0, 0, 0, len(frame)]) + frame)


def test_hostile_library_entries_become_error_rows_with_true_reasons(tmp_path, ray_local):
    lib = tmp_path / "lib"
    good = good_library(lib, n=2, seconds=2.0)
    sf.write(lib / "one-sample.wav", np.full(1, 0.25, np.float32), 22050)
    _id3_only(lib / "tag-only.mp3")
    os.mkfifo(lib / "pipe.wav")
    os.symlink(lib / "gone.flac", lib / "dangling.flac")
    os.symlink(lib / "loop.ogg", lib / "loop.ogg")
    (lib / "folder.wav").mkdir()
    db = tmp_path / "c.db"
    summary = run_fingerprint([str(lib)], db=str(db), out=str(tmp_path / "out"), num_cpus=2, show_progress=False,
                              log=lambda _: None)
    assert summary.processed == len(good)
    assert summary.skipped_paths == 4
    assert summary.errors == 6
    with sqlite3.connect(db) as c:
        errors = {os.path.basename(p): (stage, reason) for p, stage, reason in
                  c.execute("SELECT path, stage, reason FROM errors")}
        tracks = c.execute("SELECT COUNT(*) FROM tracks").fetchone()[0]
    assert tracks == len(good)  # the 1-sample WAV is not a track any more
    assert errors == {
        "one-sample.wav": ("decode", "too short: 0.05 ms of audio (1 sample(s) at 22050 Hz); a track needs at "
                                     "least 1 s for its features and fingerprint"),
        "tag-only.mp3": ("decode", "no audio frames: the file holds only an ID3 tag (26 bytes)"),
        "pipe.wav": ("discover", "not a regular file: a named pipe (FIFO)"),
        "dangling.flac": ("discover", f"dangling symbolic link: its target {lib / 'gone.flac'} does not exist"),
        "loop.ogg": ("discover", "symbolic link loop: the link never reaches a file"),
        "folder.wav": ("discover", "not a regular file: a folder (its contents are scanned)"),
    }


def test_truncated_flac_and_corrupted_ogg_page_get_true_reasons(tmp_path, ray_local):
    """Needs the decode-warnings change (iter_mono_blocks reports where decoding stopped and the
    stream's warnings; the track row keeps them in features.extra)."""
    import json

    from pipeline.synth import write_song

    lib = tmp_path / "lib"
    lib.mkdir()
    src = write_song(tmp_path / "s.flac", 3, 30.0, fmt="FLAC")
    data = src.read_bytes()
    (lib / "cut.flac").write_bytes(data[: int(len(data) * 0.3)])
    ogg = bytearray(write_song(tmp_path / "s.ogg", 4, 60.0, fmt="OGG", subtype="VORBIS").read_bytes())
    pages = [i for i in range(len(ogg) - 3) if ogg[i:i + 4] == b"OggS"]
    for k in range(pages[len(pages) // 2] + 40, pages[len(pages) // 2] + 60):
        ogg[k] ^= 0x5A
    (lib / "page.ogg").write_bytes(bytes(ogg))
    db = tmp_path / "c.db"
    summary = run_fingerprint([str(lib)], db=str(db), out=str(tmp_path / "out"), num_cpus=2, show_progress=False,
                              log=lambda _: None)
    assert summary.processed == 1 and summary.errors == 1
    with sqlite3.connect(db) as c:
        ((path, reason),) = c.execute("SELECT path, reason FROM errors").fetchall()
        ((extra,),) = c.execute("SELECT f.extra FROM features f JOIN track_paths p USING (content_hash)").fetchall()
    # before: "decoding stopped at 0.0 s of 30.0 s" while about 9 s decode fine
    assert path.endswith("cut.flac") and reason.startswith("truncated or corrupt: decoding stopped at ")
    assert 6.0 < float(reason.split("stopped at ")[1].split(" s")[0]) < 10.0, reason
    # before: accepted silently
    (warning,) = json.loads(extra)["warnings"]
    assert warning.startswith("corrupted Ogg page at byte ") and "s of audio" in warning, warning
