"""MIDI-to-audio matching: generated pieces rendered to audio with a tempo change and noise.

The library (frames and midi_notes Parquet by the sink's own table builders, tracks/track_paths
rows) is built here without the fingerprint job: MIDI chroma from actors.midi.analysis, audio
chroma from actors.features.FeatureExtractor (the same chain the pipeline runs). 22 generated pieces
(scales of harmony, multi-track with drums, tempo changes, 3/4 and 4/4, type 0 and 1);
20 of them are rendered (pretty_midi additive synthesis with overtones, tempo x0.9-1.1
with +-3 % wobble, white noise at 10 dB SNR), the other 2 have no recording.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from actors.config import BatchConfig, DSPConfig
from actors.errors import ChromarayError
from actors.midi.align import align, cens
from actors.midi.analysis import analyze_midi, midi_features_version
from pipeline.config import MatchConfig
from pipeline.ingest.sink import FrameRow, frames_table, midi_tables
from pipeline.midi_match import match_midi, stored_matches
from pipeline.store import MidiMatchRow, ParquetPart, Track, TrackPath, open_db
from pipeline.store.parquet import write_part
from pipeline.synth.midi import random_piece, render

MIN_SCORE = MatchConfig().min_score
DSP = DSPConfig()
FR = DSP.frame_rate_hz
N_RENDERED = 20
N_UNRELATED = 2


def audio_chroma(signals: list[np.ndarray]) -> list[np.ndarray]:
    """(12, T) harmonic chroma of each signal, from the project's feature chain."""
    from actors.features import FeatureExtractor

    ext = FeatureExtractor(DSP, BatchConfig(device="cpu", memory_budget_bytes=400_000_000))
    return [f.chroma for f in ext(signals)]


def _hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=20).hexdigest()


def build_library(root: Path, midis: dict[str, bytes], audios: dict[str, np.ndarray], *,
                  with_notes: bool = True) -> tuple[object, Path]:
    """Write MIDI files, the frames (two parts: audio, midi) and midi_notes datasets, SQLite rows.

    ``with_notes=False`` leaves out midi_notes (the matcher then uses the frames chroma).
    """
    import soundfile as sf

    lib, out = root / "lib", root / "out"
    lib.mkdir(parents=True, exist_ok=True)
    out.mkdir(exist_ok=True)
    engine = open_db(root / "db.sqlite")
    audio_version = DSP.version() + "+test"
    midi_version = midi_features_version(FR)
    tracks, paths, frames, analyses = [], [], {"audio": [], "midi": []}, []
    for name, data in midis.items():
        p = lib / f"{name}.mid"
        p.write_bytes(data)
        a = analyze_midi(data, frame_rate_hz=FR)
        h = _hash(data)
        tracks.append(Track(content_hash=h, kind="midi", format="MIDI", size_bytes=len(data), duration_s=a.duration_s,
                            n_frames=a.n_frames, features_version=midi_version, run_id="test"))
        paths.append(TrackPath(path=str(p), content_hash=h, size_bytes=len(data), mtime_ns=0, last_seen_run="test"))
        frames["midi"].append(FrameRow(h, "midi", midi_version, FR, a.chroma, a.onset))
        analyses.append((h, a))
    names = list(audios)
    chromas = audio_chroma([audios[n] for n in names])
    for name, chroma in zip(names, chromas):
        y = audios[name]
        p = lib / f"{name}.ogg"
        sf.write(p, y, DSP.sample_rate, format="OGG", subtype="VORBIS")  # paths must exist for the CLI
        h = _hash(y.tobytes())
        tracks.append(Track(content_hash=h, kind="audio", format="OGG", size_bytes=p.stat().st_size,
                            duration_s=len(y) / DSP.sample_rate, n_frames=chroma.shape[1],
                            features_version=audio_version, run_id="test"))
        paths.append(TrackPath(path=str(p), content_hash=h, size_bytes=p.stat().st_size, mtime_ns=0,
                               last_seen_run="test"))
        frames["audio"].append(FrameRow(h, "audio", audio_version, FR, chroma, np.zeros(chroma.shape[1], np.float32)))
    parts = []
    for kind, rows in frames.items():
        rel = write_part(out, "frames", f"part-{kind}", frames_table(rows))
        parts.append(ParquetPart(name=rel, dataset="frames", run_id="test", n_rows=len(rows)))
    if with_notes:
        notes = midi_tables(analyses, features_version=midi_version)["midi_notes"]
        rel = write_part(out, "midi_notes", "part-notes", notes)
        parts.append(ParquetPart(name=rel, dataset="midi_notes", run_id="test", n_rows=len(analyses)))
    with Session(engine) as s, s.begin():
        s.add_all(tracks + paths + parts)
    return engine, out


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    t0 = time.perf_counter()
    rng = np.random.default_rng(1234)
    midis, audios, truth, factors = {}, {}, {}, {}
    for i in range(N_RENDERED + N_UNRELATED):
        piece = random_piece(100 + i, n_bars=8, tempo_change=i % 2 == 0, drums=i % 4 != 3,
                             meter=(3, 4) if i % 5 == 0 else None)
        name = f"piece{i:02d}"
        midis[name] = piece.to_midi(midi_type=i % 2)
        if i < N_RENDERED:
            f = float(rng.uniform(0.9, 1.1))
            audios[f"{name}_rec"] = render(midis[name], tempo_factor=f, warp=0.03, noise_snr_db=10.0, seed=i)
            truth[name] = f"{name}_rec"
            factors[name] = f
    t_render = time.perf_counter() - t0
    engine, out = build_library(tmp_path_factory.mktemp("matchlib"), midis, audios)
    t_build = time.perf_counter() - t0 - t_render
    return {"engine": engine, "out": out, "midis": midis, "audios": audios, "truth": truth, "factors": factors,
            "root": out.parent, "timings": (t_render, t_build)}


