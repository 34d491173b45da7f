"""Workers write their own Parquet parts (issue #11, item 3); a worker killed between writing
its parts and the driver's commit of them loses nothing and duplicates nothing.

The kill is real and comes from outside chromaray's code: a ``sitecustomize`` on the job's
PYTHONPATH (Ray workers inherit the driver's environment) makes the first Ray worker that moves
a fingerprints part into place SIGKILL itself right after the rename, so its frames, tracks and
fingerprints parts are on disk and its receipt never reaches the driver. Ray restarts the actor
and retries the call, which writes new parts under new names; the dead attempt's parts are
listed nowhere and are removed at the end of the run (or, had the driver died too, by the next
run's cleanup).
"""
from __future__ import annotations

import pytest

from tests.faults import check_consistent, make_library, part_files, query, start_fingerprint

pytestmark = [pytest.mark.ray, pytest.mark.slow]

#: Installed as sitecustomize.py: os.replace that dies (once) after a fingerprints part lands.
KILL_AFTER_WRITE = '''
import os, signal, sys

MARKER = os.environ.get("CHROMARAY_TEST_KILL_MARKER", "")
_replace = os.replace


def replace(src, dst, *args, **kwargs):
    result = _replace(src, dst, *args, **kwargs)
    dst = os.fspath(dst)
    in_worker = bool(sys.argv) and sys.argv[0].endswith("default_worker.py")
    if (MARKER and in_worker and dst.endswith(".parquet") and os.sep + "fingerprints" + os.sep in dst
            and not os.path.exists(MARKER)):
        with open(MARKER, "w") as fh:
            fh.write(os.path.basename(dst))
        os.kill(os.getpid(), signal.SIGKILL)
    return result


os.replace = replace
'''


@pytest.mark.timeout(600)
def test_worker_killed_between_writing_parts_and_their_commit(tmp_path):
    lib = tmp_path / "library"
    library = make_library(lib, n_audio=4, seconds=4.0, n_midi=1)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_AFTER_WRITE)
    marker = tmp_path / "killed-after.txt"
    db, out = tmp_path / "c.db", tmp_path / "out"
    env = {"PYTHONPATH": str(hook), "CHROMARAY_TEST_KILL_MARKER": str(marker)}
    run = start_fingerprint([lib], db, out, tmp_path, "killed-worker", env=env)
    assert run.wait(timeout=420) == 0, run.stderr[-3000:]

    # A worker did die right after its parts were on disk, before their commit.
    assert marker.exists(), "no worker wrote a fingerprints part: the hook never fired"
    dead_part = marker.read_text().strip()
    run_id = query(db, "SELECT id FROM runs")[0][0]
    assert dead_part.startswith(f"part-{run_id[:12]}-"), dead_part
    listed = {n for (n,) in query(db, "SELECT name FROM parquet_parts")}
    dead = {f"{ds}/{dead_part}" for ds in ("frames", "tracks", "fingerprints")}
    assert not dead & listed, "a part whose receipt never arrived is listed"
    # The retry stored the same tracks under other names; the dead attempt's parts were removed.
    c = check_consistent(db, out, library)  # each track exactly once, nothing missing, no unlisted file
    assert (c.audio, c.midi, c.errors) == (4, 1, 0)
    assert not dead & part_files(out)
    # Parts came from the workers: one per worker call and dataset (one file per call here).
    assert len({n for n in listed if n.startswith("frames/")}) == 5

    again = start_fingerprint([lib], db, out, tmp_path, "rerun")
    assert again.wait(timeout=300) == 0, again.stderr[-3000:]
    assert "nothing new" in again.stdout
    assert check_consistent(db, out, library).tracks == 5
