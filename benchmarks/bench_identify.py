"""Benchmark of `chromaray identify`: accuracy per degradation, false positives, latency, index size.

Library: the real tracks in ../shared/data/audio (when present) plus seeded synthetic songs up to
``--n-library`` tracks. Queries: 3, 5 and 10 s excerpts cut at random *sample* offsets, under
clean, white noise at 10 and 0 dB SNR, low-bitrate MP3 and OGG/Vorbis re-encoding (soundfile /
libsndfile, no ffmpeg), MP3 + 10 dB noise (the issue's headline condition), gain change and
+-2 % speed (resampling: tempo *and* pitch change, like a turntable). Out-of-library queries are
excerpts of other seeded songs. A scale part adds synthetic postings until the index holds
``--scale-tracks`` tracks and times the same queries against it.

    .venv/bin/python benchmarks/bench_identify.py --n-library 24 --queries-per-cond 20 \
        --n-negative 200 --scale-tracks 10000 --json-out /tmp/bench_identify.json

Everything is seeded: the same command gives the same queries and the same index.
The song synthesizer and degradations below are also used by the tests (tests/test_identify.py).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

SR = 22050

# ----------------------------------------------------------------------------------------------
# Synthetic music: seeded songs with a chord progression, bass, melody and drums.
# ----------------------------------------------------------------------------------------------

_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
_MINOR = np.array([0, 2, 3, 5, 7, 8, 10])


def _tone(freq: float, n: int, sr: int, harmonics: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    out = np.zeros(n)
    for h, amp in enumerate(harmonics, start=1):
        if freq * h >= sr / 2:
            break
        out += amp * np.sin(2 * np.pi * freq * h * t + rng.uniform(0, 2 * np.pi))
    return out


def _env(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    a = max(1, int(attack * sr))
    r = max(1, int(release * sr))
    e = np.ones(n)
    e[:a] = np.linspace(0, 1, min(a, n))[: min(a, n)]
    if r < n:
        e[-r:] *= np.linspace(1, 0, r)
    return e


def synth_song(seed: int, seconds: float = 30.0, sr: int = SR) -> np.ndarray:
    """A distinct seeded "song" (mono float32 at ``sr``, peak ~0.8).

    Random key, mode, tempo, timbres; a diatonic chord progression (pad + bass), a melody on the
    scale with a rhythm, and kick/snare/hat drums. Different seeds give different songs.
    """
    rng = np.random.default_rng(seed)
    n_total = int(seconds * sr)
    y = np.zeros(n_total)
    tonic = 48 + int(rng.integers(0, 12))  # MIDI note of the key's tonic (C3..B3)
    scale = _MAJOR if rng.random() < 0.6 else _MINOR
    bpm = float(rng.uniform(78, 150))
    beat = 60.0 / bpm
    bar = 4 * beat
    n_chords = int(rng.integers(4, 9))
    degrees = rng.integers(0, 7, size=n_chords)
    bars_per_chord = rng.choice([0.5, 1, 1, 2], size=n_chords)
    pad_h = rng.uniform(0.1, 1.0, size=6) / np.arange(1, 7) ** rng.uniform(0.5, 1.5)
    bass_h = rng.uniform(0.2, 1.0, size=4) / np.arange(1, 5)
    mel_h = rng.uniform(0.1, 1.0, size=8) / np.arange(1, 9) ** rng.uniform(0.3, 1.2)

    def midi_hz(m: float) -> float:
        return 440.0 * 2 ** ((m - 69) / 12)

    def note(d: int, octave: int) -> int:
        return tonic + 12 * (octave + d // 7) + int(scale[d % 7])

    t = 0.0
    i = 0
    while t < seconds:
        d = int(degrees[i % n_chords])
        dur = float(bars_per_chord[i % n_chords]) * bar
        a, b = int(t * sr), min(n_total, int((t + dur) * sr))
        n = b - a
        if n <= 0:
            break
        for k in (0, 2, 4):  # triad
            y[a:b] += 0.22 * _tone(midi_hz(note(d + k, 0)), n, sr, pad_h, rng) * _env(n, sr, 0.05, 0.1)
        y[a:b] += 0.3 * _tone(midi_hz(note(d, -1)), n, sr, bass_h, rng) * _env(n, sr, 0.01, 0.05)
        t += dur
        i += 1
    # Melody: eighths and quarters on the scale, a random walk.
    t = 0.0
    deg = int(rng.integers(0, 7))
    while t < seconds:
        dur = beat * float(rng.choice([0.5, 0.5, 1.0, 1.5]))
        a, b = int(t * sr), min(n_total, int((t + dur) * sr))
        if rng.random() < 0.85 and b > a:
            deg = int(np.clip(deg + rng.integers(-2, 3), -3, 10))
            n = b - a
            y[a:b] += 0.25 * _tone(midi_hz(note(deg, 1)), n, sr, mel_h, rng) * np.exp(
                -np.arange(n) / (sr * rng.uniform(0.2, 0.6)))
        t += dur
    # Drums: kick on 1 and 3, snare on 2 and 4, hats on eighths.
    n_beats = int(seconds / beat) + 1
    kick = np.sin(2 * np.pi * np.cumsum(np.linspace(120, 45, int(0.15 * sr))) / sr) * np.exp(
        -np.arange(int(0.15 * sr)) / (0.04 * sr))
    snare = rng.standard_normal(int(0.12 * sr)) * np.exp(-np.arange(int(0.12 * sr)) / (0.03 * sr))
    hat = np.diff(rng.standard_normal(int(0.04 * sr) + 1)) * np.exp(-np.arange(int(0.04 * sr)) / (0.008 * sr))
    for j in range(n_beats * 2):
        pos = int(j * beat / 2 * sr)
        parts = [(hat, 0.15)]
        if j % 2 == 0:
            parts.append((kick, 0.6) if (j // 2) % 2 == 0 else (snare, 0.35))
        for sig, gain in parts:
            e = min(n_total, pos + len(sig))
            if e > pos:
                y[pos:e] += gain * sig[: e - pos]
    y /= max(1e-9, np.abs(y).max()) / 0.8
    return y.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Degradations
# ----------------------------------------------------------------------------------------------

def add_noise(y: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise at ``snr_db`` relative to the clip's mean power."""
    p = float(np.mean(y.astype(np.float64) ** 2)) + 1e-12
    noise = rng.standard_normal(len(y)) * np.sqrt(p / 10 ** (snr_db / 10))
    return (y + noise).astype(np.float32)


