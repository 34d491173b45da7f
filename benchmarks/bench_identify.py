"""Benchmark of `chromaray identify`, side by side with chromaprint's fpcalc, on real music.

Default (real music): the library is ``--n-library`` (50) real tracks of ../shared/data/audio and
benchmarks/out/music (`bash benchmarks/setup.sh`; pieces present in both are kept once), the
remaining real tracks are out of the library: negatives, and the *other* song of the
music-over-music conditions. Queries are cut at random sample offsets, degraded (clean, white
noise 10/0 dB, pink noise 0 dB, a 5 s clip at 10 dB, 2 % faster, another song mixed in at 0 dB and
+3 dB louder) and re-encoded by ffmpeg (MP3 at 64/96/128 kbit/s, or Ogg Vorbis q0); both systems
read the same files. fpcalc: ``fpcalc -raw`` of each query file against ``fpcalc -raw`` of every
library track, brute-force BER over every alignment. Tracks are split in two: the thresholds
(chromaray's music-over-music ones, fpcalc's BER) are learned on the queries of one half (the
"learn" split) and the table reports the other half only.

Music over music: ``--mix-queries`` (20) in-library clips per split for each of mix 0 dB and +3 dB,
the interfering song another out-of-library recording, and ``--mix-negatives`` (10) mixes of two
out-of-library recordings; ``--rendered`` (8) FluidSynth renderings of ../shared/data/midi pieces
join the out-of-library recordings (only 5 real tracks are left out of a 50-track library).
Offsets: "±1 s" is strict; "rep" also counts an offset whose passage is the same audio as the true
one (game music loops: the track's codes at both offsets agree like a duplicate's).
End to end: ``--latency-clips`` (16) 10 s MP3 clips of report-split tracks identified by
Identifier.identify_file in a fresh process pinned to core ``--latency-cpu`` (JSON
``latency_10s_clip``: p50/p95 of decode + analysis + search, the first clip's set-up apart).

    .venv/bin/python benchmarks/bench_identify.py --quick          # CI size
    .venv/bin/python benchmarks/bench_identify.py --queries-per-cond 6 --negatives-per-cond 4 \
        --workdir benchmarks/out/identify-real --reuse-library --json-out benchmarks/out/identify-real.json

``--synthetic`` runs the older synthetic-library benchmark (generated songs, libsndfile codecs,
XOR-masked scale postings) with its own options (``--synthetic --help``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.synth import SR, add_noise, change_speed, gain, reencode, store_signals, synthetic_hash, varied_song

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def apply_condition(y: np.ndarray, condition: str, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    """Apply one named benchmark condition (see CONDITIONS) to a clip."""
    if condition == "clean":
        return y
    if condition == "noise10":
        return add_noise(y, 10, rng)
    if condition == "noise0":
        return add_noise(y, 0, rng)
    if condition == "mp3":
        return reencode(y, "mp3", sr)
    if condition == "ogg":
        return reencode(y, "ogg", sr)
    if condition == "mp3_noise10":
        return reencode(add_noise(y, 10, rng), "mp3", sr)
    if condition == "gain":
        return gain(y, 0.25 if rng.random() < 0.5 else 1.8)
    if condition == "speed+2":
        return change_speed(y, 1.02, sr)
    if condition == "speed-2":
        return change_speed(y, 0.98, sr)
    raise ValueError(f"unknown condition {condition!r} (expected one of {', '.join(CONDITIONS)})")


CONDITIONS = ["clean", "noise10", "noise0", "mp3", "ogg", "mp3_noise10", "gain", "speed+2", "speed-2"]


def decode(path: str) -> np.ndarray:
    from actors.decode import decode_file

    return decode_file(str(path), SR)


def synthetic_postings(engine: Engine, n_tracks: int, seed: int, *, codes_per_track: int = 2300) -> None:
    """Add ``n_tracks`` synthetic tracks to reach index scale: each is a run of real library codes
    (repeats, runs and bit statistics of real music) XORed with a random 32-bit mask, so its codes
    are spread over the code space like another song's and never reproduce a library track.

    They are stored like the library (rows of the store's models, the features version and
    settings of the default analysis), so identify searches them: a latency measured at scale is
    one against every track, not against a masked-out index."""
    from sqlalchemy import select
    from sqlalchemy.dialects.sqlite import insert
    from sqlalchemy.orm import Session

    from actors.fingerprint import DECIMATE, FP_FRAME_RATE_HZ, FP_VERSION
    from pipeline.config import ChromarayConfig
    from pipeline.ingest.plan import versions_for
    from pipeline.store import Fingerprint, Track, record_settings

    cfg = ChromarayConfig()
    version = versions_for(cfg)["audio"]
    rng = np.random.default_rng(seed)
    with Session(engine) as s:
        pool = np.concatenate([np.frombuffer(b, dtype="<u4") for b in s.scalars(select(Fingerprint.codes))])
    tracks, fingerprints = [], []
    for i in range(n_tracks):
        start = int(rng.integers(0, max(1, len(pool) - codes_per_track)))
        codes = np.resize(pool[start:start + codes_per_track], codes_per_track)
        codes = (codes ^ np.uint32(rng.integers(0, 2**32, dtype=np.uint64))).astype("<u4")
        h = synthetic_hash(f"synthetic-postings-{seed}-{i}")
        tracks.append({"content_hash": h, "kind": "audio", "format": "SYN", "size_bytes": 0,
                       "duration_s": codes_per_track / FP_FRAME_RATE_HZ, "n_frames": codes_per_track * DECIMATE,
                       "features_version": version, "run_id": "bench"})
        fingerprints.append({"content_hash": h, "version": FP_VERSION, "frame_rate_hz": float(FP_FRAME_RATE_HZ),
                             "n_codes": codes_per_track, "codes": codes.tobytes()})
    with Session(engine) as s, s.begin():
        record_settings(s, version, "audio", cfg.dsp)  # what the library's own rows carry
        # Existing rows (--reuse-library) are kept, as the seeded codes are the same.
        s.execute(insert(Track).on_conflict_do_nothing(index_elements=["content_hash"]), tracks)
        s.execute(insert(Fingerprint).on_conflict_do_nothing(index_elements=["content_hash"]), fingerprints)


def learn_thresholds(dump: list[dict]) -> dict:
    """Accept thresholds from the best candidates of in- and out-of-library queries.

    score = (BER + temporal-bit BER) / 2. For short (fewer than IdentifyConfig.short_codes compared
    codes) and long verifications separately: threshold = worst correct in-library score + 1/3 of the gap to the
    best out-of-library score (closer to the positives: a false positive costs more than a miss).
    """
    from pipeline.config import IdentifyConfig

    short = IdentifyConfig().short_codes

    out = {}
    for name, lo, hi in (("short", 0, short), ("long", short, 10**9)):
        pos = [0.5 * (d["ber"] + d["ber_d"]) for d in dump if d["pos"] and d["right"] and lo <= d["n"] < hi]
        neg = [0.5 * (d["ber"] + d["ber_d"]) for d in dump if not d["pos"] and lo <= d["n"] < hi]
        if pos and neg:
            p, q = max(pos), min(neg)
            out[name] = {"pos_max": round(p, 3), "neg_min": round(q, 3), "threshold": round(p + (q - p) / 3, 3),
                         "n_pos": len(pos), "n_neg": len(neg)}
    return out


def _peak_rss() -> int:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _timed_queries(db: str, clips: list[np.ndarray], truth: list[str]) -> dict:
    """Identify clips in this (fresh) process: latencies, hits, peak memory, resident index pages."""
    from pipeline.search.identify import Identifier
    from pipeline.store import open_db

    ident = Identifier(open_db(db, readonly=True))
    ident.identify_signal(clips[0][: SR * 3])  # warm-up: extractor filterbanks, imports
    ident.timings.clear()
    hits = 0
    for clip, h in zip(clips, truth):
        m = ident.identify_signal(clip)
        hits += int(m is not None and m.content_hash == h)
    resident = 0
    try:  # pages of the index files mapped into this process and resident in RAM
        with open("/proc/self/smaps") as fh:
            cur = False
            for line in fh:
                if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
                    cur = ".fpindex/" in line
                elif cur and line.startswith("Rss:"):
                    resident += int(line.split()[1]) * 1024
    except OSError:
        resident = -1
    return {"hits": hits, "n": len(clips), "lat_s": [t["search_s"] for t in ident.timings],
            "searched_tracks": int(sum(int(mask.sum()) for _, mask in ident.groups)),
            "skipped_note": ident.skipped_note,
            "lat_t": [t["search_s"] + t["features_s"] for t in ident.timings],
            "max_rss_bytes": _peak_rss(),
            "index_resident_bytes": resident}


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def _fpcalc(exe: str, path: Path) -> np.ndarray:
    """Raw Chromaprint fingerprint (uint32 per ~0.12 s) of a file, via fpcalc."""
    import subprocess

    out = subprocess.run([exe, "-raw", "-json", "-length", "0", str(path)], capture_output=True, text=True,
                         check=False)
    try:
        fp = json.loads(out.stdout).get("fingerprint") or []
    except json.JSONDecodeError:
        fp = []
    return (np.asarray(fp, dtype=np.int64) & 0xFFFFFFFF).astype(np.uint32)


def _best_ber(q: np.ndarray, ref: np.ndarray) -> float:
    """Smallest BER of q against ref over all offsets where q fits at least half inside ref."""
    from actors.fingerprint import popcount32

    if len(q) == 0 or len(ref) == 0:
        return 1.0
    best = 1.0
    for o in range(-len(q) // 2, len(ref) - len(q) // 2):
        lo, hi = max(0, -o), min(len(q), len(ref) - o)
        if hi - lo < max(1, len(q) // 2):
            continue
        best = min(best, float(popcount32(q[lo:hi] ^ ref[lo + o: hi + o]).sum()) / (32 * (hi - lo)))
    return best


def run_fpcalc(library: list[tuple[str, np.ndarray]], queries: list[tuple[str, int | None, np.ndarray]],
               tmp: Path, *, threshold: float = 0.35) -> dict | None:
    """Chromaprint's fpcalc on the same library and queries, when libchromaprint-tools is installed.

    fpcalc has no index: each clip is compared with every library track at every offset (brute
    force), and the best track counts when its BER is below ``threshold``. ``queries``:
    (condition label, true library index or None for out-of-library, clip).
    """
    import shutil

    import soundfile as sf

    exe = shutil.which("fpcalc")
    if exe is None:
        return None
    d = tmp / "fpcalc"
    d.mkdir(exist_ok=True)
    refs = []
    for i, (_, y) in enumerate(library):
        sf.write(d / f"lib{i}.wav", y, SR)
        refs.append(_fpcalc(exe, d / f"lib{i}.wav"))
    per: dict[str, list[int]] = {}
    times = []
    for k, (label, truth, clip) in enumerate(queries):
        p = d / f"q{k}.wav"
        sf.write(p, clip, SR)
        t0 = time.perf_counter()
        q = _fpcalc(exe, p)
        times.append(time.perf_counter() - t0)
        bers = [_best_ber(q, r) for r in refs]
        j = int(np.argmin(bers))
        ok = bers[j] < threshold and (truth is None or j == truth)
        hit = (truth is not None and ok) or (truth is None and bers[j] >= threshold)
        per.setdefault(label, [0, 0])
        per[label][0] += int(hit)
        per[label][1] += 1
    return {"per_condition_top1": {k: v[0] / v[1] for k, v in per.items()},
            "out_of_library_false_positives": per.get("negative", [0, 0])[1] - per.get("negative", [0, 0])[0],
            "fpcalc_p50_ms": 1e3 * _pct(times, 50), "threshold_ber": threshold,
            "note": "fpcalc fingerprints + brute-force BER search (no index)"}


# ----------------------------------------------------------------------------------------------
# Real music (the default): library of real tracks, out-of-library real tracks, ffmpeg codecs
# ----------------------------------------------------------------------------------------------

#: Conditions of the real-music evaluation: (name, clip seconds, codec).
REAL_CONDITIONS = [("clean", 15.0, "mp3"), ("noise10", 15.0, "mp3"), ("noise0", 15.0, "mp3"),
                   ("pink0", 15.0, "mp3"), ("clip5_noise10", 5.0, "mp3"), ("speed+2", 15.0, "mp3"),
                   ("ogg_q0", 15.0, "ogg"), ("mix0", 15.0, "mp3"), ("mix+3", 15.0, "mp3")]
#: Tracks of benchmarks/out/music that are the same pieces as ../shared/data/audio (kept once).
SAME_PIECES = {"etr__credits1-cp", "etr__freezingpoint", "etr__race1-jt", "supertux2__classic",
               "supertux2__saharan_penguin", "supertux2__tropicalbreeze"}
#: fpcalc item length: 4096/3 samples at 11025 Hz (chromaprint's default algorithm).
FPCALC_ITEM_S = 4096 / 3 / 11025


def real_tracks(root: Path) -> list[Path]:
    """The real tracks: ../shared/data/audio, then benchmarks/out/music without the same pieces."""
    shared = root.parent / "shared" / "data" / "audio"
    music = root / "benchmarks" / "out" / "music"
    files = sorted(shared.glob("*.ogg")) if shared.exists() else []
    if music.exists():
        files += [f for f in sorted(music.glob("*.ogg")) if f.stem not in SAME_PIECES]
    return files


#: MIDI files of ../shared/data/midi rendered by FluidSynth as further out-of-library recordings
#: (negatives and interfering songs): pieces of other composers than the Bach chorales, which
#: dominate the set.
RENDERED = ["music21__beethoven__opus18no1__movement3__krn", "music21__corelli__opus3no1__1grave",
            "music21__haydn__opus1no1__movement4", "music21__leadSheet__berlinAlexandersRagtime",
            "music21__monteverdi__madrigal.3.10", "music21__mozart__k155__movement1",
            "music21__mozart__k80__movement3", "music21__schumann_clara__polonaise_op1n1",
            "music21__trecento__PMFC_06_8-In_Verde_Prato", "music21__monteverdi__madrigal.4.6",
            "music21__mozart__k156__movement4", "music21__schumann_robert__opus41no1__movement2"]


def rendered_tracks(root: Path, cache: Path, n: int) -> list[Path]:
    """Up to ``n`` FluidSynth renderings (GM soundfont) of RENDERED MIDI files, cached as FLAC
    under ``cache``; none when FluidSynth, the soundfont or the MIDI files are missing."""
    from pipeline.synth.render import fluidsynth_available, render_fluidsynth, write_rendering

    midi = root.parent / "shared" / "data" / "midi"
    if n <= 0 or fluidsynth_available() is not None or not midi.exists():
        return []
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for name in RENDERED[:n]:
        path = cache / f"{name}.flac"
        if not path.exists() and (midi / f"{name}.mid").exists():
            write_rendering(path, render_fluidsynth((midi / f"{name}.mid").read_bytes(), sample_rate=SR))
        if path.exists():
            out.append(path)
    return out


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of pink (1/f power) Gaussian noise, unit mean square."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0.0
    y = np.fft.irfft(spec, n)
    return y / (np.sqrt(np.mean(y ** 2)) + 1e-12)


def mix_at(y: np.ndarray, other: np.ndarray, db: float) -> np.ndarray:
    """``y`` plus ``other`` scaled to ``db`` above ``y``'s mean power, peak-normalised to 0.9 if it clips."""
    py = float(np.mean(y.astype(np.float64) ** 2)) + 1e-12
    po = float(np.mean(other.astype(np.float64) ** 2)) + 1e-12
    z = y + other[: len(y)] * np.sqrt(py / po * 10 ** (db / 10))
    peak = float(np.max(np.abs(z))) if len(z) else 0.0
    return (z * (0.9 / peak if peak > 0.9 else 1.0)).astype(np.float32)


