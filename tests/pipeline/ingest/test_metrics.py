"""RunMetrics: a no-op without Ray; with Ray, the values reach Ray's metrics agent and its
Prometheus endpoint (read back over HTTP, as Prometheus would scrape it)."""
from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
import uuid

from tests.paths import REPO


def test_noop_without_ray():
    """In a fresh process: calls succeed, record nothing and never start Ray."""
    code = (
        "import ray\n"
        "from pipeline.ingest.metrics import RunMetrics\n"
        "m = RunMetrics('run-1', job='fingerprint')\n"
        "assert not m.enabled\n"
        "m.track_done(12.5); m.error('decode'); m.batch('feat-0', 4, 1 << 20)\n"
        "assert not ray.is_initialized() and m._m is None\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def _scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """{(metric name, {our tags}): value} from the Prometheus text format."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(ray_chromaray_\w+)\{(.*)\}\s+(\S+)$", line)
        if not m:
            continue
        tags = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        ours = frozenset((k, v) for k, v in tags.items() if k in ("job", "stage", "actor"))
        out[(m.group(1), ours)] = float(m.group(3))
    return out


def test_metrics_reach_rays_prometheus_endpoint(ray_local):
    from pipeline.ingest.metrics import RunMetrics

    job = "test" + uuid.uuid4().hex[:8]  # a tag value no other test uses
    m = RunMetrics("run-1", job=job)
    assert m.enabled
    m.track_done(12.5)
    m.track_done(2.5)
    m.track_done(0.0)  # a MIDI file: a track, no audio
    m.error("decode")
    m.error("decode")
    m.error("features")
    m.batch("feat-0", 4, 1000)
    m.batch("feat-0", 7, 12345)  # gauges keep the last value
    m.batch("feat-1", 2, 500)

    port = ray_local._private.worker.global_worker.node.metrics_export_port
    want = {
        ("ray_chromaray_tracks_processed_total", frozenset({("job", job)})): 3.0,
        ("ray_chromaray_audio_seconds_processed_total", frozenset({("job", job)})): 15.0,
        ("ray_chromaray_errors_total", frozenset({("job", job), ("stage", "decode")})): 2.0,
        ("ray_chromaray_errors_total", frozenset({("job", job), ("stage", "features")})): 1.0,
        ("ray_chromaray_batch_size", frozenset({("job", job), ("actor", "feat-0")})): 7.0,
        ("ray_chromaray_batch_size", frozenset({("job", job), ("actor", "feat-1")})): 2.0,
        ("ray_chromaray_device_memory_bytes", frozenset({("job", job), ("actor", "feat-0")})): 12345.0,
        ("ray_chromaray_device_memory_bytes", frozenset({("job", job), ("actor", "feat-1")})): 500.0,
    }
    # Ray exports on a cycle: 10 s by default, 1 s in the test session's Ray (tests/conftest.py).
    deadline = time.monotonic() + 90
    got: dict = {}
    while time.monotonic() < deadline:
        got = {k: v for k, v in _scrape(port).items() if ("job", job) in k[1]}
        if got == want:
            break
        time.sleep(0.5)
    assert got == want
