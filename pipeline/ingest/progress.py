"""Progress for people (a bar on stderr, or plain lines in logs) and for the dashboard (rows in SQLite).

Ray's per-operator bars garble logs under ``ray job submit``, so the job
reports its own: tracks done/total, audio hours per minute of wall time, ETA.
On a terminal that is a live bar; when stderr is not a terminal (``ray job
logs -f``, CI, ``| tee``) a bar would print nothing until it closes, so one
plain line is written every ``log_interval_s`` and one at the end.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.store import ProgressEvent

__all__ = ["LOG_INTERVAL_S", "Progress", "progress_line"]

#: Seconds between two plain progress lines when stderr is not a terminal.
LOG_INTERVAL_S = 30.0


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def progress_line(done: int, errors: int, total: int, audio_seconds: float, elapsed_s: float, *,
                  final: bool = False, base_errors: int = 0) -> str:
    """One self-contained log line: done/total, errors, audio hours, audio h/min, ETA.

    ``done`` counts finished tracks, ``errors`` failed ones, of which ``base_errors`` were not among
    the ``total`` files (recorded before streaming). The ETA assumes the remaining files go at the
    average rate so far ("?" before the first one).
    """
    elapsed = max(elapsed_s, 1e-6)
    finished = done + errors - base_errors
    hours = audio_seconds / 3600.0
    rate = hours / (elapsed / 60.0)
    if final:
        tail = f"{'finished in' if finished >= total else 'stopped after'} {_duration(elapsed_s)}"
    elif finished:
        tail = f"ETA {_duration(max(total - finished, 0) * elapsed / finished)}"
    else:
        tail = "ETA ?"
    return (f"chromaray progress: {finished}/{total} files, {errors} error{'s' * (errors != 1)}, "
            f"{hours:.3f} audio h, {rate:.2f} audio h/min, {tail}")


class Progress:
    """``update`` after each batch; ``close`` at the end (prints the final line).

    ``base_errors``: errors recorded before the stream started (unreadable and skipped paths),
    which are not among the ``total`` files being streamed: they are reported, not counted as
    finished files.
    """

    def __init__(self, engine: Engine, run_id: str, total: int, *, interval_s: float = 2.0, show: bool = True,
                 stage: str = "features", stream: IO[str] | None = None, log_interval_s: float = LOG_INTERVAL_S,
                 base_errors: int = 0):
        self.engine, self.run_id, self.total, self.stage = engine, run_id, total, stage
        self.interval_s = interval_s
        self.log_interval_s = log_interval_s
        self.base_errors = base_errors
        self.start = time.monotonic()
        self._last_event = 0.0
        self._last: tuple[int, int, float] = (0, base_errors, 0.0)
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self.stream = stream if stream is not None else sys.stderr
        self.bar = None
        self._ticker: threading.Thread | None = None
        if show and _is_terminal(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="track", file=self.stream, dynamic_ncols=True,
                            desc="chromaray", smoothing=0.1)
        elif show:
            # A thread, not the batch loop: a batch may take longer than the interval (a long file,
            # a slow machine), and the log must still hear from the job every interval.
            self._ticker = threading.Thread(target=self._tick, name="chromaray-progress", daemon=True)
            self._ticker.start()

    def update(self, done: int, errors: int, audio_seconds: float, *, detail: dict[str, Any] | None = None,
               force: bool = False) -> None:
        now = time.monotonic()
        elapsed = max(now - self.start, 1e-6)
        with self._lock:
            self._last = (done, errors, audio_seconds)
        hours_per_min = audio_seconds / 3600.0 / (elapsed / 60.0)
        if self.bar is not None:
            self.bar.n = done + errors - self.base_errors
            self.bar.set_postfix_str(f"{hours_per_min:.2f} audio h/min, {errors} errors", refresh=False)
            self.bar.refresh()
        if force or now - self._last_event >= self.interval_s:
            self._last_event = now
            with Session(self.engine) as s, s.begin():
                s.add(ProgressEvent(run_id=self.run_id, stage=self.stage, done=done, total=self.total, errors=errors,
                                    audio_seconds=audio_seconds, detail=detail or {}))

    def line(self, *, final: bool = False) -> str:
        with self._lock:
            done, errors, audio_seconds = self._last
        return progress_line(done, errors, self.total, audio_seconds, time.monotonic() - self.start,
                             final=final, base_errors=self.base_errors)

    def _tick(self) -> None:
        while not self._closed.wait(self.log_interval_s):
            self._write(self.line())

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        if self.bar is not None:
            self.bar.close()
        elif self._ticker is not None:
            self._ticker.join(timeout=1.0)
            self._write(self.line(final=True))

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken log pipe must not fail the run


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
