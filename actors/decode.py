"""Decode audio files to mono float32 at the analysis rate, streaming.

soundfile (libsndfile) reads WAV, FLAC, Ogg Vorbis/Opus, MP3 and AIFF; soxr
resamples (the HQ mode librosa uses by default, so features match
``librosa.load``). Streaming keeps memory bounded for multi-hour files: only
one block plus one span window is ever held.

Every failure becomes an :class:`InputFileError` whose reason a user can act on.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from actors.errors import InputFileError

__all__ = ["BLOCK_SECONDS", "MIN_DURATION_S", "TRUNCATION_TOLERANCE", "AudioInfo", "Span", "decode_file",
           "decode_stopped", "iter_mono_blocks", "iter_spans", "probe", "sniff", "stream_warnings"]


BLOCK_SECONDS = 30.0
# A decoded stream may legitimately be a few frames short of the header's
# count (MP3 encoder delay, Vorbis granule rounding); more than this is a cut file.
TRUNCATION_TOLERANCE = 0.01
#: Shorter audio is an error row, not a track. One fingerprint code compares chroma smoothed over
#: 0.37 s at +-0.19 s (actors/fingerprint.py: SMOOTH_S, DELTA_S), i.e. needs 0.74 s of sound, and
#: identify verifies a match on at least 12 codes (~1.1 s): below 1 s the stored features and codes
#: would be padding and edge effects (a 1-sample file got "117 BPM", a key and one code).
MIN_DURATION_S = 1.0
#: Fewer missing samples than this (against the header's count) are codec rounding, not lost audio.
_LOST_AUDIO_S = 0.05

_MAGIC = [
    (b"RIFF", "WAV"), (b"fLaC", "FLAC"), (b"OggS", "Ogg"), (b"ID3", "MP3"), (b"FORM", "AIFF"),
    (b"MThd", "MIDI"), (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
    (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"), (b"<", "an HTML/XML text"),
    (b"{", "a JSON text"), (b"\x7fELF", "a program binary"),
]


def sniff(head: bytes) -> str | None:
    """What the first bytes of a file say it is (for error messages)."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        return "MP3"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head[:256]):
        return "a plain text file"
    return None


def _open_error(path: str, exc: Exception) -> InputFileError:
    ext = os.path.splitext(path)[1].lower() or "(none)"
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
            size = os.fstat(fh.fileno()).st_size
    except PermissionError:
        return InputFileError("decode", "permission denied: cannot read the file")
    except OSError as err:
        return InputFileError("decode", f"cannot read the file: {err.strerror}")
    if not head:
        return InputFileError("decode", "empty file (0 bytes)")
    what = sniff(head)
    detail = str(exc).split(":")[-1].strip() or type(exc).__name__
    if "possibly a pipe" in detail or "does not exist" in detail:
        # libsndfile's catch-all for content no decoder accepts: false for a regular file.
        detail = "no decoder accepts the content"
    if what is None:
        return InputFileError("decode", f"not a readable audio file: unrecognised content for a {ext} file ({detail})")
    if head.startswith(b"ID3"):
        tagless = _id3_without_audio(path, head, size)
        if tagless:
            return InputFileError("decode", tagless)
    if what in {"WAV", "FLAC", "Ogg", "MP3", "AIFF"}:
        return InputFileError("decode", f"corrupt or unsupported {what} data ({detail})")
    return InputFileError("decode", f"not audio: the {ext} file contains {what}")


def _id3_without_audio(path: str, head: bytes, size: int) -> str | None:
    """The reason for an MP3 that is an ID3v2 tag and no MPEG audio frame after it (None if it has frames)."""
    if len(head) < 10:
        return f"no audio frames: the file holds only the start of an ID3 tag ({size} bytes)"
    # ID3v2 size: 4 "synchsafe" bytes of 7 bits each; + 10 header bytes, + 10 for a footer.
    tag = 10 + ((head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F))
    tag += 10 if head[5] & 0x10 else 0
    if tag >= size:
        return f"no audio frames: the file holds only an ID3 tag ({size} bytes)"
    with open(path, "rb") as fh:
        fh.seek(tag)
        rest = fh.read(1 << 16)
    if not any(rest[i] == 0xFF and (rest[i + 1] & 0xE0) == 0xE0 for i in range(len(rest) - 1)):
        return f"no audio frames: nothing decodable after the {tag}-byte ID3 tag ({size} bytes in all)"
    return None


@dataclass(frozen=True)
class AudioInfo:
    source_sample_rate: int
    channels: int
    frames: int  # as the header claims
    format: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.source_sample_rate if self.source_sample_rate else 0.0


_DECLARED_VS_ACTUAL = re.compile(r"(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)")


