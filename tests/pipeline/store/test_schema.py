"""The schema version is read and checked on every open: a newer database is refused with a clear
message; an older one (v1: no ``meta`` table; v2: no ``analysis_settings``) opens read-only as it
is and is upgraded in place by a writer, which records the settings its tracks can be proven to
have and stores their fingerprints' true code rate (real SQLite files)."""
from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import create_engine, inspect, select
from sqlalchemy.orm import Session

from actors.config import DSPConfig
from actors.errors import ChromarayError
from actors.fingerprint import DECIMATE, FP_FRAME_RATE_HZ, FP_VERSION
from pipeline.store import (
    SCHEMA_VERSION,
    AnalysisSettings,
    Base,
    Fingerprint,
    Meta,
    Run,
    Track,
    check_schema,
    library_settings,
    open_db,
    track_settings,
)

HOP256 = DSPConfig(hop_length=256)
UNKNOWN = DSPConfig(n_fft=4096)  # no run of the old database recorded it


def _old_database(path, version: int) -> dict[str, str]:
    """A database as chromaray wrote it at schema ``version`` (1 or 2): a fingerprint run with
    ``dsp: {hop_length: 256}``, rows whose fingerprints all say the default code rate (what the
    old sink wrote), and one track of settings no stored run holds. Returns hash by settings."""
    eng = create_engine(f"sqlite:///{path}")
    old_tables = [t for t in Base.metadata.sorted_tables
                  if t.name != "analysis_settings" and (version >= 2 or t.name != "meta")]
    Base.metadata.create_all(eng, tables=old_tables)
    hashes = {"default": "a" * 64, "hop256": "b" * 64, "unknown": "c" * 64}
    dsp_of = {"default": DSPConfig(), "hop256": HOP256, "unknown": UNKNOWN}
    codes = np.arange(50, dtype="<u4").tobytes()
    with Session(eng) as s, s.begin():
        s.add(Run(id="r1", kind="fingerprint", config={"inputs": ["/m"], "dsp": HOP256.to_dict()}))
        s.add(Run(id="r2", kind="train", config={"dsp": "not a mapping"}))
        for name, h in hashes.items():
            s.add(Track(content_hash=h, kind="audio", format="WAV", size_bytes=1, duration_s=5.0,
                        features_version=f"{dsp_of[name].version()}+{FP_VERSION}", run_id="r1"))
            s.flush()
            s.add(Fingerprint(content_hash=h, version=FP_VERSION, frame_rate_hz=FP_FRAME_RATE_HZ, n_codes=50,
                              codes=codes))
        if version >= 2:
            s.add(Meta(key="schema_version", value=str(version)))
    eng.dispose()
    return hashes


@pytest.mark.parametrize("version", [1, 2])
def test_older_database_is_read_as_is_and_upgraded_by_a_writer(tmp_path, version):
    db = tmp_path / "old.sqlite"
    hashes = _old_database(db, version)
    ro = open_db(db, readonly=True)
    assert check_schema(ro, write=False) == version
    assert "analysis_settings" not in inspect(ro).get_table_names()
    # A reader proves the settings from the stored run config and the defaults (version hashes).
    assert track_settings(ro) == {hashes["default"]: DSPConfig(), hashes["hop256"]: HOP256}
    with Session(ro) as s:
        assert s.scalar(select(Track.duration_s).where(Track.content_hash == hashes["hop256"])) == 5.0
    ro.dispose()

    rw = open_db(db)
    assert check_schema(rw, write=False) == SCHEMA_VERSION == 5
    with Session(rw) as s:
        assert s.get_one(Meta, "schema_version").value == str(SCHEMA_VERSION)
        stored = {a.features_version: a.dsp for a in s.scalars(select(AnalysisSettings))}
        rates = dict(s.execute(select(Fingerprint.content_hash, Fingerprint.frame_rate_hz)).tuples().all())
    assert stored == {f"{d.version()}+{FP_VERSION}": d.to_dict() for d in (DSPConfig(), HOP256)}
    assert rates == {hashes["default"]: FP_FRAME_RATE_HZ, hashes["hop256"]: HOP256.frame_rate_hz / DECIMATE,
                     hashes["unknown"]: FP_FRAME_RATE_HZ}  # unknown settings: left as they were
    rw.dispose()
    ro = open_db(db, readonly=True)
    assert check_schema(ro, write=False) == SCHEMA_VERSION
    assert library_settings(ro) == {f"{d.version()}+{FP_VERSION}": d for d in (DSPConfig(), HOP256)}
    ro.dispose()


def test_open_synced_upgrades_an_older_database_unless_told_not_to(tmp_path):
    from pipeline.search.index import open_synced

    db = tmp_path / "old.sqlite"
    _old_database(db, 1)
    eng = open_synced(db, sync=False)
    assert check_schema(eng, write=False) == 1
    eng.dispose()
    eng = open_synced(db)
    assert check_schema(eng, write=False) == SCHEMA_VERSION
    from pipeline.search import index

    assert not index.is_stale(eng)
    idx = index.FingerprintIndex.open(eng)
    assert sorted(t.frame_rate_hz for t in idx.tracks.values()) == [22050 / 512, 22050 / 512, 22050 / 256]
    eng.dispose()


def test_newer_database_is_refused_with_a_clear_message(tmp_path):
    db = tmp_path / "new.sqlite"
    open_db(db).dispose()
    eng = create_engine(f"sqlite:///{db}")
    with Session(eng) as s, s.begin():
        s.merge(Meta(key="schema_version", value=str(SCHEMA_VERSION + 1)))
    eng.dispose()
    expected = rf"written by a newer chromaray \(schema {SCHEMA_VERSION + 1}, this one reads {SCHEMA_VERSION}\)"
    with pytest.raises(ChromarayError, match=expected):
        open_db(db, readonly=True)
    with pytest.raises(ChromarayError, match=expected):
        open_db(db)
    with pytest.raises(ChromarayError, match=expected):
        open_db(db, create=False)


def test_new_database_starts_at_the_current_version(tmp_path):
    eng = open_db(tmp_path / "fresh.sqlite")
    with Session(eng) as s:
        assert s.get_one(Meta, "schema_version").value == str(SCHEMA_VERSION)
    assert {"meta", "analysis_settings"} <= set(inspect(eng).get_table_names())
    assert library_settings(eng) == {}
    eng.dispose()