def _by_name(results) -> dict[str, object]:
    return {Path(r.midi_paths[0]).stem: r for r in results}


def test_rendered_audio_is_top1_and_unrelated_scores_lower(library):
    t0 = time.perf_counter()
    results = match_midi(library["engine"], library["out"], top_k=5)
    wall = time.perf_counter() - t0
    by = _by_name(results)
    assert len(by) == N_RENDERED + N_UNRELATED
    hits, true_scores = 0, []
    for name, rec in library["truth"].items():
        r = by[name]
        assert r.n_candidates == N_RENDERED  # all audio tracks aligned (below MatchConfig.max_candidates)
        top = r.matches[0] if r.matches else None
        if top is not None and Path(top.path).stem == rec:
            hits += 1
            true_scores.append(top.score)
            # the alignment recovered the tempo change (+-3 % wobble, CENS at ~5 Hz)
            assert top.tempo_ratio == pytest.approx(library["factors"][name], rel=0.06)
            assert top.score == max(m.score for m in r.matches)
    unrelated = [by[f"piece{i:02d}"] for i in range(N_RENDERED, N_RENDERED + N_UNRELATED)]
    unrelated_best = [r.best_rejected if not r.matches else r.matches[0].score for r in unrelated]
    # second-best scores of the rendered MIDI files are unrelated pairs too
    runner_up = [max([m.score for m in r.matches[1:]] + [r.best_rejected or -1.0]) for r in
                 (by[n] for n in library["truth"])]
    print(f"\nmatch-midi generated set: top-1 {hits}/{N_RENDERED}; true scores min {min(true_scores):.3f} "
          f"mean {np.mean(true_scores):.3f}; unrelated MIDI best {max(unrelated_best):.3f}; best wrong audio "
          f"{max(runner_up):.3f}; match {wall:.2f} s; render {library['timings'][0]:.1f} s, "
          f"chroma+store {library['timings'][1]:.1f} s")
    assert hits == N_RENDERED
    for r in unrelated:
        assert r.matches == [], [(m.path, m.score) for m in r.matches]
    # "clearly lower": a margin of at least 0.15 below the weakest true match
    assert max(unrelated_best) < min(true_scores) - 0.15
    assert max(runner_up) < min(true_scores) - 0.1
    assert min(true_scores) >= MIN_SCORE


