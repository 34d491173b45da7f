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


# -- input rules (#14 defect 11): hostile files built here, reasons checked word for word --------

def _id3_only(path) -> None:
    """An ID3v2.4 tag with one title frame and nothing after it (what a tagger leaves of a lost MP3)."""
    frame = b"TIT2" + (6).to_bytes(4, "big") + b"\x00\x00" + b"\x03title"[:6]
    path.write_bytes(b"ID3\x04\x00\x00" + bytes([0, 0, 0, len(frame)]) + frame)


def test_a_one_sample_wav_is_too_short_not_a_track(tmp_path):
    import soundfile as sf

    from actors.decode import MIN_DURATION_S, probe

    sf.write(tmp_path / "one.wav", np.full(1, 0.5, np.float32), 22050)
    with pytest.raises(InputFileError) as info:
        decode_file(str(tmp_path / "one.wav"), 22050)
    assert info.value.stage == "decode"
    assert info.value.reason == ("too short: 0.05 ms of audio (1 sample(s) at 22050 Hz); a track needs at least "
                                 "1 s for its features and fingerprint")
    sf.write(tmp_path / "half.flac", np.zeros(22050 // 2, np.float32), 22050, format="FLAC")
    with pytest.raises(InputFileError, match=r"too short: 0\.50 s of audio \(11025 sample\(s\) at 22050 Hz\)"):
        probe(str(tmp_path / "half.flac"))
    # the boundary itself is a track
    write_song(tmp_path / "ok.wav", 1, MIN_DURATION_S)
    assert probe(str(tmp_path / "ok.wav")).duration_s == pytest.approx(MIN_DURATION_S)


def test_an_id3_only_mp3_is_told_it_has_no_audio_frames(tmp_path):
    _id3_only(tmp_path / "tag.mp3")
    with pytest.raises(InputFileError) as info:
        decode_file(str(tmp_path / "tag.mp3"), 22050)
    # before: "File does not exist or is not a regular file (possibly a pipe?)"
    assert info.value.reason == "no audio frames: the file holds only an ID3 tag (26 bytes)"
    # a tag followed by bytes that hold no MPEG frame
    data = (tmp_path / "tag.mp3").read_bytes() + b"\x00" * 500
    (tmp_path / "pad.mp3").write_bytes(data)
    with pytest.raises(InputFileError, match=r"^no audio frames: nothing decodable after the 26-byte ID3 tag "
                                             r"\(526 bytes in all\)$"):
        decode_file(str(tmp_path / "pad.mp3"), 22050)


def test_a_truncated_flac_says_where_decoding_really_stopped(tmp_path):
    import soundfile as sf

    from actors.decode import decode_stopped, probe

    src = write_song(tmp_path / "s.flac", 3, 30.0, fmt="FLAC")
    data = src.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: int(len(data) * 0.3)])
    info = probe(str(cut))
    with pytest.raises(Exception) as failed, sf.SoundFile(cut) as fh:
        fh.read(info.frames, dtype="float32")  # one 30 s block, as the decoder reads it: fails as a whole
    reason = decode_stopped(str(cut), info, 0, failed.value).reason
    # Reference: the longest prefix that decodes, read sample-exactly in 1000-frame steps.
    good = 0
    with sf.SoundFile(cut) as fh:
        try:
            while (n := fh.read(1000).shape[0]) == 1000:
                good += n
        except Exception:
            pass
    assert 6.0 < good / 22050 < 10.0  # 30 % of the bytes: about 9 s of the 30 s
    stopped = float(reason.split("decoding stopped at ")[1].split(" s")[0])
    assert abs(stopped - good / 22050) <= 0.15, (reason, good / 22050)  # 0.1 s steps, 0.05 s rounding
    assert reason.startswith("truncated or corrupt: decoding stopped at ") and "of 30.0 s" in reason


def test_a_corrupted_ogg_page_is_a_warning_with_the_audio_lost(tmp_path):
    import soundfile as sf

    from actors.decode import BLOCK_SECONDS, probe, stream_warnings

    src = write_song(tmp_path / "s.ogg", 4, 60.0, fmt="OGG", subtype="VORBIS")
    data = bytearray(src.read_bytes())
    pages = [i for i in range(len(data) - 3) if data[i:i + 4] == b"OggS"]
    page = pages[len(pages) // 2]
    for k in range(page + 40, page + 60):  # inside the page: its checksum fails, the decoder skips it
        data[k] ^= 0x5A
    bad = tmp_path / "bad.ogg"
    bad.write_bytes(bytes(data))

    def read_like_the_decoder(path):
        info = probe(str(path))
        n = 0
        with sf.SoundFile(path) as fh:
            block = int(BLOCK_SECONDS * info.source_sample_rate)
            while (got := fh.read(block, dtype="float32").shape[0]) == block:
                n += got
            n += got
            return stream_warnings(info, n, fh.extra_info)

    (warning,) = read_like_the_decoder(bad)
    assert warning.startswith("corrupted Ogg page at byte "), warning
    skipped = int(warning.split(": ")[1].split(" bytes skipped")[0])
    assert 0 < skipped < len(data) // len(pages) * 2
    lost = float(warning.split(", ")[1].split()[1])
    assert 0.3 < lost < 3.0, warning  # one page of ~49 in 60 s: about 1.2 s
    assert read_like_the_decoder(src) == []