def _truncation_in_log(log: str) -> str | None:
    """libsndfile quietly shortens a cut WAV/AIFF; its parse log still says so."""
    for declared_text, actual_text in _DECLARED_VS_ACTUAL.findall(log):
        declared, actual = int(declared_text), int(actual_text)
        # 0 and ~4 GiB are "unknown length" markers of streamed WAVs, not truncation.
        if actual < declared < 0xFFFFFF00:
            return f"truncated: the header promises {declared} bytes of audio data, the file holds {actual}"
    if "File ended unexpectedly" in log:
        return "truncated: the stream ends without its end-of-stream marker"
    return None


def probe(path: str) -> AudioInfo:
    import soundfile as sf

    try:
        info = sf.info(path)
    except Exception as exc:  # LibsndfileError, RuntimeError, OSError
        raise _open_error(path, exc) from None
    cut = _truncation_in_log(getattr(info, "extra_info", "") or "")
    if cut:
        raise InputFileError("decode", cut)
    if info.frames <= 0 or info.samplerate <= 0:
        raise InputFileError("decode", "no audio samples (zero-length stream)")
    found = AudioInfo(int(info.samplerate), int(info.channels), int(info.frames), str(info.format))
    if found.duration_s < MIN_DURATION_S:
        raise InputFileError("decode", f"too short: {_seconds(found.duration_s)} of audio ({found.frames} sample(s) "
                                       f"at {found.source_sample_rate} Hz); a track needs at least "
                                       f"{MIN_DURATION_S:g} s for its features and fingerprint")
    return found


def _seconds(s: float) -> str:
    return f"{s:.2f} s" if s >= 0.1 else f"{s * 1000:.2f} ms"