def test_pruning_keeps_the_true_match(library):
    """Only 3 of 20 candidates survive either pruning stage; the rendering is among them."""
    results = match_midi(library["engine"], library["out"], top_k=1, max_candidates=3, store=False)
    by = _by_name(results)
    for name, rec in library["truth"].items():
        assert by[name].n_candidates == 3
        assert [Path(m.path).stem for m in by[name].matches] == [rec]
    # coarse (~1 Hz) DTW ranking forced on these short pieces: 3 of 20 reach the fine DTW
    # (coarse_min_cells=1: every pair has more cells; MatchConfig requires > 0)
    results = match_midi(library["engine"], library["out"], top_k=1, coarse_min_cells=1, fine_candidates=3,
                         store=False)
    by = _by_name(results)
    for name, rec in library["truth"].items():
        assert by[name].n_candidates == 3
        assert [Path(m.path).stem for m in by[name].matches] == [rec]


def test_matches_stored_and_rerun_replaces(library):
    engine = library["engine"]
    results = match_midi(engine, library["out"], top_k=3)
    expected = sum(len(r.matches) for r in results)
    with Session(engine) as s:
        n1 = s.scalar(select(func.count()).select_from(MidiMatchRow))
    assert n1 == expected > 0
    match_midi(engine, library["out"], top_k=3)
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(MidiMatchRow)) == n1
    r0 = next(r for r in results if r.matches)
    rows = stored_matches(engine, r0.midi_hash)
    assert [row.rank for row in rows] == list(range(1, len(rows) + 1))
    assert [row.audio_hash for row in rows] == [m.audio_hash for m in r0.matches]
    assert rows[0].score == pytest.approx(r0.matches[0].score)
    # restricting to one MIDI file only replaces that file's rows
    match_midi(engine, library["out"], midi_hashes=[r0.midi_hash], top_k=1)
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(MidiMatchRow)) == n1 - (len(r0.matches) - 1)


