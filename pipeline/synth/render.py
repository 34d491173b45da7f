"""Render MIDI files with a real synthesizer: FluidSynth and a General MIDI soundfont.

Real instruments (sampled attacks, harmonics, GM drums on channel 10, reverb and chorus,
release tails) are what a recording of a MIDI file sounds like; pretty_midi's additive
synthesis (pipeline.synth.midi.render) is not. Used by the MIDI matching tests and
benchmarks/bench_midi.py.

- ``tempo_factor`` rewrites the file's tempo events (a tempo map, not a resampling, so the
  pitch is kept, as a performer playing faster would);
- ``noise_snr_db`` adds white noise at that SNR to the rendering.

System packages (Debian): ``fluidsynth`` and ``fluid-soundfont-gm``
(``scripts/system_deps.sh fluidsynth fluid-soundfont-gm``). Without them
:func:`fluidsynth_available` says why and :func:`render_fluidsynth` raises ChromarayError
with that reason.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from actors.errors import ChromarayError
from pipeline.synth.degrade import noise_for_snr

__all__ = ["DEFAULT_SOUNDFONT", "fluidsynth_available", "render_fluidsynth", "scale_tempo", "write_rendering"]

DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
_INSTALL = "install it with `scripts/system_deps.sh fluidsynth fluid-soundfont-gm`"


def _soundfont(soundfont: str | os.PathLike | None) -> Path:
    return Path(soundfont) if soundfont is not None else DEFAULT_SOUNDFONT


def fluidsynth_available(soundfont: str | os.PathLike | None = None) -> str | None:
    """None when FluidSynth and the soundfont are present, else the reason (one line)."""
    if shutil.which("fluidsynth") is None:
        return f"fluidsynth is not installed; {_INSTALL}"
    sf2 = _soundfont(soundfont)
    if not sf2.is_file():
        return f"soundfont {sf2} not found; {_INSTALL}"
    return None


def scale_tempo(midi_bytes: bytes, factor: float) -> bytes:
    """The MIDI file with every tempo ``factor`` times faster (a file without tempo events gets
    one at tick 0: the SMF default of 120 bpm, scaled). Note ticks are unchanged."""
    import mido

    if not factor > 0:
        raise ValueError(f"tempo factor must be > 0, got {factor!r}")
    mid = mido.MidiFile(file=io.BytesIO(midi_bytes))
    found = False
    for track in mid.tracks:
        for msg in track:
            if msg.type == "set_tempo":
                msg.tempo = max(1, min(0xFFFFFF, round(msg.tempo / factor)))
                found = True
    if not found and mid.tracks:
        mid.tracks[0].insert(0, mido.MetaMessage("set_tempo", tempo=round(500_000 / factor), time=0))
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def _last_note_off_s(midi_bytes: bytes) -> float:
    """Seconds from the start to the end of the last note (symusic, through the tempo map)."""
    from symusic import Score

    try:
        score = Score.from_midi(midi_bytes).to("second")  # type: ignore[attr-defined]
    except Exception as exc:  # symusic's parser message
        raise ChromarayError(f"cannot render: corrupt MIDI file ({str(exc)[:160]})") from exc
    ends = [float(np.max(a["time"] + a["duration"])) for a in (t.notes.numpy() for t in score.tracks if t.note_num())]
    if not ends:
        raise ChromarayError("cannot render: the MIDI file contains no notes")
    return max(ends)


def render_fluidsynth(midi_bytes: bytes, *, sample_rate: int = 22050, tempo_factor: float = 1.0,
                      noise_snr_db: float | None = None, seed: int = 0,
                      soundfont: str | os.PathLike | None = None, tail_s: float = 3.0,
                      timeout_s: float = 300.0) -> np.ndarray:
    """Mono float32 audio of a MIDI file rendered by FluidSynth at ``sample_rate``.

    ``tempo_factor`` > 1 plays faster; ``noise_snr_db``: white noise at that SNR relative to
    the rendering's mean power (None: clean). The rendering ends ``tail_s`` after the last
    note-off. Raises ChromarayError when FluidSynth or the soundfont is missing, or when
    FluidSynth fails, runs past ``timeout_s`` or renders silence.
    """
    why = fluidsynth_available(soundfont)
    if why is not None:
        raise ChromarayError(why)
    data = scale_tempo(midi_bytes, tempo_factor) if tempo_factor != 1.0 else midi_bytes
    # FluidSynth plays to the last event of any track; a file whose end-of-track lies hours
    # after its last note (seen in real files) would render hours of silence. Stop it at the
    # last note-off plus ``tail_s`` (release and reverb), read from raw float32 output.
    end_s = _last_note_off_s(data)
    n_keep = int((end_s + tail_s) * sample_rate)
    limit_bytes = n_keep * 2 * 4  # stereo float32
    with tempfile.TemporaryDirectory(prefix="chromaray-fluid-") as tmp:
        mid, raw = Path(tmp) / "in.mid", Path(tmp) / "out.raw"
        mid.write_bytes(data)
        # -ni: no shell, no MIDI input; -q: quiet; -F: render to file (faster than real time)
        cmd = ["fluidsynth", "-ni", "-q", "-T", "raw", "-O", "float", "-E", "little", "-r", str(int(sample_rate)),
               "-F", str(raw), str(_soundfont(soundfont)), str(mid)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        stopped = False
        while proc.poll() is None:
            if raw.is_file() and raw.stat().st_size > limit_bytes:
                proc.terminate()
                stopped = True
            elif time.monotonic() - t0 > timeout_s:
                proc.kill()
                proc.wait()
                raise ChromarayError(f"fluidsynth took more than {timeout_s:.0f} s")
            time.sleep(0.05)
        err = proc.stderr.read() if proc.stderr else ""
        if (proc.returncode != 0 and not stopped) or not raw.is_file():
            msg = err.strip().splitlines()
            raise ChromarayError(f"fluidsynth failed (exit {proc.returncode}): {msg[-1][:200] if msg else 'no output'}")
        n = min(raw.stat().st_size // 8, n_keep)
        y = np.fromfile(raw, dtype="<f4", count=2 * n).reshape(-1, 2)
    out = y.mean(axis=1).astype(np.float64)
    power = float(np.mean(out ** 2)) if len(out) else 0.0
    if power <= 1e-12:
        raise ChromarayError("fluidsynth rendered silence (no playable notes for this soundfont?)")
    if noise_snr_db is not None:
        out += noise_for_snr(len(out), power, noise_snr_db, np.random.default_rng(seed))
    peak = float(np.abs(out).max())
    if peak > 0.99:
        out *= 0.99 / peak  # FLAC/PCM must not clip
    return out.astype(np.float32)


def write_rendering(path: str | os.PathLike, y: np.ndarray, sample_rate: int = 22050) -> Path:
    """Write a rendering as FLAC (16 bit) or any format soundfile infers from the suffix."""
    import soundfile as sf

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    sf.write(p, y, sample_rate, subtype="PCM_16" if p.suffix.lower() in (".flac", ".wav") else None)
    return p
