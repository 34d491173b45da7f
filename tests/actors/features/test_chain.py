"""The feature chain (actors.features) against librosa 0.11, batching and spans.

Reference chain per track: D = librosa.stft(y); H, P = librosa.decompose.hpss(D);
chroma_stft(S=|H|^2, tuning=0); onset_strength(y=y, sr=sr); feature.tempo(onset_envelope=...);
rms(S=|D|).mean(); sum|H|^2 / sum|D|^2.

Tolerances: chroma 1e-4 abs (values in [0, 1]; measured ~5e-7), onset 1e-4 abs
(measured ~3e-6), tempo equal (same lag), rms_mean / harmonic_ratio 1e-5 relative.
Batch vs alone and spans vs whole: 1e-5 abs (float rounding only).

The reference's medians: librosa's hpss calls ``scipy.ndimage.median_filter(mode='reflect')``,
whose 1-D rank filter (scipy >= 1.15, here 1.17) returns garbage, differently from call to call,
when the window is longer than the array (a 3-frame clip against a 31-frame window gave NaN and
infinities in about 7 calls of 8; scipy issues 23075 and 22333 are of the same family). For such
arrays the reference takes the same medians from NumPy over the reflect-extended array
(:func:`_reference_median`); every longer array goes through scipy unchanged.
"""
from __future__ import annotations

from unittest import mock

import librosa
import numpy as np
import pytest

from actors.config import BatchConfig, DSPConfig
from actors.dsp import hpss as hp
from actors.dsp import onset as on
from actors.dsp.chroma import chroma_from_power
from actors.dsp.stft import stft
from actors.errors import ChromarayError
from actors.features import FeatureExtractor, TrackFeatures, span_window, track_frames
from pipeline.synth import signals as sg

SR = 22050
DSP = DSPConfig()


@pytest.fixture(scope="module")
def extractor():
    return FeatureExtractor(DSP, BatchConfig(device="cpu"))


_scipy_median = librosa.decompose.median_filter


