"""Deterministic generated MIDI pieces and their audio renderings (tests, benchmarks).

No downloads: pieces are composed from a seed (key, chord progression, melody, bass,
drums, tempo changes) and written with mido as type 0 or type 1 files; audio is rendered
with pretty_midi's additive synthesis (a harmonic waveform, not a bare sine, so the audio
chroma carries overtones like a real instrument), drum hits as noise bursts, an optional
tempo warp and additive noise.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.synth.degrade import noise_for_snr

__all__ = [
    "MAJOR",
    "MINOR",
    "PROGRESSIONS",
    "GenNote",
    "GenPiece",
    "chord_progression_piece",
    "random_piece",
    "render",
    "scale_piece",
    "write_demo_midi",
]

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)  # natural minor (+ raised 7th in V chords below)
PROGRESSIONS = (
    (0, 3, 4, 0), (0, 5, 3, 4), (0, 4, 5, 3), (1, 4, 0, 0), (0, 3, 0, 4),
    (5, 3, 0, 4), (0, 2, 3, 4), (0, 5, 1, 4), (3, 4, 2, 5), (0, 4, 3, 4),
)


@dataclass(frozen=True)
class GenNote:
    """One note: MIDI pitch, start and duration in beats, velocity 1-127, index into the piece's tracks."""

    pitch: int
    start_beat: float
    dur_beats: float
    velocity: int
    track: int


@dataclass
class GenPiece:
    """A generated piece: note list in beats plus tracks, tempo and meter changes."""

    name: str
    tonic: int  # pitch class
    mode: str  # major | minor
    notes: list[GenNote]
    tracks: list[tuple[str, int, bool]]  # (name, program, is_drum)
    tempos: list[tuple[float, float]]  # (beat, bpm)
    meters: list[tuple[float, int, int]]  # (beat, num, den)

    def to_midi(self, *, midi_type: int = 1, tpq: int = 480) -> bytes:
        """Standard MIDI File bytes (type 0: one track, channels kept; type 1: one track per part)."""
        import mido

        def meta_events() -> list[tuple[int, int, mido.MetaMessage]]:
            ev = []
            for beat, bpm in self.tempos:
                ev.append((round(beat * tpq), 0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))))
            for beat, num, den in self.meters:
                ev.append((round(beat * tpq), 0, mido.MetaMessage("time_signature", numerator=num, denominator=den)))
            return ev

        def track_events(ti: int) -> list[tuple[int, int, object]]:
            name, program, is_drum = self.tracks[ti]
            ch = 9 if is_drum else [c for c in range(16) if c != 9][ti % 15]
            ev: list[tuple[int, int, object]] = [(0, 0, mido.MetaMessage("track_name", name=name)),
                                                 (0, 1, mido.Message("program_change", channel=ch, program=program))]
            for n in self.notes:
                if n.track != ti:
                    continue
                a = round(n.start_beat * tpq)
                b = max(a + 1, round((n.start_beat + n.dur_beats) * tpq))
                ev.append((a, 3, mido.Message("note_on", channel=ch, note=n.pitch, velocity=n.velocity)))
                ev.append((b, 2, mido.Message("note_off", channel=ch, note=n.pitch, velocity=0)))  # offs before ons
            return ev

        def to_track(events: Sequence[tuple[int, int, Any]]) -> mido.MidiTrack:
            tr = mido.MidiTrack()
            now = 0
            for t, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
                tr.append(msg.copy(time=t - now))
                now = t
            tr.append(mido.MetaMessage("end_of_track", time=0))
            return tr

        mid = mido.MidiFile(type=midi_type, ticks_per_beat=tpq)
        if midi_type == 0:
            ev = meta_events()
            for ti in range(len(self.tracks)):
                ev += track_events(ti)
            mid.tracks.append(to_track(ev))
        else:
            mid.tracks.append(to_track(meta_events()))
            for ti in range(len(self.tracks)):
                mid.tracks.append(to_track(track_events(ti)))
        buf = io.BytesIO()
        mid.save(file=buf)
        return buf.getvalue()


