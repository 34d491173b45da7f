"""A small synthetic music library: tones, chord progressions, drum patterns
and a few MIDI files, in several formats. Deterministic (seeded).

    python -m pipeline.synth.audio OUTDIR
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SR = 22050
NOTE_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
FORMATS = [("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS"),
           ("mp3", "MP3", "MPEG_LAYER_III"), ("aiff", "AIFF", "PCM_16")]


def midi_hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def tone(freq: float, seconds: float, sr: int = SR, *, harmonics: int = 4, decay: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    y = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, harmonics + 1))
    if decay:
        y = y * np.exp(-decay * t)
    return y.astype(np.float32)


def drums(seconds: float, bpm: float, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    y = np.zeros(int(seconds * sr), dtype=np.float32)
    beat = int(60.0 / bpm * sr)
    kick = tone(55.0, 0.15, sr, harmonics=1, decay=30.0)
    snare = (rng.standard_normal(int(0.1 * sr)) * np.exp(-40 * np.arange(int(0.1 * sr)) / sr)).astype(np.float32)
    for i, start in enumerate(range(0, y.size - beat, beat)):
        hit = kick if i % 2 == 0 else snare * 0.5
        y[start:start + hit.size] += hit[: y.size - start]
    return y


def song(seed: int, seconds: float = 20.0, sr: int = SR) -> np.ndarray:
    """Chord progression + melody + drums; every seed a different piece."""
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
        chord = [root + d, root + d + (3 if minor else 4), root + d + 7]
        seg = sum(tone(midi_hz(n), bar, sr, decay=0.5) for n in chord) * 0.2
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


def write_midi(path: Path, seed: int) -> None:
    import pretty_midi

    rng = np.random.default_rng(seed)
    pm = pretty_midi.PrettyMIDI(initial_tempo=float(rng.uniform(90, 140)))
    piano = pretty_midi.Instrument(program=0)
    t = 0.0
    root = int(rng.integers(55, 67))
    for _ in range(16):
        d = int(rng.choice([0, 5, 7, 9]))
        for n in (root + d, root + d + 4, root + d + 7):
            piano.notes.append(pretty_midi.Note(velocity=80, pitch=n, start=t, end=t + 0.9))
        t += 1.0
    drum = pretty_midi.Instrument(program=0, is_drum=True)
    for k in range(32):
        drum.notes.append(pretty_midi.Note(velocity=90, pitch=36 if k % 2 == 0 else 38, start=k * 0.5,
                                           end=k * 0.5 + 0.1))
    pm.instruments.extend([piano, drum])
    pm.write(str(path))


def make_demo_library(out: str | Path, *, n_songs: int = 24, seconds: float = 12.0, n_midi: int = 4) -> int:
    """Write the demo library (skips files that exist); returns the number of files."""
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
        else:
            y = song(1000 + i, seconds, sr)
        stereo = np.stack([y, y * 0.9], axis=1) if i % 3 == 0 else y
        sf.write(path, stereo, sr, format=fmt, subtype=sub)
    for j in range(n_midi):
        path = out / f"midi-{j:02d}.mid"
        count += 1
        if not path.exists():
            write_midi(path, 2000 + j)
    return count


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "results/demo-library"
    print(f"{make_demo_library(target)} files in {target}")
