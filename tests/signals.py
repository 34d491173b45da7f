"""Seeded synthetic test signals (mono float32), importable by every test module.

All generators are deterministic: same arguments, same samples. Amplitudes
stay within [-1, 1] unless summed by the caller.
"""
from __future__ import annotations

import numpy as np

SR = 22050


def _t(seconds: float, sr: int) -> np.ndarray:
    return np.arange(round(seconds * sr)) / sr


def silence(*, seconds: float = 2.0, sr: int = SR) -> np.ndarray:
    """All zeros."""
    return np.zeros(round(seconds * sr), dtype=np.float32)


def noise(*, seconds: float = 2.0, sr: int = SR, seed: int = 0, amplitude: float = 0.3) -> np.ndarray:
    """Gaussian white noise, std ``amplitude``."""
    rng = np.random.default_rng(seed)
    return (amplitude * rng.standard_normal(round(seconds * sr))).astype(np.float32)


def chirp(*, seconds: float = 2.0, sr: int = SR, f0: float = 100.0, f1: float = 4000.0,
          amplitude: float = 0.5) -> np.ndarray:
    """Exponential sine sweep from f0 to f1 Hz."""
    t = _t(seconds, sr)
    k = (f1 / f0) ** (1.0 / max(seconds, 1e-9))
    phase = 2 * np.pi * f0 * (k**t - 1) / np.log(k)
    return (amplitude * np.sin(phase)).astype(np.float32)


def midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


def chord(notes: list[int], *, seconds: float = 2.0, sr: int = SR, harmonics: int = 4,
          amplitude: float = 0.5, seed: int = 0) -> np.ndarray:
    """Sustained chord of MIDI ``notes`` with decaying harmonics and random phases."""
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
    """Short decaying sine clicks every beat at ``bpm``, the first at t = 0."""
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
    """Kick on beats 1 and 3, snare on 2 and 4, closed hi-hat on eighths."""
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
    """A small mix: a chord progression over a drum pattern plus faint noise."""
    prog = [[60, 64, 67], [57, 60, 64], [65, 69, 72], [67, 71, 74]]
    seg = seconds / len(prog)
    parts = [chord(p, seconds=seg, sr=sr, seed=seed + i) for i, p in enumerate(prog)]
    harm = np.concatenate(parts)
    n = round(seconds * sr)
    harm = np.pad(harm, (0, max(0, n - len(harm))))[:n]
    y = 0.6 * harm + 0.5 * drum_pattern(bpm=bpm, seconds=seconds, sr=sr, seed=seed)
    y += 0.01 * noise(seconds=seconds, sr=sr, seed=seed)
    return y.astype(np.float32)