def test_cli_json_and_text(library, capsys):
    from jobs.cli import main

    db, out = str(library["root"] / "db.sqlite"), str(library["out"])
    assert main(["match-midi", "--db", db, "--out", out, "--json", "--top-k", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == N_RENDERED + N_UNRELATED
    for obj in lines:
        name = Path(obj["midi"]).stem
        scores = [m["score"] for m in obj["matches"]]
        assert scores == sorted(scores, reverse=True) and len(scores) <= 2
        if name in library["truth"]:
            assert Path(obj["matches"][0]["path"]).stem == library["truth"][name]
        else:
            assert obj["matches"] == []
    # named MIDI files only, human-readable output
    one = str(library["root"] / "lib" / "piece03.mid")
    assert main(["match-midi", "--db", db, "--out", out, one]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == one and "piece03_rec.ogg" in text.splitlines()[1]
    unrelated = str(library["root"] / "lib" / f"piece{N_RENDERED:02d}.mid")
    assert main(["match-midi", "--db", db, "--out", out, "--json", unrelated]) == 0
    assert json.loads(capsys.readouterr().out) == {"midi": unrelated, "content_hash": _hash(library["midis"][
        f"piece{N_RENDERED:02d}"]), "matches": []}


def test_cli_user_errors(library, tmp_path, capsys):
    from jobs.cli import main

    db, out = str(library["root"] / "db.sqlite"), str(library["out"])
    assert main(["match-midi", "--db", str(tmp_path / "none.db"), "--out", out]) == 2
    assert "does not exist" in capsys.readouterr().err
    stray = tmp_path / "stray.mid"
    stray.write_bytes(random_piece(999, n_bars=2).to_midi())
    assert main(["match-midi", "--db", db, "--out", out, str(stray)]) == 2
    assert "not in the database" in capsys.readouterr().err
    assert main(["match-midi", "--db", db, "--out", out, "--top-k", "0"]) == 2
    assert "top_k must be > 0" in capsys.readouterr().err  # MatchConfig's check, the one place
    assert main(["match-midi", "--db", db, "--out", str(tmp_path / "no-out")]) == 2
    assert "output folder" in capsys.readouterr().err


def test_subsequence_alignment_finds_the_span(library):
    """A recording holding two pieces back to back: each MIDI file aligns to its half."""
    a0, a1 = library["audios"]["piece00_rec"], library["audios"]["piece01_rec"]
    medley = np.concatenate([a0, a1])
    (chroma,) = audio_chroma([medley])
    feat, rate = cens(chroma, frame_rate_hz=FR)
    split_s = len(a0) / DSP.sample_rate
    for name, (lo, hi) in (("piece00", (0.0, split_s)), ("piece01", (split_s, len(medley) / DSP.sample_rate))):
        m = analyze_midi(library["midis"][name], frame_rate_hz=FR)
        mf, _ = cens(m.chroma, frame_rate_hz=FR)
        al = align(mf, feat, rate_hz=rate)
        assert al is not None and al.score >= MIN_SCORE
        # rendering leaves up to ~0.6 s of release/silence at the end of each half
        assert al.audio_start_s == pytest.approx(lo, abs=1.0)
        assert al.audio_end_s == pytest.approx(hi, abs=1.5)


@pytest.mark.slow
def test_real_midi_rendered_top1(shared_midi, tmp_path):
    """20 real files (Bach chorales and others: many share style and key) rendered and matched."""
    rng = np.random.default_rng(7)
    midis, audios, truth = {}, {}, {}
    for f in shared_midi:
        if len(audios) == 20:
            break
        data = f.read_bytes()
        a = analyze_midi(data, frame_rate_hz=FR)
        if a.duration_s > 90:  # keep the test short
            continue
        try:
            y = render(data, tempo_factor=float(rng.uniform(0.9, 1.1)), warp=0.03, noise_snr_db=10.0, seed=len(audios))
        except ValueError:  # pretty_midi refuses some huge-tick files symusic reads fine
            continue
        midis[f.stem] = data
        audios[f"{f.stem}_rec"] = y
        truth[f.stem] = f"{f.stem}_rec"
    engine, out = build_library(tmp_path, midis, audios)
    results = match_midi(engine, out, top_k=3)
    by = _by_name(results)
    hits = sum(1 for n, rec in truth.items() if by[n].matches and Path(by[n].matches[0].path).stem == rec)
    print(f"\nreal MIDI rendered: top-1 {hits}/{len(truth)}")
    assert hits == len(truth)


def test_uses_notes_and_falls_back_to_frames_chroma(library, tmp_path):
    """MIDI features come from midi_notes (decaying notes); without that dataset, from frames."""
    import sqlite3

    from sqlalchemy import delete

    from pipeline.midi_match import load_sequences, midi_features

    name = "piece04"
    h = _hash(library["midis"][name])
    midi, audio = load_sequences(library["engine"], library["out"], midi_hashes=[h])
    assert list(midi) == [h] and len(audio) == N_RENDERED
    a = analyze_midi(library["midis"][name], frame_rate_hz=FR)
    want, _ = midi_features(a.notes, frame_rate_hz=FR, n_frames=a.n_frames)
    np.testing.assert_allclose(midi[h].feat, want, atol=1e-5)
    # a database whose midi_notes parts are gone: plain frames chroma, still the right match
    db = tmp_path / "copy.sqlite"
    with sqlite3.connect(library["root"] / "db.sqlite") as src, sqlite3.connect(db) as dst:
        src.backup(dst)  # WAL mode: the file alone may miss committed rows
    engine = open_db(db)
    with Session(engine) as s, s.begin():
        s.execute(delete(ParquetPart).where(ParquetPart.dataset == "midi_notes"))
    midi, _ = load_sequences(engine, library["out"], midi_hashes=[h])
    plain, _ = cens(a.chroma, frame_rate_hz=FR)
    np.testing.assert_allclose(midi[h].feat, plain, atol=1e-5)
    (r,) = match_midi(engine, library["out"], midi_hashes=[h], top_k=1, store=False)
    assert Path(r.matches[0].path).stem == library["truth"][name]


def test_config_section_and_options_override_it(library, tmp_path, capsys):
    """--config's `match` section sets the thresholds; an option given on the command line wins."""
    from jobs.cli import main

    db, out = str(library["root"] / "db.sqlite"), str(library["out"])
    one = str(library["root"] / "lib" / "piece03.mid")
    cfg = tmp_path / "match.yaml"
    cfg.write_text("match: {min_score: 0.99, top_k: 1}\n")
    assert main(["match-midi", "--db", db, "--out", out, "--json", "--config", str(cfg), one]) == 0
    assert json.loads(capsys.readouterr().out)["matches"] == []  # no true score reaches 0.99
    assert main(["match-midi", "--db", db, "--out", out, "--json", "--config", str(cfg), "--min-score", "0.5",
                 one]) == 0
    (match,) = json.loads(capsys.readouterr().out)["matches"]  # top_k 1 from the file
    assert Path(match["path"]).stem == "piece03_rec"
    cfg.write_text("match: {max_candidates: 0}\n")
    assert main(["match-midi", "--db", db, "--out", out, "--config", str(cfg), one]) == 2
    assert "max_candidates must be > 0" in capsys.readouterr().err


def test_api_config_and_keyword_overrides(library):
    engine, out = library["engine"], library["out"]
    h = _hash(library["midis"]["piece05"])
    strict = MatchConfig(min_score=0.99, min_gap=-2.0)
    (r,) = match_midi(engine, out, config=strict, midi_hashes=[h], store=False)
    assert r.matches == [] and r.best_rejected is not None and r.best_rejected < 0.99
    # Keyword overrides win over the config; a low threshold (and no gap) lets the runner-up in.
    (r,) = match_midi(engine, out, config=strict, midi_hashes=[h], min_score=0.01, top_k=2, store=False)
    assert len(r.matches) == 2 and Path(r.matches[0].path).stem == "piece05_rec"
    with pytest.raises(ChromarayError, match="top_k must be > 0"):
        match_midi(engine, out, midi_hashes=[h], top_k=0, store=False)


def test_resolve_midi_by_path_and_by_content(library, tmp_path):
    from pipeline.midi_match import resolve_midi

    engine, lib = library["engine"], library["root"] / "lib"
    hashes, files = resolve_midi(engine, [lib])
    assert sorted(hashes) == sorted(_hash(d) for d in library["midis"].values())
    assert [Path(f).parent for f in files] == [lib] * len(files)
    moved = tmp_path / "moved.mid"
    moved.write_bytes(library["midis"]["piece07"])
    assert resolve_midi(engine, [moved]) == ([_hash(library["midis"]["piece07"])], [str(moved)])
    (tmp_path / "audio-only").mkdir()
    with pytest.raises(ChromarayError, match=r"no \.mid/\.midi files"):
        resolve_midi(engine, [tmp_path / "audio-only"])


def test_stored_matches_reads_a_readonly_database(library, tmp_path):
    """A reader never does DDL: rows through a read-only engine, none (no error) without the table."""
    engine = library["engine"]
    h = _hash(library["midis"]["piece02"])
    match_midi(engine, library["out"], config=MatchConfig(min_gap=-2.0), midi_hashes=[h], top_k=2, min_score=0.01)
    ro = open_db(library["root"] / "db.sqlite", readonly=True)
    assert [r.audio_hash for r in stored_matches(ro, h)] == [r.audio_hash for r in stored_matches(engine, h)]
    assert len(stored_matches(ro, h)) == 2
    ro.dispose()
    open_db(tmp_path / "bare.sqlite", create=False).dispose()
    bare = open_db(tmp_path / "bare.sqlite", readonly=True)
    assert stored_matches(bare, h) == []
    bare.dispose()


def test_storing_run_holds_the_writer_lock(library):
    """A storing match-midi claims the database's match-midi writer role and the Parquet
    folder's lock (pipeline.store.runs), like `chromaray fingerprint`: refused with one line while
    another holds either, having written nothing; a run row records the finished run."""
    from pipeline.store import Run, WriterBusy, claim_run, finish_run
    from pipeline.store.runs import FolderBusy

    engine, out = library["engine"], library["out"]
    h = _hash(library["midis"]["piece04"])
    with Session(engine) as s:
        before = s.scalar(select(func.count()).select_from(MidiMatchRow))
    held = claim_run(engine, "match-midi")  # another live match-midi of this database
    try:
        with pytest.raises(WriterBusy, match="match-midi"):
            match_midi(engine, out, midi_hashes=[h])
        assert match_midi(engine, out, midi_hashes=[h], store=False)  # reading needs no lock
    finally:
        finish_run(engine, held, "finished")
    writer = claim_run(engine, "fingerprint", out_dir=out)  # a fingerprint run writing to this folder
    try:
        with pytest.raises(FolderBusy, match="output folder"):
            match_midi(engine, out, midi_hashes=[h])
    finally:
        finish_run(engine, writer, "finished")
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(MidiMatchRow)) == before
    match_midi(engine, out, midi_hashes=[h])
    with Session(engine) as s:
        last = s.scalars(select(Run).where(Run.kind == "match-midi").order_by(Run.started_at.desc())).first()
        assert last is not None and last.status == "finished" and last.id != held
        row = s.scalars(select(MidiMatchRow).where(MidiMatchRow.midi_hash == h)).first()
        assert row is not None and row.shift == 0 and row.gap is not None and row.gap >= MatchConfig().min_gap


def test_schema4_database_gets_shift_and_gap(tmp_path):
    """shift and gap of midi_matches came with schema 5: a writer adds them to an older database
    (pipeline.store.db._add_missing_columns), a reader of an older one still reads its rows."""
    import sqlite3

    from sqlalchemy import inspect

    path = tmp_path / "old.sqlite"
    open_db(path).dispose()
    with sqlite3.connect(path) as conn:  # what a version-4 database holds
        conn.execute("ALTER TABLE midi_matches DROP COLUMN shift")
        conn.execute("ALTER TABLE midi_matches DROP COLUMN gap")
        conn.execute("INSERT INTO midi_matches (midi_hash, audio_hash, rank, score, similarity, chance, tempo_ratio,"
                     " audio_start_s, audio_end_s, midi_start_s, midi_end_s, matcher_version, created_at) VALUES"
                     " ('m', 'a', 1, 0.5, 0.8, 0.6, 1.0, 0, 10, 0, 10, 'a3', '2026-01-01 00:00:00')")
        conn.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    ro = open_db(path, readonly=True)
    assert [(r.audio_hash, r.shift, r.gap) for r in stored_matches(ro, "m")] == [("a", None, None)]
    ro.dispose()
    engine = open_db(path)
    assert {"shift", "gap"} <= {c["name"] for c in inspect(engine).get_columns("midi_matches")}
    assert [(r.audio_hash, r.shift, r.gap) for r in stored_matches(engine, "m")] == [("a", 0, None)]
    engine.dispose()
