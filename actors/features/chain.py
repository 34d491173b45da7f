"""The per-track feature chain: STFT -> HPSS -> harmonic chroma, onset, tempo, summaries.

One code path for NumPy and CuPy (actors.dsp kernels). Every frame-level
result equals librosa 0.11 on that track alone:

* chroma: ``chroma_stft(S=|H|^2, tuning=0, norm=inf)`` with ``H, P = hpss(stft(y))``;
* onset: ``onset_strength(y=y, sr=sr)`` (top_db reference = the track's max);
* tempo: ``feature.tempo(onset_envelope=onset)``;
* rms_mean: mean of ``feature.rms(S=|stft(y)|)``;
* harmonic_ratio: sum |H|^2 / sum |stft(y)|^2 (0 for silence).

Whole tracks go through :meth:`FeatureExtractor.__call__` in zero-padded
batches sized by actors.features.batching; a track that does not fit (by plan or by an
out-of-memory error after halving the batch down to one track) is processed
in time spans with enough context that the result equals the unchunked one.

Long files streamed by the decode stage use :func:`span_window`,
:meth:`FeatureExtractor.extract_span` and :meth:`FeatureExtractor.finalize_track`.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from actors.config import BatchConfig, DSPConfig

# Modules, not names: the chain looks its HPSS and onset kernels up at call
# time, so the tests that perturb them (tests/actors/features) reach this path.
from actors.dsp import hpss as hp
from actors.dsp import onset as on
from actors.dsp.chroma import chroma_filterbank, chroma_from_power
from actors.dsp.stft import stft
from actors.dsp.xp import cupy_or_none, to_numpy
from actors.errors import ChromarayError
from actors.features.batching import PeakMemory, budget_bytes, is_oom, plan_batches

__all__ = ["PROBE_SECONDS", "FeatureExtractor", "SpanMel", "TrackFeatures", "TrackSpan", "span_window",
           "track_frames"]

log = logging.getLogger(__name__)

#: seconds of audio in the probe batch that measures bytes per audio-second
PROBE_SECONDS = 10.0


@dataclass
class TrackFeatures:
    """Features of one track. Frame axis at ``frame_rate_hz`` (sr / hop)."""

    chroma: np.ndarray  # (n_chroma, T) float32, harmonic chroma, max-normalised per frame
    onset: np.ndarray  # (T,) float32 onset strength
    tempo_bpm: float
    harmonic_ratio: float  # sum |H|^2 / sum |S|^2 in [0, 1]
    rms_mean: float  # mean over frames of librosa.feature.rms(S=|S|)
    onset_mean: float
    onset_std: float
    chroma_mean: np.ndarray  # (n_chroma,) float32
    n_frames: int
    frame_rate_hz: float
    n_samples: int  # decoded samples at the analysis rate: the duration is n_samples / sample_rate


@dataclass
class TrackSpan:
    """Partial features of frames [first_frame, stop_frame) of one track."""

    first_frame: int
    stop_frame: int
    chroma: np.ndarray  # (n_chroma, n) float32
    onset: np.ndarray  # (n,) float32
    rms: np.ndarray  # (n,) float32
    harmonic_energy: float
    total_energy: float
    total_frames: int | None  # the track's frame count when known
    frame_rate_hz: float
    total_samples: int | None  # the track's sample count when known (always, for the last span)


@dataclass
class SpanMel:
    """What a span's onset needs once its track's top_db reference is known (one pass over
    a long track): the unclipped mel dB of the frames it held, from frame ``g0``."""

    mel_db: np.ndarray  # (n_mels, G) float32
    ref_db: float  # max over the frames held that lie in the track (a lower bound of the track's)
    g0: int
    first_frame: int
    stop_frame: int
    length: int  # the track's frame count, or a huge number while unknown


def _context_frames(dsp: DSPConfig) -> tuple[int, int]:
    """Frames of context (before, after) a span needs: the harmonic median's
    half-window and the onset flux's look-back (lag + centre shift)."""
    k = int(dsp.hpss_kernel_size)
    before = max(k // 2, on.onset_pad_width(n_fft=dsp.n_fft, hop_length=dsp.hop_length,
                                         lag=dsp.onset_lag))
    return before, k - 1 - k // 2


def track_frames(n_samples: int, dsp: DSPConfig) -> int:
    """STFT frame count of a track (centre padding): 1 + n_samples // hop."""
    return 1 + int(n_samples) // dsp.hop_length