def reencode(y: np.ndarray, fmt: str, sr: int = SR, *, level: float = 0.9) -> np.ndarray:
    """Round trip through a lossy codec in memory (libsndfile). ``fmt`` is "mp3" or "ogg".

    ``level`` is libsndfile's compression level: 0.9 gives ~24 kbit/s MP3 and ~40 kbit/s Vorbis
    for 22.05 kHz mono.
    """
    import soundfile as sf  # noqa: PLC0415

    y = np.clip(y, -1.0, 1.0)
    buf = io.BytesIO()
    if fmt == "mp3":
        sf.write(buf, y, sr, format="MP3", subtype="MPEG_LAYER_III", compression_level=level,
                 bitrate_mode="CONSTANT")
    elif fmt == "ogg":
        sf.write(buf, y, sr, format="OGG", subtype="VORBIS", compression_level=level)
    else:
        raise ValueError(fmt)
    buf.seek(0)
    z, _ = sf.read(buf, dtype="float32", always_2d=False)
    return z


def change_speed(y: np.ndarray, factor: float, sr: int = SR) -> np.ndarray:
    """Play ``factor`` times faster (tempo and pitch, like a turntable), same sample rate."""
    import soxr  # noqa: PLC0415

    return soxr.resample(y, sr * factor, sr, quality="HQ").astype(np.float32)


def degrade(y: np.ndarray, condition: str, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    """Apply one named benchmark condition to a clip."""
    if condition == "clean":
        return y
    if condition == "noise10":
        return add_noise(y, 10, rng)
    if condition == "noise0":
        return add_noise(y, 0, rng)
    if condition == "mp3":
        return reencode(y, "mp3", sr)
    if condition == "ogg":
        return reencode(y, "ogg", sr)
    if condition == "mp3_noise10":
        return reencode(add_noise(y, 10, rng), "mp3", sr)
    if condition == "gain":
        return (y * (0.25 if rng.random() < 0.5 else 1.8)).astype(np.float32)
    if condition == "speed+2":
        return change_speed(y, 1.02, sr)
    if condition == "speed-2":
        return change_speed(y, 0.98, sr)
    raise ValueError(condition)


CONDITIONS = ["clean", "noise10", "noise0", "mp3", "ogg", "mp3_noise10", "gain", "speed+2", "speed-2"]
