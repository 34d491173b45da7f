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

Everything is seeded: the same command gives the same queries and the same index. Songs and
degradations come from pipeline.synth (varied_song, add_noise, reencode, ...), the library is
stored by pipeline.synth.store_signals (the pipeline's feature chain and result sink, no Ray).
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
