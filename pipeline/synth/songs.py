"""Whole synthetic songs from a seed: mono float32, shape ``(int(seconds * sr),)``, peak 0.8.

Two generators, because they are two different things with figures pinned to each:

- :func:`simple_song`: fixed timbre (1/k partials), a triad per bar, one melody note a beat,
  a kick/snare loop. The demo library, the test libraries on disk and the long-file
  benchmark are made of it.
- :func:`varied_song`: key, mode, tempo, chord rhythm and the timbre of every part drawn
  from the seed (random partial amplitudes and phases, envelopes), a bass line, a
  random-walk melody and hats: distinct seeds sound like distinct recordings, sharing
  keys and chords as real music does. The identify tests and benchmark use it, and the
  accept thresholds of ``pipeline.search.identify`` were learned on it.

They share no random draws and no instrument, so one generator with a switch between two
bodies would only hide that; changing either would change the signals of every seed.
"""
from __future__ import annotations

import numpy as np

from pipeline.synth.signals import SR, drums, midi_hz, tone

__all__ = ["simple_song", "varied_song"]


def simple_song(seed: int, seconds: float = 20.0, sr: int = SR) -> np.ndarray:
    """Chord progression + melody + drums in the demo library's instruments; every seed a
    different piece (root, tempo, degrees, melody)."""
    rng = np.random.default_rng(seed)
    root = int(rng.integers(48, 60))
    bpm = float(rng.uniform(80, 150))
    bar = 4 * 60.0 / bpm
    degrees = rng.choice([0, 2, 3, 5, 7, 9], size=int(np.ceil(seconds / bar)) + 1)
    y = np.zeros(int(seconds * sr), dtype=np.float32)
    for i, d in enumerate(degrees):
        start = int(i * bar * sr)
        if start >= y.size:
            break
        minor = d in (2, 9)
        seg = _triad_tones([root + d, root + d + (3 if minor else 4), root + d + 7], bar, sr) * 0.2
        y[start:start + seg.size] += seg[: y.size - start]
        for j in range(4):  # melody, one note a beat
            n = root + 12 + int(rng.choice([0, 2, 4, 5, 7, 9, 11]))
            s = start + int(j * bar / 4 * sr)
            if s >= y.size:
                break
            seg = tone(midi_hz(n), bar / 4, sr, decay=3.0) * 0.25
            y[s:s + seg.size] += seg[: y.size - s]
    y += drums(seconds, bpm, rng, sr) * 0.3
    return (y / max(1e-9, float(np.abs(y).max())) * 0.8).astype(np.float32)


def _triad_tones(notes: list[int], seconds: float, sr: int) -> np.ndarray:
    # Summed in float32 from the first tone on, as the demo files were written.
    out = tone(midi_hz(notes[0]), seconds, sr, decay=0.5)
    for n in notes[1:]:
        out = out + tone(midi_hz(n), seconds, sr, decay=0.5)
    return out


_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
_MINOR = np.array([0, 2, 3, 5, 7, 8, 10])


def _voice(freq: float, n: int, sr: int, harmonics: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples (float64) of partials ``harmonics[h-1] * sin(2 pi f h t + random phase)``,
    stopping at Nyquist."""
    t = np.arange(n) / sr
    out = np.zeros(n)
    for h, amp in enumerate(harmonics, start=1):
        if freq * h >= sr / 2:
            break
        out += amp * np.sin(2 * np.pi * freq * h * t + rng.uniform(0, 2 * np.pi))
    return out


def _env(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    """Linear attack/release envelope (seconds) of ``n`` samples."""
    a = max(1, int(attack * sr))
    r = max(1, int(release * sr))
    e = np.ones(n)
    e[:a] = np.linspace(0, 1, min(a, n))[: min(a, n)]
    if r < n:
        e[-r:] *= np.linspace(1, 0, r)
    return e


def varied_song(seed: int, seconds: float = 30.0, sr: int = SR) -> np.ndarray:
    """A distinct seeded "song": random key (tonic C3..B3), mode (60 % major), tempo
    (78-150 bpm) and timbres; a diatonic chord progression (pad + bass), a melody on the
    scale with a rhythm, and kick/snare/hat drums."""
    rng = np.random.default_rng(seed)
    n_total = int(seconds * sr)
    y = np.zeros(n_total)
    tonic = 48 + int(rng.integers(0, 12))
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
            y[a:b] += 0.22 * _voice(midi_hz(note(d + k, 0)), n, sr, pad_h, rng) * _env(n, sr, 0.05, 0.1)
        y[a:b] += 0.3 * _voice(midi_hz(note(d, -1)), n, sr, bass_h, rng) * _env(n, sr, 0.01, 0.05)
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
            y[a:b] += 0.25 * _voice(midi_hz(note(deg, 1)), n, sr, mel_h, rng) * np.exp(
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
