"""A poison file (issue #14, defect 3): a file whose processing kills its worker, as a decoder
segfault or the OOM killer would, every time it is tried.

The death is real and comes from outside chromaray's code: a ``sitecustomize`` on the job's
PYTHONPATH (Ray workers inherit the driver's environment) makes any Ray worker that opens the
poison file with soundfile SIGKILL itself. Before the fix Ray retried the file without end and
the run never finished (this test timed out); now the file is retried alone a bounded number of
times (``pipeline.max_worker_crashes``, 3), then becomes an error row, and the rest of the run,
its batch mates included, completes.
"""
from __future__ import annotations

import pytest

from pipeline.synth import write_song
from tests.faults import check_consistent, make_library, query, start_fingerprint

pytestmark = [pytest.mark.ray, pytest.mark.slow]

#: Installed as sitecustomize.py: wraps soundfile.info / SoundFile when soundfile is imported.
KILL_ON_OPEN = '''
import importlib.abc, importlib.util, os, signal, sys

POISON = os.environ.get("CHROMARAY_TEST_POISON", "")


def _in_ray_worker():
    return bool(sys.argv) and sys.argv[0].endswith("default_worker.py")


def _check(file):
    if POISON and POISON in str(file) and _in_ray_worker():
        with open(os.environ["CHROMARAY_TEST_POISON_LOG"], "a") as log:
            log.write(f"{os.getpid()}\\n")
        os.kill(os.getpid(), signal.SIGKILL)


def _wrap(sf):
    info, init = sf.info, sf.SoundFile.__init__

    def wrapped_info(file, *a, **k):
        _check(file)
        return info(file, *a, **k)

    def wrapped_init(self, file, *a, **k):
        _check(file)
        return init(self, file, *a, **k)

    sf.info, sf.SoundFile.__init__ = wrapped_info, wrapped_init


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "soundfile":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _wrap(module)

        spec.loader.exec_module = exec_module
        return spec


if POISON:
    sys.meta_path.insert(0, _Finder())
'''


@pytest.mark.timeout(600)
def test_a_file_that_kills_its_worker_becomes_an_error_row(tmp_path):
    lib = tmp_path / "library"
    library = make_library(lib, n_audio=5, seconds=4.0, n_midi=1)
    poison = write_song(lib / "poison.wav", 999, 4.0)  # good audio: it is the worker that dies on it
    library.append(poison)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_ON_OPEN)
    deaths = tmp_path / "deaths.log"
    db, out = tmp_path / "c.db", tmp_path / "out"
    # The poison file shares its worker call with batch mates: they must be stored all the same.
    env = {"PYTHONPATH": str(hook), "CHROMARAY_TEST_POISON": "poison.wav", "CHROMARAY_TEST_POISON_LOG": str(deaths),
           "CHROMARAY_PIPELINE__FILES_PER_SHARD": "4", "CHROMARAY_PIPELINE__FEATURE_BATCH_ROWS": "4"}
    run = start_fingerprint([lib], db, out, tmp_path, "poisoned", env=env)
    # Before the fix: no end (Ray retries the dead worker's task forever).
    assert run.wait(timeout=420) == 0, run.stderr[-3000:]

    killed = deaths.read_text().split()
    assert len(killed) == 3, f"the poison file killed {len(killed)} workers, expected max_worker_crashes = 3"
    errors = query(db, "SELECT path, stage, reason FROM errors")
    assert [(p, s) for p, s, _ in errors] == [(str(poison), "worker")], errors
    assert "crashed its worker 3 times" in errors[0][2]
    assert "1 errors" in run.stdout and "poison.wav" in run.stderr  # reported to the user too
    c = check_consistent(db, out, library)  # every other file a track, exactly once, no leftovers
    assert (c.audio, c.midi, c.errors) == (5, 1, 1)
    assert not (out / ".attempts").exists() or not any((out / ".attempts").iterdir())  # journal removed

    # A known error: the next run neither retries it nor dies on it (--retry-errors would).
    again = start_fingerprint([lib], db, out, tmp_path, "again", env=env)
    assert again.wait(timeout=300) == 0, again.stderr[-3000:]
    assert "nothing new" in again.stdout and len(deaths.read_text().split()) == 3