def real_condition(y: np.ndarray, cond: str, rng: np.random.Generator, other: np.ndarray | None) -> np.ndarray:
    """Apply a REAL_CONDITIONS degradation (before the codec) to a clip at SR."""
    if cond in ("clean", "ogg_q0"):
        return y
    if cond == "noise10":
        return add_noise(y, 10, rng)
    if cond in ("noise0",):
        return add_noise(y, 0, rng)
    if cond == "clip5_noise10":
        return add_noise(y, 10, rng)
    if cond == "pink0":
        return (y + pink_noise(len(y), rng) * np.sqrt(np.mean(y.astype(np.float64) ** 2))).astype(np.float32)
    if cond == "speed+2":
        return change_speed(y, 1.02, SR)
    if cond in ("mix0", "mix+3"):
        assert other is not None
        return mix_at(y, other, 0.0 if cond == "mix0" else 3.0)
    raise ValueError(f"unknown condition {cond!r}")


def ffmpeg_encode(y: np.ndarray, path: Path, codec: str, rng: np.random.Generator) -> str:
    """Write ``y`` (SR) to ``path`` through ffmpeg: MP3 at 64-128 kbit/s (libmp3lame) or Ogg
    Vorbis q0 (libvorbis). Returns the setting used."""
    import subprocess

    import soundfile as sf

    wav = path.with_suffix(".wav")
    sf.write(wav, np.clip(y, -1, 1), SR, subtype="PCM_16")
    if codec == "mp3":
        rate = f"{int(rng.choice([64, 96, 128]))}k"
        args = ["-c:a", "libmp3lame", "-b:a", rate]
    else:
        rate = "q0"
        args = ["-c:a", "libvorbis", "-q:a", "0"]
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), *args, str(path)], check=True)
    wav.unlink()
    return f"{codec} {rate}"


