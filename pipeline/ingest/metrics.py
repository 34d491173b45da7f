"""Custom Ray metrics of a run (driver side), exported through ``ray.util.metrics``.

They land in Ray's metrics agent, so Ray's dashboard (Metrics tab, with Grafana)
and any Prometheus scraping the nodes see them next to Ray's own metrics.
Prometheus names carry Ray's ``ray_`` prefix, e.g.
``ray_chromaray_tracks_processed_total`` and ``ray_chromaray_device_memory_bytes``.

Every method is a no-op when Ray is not initialised (unit tests, ``--help``,
the dashboard process), so the sink can call them unconditionally.
"""
from __future__ import annotations

from typing import Any

__all__ = ["AUDIO_SECONDS", "BATCH_SIZE", "DEVICE_MEMORY", "ERRORS", "TRACKS", "RunMetrics"]


# Prometheus metric names (before Ray's "ray_" prefix).
TRACKS = "chromaray_tracks_processed"
AUDIO_SECONDS = "chromaray_audio_seconds_processed"
ERRORS = "chromaray_errors"
BATCH_SIZE = "chromaray_batch_size"
DEVICE_MEMORY = "chromaray_device_memory_bytes"


class RunMetrics:
    """Counters and gauges of one job run.

    Tags: every series carries ``job`` (the run kind: fingerprint, train, ...);
    errors add ``stage``; the gauges add ``actor`` (the actor name the batch
    planner logs). The run id is deliberately not a tag: one new series per
    run would grow Prometheus without bound.

    The Ray metric objects are created lazily on the first call made while
    Ray is initialised, so constructing a ``RunMetrics`` before ``ray.init``
    is fine.
    """

    def __init__(self, run_id: str | None = None, *, job: str = "fingerprint") -> None:
        self.run_id = run_id  # kept for logs; see the class docstring for why it is no tag
        self.job = job
        self._m: dict[str, Any] | None = None

    @property
    def enabled(self) -> bool:
        """True when calls are recorded (Ray initialised in this process)."""
        return self._metrics() is not None

    def _metrics(self) -> dict[str, Any] | None:
        if self._m is not None:
            return self._m
        try:
            import ray
        except ImportError:  # pragma: no cover - ray is a hard dependency
            return None
        if not ray.is_initialized():
            return None
        from ray.util.metrics import Counter, Gauge

        self._m = {
            "tracks": Counter(TRACKS, description="Tracks (audio or MIDI files) fully processed.",
                              tag_keys=("job",)),
            "audio": Counter(AUDIO_SECONDS, description="Seconds of audio processed.",
                             tag_keys=("job",)),
            "errors": Counter(ERRORS, description="Input files that failed, by stage.",
                              tag_keys=("job", "stage")),
            "batch": Gauge(BATCH_SIZE, description="Tracks in the last batch of an actor.",
                           tag_keys=("job", "actor")),
            "memory": Gauge(DEVICE_MEMORY, description="Peak device memory of the last batch of an actor (bytes).",
                            tag_keys=("job", "actor")),
        }
        return self._m

    def track_done(self, audio_seconds: float) -> None:
        """One track finished; ``audio_seconds`` is its duration (s), 0 for MIDI."""
        m = self._metrics()
        if m is None:
            return
        tags = {"job": self.job}
        m["tracks"].inc(1, tags=tags)
        if audio_seconds > 0:
            m["audio"].inc(float(audio_seconds), tags=tags)

    def error(self, stage: str) -> None:
        """One input file failed at ``stage`` (discover, decode, features, ...)."""
        m = self._metrics()
        if m is None:
            return
        m["errors"].inc(1, tags={"job": self.job, "stage": str(stage) or "unknown"})

    def batch(self, actor: str, n_tracks: int, memory_bytes: int) -> None:
        """An actor ran a batch of ``n_tracks`` tracks peaking at ``memory_bytes`` bytes of device memory."""
        m = self._metrics()
        if m is None:
            return
        tags = {"job": self.job, "actor": str(actor) or "unknown"}
        m["batch"].set(int(n_tracks), tags=tags)
        m["memory"].set(int(memory_bytes), tags=tags)
