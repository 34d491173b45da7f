"""Benchmark of `chromaray identify`: accuracy per degradation, false positives, latency, index size.

Library: the real tracks in ../shared/data/audio (when present) plus seeded synthetic songs up to
``--n-library`` tracks. Queries: 3, 5 and 10 s excerpts cut at random *sample* offsets, under
clean, white noise at 10 and 0 dB SNR, low-bitrate MP3 and OGG/Vorbis re-encoding (soundfile /
libsndfile, no ffmpeg), MP3 + 10 dB noise (the issue's headline condition), gain change and
+-2 % speed (resampling: tempo *and* pitch change, like a turntable). Out-of-library queries are
excerpts of other seeded songs. A scale part adds synthetic postings until the index holds
``--scale-tracks`` tracks and times the same queries against it.

    .venv/bin/python benchmarks/bench_identify.py --n-library 24 --queries-per-cond 20 \
        --n-negative 200 --scale-tracks 10000 --json-out /tmp/bench_identify.json

Everything is seeded: the same command gives the same queries and the same index.
The song synthesizer and degradations below are also used by the tests (tests/test_identify.py).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

SR = 22050

# ----------------------------------------------------------------------------------------------
# Synthetic music: seeded songs with a chord progression, bass, melody and drums.
# ----------------------------------------------------------------------------------------------

_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
_MINOR = np.array([0, 2, 3, 5, 7, 8, 10])


def _tone(freq: float, n: int, sr: int, harmonics: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    out = np.zeros(n)
    for h, amp in enumerate(harmonics, start=1):
        if freq * h >= sr / 2:
            break
        out += amp * np.sin(2 * np.pi * freq * h * t + rng.uniform(0, 2 * np.pi))
    return out


def _env(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    a = max(1, int(attack * sr))
    r = max(1, int(release * sr))
    e = np.ones(n)
    e[:a] = np.linspace(0, 1, min(a, n))[: min(a, n)]
    if r < n:
        e[-r:] *= np.linspace(1, 0, r)
    return e


def synth_song(seed: int, seconds: float = 30.0, sr: int = SR) -> np.ndarray:
    """A distinct seeded "song" (mono float32 at ``sr``, peak ~0.8).

    Random key, mode, tempo, timbres; a diatonic chord progression (pad + bass), a melody on the
    scale with a rhythm, and kick/snare/hat drums. Different seeds give different songs.
    """
    rng = np.random.default_rng(seed)
    n_total = int(seconds * sr)
    y = np.zeros(n_total)
    tonic = 48 + int(rng.integers(0, 12))  # MIDI note of the key's tonic (C3..B3)
    scale = _MAJOR if rng.random() < 0.6 else _MINOR
    bpm = float(rng.uniform(78, 150))
    beat = 60.0 / bpm
    bar = 4 * beat
    n_chords = int(rng.integers(4, 9))
    degrees = rng.integers(0, 7, size=n_chords)
    bars_per_chord = rng.choice([0.5, 1, 1, 2], size=n_chords)
    pad_h = rng.uniform(0.1, 1.0, size=6) / np.arange(1, 7) ** rng.uniform(0.5, 1.5)
    bass_h = rng.uniform(0.2, 1.0, size=4) / np.arange(1, 5)
    mel_h = rng.uniform(0.1, 1.0, size=8) / np.arange(1, 9) ** rng.uniform(0.3, 1.2)

    def midi_hz(m: float) -> float:
        return 440.0 * 2 ** ((m - 69) / 12)

    def note(d: int, octave: int) -> int:
        return tonic + 12 * (octave + d // 7) + int(scale[d % 7])

    t = 0.0
    i = 0
    while t < seconds:
        d = int(degrees[i % n_chords])
        dur = float(bars_per_chord[i % n_chords]) * bar
        a, b = int(t * sr), min(n_total, int((t + dur) * sr))
        n = b - a
        if n <= 0:
            break
        for k in (0, 2, 4):  # triad
            y[a:b] += 0.22 * _tone(midi_hz(note(d + k, 0)), n, sr, pad_h, rng) * _env(n, sr, 0.05, 0.1)
        y[a:b] += 0.3 * _tone(midi_hz(note(d, -1)), n, sr, bass_h, rng) * _env(n, sr, 0.01, 0.05)
        t += dur
        i += 1
    # Melody: eighths and quarters on the scale, a random walk.
    t = 0.0
    deg = int(rng.integers(0, 7))
    while t < seconds:
        dur = beat * float(rng.choice([0.5, 0.5, 1.0, 1.5]))
        a, b = int(t * sr), min(n_total, int((t + dur) * sr))
        if rng.random() < 0.85 and b > a:
            deg = int(np.clip(deg + rng.integers(-2, 3), -3, 10))
            n = b - a
            y[a:b] += 0.25 * _tone(midi_hz(note(deg, 1)), n, sr, mel_h, rng) * np.exp(
                -np.arange(n) / (sr * rng.uniform(0.2, 0.6)))
        t += dur
    # Drums: kick on 1 and 3, snare on 2 and 4, hats on eighths.
    n_beats = int(seconds / beat) + 1
    kick = np.sin(2 * np.pi * np.cumsum(np.linspace(120, 45, int(0.15 * sr))) / sr) * np.exp(
        -np.arange(int(0.15 * sr)) / (0.04 * sr))
    snare = rng.standard_normal(int(0.12 * sr)) * np.exp(-np.arange(int(0.12 * sr)) / (0.03 * sr))
    hat = np.diff(rng.standard_normal(int(0.04 * sr) + 1)) * np.exp(-np.arange(int(0.04 * sr)) / (0.008 * sr))
    for j in range(n_beats * 2):
        pos = int(j * beat / 2 * sr)
        parts = [(hat, 0.15)]
        if j % 2 == 0:
            parts.append((kick, 0.6) if (j // 2) % 2 == 0 else (snare, 0.35))
        for sig, gain in parts:
            e = min(n_total, pos + len(sig))
            if e > pos:
                y[pos:e] += gain * sig[: e - pos]
    y /= max(1e-9, np.abs(y).max()) / 0.8
    return y.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Degradations
# ----------------------------------------------------------------------------------------------

def add_noise(y: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise at ``snr_db`` relative to the clip's mean power."""
    p = float(np.mean(y.astype(np.float64) ** 2)) + 1e-12
    noise = rng.standard_normal(len(y)) * np.sqrt(p / 10 ** (snr_db / 10))
    return (y + noise).astype(np.float32)


