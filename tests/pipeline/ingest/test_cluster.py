"""cluster.yaml against Ray's own launcher schema, and `ray job submit` on a real local head:
submit a fingerprint job, stop it midway (`ray job stop`), submit it again, and check the
library ends up complete with nothing lost and nothing duplicated.

The head is private to the tests (``ray_head`` in conftest.py, shared with test_job_submit.py):
its own --temp-dir, GCS port 6390, dashboard port 8270, and it is torn down by killing exactly
the processes that carry that temp dir (and their children), never with `ray stop` (which would
kill every Ray on the machine); the fixture checks that none of them survives.
"""
from __future__ import annotations

import copy
import json
import re
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.synth import tremolo_library
from tests.paths import REPO

CLUSTER_YAML = REPO / "cluster.yaml"


# ------------------------------------------------------------------ cluster.yaml
@pytest.fixture(scope="module")
def cluster_cfg() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_validates_against_ray_schema(cluster_cfg):
    import jsonschema
    import ray
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(cluster_cfg, schema)
    # What `ray up` does: fill in the provider defaults, then validate the full config again.
    full = prepare_config(copy.deepcopy(cluster_cfg))
    validate_config(full)
    assert full["head_node_type"] in full["available_node_types"]


def test_cluster_yaml_invalid_is_rejected(cluster_cfg):
    """The schema check above has teeth: a typo'd key fails it."""
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    bad = copy.deepcopy(cluster_cfg)
    bad["available_node_types"]["gpu_worker"]["resource"] = {"GPU": 1}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_cluster_yaml_roles_and_install(cluster_cfg):
    """Head + CPU decode workers + GPU workers; every node installs this checkout with the
    same Ray and Python as pyproject; shared storage on every node."""
    import ray

    types = cluster_cfg["available_node_types"]
    head = types[cluster_cfg["head_node_type"]]
    workers = {k: v for k, v in types.items() if k != cluster_cfg["head_node_type"]}
    assert head["resources"].get("CPU") == 0  # the head keeps the drivers and the database
    gpu = [k for k, v in workers.items() if v["resources"].get("GPU", 0) >= 1]
    cpu = [k for k, v in workers.items() if not v["resources"].get("GPU") and v["resources"].get("CPU", 0) >= 4]
    assert gpu and cpu and all(workers[k]["max_workers"] >= 1 for k in gpu + cpu)

    # the checkout is mounted and installed (editable) on every node; GPU nodes add the gpu extra
    (target, source), = cluster_cfg["file_mounts"].items()
    assert source == "."
    install = re.compile(r'pip install .*-e "?' + re.escape(target) + r'(\[gpu\])?"?')
    assert any(install.search(c) for c in cluster_cfg["setup_commands"])
    for k in gpu:
        assert any(install.search(c) and "[gpu]" in c for c in workers[k]["worker_setup_commands"])
    for k in cpu:  # no override: the global setup_commands apply
        assert "worker_setup_commands" not in workers[k]

    # images carry the Ray version pinned in pyproject.toml and this Python
    ray_pin = re.search(r'"ray\[[^\]]*\]==([\d.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert ray_pin == ray.__version__
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    images = [cluster_cfg["docker"]["image"], cluster_cfg["docker"]["head_image"]]
    images += [v["docker"]["worker_image"] for v in workers.values() if "docker" in v]
    assert all(img.startswith(f"rayproject/ray:{ray_pin}-{py}-") for img in images), images
    assert cluster_cfg["docker"]["image"].endswith("-gpu")

    # shared storage: mounted on the host of every node and passed into the containers
    assert any("mount -t nfs4" in c and "/mnt/efs" in c for c in cluster_cfg["initialization_commands"])
    assert "-v /mnt/efs:/mnt/efs" in cluster_cfg["docker"]["run_options"]
    # the big local folders are not shipped to the nodes
    assert {".venv", ".git", "results"} <= set(cluster_cfg["rsync_exclude"])


# ------------------------------------------------------------------ a real head
def make_library(root: Path, n: int, seconds: float) -> tuple[list[Path], Path, Path]:
    """``n`` distinct seeded WAV tracks, one byte-identical copy under another name and one
    broken file. Returns (distinct files, the copy, the broken file)."""
    root.mkdir(parents=True)
    files = tremolo_library(root, n, seconds)  # 16 kHz 16-bit: small files; the pipeline resamples
    sub = root / "copies"
    sub.mkdir()
    copy_path = sub / "000 (copy).wav"
    shutil.copyfile(files[0], copy_path)
    broken = root / "broken.wav"
    broken.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(200)))
    return files, copy_path, broken


