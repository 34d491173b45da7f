"""duplicates on a library of several DSP settings: tracks are grouped by their stored settings
exactly as identify groups them, compared within their group only, and the tracks identify skips
are skipped here too, said in one line (real feature chain, sink, SQLite, index)."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import delete
from sqlalchemy.orm import Session

from actors.config import DSPConfig
from pipeline.search import index
from pipeline.search.duplicates import DuplicateFinder, find_duplicates
from pipeline.search.identify import Identifier
from pipeline.search.settings import UNKNOWN_SETTINGS
from pipeline.store import AnalysisSettings, TrackPath, open_db
from pipeline.synth import reencode, store_signals, varied_song

HOP256 = DSPConfig(hop_length=256)
#: Same frame rate (code grid) as the defaults, other STFT: its codes line up with the defaults'
#: in time, so only the stored settings keep them apart.
UNKNOWN = DSPConfig(n_fft=4096)


def _paths(groups) -> list[list[str]]:
    """The paths of each group (DuplicateGroup or its JSON object), sorted."""
    members = [g["members"] if isinstance(g, dict) else g.members for g in groups]
    return sorted(sorted(p for m in ms for p in m["paths"]) for ms in members)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """Song 41 at the defaults with an MP3 copy and again at hop 256 (the same recording on another
    code grid), song 42 at the defaults; song 43 and an OGG copy at settings the database does not
    know (their settings row deleted), 43 also at a second path (identical content)."""
    work = tmp_path_factory.mktemp("duplicates")
    s41, s42, s43 = (varied_song(s, 16.0) for s in (41, 42, 43))
    engine = open_db(work / "lib.sqlite")
    hashes: dict[str, str] = {}
    for items, dsp in (([("/music/song41.wav", s41), ("/music/copies/song41.mp3", reencode(s41, "mp3")),
                         ("/music/song42.wav", s42)], DSPConfig()),
                       ([("/music/hop256/song41.wav", s41)], HOP256),
                       ([("/music/unknown/song43.wav", s43), ("/music/unknown/song43.ogg", reencode(s43, "ogg"))],
                        UNKNOWN)):
        hashes.update(zip((p for p, _ in items), store_signals(engine, work / "out", items, dsp=dsp,
                                                                run_id=f"run-{dsp.version()}")))
    with Session(engine) as s, s.begin():
        s.execute(delete(AnalysisSettings).where(AnalysisSettings.dsp == UNKNOWN.to_dict()))
        s.add(TrackPath(path="/music/again/song43.wav", content_hash=hashes["/music/unknown/song43.wav"],
                        size_bytes=0, mtime_ns=0, last_seen_run="t"))
    index.sync(engine)
    yield engine, work, hashes
    engine.dispose()


def test_grouped_and_skipped_like_identify(library):
    engine, _, hashes = library
    finder = DuplicateFinder(engine)
    unknown = {hashes["/music/unknown/song43.wav"], hashes["/music/unknown/song43.ogg"]}
    assert finder.skipped == Identifier(engine).skipped == dict.fromkeys(unknown, UNKNOWN_SETTINGS)
    assert [(d, len(keys)) for d, keys in finder.settings.groups] == [(DSPConfig(), 3), (HOP256, 1)]
    # The copy at the defaults pairs; the hop-256 analysis of the same song is on another grid and
    # the unknown-settings pair (and 43's second path) is not searched at all.
    assert _paths(finder.find()) == [["/music/copies/song41.mp3", "/music/song41.wav"]]
    note = finder.note
    assert note is not None and "\n" not in note
    assert note.startswith(f"2 of 6 indexed tracks are not searched: {UNKNOWN_SETTINGS}")
    assert "tracks of 2 analysis settings (3, 1 tracks)" in note
    with pytest.warns(UserWarning, match="2 of 6 indexed tracks are not searched"):
        assert _paths(find_duplicates(engine)) == [["/music/copies/song41.mp3", "/music/song41.wav"]]


def test_dsp_argument_supplies_unknown_settings(library):
    engine, _, _ = library
    finder = DuplicateFinder(engine, dsp=UNKNOWN)
    assert not finder.skipped
    assert [(d, len(keys)) for d, keys in finder.settings.groups] == [(DSPConfig(), 3), (UNKNOWN, 2), (HOP256, 1)]
    groups = finder.find()
    assert _paths(groups) == [["/music/again/song43.wav", "/music/unknown/song43.ogg", "/music/unknown/song43.wav"],
                              ["/music/copies/song41.mp3", "/music/song41.wav"]]
    assert all(0.7 < g.similarity <= 1.0 for g in groups)  # 0.96 (MP3 copy), 0.79 (OGG, n_fft 4096)


def test_cli_says_which_tracks_were_skipped(library, capsys):
    from jobs.cli import main

    _, work, _ = library
    assert main(["duplicates", "--db", str(work / "lib.sqlite"), "--json"]) == 0
    captured = capsys.readouterr()
    groups = [json.loads(line) for line in captured.out.splitlines()]
    assert _paths(groups) == [["/music/copies/song41.mp3", "/music/song41.wav"]]
    assert captured.err.startswith("chromaray duplicates: warning: 2 of 6 indexed tracks are not searched")
    assert captured.err.count("\n") == 1


def test_cli_refuses_a_library_it_cannot_search(tmp_path, capsys):
    from jobs.cli import main

    engine = open_db(tmp_path / "lib.sqlite")
    store_signals(engine, tmp_path / "out", [("/music/x.wav", varied_song(44, 6.0))], dsp=UNKNOWN)
    with Session(engine) as s, s.begin():
        s.execute(delete(AnalysisSettings))
    engine.dispose()
    assert main(["duplicates", "--db", str(tmp_path / "lib.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "no track of" in err and "1 of 1 indexed tracks are not searched" in err and err.count("\n") == 1
