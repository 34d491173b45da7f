"""The feature chain (actors.features) against librosa 0.11, batching and spans.

Reference chain per track: D = librosa.stft(y); H, P = librosa.decompose.hpss(D);
chroma_stft(S=|H|^2, tuning=0); onset_strength(y=y, sr=sr); feature.tempo(onset_envelope=...);
rms(S=|D|).mean(); sum|H|^2 / sum|D|^2.

Tolerances: chroma 1e-4 abs (values in [0, 1]; measured ~5e-7), onset 1e-4 abs
(measured ~3e-6), tempo equal (same lag), rms_mean / harmonic_ratio 1e-5 relative.
Batch vs alone and spans vs whole: 1e-5 abs (float rounding only).
"""
from __future__ import annotations

import librosa
import numpy as np
import pytest

from actors.config import BatchConfig, DSPConfig
from actors.errors import ChromarayError
from actors.features import FeatureExtractor, TrackFeatures, span_window, track_frames
from tests import signals as sg

SR = 22050
DSP = DSPConfig()


@pytest.fixture(scope="module")
def extractor():
    return FeatureExtractor(DSP, BatchConfig(device="cpu"))


def librosa_chain(y: np.ndarray) -> dict:
    D = librosa.stft(y)
    H, _ = librosa.decompose.hpss(D)
    onset = librosa.onset.onset_strength(y=y, sr=SR)
    total = float((np.abs(D) ** 2).sum(dtype=np.float64))
    return {
        "chroma": librosa.feature.chroma_stft(S=np.abs(H) ** 2, sr=SR, tuning=0),
        "onset": onset,
        "tempo": float(librosa.feature.tempo(onset_envelope=onset, sr=SR)[0]),
        "rms_mean": float(librosa.feature.rms(S=np.abs(D)).mean(dtype=np.float64)),
        "harmonic_ratio": float((np.abs(H) ** 2).sum(dtype=np.float64)) / total if total else 0.0,
    }


