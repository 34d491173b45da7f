"""`ray job submit` against a head started with `ray start --head` (``ray_head``, conftest.py)."""
from __future__ import annotations

import sys

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.store import Run, Track, open_db
from pipeline.synth import good_library

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_ray_job_submit_runs_the_fingerprint_job(tmp_path, ray_head):
    lib = tmp_path / "lib"
    good_library(lib, n=3, seconds=3.0)
    db, out = tmp_path / "db.sqlite", tmp_path / "out"
    p = ray_head.submit(sys.executable, "-m", "jobs.fingerprint", str(lib), "--db", str(db), "--out", str(out),
                        "--no-progress")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "succeeded" in (p.stdout + p.stderr).lower()
    assert "done: 3 processed" in p.stdout
    eng = open_db(db)
    with Session(eng) as s:
        assert s.scalar(select(func.count()).select_from(Track)) == 3
        run = s.scalars(select(Run)).one()
        # the job joined the cluster rather than starting a Ray of its own
        assert run.status == "finished" and run.ray_address