def fpcalc_best(q: np.ndarray, refs: list[np.ndarray]) -> tuple[float, int, int]:
    """Brute force over every alignment of every reference where at least half of ``q``
    overlaps: (best BER, reference index, offset in fpcalc items)."""
    from actors.fingerprint import popcount32

    best = (1.0, -1, 0)
    n = len(q)
    if n == 0:
        return best
    half = max(1, n // 2)
    for r, ref in enumerate(refs):
        if len(ref) == 0:
            continue
        pad = np.zeros(n, dtype=np.uint32)
        ext = np.concatenate([pad, ref, pad])
        ok = np.concatenate([np.zeros(n, bool), np.ones(len(ref), bool), np.zeros(n, bool)])
        offs = np.arange(-(n - half), len(ref) - half + 1)
        idx = offs[:, None] + n + np.arange(n)[None, :]
        for i in range(0, len(offs), 256):
            sl = idx[i: i + 256]
            inside = ok[sl]
            err = np.where(inside, popcount32(q[None, :] ^ ext[sl]), 0).sum(axis=1)
            ber = err / (32.0 * np.maximum(1, inside.sum(axis=1)))
            j = int(np.argmin(ber))
            if ber[j] < best[0]:
                best = (float(ber[j]), r, int(offs[i + j]))
    return best


def _learn_fpcalc(rows: list[dict]) -> float:
    """fpcalc BER threshold from the learning split: the largest that accepts no negative,
    a third of the way from the worst right positive below it to the best negative."""
    neg = min([r["fp_ber"] for r in rows if r["truth"] is None] or [0.5])
    pos = [r["fp_ber"] for r in rows if r["truth"] is not None and r["fp_ref"] == r["truth"] and r["fp_ber"] < neg]
    return round(max(pos) + (neg - max(pos)) / 3, 4) if pos else round(neg - 0.005, 4)


def _learn_mix(rows: list[dict], *, gap_margin: float = 0.01, score_margin: float = 0.005) -> dict:
    """Music-over-music thresholds (mix_max_score, mix_min_gap) from the learning split's
    partial-search candidates. Negatives are out-of-library queries and positives whose best track
    is wrong; no negative may lie within the margins of the accepted region (gap >= min_gap -
    ``gap_margin`` and score <= max_score + ``score_margin``). For each gap threshold the score
    threshold is the loosest that keeps that margin (at most 0.40); the pair accepting most
    right-track positives wins, ties going to the larger gap."""
    cand = [r for r in rows if r.get("partial") is not None]
    neg = [(r["partial"], r["gap"]) for r in cand if r["truth"] is None or not r["right_track"]]
    pos = [(r["partial"], r["gap"]) for r in cand if r["truth"] is not None and r["right_track"]]
    best = None
    for mg in np.arange(0.0, 0.151, 0.0025):
        near = [p for p, g in neg if g >= mg - gap_margin]
        ms = min(0.40, min(near, default=1.0) - score_margin)
        if ms <= 0:
            continue
        hits = sum(p <= ms and g >= mg for p, g in pos)
        key = (hits, mg)
        if best is None or key > best[0]:
            best = (key, float(ms), float(mg))
    if best is None:
        return {}
    return {"mix_max_score": round(best[1], 3), "mix_min_gap": round(best[2], 4),
            "learn_hits": int(best[0][0]), "learn_pos": len(pos), "learn_neg": len(neg),
            "margins": {"gap": gap_margin, "score": score_margin}}


def latency_clips(files: list[Path], audio: dict, out: Path, n: int, rng: np.random.Generator) -> list[Path]:
    """``n`` 10 s MP3 clips (libmp3lame 128 kbit/s) cut at random offsets from ``files``."""
    out.mkdir(parents=True, exist_ok=True)
    clips = []
    for k in range(n):
        y = audio[files[int(rng.integers(len(files)))]]
        a = int(rng.integers(0, max(1, len(y) - 10 * SR)))
        path = out / f"clip10-{k:02d}.mp3"
        ffmpeg_encode(y[a: a + 10 * SR], path, "mp3", np.random.default_rng([k, 128]))
        clips.append(path)
    return clips


def _latency_run(db: str, clips: list[str], cpu: int) -> dict:
    """End to end as a user runs it, in a fresh process pinned to one core: the Identifier set up
    once (what `chromaray identify a b c ...` does), then each clip by identify_file (decode +
    analysis + search). The first clip pays the feature extractor's set-up: reported apart."""
    import os

    t0 = time.perf_counter()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    from pipeline.search.identify import Identifier
    from pipeline.store import open_db

    ident = Identifier(open_db(db, readonly=True))
    t_open = time.perf_counter() - t0
    totals, matched = [], 0
    for c in clips:
        t1 = time.perf_counter()
        m = ident.identify_file(c)
        totals.append(time.perf_counter() - t1)
        matched += int(m is not None)
    tm = ident.timings[1:]
    return {"clips": len(clips), "matched": matched, "cpu": cpu, "import_and_open_ms": 1e3 * t_open,
            "first_clip_ms": 1e3 * totals[0],
            "p50_ms": 1e3 * _pct(totals[1:], 50), "p95_ms": 1e3 * _pct(totals[1:], 95),
            "decode_p50_ms": 1e3 * _pct([t["decode_s"] for t in tm], 50),
            "features_p50_ms": 1e3 * _pct([t["features_s"] for t in tm], 50),
            "search_p50_ms": 1e3 * _pct([t["search_s"] for t in tm], 50)}


def main_real(args: argparse.Namespace) -> int:
    import json as _json
    import shutil
    import tempfile

    from actors.fingerprint import FP_VERSION
    from pipeline.config import IdentifyConfig
    from pipeline.search import index
    from pipeline.search.identify import Identifier
    from pipeline.store import open_db

    root = Path(__file__).resolve().parents[1]
    files = real_tracks(root)
    if len(files) < args.n_library + 4:
        print(f"need at least {args.n_library + 4} real tracks (../shared/data/audio + benchmarks/out/music from "
              f"`bash benchmarks/setup.sh`), found {len(files)}", file=sys.stderr)
        return 2
    have_fpcalc = shutil.which("fpcalc") is not None
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(files))
    lib_files = [files[i] for i in order[: args.n_library]]
    out_files = [files[i] for i in order[args.n_library:]]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_identify_real_"))
    work.mkdir(parents=True, exist_ok=True)
    rendered = rendered_tracks(root, work / "rendered", args.rendered)
    out_files += rendered
    t0 = time.perf_counter()
    audio = {f: decode(str(f)) for f in lib_files + out_files}
    db = work / f"real-{args.seed}-{args.n_library}.sqlite"
    if not (args.reuse_library and db.exists()):
        for p in work.glob(db.name + "*"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        shutil.rmtree(work / f"parts-{args.seed}", ignore_errors=True)
        engine = open_db(db)
        store_signals(engine, work / f"parts-{args.seed}", [(str(f), audio[f]) for f in lib_files], run_id="bench")
    else:
        engine = open_db(db)
    st = index.sync(engine)
    hashes = [synthetic_hash(str(f)) for f in lib_files]
    build_s = time.perf_counter() - t0
    print(f"library: {len(lib_files)} real tracks ({sum(len(audio[f]) for f in lib_files) / SR / 60:.1f} min), "
          f"{len(out_files)} out-of-library ({len(rendered)} of them FluidSynth renderings); "
          f"built in {build_s:.0f} s; index {st['postings']} postings",
          file=sys.stderr)
    refs = []
    if have_fpcalc:
        exe = shutil.which("fpcalc") or "fpcalc"
        refs = [_fpcalc(exe, f) for f in lib_files]
    # Split by track: learn on half of the library and of the out-of-library tracks, report on the rest.
    half_lib = set(rng.permutation(len(lib_files))[: len(lib_files) // 2].tolist())
    half_out = set(rng.permutation(len(out_files))[: (len(out_files) + 1) // 2].tolist())
    qdir = work / "queries"
    shutil.rmtree(qdir, ignore_errors=True)
    qdir.mkdir()
    conds = [c for c in REAL_CONDITIONS if c[0] in args.conditions.split(",")]

    def queries(split: str) -> list[dict]:
        out = []
        lib_ids = [i for i in range(len(lib_files)) if (i in half_lib) == (split == "learn")]
        neg_ids = [i for i in range(len(out_files)) if (i in half_out) == (split == "learn")]
        k = 0
        for cond, dur, codec in conds:
            n_pos, n_neg = (args.mix_queries, args.mix_negatives) if cond.startswith("mix") else \
                (args.queries_per_cond, args.negatives_per_cond)
            for n_q, ids, is_pos in ((n_pos, lib_ids, True), (n_neg, neg_ids, False)):
                for _ in range(n_q):
                    i = int(ids[int(rng.integers(len(ids)))])
                    src = lib_files[i] if is_pos else out_files[i]
                    y = audio[src]
                    n = int(dur * SR * (1.02 if cond == "speed+2" else 1.0))
                    a = int(rng.integers(0, max(1, len(y) - n)))
                    other = None
                    if cond.startswith("mix"):
                        # Another song, never the target and never in the library.
                        pool = [out_files[j] for j in neg_ids if out_files[j] != src]
                        o = pool[int(rng.integers(len(pool)))]
                        b = int(rng.integers(0, max(1, len(audio[o]) - n)))
                        other = audio[o][b: b + n]
                    clip = real_condition(y[a: a + n], cond, rng, other)
                    path = qdir / f"{split}-{k:04d}.{codec}"
                    k += 1
                    setting = ffmpeg_encode(clip, path, codec, rng)
                    out.append({"split": split, "cond": cond, "path": str(path), "codec": setting,
                                "truth": i if is_pos else None, "offset_s": a / SR})
        return out

    def run_split(qs: list[dict], config: IdentifyConfig) -> None:
        ident = Identifier(engine, config=config)
        for q in qs:
            m = ident.identify_file(q["path"])
            lb = ident.last_best
            c = lb[0] if lb else None
            q["match"] = None if m is None else hashes.index(m.content_hash)
            q["match_offset_s"] = None if m is None else m.offset_s
            q["method"] = None if m is None else m.method
            q["partial"] = None if c is None else c.partial
            q["gap"] = None if c is None else c.mix_gap
            best_key = None if c is None else ident.index.tracks[c.key].content_hash
            q["right_track"] = q["truth"] is not None and best_key == hashes[q["truth"]]
            t = ident.timings[-1]
            q["total_s"] = t["decode_s"] + t["features_s"] + t["search_s"]
            q["search_s"] = t["search_s"]
            if have_fpcalc:
                exe = shutil.which("fpcalc") or "fpcalc"
                t1 = time.perf_counter()
                ber, r, o = fpcalc_best(_fpcalc(exe, Path(q["path"])), refs)
                q["fp_s"] = time.perf_counter() - t1
                q["fp_ber"], q["fp_ref"], q["fp_offset_s"] = ber, r, o * FPCALC_ITEM_S

    config = IdentifyConfig()
    learned: dict = {}
    learn_q = queries("learn")
    if args.learn:
        # Permissive music-over-music thresholds: every partial candidate is recorded.
        run_split(learn_q, config.replace(mix_max_score=0.49, mix_min_gap=0.0))
        learned = _learn_mix([q for q in learn_q if q["method"] != "whole"])
        if learned:
            config = config.replace(mix_max_score=learned["mix_max_score"], mix_min_gap=learned["mix_min_gap"])
        print(f"learned (split 'learn', {len(learn_q)} queries): {learned}", file=sys.stderr)
    elif have_fpcalc:
        run_split(learn_q, config)
    fp_threshold = _learn_fpcalc(learn_q) if have_fpcalc and learn_q and "fp_ber" in learn_q[0] else 0.35
    report_q = queries("report")
    run_split(report_q, config)

    from actors.fingerprint import FP_FRAME_RATE_HZ
    from pipeline.search.index import FingerprintIndex
    from pipeline.search.score import verify_codes

    fpi = FingerprintIndex.open(engine)
    key_of = {info.content_hash: k for k, info in fpi.tracks.items()}
    durations = {c: d for c, d, _ in conds}

    def passage(q: dict, got_s: float | None) -> bool:
        """The reported offset is within 1 s of the true one, or the track's audio there is the
        same passage as at the true offset (game music loops: its codes at both offsets agree
        as a duplicate would, score <= IdentifyConfig.duplicate_score)."""
        if got_s is None:
            return False
        if abs(got_s - q["offset_s"]) <= 1.0:
            return True
        lib = fpi.track_codes(key_of[hashes[q["truth"]]])
        d1, d2 = round(q["offset_s"] * FP_FRAME_RATE_HZ), round(got_s * FP_FRAME_RATE_HZ)
        n, lo = int(durations[q["cond"]] * FP_FRAME_RATE_HZ), max(0, d1)
        v = verify_codes(lib[lo: d1 + n], lib, d2 - d1 + lo)  # lib[lo + i] against lib[d2 - d1 + lo + i]
        return v.n >= config.min_aligned_codes and v.score <= config.duplicate_score

    table: dict[str, dict] = {}
    for cond, _, _ in conds:
        rows = [q for q in report_q if q["cond"] == cond]
        pos = [q for q in rows if q["truth"] is not None]
        neg = [q for q in rows if q["truth"] is None]
        e: dict = {"n_pos": len(pos), "n_neg": len(neg)}
        e["chromaray_top1"] = sum(q["match"] == q["truth"] for q in pos) / max(1, len(pos))
        e["chromaray_top1_offset1s"] = sum(q["match"] == q["truth"] and abs(q["match_offset_s"] - q["offset_s"]) <= 1.0
                                           for q in pos) / max(1, len(pos))
        e["chromaray_top1_passage"] = sum(q["match"] == q["truth"] and passage(q, q["match_offset_s"])
                                          for q in pos) / max(1, len(pos))
        e["chromaray_false_accepts"] = sum(q["match"] is not None for q in neg) + \
            sum(q["match"] is not None and q["match"] != q["truth"] for q in pos)
        if have_fpcalc:
            def fp_hit(q: dict) -> bool:
                return q["fp_ber"] < fp_threshold and q["fp_ref"] == q["truth"]
            e["fpcalc_top1"] = sum(fp_hit(q) for q in pos) / max(1, len(pos))
            # Nearest reference whatever its BER (no decision, so no false accept is counted):
            # what the "fpcalc top-1" column measured.
            e["fpcalc_nearest_top1"] = sum(q["fp_ref"] == q["truth"] for q in pos) / max(1, len(pos))
            e["fpcalc_top1_offset1s"] = sum(fp_hit(q) and abs(q["fp_offset_s"] - q["offset_s"]) <= 1.0
                                            for q in pos) / max(1, len(pos))
            e["fpcalc_top1_passage"] = sum(fp_hit(q) and passage(q, q["fp_offset_s"]) for q in pos) / max(1, len(pos))
            e["fpcalc_false_accepts"] = sum(q["fp_ber"] < fp_threshold for q in neg) + \
                sum(q["fp_ber"] < fp_threshold and q["fp_ref"] != q["truth"] for q in pos)
        table[cond] = e
    lat = [q["total_s"] for q in report_q]
    report = {"fp_version": FP_VERSION, "library_tracks": len(lib_files), "out_of_library_tracks": len(out_files),
              "library_minutes": sum(len(audio[f]) for f in lib_files) / SR / 60, "build_s": build_s,
              "index": st, "split": "by track: thresholds learned on half the tracks, reported on the others",
              "learned": learned,
              "config": {k: getattr(config, k) for k in ("mix_max_score", "mix_min_gap", "mix_tracks")},
              "fpcalc_threshold_ber": fp_threshold if have_fpcalc else None, "per_condition": table,
              "identify_total_p50_ms": 1e3 * _pct(lat, 50), "identify_total_p95_ms": 1e3 * _pct(lat, 95),
              "fpcalc": "fpcalc -raw + brute-force BER over every alignment of every reference" if have_fpcalc
              else "fpcalc not installed (libchromaprint-tools): comparison skipped"}
    if args.latency_clips:
        # End to end on one core, in a fresh process (a query process, not this benchmark's).
        import concurrent.futures as cf
        import multiprocessing as mp

        report_lib = [lib_files[i] for i in range(len(lib_files)) if i not in half_lib]
        clips = latency_clips(report_lib, audio, work / "latency", args.latency_clips, rng)
        with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            lt: dict = pool.submit(_latency_run, str(db), [str(c) for c in clips], args.latency_cpu).result()
        report["latency_10s_clip"] = lt
        print(f"10 s MP3 clip end to end on core {lt['cpu']}: p50 {lt['p50_ms']:.0f} ms, p95 {lt['p95_ms']:.0f} ms "
              f"(decode {lt['decode_p50_ms']:.0f}, analysis {lt['features_p50_ms']:.0f}, search "
              f"{lt['search_p50_ms']:.0f} ms p50; {lt['matched']}/{lt['clips']} matched; first clip "
              f"{lt['first_clip_ms']:.0f} ms, import + open {lt['import_and_open_ms']:.0f} ms)", file=sys.stderr)
    hdr = (f"{'condition':14s} {'n+':>3s} {'n-':>3s} | {'cr top1':>7s} {'±1 s':>5s} {'rep':>5s} {'FA':>3s} | "
           f"{'fp top1':>7s} {'±1 s':>5s} {'rep':>5s} {'FA':>3s} {'nearest':>7s}")
    print(hdr)
    for cond, e in table.items():
        fp = (f"{e['fpcalc_top1']:7.2f} {e['fpcalc_top1_offset1s']:5.2f} {e['fpcalc_top1_passage']:5.2f} "
              f"{e['fpcalc_false_accepts']:3d} {e['fpcalc_nearest_top1']:7.2f}" if have_fpcalc
              else "      -     -     -   -       -")
        print(f"{cond:14s} {e['n_pos']:3d} {e['n_neg']:3d} | {e['chromaray_top1']:7.2f} "
              f"{e['chromaray_top1_offset1s']:5.2f} {e['chromaray_top1_passage']:5.2f} "
              f"{e['chromaray_false_accepts']:3d} | {fp}")
    text = _json.dumps(report, indent=2, default=float)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text)
    if args.dump:
        Path(args.dump).write_text("\n".join(_json.dumps(q, default=float) for q in learn_q + report_q))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--synthetic" in argv:
        argv.remove("--synthetic")
        return main_synthetic(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI size: 3 positive and 2 negative queries per condition "
                                                         "and split")
    ap.add_argument("--n-library", type=int, default=50, help="library tracks (the rest are out of library)")
    ap.add_argument("--queries-per-cond", type=int, default=None, help="in-library queries per condition and split "
                                                                       "(default 12; --quick 3)")
    ap.add_argument("--negatives-per-cond", type=int, default=None, help="out-of-library queries per condition and "
                                                                         "split (default 6; --quick 2)")
    ap.add_argument("--mix-queries", type=int, default=None, help="in-library queries per split of each "
                    "music-over-music condition (default 20; --quick 3)")
    ap.add_argument("--mix-negatives", type=int, default=None, help="out-of-library mixes per split of each "
                    "music-over-music condition (default 10; --quick 2)")
    ap.add_argument("--rendered", type=int, default=8, help="FluidSynth renderings of ../shared/data/midi pieces "
                    "added to the out-of-library recordings (negatives, interfering songs)")
    ap.add_argument("--latency-clips", type=int, default=16, help="10 s MP3 clips timed end to end on one core "
                    "(0: skip)")
    ap.add_argument("--latency-cpu", type=int, default=0, help="the core the latency run is pinned to")
    ap.add_argument("--conditions", default=",".join(c for c, _, _ in REAL_CONDITIONS))
    ap.add_argument("--no-learn", dest="learn", action="store_false",
                    help="use IdentifyConfig's music-over-music thresholds instead of learning them on the learn split")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--workdir", default=None, help="keep the library database (and queries) here")
    ap.add_argument("--reuse-library", action="store_true", help="reuse the library database in --workdir")
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--dump", default=None, help="write every query's outcome (JSON lines)")
    args = ap.parse_args(argv)
    if args.queries_per_cond is None:
        args.queries_per_cond = 3 if args.quick else 12
    if args.negatives_per_cond is None:
        args.negatives_per_cond = 2 if args.quick else 6
    if args.mix_queries is None:
        args.mix_queries = 3 if args.quick else 20
    if args.mix_negatives is None:
        args.mix_negatives = 2 if args.quick else 10
    return main_real(args)


def main_synthetic(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-library", type=int, default=24, help="library tracks (real + synthetic songs)")
    ap.add_argument("--song-seconds", type=float, default=30.0)
    ap.add_argument("--queries-per-cond", type=int, default=20, help="per condition and duration")
    ap.add_argument("--durations", default="3,5,10")
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--n-negative", type=int, default=200, help="out-of-library queries")
    ap.add_argument("--scale-tracks", type=int, default=10000, help="index size for the latency part (0: skip)")
    ap.add_argument("--scale-queries", type=int, default=60, help="timed queries on the scaled index")
    ap.add_argument("--no-real", action="store_true", help="do not use ../shared/data/audio")
    ap.add_argument("--seed", type=int, default=1234, help="query cuts and noise")
    ap.add_argument("--negative-seed-base", type=int, default=100000,
                    help="out-of-library songs are varied_song(base + k); learn thresholds on another base")
    ap.add_argument("--workdir", default=None, help="keep the library database here")
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--reuse-library", action="store_true",
                    help="reuse the database in --workdir from an earlier run with the same arguments")
    ap.add_argument("--learn", action="store_true",
                    help="derive the accept thresholds of pipeline.search.identify from this run (use seeds that "
                         "differ from the evaluation: --seed 7 --negative-seed-base 500000)")
    ap.add_argument("--dump", default=None, help="write the best candidate of every query (JSON lines)")
    args = ap.parse_args(argv)

    import tempfile

    from actors.fingerprint import FP_VERSION
    from pipeline.search import index
    from pipeline.search.identify import Identifier
    from pipeline.store import open_db

    rng = np.random.default_rng(args.seed)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_identify_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lib: list[tuple[str, np.ndarray]] = []
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "audio"
    if not args.no_real and shared.exists():
        lib.extend((str(f), decode(str(f))) for f in sorted(shared.glob("*.ogg"))[: args.n_library])
    seed = 0
    while len(lib) < args.n_library:
        lib.append((f"synthetic://song-{seed}", varied_song(seed, args.song_seconds)))
        seed += 1
    db, parts = work / "library.sqlite", work / "library-parts"
    if args.reuse_library and db.exists():
        engine = open_db(db)
        hashes = [synthetic_hash(p) for p, _ in lib]
    else:
        import shutil

        shutil.rmtree(parts, ignore_errors=True)
        for p in work.glob("library.sqlite*"):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
        engine = open_db(db)
        hashes = store_signals(engine, parts, lib, run_id="bench")
    st = index.sync(engine)
    build_s = time.perf_counter() - t0
    print(f"library: {len(lib)} tracks ({sum(len(y) for _, y in lib) / SR / 60:.1f} min), "
          f"built in {build_s:.1f} s; index {st}", file=sys.stderr)

    ident = Identifier(engine)
    if ident.skipped_note:  # a benchmark of a partly masked index measures the wrong thing: say so
        print(f"warning: {ident.skipped_note}", file=sys.stderr)
    durations = [float(d) for d in args.durations.split(",")]
    conditions = args.conditions.split(",")
    results: dict[str, dict] = {}
    pos_bers, lat_search, lat_total = [], [], []
    dump: list[dict] = []  # best candidate of every query (threshold learning, --dump)
    fp_queries: list[tuple[str, int | None, np.ndarray]] = []  # the same queries for fpcalc
    import shutil

    have_fpcalc = shutil.which("fpcalc") is not None
    for cond in conditions:
        for dur in durations:
            hits, n, bers = 0, 0, []
            for _ in range(args.queries_per_cond):
                i = int(rng.integers(0, len(lib)))
                y = lib[i][1]
                n_q = int(dur * SR)
                a = int(rng.integers(0, max(1, len(y) - n_q)))
                clip = apply_condition(y[a: a + n_q], cond, rng)
                if have_fpcalc:
                    fp_queries.append((f"{cond}/{dur:g}s", i, clip))
                m = ident.identify_signal(clip)
                tm = ident.timings[-1]
                lat_search.append(tm["search_s"])
                lat_total.append(tm["search_s"] + tm["features_s"])
                if ident.last_best is not None:
                    bers.append(ident.last_best[0].score)
                    c = ident.last_best[0]
                    dump.append({"pos": 1, "cond": cond, "dur": dur, "ber": c.ber, "ber_d": c.ber_delta, "n": c.n,
                                 "votes": c.votes,
                                 "right": bool(m is not None and m.content_hash == hashes[i]) if m else
                                 ident.index.tracks[c.key].content_hash == hashes[i]})
                n += 1
                hits += int(m is not None and m.content_hash == hashes[i])
            results[f"{cond}/{dur:g}s"] = {"n": n, "top1": hits / max(1, n), "score_median": _pct(bers, 50),
                                           "score_max": max(bers) if bers else None}
            pos_bers.extend(bers)
            print(f"{cond:12s} {dur:4.0f} s  top-1 {hits}/{n} = {hits / max(1, n):.3f}  "
                  f"score median {_pct(bers, 50):.3f} max {max(bers) if bers else float('nan'):.3f}", file=sys.stderr)
    # Out-of-library queries.
    fp, neg_bers = 0, []
    fp_by_dur = {f"{d:g}s": [0, 0] for d in durations}
    neg_conds = ["clean", "noise10", "mp3"]
    for k in range(args.n_negative):
        y = varied_song(args.negative_seed_base + k, 12.0)
        dur = durations[k % len(durations)]
        n_q = int(dur * SR)
        a = int(rng.integers(0, max(1, len(y) - n_q)))
        clip = apply_condition(y[a: a + n_q], neg_conds[k % len(neg_conds)], rng)
        if have_fpcalc:
            fp_queries.append(("negative", None, clip))
        m = ident.identify_signal(clip)
        tm = ident.timings[-1]
        lat_search.append(tm["search_s"])
        lat_total.append(tm["search_s"] + tm["features_s"])
        fp_by_dur[f"{dur:g}s"][0] += int(m is not None)
        fp_by_dur[f"{dur:g}s"][1] += 1
        if ident.last_best is not None:
            neg_bers.append(ident.last_best[0].score)
            c = ident.last_best[0]
            dump.append({"pos": 0, "cond": neg_conds[k % len(neg_conds)], "dur": dur, "ber": c.ber,
                         "ber_d": c.ber_delta, "n": c.n, "votes": c.votes, "right": False})
        fp += int(m is not None)
    print(f"out-of-library: {fp} false positives in {args.n_negative} (per duration [fp, n]: {fp_by_dur}); "
          f"best-candidate score min "
          f"{min(neg_bers) if neg_bers else float('nan'):.3f} p1 {_pct(neg_bers, 1):.3f} "
          f"median {_pct(neg_bers, 50):.3f}",
          file=sys.stderr)
    report: dict = {
        "fp_version": FP_VERSION, "library_tracks": len(lib), "build_s": build_s, "per_condition": results,
        "negatives": {"n": args.n_negative, "false_positives": fp, "by_duration_fp_n": fp_by_dur,
                      "score_min": min(neg_bers) if neg_bers else None, "score_p1": _pct(neg_bers, 1)},
        "positives_score_p99": _pct(pos_bers, 99),
        "latency_small_index": {"search_p50_ms": 1e3 * _pct(lat_search, 50),
                                "search_p95_ms": 1e3 * _pct(lat_search, 95),
                                "with_features_p50_ms": 1e3 * _pct(lat_total, 50),
                                "with_features_p95_ms": 1e3 * _pct(lat_total, 95)},
    }
    # Scale: synthetic postings up to scale-tracks, then the same kind of queries timed again.
    if args.scale_tracks > len(lib):
        t1 = time.perf_counter()
        synthetic_postings(engine, args.scale_tracks - len(lib), args.seed)
        st = index.sync(engine)
        scale_build = time.perf_counter() - t1
        clips, truth = [], []
        for k in range(args.scale_queries):
            i = int(rng.integers(0, len(lib)))
            y = lib[i][1]
            dur = durations[k % len(durations)]
            n_q = int(dur * SR)
            a = int(rng.integers(0, max(1, len(y) - n_q)))
            clips.append(apply_condition(y[a: a + n_q], "mp3_noise10", rng))
            truth.append(hashes[i])
        # Timed in a fresh process, so its memory is that of a query process (index mapped,
        # feature extractor), not of this benchmark's library construction.
        import concurrent.futures as cf
        import multiprocessing as mp

        with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            sq = pool.submit(_timed_queries, str(db), clips, truth).result()
        hits, n, lat_s, lat_t, rss = sq["hits"], sq["n"], sq["lat_s"], sq["lat_t"], sq["max_rss_bytes"]
        if sq["skipped_note"]:
            print(f"warning: scale queries: {sq['skipped_note']}", file=sys.stderr)
        from pipeline.search.duplicates import find_duplicates

        t2 = time.perf_counter()
        groups = find_duplicates(engine)
        dup_s = time.perf_counter() - t2
        report["scale"] = {"tracks": st["tracks"], "searched_tracks": sq["searched_tracks"],
                           "postings": st["postings"], "index_bytes": st["bytes"],
                           "build_s": scale_build, "queries": n, "top1": hits / n,
                           "search_p50_ms": 1e3 * _pct(lat_s, 50), "search_p95_ms": 1e3 * _pct(lat_s, 95),
                           "with_features_p50_ms": 1e3 * _pct(lat_t, 50), "with_features_p95_ms": 1e3 * _pct(lat_t, 95),
                           "query_process_max_rss_bytes": rss,
                           "index_pages_resident_bytes": sq["index_resident_bytes"],
                           "duplicates_scan_s": dup_s, "duplicate_groups": len(groups)}
        print(f"scale: {st['tracks']} tracks ({sq['searched_tracks']} searched), {st['postings']} postings, "
              f"index {st['bytes'] / 1e6:.1f} MB on disk "
              f"(built in {scale_build:.1f} s); top-1 {hits}/{n} (mp3 + 10 dB); search p50 "
              f"{report['scale']['search_p50_ms']:.1f} ms p95 {report['scale']['search_p95_ms']:.1f} ms; "
              f"with features p50 {report['scale']['with_features_p50_ms']:.0f} ms p95 "
              f"{report['scale']['with_features_p95_ms']:.0f} ms; query process max RSS {rss / 1e6:.0f} MB, "
              f"index pages resident {sq['index_resident_bytes'] / 1e6:.0f} MB; duplicates scan {dup_s:.1f} s "
              f"({len(groups)} groups)",
              file=sys.stderr)
    if args.dump:
        Path(args.dump).write_text("\n".join(json.dumps(d) for d in dump))
    if args.learn:
        report["learned"] = learn_thresholds(dump)
        print(f"learned thresholds: {report['learned']}", file=sys.stderr)
    fpc = run_fpcalc(lib, fp_queries, work)
    report["fpcalc"] = fpc if fpc is not None else "fpcalc not installed (libchromaprint-tools): comparison skipped"
    text = json.dumps(report, indent=2, default=float)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
