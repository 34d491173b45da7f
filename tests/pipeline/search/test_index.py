"""pipeline.search.index: incremental add/remove, sync with the fingerprints table, deterministic rebuild."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from actors.fingerprint import DECIMATE, FP_FRAME_RATE_HZ, FP_VERSION
from pipeline.search import index
from pipeline.store import Fingerprint, Track, open_db

#: Analysis frame rate of the default settings (fingerprint rows store the code rate, / DECIMATE).
RATE = FP_FRAME_RATE_HZ * DECIMATE


def _h(i: int) -> str:
    return hashlib.sha256(f"track-{i}".encode()).hexdigest()


def _codes(i: int, n: int = 300) -> np.ndarray:
    rng = np.random.default_rng(i)
    # Runs of repeated codes, like real fingerprints (chords last several codes).
    return np.repeat(rng.integers(0, 2**32, size=n // 3 + 1, dtype=np.uint64).astype(np.uint32), 3)[:n]


def _store(engine, items, version=FP_VERSION, code_rate=FP_FRAME_RATE_HZ):
    with Session(engine) as s, s.begin():
        for h, codes in items:
            if s.query(Track).filter_by(content_hash=h).first() is None:
                s.merge(Track(content_hash=h, kind="audio", format="WAV", size_bytes=0, duration_s=10.0,
                              features_version="f", run_id="t"))
            s.merge(Fingerprint(content_hash=h, version=version, frame_rate_hz=code_rate,
                                n_codes=len(codes), codes=np.asarray(codes, "<u4").tobytes()))


def _posting_set(idx: index.FingerprintIndex) -> set[tuple[str, int, int]]:
    out = set()
    for seg in idx.segments:
        for code, key, frame in np.asarray(seg).T:
            if idx.live[key]:
                out.add((idx.tracks[int(key)].content_hash, int(code), int(frame)))
    return out


def _expected(items) -> set[tuple[str, int, int]]:
    return {(h, int(c), f) for h, codes in items for f, c in enumerate(codes)}


@pytest.fixture()
def engine(tmp_path):
    eng = open_db(tmp_path / "lib.sqlite")  # creates every table, the index manifest's too
    yield eng
    eng.dispose()


def test_add_lookup_remove(engine):
    items = [(_h(i), _codes(i)) for i in range(5)]
    _store(engine, items)
    assert index.add_tracks(engine, items[:3], frame_rate_hz=RATE) == 3
    idx = index.FingerprintIndex.open(engine)
    assert _posting_set(idx) == _expected(items[:3])
    # Lookup: every code of track 1 finds track 1 at the right frames.
    q = items[1][1][10:20]
    qi, keys, frames = idx.lookup(q)
    hits = {(int(a), idx.tracks[int(k)].content_hash, int(f)) for a, k, f in zip(qi, keys, frames)}
    for j in range(10):
        assert (j, _h(1), 10 + j) in hits
    # Incremental: add two more, remove one; readers see exactly the live set.
    index.add_tracks(engine, items[3:], frame_rate_hz=RATE)
    assert index.remove_tracks(engine, [_h(1)]) == 1
    idx = index.FingerprintIndex.open(engine)
    live = [it for it in items if it[0] != _h(1)]
    assert _posting_set(idx) == _expected(live)
    qi, keys, _ = idx.lookup(items[1][1])
    assert _h(1) not in {idx.tracks[int(k)].content_hash for k in keys}
    st = index.stats(engine)
    assert st["tracks"] == 4 and st["live_postings"] == sum(len(c) for _, c in live)
    # Compaction drops the dead postings and keeps the live ones.
    assert index.maybe_compact(engine, force=True)
    st = index.stats(engine)
    assert st["segments"] == 1 and st["postings"] == st["live_postings"]
    assert _posting_set(index.FingerprintIndex.open(engine)) == _expected(live)
    assert sorted(p.name for p in index.index_dir(engine).iterdir()) == _segment_names(engine)


def _segment_names(engine) -> list[str]:
    """The files the index directory must hold: each live segment and its directory file."""
    with Session(engine) as s:
        names = list(s.scalars(select(index.FpIndexSegment.name)))
    return sorted(names + ["dir-" + n[len("seg-"):] for n in names])


def test_sync_follows_fingerprints_and_rebuild_is_deterministic(engine, tmp_path):
    items = [(_h(i), _codes(i)) for i in range(6)]
    _store(engine, items[:4])
    st = index.sync(engine)
    assert st["added"] == 4 and st["tracks"] == 4
    assert not index.is_stale(engine)
    # Library changes: two tracks added, one deleted, one re-fingerprinted with other codes,
    # one re-fingerprinted by another algorithm version (must leave the index).
    _store(engine, items[4:])
    with Session(engine) as s, s.begin():
        s.query(Fingerprint).filter_by(content_hash=_h(0)).delete()
        s.query(Track).filter_by(content_hash=_h(0)).delete()
    changed = (_h(2), _codes(99, 200))
    _store(engine, [changed])
    _store(engine, [(_h(3), _codes(3))], version="cfp0-old")
    assert index.is_stale(engine)
    st = index.sync(engine)
    want = [items[1], changed, items[4], items[5]]
    assert _posting_set(index.FingerprintIndex.open(engine)) == _expected(want)
    assert st["tracks"] == 4 and not index.is_stale(engine)
    # A rebuild gives the same postings and byte-identical files, whatever the history.
    index.rebuild(engine)
    files1 = {p.name: p.read_bytes() for p in index.index_dir(engine).iterdir()}
    assert _posting_set(index.FingerprintIndex.open(engine)) == _expected(want)
    other = open_db(tmp_path / "other" / "lib.sqlite")
    _store(other, list(reversed(want)))
    index.rebuild(other)
    files2 = {p.name: p.read_bytes() for p in index.index_dir(other).iterdir()}
    assert files1 == files2 and len(files1) == 2  # one segment, its directory
    other.dispose()


def test_crash_leftovers_are_removed_and_readonly_open(engine, tmp_path):
    items = [(_h(i), _codes(i)) for i in range(3)]
    _store(engine, items)
    index.sync(engine)
    d = index.index_dir(engine)
    (d / "seg-deadbeefdeadbeef.npy").write_bytes(b"partial")
    (d / ".tmp-123.npy").write_bytes(b"partial")
    index.add_tracks(engine, [(_h(7), _codes(7))], frame_rate_hz=RATE)
    index.maybe_compact(engine, force=True)
    assert {p.name for p in d.iterdir()} == set(_segment_names(engine))
    ro = open_db(tmp_path / "lib.sqlite", readonly=True)
    idx = index.FingerprintIndex.open(ro)
    assert len(idx.tracks) == 4 and idx.n_postings == 4 * 300
    np.testing.assert_array_equal(idx.track_codes(min(idx.tracks)), items[0][1])
    ro.dispose()


def test_frequent_codes_are_skipped(engine):
    silence = [(_h(i), np.zeros(300, np.uint32)) for i in range(8)]
    _store(engine, silence)
    index.sync(engine)
    idx = index.FingerprintIndex.open(engine)
    idx.max_postings_per_code = 1000
    qi, _, _ = idx.lookup(np.zeros(3, np.uint32))
    assert len(qi) == 0  # 2400 postings of code 0: a stop word
    idx.max_postings_per_code = 5000
    qi, _, _ = idx.lookup(np.zeros(1, np.uint32))
    assert len(qi) == 2400


def test_deleted_index_files_are_rebuilt(engine):
    items = [(_h(i), _codes(i)) for i in range(3)]
    _store(engine, items)
    index.sync(engine)
    import shutil

    shutil.rmtree(index.index_dir(engine))
    assert index.is_stale(engine)
    index.sync(engine)
    assert not index.is_stale(engine)
    assert _posting_set(index.FingerprintIndex.open(engine)) == _expected(items)


def test_each_track_keeps_its_own_analysis_rate(engine):
    """Rows store the code rate; the index holds analysis rate = code rate x DECIMATE for every
    track, whatever the settings (hop 256: 21.5 codes/s, which the old heuristic took for an
    analysis rate). A row whose rate changes (a schema upgrade stores the true rate) is stale."""
    default, hop256 = [(_h(i), _codes(i)) for i in range(2)], [(_h(i), _codes(i)) for i in range(2, 4)]
    _store(engine, default)
    _store(engine, hop256, code_rate=22050 / 256 / DECIMATE)
    index.sync(engine)
    idx = index.FingerprintIndex.open(engine)
    rates = {t.content_hash: t.frame_rate_hz for t in idx.tracks.values()}
    assert rates == {**{h: 22050 / 512 for h, _ in default}, **{h: 22050 / 256 for h, _ in hop256}}
    assert not index.is_stale(engine)
    with Session(engine) as s, s.begin():
        s.get_one(Fingerprint, _h(0)).frame_rate_hz = 22050 / 1024 / DECIMATE
    assert index.is_stale(engine)
    st = index.sync(engine)
    assert (st["added"], st["removed"], st["tracks"]) == (1, 1, 4) and not index.is_stale(engine)
    idx = index.FingerprintIndex.open(engine)
    assert {t.content_hash: t.frame_rate_hz for t in idx.tracks.values()}[_h(0)] == 22050 / 1024


def test_lookup_restricted_to_a_mask(engine):
    items = [(_h(i), _codes(i)) for i in range(3)]
    _store(engine, [items[0], items[1], (items[2][0], items[0][1])])  # track 2 holds track 0's codes
    index.sync(engine)
    idx = index.FingerprintIndex.open(engine)
    key = {t.content_hash: k for k, t in idx.tracks.items()}
    _, keys, _ = idx.lookup(items[0][1][:20])
    assert set(keys.tolist()) == {key[_h(0)], key[_h(2)]}
    _, keys, _ = idx.lookup(items[0][1][:20], idx.mask([key[_h(2)], key[_h(1)]]))
    assert set(keys.tolist()) == {key[_h(2)]}


def test_writers_need_the_tables_open_db_creates(tmp_path):
    """The index never creates tables itself (open_db owns the schema): a database opened without
    them is refused in one line, and readers see an empty index."""
    from actors.errors import ChromarayError

    bare = open_db(tmp_path / "bare.sqlite", create=False)
    for write in (index.sync, index.rebuild, lambda e: index.add_tracks(e, [(_h(0), _codes(0))], frame_rate_hz=RATE),
                  lambda e: index.remove_tracks(e, [_h(0)])):
        with pytest.raises(ChromarayError, match="has no fingerprint index tables"):
            write(bare)
    assert index.FingerprintIndex.open(bare).tracks == {} and index.is_stale(bare)
    assert index.stats(bare)["tracks"] == 0
    bare.dispose()


def _shared_library(n_tracks: int = 24, seed: int = 5) -> list[tuple[str, np.ndarray]]:
    """Tracks chained from segments of a few source sequences (codes shared between tracks, as
    between songs), some XOR-masked; code 0 (silence) in every track; extreme codes present."""
    rng = np.random.default_rng(seed)
    sources = [_codes(1000 + i, 400) for i in range(4)]
    sources[0][:3] = [0, 2**32 - 1, 2**31]
    items = []
    for i in range(n_tracks):
        parts = [np.zeros(5, np.uint32)]
        while sum(len(p) for p in parts) < 250:
            src = sources[int(rng.integers(len(sources)))]
            a = int(rng.integers(0, 300))
            seg = src[a: a + int(rng.integers(20, 100))]
            parts.append(seg if rng.random() < 0.5 else seg ^ np.uint32(rng.integers(0, 2**32)))
        items.append((_h(i), np.concatenate(parts).astype(np.uint32)))
    return items


def _brute_lookup(idx: index.FingerprintIndex, codes, live, budget):
    """Reference for FingerprintIndex.lookup: every posting of every segment scanned, the
    documented stop list applied (more than stop_postings postings; beyond the budget, codes with
    most postings first), as a set of (query index, key, frame)."""
    codes = np.asarray(codes, np.uint32)
    allp = np.concatenate([np.asarray(s) for s in idx.segments], axis=1)
    count = {int(c): int(np.sum(allp[0] == c)) for c in set(codes.tolist())}
    ok = {c for c, n in count.items() if n <= idx.stop_postings}
    mult = {c: int(np.sum(codes == c)) for c in count}
    if budget is not None and sum(count[c] * mult[c] for c in ok) > budget:
        spent, kept = 0, set()
        for c in sorted(ok, key=lambda c: (count[c], c)):
            spent += count[c] * mult[c]
            if spent <= budget:
                kept.add(c)
        ok = kept
    out = set()
    for qi, c in enumerate(codes.tolist()):
        if c in ok:
            for j in np.flatnonzero(allp[0] == c):
                k = int(allp[1, j])
                if k < len(live) and live[k]:
                    out.add((qi, k, int(allp[2, j])))
    return out


def test_lookup_equals_a_brute_force_scan(engine):
    """The directory + vectorised binary search finds exactly the postings a full scan finds,
    over several segments (one with dead postings), with a mask, under a budget and the stop list."""
    items = _shared_library()
    _store(engine, items)
    index.add_tracks(engine, items[:10], frame_rate_hz=RATE)
    index.add_tracks(engine, items[10:], frame_rate_hz=RATE)
    index.remove_tracks(engine, [items[3][0]])
    idx = index.FingerprintIndex.open(engine)
    assert len(idx.segments) == 2 and all(len(d) == 2**8 + 1 for d in idx.directories)
    rng = np.random.default_rng(0)
    pool = np.concatenate([c for _, c in items])
    q = np.r_[rng.choice(pool, 300), rng.integers(0, 2**32, 50).astype(np.uint32), [0, 2**32 - 1, 2**31, 1]]
    q = q.astype(np.uint32)
    keys = sorted(idx.tracks)
    idx.max_postings_per_code = 60  # code 0 (5 per track) and the most shared codes are stop words
    for live, budget in ((None, None), (idx.mask(keys[::2]), None), (None, 2000), (idx.mask(keys[1::3]), 500)):
        qi, k, f = idx.lookup(q, live, max_postings=budget)
        got = set(zip(qi.tolist(), k.tolist(), f.tolist()))
        assert len(got) == len(qi)
        want = _brute_lookup(idx, q, idx.live if live is None else live, budget)
        assert got == want and want
    assert not (set(idx.lookup(np.zeros(1, np.uint32))[0].tolist()))  # 115 postings of silence: stop word
    # The default budget (class attribute) applies when the call gives none.
    idx.max_postings_per_query = 2000
    assert len(idx.lookup(q)[0]) == len(_brute_lookup(idx, q, idx.live, 2000))
    # A directory recomputed from the code row (index files written before directories) is the same.
    np.testing.assert_array_equal(index._load_directory(idx.segments[0]), idx.directories[0])


@pytest.mark.ray
def test_ray_build_equals_driver_build(engine, tmp_path, ray_local):
    """rebuild on Ray workers (several shards, several code ranges) writes byte for byte the files
    and manifest of the in-process rebuild."""
    items = _shared_library(30)
    _store(engine, items)

    def snapshot(eng):
        d = index.index_dir(eng)
        with Session(eng) as s:
            rows = sorted(s.execute(select(index.FpIndexTrack.content_hash, index.FpIndexTrack.track_key,
                                           index.FpIndexTrack.frame_rate_hz, index.FpIndexTrack.n_codes,
                                           index.FpIndexTrack.segment)).tuples())
            segs = sorted(s.execute(select(index.FpIndexSegment.name, index.FpIndexSegment.n_postings,
                                           index.FpIndexSegment.n_tracks, index.FpIndexSegment.max_key)).tuples())
        return {p.name: (p.read_bytes(), p.stat().st_mode & 0o777) for p in d.iterdir()}, rows, segs

    st = index.rebuild(engine, workers="driver")
    driver = snapshot(engine)
    st_ray = index.rebuild(engine, workers="ray", shard_tracks=7, part_postings=1500)
    assert snapshot(engine) == driver and st_ray == st
    assert st["postings"] == sum(len(c) for _, c in items) and len(driver[0]) == 2
    with pytest.raises(ValueError, match="workers must be"):
        index.rebuild(engine, workers="cluster")