def assert_matches_librosa(f: TrackFeatures, y: np.ndarray) -> None:
    ref = librosa_chain(y)
    assert f.chroma.shape == ref["chroma"].shape and f.chroma.dtype == np.float32
    assert f.onset.shape == ref["onset"].shape and f.onset.dtype == np.float32
    np.testing.assert_allclose(f.chroma, ref["chroma"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(f.onset, ref["onset"], rtol=0, atol=1e-4)
    assert f.tempo_bpm == pytest.approx(ref["tempo"], rel=1e-9)
    assert f.rms_mean == pytest.approx(ref["rms_mean"], rel=1e-5, abs=1e-12)
    assert f.harmonic_ratio == pytest.approx(ref["harmonic_ratio"], rel=1e-5, abs=1e-12)
    assert f.n_frames == f.chroma.shape[1] == track_frames(len(y), DSP)
    assert f.onset_mean == pytest.approx(float(ref["onset"].mean()), rel=1e-4, abs=1e-6)
    assert f.onset_std == pytest.approx(float(ref["onset"].std()), rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(f.chroma_mean, ref["chroma"].mean(axis=1), atol=1e-4)
    assert f.frame_rate_hz == pytest.approx(SR / 512)


def assert_same(a: TrackFeatures, b: TrackFeatures, atol: float = 1e-5) -> None:
    np.testing.assert_allclose(a.chroma, b.chroma, rtol=0, atol=atol)
    np.testing.assert_allclose(a.onset, b.onset, rtol=0, atol=atol)
    assert a.tempo_bpm == b.tempo_bpm
    assert a.rms_mean == pytest.approx(b.rms_mean, rel=1e-6)
    assert a.harmonic_ratio == pytest.approx(b.harmonic_ratio, rel=1e-6, abs=1e-12)
    assert a.n_frames == b.n_frames


def test_batch_matches_librosa_and_solo(extractor):
    ys = [sg.music(seconds=4.0), sg.chord([62, 65, 69], seconds=2.5),
          sg.clicks(bpm=100, seconds=3.1), sg.noise(seconds=1.3), sg.silence(seconds=0.8),
          sg.chirp(seconds=0.05)]
    feats = extractor(ys)
    assert len(feats) == len(ys)
    for y, f in zip(ys, feats):
        assert_matches_librosa(f, y)
    # every track of the padded batch equals the track alone
    for y, f in zip(ys[:3], feats[:3]):
        assert_same(f, extractor([y])[0])
    log = extractor.drain_batch_log()
    assert log[0]["n_tracks"] == len(ys) and log[0]["time_chunked"] == 0
    assert log[0]["audio_seconds"] == pytest.approx(sum(len(y) for y in ys) / SR)
    assert extractor.batch_log == []


def test_silence_features(extractor):
    f = extractor([sg.silence(seconds=1.0)])[0]
    assert not f.chroma.any() and not f.onset.any()
    assert f.harmonic_ratio == 0.0 and f.rms_mean == 0.0


def test_extractor_rejects_non_mono(extractor):
    with pytest.raises(ChromarayError):
        extractor([np.zeros((2, 100), np.float32)])


def _spans(extractor, y, size, *, total_known=True, ref_db=None, tight=True):
    n_frames = track_frames(len(y), DSP)
    spans = []
    for f0 in range(0, n_frames, size):
        f1 = min(n_frames, f0 + size)
        a, b = span_window(f0, f1, DSP)
        # a streaming decoder learns the total once its window reaches the end
        known = total_known or b >= len(y)
        lo, hi = max(a, 0), (min(b, len(y)) if known else b)
        if not tight:  # callers may hand over more than needed
            lo, hi = max(0, lo - 999), min(len(y), hi + 999)
        spans.append(extractor.extract_span(y[lo:hi], window_start=lo, first_frame=f0,
                                            stop_frame=f1,
                                            total_samples=len(y) if known else None,
                                            ref_db=ref_db))
    return extractor.finalize_track(spans)


@pytest.mark.parametrize("size", [1, 16, 37, 200])
def test_spans_equal_whole_track(extractor, size):
    y = sg.music(seconds=3.0)
    whole = extractor([y])[0]
    ref_db = extractor._track_ref_db(y, 50)
    assert_same(_spans(extractor, y, size, ref_db=ref_db), whole)
    assert_same(_spans(extractor, y, size, ref_db=ref_db, tight=False), whole)


def test_spans_with_unknown_total(extractor):
    """total_samples=None (streamed): chroma/HPSS exact; onset uses a per-span top_db
    reference, equal here because no frame of this signal is 80 dB below its max."""
    y = sg.music(seconds=3.0)
    whole = extractor([y])[0]
    assert_same(_spans(extractor, y, 40, total_known=False), whole)


def test_per_span_reference_differs_only_in_onset(extractor):
    """A loud part then a very quiet part: per-span references change the onset of
    the quiet span (documented), never chroma; an exact ref_db restores equality."""
    y = np.concatenate([sg.music(seconds=2.0), 1e-5 * sg.music(seconds=2.0, seed=3)])
    whole = extractor([y])[0]
    split = track_frames(2 * SR, DSP) + 20
    per_span = _spans(extractor, y, split)
    np.testing.assert_allclose(per_span.chroma, whole.chroma, rtol=0, atol=1e-5)
    assert not np.allclose(per_span.onset, whole.onset, atol=1e-3)
    exact = _spans(extractor, y, split, ref_db=extractor._track_ref_db(y, 64))
    assert_same(exact, whole)


def test_span_window_and_errors(extractor):
    a, b = span_window(0, 10, DSP)
    assert a < 0 and b > 9 * DSP.hop_length
    y = sg.music(seconds=1.0)
    a, b = span_window(5, 20, DSP)
    with pytest.raises(ChromarayError):  # window misses the needed context
        extractor.extract_span(y[a + 100 : b], window_start=a + 100, first_frame=5, stop_frame=20,
                               total_samples=len(y))
    s1 = extractor.extract_span(y, window_start=0, first_frame=0, stop_frame=10,
                                total_samples=len(y))
    s3 = extractor.extract_span(y, window_start=0, first_frame=20, stop_frame=10_000,
                                total_samples=len(y))
    assert s3.stop_frame == track_frames(len(y), DSP)  # clipped to the track
    with pytest.raises(ChromarayError):  # gap between spans
        extractor.finalize_track([s1, s3])
    with pytest.raises(ChromarayError):
        extractor.finalize_track([s3])


def test_real_audio_parity(extractor, shared_audio):
    """Two real tracks, 20 s crops, resampled to 22.05 kHz: same tolerances as synthetic."""
    import soundfile as sf
    import soxr

    ys = []
    for path in shared_audio[:2]:
        info = sf.info(str(path))
        x, file_sr = sf.read(str(path), frames=int(20 * info.samplerate), dtype="float32",
                             always_2d=True)
        y = soxr.resample(x.mean(axis=1), file_sr, SR).astype(np.float32)
        ys.append(y)
    for y, f in zip(ys, extractor(ys)):
        assert_matches_librosa(f, y)


@pytest.mark.gpu
def test_gpu_extractor_equals_cpu(extractor):
    """CuPy path: same features as the CPU path (runs only where a GPU exists)."""
    ys = [sg.music(seconds=3.0), sg.clicks(seconds=1.7)]
    gpu = FeatureExtractor(DSP, BatchConfig(device="gpu"))
    assert gpu.device == "gpu"
    for a, b in zip(gpu(ys), extractor(ys)):
        assert_same(a, b, atol=1e-4)
    assert gpu.drain_batch_log()[0]["device"] == "gpu" and gpu.batch_log == []


def test_gpu_request_without_gpu_is_a_user_error():
    from actors.dsp.xp import gpu_available

    if gpu_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ChromarayError):
        FeatureExtractor(DSP, BatchConfig(device="gpu"))


def test_unknown_device_is_a_user_error():
    with pytest.raises(ChromarayError):
        FeatureExtractor(DSP, BatchConfig(device="tpu"))
