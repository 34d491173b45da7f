"""Synthetic libraries: the demo library, test libraries on disk (good tracks in every format
and a zoo of broken files), and a library of in-memory signals stored as the fingerprint job
stores it. Deterministic (seeded), except the random bytes of some broken files and the
stream serial numbers libvorbis writes into OGG files (their decoded samples are fixed).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.synth.midi import write_demo_midi
from pipeline.synth.signals import SR, drums, midi_hz, tone, tremolo_chord
from pipeline.synth.songs import simple_song

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from actors.config import DSPConfig

__all__ = [
    "FORMATS",
    "broken_files",
    "good_library",
    "make_demo_library",
    "store_signals",
    "synthetic_hash",
    "tremolo_library",
    "write_song",
]

#: (extension, libsndfile format, subtype) of every audio format the libraries are written in.
FORMATS = [("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS"),
           ("mp3", "MP3", "MPEG_LAYER_III"), ("aiff", "AIFF", "PCM_16")]


def write_song(path: Path, seed: int, seconds: float = 4.0, *, fmt: str = "WAV", subtype: str = "PCM_16",
               sr: int = SR, stereo: bool = False) -> Path:
    """Write :func:`~pipeline.synth.songs.simple_song` ``(seed, seconds, sr)`` to ``path``;
    ``stereo``: right channel at 0.8 of the left. Returns ``path``."""
    import soundfile as sf

    y = simple_song(seed, seconds, sr)
    sf.write(path, np.stack([y, y * 0.8], axis=1) if stereo else y, sr, format=fmt, subtype=subtype)
    return path


def good_library(folder: Path, n: int = 6, seconds: float = 4.0, seed0: int = 0) -> list[Path]:
    """``n`` songs ``track{seed:03d}.<ext>`` cycling through :data:`FORMATS`, every other one at
    44.1 kHz, every third one stereo, the second with an upper-case extension. Returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        ext, fmt, sub = FORMATS[i % len(FORMATS)]
        # Upper-case extension on one file: discovery must not care.
        name = f"track{seed0 + i:03d}.{ext.upper() if i == 1 else ext}"
        out.append(write_song(folder / name, seed0 + i, seconds, fmt=fmt, subtype=sub,
                              sr=44100 if i % 2 else SR, stereo=i % 3 == 0))
    return out


def broken_files(folder: Path) -> dict[str, str]:
    """Write one file per way a file can be broken; returns file name -> the words its error
    reason must contain ("" for bad.mid: any reason). ``locked.wav`` only when not root."""
    import soundfile as sf

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


def tremolo_library(folder: Path, n: int, seconds: float, *, seed: int = 11, sr: int = 16000) -> list[Path]:
    """``n`` distinct 16-bit WAV tracks ``{i:03d}.wav`` of :func:`~pipeline.synth.signals.tremolo_chord`,
    all drawn from one generator seeded ``seed``. 16 kHz keeps many tracks small (the pipeline
    resamples). Returns the paths in order."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = []
    for i in range(n):
        p = folder / f"{i:03d}.wav"
        sf.write(p, tremolo_chord(rng, seconds=seconds, sr=sr), sr, subtype="PCM_16")
        files.append(p)
    return files


def make_demo_library(out: str | Path, *, n_songs: int = 24, seconds: float = 12.0, n_midi: int = 4) -> int:
    """Write the demo library (songs, chord progressions, tones and drum loops in the five
    :data:`FORMATS`, half at 44.1 kHz, a third stereo, plus MIDI files) to ``out``, skipping
    files that exist. Returns the number of files of the library."""
    import soundfile as sf

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for i in range(n_songs):
        ext, fmt, sub = FORMATS[i % len(FORMATS)]
        kind = ("song", "chords", "tones", "drums")[i % 4]
        path = out / f"{i:02d}-{kind}.{ext}"
        count += 1
        if path.exists():
            continue
        rng = np.random.default_rng(1000 + i)
        sr = 44100 if i % 2 else SR  # half the files need resampling
        if kind == "tones":
            y = np.concatenate([tone(midi_hz(int(n)), seconds / 6, sr) for n in rng.integers(48, 84, size=6)]) * 0.3
        elif kind == "drums":
            y = drums(seconds, float(rng.uniform(80, 160)), rng, sr)
        else:  # "chords" files are whole songs too: a chord progression, a melody and drums
            y = simple_song(1000 + i, seconds, sr)
        stereo = np.stack([y, y * 0.9], axis=1) if i % 3 == 0 else y
        sf.write(path, stereo, sr, format=fmt, subtype=sub)
    for j in range(n_midi):
        path = out / f"midi-{j:02d}.mid"
        count += 1
        if not path.exists():
            write_demo_midi(path, 2000 + j)
    return count


def synthetic_hash(name: str) -> str:
    """Content hash (sha256 hex) standing in for a file's when there are no file bytes: of the name."""
    return hashlib.sha256(name.encode()).hexdigest()


def store_signals(engine: Engine, out_dir: str | Path, items: Sequence[tuple[str, np.ndarray]], *,
                  dsp: DSPConfig | None = None, run_id: str = "synthetic") -> list[str]:
    """Store in-memory tracks ``(path, mono float32 signal at dsp.sample_rate)`` as the fingerprint job
    would, without Ray or files to decode: features by the pipeline's CPU feature chain, the
    job's rows (tracks, features, fingerprints, track_paths) and Parquet parts (under
    ``out_dir``) by its result sink. Content hashes are :func:`synthetic_hash` of the paths,
    which must be distinct. The search index is not touched (``pipeline.search.index.sync``).
    ``dsp`` (default: the defaults) is the analysis the library is built with; it is recorded
    with the rows as a real run records it. Returns the content hashes in order."""
    from actors.config import BatchConfig, DSPConfig
    from actors.features import FeatureExtractor
    from actors.stages import empty_row, to_table, track_result
    from pipeline.config import ChromarayConfig
    from pipeline.ingest.plan import versions_for
    from pipeline.ingest.sink import ResultSink

    cfg = ChromarayConfig(dsp=dsp or DSPConfig())
    hashes = [synthetic_hash(p) for p, _ in items]
    feats = FeatureExtractor(cfg.dsp, BatchConfig(device="cpu"))([y for _, y in items])
    rows = [empty_row(content_hash=h, path=p, meta=json.dumps({"format": Path(p).suffix[1:].upper()}),
                      payload=pickle.dumps(track_result(f, cfg.dsp)))
            for (p, _), h, f in zip(items, hashes, feats)]
    sink = ResultSink(engine, Path(out_dir), run_id, dsp=cfg.dsp, versions=versions_for(cfg), paths_by_hash={},
                      rows_per_part=len(rows) + 1)
    sink.add(to_table(rows))
    sink.flush()
    return hashes
