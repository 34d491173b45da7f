"""On a node where Ray can schedule no CPU (cluster.yaml's head, where `ray job submit` runs the
driver) the index build and the duplicate search work in process instead of waiting forever for
tasks pinned to that node (a real Ray started with num_cpus=0 in a subprocess)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.paths import REPO

SCRIPT = textwrap.dedent("""
    import sys
    import ray
    from pipeline.search import index
    from pipeline.search.duplicates import DuplicateFinder
    from pipeline.store import open_db
    from pipeline.synth import store_signals, varied_song

    eng = open_db(sys.argv[1])
    song = varied_song(3, 12.0)
    store_signals(eng, sys.argv[2], [("/m/a.wav", song), ("/m/quiet-copy.wav", 0.5 * song),
                                     ("/m/other.wav", varied_song(4, 12.0))])
    ray.init(num_cpus=0, include_dashboard=False)
    built = index.rebuild(eng, workers="ray")
    finder = DuplicateFinder(eng)
    groups = finder.find(workers="ray")
    print(built["tracks"], finder.timing["workers"], [sorted(p for m in g.members for p in m["paths"]) for g in groups])
""")


def test_ray_paths_fall_back_to_this_process_without_cpus_here(tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "lib.sqlite"), str(tmp_path / "out")],
                          cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[-2] == "3 driver [['/m/a.wav', '/m/quiet-copy.wav']]", proc.stdout
    assert "no CPU for Ray tasks on this node" in proc.stderr