def span_window(first_frame: int, stop_frame: int, dsp: DSPConfig) -> tuple[int, int]:
    """Sample range [a, b) of the track that frames [first_frame, stop_frame) need.

    Includes the STFT half window and the HPSS/onset context frames. ``a`` may
    be negative and ``b`` past the end of the track: those samples are zeros
    and the caller need not supply them.
    """
    before, after = _context_frames(dsp)
    g0 = first_frame - before
    g1 = stop_frame + after
    half = dsp.n_fft // 2
    return g0 * dsp.hop_length - half, (g1 - 1) * dsp.hop_length - half + dsp.n_fft


_THREADPOOLS: list[Any] = []


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Pin BLAS to one thread while the chain runs.

    Its GEMMs (filterbanks) are tiny; threaded OpenBLAS on an oversubscribed
    machine made them 5x slower than the whole rest of the chain here.
    Parallelism comes from running several actors. threadpoolctl arrives with
    librosa (via scikit-learn); without it this is a no-op.
    """
    if not _THREADPOOLS:
        try:
            from threadpoolctl import ThreadpoolController

            _THREADPOOLS.append(ThreadpoolController())
        except ImportError:
            _THREADPOOLS.append(None)
    ctl = _THREADPOOLS[0]
    if ctl is None:
        yield
        return
    with ctl.limit(limits=1, user_api="blas"):
        yield


class FeatureExtractor:
    """Batched feature chain for one actor: filterbanks built once, device picked once.

    ``batch_log`` collects one dict per executed batch (keys: device, n_tracks,
    audio_seconds, oom_splits, time_chunked, budget_bytes, peak_bytes) for the
    actor stage to drain into SQLite table batch_log. ``bytes_per_second`` is
    the measured peak bytes per padded audio-second (None before the probe).
    """

    def __init__(self, dsp: DSPConfig, batch: BatchConfig):
        self.dsp = dsp
        self.batch_cfg = batch
        cp = cupy_or_none() if batch.device != "cpu" else None
        if batch.device == "gpu" and cp is None:
            raise ChromarayError("device=gpu but CuPy has no usable GPU; use device=cpu or auto")
        self.device = "gpu" if (batch.device in ("gpu", "auto") and cp is not None) else "cpu"
        self.xp: Any = cp if self.device == "gpu" else np
        self.chroma_fb = chroma_filterbank(sr=dsp.sample_rate, n_fft=dsp.n_fft,
                                           n_chroma=dsp.n_chroma, xp=self.xp)
        self.mel_fb = on.mel_filterbank(sr=dsp.sample_rate, n_fft=dsp.n_fft, n_mels=dsp.n_mels,
                                     xp=self.xp)
        self.batch_log: list[dict[str, Any]] = []
        self.bytes_per_second: float | None = None

    def drain_batch_log(self) -> list[dict[str, Any]]:
        """Return and clear the batch records collected so far."""
        out, self.batch_log = self.batch_log, []
        return out

    # ------------------------------------------------------------------ core
    def _compute(
        self,
        Yc: Any,
        *,
        g0: int,
        first: int,
        stop: int,
        lengths: np.ndarray,
        ref_db: Any = None,
        defer_onset: bool = False,
    ) -> dict[str, np.ndarray]:
        """Frame features for a (B, M) device array of samples starting at track
        sample g0 * hop - n_fft // 2 (so un-centred framing yields frames g0, g0+1, ...).

        lengths (B,): each track's total frame count. Returns host arrays for
        target frames [first, stop): chroma (B, 12, L), onset (B, L), rms (B, L) and
        hpow_sum / pow_sum (B, L) per-frame energies. ``ref_db`` (B,): the onset's
        top_db reference (None: each track's max over its valid frames held).
        ``defer_onset``: instead of onset, the unclipped mel dB of every frame held
        ("mel_db", (B, n_mels, G)) and its per-track reference ("ref_db", (B,)), for
        :meth:`span_onset` once the track's reference is known.
        """
        with _single_threaded_blas():
            return self._compute_frames(Yc, g0=g0, first=first, stop=stop, lengths=lengths,
                                        ref_db=ref_db, defer_onset=defer_onset)

    def _harmonic_power(self, mag: Any, *, lengths: Any, g0: int, first: int, stop: int) -> Any:
        """Power of the harmonic part (HPSS soft mask) of the target frames [first, stop) of a
        (B, F, G) magnitude whose frame 0 is track frame ``g0``."""
        dsp = self.dsp
        # only the target frames' harmonic mask: the context frames just feed the medians
        mask_h = hp.harmonic_mask(mag, kernel_size=int(dsp.hpss_kernel_size), power=dsp.hpss_power,
                                  margin=float(dsp.hpss_margin), lengths=lengths, frame_offset=g0,
                                  first=first, stop=stop)
        hpow = mag[..., first - g0: stop - g0] * mask_h
        del mask_h
        hpow *= hpow
        return hpow

    def clip_chroma(self, y: np.ndarray) -> np.ndarray:
        """Harmonic chroma (12, T) of one short signal (a query clip), exactly as the whole-track
        path computes it, without what a query does not need (percussive power, mel spectrogram,
        onset, tempo, the memory probe): about a fifth of a 10 s clip's analysis time."""
        xp, dsp = self.xp, self.dsp
        half = dsp.n_fft // 2
        host = np.zeros((1, len(y) + 2 * half), dtype=np.float32)
        host[0, half: half + len(y)] = y
        t = track_frames(len(y), dsp)
        with _single_threaded_blas():
            mag = xp.abs(stft(xp.asarray(host), n_fft=dsp.n_fft, hop_length=dsp.hop_length, center=False))
            hpow = self._harmonic_power(mag, lengths=xp.asarray([t], dtype=xp.int64), g0=0, first=0, stop=t)
            chroma = chroma_from_power(hpow, self.chroma_fb)
        return np.ascontiguousarray(to_numpy(chroma.astype(xp.float32))[0])

    def _compute_frames(self, Yc: Any, *, g0: int, first: int, stop: int,
                        lengths: np.ndarray, ref_db: Any, defer_onset: bool = False) -> dict[str, np.ndarray]:
        xp, dsp = self.xp, self.dsp
        hop, n_fft = dsp.hop_length, dsp.n_fft
        D = stft(Yc, n_fft=n_fft, hop_length=hop, center=False)
        mag = xp.abs(D)
        del D
        lens = xp.asarray(lengths, dtype=xp.int64)
        lo, hi = first - g0, stop - g0
        hpow = self._harmonic_power(mag, lengths=lens, g0=g0, first=first, stop=stop)
        mag_t = mag[..., lo:hi]
        chroma = chroma_from_power(hpow, self.chroma_fb)
        hpow_sum = xp.sum(hpow, axis=-2, dtype=xp.float64)
        del hpow
        power = xp.multiply(mag, mag, out=mag)
        pow_t = power[..., lo:hi]
        pow_sum = xp.sum(pow_t, axis=-2, dtype=xp.float64)
        # librosa.feature.rms(S=|S|): DC (and Nyquist for even n_fft) count half
        edge = 0.5 * pow_t[..., 0, :].astype(xp.float64)
        if n_fft % 2 == 0:
            edge = edge + 0.5 * pow_t[..., -1, :]
        rms = xp.sqrt(xp.maximum(2.0 * (pow_sum - edge) / n_fft**2, 0)).astype(xp.float32)
        M_db = on.mel_db(power, self.mel_fb)
        del power, mag, mag_t, pow_t
        out = {
            "chroma": to_numpy(chroma.astype(xp.float32)),
            "rms": to_numpy(rms),
            "hpow_sum": to_numpy(hpow_sum),
            "pow_sum": to_numpy(pow_sum),
        }
        if defer_onset:
            out["mel_db"] = to_numpy(M_db)
            out["ref_db"] = to_numpy(on.db_reference(M_db, lengths=lens, frame_offset=g0))
            return out
        out["onset"] = to_numpy(self._onset(M_db, g0=g0, first=first, stop=stop, lengths=lens,
                                            ref_db=ref_db).astype(xp.float32))
        return out

    def _onset(self, M_db: Any, *, g0: int, first: int, stop: int, lengths: Any, ref_db: Any) -> Any:
        dsp = self.dsp
        return on.onset_strength_from_mel_db(
            M_db, n_fft=dsp.n_fft, hop_length=dsp.hop_length, lag=dsp.onset_lag, max_size=dsp.onset_max_size,
            top_db=dsp.top_db, lengths=lengths, ref_db=ref_db, frame_offset=g0, first=first, stop=stop)

    def _batch_features(self, ys: Sequence[np.ndarray]) -> list[TrackFeatures]:
        """Whole tracks in one zero-padded batch."""
        xp, dsp = self.xp, self.dsp
        half = dsp.n_fft // 2
        n_max = max(len(y) for y in ys)
        host = np.zeros((len(ys), n_max + 2 * half), dtype=np.float32)
        for i, y in enumerate(ys):
            host[i, half : half + len(y)] = y
        lengths = np.array([track_frames(len(y), dsp) for y in ys], dtype=np.int64)
        t_max = int(lengths.max())
        out = self._compute(xp.asarray(host), g0=0, first=0, stop=t_max, lengths=lengths)
        feats = []
        for i, n in enumerate(lengths):
            span = TrackSpan(first_frame=0, stop_frame=int(n), chroma=out["chroma"][i, :, :n],
                             onset=out["onset"][i, :n], rms=out["rms"][i, :n],
                             harmonic_energy=float(out["hpow_sum"][i, :n].sum()),
                             total_energy=float(out["pow_sum"][i, :n].sum()), total_frames=int(n),
                             frame_rate_hz=dsp.frame_rate_hz, total_samples=len(ys[i]))
            feats.append(self.finalize_track([span]))
        return feats

    # ----------------------------------------------------------------- spans
    def extract_span(
        self,
        window: np.ndarray,
        *,
        window_start: int,
        first_frame: int,
        stop_frame: int,
        total_samples: int | None,
        ref_db: float | None = None,
    ) -> TrackSpan:
        """Partial features of frames [first_frame, stop_frame) of one track.

        ``window`` holds samples [window_start, window_start + len(window)) of
        the track; it must cover ``span_window(first_frame, stop_frame)``
        clipped to [0, total_samples) (samples outside the track are zeros).
        ``total_samples=None``: the track continues past the window (frames
        past stop_frame + context exist). ``stop_frame`` is clipped to the
        track's frame count when that is known.

        Chroma, HPSS, rms and energies equal the unchunked computation (to
        float rounding). Onset's top_db floor (librosa: track max - top_db) uses
        ``ref_db`` when given (the track's max mel dB, e.g. from a pre-pass);
        otherwise the max over the frames this span reads (incl. context): a
        per-span reference (acceptable for streamed spans, total unknown),
        exact whenever the span holds the track max or none of its mel values
        lies more than top_db below the span's own max.
        """
        span, _ = self._span(window, window_start=window_start, first_frame=first_frame, stop_frame=stop_frame,
                             total_samples=total_samples, ref_db=ref_db, defer_onset=False)
        return span

    def extract_span_deferred(self, window: np.ndarray, *, window_start: int, first_frame: int, stop_frame: int,
                              total_samples: int | None) -> tuple[TrackSpan, SpanMel]:
        """:meth:`extract_span` in one pass over a long track: everything but the onset, plus
        what the onset needs (:class:`SpanMel`) once the track's top_db reference is known,
        the max of every span's ``SpanMel.ref_db``. :meth:`span_onset` then gives exactly
        the onset :meth:`extract_span` computes with that ``ref_db``, without a second pass
        over the samples. The returned span's ``onset`` is empty until then."""
        span, mel = self._span(window, window_start=window_start, first_frame=first_frame, stop_frame=stop_frame,
                               total_samples=total_samples, ref_db=None, defer_onset=True)
        assert mel is not None
        return span, mel

    def span_onset(self, mel: SpanMel, ref_db: float) -> np.ndarray:
        """The onset of a deferred span (:meth:`extract_span_deferred`) with the track's reference."""
        xp = self.xp
        with _single_threaded_blas():
            onset = self._onset(xp.asarray(mel.mel_db[None]), g0=mel.g0, first=mel.first_frame,
                                stop=mel.stop_frame, lengths=xp.asarray([mel.length], dtype=xp.int64),
                                ref_db=xp.asarray([ref_db], dtype=xp.float32))
        return to_numpy(onset.astype(xp.float32))[0]

    def _span(self, window: np.ndarray, *, window_start: int, first_frame: int, stop_frame: int,
              total_samples: int | None, ref_db: float | None,
              defer_onset: bool) -> tuple[TrackSpan, SpanMel | None]:
        dsp = self.dsp
        window = np.asarray(window, dtype=np.float32).reshape(-1)
        total_frames = None if total_samples is None else track_frames(total_samples, dsp)
        if total_frames is not None:
            stop_frame = min(stop_frame, total_frames)
        if not 0 <= first_frame < stop_frame:
            raise ChromarayError(f"empty or negative span [{first_frame}, {stop_frame})")
        a, b = span_window(first_frame, stop_frame, dsp)
        need_a = max(a, 0)
        need_b = b if total_samples is None else max(need_a, min(b, total_samples))
        w_end = window_start + len(window)
        if window_start > need_a or w_end < need_b:
            raise ChromarayError(
                f"window [{window_start}, {w_end}) does not cover samples [{need_a}, {need_b})"
                f" needed by frames [{first_frame}, {stop_frame})")
        seg = np.zeros(b - a, dtype=np.float32)
        seg[need_a - a : need_b - a] = window[need_a - window_start : need_b - window_start]
        before, _ = _context_frames(dsp)
        g0 = first_frame - before
        lengths = np.array([total_frames if total_frames is not None else 1 << 40], np.int64)
        ref = None if ref_db is None else np.array([ref_db], np.float32)
        out = self._compute(self.xp.asarray(seg[None]), g0=g0, first=first_frame,
                            stop=stop_frame, lengths=lengths, ref_db=ref, defer_onset=defer_onset)
        span = TrackSpan(first_frame=first_frame, stop_frame=stop_frame, chroma=out["chroma"][0],
                         onset=out["onset"][0] if not defer_onset else np.zeros(0, np.float32), rms=out["rms"][0],
                         harmonic_energy=float(out["hpow_sum"][0].sum()),
                         total_energy=float(out["pow_sum"][0].sum()), total_frames=total_frames,
                         frame_rate_hz=dsp.frame_rate_hz,
                         total_samples=None if total_samples is None else int(total_samples))
        if not defer_onset:
            return span, None
        return span, SpanMel(mel_db=out["mel_db"][0], ref_db=float(out["ref_db"][0]), g0=g0,
                             first_frame=first_frame, stop_frame=stop_frame, length=int(lengths[0]))

    def finalize_track(self, spans: Sequence[TrackSpan]) -> TrackFeatures:
        """Concatenate contiguous spans (from frame 0) and compute tempo and summaries.

        At least one span (the last one a stream yields) must know the track's
        ``total_samples``: it becomes ``TrackFeatures.n_samples``.
        """
        dsp = self.dsp
        spans = sorted(spans, key=lambda s: s.first_frame)
        if not spans or spans[0].first_frame != 0:
            raise ChromarayError("spans must start at frame 0")
        for prev, nxt in itertools.pairwise(spans):
            if nxt.first_frame != prev.stop_frame:
                raise ChromarayError(
                    f"spans not contiguous: {prev.stop_frame} then {nxt.first_frame}")
        totals = {s.total_frames for s in spans if s.total_frames is not None}
        n = spans[-1].stop_frame
        if totals and totals != {n}:
            raise ChromarayError(f"spans cover {n} frames but the track has {sorted(totals)}")
        samples = {s.total_samples for s in spans if s.total_samples is not None}
        if len(samples) != 1:
            raise ChromarayError("spans must agree on the track's sample count and one must know it"
                                 f" (got {sorted(samples)})")
        (n_samples,) = samples
        chroma = np.ascontiguousarray(np.concatenate([s.chroma for s in spans], axis=-1),
                                      dtype=np.float32)
        onset = np.ascontiguousarray(np.concatenate([s.onset for s in spans]), dtype=np.float32)
        rms = np.concatenate([s.rms for s in spans])
        total = sum(s.total_energy for s in spans)
        harm = sum(s.harmonic_energy for s in spans)
        bpm = on.tempo(onset, sr=dsp.sample_rate, hop_length=dsp.hop_length,
                    start_bpm=dsp.tempo_start_bpm, std_bpm=dsp.tempo_std_bpm,
                    ac_size=dsp.tempo_ac_size_s, max_tempo=dsp.tempo_max_bpm)
        return TrackFeatures(
            chroma=chroma,
            onset=onset,
            tempo_bpm=float(bpm),
            harmonic_ratio=float(harm / total) if total > 0 else 0.0,
            rms_mean=float(rms.mean(dtype=np.float64)),
            onset_mean=float(onset.mean(dtype=np.float64)),
            onset_std=float(onset.std(dtype=np.float64)),
            chroma_mean=chroma.mean(axis=-1, dtype=np.float64).astype(np.float32),
            n_frames=int(n),
            frame_rate_hz=float(dsp.frame_rate_hz),
            n_samples=int(n_samples),
        )

    # ------------------------------------------------------- time chunking
    def frames_ref_db(self, window: np.ndarray, *, window_start: int, first_frame: int, stop_frame: int,
                      total_samples: int | None) -> float:
        """Max mel dB over frames [first_frame, stop_frame) (STFT + mel only).

        The max over all of a track's frames is librosa's top_db reference, so
        a cheap pass over a long track's spans makes every span's onset exact
        (pass it to :meth:`extract_span` as ``ref_db``). ``window`` holds samples
        [window_start, window_start + len(window)); samples outside the track
        (or outside the window) count as zeros.
        """
        xp, dsp = self.xp, self.dsp
        hop, half = dsp.hop_length, dsp.n_fft // 2
        a = first_frame * hop - half  # frame f covers samples [f * hop - half, ... + n_fft)
        seg = np.zeros((stop_frame - first_frame - 1) * hop + dsp.n_fft, dtype=np.float32)
        end = window_start + len(window) if total_samples is None else min(window_start + len(window), total_samples)
        lo, hi = max(a, window_start, 0), min(a + len(seg), end)
        if hi > lo:
            seg[lo - a : hi - a] = window[lo - window_start : hi - window_start]
        D = stft(xp.asarray(seg), n_fft=dsp.n_fft, hop_length=hop, center=False)
        P = xp.abs(D)
        del D
        P *= P
        with _single_threaded_blas():
            return float(on.db_reference(on.mel_db(P, self.mel_fb)))

    def _track_ref_db(self, y: np.ndarray, chunk_frames: int) -> float:
        """The track's max mel dB (librosa's top_db reference), chunk by chunk."""
        n_total = track_frames(len(y), self.dsp)
        return max(self.frames_ref_db(y, window_start=0, first_frame=f0, stop_frame=min(n_total, f0 + chunk_frames),
                                      total_samples=len(y))
                   for f0 in range(0, n_total, chunk_frames))

    def _chunked_track(self, y: np.ndarray, chunk_seconds: float) -> TrackFeatures:
        """One track in time spans of ~chunk_seconds; equal to the unchunked result."""
        dsp = self.dsp
        # chunk_seconds is what one computation may hold: context frames count too
        before, after = _context_frames(dsp)
        chunk_frames = max(1, int(chunk_seconds * dsp.frame_rate_hz) - before - after)
        n_total = track_frames(len(y), dsp)
        ref = self._track_ref_db(y, chunk_frames)
        spans = []
        for f0 in range(0, n_total, chunk_frames):
            f1 = min(n_total, f0 + chunk_frames)
            a, b = span_window(f0, f1, dsp)
            lo, hi = max(a, 0), min(b, len(y))
            spans.append(self.extract_span(y[lo:hi], window_start=lo, first_frame=f0,
                                           stop_frame=f1, total_samples=len(y), ref_db=ref))
        return self.finalize_track(spans)

    # ----------------------------------------------------------- batching
    def _budget(self) -> int:
        return budget_bytes(self.batch_cfg, self.device)

    def _free_device_cache(self) -> None:
        if self.device == "gpu":
            self.xp.get_default_memory_pool().free_all_blocks()

    def _record(self, n_tracks: int, audio_s: float, oom_splits: int, chunked: bool,
                budget: int, peak: int) -> None:
        self.batch_log.append({
            "device": self.device,
            "n_tracks": int(n_tracks),
            "audio_seconds": float(audio_s),
            "oom_splits": int(oom_splits),
            "time_chunked": int(chunked),
            "budget_bytes": int(budget),
            "peak_bytes": int(peak),
        })

    def _learn(self, peak: int, padded_seconds: float) -> None:
        """Raise the bytes-per-second estimate to what a batch actually used."""
        if padded_seconds >= 0.999:
            bps = peak / padded_seconds
            self.bytes_per_second = max(self.bytes_per_second or 0.0, bps)

    def probe(self, y: np.ndarray) -> float:
        """Measure bytes per audio-second on PROBE_SECONDS of ``y`` (cropped or
        zero-padded; halved on OOM down to 1 s) and return it; results are discarded."""
        sr = self.dsp.sample_rate
        seconds = PROBE_SECONDS
        while True:
            n = int(seconds * sr)
            sig = np.zeros(n, dtype=np.float32)
            m = min(n, len(y))
            sig[:m] = y[:m]
            try:
                with PeakMemory(self.device) as pm:
                    self._batch_features([sig])
                break
            except Exception as exc:
                if not is_oom(exc) or seconds <= 1.0:
                    raise
            self._free_device_cache()  # outside the except block (see _run_batch)
            seconds /= 2
        self._learn(pm.peak, seconds)
        return float(self.bytes_per_second or 0.0)

    def __call__(self, signals: Sequence[np.ndarray]) -> list[TrackFeatures]:
        """Features of whole mono tracks (float32 at dsp.sample_rate), in input order."""
        ys = []
        for s in signals:
            a = np.asarray(s, dtype=np.float32)
            if a.ndim != 1:
                raise ChromarayError(f"expected mono 1-D signals, got shape {a.shape}")
            ys.append(a)
        if not ys:
            return []
        if self.bytes_per_second is None:
            self.probe(ys[0])
        sr = self.dsp.sample_rate
        durations = [len(y) / sr for y in ys]
        budget = self._budget()
        plans = plan_batches(durations, bytes_per_second=self.bytes_per_second or 1.0,
                             budget=budget, max_tracks=self.batch_cfg.max_tracks_per_batch,
                             min_chunk_seconds=self.batch_cfg.min_chunk_seconds)
        results: list[TrackFeatures | None] = [None] * len(ys)
        for plan in plans:
            if plan.chunk_seconds is not None:
                self._run_chunked(ys, plan.indices[0], plan.chunk_seconds, 0, budget, results)
            else:
                self._run_batch(ys, list(plan.indices), 0, budget, results)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:  # cannot happen: every planned index is processed or raises
            raise RuntimeError(f"no features for tracks {missing}")
        return [r for r in results if r is not None]

    def _run_batch(self, ys: list[np.ndarray], idx: list[int], splits: int, budget: int,
                   results: list[TrackFeatures | None]) -> None:
        sr = self.dsp.sample_rate
        batch = [ys[i] for i in idx]
        padded_s = len(batch) * max(len(y) for y in batch) / sr
        t0 = time.perf_counter()
        try:
            with PeakMemory(self.device) as pm:
                feats = self._batch_features(batch)
        except Exception as exc:
            if not is_oom(exc):
                raise
            oom = True
        else:
            oom = False
        if oom:
            # Outside the except block: its traceback still references the failed batch's arrays,
            # so freeing (and the retries) inside it would find no memory released.
            self._free_device_cache()
            log.warning("OOM on a batch of %d tracks (%.0f padded s): splitting",
                        len(idx), padded_s)
            # the device holds less than estimated: never plan this much again
            self.bytes_per_second = max(self.bytes_per_second or 0.0,
                                        budget / padded_s * (1 + 1e-6))
            if len(idx) > 1:
                half = len(idx) // 2
                self._run_batch(ys, idx[:half], splits + 1, budget, results)
                self._run_batch(ys, idx[half:], splits + 1, budget, results)
            else:
                chunk = max(self.batch_cfg.min_chunk_seconds, len(batch[0]) / sr / 2)
                self._run_chunked(ys, idx[0], chunk, splits + 1, budget, results)
            return
        log.debug("batch of %d tracks in %.2f s, peak %d B", len(idx),
                  time.perf_counter() - t0, pm.peak)
        self._learn(pm.peak, padded_s)
        self._record(len(idx), sum(len(y) for y in batch) / sr, splits, False, budget, pm.peak)
        for i, f in zip(idx, feats):
            results[i] = f

    def _run_chunked(self, ys: list[np.ndarray], i: int, chunk_seconds: float, splits: int,
                     budget: int, results: list[TrackFeatures | None]) -> None:
        sr = self.dsp.sample_rate
        y = ys[i]
        while True:
            try:
                with PeakMemory(self.device) as pm:
                    results[i] = self._chunked_track(y, chunk_seconds)
                break
            except Exception as exc:
                if not is_oom(exc):
                    raise
                failure = str(exc)
            # freed outside the except block (see _run_batch)
            self._free_device_cache()
            if chunk_seconds <= self.batch_cfg.min_chunk_seconds:
                raise MemoryError(f"track of {len(y) / sr:.0f} s does not fit in memory even in "
                                  f"{chunk_seconds:.1f} s chunks ({failure})")
            chunk_seconds = max(self.batch_cfg.min_chunk_seconds, chunk_seconds / 2)
            splits += 1
        self._record(1, len(y) / sr, splits, True, budget, pm.peak)