def scale_piece(name: str, *, tonic: int = 60, mode: str = "major", bpm: float = 120.0) -> GenPiece:
    """One octave up and down a scale in eighth notes (single track)."""
    steps = MAJOR if mode == "major" else MINOR
    up = [tonic + s for s in steps] + [tonic + 12]
    seq = up + up[-2::-1]
    notes = [GenNote(p, i * 0.5, 0.5, 80, 0) for i, p in enumerate(seq)]
    return GenPiece(name, tonic % 12, mode, notes, [("piano", 0, False)], [(0.0, bpm)], [(0.0, 4, 4)])


def chord_progression_piece(name: str, *, tonic: int = 60, mode: str = "major",
                            degrees: Sequence[int] = (0, 3, 4, 0),
                            bpm: float = 100.0, beats_per_chord: int = 4) -> GenPiece:
    """Block triads, one per ``beats_per_chord`` beats (single track)."""
    notes = [GenNote(p, i * beats_per_chord, beats_per_chord, 70, 0)
             for i, d in enumerate(degrees) for p in _triad(tonic, mode, d)]
    return GenPiece(name, tonic % 12, mode, notes, [("chords", 0, False)], [(0.0, bpm)], [(0.0, 4, 4)])


def random_piece(seed: int, *, n_bars: int = 12, tempo_change: bool = True, drums: bool = True,
                 meter: tuple[int, int] | None = None, bpm: float | None = None) -> GenPiece:
    """A seeded multi-track piece: chords, bass, melody, optional drums and tempo changes.

    Keys, modes, progressions, rhythms and melodies are drawn from ``seed`` so distinct
    seeds are distinct pieces, often sharing key and progression (hard negatives).
    """
    rng = np.random.default_rng(seed)
    tonic = 48 + int(rng.integers(0, 12))
    mode = "major" if rng.random() < 0.6 else "minor"
    steps = MAJOR if mode == "major" else MINOR
    num, den = meter if meter else ((3, 4) if rng.random() < 0.25 else (4, 4))
    beats_per_bar = num * 4 / den
    prog = [PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))] for _ in range((n_bars + 3) // 4)]
    degrees = [d for p in prog for d in p][:n_bars]
    bpm0 = float(bpm if bpm is not None else rng.uniform(80, 140))
    tracks = [("chords", int(rng.choice([0, 4, 48, 19])), False), ("bass", int(rng.choice([32, 33, 42])), False),
              ("melody", int(rng.choice([73, 40, 56, 0, 80])), False)]
    if drums:
        tracks.append(("drums", 0, True))
    notes: list[GenNote] = []
    for bar, d in enumerate(degrees):
        t0 = bar * beats_per_bar
        triad = _triad(tonic, mode, d)
        style = int(rng.integers(3))
        if style == 0:  # block chord
            notes += [GenNote(p, t0, beats_per_bar, 60, 0) for p in triad]
        else:  # broken chord / arpeggio in quarters or eighths
            step = 1.0 if style == 1 else 0.5
            k = 0
            t = 0.0
            while t < beats_per_bar - 1e-9:
                notes.append(GenNote(triad[k % 3] + (12 if style == 2 and k % 6 >= 3 else 0), t0 + t, step, 55, 0))
                k += 1
                t += step
        notes.append(GenNote(triad[0] - 12, t0, beats_per_bar / 2, 75, 1))
        notes.append(GenNote(triad[0] - 12 + (7 if rng.random() < 0.5 else 12), t0 + beats_per_bar / 2,
                             beats_per_bar / 2, 70, 1))
        # melody: chord tones on strong beats, scale steps between
        t = 0.0
        deg_idx = steps.index((triad[0] - tonic) % 12) if (triad[0] - tonic) % 12 in steps else 0
        pos = 14 + deg_idx + int(rng.integers(0, 3)) * 2
        while t < beats_per_bar - 1e-9:
            dur = float(rng.choice([0.5, 0.5, 1.0, 1.0, 1.5, 2.0]))
            dur = min(dur, beats_per_bar - t)
            if rng.random() < 0.12:
                t += dur  # rest
                continue
            pos = int(np.clip(pos + int(rng.choice([-2, -1, -1, 1, 1, 2, 0])), 7, 21))
            pitch = tonic + 12 * (pos // 7) + steps[pos % 7]
            notes.append(GenNote(int(pitch), t0 + t, dur, int(rng.integers(70, 110)), 2))
            t += dur
        if drums:
            for b in range(int(beats_per_bar)):
                notes.append(GenNote(36 if b % 2 == 0 else 38, t0 + b, 0.25, 100, 3))
                notes.append(GenNote(42, t0 + b + 0.5, 0.25, 60, 3))
    tempos = [(0.0, round(bpm0, 2))]
    if tempo_change:
        at = beats_per_bar * (n_bars // 2)
        tempos.append((at, round(bpm0 * float(rng.choice([0.8, 0.9, 1.15, 1.25])), 2)))
    return GenPiece(f"piece{seed}", tonic % 12, mode, notes, tracks, tempos, [(0.0, num, den)])


def _triad(tonic: int, mode: str, degree: int) -> list[int]:
    steps = MAJOR if mode == "major" else MINOR
    ps = [tonic + 12 * ((degree + k) // 7) + steps[(degree + k) % 7] for k in (0, 2, 4)]
    if mode == "minor" and degree == 4:
        ps[1] += 1  # harmonic-minor dominant (major V)
    return ps


def _harmonic_wave(x: np.ndarray) -> np.ndarray:
    # A few decaying overtones (roughly a soft sawtooth): octave, twelfth and major
    # seventeenth land in other chroma bins, as with real instruments.
    return (np.sin(x) + 0.5 * np.sin(2 * x) + 0.33 * np.sin(3 * x) + 0.2 * np.sin(4 * x) + 0.12 * np.sin(5 * x)) / 2.15


def render(midi_bytes: bytes, *, sample_rate: int = 22050, tempo_factor: float = 1.0, warp: float = 0.0,
           noise_snr_db: float | None = 20.0, seed: int = 0) -> np.ndarray:
    """Mono float32 audio of a MIDI file at ``sample_rate``.

    tempo_factor: >1 plays faster (durations divided by it). warp: extra piecewise tempo
    wobble (fraction, e.g. 0.05 = +-5 % per segment). noise_snr_db: white noise level
    (None: clean). Pitched tracks use pretty_midi's synthesis with a harmonic waveform;
    drum hits become short decaying noise bursts (pretty_midi renders drums as silence).
    """
    import pretty_midi

    rng = np.random.default_rng(seed)
    pm = pretty_midi.PrettyMIDI(io.BytesIO(midi_bytes))
    end = pm.get_end_time()
    # piecewise-linear time map: original anchor times -> new times
    n_seg = max(2, int(end // 4))
    src = np.linspace(0, end, n_seg + 1)
    rates = tempo_factor * (1.0 + warp * rng.uniform(-1, 1, n_seg))
    dst = np.concatenate([[0.0], np.cumsum(np.diff(src) / rates)])
    pm.adjust_times(src, dst)
    n = int((pm.get_end_time() + 0.5) * sample_rate)
    out = np.zeros(n, np.float64)
    for inst in pm.instruments:
        if inst.is_drum:
            burst_len = int(0.08 * sample_rate)
            env = np.exp(-np.arange(burst_len) / (0.015 * sample_rate))
            for note in inst.notes:
                a = int(note.start * sample_rate)
                seg = rng.standard_normal(burst_len) * env * (note.velocity / 127) * 0.3
                b = min(n, a + burst_len)
                out[a:b] += seg[: b - a]
            continue
        y = inst.synthesize(fs=sample_rate, wave=_harmonic_wave)
        m = min(n, len(y))
        out[:m] += y[:m]
    peak = np.abs(out).max()
    if peak > 0:
        out /= peak
    if noise_snr_db is not None:
        out += noise_for_snr(n, float(np.mean(out ** 2)), noise_snr_db, rng)
    return out.astype(np.float32)


def write_demo_midi(path: Path, seed: int) -> None:
    """The demo library's MIDI file: 16 one-second major triads on 0, 5, 7 or 9 semitones above a
    random root, on piano, over 32 kick/snare hits half a second apart; tempo 90-140 bpm (meta
    only: note times are in seconds). Written by pretty_midi.

    Not a :class:`GenPiece`: the demo files' bytes are pinned, and pretty_midi writes them.
    """
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
