"""pipeline.synth.library: synthetic files round-trip through decoding."""
from __future__ import annotations

import soundfile as sf

from pipeline.synth import write_song


def test_write_song_roundtrip(tmp_path):
    p = write_song(tmp_path / "x.flac", 3, 1.0, fmt="FLAC")
    assert sf.info(p).frames > 0
