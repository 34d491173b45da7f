"""Seeded synthetic signals: tones, chirps, chords, clicks, drum patterns, noise.

Every function is pure and deterministic: the same arguments (and, for those taking a
``rng``, a generator in the same state) give the same samples. Outputs are mono float32
arrays of shape ``(round(seconds * sr),)`` (``int(seconds * sr)`` for :func:`tone` and
:func:`drums`, the demo library's instruments), sample rate ``sr`` in Hz; amplitudes stay
within [-1, 1] unless the caller sums signals.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "SR",
    "chirp",
    "chord",
    "clicks",
    "drum_pattern",
    "drums",
    "midi_hz",
    "music",
    "noise",
    "silence",
    "tone",
    "tremolo_chord",
]

#: Sample rate (Hz) of every generator's default: the pipeline's analysis rate.
SR = 22050


def midi_hz(note: float) -> float:
    """Frequency (Hz, A4 = 440) of a MIDI note number (fractional notes allowed)."""
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


def _t(seconds: float, sr: int) -> np.ndarray:
    return np.arange(round(seconds * sr)) / sr


def silence(*, seconds: float = 2.0, sr: int = SR) -> np.ndarray:
    """All zeros."""
    return np.zeros(round(seconds * sr), dtype=np.float32)


def noise(*, seconds: float = 2.0, sr: int = SR, seed: int = 0, amplitude: float = 0.3) -> np.ndarray:
    """Gaussian white noise, standard deviation ``amplitude``."""
    rng = np.random.default_rng(seed)
    return (amplitude * rng.standard_normal(round(seconds * sr))).astype(np.float32)


def chirp(*, seconds: float = 2.0, sr: int = SR, f0: float = 100.0, f1: float = 4000.0,
          amplitude: float = 0.5) -> np.ndarray:
    """Exponential sine sweep from ``f0`` to ``f1`` Hz, peak ``amplitude``."""
    t = _t(seconds, sr)
    k = (f1 / f0) ** (1.0 / max(seconds, 1e-9))
    phase = 2 * np.pi * f0 * (k**t - 1) / np.log(k)
    return (amplitude * np.sin(phase)).astype(np.float32)


def chord(notes: list[int], *, seconds: float = 2.0, sr: int = SR, harmonics: int = 4,
          amplitude: float = 0.5, seed: int = 0) -> np.ndarray:
    """Sustained chord of MIDI ``notes``: 1/h harmonics below Nyquist with random phases,
    normalised to peak ``amplitude``."""
    rng = np.random.default_rng(seed)
    t = _t(seconds, sr)
    y = np.zeros_like(t)
    for note in notes:
        f = midi_hz(note)
        for h in range(1, harmonics + 1):
            if f * h < sr / 2:
                y += np.sin(2 * np.pi * f * h * t + rng.uniform(0, 2 * np.pi)) / h
    y *= amplitude / max(np.abs(y).max(), 1e-9)
    return y.astype(np.float32)


def clicks(*, bpm: float = 120.0, seconds: float = 4.0, sr: int = SR, click_ms: float = 5.0,
           freq: float = 1000.0, amplitude: float = 0.8) -> np.ndarray:
    """Short decaying sine clicks (``click_ms`` long, at ``freq`` Hz) every beat at ``bpm``,
    the first at t = 0."""
    n = round(seconds * sr)
    y = np.zeros(n)
    m = int(click_ms * 1e-3 * sr)
    tt = np.arange(m) / sr
    blip = np.sin(2 * np.pi * freq * tt) * np.exp(-tt / (click_ms * 1e-3 / 4))
    for start in np.arange(0, seconds, 60.0 / bpm):
        i = round(start * sr)
        j = min(n, i + m)
        y[i:j] += blip[: j - i]
    return (amplitude * y).astype(np.float32)


def drum_pattern(*, bpm: float = 120.0, seconds: float = 4.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Kick on beats 1 and 3, snare on 2 and 4, closed hi-hat on eighths; peak 0.8."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sr)
    y = np.zeros(n)
    beat = 60.0 / bpm

    def put(sig: np.ndarray, at: float) -> None:
        i = round(at * sr)
        j = min(n, i + len(sig))
        if i < n:
            y[i:j] += sig[: j - i]

    tk = np.arange(int(0.15 * sr)) / sr
    kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-tk * 30)) * tk) * np.exp(-tk * 20)
    ts = np.arange(int(0.12 * sr)) / sr
    snare = (0.6 * rng.standard_normal(ts.size) + 0.4 * np.sin(2 * np.pi * 190 * ts)) * np.exp(-ts * 30)
    th = np.arange(int(0.03 * sr)) / sr
    hat = 0.3 * rng.standard_normal(th.size) * np.exp(-th * 150)
    k = 0
    while k * beat < seconds:
        put(kick if k % 2 == 0 else snare, k * beat)
        put(hat, k * beat)
        put(hat, (k + 0.5) * beat)
        k += 1
    y *= 0.8 / max(np.abs(y).max(), 1e-9)
    return y.astype(np.float32)


def music(*, seconds: float = 4.0, sr: int = SR, bpm: float = 120.0, seed: int = 0) -> np.ndarray:
    """A small mix: a I-vi-IV-V chord progression over :func:`drum_pattern` plus faint noise."""
    prog = [[60, 64, 67], [57, 60, 64], [65, 69, 72], [67, 71, 74]]
    seg = seconds / len(prog)
    parts = [chord(p, seconds=seg, sr=sr, seed=seed + i) for i, p in enumerate(prog)]
    harm = np.concatenate(parts)
    n = round(seconds * sr)
    harm = np.pad(harm, (0, max(0, n - len(harm))))[:n]
    y = 0.6 * harm + 0.5 * drum_pattern(bpm=bpm, seconds=seconds, sr=sr, seed=seed)
    y += 0.01 * noise(seconds=seconds, sr=sr, seed=seed)
    return y.astype(np.float32)


def tone(freq: float, seconds: float, sr: int = SR, *, harmonics: int = 4, decay: float = 0.0) -> np.ndarray:
    """The demo library's instrument: ``harmonics`` partials of amplitude 1/k in sine phase
    (no Nyquist cut), times ``exp(-decay * t)`` (decay in 1/s; 0: sustained). Peak up to
    sum(1/k); shape ``(int(seconds * sr),)``."""
    t = np.arange(int(seconds * sr)) / sr
    y = np.zeros(t.size)
    for k in range(1, harmonics + 1):
        y += np.sin(2 * np.pi * freq * k * t) / k
    if decay:
        y = y * np.exp(-decay * t)
    return y.astype(np.float32)


def drums(seconds: float, bpm: float, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    """The demo library's drum loop: a 55 Hz kick and a noise snare alternating on every beat
    (no normalisation; peak about 1). Draws the snare from ``rng``, so a song can share its
    generator and stay reproducible from one seed."""
    y = np.zeros(int(seconds * sr), dtype=np.float32)
    beat = int(60.0 / bpm * sr)
    kick = tone(55.0, 0.15, sr, harmonics=1, decay=30.0)
    snare = (rng.standard_normal(int(0.1 * sr)) * np.exp(-40 * np.arange(int(0.1 * sr)) / sr)).astype(np.float32)
    for i, start in enumerate(range(0, y.size - beat, beat)):
        hit = kick if i % 2 == 0 else snare * 0.5
        y[start:start + hit.size] += hit[: y.size - start]
    return y


def tremolo_chord(rng: np.random.Generator, *, seconds: float, sr: int = SR) -> np.ndarray:
    """Three random notes (110 Hz to 110 Hz * 2**(35/12)) in random phase, with a random 0.5-3 Hz
    tremolo (depth 0.4) and 2 % white noise; peak about 0.8. Draws everything from ``rng``:
    successive calls on one generator give a set of distinct tracks."""
    t = np.arange(int(seconds * sr)) / sr
    notes = 110.0 * 2 ** (rng.integers(0, 36, size=3) / 12)
    x = np.zeros(t.size)
    for f in notes:
        x += np.sin(2 * np.pi * f * t + rng.uniform(0, 6.28))
    x = x / 3 * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t)) + 0.02 * rng.standard_normal(t.size)
    return np.asarray(0.8 * x, dtype=np.float32)