def _numpy_reflect_median(S: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """``scipy.ndimage.median_filter(S, size, mode='reflect')`` by its definition: scipy's 'reflect'
    (d c b a | a b c d | d c b a) is NumPy's 'symmetric', and scipy's window at i is
    [i - k // 2, i + (k - 1) // 2]."""
    padded = np.pad(S, [(k // 2, (k - 1) // 2) for k in size], mode="symmetric")
    windows = np.lib.stride_tricks.sliding_window_view(padded, size)
    return np.median(windows, axis=tuple(range(S.ndim, 2 * S.ndim))).astype(S.dtype)


def _reference_median(S: np.ndarray, size: tuple[int, ...], mode: str) -> np.ndarray:
    """scipy's median where it is right, :func:`_numpy_reflect_median` where the window is longer
    than the array."""
    if mode != "reflect" or all(n >= k for n, k in zip(S.shape, size)):
        return _scipy_median(S, size=size, mode=mode)
    return _numpy_reflect_median(S, size)


def test_numpy_reference_median_equals_scipy_where_scipy_is_right():
    S = np.random.default_rng(5).random((40, 50)).astype(np.float32)
    for size in ((1, 7), (7, 1), (3, 5), (1, 31)):
        np.testing.assert_array_equal(_numpy_reflect_median(S, size), _scipy_median(S, size=size, mode="reflect"))
    short = np.random.default_rng(6).random((1025, 3)).astype(np.float32)  # the 3-frame clip's shape
    out = _numpy_reflect_median(short, (1, 31))
    assert np.isfinite(out).all() and out.min() >= short.min() and out.max() <= short.max()


def librosa_chain(y: np.ndarray) -> dict:
    D = librosa.stft(y)
    with mock.patch.object(librosa.decompose, "median_filter", _reference_median):
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


@pytest.mark.parametrize("size", [16, 37, 50])
def test_one_pass_spans_equal_the_reference_pass(extractor, size):
    """Deferred onset (one decode pass over a long file): the spans' own references give the
    track's top_db reference, and the onset then equals extract_span's with the pre-pass
    reference exactly, on a signal whose quiet part the reference changes."""
    y = np.concatenate([1e-5 * sg.music(seconds=2.0, seed=3), sg.music(seconds=1.5)])  # quiet first: late max
    n_frames = track_frames(len(y), DSP)
    ref = extractor._track_ref_db(y, 50)
    exact, deferred = [], []
    for f0 in range(0, n_frames, size):
        f1 = min(n_frames, f0 + size)
        a, b = span_window(f0, f1, DSP)
        window, kw = y[max(a, 0):min(b, len(y))], {"window_start": max(a, 0), "first_frame": f0, "stop_frame": f1}
        # the streaming decoder knows the total only for the last spans
        total = len(y) if b >= len(y) else None
        exact.append(extractor.extract_span(window, total_samples=total, ref_db=ref, **kw))
        deferred.append(extractor.extract_span_deferred(window, total_samples=total, **kw))
    assert max(m.ref_db for _, m in deferred) == pytest.approx(ref, abs=0)
    assert deferred[0][1].ref_db < ref - 30  # the first span alone would clip differently
    for (span, mel), want in zip(deferred, exact):
        span.onset = extractor.span_onset(mel, max(m.ref_db for _, m in deferred))
        np.testing.assert_array_equal(span.onset, want.onset)
        np.testing.assert_array_equal(span.chroma, want.chroma)
    assert_same(extractor.finalize_track([s for s, _ in deferred]), extractor([y])[0])


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


# ------------------------------------------------- the chain runs the kernels
# Tolerances: padded batch 1e-6 (chroma; harmonic power relative; onset x its
# peak), measured 0: the same kernels on the same frames. Spans 1e-5 (as spans
# vs whole above): a span transforms its frames in other blocks, so the float32
# FFT rounds differently (measured ~1e-6).
OTHER_DSP = DSPConfig(hpss_margin=2.0, hpss_power=1.0, hpss_kernel_size=17, onset_lag=2, onset_max_size=3)
KERNEL_YS = [sg.music(seconds=3.0), sg.chord([62, 65, 69], seconds=1.5), sg.clicks(bpm=100, seconds=2.1)]


def kernel_features(ex: FeatureExtractor, y: np.ndarray) -> dict:
    """One track alone through the kernels' public wrappers (hpss, onset_strength_from_power)."""
    d = ex.dsp
    mag = np.abs(stft(y, n_fft=d.n_fft, hop_length=d.hop_length))
    H, _ = hp.hpss(mag, kernel_size=d.hpss_kernel_size, power=d.hpss_power, margin=d.hpss_margin)
    hpow, power = H * H, mag * mag
    onset_kw = {"n_fft": d.n_fft, "hop_length": d.hop_length, "lag": d.onset_lag, "max_size": d.onset_max_size,
                "top_db": d.top_db}
    return {"chroma": chroma_from_power(hpow, ex.chroma_fb), "hpow": hpow.sum(axis=0, dtype=np.float64),
            "power": power.sum(axis=0, dtype=np.float64),
            "onset": on.onset_strength_from_power(power, ex.mel_fb, **onset_kw),
            "M_db": on.mel_db(power, ex.mel_fb), "onset_kw": onset_kw}


def assert_same_as_kernels(f: TrackFeatures, k: dict) -> None:
    np.testing.assert_allclose(f.chroma, k["chroma"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(f.onset, k["onset"], rtol=0, atol=1e-6 * max(1.0, float(k["onset"].max())))
    assert f.harmonic_ratio == pytest.approx(k["hpow"].sum() / k["power"].sum(), rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("dsp", [DSP, OTHER_DSP], ids=["defaults", "margin-power-kernel-lag-maxsize"])
def test_padded_batch_equals_kernel_wrappers(dsp):
    ex = FeatureExtractor(dsp, BatchConfig(device="cpu"))
    feats = ex(KERNEL_YS)
    assert [r["n_tracks"] for r in ex.drain_batch_log()] == [len(KERNEL_YS)]  # one padded batch
    for y, f in zip(KERNEL_YS, feats):
        assert_same_as_kernels(f, kernel_features(ex, y))


@pytest.mark.parametrize("dsp", [DSP, OTHER_DSP], ids=["defaults", "margin-power-kernel-lag-maxsize"])
def test_spans_equal_kernel_wrappers(dsp):
    """Each span's chroma, onset and harmonic energy equal the kernels on the whole
    track; per-span onset references equal the span-aware kernel on the frames it holds."""
    ex = FeatureExtractor(dsp, BatchConfig(device="cpu"))
    y = np.concatenate([sg.music(seconds=1.5), 1e-5 * sg.music(seconds=1.5, seed=3)])  # loud, then 100 dB down
    k = kernel_features(ex, y)
    t = k["M_db"].shape[-1]
    ref = float(on.db_reference(k["M_db"]))  # the kernels' top_db reference, not the chain's
    for size in (1, 37, t):
        for f0 in range(0, t, size):
            f1 = min(t, f0 + size)
            a, b = span_window(f0, f1, dsp)
            window = y[max(a, 0) : min(b, len(y))]
            exact = ex.extract_span(window, window_start=max(a, 0), first_frame=f0, stop_frame=f1,
                                    total_samples=len(y), ref_db=ref)
            np.testing.assert_allclose(exact.chroma, k["chroma"][:, f0:f1], rtol=0, atol=1e-5)
            np.testing.assert_allclose(exact.onset, k["onset"][f0:f1], rtol=0, atol=1e-5)
            assert exact.harmonic_energy == pytest.approx(k["hpow"][f0:f1].sum(), rel=1e-5, abs=1e-30)
            if size != 37:
                continue
            # frames the chain holds for this span: [g0, g1), of which [max(g0, 0), min(g1, t)) exist
            g0 = (a + dsp.n_fft // 2) // dsp.hop_length
            g1 = (b - dsp.n_fft + dsp.n_fft // 2) // dsp.hop_length + 1
            lo, hi = max(g0, 0), min(g1, t)
            own = on.onset_strength_from_mel_db(k["M_db"][None, :, lo:hi], lengths=np.array([t]), frame_offset=lo,
                                                first=f0, stop=f1, **k["onset_kw"])[0]
            per_span = ex.extract_span(window, window_start=max(a, 0), first_frame=f0, stop_frame=f1,
                                       total_samples=len(y))
            np.testing.assert_allclose(per_span.onset, own, rtol=0, atol=1e-5)
            if f0 >= t // 2 + 37:  # the quiet half: its own reference really differs
                assert not np.allclose(per_span.onset, exact.onset, atol=1e-2)


def _shorter(f):
    return lambda X, *, size, **kw: f(X, size=size - 4, **kw)


#: perturbed kernel steps (module, name, wrapper of the original, output that must move)
PERTURBED = {
    "median-time": (hp, "median_along_time", _shorter, "chroma"),
    "median-freq": (hp, "median_along_freq", _shorter, "chroma"),
    "softmask": (hp, "softmask", lambda f: lambda X, R, **kw: f(X, 2.0 * R, **kw), "chroma"),
    "mel-db": (on, "mel_db", lambda f: lambda S, fb: f(S, fb) * 1.25, "onset"),
    "db-reference": (on, "db_reference", lambda f: lambda M, **kw: f(M, **kw) + 40.0, "onset"),
    "flux": (on, "onset_flux", lambda f: lambda M, **kw: f(M, **kw) ** 2, "onset"),
    "shift": (on, "onset_from_flux", lambda f: lambda flux, *, pad, **kw: f(flux, pad=pad + 1, **kw), "onset"),
}


@pytest.mark.parametrize("step", sorted(PERTURBED))
def test_chain_calls_the_kernels(extractor, monkeypatch, step):
    """Perturb one kernel step where the kernels look it up: the chain's output moves
    with it (batch and spans) and still equals the perturbed wrappers. A private copy
    of the step in the chain would keep the old output and fail here."""
    module, name, perturb, field = PERTURBED[step]
    before = extractor(KERNEL_YS)
    monkeypatch.setattr(module, name, perturb(getattr(module, name)))
    after = extractor(KERNEL_YS)
    assert np.abs(getattr(after[0], field) - getattr(before[0], field)).max() > 1e-2
    for y, f in zip(KERNEL_YS, after):
        assert_same_as_kernels(f, kernel_features(extractor, y))
    y = KERNEL_YS[0]
    assert_same(_spans(extractor, y, 37, ref_db=extractor._track_ref_db(y, 50)), after[0])


# ------------------------------------------------------------------ n_samples
def test_n_samples_is_the_decoded_sample_count(extractor):
    ys = [sg.music(seconds=2.0), sg.clicks(seconds=1.0)[:-300], sg.chirp(seconds=0.05)]
    assert [f.n_samples for f in extractor(ys)] == [len(y) for y in ys]  # one padded batch
    assert extractor([ys[1]])[0].n_samples == len(ys[1])  # alone
    # samples within one hop give the same frames: n_frames alone cannot tell them apart
    assert [f.n_samples for f in extractor([ys[1][:-1], ys[1][:-2]])] == [len(ys[1]) - 1, len(ys[1]) - 2]
    y = ys[0][:-77]
    assert _spans(extractor, y, 37).n_samples == len(y)
    assert _spans(extractor, y, 37, total_known=False).n_samples == len(y)  # streamed: the last spans know


def test_n_samples_of_a_time_chunked_track():
    probe = FeatureExtractor(DSP, BatchConfig(device="cpu"))
    bps = probe.probe(sg.music(seconds=1.0))
    ex = FeatureExtractor(DSP, BatchConfig(device="cpu", memory_budget_bytes=int(2 * bps), min_chunk_seconds=1.0))
    ex.bytes_per_second = bps  # skip the probe: the budget is sized from this estimate
    y = sg.music(seconds=5.0)[:-123]
    (f,) = ex([y])
    assert [r["time_chunked"] for r in ex.drain_batch_log()] == [1]
    assert f.n_samples == len(y)


def test_spans_that_never_learn_the_total_are_refused(extractor):
    y = sg.music(seconds=1.0)
    part = extractor.extract_span(y, window_start=0, first_frame=0, stop_frame=10, total_samples=None)
    with pytest.raises(ChromarayError, match="sample count"):
        extractor.finalize_track([part])
