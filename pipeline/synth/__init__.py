"""Synthetic music, MIDI, degradations and broken files: one generator for the demo
library, the tests and the benchmarks.

    signals   tones, chirps, chords, clicks, drum patterns, noise (seeded, float32)
    songs     whole songs from a seed (simple_song, varied_song)
    midi      generated MIDI pieces and their audio renderings
    degrade   noise at an SNR, gain, speed change, lossy re-encoding
    library   the demo library, test libraries on disk, broken files, stored signals
    sequences token streams and feature frames with known structure (training tests)

    python -m pipeline.synth OUTDIR    # write the demo library
"""
from pipeline.synth.degrade import add_noise, change_speed, gain, noise_for_snr, reencode
from pipeline.synth.library import (
    FORMATS,
    broken_files,
    good_library,
    make_demo_library,
    store_signals,
    synthetic_hash,
    tremolo_library,
    write_song,
)
from pipeline.synth.midi import (
    GenNote,
    GenPiece,
    chord_progression_piece,
    random_piece,
    render,
    scale_piece,
    write_demo_midi,
)
from pipeline.synth.signals import (
    SR,
    chirp,
    chord,
    clicks,
    drum_pattern,
    drums,
    midi_hz,
    music,
    noise,
    silence,
    tone,
    tremolo_chord,
)
from pipeline.synth.songs import simple_song, varied_song

__all__ = [
    "FORMATS",
    "SR",
    "GenNote",
    "GenPiece",
    "add_noise",
    "broken_files",
    "change_speed",
    "chirp",
    "chord",
    "chord_progression_piece",
    "clicks",
    "drum_pattern",
    "drums",
    "gain",
    "good_library",
    "make_demo_library",
    "midi_hz",
    "music",
    "noise",
    "noise_for_snr",
    "random_piece",
    "reencode",
    "render",
    "scale_piece",
    "silence",
    "simple_song",
    "store_signals",
    "synthetic_hash",
    "tone",
    "tremolo_chord",
    "tremolo_library",
    "varied_song",
    "write_demo_midi",
    "write_song",
]
