"""MIDI analysis inside workers: parse, notes, chroma, tempo map, key, statistics, tokens.

Parsing uses **symusic** (C++ core, maintained, the backend of miditok 3): it reads type 0
and type 1 files in ~1-5 ms, converts tick times to seconds through the tempo map for us,
and hands notes out as NumPy arrays, so a whole library is cheap on CPU. Tokens come from
**miditok**'s REMI on the same symusic ``Score`` (no second parse, no network: the
tokenizer is built from a fixed config, never downloaded).

Everything here is pure (bytes in, arrays out) and imports no Ray.

Frame convention (same as the audio chroma of ``actors.features``): frame ``t`` is centred
at ``t / frame_rate_hz`` seconds and a track of ``d`` seconds has ``1 + floor(d * rate)``
frames (librosa ``center=True`` framing: ``1 + n_samples // hop``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from actors.errors import InputFileError

__all__ = ["MAX_DURATION_S", "MIDI_ANALYSIS_VERSION", "MIN_US_PER_QUARTER", "PITCH_CLASSES", "TOKENIZER_NAME",
           "MidiAnalysis", "analyze_midi", "default_tokenizer", "estimate_key", "harmonic_template", "make_tokenizer",
           "midi_chroma_frames", "midi_features_version", "midi_heard_chroma", "midi_onset_frames", "n_frames_for",
           "parse_score", "piano_roll", "tokenize", "vocab_json"]


#: Bump when anything that changes stored MIDI rows changes (chroma, onset, notes, stats).
MIDI_ANALYSIS_VERSION = "m2"  # m2: a tempo of 0 or absurdly fast is an error row (was a 0 s track)
#: Name stored with every token row; bump the suffix when the tokenizer config changes.
TOKENIZER_NAME = "REMI-v1"
#: Files longer than this are refused: a corrupt tempo map can make a few bytes last days.
MAX_DURATION_S = 4 * 3600.0
STAGE = "midi"

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Krumhansl & Kessler (1982) probe-tone profiles, tonic first.
_KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def midi_features_version(frame_rate_hz: float) -> str:
    """features_version of MIDI rows: changes with the analysis, the frame rate and the tokenizer."""
    return f"{MIDI_ANALYSIS_VERSION}-{float(frame_rate_hz):.4f}-{TOKENIZER_NAME}"


def n_frames_for(duration_s: float, frame_rate_hz: float) -> int:
    """Frames of a track lasting ``duration_s`` seconds (librosa centred framing)."""
    return 1 + int(np.floor(max(duration_s, 0.0) * frame_rate_hz + 1e-9))


@dataclass
class MidiAnalysis:
    """Everything derived from one MIDI file.

    notes: dict of 1-D arrays, one entry per note, sorted by start then pitch:
      pitch int16 (MIDI number), start float32 (s), end float32 (s), velocity int16 (1..127),
      program int16 (GM program 0..127; drums keep their track's program), is_drum bool.
    chroma: (12, T) float32, pitch-class energy of non-drum notes per frame, max-normalised
      per frame, zeros where nothing sounds.
    onset: (T,) float32, sum of velocity/127 of notes (drums included) starting in each frame.
    tempo_map: [(time_s, bpm)], time_signatures: [(time_s, numerator, denominator)].
    stats: JSON-ready dict (note statistics, counts, midi_type, and the tempo map and
      time signatures as lists) stored as the features row's ``extra``.
    """

    notes: dict[str, np.ndarray]
    chroma: np.ndarray
    onset: np.ndarray
    frame_rate_hz: float
    duration_s: float
    tempo_map: list[tuple[float, float]]
    time_signatures: list[tuple[float, int, int]]
    key: str
    stats: dict[str, Any]
    tokens: list[int] = field(default_factory=list)
    tokenizer_name: str = TOKENIZER_NAME

    @property
    def n_frames(self) -> int:
        return int(self.chroma.shape[1])

    @property
    def tempo_bpm(self) -> float:
        """First tempo of the map (what the features row stores)."""
        return float(self.tempo_map[0][1]) if self.tempo_map else 120.0

    @property
    def chroma_mean(self) -> np.ndarray:
        """(12,) float32 mean of the frame chroma (same summary as audio tracks)."""
        return self.chroma.mean(axis=1).astype(np.float32) if self.n_frames else np.zeros(12, np.float32)

    def piano_roll(self, *, include_drums: bool = False) -> np.ndarray:
        """(128, T) float32 velocity/127 piano roll at ``frame_rate_hz`` (derived on demand)."""
        return piano_roll(self.notes, frame_rate_hz=self.frame_rate_hz, n_frames=self.n_frames,
                          include_drums=include_drums)


# ----------------------------------------------------------------------------- parsing


def _midi_bytes(data: bytes) -> bytes:
    """The Standard MIDI File inside ``data``; RIFF-wrapped .rmi files are unwrapped."""
    if data[:4] == b"RIFF" and data[8:12] == b"RMID":
        at = data.find(b"MThd")
        if at >= 0:
            return data[at:]
    return data


def _header(data: bytes) -> tuple[int, int, int]:
    """(format type, declared track count, division) from the MThd chunk."""
    if data[:4] != b"MThd":
        raise InputFileError(STAGE, "not a MIDI file (no 'MThd' header)")
    if len(data) < 14:
        raise InputFileError(STAGE, "corrupt MIDI file: truncated header")
    fmt = int.from_bytes(data[8:10], "big")
    ntrk = int.from_bytes(data[10:12], "big")
    division = int.from_bytes(data[12:14], "big")
    return fmt, ntrk, division


def parse_score(data: bytes) -> Any:
    """symusic ``Score`` (tick time) of a type 0/1 MIDI file; InputFileError otherwise."""
    from symusic import Score

    if not data:
        raise InputFileError(STAGE, "empty file")
    data = _midi_bytes(bytes(data))
    fmt, _ntrk, division = _header(data)
    if fmt == 2:
        # Type 2 holds independent sequences with no shared timeline: a single
        # tempo map, chroma or alignment of the "piece" would be meaningless.
        raise InputFileError(STAGE, "MIDI type 2 (independent sequences) is not supported; use type 0 or 1")
    if fmt not in (0, 1):
        raise InputFileError(STAGE, f"corrupt MIDI header (format {fmt})")
    if division == 0:
        raise InputFileError(STAGE, "corrupt MIDI header (zero ticks per quarter note)")
    if b"MTrk" not in data[14:]:
        raise InputFileError(STAGE, "corrupt MIDI file: no track chunk")
    try:
        score = Score.from_midi(data)
    except Exception as exc:  # symusic raises RuntimeError/ValueError with its parser message
        msg = str(exc).replace("MiniMidi: ", "").replace(": iostream error", "").strip()
        raise InputFileError(STAGE, f"corrupt MIDI file: {msg[:200]}") from exc
    return score


# ----------------------------------------------------------------------------- features


def _notes_of(score_s: Any) -> dict[str, np.ndarray]:
    """Note table of a second-time symusic Score (see MidiAnalysis.notes)."""
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("pitch", "start", "end", "velocity", "program", "is_drum")}
    for track in score_s.tracks:
        if track.note_num() == 0:
            continue
        a = track.notes.numpy()
        n = len(a["time"])
        start = a["time"].astype(np.float32)
        cols["pitch"].append(a["pitch"].astype(np.int16))
        cols["start"].append(start)
        cols["end"].append((start + np.maximum(a["duration"], 0).astype(np.float32)).astype(np.float32))
        cols["velocity"].append(a["velocity"].astype(np.int16))
        cols["program"].append(np.full(n, int(track.program), np.int16))
        cols["is_drum"].append(np.full(n, bool(track.is_drum), bool))
    dtypes = {"pitch": np.int16, "start": np.float32, "end": np.float32, "velocity": np.int16,
              "program": np.int16, "is_drum": bool}
    notes = {k: (np.concatenate(v) if v else np.zeros(0, dtypes[k])).astype(dtypes[k]) for k, v in cols.items()}
    order = np.lexsort((notes["pitch"], notes["start"]))
    return {k: v[order] for k, v in notes.items()}


def _frame_span(notes: dict[str, np.ndarray], frame_rate_hz: float, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """First and one-past-last frame sounding for each note.

    A note sounds in frame t when t/rate lies in [start, end); a note shorter than a frame
    still marks the frame nearest its start, so grace notes are not lost.
    """
    a = np.ceil(notes["start"].astype(np.float64) * frame_rate_hz - 1e-6).astype(np.int64)
    b = np.ceil(notes["end"].astype(np.float64) * frame_rate_hz - 1e-6).astype(np.int64)
    short = b <= a  # no frame centre inside the note
    a = np.where(short, np.rint(notes["start"].astype(np.float64) * frame_rate_hz).astype(np.int64), a)
    b = np.where(short, a + 1, b)
    return np.clip(a, 0, n_frames), np.clip(b, 0, n_frames)


def _accumulate(rows: np.ndarray, a: np.ndarray, b: np.ndarray, w: np.ndarray, n_rows: int,
                n_frames: int) -> np.ndarray:
    """(n_rows, n_frames) sum of weight ``w`` over frames [a, b) of each row (difference array)."""
    diff = np.zeros((n_rows, n_frames + 1), np.float64)
    np.add.at(diff, (rows, a), w)
    np.add.at(diff, (rows, b), -w)
    # A running sum of +w/-w leaves rounding residue (~1e-16, either sign) where nothing sounds;
    # the true sums are non-negative, so clip (a chroma value must never be below 0).
    return np.maximum(np.cumsum(diff[:, :-1], axis=1), 0.0)


def midi_chroma_frames(notes: dict[str, np.ndarray], *, frame_rate_hz: float, n_frames: int) -> np.ndarray:
    """(12, n_frames) float32 chroma of the non-drum notes.

    Each note adds its energy (velocity/127)^2 to its pitch class while it sounds (the audio
    chroma is built from a power spectrogram, so energy is the like-for-like weight); each
    frame is then divided by its maximum like librosa's chroma (norm=inf), silent frames stay 0.
    """
    keep = ~notes["is_drum"]
    if not keep.any() or n_frames <= 0:
        return np.zeros((12, max(n_frames, 0)), np.float32)
    sub = {k: v[keep] for k, v in notes.items()}
    a, b = _frame_span(sub, frame_rate_hz, n_frames)
    w = (sub["velocity"].astype(np.float64) / 127.0) ** 2
    chroma = _accumulate(sub["pitch"].astype(np.int64) % 12, a, b, w, 12, n_frames)
    peak = chroma.max(axis=0, keepdims=True)
    out = np.divide(chroma, peak, out=np.zeros_like(chroma), where=peak > 1e-12)
    return out.astype(np.float32)


def harmonic_template(n_partials: int, rolloff: float) -> np.ndarray:
    """(12,) energy a note adds to each pitch class, relative to its own (index 0), through its
    first ``n_partials`` harmonics: partial k (k = 1 the fundamental) lies 12*log2(k) semitones
    up (octaves fold onto 0, the 3rd and 6th harmonic on the fifth, the 5th on the major third,
    the 7th a flat seventh) with amplitude ``rolloff ** (k - 1)``, i.e. energy ``rolloff ** (2k - 2)``."""
    if n_partials < 1 or not 0.0 <= rolloff <= 1.0:
        raise ValueError(f"need n_partials >= 1 and rolloff in [0, 1], got {n_partials!r}, {rolloff!r}")
    t = np.zeros(12, np.float64)
    for k in range(1, n_partials + 1):
        t[round(12 * np.log2(k)) % 12] += rolloff ** (2 * (k - 1))
    return t


def midi_heard_chroma(notes: dict[str, np.ndarray], *, frame_rate_hz: float, n_frames: int,
                      decay_s: float = 2.0, floor: float = 0.1, n_partials: int = 1, rolloff: float = 0.6,
                      release_s: float = 0.0) -> np.ndarray:
    """(12, n_frames) float32 chroma of the non-drum notes *as a recording sounds*: each note's
    energy (velocity/127)^2 decays as ``floor + (1 - floor) * exp(-t / (decay_s / 2))`` after
    its onset (amplitude time constant ``decay_s``), then each frame is max-normalised.

    Used for matching against audio (pipeline.midi_match): plucked/struck notes fade, so in
    a recording a chord held for 6 s is drowned by the melody played over it, while the
    plain :func:`midi_chroma_frames` keeps it at full weight. On renderings of long real
    pieces this raised the alignment score of the true recording from ~0.2 to ~0.55.

    What a real instrument adds (both off by default, which gives the plain decaying chroma):
    ``n_partials`` > 1 spreads each note's energy over the pitch classes of its harmonics
    (:func:`harmonic_template`, amplitude ``rolloff ** (k - 1)``), as the audio chroma sees
    them; ``release_s`` > 0 keeps a note sounding after its note-off, its energy falling
    from the value it had with amplitude time constant ``release_s`` (the instrument's
    release and the room's reverb), for as long as it stays above 1e-3 of it.
    GM drums (channel 10) are excluded: they carry no pitch class.
    """
    keep = ~notes["is_drum"]
    out = np.zeros((12, max(n_frames, 0)), np.float64)
    if not keep.any() or n_frames <= 0:
        return out.astype(np.float32)
    sub = {k: v[keep] for k, v in notes.items()}
    a, b = _frame_span(sub, frame_rate_hz, n_frames)
    w = (sub["velocity"].astype(np.float64) / 127.0) ** 2
    tail = np.zeros(0)
    if release_s > 0:
        # energy time constant release_s / 2; stop at 1e-3 (-30 dB)
        n_tail = int(np.ceil(release_s / 2 * np.log(1e3) * frame_rate_hz))
        tail = np.exp(-2.0 * np.arange(1, n_tail + 1) / (release_s * frame_rate_hz))
    longest = int((b - a).max())
    env = floor + (1.0 - floor) * np.exp(-2.0 * np.arange(longest) / (decay_s * frame_rate_hz))
    for pc, s, e, wi in zip((sub["pitch"].astype(np.int64) % 12).tolist(), a.tolist(), b.tolist(), w.tolist()):
        out[pc, s:e] += wi * env[: e - s]
        if len(tail) and e > s:
            t1 = min(n_frames, e + len(tail))
            out[pc, e:t1] += wi * env[e - s - 1] * tail[: t1 - e]
    if n_partials > 1:
        t = harmonic_template(n_partials, rolloff)
        # pitch class p sends t[j] of its energy to (p + j) % 12: a circulant matrix
        fold = np.stack([np.roll(t, p) for p in range(12)], axis=1)
        out = fold @ out
    peak = out.max(axis=0, keepdims=True)
    return np.divide(out, peak, out=np.zeros_like(out), where=peak > 1e-12).astype(np.float32)


def midi_onset_frames(notes: dict[str, np.ndarray], *, frame_rate_hz: float, n_frames: int) -> np.ndarray:
    """(n_frames,) float32: sum of velocity/127 of the notes (drums included) starting in each frame."""
    out = np.zeros(max(n_frames, 0), np.float64)
    if len(notes["start"]) and n_frames > 0:
        idx = np.clip(np.rint(notes["start"].astype(np.float64) * frame_rate_hz).astype(np.int64), 0, n_frames - 1)
        np.add.at(out, idx, notes["velocity"].astype(np.float64) / 127.0)
    return out.astype(np.float32)


def piano_roll(notes: dict[str, np.ndarray], *, frame_rate_hz: float, n_frames: int,
               include_drums: bool = False) -> np.ndarray:
    """(128, n_frames) float32: max velocity/127 of the notes of each pitch sounding in each frame."""
    roll = np.zeros((128, max(n_frames, 0)), np.float32)
    keep = np.ones(len(notes["pitch"]), bool) if include_drums else ~notes["is_drum"]
    if not keep.any() or n_frames <= 0:
        return roll
    sub = {k: v[keep] for k, v in notes.items()}
    a, b = _frame_span(sub, frame_rate_hz, n_frames)
    vel = sub["velocity"].astype(np.float32) / 127.0
    for p, s, e, v in zip(sub["pitch"].tolist(), a.tolist(), b.tolist(), vel.tolist()):
        # max (not sum): a re-struck note on the same key is still one key down
        np.maximum(roll[p, s:e], v, out=roll[p, s:e])
    return roll


def estimate_key(pc_weights: np.ndarray) -> str:
    """'C major' .. 'B minor' from (12,) pitch-class weights (Krumhansl-Schmuckler).

    The weights are correlated with the 24 rotated Krumhansl-Kessler profiles; the best
    correlation names the key. Returns '' when the weights are flat (no pitched notes).
    """
    w = np.asarray(pc_weights, np.float64)
    if w.shape != (12,) or not np.isfinite(w).all() or w.std() < 1e-9:
        return ""
    best, name = -np.inf, ""
    for mode, prof in (("major", _KK_MAJOR), ("minor", _KK_MINOR)):
        for tonic in range(12):
            r = np.corrcoef(w, np.roll(prof, tonic))[0, 1]
            if r > best + 1e-12:
                best, name = r, f"{PITCH_CLASSES[tonic]} {mode}"
    return name


def _tempo_map(score_s: Any) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for t in score_s.tempos:
        time_s, bpm = float(t.time), float(t.qpm)
        if not np.isfinite(bpm) or bpm <= 0:
            continue
        if out and abs(out[-1][0] - time_s) < 1e-6:
            out[-1] = (time_s, bpm)  # several events at one instant: the last one wins
        elif not out or abs(out[-1][1] - bpm) > 1e-3:
            out.append((time_s, bpm))
    if not out or out[0][0] > 1e-6:
        out.insert(0, (0.0, 120.0))  # SMF default until the first tempo event
    return [(round(t, 6), round(b, 4)) for t, b in out]


def _time_signatures(score_s: Any) -> list[tuple[float, int, int]]:
    out: list[tuple[float, int, int]] = []
    for ts in score_s.time_signatures:
        item = (float(ts.time), int(ts.numerator), int(ts.denominator))
        if item[1] <= 0 or item[2] <= 0:
            continue
        if out and abs(out[-1][0] - item[0]) < 1e-6:
            out[-1] = item
        elif not out or out[-1][1:] != item[1:]:
            out.append(item)  # type 1 files repeat the meter in every track: keep changes only
    if not out or out[0][0] > 1e-6:
        out.insert(0, (0.0, 4, 4))  # SMF default
    return [(round(t, 6), n, d) for t, n, d in out]


def _stats(notes: dict[str, np.ndarray], score_s: Any, duration_s: float, frame_rate_hz: float,
           n_frames: int, fmt: int, tpq: int) -> dict[str, Any]:
    pitched = ~notes["is_drum"]
    n = len(notes["pitch"])
    tracks_with_notes = [t for t in score_s.tracks if t.note_num() > 0]
    instruments = {(int(t.program), bool(t.is_drum)) for t in tracks_with_notes}
    s: dict[str, Any] = {
        "midi_type": int(fmt),
        "ticks_per_quarter": int(tpq),
        "n_notes": n,
        "n_pitched_notes": int(pitched.sum()),
        "n_drum_notes": int((~pitched).sum()),
        "n_tracks": len(tracks_with_notes),
        "n_instruments": len(instruments),
        "programs": sorted({p for p, d in instruments if not d}),
        "has_drums": any(d for _, d in instruments),
        "duration_s": round(float(duration_s), 4),
        "notes_per_s": round(n / duration_s, 4) if duration_s > 0 else 0.0,
        "velocity_mean": round(float(notes["velocity"].mean()), 3) if n else 0.0,
    }
    if pitched.any():
        p = notes["pitch"][pitched].astype(np.float64)
        dur = (notes["end"][pitched] - notes["start"][pitched]).astype(np.float64)
        a, b = _frame_span({k: v[pitched] for k, v in notes.items()}, frame_rate_hz, n_frames)
        poly = _accumulate(np.zeros(len(a), np.int64), a, b, np.ones(len(a)), 1, n_frames)[0]
        sounding = poly > 0
        s.update(
            pitch_min=int(p.min()), pitch_max=int(p.max()), pitch_mean=round(float(p.mean()), 3),
            pitch_std=round(float(p.std()), 3), note_duration_mean_s=round(float(dur.mean()), 4),
            polyphony_mean=round(float(poly[sounding].mean()), 3) if sounding.any() else 0.0,
            polyphony_max=int(poly.max()), sounding_fraction=round(float(sounding.mean()), 4),
        )
    else:
        s.update(pitch_min=None, pitch_max=None, pitch_mean=None, pitch_std=None, note_duration_mean_s=None,
                 polyphony_mean=0.0, polyphony_max=0, sounding_fraction=0.0)
    return s


# ----------------------------------------------------------------------------- tokens


def make_tokenizer() -> Any:
    """The project's fixed REMI tokenizer (miditok), built offline from code (TOKENIZER_NAME).

    REMI (Huang & Yang 2020): Bar / Position / Program / Pitch / Velocity / Duration tokens,
    plus Tempo and TimeSig tokens; all tracks in one stream (``use_programs``) so a
    multi-track file is one sequence, drums included (program -1).
    Resolution: 8 positions per beat for the first 4 beats of a duration, 4 after;
    32 velocity bins; 32 tempo bins between 40 and 250 BPM; pitches 21..108 (piano range,
    GM drums 27..87 fit).
    """
    from miditok import REMI, TokenizerConfig

    cfg = TokenizerConfig(
        pitch_range=(21, 109),
        beat_res={(0, 4): 8, (4, 12): 4},
        num_velocities=32,
        special_tokens=["PAD", "BOS", "EOS", "MASK"],
        use_chords=False,
        use_rests=False,
        use_tempos=True,
        num_tempos=32,
        tempo_range=(40, 250),
        use_time_signatures=True,
        use_sustain_pedals=False,
        use_pitch_bends=False,
        use_programs=True,
        one_token_stream_for_programs=True,
        program_changes=False,
    )
    return REMI(cfg)


@lru_cache(maxsize=1)
def default_tokenizer() -> Any:
    """One tokenizer per process (building it costs ~ms, but workers call us per file)."""
    return make_tokenizer()


def tokenize(score_tick: Any, tokenizer: Any = None) -> list[int]:
    """Token ids of a tick-time symusic Score (one stream for all tracks)."""
    tok = tokenizer if tokenizer is not None else default_tokenizer()
    seq = tok.encode(score_tick)
    if isinstance(seq, list):  # tokenizer configured with one stream per track: concatenate
        return [int(i) for s in seq for i in s.ids]
    return [int(i) for i in seq.ids]


def vocab_json(tokenizer: Any = None) -> str:
    """JSON for <out>/tokens/vocab.json.

    Keys: ``tokenizer`` (TOKENIZER_NAME, what token rows store), ``vocab_size``, ``vocab``
    (token string -> id), ``special_tokens`` and ``miditok`` (miditok's own parameter dict:
    write it to a file and ``miditok.REMI(params=that_file)`` rebuilds the same tokenizer).
    """
    tok = tokenizer if tokenizer is not None else default_tokenizer()
    params = json.loads(json.dumps(tok.to_dict(), default=str))
    return json.dumps({
        "tokenizer": TOKENIZER_NAME,
        "vocab_size": len(tok),
        "vocab": dict(sorted(tok.vocab.items(), key=lambda kv: kv[1])),
        "special_tokens": {t: tok.vocab[t] for t in tok.special_tokens if t in tok.vocab},
        "miditok": params,
    }, indent=1, sort_keys=False)


# ----------------------------------------------------------------------------- entry point


#: Fastest tempo accepted: a quarter note of 10 ms (6000 bpm) is no music a file means to play;
#: a tempo event of 0 (or a few) microseconds per quarter note collapses every note to time 0.
MIN_US_PER_QUARTER = 10_000


def _check_tempos(score_tick: Any) -> None:
    """InputFileError for a tempo event that makes the file's timing meaningless (tick-time Score)."""
    for t in score_tick.tempos:
        mspq = int(t.mspq)
        if mspq < MIN_US_PER_QUARTER:
            what = "0 microseconds" if mspq <= 0 else f"{mspq} microseconds ({60e6 / mspq:.0f} bpm)"
            raise InputFileError(STAGE, f"invalid tempo: a set_tempo event of {what} per quarter note at tick "
                                        f"{int(t.time)} (the notes would last no time)")


def analyze_midi(data: bytes, *, frame_rate_hz: float, tokenizer: Any = None) -> MidiAnalysis:
    """Parse MIDI ``data`` and derive everything stored for it.

    Raises InputFileError(stage='midi') for empty, non-MIDI, corrupt, type 2 or note-less
    files, files with a tempo of 0 or absurdly fast (under MIN_US_PER_QUARTER per quarter
    note), or files whose tempo map makes them absurdly long.
    """
    if not frame_rate_hz or frame_rate_hz <= 0:
        raise ValueError("frame_rate_hz must be > 0")
    score = parse_score(data)
    fmt, _, _ = _header(_midi_bytes(bytes(data)))
    if score.note_num() == 0:
        raise InputFileError(STAGE, "MIDI file contains no notes")
    _check_tempos(score)
    score_s = score.to("second")
    notes = _notes_of(score_s)
    if not (np.isfinite(notes["start"]).all() and np.isfinite(notes["end"]).all()):
        raise InputFileError(STAGE, "corrupt MIDI file: note times are not finite (bad tempo events)")
    duration_s = float(max(notes["end"].max(), notes["start"].max(), 0.0))
    if duration_s > MAX_DURATION_S:
        raise InputFileError(STAGE, f"MIDI file would last {duration_s / 3600:.1f} h (corrupt tempo map?)")
    n_frames = n_frames_for(duration_s, frame_rate_hz)
    chroma = midi_chroma_frames(notes, frame_rate_hz=frame_rate_hz, n_frames=n_frames)
    onset = midi_onset_frames(notes, frame_rate_hz=frame_rate_hz, n_frames=n_frames)
    pitched = ~notes["is_drum"]
    pc_w = np.bincount(notes["pitch"][pitched].astype(np.int64) % 12,
                       weights=(notes["end"] - notes["start"])[pitched].astype(np.float64), minlength=12)
    stats = _stats(notes, score_s, duration_s, frame_rate_hz, n_frames, fmt, int(score.ticks_per_quarter))
    tempo_map = _tempo_map(score_s)
    time_sigs = _time_signatures(score_s)
    stats["n_tempo_changes"] = len(tempo_map) - 1
    stats["n_time_signatures"] = len(time_sigs)
    # The features row keeps ``stats`` as its JSON ``extra``: the maps travel with it so
    # SQLite alone answers "what tempo/meter at time t" (Parquet has no per-file slot).
    stats["tempo_map"] = [[t, b] for t, b in tempo_map]
    stats["time_signatures"] = [[t, n, d] for t, n, d in time_sigs]
    try:
        tokens = tokenize(score, tokenizer)
    except Exception as exc:  # a file symusic reads but miditok cannot encode is still unusable for training
        raise InputFileError(STAGE, f"MIDI tokenization failed: {type(exc).__name__}: {str(exc)[:160]}") from exc
    stats["n_tokens"] = len(tokens)
    return MidiAnalysis(
        notes=notes, chroma=chroma, onset=onset, frame_rate_hz=float(frame_rate_hz), duration_s=duration_s,
        tempo_map=tempo_map, time_signatures=time_sigs, key=estimate_key(pc_w), stats=stats,
        tokens=tokens, tokenizer_name=TOKENIZER_NAME,
    )
