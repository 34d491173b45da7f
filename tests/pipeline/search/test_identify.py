"""identify / duplicates on a generated library (pipeline feature chain + fingerprint + index,
stored in a temporary SQLite as the fingerprint job stores it; no Ray needed here)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from pipeline.search import index
from pipeline.search.duplicates import find_duplicates
from pipeline.search.identify import Identifier, identify
from pipeline.store import open_db
from pipeline.synth import SR, add_noise, change_speed, drums, reencode, store_signals, varied_song
from tests.pipeline.search.clips import cut

SONG_S = 20.0
SEEDS = [11, 12, 13, 14, 15]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """5 songs, plus two other versions of the same recordings:
    song 11 as low-bitrate MP3, trimmed by 1.5 s at the start, padded with 1 s of silence, quieter;
    song 12 as OGG/Vorbis, louder. Returns (engine, db path, songs, paths)."""
    work = tmp_path_factory.mktemp("identify")
    songs = {s: varied_song(s, SONG_S) for s in SEEDS}
    trim = int(1.5 * SR)
    copy_a = np.concatenate([reencode(songs[11], "mp3")[trim:] * 0.4, np.zeros(SR, np.float32)]).astype(np.float32)
    copy_b = np.clip(reencode(songs[12], "ogg") * 1.2, -1, 1).astype(np.float32)
    items = [(f"/music/song{s}.wav", y) for s, y in songs.items()]
    items += [("/music/copies/song11-trimmed.mp3", copy_a), ("/music/copies/song12.ogg", copy_b)]
    db = work / "lib.sqlite"
    engine = open_db(db)
    store_signals(engine, work / "parts", items)
    index.sync(engine)
    yield engine, db, songs, work
    engine.dispose()


@pytest.fixture(scope="module")
def ident(library):
    return Identifier(library[0])


def _matches_song(m, seed: int) -> bool:
    """The original or (for songs 11, 12) its other version: both are the same recording."""
    return m is not None and any(p.startswith((f"/music/song{seed}", f"/music/copies/song{seed}"))
                                 for p in m.paths)


def test_clean_clip(ident, library):
    songs = library[2]
    # Starts between analysis frames (hop 512): 123 samples past 7.3 s.
    m = ident.identify_signal(cut(songs[13], 7.3, 5.0, extra_samples=123))
    assert m is not None and m.path == "/music/song13.wav"
    assert abs(m.offset_s - (7.3 + 123 / SR)) < 0.05
    assert m.confidence > 0.9 and m.speed == 1.0


def test_noisy_reencoded_clip(ident, library):
    songs = library[2]
    clip = reencode(add_noise(cut(songs[14], 4.0, 10.0, 77), 10.0, np.random.default_rng(1)), "mp3")
    m = ident.identify_signal(clip)
    assert m is not None and m.path == "/music/song14.wav"
    # The MP3 encoder delays the audio by ~1105 samples (0.05 s).
    assert abs(m.offset_s - 4.0) < 0.12
    assert m.confidence > 0.7


def test_speed_changed_clip(ident, library):
    songs = library[2]
    m = ident.identify_signal(change_speed(cut(songs[15], 9.0, 5.0), 1.02))
    assert m is not None and m.path == "/music/song15.wav" and m.speed == pytest.approx(1.02)
    assert abs(m.offset_s - 9.0) < 0.1


def test_out_of_library_clips_do_not_match(ident):
    rng = np.random.default_rng(3)
    for seed in (900, 901, 902):
        y = varied_song(seed, 12.0)
        clip = cut(y, 1.0, 10.0)
        if seed == 901:
            clip = reencode(add_noise(clip, 10.0, rng), "ogg")
        assert ident.identify_signal(clip) is None, seed
        assert ident.last_best is None or ident.last_best[0].ber > 0.15


def test_duplicates_across_formats(library):
    engine = library[0]
    groups = find_duplicates(engine)
    got = sorted(sorted(p for m in g.members for p in m["paths"]) for g in groups)
    assert got == [["/music/copies/song11-trimmed.mp3", "/music/song11.wav"],
                   ["/music/copies/song12.ogg", "/music/song12.wav"]]
    for g in groups:
        assert 0.8 < g.similarity <= 1.0
        offs = {m["paths"][0]: m["offset_s"] for m in g.members}
        if "/music/song11.wav" in offs:
            # Relative position of the trimmed copy: 1.5 s of the original are missing.
            assert abs((offs["/music/copies/song11-trimmed.mp3"] - offs["/music/song11.wav"]) - (-1.5)) < 0.15


def test_cli_identify_and_duplicates_json(library, capsys):
    from jobs.cli import main

    engine, db, songs, work = library
    inside = work / "clip-inside.wav"
    outside = work / "clip-outside.ogg"
    sf.write(inside, cut(songs[12], 3.0, 6.0, 300), SR)
    sf.write(outside, cut(varied_song(777, 10.0), 2.0, 6.0), SR, format="OGG", subtype="VORBIS")
    assert main(["identify", str(inside), str(outside), "--db", str(db), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["clip"] for x in lines] == [str(inside), str(outside)]
    hit = lines[0]["match"]
    assert hit["path"] in ("/music/song12.wav", "/music/copies/song12.ogg")
    assert abs(hit["offset_s"] - 3.0) < 0.1 and 0 < hit["confidence"] <= 1
    assert lines[1]["match"] is None
    # Text mode and the Python API say the same.
    assert main(["identify", str(outside), "--db", str(db)]) == 0
    assert capsys.readouterr().out.strip().endswith("no match")
    api = identify(engine, [str(inside)])
    assert api[0] is not None and api[0].content_hash == hit["content_hash"]
    assert main(["duplicates", "--db", str(db), "--json"]) == 0
    groups = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(groups) == 2 and all({"members", "similarity"} <= set(g) for g in groups)
    # A user error is one line, exit 2.
    assert main(["identify", str(work / "missing.wav"), "--db", str(db)]) == 2


def test_static_drum_loops_are_not_duplicates(tmp_path):
    """Drum-only tracks at different tempos have nearly constant chroma, so their codes agree at
    any offset; without the alignment-contrast check they grouped as one recording (seen on the
    demo library). A re-encoded copy among them is still found."""
    loops = {bpm: drums(30.0, bpm, np.random.default_rng(int(bpm))) * 0.5 for bpm in (84.0, 97.0, 131.0, 152.0)}
    items = [(f"/music/drums{int(b)}.wav", y) for b, y in loops.items()]
    items.append(("/music/copies/song13.mp3", reencode(varied_song(13, SONG_S), "mp3")))
    items.append(("/music/song13.wav", varied_song(13, SONG_S)))
    engine = open_db(tmp_path / "lib.sqlite")
    store_signals(engine, tmp_path / "parts", items)
    index.sync(engine)
    groups = [sorted(p for m in g.members for p in m["paths"]) for g in find_duplicates(engine)]
    assert groups == [["/music/copies/song13.mp3", "/music/song13.wav"]]
    # The same trap for identify: a drum loop that is not in the library matches none of them.
    clip = tmp_path / "new-loop.wav"
    sf.write(clip, drums(10.0, 113.0, np.random.default_rng(5)) * 0.5, SR)
    song_clip = tmp_path / "song13-clip.wav"
    sf.write(song_clip, cut(items[-1][1], 4.0, 6.0), SR)
    ident = Identifier(engine)
    m_loop = ident.identify_file(str(clip))
    # Static loops agree with it anywhere: no partial match either (that search sweeps this
    # small library whole), neither with them nor with the loop-based track of another tempo.
    assert m_loop is None and ident.last_best is not None
    best = ident.last_best[0]
    assert best.partial is not None and best.mix_contrast < ident.config.mix_min_sweep_contrast
    m_song = identify(engine, [str(song_clip)])[0]
    assert m_song is not None and set(m_song.paths) & {"/music/song13.wav", "/music/copies/song13.mp3"}
    assert abs(m_song.offset_s - 4.0) < 0.2


def test_probes_flip_up_to_two_of_the_weakest_bits() -> None:
    from itertools import combinations

    from pipeline.search.identify import probes

    rng = np.random.default_rng(3)
    codes = rng.integers(0, 2**32, 10, dtype=np.uint64).astype(np.uint32)
    rel = rng.random((32, 10)).astype(np.float32)
    frames = np.array([2, 5, 7])
    keys, of = probes(codes, rel, frames, weak_bits=4, max_flips=2)
    assert len(keys) == len(of) == 3 * (1 + 4 + 6)
    for j in frames:
        weak = np.argsort(rel[:, j], kind="stable")[:4]
        want = {int(codes[j])} | {int(codes[j]) ^ (1 << int(w)) for w in weak} | \
            {int(codes[j]) ^ (1 << int(u)) ^ (1 << int(v)) for u, v in combinations(weak, 2)}
        assert {int(k) for k in keys[of == j]} == want
    single, _ = probes(codes, rel, frames, weak_bits=6, max_flips=1)
    assert len(single) == 3 * 7


def test_clip_chroma_is_the_feature_chains_chroma(library: tuple) -> None:
    """identify's chroma-only analysis gives exactly the chroma of the pipeline's feature chain."""
    from actors.config import BatchConfig, DSPConfig
    from actors.features import FeatureExtractor

    fx = FeatureExtractor(DSPConfig(), BatchConfig(device="cpu"))
    for clip in (cut(library[2][13], 2.3, 4.0, 77), np.zeros(SR // 2, np.float32)):
        want = fx([clip])[0].chroma
        got = fx.clip_chroma(clip)
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_other_speeds_only_without_an_accepted_match(library: tuple) -> None:
    """A noisy clip accepted at speed 1 is analysed once, not at every speed factor."""
    from actors.config import DSPConfig

    ident = Identifier(library[0])
    calls: list[int] = []
    chroma = ident.chroma

    def counted(signals: list[np.ndarray], dsp: DSPConfig | None = None) -> list[np.ndarray]:
        calls.append(len(signals))
        return chroma(signals, dsp)

    ident.chroma = counted  # type: ignore[method-assign]
    clip = add_noise(cut(library[2][14], 4.0, 10.0), 0.0, np.random.default_rng(2))
    m = ident.identify_signal(clip)
    assert m is not None and m.path == "/music/song14.wav" and m.speed == 1.0
    assert ident.last_best is not None and ident.last_best[0].score > 0.10  # not a near-perfect match
    assert len(calls) == 1


def test_quick_pass_agrees_with_the_full_search_and_falls_through(ident, library, monkeypatch):
    """The first pass (exact codes, a small posting budget) finds what the full pass finds and
    ends the search; a clip it does not accept goes on to the full pass (budget None: the
    index's own)."""
    from pipeline.search.identify import accepts, search

    songs = library[2]
    rate = ident.dsp.frame_rate_hz
    budgets: list = []
    real_lookup = ident.index.lookup

    def recorded(codes, live=None, *, max_postings=None):
        budgets.append(max_postings)
        return real_lookup(codes, live, max_postings=max_postings)

    monkeypatch.setattr(ident.index, "lookup", recorded)
    clean = cut(songs[13], 7.3, 5.0, extra_samples=123)
    noisy = reencode(add_noise(cut(songs[14], 4.0, 10.0, 77), 10.0, np.random.default_rng(1)), "mp3")
    full = ident.config.replace(quick_postings=0)
    for clip in (clean, noisy):
        chroma = ident.chroma([clip])[0]
        budgets.clear()
        quick = search(ident.index, chroma, rate, config=ident.config)
        assert budgets[0] == ident.config.quick_postings
        ref = search(ident.index, chroma, rate, config=full)
        assert quick is not None and ref is not None and accepts(quick, ident.config) and accepts(ref, full)
        assert quick.key == ref.key and abs(quick.offset - ref.offset) <= 1
    budgets.clear()
    assert search(ident.index, ident.chroma([clean])[0], rate, config=ident.config) is not None
    assert budgets == [ident.config.quick_postings]  # accepted by the first pass alone
    other = varied_song(99, 8.0)  # not in the library
    budgets.clear()
    c = search(ident.index, ident.chroma([other])[0], rate, config=ident.config)
    assert c is None or not accepts(c, ident.config)
    assert budgets == [ident.config.quick_postings, None]
