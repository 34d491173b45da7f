"""Discovery, content hashing, decoding and the error reasons users see. No Ray."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from actors.decode import decode_file, iter_spans
from actors.errors import ChromarayError, InputFileError
from pipeline.config import load_config
from pipeline.ingest.discover import build_manifest, discover
from pipeline.synth import broken_files, good_library, write_song


def test_discover_recursive_case_insensitive_hidden_symlinks(tmp_path):
    lib = tmp_path / "lib"
    good_library(lib / "a", n=3)
    write_song(lib / "b" / "deep" / "x.WaV", 1, 1.0) if (lib / "b" / "deep").mkdir(parents=True) is None else None
    (lib / ".hidden").mkdir()
    write_song(lib / ".hidden" / "secret.wav", 2, 1.0)
    write_song(lib / "a" / ".dotfile.wav", 3, 1.0)
    (lib / "notes.txt").write_text("not music")
    (lib / "a" / "song.mid").write_bytes(b"MThd")
    os.symlink(lib / "a", lib / "link-to-a")  # same folder twice through a link
    os.symlink(lib, lib / "b" / "loop")  # a cycle
    found = discover([lib])
    names = sorted(os.path.relpath(f.path, lib) for f in found)
    assert "b/deep/x.WaV" in names and "a/track001.FLAC" in names
    assert not any(".hidden" in n or ".dotfile" in n or n.endswith(".txt") for n in names)
    assert {f.kind for f in found} == {"audio", "midi"}
    # each real file is reachable through a link too (link-to-a, b/loop), but is listed once, under
    # the real folder met first, and the loop does not recurse
    assert names == ["a/song.mid", "a/track000.wav", "a/track001.FLAC", "a/track002.ogg", "b/deep/x.WaV"]


def test_missing_input_is_a_user_error(tmp_path):
    with pytest.raises(ChromarayError, match="does not exist"):
        discover([tmp_path / "nope"])


def test_manifest_hash_identifies_content_and_reuses_known_hashes(tmp_path):
    a = write_song(tmp_path / "a.wav", 1, 1.0)
    shutil.copy(a, tmp_path / "copy.wav")
    write_song(tmp_path / "b.wav", 2, 1.0)
    rows = {os.path.basename(r.path): r for r in build_manifest(discover([tmp_path]))}
    assert rows["a.wav"].content_hash == rows["copy.wav"].content_hash != rows["b.wav"].content_hash
    # unchanged (size, mtime) -> the recorded hash is trusted, the file is not read again
    known = {rows["a.wav"].path: (rows["a.wav"].size_bytes, rows["a.wav"].mtime_ns, "cached")}
    again = {os.path.basename(r.path): r for r in build_manifest(discover([tmp_path]), known)}
    assert again["a.wav"].content_hash == "cached"
    assert again["copy.wav"].content_hash == rows["a.wav"].content_hash


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


def test_config_layers_yaml_env_cli(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("dsp: {hop_length: 256}\npipeline: {feature_actors: 3}\n")
    cfg = load_config(f, overrides={"pipeline": {"feature_actors": 5}},
                      environ={"CHROMARAY_BATCH__MEMORY_FRACTION": "0.5"})
    assert (cfg.dsp.hop_length, cfg.pipeline.feature_actors, cfg.batch.memory_fraction) == (256, 5, 0.5)
    f.write_text("dsp: {hop_lenght: 256}\n")
    with pytest.raises(ChromarayError, match="hop_lenght"):
        load_config(f)
    assert cfg.dsp.version() != load_config().dsp.version()


def test_write_song_roundtrip(tmp_path):
    p = write_song(tmp_path / "x.flac", 3, 1.0, fmt="FLAC")
    assert sf.info(p).frames > 0
