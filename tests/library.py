"""Test libraries on disk: good tracks in several formats and a zoo of broken files."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.synth.audio import SR, song

GOOD_FORMATS = [("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS"),
                ("mp3", "MP3", "MPEG_LAYER_III"), ("aiff", "AIFF", "PCM_16")]


def write_song(path: Path, seed: int, seconds: float = 4.0, *, fmt: str = "WAV", subtype: str = "PCM_16",
               sr: int = SR, stereo: bool = False) -> Path:
    y = song(seed, seconds, sr)
    sf.write(path, np.stack([y, y * 0.8], axis=1) if stereo else y, sr, format=fmt, subtype=subtype)
    return path


def good_library(folder: Path, n: int = 6, seconds: float = 4.0, seed0: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        ext, fmt, sub = GOOD_FORMATS[i % len(GOOD_FORMATS)]
        # Upper-case extension on one file: discovery must not care.
        name = f"track{seed0 + i:03d}.{ext.upper() if i == 1 else ext}"
        out.append(write_song(folder / name, seed0 + i, seconds, fmt=fmt, subtype=sub,
                              sr=44100 if i % 2 else SR, stereo=i % 3 == 0))
    return out


def broken_files(folder: Path) -> dict[str, str]:
    """Broken files -> the words their error reason must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    expect: dict[str, str] = {}
    (folder / "empty.wav").write_bytes(b"")
    expect["empty.wav"] = "empty file"
    ok = write_song(folder / ".tmp-source.wav", 99, 3.0)
    data = ok.read_bytes()
    ok.unlink()
    (folder / "truncated.wav").write_bytes(data[: len(data) // 3])
    expect["truncated.wav"] = "truncated"
    sf.write(folder / "zero-length.wav", np.zeros(0, np.float32), SR, format="WAV")
    expect["zero-length.wav"] = "no audio samples"
    (folder / "notes.mp3").write_text("these are my lecture notes, not a song\n" * 50)
    expect["notes.mp3"] = "not audio"
    (folder / "cover.ogg").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2000))
    expect["cover.ogg"] = "PNG image"
    (folder / "garbage.flac").write_bytes(b"fLaC" + os.urandom(3000))
    expect["garbage.flac"] = "corrupt"
    # WAV whose fmt chunk names a codec libsndfile cannot decode (0x0055 = MP3-in-WAV).
    fmt_chunk = struct.pack("<4sIHHIIHH", b"fmt ", 16, 0x0055, 1, SR, SR * 2, 2, 16)
    payload = os.urandom(4000)
    body = b"WAVE" + fmt_chunk + struct.pack("<4sI", b"data", len(payload)) + payload
    (folder / "unsupported.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    expect["unsupported.wav"] = "unsupported"
    if os.geteuid() != 0:  # root reads anything: the permission case only exists for other users
        p = folder / "locked.wav"
        write_song(p, 98, 2.0)
        p.chmod(0)
        expect["locked.wav"] = "permission denied"
    (folder / "bad.mid").write_bytes(b"MThd" + os.urandom(40))
    expect["bad.mid"] = ""
    return expect
