"""AnalyzeStage in process (no Ray): what a worker call writes and returns, the crash journal,
and one-pass long files. The Ray runs of the same stage are in tests/pipeline/ingest and
tests/faults."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.config import BatchConfig, DSPConfig
from actors.results import RECEIPT_SCHEMA
from actors.stages import ATTEMPTS_DIR, MANIFEST_SCHEMA, AnalyzeStage, CrashJournal
from pipeline.config import ChromarayConfig
from pipeline.ingest.plan import versions_for
from pipeline.synth import write_song
from pipeline.synth.midi import write_demo_midi

RUN = "0123456789abcdef" * 2
VERSIONS = versions_for(ChromarayConfig())


def manifest(paths: list[Path]) -> pa.Table:
    return pa.Table.from_pylist([{"content_hash": f"{i:064x}", "path": str(p), "kind": "midi" if p.suffix == ".mid"
                                  else "audio", "size_bytes": p.stat().st_size} for i, p in enumerate(paths)],
                                schema=MANIFEST_SCHEMA)


def stage(out: Path, **kw) -> AnalyzeStage:
    return AnalyzeStage(DSPConfig(), BatchConfig(device="cpu"), chunk_seconds=kw.pop("chunk_seconds", 300.0),
                        out_dir=str(out), run_id=RUN, versions=VERSIONS, **kw)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("lib")
    song = write_song(d / "song.flac", 3, 3.0, fmt="FLAC", sr=44100, stereo=True)
    other = write_song(d / "other.wav", 4, 2.0)
    broken = d / "broken.wav"
    broken.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(100))
    midi = d / "piece.mid"
    write_demo_midi(midi, 5)
    return [song, other, broken, midi]


def test_a_call_writes_its_parts_and_returns_one_small_receipt(files, tmp_path):
    out = tmp_path / "out"
    result = stage(out)(manifest(files))
    assert result.schema == RECEIPT_SCHEMA and result.num_rows == 1
    receipt = json.loads(result.column("receipt")[0].as_py())
    # parts of this run under fresh names, one per dataset, each as many rows as tracks of its kind
    parts = {ds: (rel, n) for rel, ds, n in receipt["parts"]}
    assert set(parts) == {"frames", "tracks", "fingerprints", "midi_notes", "tokens"}
    assert len({Path(rel).name for rel, _ in parts.values()}) == 1
    assert Path(parts["frames"][0]).name.startswith(f"part-{RUN[:12]}-")
    for ds, (rel, n) in parts.items():
        assert pq.read_metadata(out / rel).num_rows == n == (3 if ds == "frames" else 2 if ds in
                                                              ("tracks", "fingerprints") else 1)
    assert (out / "tokens" / "vocab.json").is_file()
    # the receipt: summaries and codes, no per-frame arrays
    tracks = {t["path"]: t for t in receipt["tracks"]}
    assert set(tracks) == {str(files[0]), str(files[1]), str(files[3])}
    song = tracks[str(files[0])]
    assert song["meta"] == {"source_sample_rate": 44100, "channels": 2, "format": "FLAC", "warnings": []}
    assert song["duration_s"] == pytest.approx(3.0, abs=1e-3) and len(song["feature"]["chroma_mean"]) == 12
    frames = pq.read_table(out / parts["frames"][0]).to_pylist()
    by_hash = {r["content_hash"]: r for r in frames}
    assert by_hash[song["content_hash"]]["n_frames"] == song["n_frames"]
    codes = np.frombuffer(result.column("codes")[0].as_py(), dtype="<u4")
    fps = pq.read_table(out / parts["fingerprints"][0]).to_pylist()
    for fp in fps:
        t = next(t for t in receipt["tracks"] if t["content_hash"] == fp["content_hash"])
        got = codes[t["fp"]["offset"]:t["fp"]["offset"] + t["fp"]["n_codes"]]
        np.testing.assert_array_equal(got, np.asarray(fp["codes"], dtype=np.uint32))
    assert sum(t["fp"]["n_codes"] for t in receipt["tracks"] if t["fp"]) == codes.size
    assert len(result.column("receipt")[0].as_py()) < 20_000  # small: summaries only
    (err,) = receipt["errors"]
    assert err["path"] == str(files[2]) and err["stage"] == "decode" and err["reason"]
    assert not any((out / ATTEMPTS_DIR / RUN).iterdir())  # every file done: journal empty


def test_crash_journal_counts_deaths_and_gives_up(files, tmp_path):
    """A count left in the journal is a worker death during that file: such files run alone and
    first; at max_crashes the file is an error row and is not opened again."""
    out = tmp_path / "out"
    journal = CrashJournal(out / ATTEMPTS_DIR / RUN)
    table = manifest(files[:2])
    suspect, poison = table.column("content_hash").to_pylist()
    journal.start(suspect)  # died once on it
    for _ in range(3):
        journal.start(poison)  # died three times
    receipt = json.loads(stage(out, max_crashes=3)(table).column("receipt")[0].as_py())
    assert [t["content_hash"] for t in receipt["tracks"]] == [suspect]  # the poison file (good audio) is not run
    (err,) = receipt["errors"]
    assert err["content_hash"] == poison and err["stage"] == "worker"
    assert err["reason"].startswith("crashed its worker 3 times")
    assert journal.crashes(suspect) == 0 and journal.crashes(poison) == 3
    assert [b["n_tracks"] for b in receipt["batches"]][-1] == 1  # the suspect ran alone


def test_long_file_in_one_pass_equals_whole(tmp_path):
    """Spans of a long file in the worker, one decode pass (deferred onset): equal to the file
    analysed whole."""
    y_path = write_song(tmp_path / "long.flac", 7, 9.0, fmt="FLAC", sr=44100)
    rows = {}
    for label, chunk in (("whole", 300.0), ("spans", 2.0)):
        out = tmp_path / label
        receipt = json.loads(stage(out, chunk_seconds=chunk)(manifest([y_path])).column("receipt")[0].as_py())
        (rel,) = [rel for rel, ds, _ in receipt["parts"] if ds == "frames"]
        rows[label] = (pq.read_table(out / rel).to_pylist()[0], receipt["tracks"][0])
    (w, wt), (s, st) = rows["whole"], rows["spans"]
    assert w["n_frames"] == s["n_frames"] > 300
    np.testing.assert_allclose(np.asarray(s["chroma"]), np.asarray(w["chroma"]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(s["onset"]), np.asarray(w["onset"]), rtol=1e-4, atol=1e-4)
    assert st["feature"]["tempo_bpm"] == wt["feature"]["tempo_bpm"]
    assert st["fp"]["n_codes"] == wt["fp"]["n_codes"]
