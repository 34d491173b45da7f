"""actors.decode: streaming decode + resample, failure reasons, span windows."""
from __future__ import annotations

import numpy as np
import pytest

from actors.decode import decode_file, iter_spans
from actors.errors import InputFileError
from pipeline.synth import broken_files, write_song


def test_broken_files_get_reasons_a_user_understands(tmp_path):
    expect = broken_files(tmp_path)
    for name, words in expect.items():
        if name.endswith(".mid"):
            continue
        with pytest.raises(InputFileError) as info:
            decode_file(str(tmp_path / name), 22050)
        assert info.value.stage == "decode"
        assert words.lower() in info.value.reason.lower(), (name, info.value.reason)


@pytest.mark.parametrize("ext,fmt,sub", [("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"),
                                         ("ogg", "OGG", "VORBIS"), ("mp3", "MP3", "MPEG_LAYER_III"),
                                         ("aiff", "AIFF", "PCM_16")])
def test_decode_matches_librosa_load(tmp_path, ext, fmt, sub):
    import librosa

    path = write_song(tmp_path / f"s.{ext}", 5, 3.0, fmt=fmt, subtype=sub, sr=44100, stereo=True)
    ours = decode_file(str(path), 22050)
    ref, _ = librosa.load(str(path), sr=22050, mono=True)
    n = min(ours.size, ref.size)
    assert abs(ours.size - ref.size) <= 2
    np.testing.assert_allclose(ours[:n], ref[:n], atol=1e-5)


def test_spans_cover_the_track_with_context(tmp_path):
    y = np.random.default_rng(0).standard_normal(10_000).astype(np.float32)
    blocks = iter(np.array_split(y, 7))
    hop, ctx = 100, 250

    def window(a: int, b: int) -> tuple[int, int]:
        return a * hop - ctx, (b - 1) * hop + ctx

    spans = list(iter_spans(blocks, hop_length=hop, frames_per_span=17, span_window=window))
    total_frames = 1 + y.size // hop
    assert [s.first_frame for s in spans] == list(range(0, total_frames, 17))
    assert spans[-1].stop_frame == total_frames
    assert all(s.n_spans == len(spans) for s in spans if s.total_samples is not None)
    for s in spans:  # each window holds exactly the track's samples, zeros outside
        ref = np.zeros(s.window.size, np.float32)
        lo, hi = max(0, s.window_start), min(y.size, s.window_start + s.window.size)
        ref[lo - s.window_start:hi - s.window_start] = y[lo:hi]
        np.testing.assert_array_equal(s.window, ref)
