"""The driver's data preparation trains on every track once, at its current features version,
and on one frame rate (:func:`pipeline.train.driver.prepare_data`, :func:`current_rows`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actors.errors import ChromarayError
from pipeline.store import open_db, parts_of
from pipeline.synth.sequences import VOCAB, chord_frames
from pipeline.train.driver import current_rows, prepare_data
from tests.pipeline.train.library import (
    VERSION,
    add_parts,
    frames_table,
    make_library,
    reanalyse,
    tokens_table,
    track_hash,
)

N_TRACKS, N_STEPS, SEQ_LEN = 4, 200, 64
WINDOWS = (N_STEPS - 1) // SEQ_LEN  # per generated track: 3
LONG = 400  # steps of a re-analysed track: (400 - 1) // 64 = 6 windows


def reanalysed_library(root: Path) -> Path:
    """4 audio + 4 MIDI tracks; audio 0 and MIDI 1 analysed again (longer rows, newer parts) with
    their first parts still listed; a newer part also holds a row of audio 1 at a version that
    is not its current one and a row of a content that is no track any more."""
    db = make_library(root, n_tracks=N_TRACKS, n_steps=N_STEPS)
    rng = np.random.default_rng(5)
    a0, a1, gone = track_hash(0, "audio"), track_hash(1, "audio"), track_hash(99, "audio")
    reanalyse(root, "frames/part-2.parquet", frames_table([a0], [chord_frames(rng, LONG)], version="v2"),
              kind="audio", version="v2")
    stale = frames_table([a1, gone], [chord_frames(rng, N_STEPS), chord_frames(rng, N_STEPS)], version="old")
    add_parts(root, [("frames/part-3.parquet", "frames", stale)])
    m1 = track_hash(1, "midi")
    # Tokens rows carry no version: the newest part's row is current (its largest id is 30,
    # the superseded row's 40, vocab.json's 23).
    for part, top in (("tokens/part-2.parquet", 40), ("tokens/part-3.parquet", 30)):
        seq = rng.integers(0, VOCAB, LONG).astype(np.int32)
        seq[7] = top
        reanalyse(root, part, tokens_table([m1], [seq]), kind="midi", version=f"v{top}")
    return db


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    return reanalysed_library(tmp_path_factory.mktemp("lib"))


def _files(db: Path, dataset: str) -> list[str]:
    engine = open_db(db, readonly=True)
    try:
        return [str(db.parent / p) for p in parts_of(engine, dataset)]
    finally:
        engine.dispose()


def test_current_rows_pick_each_track_once_at_its_current_version(library):
    engine = open_db(library, readonly=True)
    frames = current_rows(engine, _files(library, "frames"), "frames")
    tokens = current_rows(engine, _files(library, "tokens"), "tokens")
    engine.dispose()
    root = library.parent
    assert set(frames) == {track_hash(i, "audio") for i in range(N_TRACKS)}  # not the vanished content
    assert frames[track_hash(0, "audio")][:2] == (str(root / "frames/part-2.parquet"), "v2")
    assert frames[track_hash(1, "audio")][:2] == (str(root / "frames/part-0.parquet"), VERSION)  # not "old"
    assert {r.frame_rate_hz for r in frames.values()} == {43.07}
    assert set(tokens) == {track_hash(i, "midi") for i in range(N_TRACKS)}
    m1 = tokens[track_hash(1, "midi")]
    assert (m1.path, m1.version, m1.max_token) == (str(root / "tokens/part-3.parquet"), "v30", 30)
    assert max(r.max_token for h, r in tokens.items() if h != track_hash(1, "midi")) < VOCAB


@pytest.mark.parametrize("data", ["audio", "midi"])
def test_a_reanalysed_track_is_windowed_once(ray_local, library, data):
    """Every track's windows once, from its current row: 3 tracks x 3 windows + 6 of the long one
    (the stale parts would add 3 + 3 for audio, 6 for MIDI)."""
    engine = open_db(library, readonly=True)
    prep = prepare_data(engine, library.parent, data, seq_len=SEQ_LEN, eval_fraction=0.25)
    engine.dispose()
    assert prep.n_tracks == N_TRACKS
    assert prep.n_train + prep.n_eval == (N_TRACKS - 1) * WINDOWS + (LONG - 1) // SEQ_LEN
    if data == "audio":
        assert (prep.frame_rate_hz, prep.features_versions, prep.vocab_size) == (43.07, [VERSION, "v2"], 0)
    else:
        assert (prep.frame_rate_hz, prep.vocab_size) == (None, 31)  # the current row's id 30, not the old 40
        assert prep.features_versions == [VERSION, "v30"]


def test_frames_of_two_frame_rates_are_one_clear_error(tmp_path):
    """Tracks analysed with other DSP settings (another hop) are not cut into the same windows."""
    db = make_library(tmp_path, n_tracks=N_TRACKS, n_steps=N_STEPS)
    rng = np.random.default_rng(1)
    other = frames_table([track_hash(0, "audio")], [chord_frames(rng, N_STEPS)], version="hop1024",
                         frame_rate_hz=21.535)
    reanalyse(tmp_path, "frames/part-2.parquet", other, kind="audio", version="hop1024")
    engine = open_db(db, readonly=True)
    with pytest.raises(ChromarayError, match=r"^the audio tracks were analysed at 2 frame rates "
                                             r"\(43\.07 Hz: 3 tracks, 21\.535 Hz: 1 track\); a run trains on one"):
        prepare_data(engine, tmp_path, "audio", seq_len=SEQ_LEN, eval_fraction=0.25)
    engine.dispose()


def test_training_on_a_missing_database_is_the_standard_error(ray_local, tmp_path):
    from pipeline.train.driver import TrainRequest, run_training
    from pipeline.train.profiles import load_profile

    db = tmp_path / "none.db"
    req = TrainRequest(arch="mamba", data="midi", db=db, name="r", profile=load_profile("laptop").replace(workers=1),
                       max_steps=1)
    with pytest.raises(ChromarayError, match=r"database .*none\.db does not exist \(run `chromaray fingerprint`"):
        run_training(req)
    assert not db.exists()
