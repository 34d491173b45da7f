"""identify on a library whose tracks were fingerprinted with different DSP settings: the clip is
analysed once per stored setting and searched among that setting's tracks only; tracks whose
settings are unknown are reported, never silently missed (real feature chain, sink, SQLite, index)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import soxr
from sqlalchemy import delete
from sqlalchemy.orm import Session

from actors.config import DSPConfig
from pipeline.search import index
from pipeline.search.identify import UNKNOWN_SETTINGS, Identifier, identify
from pipeline.store import AnalysisSettings, open_db
from pipeline.synth import SR, store_signals, varied_song
from tests.pipeline.search.clips import cut

HOP256 = DSPConfig(hop_length=256)
SR16K = DSPConfig(sample_rate=16000)
UNKNOWN = DSPConfig(n_fft=4096)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """Songs 31-32 at the defaults, 33-34 at hop 256, 35 at 16 kHz, 36 at settings the database
    does not know (their row deleted, as in a library fingerprinted before settings were stored)."""
    work = tmp_path_factory.mktemp("settings")
    songs = {s: varied_song(s, 16.0) for s in range(31, 37)}
    engine = open_db(work / "lib.sqlite")
    hashes = {}
    for seeds, dsp in (((31, 32), DSPConfig()), ((33, 34), HOP256), ((35,), SR16K), ((36,), UNKNOWN)):
        items = [(f"/music/song{s}.wav", songs[s] if dsp.sample_rate == SR
                  else soxr.resample(songs[s], SR, dsp.sample_rate).astype(np.float32)) for s in seeds]
        hashes.update(zip(seeds, store_signals(engine, work / "out", items, dsp=dsp, run_id=f"run-{seeds[0]}")))
    with Session(engine) as s, s.begin():
        s.execute(delete(AnalysisSettings).where(AnalysisSettings.dsp == UNKNOWN.to_dict()))
    index.sync(engine)
    yield engine, work, songs, hashes
    engine.dispose()


def test_one_search_per_setting_and_unknown_tracks_reported(library):
    engine, _, songs, hashes = library
    ident = Identifier(engine)
    assert [(d, int(m.sum())) for d, m in ident.groups] == [(DSPConfig(), 2), (HOP256, 2), (SR16K, 1)]
    assert ident.skipped == {hashes[36]: UNKNOWN_SETTINGS}
    assert ident.skipped_note is not None and ident.skipped_note.startswith("1 of 6 indexed tracks are not searched")
    for seed, start, extra in ((32, 5.3, 123), (33, 8.0, 77), (34, 2.0, 0), (35, 6.5, 11)):
        m = ident.identify_signal(cut(songs[seed], start, extra_samples=extra), SR)
        assert m is not None and m.content_hash == hashes[seed], seed
        assert m.path == f"/music/song{seed}.wav"
        assert abs(m.offset_s - (start + extra / SR)) < 0.05, (seed, m.offset_s)
        assert m.speed == 1.0 and m.confidence > 0.8
    # The skipped track is not searched: no match, and the note says why.
    assert ident.identify_signal(cut(songs[36], 4.0), SR) is None


def test_dsp_argument_supplies_unknown_settings(library):
    engine, _, songs, hashes = library
    ident = Identifier(engine, dsp=UNKNOWN, speeds=(1.0,))
    assert not ident.skipped and len(ident.groups) == 4 and ident.speeds == (1.0,)
    m = ident.identify_signal(cut(songs[36], 4.0), SR)
    assert m is not None and m.content_hash == hashes[36] and abs(m.offset_s - 4.0) < 0.05


def test_cli_and_api_say_which_tracks_were_skipped(library, capsys):
    from jobs.cli import main

    engine, work, songs, hashes = library
    clip = work / "clip33.wav"
    sf.write(clip, cut(songs[33], 7.0), SR)
    assert main(["identify", str(clip), "--db", str(work / "lib.sqlite"), "--json"]) == 0
    captured = capsys.readouterr()
    res = json.loads(captured.out)
    assert res["match"]["content_hash"] == hashes[33] and abs(res["match"]["offset_s"] - 7.0) < 0.05
    assert "warning: 1 of 6 indexed tracks are not searched" in captured.err
    with pytest.warns(UserWarning, match="1 of 6 indexed tracks are not searched"):
        (m,) = identify(engine, [str(clip)])
    assert m is not None and m.content_hash == hashes[33]


def test_cli_refuses_a_library_it_cannot_search(tmp_path, capsys):
    from jobs.cli import main

    engine = open_db(tmp_path / "lib.sqlite")
    store_signals(engine, tmp_path / "out", [("/music/x.wav", varied_song(40, 6.0))], dsp=UNKNOWN)
    with Session(engine) as s, s.begin():
        s.execute(delete(AnalysisSettings))
    engine.dispose()
    clip = tmp_path / "clip.wav"
    sf.write(clip, varied_song(40, 6.0)[SR:4 * SR], SR)
    assert main(["identify", str(clip), "--db", str(tmp_path / "lib.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "no track of" in err and "1 of 1 indexed tracks are not searched" in err and err[-1] == "\n"
    assert err.count("\n") == 1