def db_query(db: Path, sql: str, *args) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    except sqlite3.OperationalError as exc:  # tables not created yet
        if "no such table" in str(exc):
            return []
        raise
    finally:
        con.close()


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(420)
def test_stop_and_resubmit_fingerprint_job(tmp_path, ray_head):
    import pyarrow.parquet as pq
    from ray.job_submission import JobStatus

    # 60 tracks of 10 s, committed one by one: the stop lands some tracks after the first commit
    # (5 of 120, 12 of 40 and 18 of 60 in runs on a loaded 2-core machine), so it stops the job
    # midway with room to spare, and the second run has tens of tracks for the dashboard to follow.
    n_tracks = 60
    files, copy_path, broken = make_library(tmp_path / "library", n_tracks, seconds=10.0)
    db, out = tmp_path / "results" / "chromaray.db", tmp_path / "out"
    cfg = tmp_path / "small_parts.yaml"  # commit track by track so a stop lands between commits
    cfg.write_text("pipeline:\n  parquet_rows_per_part: 1\n  files_per_shard: 1\n  feature_batch_rows: 1\n"
                   "  progress_interval_s: 0.5\n")
    entry = [sys.executable, "-m", "jobs.fingerprint", str(tmp_path / "library"), "--db", str(db),
             "--out", str(out), "--config", str(cfg), "--actors", "1", "--no-progress"]

    from tests.pipeline.web.test_dashboard import DashboardServer

    head = ray_head
    # The dashboard watches the whole time, started before the database exists.
    dash = DashboardServer(db).__enter__()
    seen: dict[str, set] = {}

    def watch() -> None:
        for r in dash.json("/api/runs")["runs"]:
            seen.setdefault(r["name"], set()).add((r["status"], r["stages"].get("features", {}).get("done")))

    try:
        def submit(sid: str) -> None:
            r = head.submit(*entry, "--name", sid, wait=False, extra=("--submission-id", sid))
            assert r.returncode == 0, r.stderr[-3000:]

        def logs(sid: str) -> str:
            return head.client.get_job_logs(sid)[-4000:]

        # 1) submit, wait until some but not all tracks are committed, stop it
        submit("fp-first")
        deadline = time.monotonic() + 240
        while True:
            status = head.client.get_job_status("fp-first")
            done = (db_query(db, "SELECT count(*) FROM tracks") or [(0,)])[0][0] if db.exists() else 0
            watch()
            if done >= 1:  # work is being committed: stop now
                break
            assert status not in (JobStatus.FAILED, JobStatus.SUCCEEDED), (
                f"first job ended ({status}, {done} tracks) before it could be stopped midway:\n{logs('fp-first')}")
            assert time.monotonic() < deadline, f"no progress: {done} tracks\n{logs('fp-first')}"
            time.sleep(0.3)
        r = head.ray("job", "stop", "--address", head.address, "fp-first")
        assert r.returncode == 0, r.stderr[-2000:]
        while head.client.get_job_status("fp-first") not in (JobStatus.STOPPED, JobStatus.FAILED,
                                                                   JobStatus.SUCCEEDED):
            time.sleep(0.5)
        assert head.client.get_job_status("fp-first") == JobStatus.STOPPED
        first_run = db_query(db, "SELECT id FROM runs WHERE name='fp-first'")[0][0]
        kept = db_query(db, "SELECT count(*) FROM tracks WHERE run_id=?", first_run)[0][0]
        assert 1 <= kept < n_tracks, kept  # stopped midway
        # SIGTERM from `ray job stop` unwinds the job, which records the run as stopped
        assert db_query(db, "SELECT status FROM runs WHERE id=?", first_run)[0][0] == "stopped"

        # 2) submit again; it must finish the library
        submit("fp-second")
        deadline = time.monotonic() + 300
        while (status := head.client.get_job_status("fp-second")) not in (
                JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            assert time.monotonic() < deadline, logs("fp-second")
            watch()
            time.sleep(0.5)
        assert status == JobStatus.SUCCEEDED, logs("fp-second")
        watch()
    finally:
        dash.__exit__()
    # the dashboard followed both runs live (a second process writing the same database)
    second_done = {d for st, d in seen["fp-second"] if d is not None}
    assert len(second_done) >= 2 and ("finished", max(second_done)) in seen["fp-second"], seen["fp-second"]
    print(f"first run kept {kept}/{n_tracks} tracks; dashboard saw {sorted(seen['fp-first'], key=str)} "
          f"then {sorted(second_done)}")

    # nothing lost: every distinct file is a track, every path is recorded, the broken file is an error
    hashes = [h for (h,) in db_query(db, "SELECT content_hash FROM tracks")]
    assert len(hashes) == len(set(hashes)) == n_tracks
    paths = {p for (p,) in db_query(db, "SELECT path FROM track_paths")}
    assert paths == {str(p) for p in files} | {str(copy_path)}
    errors = db_query(db, "SELECT path, stage FROM errors")
    assert [e[0] for e in errors] == [str(broken)], errors
    # the second run did only the rest: nothing recomputed
    second = db_query(db, "SELECT id, status, summary, ray_dashboard_url FROM runs WHERE name='fp-second'")[0]
    assert second[1] == "finished"
    # the job recorded where Ray's dashboard is, for the chromaray dashboard's link
    assert second[3] and second[3].rstrip("/").endswith(f"127.0.0.1:{head.dashboard_port}"), second[3]
    redone = db_query(db, "SELECT count(*) FROM tracks WHERE run_id=?", second[0])[0][0]
    assert kept + redone == n_tracks
    assert json.loads(second[2])["processed"] == redone

    # nothing duplicated: every committed Parquet dataset has each content exactly once,
    # and no uncommitted part is left on disk
    parts = db_query(db, "SELECT name, dataset, n_rows FROM parquet_parts")
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*.parquet")}
    assert on_disk == {name for name, _, _ in parts}
    for dataset in ("tracks", "fingerprints", "frames"):
        names = [name for name, ds, _ in parts if ds == dataset]
        assert names, f"no {dataset} parts"
        got = [h for name in names for h in pq.read_table(out / name, columns=["content_hash"])
               .column("content_hash").to_pylist()]
        assert sorted(got) == sorted(hashes), dataset
        assert sum(n for _, ds, n in parts if ds == dataset) == n_tracks
