"""Progress for people (a bar on stderr) and for the dashboard (rows in SQLite).

Ray's per-operator bars garble logs under ``ray job submit``, so the job
reports its own: tracks done/total, audio hours per minute of wall time, ETA.
"""
from __future__ import annotations

import sys
import time
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.store import ProgressEvent

__all__ = ["Progress"]


class Progress:
    def __init__(self, engine: Engine, run_id: str, total: int, *, interval_s: float = 2.0, show: bool = True,
                 stage: str = "features"):
        self.engine, self.run_id, self.total, self.stage = engine, run_id, total, stage
        self.interval_s = interval_s
        self.start = time.monotonic()
        self._last_event = 0.0
        self.bar = None
        if show:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="track", file=sys.stderr, dynamic_ncols=True,
                            disable=None, desc="chromaray", smoothing=0.1)

    def update(self, done: int, errors: int, audio_seconds: float, *, detail: dict[str, Any] | None = None,
               force: bool = False) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        hours_per_min = audio_seconds / 3600.0 / (elapsed / 60.0)
        if self.bar is not None:
            self.bar.n = done + errors
            self.bar.set_postfix_str(f"{hours_per_min:.2f} audio h/min, {errors} errors", refresh=False)
            self.bar.refresh()
        now = time.monotonic()
        if force or now - self._last_event >= self.interval_s:
            self._last_event = now
            with Session(self.engine) as s, s.begin():
                s.add(ProgressEvent(run_id=self.run_id, stage=self.stage, done=done, total=self.total, errors=errors,
                                    audio_seconds=audio_seconds, detail=detail or {}))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