def reencode(y: np.ndarray, fmt: str, sr: int = SR, *, level: float = 0.9) -> np.ndarray:
    """Round trip through a lossy codec in memory (libsndfile). ``fmt`` is "mp3" or "ogg".

    ``level`` is libsndfile's compression level: 0.9 gives ~24 kbit/s MP3 and ~40 kbit/s Vorbis
    for 22.05 kHz mono.
    """
    import soundfile as sf

    y = np.clip(y, -1.0, 1.0)
    buf = io.BytesIO()
    if fmt == "mp3":
        sf.write(buf, y, sr, format="MP3", subtype="MPEG_LAYER_III", compression_level=level,
                 bitrate_mode="CONSTANT")
    elif fmt == "ogg":
        sf.write(buf, y, sr, format="OGG", subtype="VORBIS", compression_level=level)
    else:
        raise ValueError(fmt)
    buf.seek(0)
    z, _ = sf.read(buf, dtype="float32", always_2d=False)
    return z


def change_speed(y: np.ndarray, factor: float, sr: int = SR) -> np.ndarray:
    """Play ``factor`` times faster (tempo and pitch, like a turntable), same sample rate."""
    import soxr

    return soxr.resample(y, sr * factor, sr, quality="HQ").astype(np.float32)


def degrade(y: np.ndarray, condition: str, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    """Apply one named benchmark condition to a clip."""
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
        return (y * (0.25 if rng.random() < 0.5 else 1.8)).astype(np.float32)
    if condition == "speed+2":
        return change_speed(y, 1.02, sr)
    if condition == "speed-2":
        return change_speed(y, 0.98, sr)
    raise ValueError(condition)


CONDITIONS = ["clean", "noise10", "noise0", "mp3", "ogg", "mp3_noise10", "gain", "speed+2", "speed-2"]


# ----------------------------------------------------------------------------------------------
# Library construction without the Ray pipeline (tests, benchmark): same feature chain and
# fingerprint function the pipeline's FeatureStage uses, rows as pipeline/sink.py writes them.
# ----------------------------------------------------------------------------------------------

def content_hash_of(name: str) -> str:
    import hashlib

    return hashlib.sha256(name.encode()).hexdigest()


def library_chroma(signals: list[np.ndarray]) -> list[np.ndarray]:
    """Harmonic chroma of whole tracks by the pipeline's FeatureExtractor (CPU)."""
    from actors.config import BatchConfig, DSPConfig
    from actors.features import FeatureExtractor

    fx = FeatureExtractor(DSPConfig(), BatchConfig(device="cpu"))
    return [np.asarray(f.chroma) for f in fx(signals)]


def insert_tracks(engine, items: list[tuple[str, np.ndarray, float]], *, run_id: str = "bench") -> list[str]:
    """Store tracks ``(path, chroma, duration_s)`` like the pipeline: tracks, track_paths and
    fingerprints rows (codes by actors.fingerprint.fingerprint_codes). Returns content hashes."""
    from sqlalchemy.orm import Session

    from actors.config import DSPConfig
    from actors.fingerprint import FP_FRAME_RATE_HZ, FP_VERSION, fingerprint_codes
    from pipeline.store import Fingerprint, Track, TrackPath

    dsp = DSPConfig()
    hashes = []
    with Session(engine) as s, s.begin():
        for path, chroma, duration in items:
            h = content_hash_of(path)
            hashes.append(h)
            codes = np.asarray(fingerprint_codes(chroma, frame_rate_hz=dsp.frame_rate_hz), dtype="<u4")
            s.merge(Track(content_hash=h, kind="audio", format="OGG", size_bytes=0, duration_s=float(duration),
                          n_frames=int(chroma.shape[1]), features_version=dsp.version(), run_id=run_id))
            s.merge(TrackPath(path=path, content_hash=h, size_bytes=0, mtime_ns=0, last_seen_run=run_id))
            s.merge(Fingerprint(content_hash=h, version=FP_VERSION, frame_rate_hz=float(FP_FRAME_RATE_HZ),
                                n_codes=int(codes.size), codes=codes.tobytes()))
    return hashes


def decode(path: str) -> np.ndarray:
    from actors.decode import decode_file

    return decode_file(str(path), SR)


def synthetic_postings(engine, n_tracks: int, seed: int, *, codes_per_track: int = 2300) -> None:
    """Add ``n_tracks`` synthetic tracks to reach index scale: each is a run of real library codes
    (repeats, runs and bit statistics of real music) XORed with a random 32-bit mask, so its codes
    are spread over the code space like another song's and never reproduce a library track."""
    import sqlite3

    from actors.fingerprint import FP_FRAME_RATE_HZ, FP_VERSION
    from pipeline.search import index

    rng = np.random.default_rng(seed)
    db = index.db_path(engine)
    con = sqlite3.connect(db)
    src = [np.frombuffer(b, dtype="<u4") for (b,) in con.execute("SELECT codes FROM fingerprints")]
    pool = np.concatenate(src)
    rows_t, rows_f = [], []
    for i in range(n_tracks):
        start = int(rng.integers(0, max(1, len(pool) - codes_per_track)))
        codes = np.resize(pool[start:start + codes_per_track], codes_per_track)
        codes = (codes ^ np.uint32(rng.integers(0, 2**32, dtype=np.uint64))).astype("<u4")
        h = content_hash_of(f"synthetic-postings-{seed}-{i}")
        rows_t.append((h, "audio", "SYN", 0, codes_per_track / FP_FRAME_RATE_HZ, 0, "bench", "bench"))
        rows_f.append((h, FP_VERSION, float(FP_FRAME_RATE_HZ), codes_per_track, codes.tobytes()))
    with con:
        con.executemany("INSERT OR IGNORE INTO tracks (content_hash, kind, format, size_bytes, duration_s, n_frames, "
                        "features_version, run_id, created_at) VALUES (?,?,?,?,?,?,?,?, datetime('now'))", rows_t)
        con.executemany("INSERT OR IGNORE INTO fingerprints (content_hash, version, frame_rate_hz, n_codes, codes) "
                        "VALUES (?,?,?,?,?)", rows_f)
    con.close()


def learn_thresholds(dump: list[dict]) -> dict:
    """Accept thresholds from the best candidates of in- and out-of-library queries.

    score = (BER + temporal-bit BER) / 2. For short (< SHORT_CODES compared codes) and long
    verifications separately: threshold = worst correct in-library score + 1/3 of the gap to the
    best out-of-library score (closer to the positives: a false positive costs more than a miss).
    """
    from pipeline.search.identify import SHORT_CODES

    out = {}
    for name, lo, hi in (("short", 0, SHORT_CODES), ("long", SHORT_CODES, 10**9)):
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
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
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


def main(argv: list[str] | None = None) -> int:
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
                    help="out-of-library songs are synth_song(base + k); learn thresholds on another base")
    ap.add_argument("--workdir", default=None, help="keep the library database here")
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--reuse-library", action="store_true",
                    help="reuse the database in --workdir from an earlier run with the same arguments")
    ap.add_argument("--learn", action="store_true",
                    help="derive the accept thresholds of pipeline.search.identify from this run (use seeds that differ "
                         "from the evaluation: --seed 7 --negative-seed-base 500000)")
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
        for f in sorted(shared.glob("*.ogg"))[: args.n_library]:
            lib.append((str(f), decode(str(f))))
    seed = 0
    while len(lib) < args.n_library:
        lib.append((f"synthetic://song-{seed}", synth_song(seed, args.song_seconds)))
        seed += 1
    db = work / "library.sqlite"
    if args.reuse_library and db.exists():
        engine = open_db(db)
        hashes = [content_hash_of(p) for p, _ in lib]
    else:
        for p in work.glob("library.sqlite*"):
            if p.is_dir():
                import shutil

                shutil.rmtree(p)
            else:
                p.unlink()
        engine = open_db(db)
        index.ensure_tables(engine)
        chroma = library_chroma([y for _, y in lib])
        hashes = insert_tracks(engine, [(p, c, len(y) / SR) for (p, y), c in zip(lib, chroma)])
    st = index.sync(engine)
    build_s = time.perf_counter() - t0
    print(f"library: {len(lib)} tracks ({sum(len(y) for _, y in lib) / SR / 60:.1f} min), "
          f"built in {build_s:.1f} s; index {st}", file=sys.stderr)

    ident = Identifier(engine)
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
                clip = degrade(y[a: a + n_q], cond, rng)
                if have_fpcalc:
                    fp_queries.append((f"{cond}/{dur:g}s", i, clip))
                m = ident.identify_signal(clip)
                tm = ident.timings[-1]
                lat_search.append(tm["search_s"])
                lat_total.append(tm["search_s"] + tm["features_s"])
                if ident.last_best is not None:
                    bers.append(ident.last_best[0].score)
                    c = ident.last_best[0]
                    dump.append({"pos": 1, "cond": cond, "dur": dur, "ber": c.ber, "ber_d": c.ber_delta, "n": c.n, "votes": c.votes,
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
        y = synth_song(args.negative_seed_base + k, 12.0)
        dur = durations[k % len(durations)]
        n_q = int(dur * SR)
        a = int(rng.integers(0, max(1, len(y) - n_q)))
        clip = degrade(y[a: a + n_q], neg_conds[k % len(neg_conds)], rng)
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
            dump.append({"pos": 0, "cond": neg_conds[k % len(neg_conds)], "dur": dur, "ber": c.ber, "ber_d": c.ber_delta, "n": c.n,
                             "votes": c.votes, "right": False})
        fp += int(m is not None)
    print(f"out-of-library: {fp} false positives in {args.n_negative} (per duration [fp, n]: {fp_by_dur}); "
          f"best-candidate score min "
          f"{min(neg_bers) if neg_bers else float('nan'):.3f} p1 {_pct(neg_bers, 1):.3f} median {_pct(neg_bers, 50):.3f}",
          file=sys.stderr)
    report: dict = {
        "fp_version": FP_VERSION, "library_tracks": len(lib), "build_s": build_s, "per_condition": results,
        "negatives": {"n": args.n_negative, "false_positives": fp, "by_duration_fp_n": fp_by_dur,
                      "score_min": min(neg_bers) if neg_bers else None, "score_p1": _pct(neg_bers, 1)},
        "positives_score_p99": _pct(pos_bers, 99),
        "latency_small_index": {"search_p50_ms": 1e3 * _pct(lat_search, 50), "search_p95_ms": 1e3 * _pct(lat_search, 95),
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
            clips.append(degrade(y[a: a + n_q], "mp3_noise10", rng))
            truth.append(hashes[i])
        # Timed in a fresh process, so its memory is that of a query process (index mapped,
        # feature extractor), not of this benchmark's library construction.
        import concurrent.futures as cf
        import multiprocessing as mp

        with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            sq = pool.submit(_timed_queries, str(db), clips, truth).result()
        hits, n, lat_s, lat_t, rss = sq["hits"], sq["n"], sq["lat_s"], sq["lat_t"], sq["max_rss_bytes"]
        from pipeline.search.duplicates import find_duplicates

        t2 = time.perf_counter()
        groups = find_duplicates(engine)
        dup_s = time.perf_counter() - t2
        report["scale"] = {"tracks": st["tracks"], "postings": st["postings"], "index_bytes": st["bytes"],
                           "build_s": scale_build, "queries": n, "top1": hits / n,
                           "search_p50_ms": 1e3 * _pct(lat_s, 50), "search_p95_ms": 1e3 * _pct(lat_s, 95),
                           "with_features_p50_ms": 1e3 * _pct(lat_t, 50), "with_features_p95_ms": 1e3 * _pct(lat_t, 95),
                           "query_process_max_rss_bytes": rss,
                           "index_pages_resident_bytes": sq["index_resident_bytes"],
                           "duplicates_scan_s": dup_s, "duplicate_groups": len(groups)}
        print(f"scale: {st['tracks']} tracks, {st['postings']} postings, index {st['bytes'] / 1e6:.1f} MB on disk "
              f"(built in {scale_build:.1f} s); top-1 {hits}/{n} (mp3 + 10 dB); search p50 "
              f"{report['scale']['search_p50_ms']:.1f} ms p95 {report['scale']['search_p95_ms']:.1f} ms; "
              f"with features p50 {report['scale']['with_features_p50_ms']:.0f} ms p95 "
              f"{report['scale']['with_features_p95_ms']:.0f} ms; query process max RSS {rss / 1e6:.0f} MB, index pages "
              f"resident {sq['index_resident_bytes'] / 1e6:.0f} MB; duplicates scan {dup_s:.1f} s ({len(groups)} groups)",
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
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