def decode_stopped(path: str, info: AudioInfo, read_frames: int, exc: Exception) -> InputFileError:
    """The reason for a stream that broke off while reading the block starting at ``read_frames``.

    A block is up to 30 s and fails as a whole, so the frames decoded before the break are not
    known from the failed read: the block is read again in 0.1 s steps up to the break (at most
    one block of work, only for a broken file) to say where decoding really stopped.
    """
    import soundfile as sf

    good = read_frames
    step = max(1, info.source_sample_rate // 10)
    try:
        with sf.SoundFile(path) as fh:
            if read_frames:
                fh.seek(read_frames)
            while True:
                n = fh.read(step, dtype="float32", always_2d=True).shape[0]
                good += n
                if n < step:
                    break
    except Exception:  # the break we are looking for: `good` is where it happened
        pass
    detail = str(exc).strip() or type(exc).__name__
    return InputFileError("decode", f"truncated or corrupt: decoding stopped at {good / info.source_sample_rate:.1f} s "
                                    f"of {info.duration_s:.1f} s ({detail})")


_OGG_SKIPPED = re.compile(r"Skipped (\d+) bytes looking for the next page")
_OGG_HOLE = re.compile(r"reports a hole at (\d+) bytes")
_OGG_LENGTH = re.compile(r"^Length\s*:\s*(\d+)", re.MULTILINE)


def stream_warnings(info: AudioInfo, read_frames: int, log: str) -> list[str]:
    """What went wrong in a stream that still decoded (a warning on the track, not an error).

    ``log`` is libsndfile's log of the open file after the last read (``SoundFile.extra_info``):
    a corrupted Ogg page is skipped by the decoder, which logs it, and its audio is missing from
    the samples (beyond TRUNCATION_TOLERANCE that is an error, below it this warning).
    """
    warnings = []
    lost = (info.frames - read_frames) / info.source_sample_rate if info.source_sample_rate else 0.0
    skipped = [int(n) for n in _OGG_SKIPPED.findall(log)]
    holes = [int(n) for n in _OGG_HOLE.findall(log)]
    if skipped or holes:
        # The same hole is logged again each time the decoder passes it (opening scans the stream too).
        pages = sorted(set(zip(skipped, holes))) if len(skipped) == len(holes) else [(n, -1) for n in set(skipped)]
        skipped = [n for n, _ in pages]
        holes = sorted({h for _, h in pages if h >= 0}) or sorted(set(holes))
        where = (f" at byte {holes[0]}" if len(holes) == 1 else
                 f" at bytes {', '.join(map(str, holes))}" if holes else "")
        if lost >= _LOST_AUDIO_S:
            missing = f", {lost:.2f} s of audio missing"
        else:
            # libvorbisfile may return the header's sample count across a hole (it depends on the
            # read sizes), so the loss is estimated from the bytes skipped at the file's byte rate.
            length = _OGG_LENGTH.search(log)
            est = sum(skipped) / int(length.group(1)) * info.duration_s if length and int(length.group(1)) else 0.0
            missing = f", about {est:.2f} s of audio lost" if est >= _LOST_AUDIO_S else ""
        warnings.append(f"corrupted Ogg page{'s' * (len(pages) > 1)}{where}: {sum(skipped)} bytes skipped"
                        f"{missing}")
    elif lost >= _LOST_AUDIO_S:
        warnings.append(f"{lost:.2f} s of audio missing: {read_frames} of the {info.frames} samples the header "
                        "promises were decoded")
    return warnings


def iter_mono_blocks(path: str, sample_rate: int, *, block_seconds: float = BLOCK_SECONDS,
                     warnings: list[str] | None = None) -> Iterator[np.ndarray]:
    """Mono float32 blocks at ``sample_rate``, concatenating to the whole track.

    Raises InputFileError if the stream breaks off or is much shorter than its header. What went
    wrong in a stream that still decoded (a corrupted Ogg page) is appended to ``warnings`` once
    the stream has ended (:func:`stream_warnings`).
    """
    import soundfile as sf
    import soxr

    info = probe(path)
    block = max(1, int(block_seconds * info.source_sample_rate))
    resampler = None
    if info.source_sample_rate != sample_rate:
        resampler = soxr.ResampleStream(info.source_sample_rate, sample_rate, 1, dtype="float32", quality="HQ")
    read = 0
    log = ""
    try:
        with sf.SoundFile(path) as fh:
            while True:
                x = fh.read(block, dtype="float32", always_2d=True)
                last = x.shape[0] < block
                read += x.shape[0]
                mono = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
                if resampler is not None:
                    mono = resampler.resample_chunk(mono, last=last)
                if mono.size:
                    yield np.ascontiguousarray(mono, dtype=np.float32)
                if last:
                    break
            log = fh.extra_info
    except InputFileError:
        raise
    except Exception as exc:
        raise decode_stopped(path, info, read, exc) from None
    if read == 0:
        raise InputFileError("decode", "no audio samples (zero-length stream)")
    if read < info.frames * (1 - TRUNCATION_TOLERANCE):
        raise InputFileError("decode", f"truncated: {read / info.source_sample_rate:.1f} s of audio where the header "
                                       f"promises {info.duration_s:.1f} s")
    if not np.isfinite(read):
        raise InputFileError("decode", "corrupt: non-finite sample count")
    if warnings is not None:
        warnings.extend(stream_warnings(info, read, log))


def decode_file(path: str, sample_rate: int, *, warnings: list[str] | None = None) -> np.ndarray:
    """Whole track, mono float32 at ``sample_rate`` (same samples as the streamed blocks)."""
    blocks = list(iter_mono_blocks(path, sample_rate, warnings=warnings))
    y = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    if not np.all(np.isfinite(y)):
        raise InputFileError("decode", "corrupt: decoded samples contain NaN or infinity")
    return y


@dataclass
class Span:
    """Samples a feature actor needs for frames [first_frame, stop_frame) of one track."""

    index: int
    window: np.ndarray  # mono float32, zeros outside the track
    window_start: int  # sample index of window[0] (may be negative: left zero padding)
    first_frame: int
    stop_frame: int
    total_samples: int | None  # known once the stream has ended
    n_spans: int  # -1 until the stream has ended


def iter_spans(blocks: Iterator[np.ndarray], *, hop_length: int, frames_per_span: int,
               span_window: Callable[[int, int], tuple[int, int]]) -> Iterator[Span]:
    """Cut a block stream into overlapping span windows.

    ``span_window(first, stop)`` gives the sample range [a, b) the features of
    frames [first, stop) depend on (STFT half-window plus filter context), so
    spans computed independently join up into the unchunked result. Frames are
    centred (frame t at sample t*hop), so a track of N samples has 1 + N//hop.
    """
    buf = np.zeros(0, dtype=np.float32)
    buf_start = 0  # sample index of buf[0]
    seen = 0
    index = 0
    first = 0
    pending: list[Span] = []

    def cut(a: int, b: int) -> np.ndarray:
        out = np.zeros(b - a, dtype=np.float32)
        lo, hi = max(a, buf_start), min(b, buf_start + buf.size)
        if hi > lo:
            out[lo - a:hi - a] = buf[lo - buf_start:hi - buf_start]
        return out

    for block in blocks:
        buf = np.concatenate([buf, block]) if buf.size else block
        seen += block.size
        while True:
            stop = first + frames_per_span
            a, b = span_window(first, stop)
            if b > seen:
                break
            yield Span(index, cut(a, b), a, first, stop, None, -1)
            index += 1
            first = stop
            keep_from = max(span_window(first, first + frames_per_span)[0], buf_start)
            buf = buf[keep_from - buf_start:]
            buf_start = keep_from
    total_frames = 1 + seen // hop_length
    while first < total_frames:
        stop = min(first + frames_per_span, total_frames)
        a, b = span_window(first, stop)
        pending.append(Span(index, cut(a, b), a, first, stop, seen, -1))
        index += 1
        first = stop
    for span in pending:
        span.n_spans = index
        yield span
