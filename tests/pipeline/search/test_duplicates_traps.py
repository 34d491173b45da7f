"""duplicates: what is not the same recording stays ungrouped (drum loops, drones, silence, tracks
sharing a long intro), a re-encoded copy is grouped, and the comparison on Ray tasks finds the
same groups as in-process (real feature chain, sink, SQLite, index; ~2 min of signals in all)."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.search import index
from pipeline.search.duplicates import DuplicateFinder, agrees_throughout
from pipeline.store import open_db
from pipeline.synth import reencode, store_signals, varied_song
from pipeline.synth.signals import chord, drum_pattern, silence


def _paths(groups) -> list[list[str]]:
    return sorted(sorted(p for m in g.members for p in m["paths"]) for g in groups)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    work = tmp_path_factory.mktemp("dup_traps")
    song = varied_song(53, 14.0)
    intro = varied_song(50, 12.0)
    loop = drum_pattern(bpm=120.0, seconds=10.0, seed=0)
    items = [
        ("/lib/song53.wav", song), ("/lib/song53.mp3", reencode(song, "mp3")),  # the one true pair
        # Two tracks that share a 12 s intro and then differ (4 s): 75 % of the overlap agrees.
        ("/lib/intro_a.wav", np.r_[intro, varied_song(51, 4.0)]),
        ("/lib/intro_b.wav", np.r_[intro, varied_song(52, 4.0)]),
        # The same drum loop alone and under a chord; another loop; drones of one chord in two
        # registers and timbres (two drones identical but for their partials' phases give the same
        # codes: no fingerprint tells them apart); silence.
        ("/lib/loop.wav", loop), ("/lib/loop_chord.wav", loop + chord([57, 60, 64], seconds=10.0)),
        ("/lib/loop_b.wav", drum_pattern(bpm=100.0, seconds=9.0, seed=1)),
        ("/lib/drone.wav", chord([60, 64, 67], seconds=9.0)),
        ("/lib/drone_low.wav", chord([48, 52, 55], seconds=11.0, harmonics=6, seed=1)),
        ("/lib/silence.wav", silence(seconds=6.0)), ("/lib/silence_long.wav", silence(seconds=8.0)),
    ]
    engine = open_db(work / "lib.sqlite")
    hashes = dict(zip((p for p, _ in items), store_signals(engine, work / "out", items)))
    index.sync(engine)
    yield engine, hashes
    engine.dispose()


def test_traps_are_not_grouped(library):
    engine, _ = library
    groups = DuplicateFinder(engine).find(workers="driver")
    assert _paths(groups) == [["/lib/song53.mp3", "/lib/song53.wav"]]


def test_shared_intro_agrees_in_part_only(library):
    """The pair sharing an intro scores as a duplicate over the whole overlap (which is why the
    windowed check exists) and fails agrees_throughout; the re-encoded copy passes it."""
    from pipeline.search.score import verify_codes

    engine, h = library
    idx = index.FingerprintIndex.open(engine)
    key = {t.content_hash: k for k, t in idx.tracks.items()}
    a, b = idx.track_codes(key[h["/lib/intro_a.wav"]]), idx.track_codes(key[h["/lib/intro_b.wav"]])
    assert verify_codes(a, b, 0).score < 0.202
    assert not agrees_throughout(a, b, 0)
    assert agrees_throughout(idx.track_codes(key[h["/lib/song53.wav"]]), idx.track_codes(key[h["/lib/song53.mp3"]]), 0)


@pytest.mark.ray
def test_ray_tasks_find_the_same_groups(library, ray_local, monkeypatch):
    from pipeline.search import duplicates

    engine, _ = library
    monkeypatch.setattr(duplicates, "TRACKS_PER_TASK", 3)  # several key ranges
    finder = DuplicateFinder(engine)
    on_ray = finder.find(workers="ray")
    assert finder.timing["workers"] == "ray" and finder.timing["tracks"] == 11
    assert [g.to_json() for g in on_ray] == [g.to_json() for g in DuplicateFinder(engine).find(workers="driver")]
    assert _paths(on_ray) == [["/lib/song53.mp3", "/lib/song53.wav"]]


def test_sampled_lookups_keep_the_copy_and_the_traps_out(library, monkeypatch):
    """Tracks whose codes hold more postings than the lookup budget are looked up every s-th code
    (large libraries); here forced with a tiny budget: the same groups."""
    from pipeline.search import duplicates

    engine, _ = library
    monkeypatch.setattr(duplicates, "LOOKUP_POSTINGS", 300)  # every 2nd code of each track
    calls: list[int] = []
    lookup = index.FingerprintIndex.lookup

    def counted(self, codes, live=None, **kw):
        calls.append(len(codes))
        return lookup(self, codes, live, **kw)

    monkeypatch.setattr(index.FingerprintIndex, "lookup", counted)
    assert _paths(DuplicateFinder(engine).find(workers="driver")) == [["/lib/song53.mp3", "/lib/song53.wav"]]
    finder = DuplicateFinder(engine)
    n_codes = sorted(t.n_codes for t in finder.index.tracks.values())
    assert max(calls) < max(n_codes)  # sampled
