"""Fingerprint index at scale: N tracks whose codes share like real music's, build time, size and
search latency of clean and music-over-music query code sets.

    .venv/bin/python benchmarks/bench_index_scale.py --tracks 10000 --json

Tracks. The real library of benchmarks/bench_identify.py (50 real tracks; its database is reused
from ``--library-db``, else built) is the pool. Each synthetic track is a chain of segments of
5-20 s of real code sequences (runs, repeats and bit statistics of real music), each segment
copied verbatim with probability ``p_keep`` and otherwise XORed with a random 32-bit mask.
Verbatim segments are what different songs share (common chords and progressions give the same
codes); ``p_keep`` is calibrated so that a synthetic library *of the real library's size* shares
codes as much as the real one (other tracks found per lookup of a real code; distinct codes in two
or more tracks), both printed side by side. Beyond that size the sharing grows with N as copies
accumulate (linearly, like the issue's projection from the real library). Lengths follow the real
tracks'. The real tracks are in the index too, so the queries have their true match.

Queries are the pipeline's chroma of real clips of 5 and 10 s cut from real library tracks, clean
and with another (out-of-library) real track mixed in at 0 dB. Times are *search only* (features
excluded): ``search`` (whole-clip) for clean clips; for mixed ones what identify does for a clip
without a whole-clip match at speed 1: ``search`` then ``search_partial``. Run in a fresh process
(its peak RSS is the query process's). ``top1``: the accepted answer is the clip's own track at
its offset (±1 s), or a synthetic track holding a verbatim copy of that passage (the same audio
there; ``... own`` counts the own track only).

Index build (``build_s``): ``--build ray`` (default) is ``index.rebuild`` from the fingerprints
table on Ray workers (shards sorted in parallel, merged by code ranges in parallel; in-process
below index.RAY_MIN_POSTINGS), ``driver`` the in-process rebuild, ``add`` last round's
``add_tracks`` in segments + compaction. Stages: ``--store-only`` generates and stores the tracks
(untimed); ``--reuse`` times the build and the searches on them.

    .venv/bin/python benchmarks/bench_index_scale.py --tracks 100000 --workdir benchmarks/out/scale-1e5 --store-only
    .venv/bin/python benchmarks/bench_index_scale.py --tracks 100000 --workdir benchmarks/out/scale-1e5 --reuse --json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline.synth import SR, synthetic_hash

DEFAULT_DB = Path(__file__).resolve().parent / "out" / "identify-real" / "real-1234-50.sqlite"


def sharing(tracks: list[np.ndarray]) -> dict:
    """How codes are shared between tracks: ``other_tracks_per_lookup`` (mean over the codes of
    every track of the number of *other* tracks holding the same code) and
    ``shared_code_fraction`` (distinct codes held by two or more tracks)."""
    codes = np.concatenate(tracks).astype(np.uint64)
    keys = np.concatenate([np.full(len(c), i, dtype=np.uint64) for i, c in enumerate(tracks)])
    # Sort-based distinct values (np.unique's hash path is far slower on 10^8 keys).
    pairs = np.sort((codes << np.uint64(20)) | keys)  # (code, track); < 2^20 tracks
    pairs = pairs[np.r_[True, pairs[1:] != pairs[:-1]]]
    code_of_pair = pairs >> np.uint64(20)
    starts = np.flatnonzero(np.r_[True, code_of_pair[1:] != code_of_pair[:-1]])
    distinct, n_tracks = code_of_pair[starts], np.diff(np.r_[starts, len(code_of_pair)])
    del pairs, code_of_pair
    per_code = n_tracks[np.searchsorted(distinct, codes)]
    return {"tracks": len(tracks), "other_tracks_per_lookup": float(np.mean(per_code - 1)),
            "shared_code_fraction": float(np.mean(n_tracks >= 2)), "distinct_codes": len(distinct)}


def synth_tracks(pool: list[np.ndarray], n: int, p_keep: float, rng: np.random.Generator,
                 lengths: np.ndarray) -> list[np.ndarray]:
    """``n`` tracks chained from 54-215-code (5-20 s) segments of the pool's real code sequences,
    each verbatim with probability ``p_keep``, else XORed with a random mask."""
    out = []
    for _ in range(n):
        want = int(lengths[int(rng.integers(len(lengths)))])
        parts, have = [], 0
        while have < want:
            src = pool[int(rng.integers(len(pool)))]
            seg_len = min(int(rng.integers(54, 216)), want - have, len(src))
            a = int(rng.integers(0, len(src) - seg_len + 1))
            seg = src[a: a + seg_len]
            if rng.random() >= p_keep:
                seg = seg ^ np.uint32(rng.integers(0, 2**32, dtype=np.uint64))
            parts.append(seg)
            have += seg_len
        out.append(np.concatenate(parts).astype(np.uint32))
    return out


def calibrate(pool: list[np.ndarray], real: dict, rng: np.random.Generator) -> tuple[float, dict]:
    """``p_keep`` whose synthetic library of the pool's size matches the real sharing per lookup
    (bisection; each probe averaged over 3 draws)."""
    lengths = np.array([len(c) for c in pool])
    lo, hi = 0.0, 1.0
    best: tuple[float, dict] = (0.5, {})
    for _ in range(10):
        mid = 0.5 * (lo + hi)
        st = [sharing(synth_tracks(pool, len(pool), mid, rng, lengths)) for _ in range(3)]
        got = float(np.mean([s["other_tracks_per_lookup"] for s in st]))
        best = (mid, {"other_tracks_per_lookup": got,
                      "shared_code_fraction": float(np.mean([s["shared_code_fraction"] for s in st]))})
        if got < real["other_tracks_per_lookup"]:
            lo = mid
        else:
            hi = mid
    return best


def load_pool(db: Path) -> tuple[list[str], list[np.ndarray]]:
    """(paths, codes) of the real library's tracks."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from pipeline.store import Fingerprint, TrackPath, open_db

    engine = open_db(db, readonly=True)
    with Session(engine) as s:
        rows = s.execute(select(TrackPath.path, Fingerprint.codes)
                         .join(Fingerprint, Fingerprint.content_hash == TrackPath.content_hash)).all()
    engine.dispose()
    rows = sorted(rows)
    return [p for p, _ in rows], [np.frombuffer(c, dtype="<u4").astype(np.uint32) for _, c in rows]


def query_chroma(paths: list[str], others: list[Path], n: int,
                 rng: np.random.Generator) -> tuple[dict[str, list], dict[str, list]]:
    """Chroma (12, T) of ``n`` real clips per set: ``clean/5s``, ``clean/10s``, ``mix0/5s``, ``mix0/10s``,
    and the truth of each clip: (content hash of its library track, its start there, s)."""
    from bench_identify import mix_at

    from actors.config import BatchConfig, DSPConfig
    from actors.decode import decode_file
    from actors.dsp.xp import to_numpy
    from actors.features import FeatureExtractor

    fe = FeatureExtractor(DSPConfig(), BatchConfig(device="cpu"))
    srcs = [paths[int(i)] for i in rng.choice(len(paths), min(len(paths), 6), replace=False)]
    audio = {p: decode_file(p, SR) for p in srcs}
    other = [decode_file(str(p), SR) for p in others[:3]]
    sets: dict[str, list] = {}
    truth: dict[str, list] = {}
    for k in range(n):
        y = audio[srcs[k % len(srcs)]]
        o = other[k % len(other)]
        for dur in (5, 10):
            L = dur * SR
            a = int(rng.integers(0, len(y) - L))
            b = int(rng.integers(0, len(o) - L))
            clip = y[a: a + L]
            for name, sig in (("clean", clip), ("mix0", mix_at(clip, o[b: b + L], 0.0))):
                sets.setdefault(f"{name}/{dur}s", []).append(to_numpy(fe([sig])[0].chroma))
                truth.setdefault(f"{name}/{dur}s", []).append((synthetic_hash(srcs[k % len(srcs)]), a / SR))
    return sets, truth


def same_content(idx: object, key: int, offset: int, true_key: int, true_frame: float, n_frames: int) -> bool:
    """Whether track ``key`` at analysis-frame ``offset`` holds the same audio as the clip's own
    track at its true start: their codes over the clip score <= 0.1 (the score of
    pipeline.search.score; a synthetic track holding a verbatim copy of that passage, or of a
    repeat of it, is as right an answer as the source track)."""
    from actors.fingerprint import DECIMATE
    from pipeline.search.score import verify_codes

    n = n_frames // DECIMATE
    a, b = round(true_frame / DECIMATE), round(offset / DECIMATE)
    ours = idx.track_codes(true_key)[a: a + n]  # type: ignore[attr-defined]
    lib = idx.track_codes(key)  # type: ignore[attr-defined]
    best = min((verify_codes(ours, lib, b + d) for d in (-1, 0, 1)), key=lambda v: v.score)
    return bool(best.n >= 0.8 * len(ours) and best.score <= 0.1)


def timed_search(db: str, sets: dict[str, list], truth: dict[str, list], quick_postings: int | None = None) -> dict:
    """In a fresh process: search latencies per query set (ms), top-1 (the clip's own track,
    accepted, offset within 1 s) per set, and this process's peak RSS."""
    from actors.config import DSPConfig
    from pipeline.search.identify import DEFAULTS, accepts, search, search_partial
    from pipeline.search.index import FingerprintIndex
    from pipeline.store import open_db

    cfg = DEFAULTS if quick_postings is None else DEFAULTS.replace(quick_postings=quick_postings)

    idx = FingerprintIndex.open(open_db(db, readonly=True))
    key_of = {t.content_hash: k for k, t in idx.tracks.items()}
    rate = DSPConfig().frame_rate_hz
    search(idx, sets["clean/5s"][0], rate)  # warm-up: page in the hot part of the index
    out: dict = {}
    top1: dict = {}
    for name, chromas in sets.items():
        lat, hits, hits_own = [], 0, 0
        for ch, (h, start_s) in zip(chromas, truth[name]):
            t0 = time.perf_counter()
            c = search(idx, ch, rate, config=cfg)
            if name.startswith("mix") and (c is None or not accepts(c, cfg)):
                c = search_partial(idx, ch, rate, config=cfg) or c
            lat.append(1e3 * (time.perf_counter() - t0))
            if c is None or not accepts(c, cfg):
                continue
            own = c.key == key_of.get(h) and abs(c.offset / rate - start_s) <= 1.0
            hits += own or same_content(idx, c.key, c.offset, key_of[h], start_s * rate, ch.shape[1])
            hits_own += own
        out[name] = lat
        top1[name] = hits / max(1, len(chromas))
        top1[name + " own"] = hits_own / max(1, len(chromas))
    with open("/proc/self/status") as fh:
        rss = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
    return {"lat_ms": out, "top1": top1, "rss_mb": rss}


def store(db: Path, real_paths: list[str], real_codes: list[np.ndarray], synth: list[np.ndarray]) -> None:
    """Store the tracks as the pipeline does (tracks + fingerprints rows, analysis settings)."""
    from sqlalchemy import insert
    from sqlalchemy.orm import Session

    from actors.fingerprint import DECIMATE, FP_FRAME_RATE_HZ, FP_VERSION
    from pipeline.config import ChromarayConfig
    from pipeline.ingest.plan import versions_for
    from pipeline.store import Fingerprint, Track, open_db, record_settings

    for p in db.parent.glob(db.name + "*"):
        if p.is_dir():
            import shutil

            shutil.rmtree(p)
        else:
            p.unlink()
    engine = open_db(db)
    cfg = ChromarayConfig()
    version = versions_for(cfg)["audio"]
    items = [(synthetic_hash(p), c) for p, c in zip(real_paths, real_codes)]
    items += [(synthetic_hash(f"scale-{i}"), c) for i, c in enumerate(synth)]
    for i in range(0, len(items), 5000):
        chunk = items[i: i + 5000]
        with Session(engine) as s, s.begin():
            record_settings(s, version, "audio", cfg.dsp)
            s.execute(insert(Track), [{"content_hash": h, "kind": "audio", "format": "SYN", "size_bytes": 0,
                                       "duration_s": len(c) / FP_FRAME_RATE_HZ, "n_frames": len(c) * DECIMATE,
                                       "features_version": version, "run_id": "bench"} for h, c in chunk])
            s.execute(insert(Fingerprint), [{"content_hash": h, "version": FP_VERSION,
                                             "frame_rate_hz": float(FP_FRAME_RATE_HZ), "n_codes": len(c),
                                             "codes": c.astype("<u4").tobytes()} for h, c in chunk])
    engine.dispose()


def build_index(db: Path, how: str) -> float:
    """Index the stored tracks from the fingerprints table; returns the build time, seconds.
    ``how``: "ray" (index.rebuild on Ray workers), "driver" (index.rebuild in this process) or
    "add" (index.add_tracks in segments of TRACKS_PER_SEGMENT + compaction, last round's build)."""
    from sqlalchemy import delete
    from sqlalchemy.orm import Session

    from actors.fingerprint import DECIMATE, FP_FRAME_RATE_HZ
    from pipeline.search import index
    from pipeline.store import FpIndexSegment, FpIndexTrack, open_db

    engine = open_db(db)
    with Session(engine) as s, s.begin():  # start from an empty index whatever the last run left
        s.execute(delete(FpIndexTrack))
        s.execute(delete(FpIndexSegment))
    for p in index.index_dir(engine).glob("*"):
        p.unlink()
    if how == "add":
        items = load_all(engine)
        t0 = time.perf_counter()
        index.add_tracks(engine, items, frame_rate_hz=FP_FRAME_RATE_HZ * DECIMATE)
    else:
        t0 = time.perf_counter()
        index.rebuild(engine, workers=how)
    build_s = time.perf_counter() - t0
    engine.dispose()
    return build_s


def load_all(engine: Engine) -> list[tuple[str, np.ndarray]]:
    """Every stored (content hash, codes)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from pipeline.store import Fingerprint

    with Session(engine) as s:
        return [(h, np.frombuffer(c, dtype="<u4")) for h, c in s.execute(select(Fingerprint.content_hash,
                                                                               Fingerprint.codes))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=10000, help="tracks in the index (real pool included)")
    ap.add_argument("--queries", type=int, default=12, help="queries per set (clean/mix0 x 5 s/10 s)")
    ap.add_argument("--library-db", default=str(DEFAULT_DB),
                    help="database of the real library (benchmarks/bench_identify.py --workdir ...)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--build", choices=("ray", "driver", "add", "none"), default="ray",
                    help="index build: rebuild on Ray workers (default; in-process below "
                         "index.RAY_MIN_POSTINGS), rebuild on the driver, add_tracks (last round's build), or "
                         "none: search the index an earlier --reuse run built (build_s null)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the tracks stored in --workdir by an earlier run with the same --tracks and "
                         "--seed (the index is rebuilt and timed; the sharing at N is not recomputed)")
    ap.add_argument("--store-only", action="store_true",
                    help="generate and store the tracks in --workdir and stop (untimed; a later --reuse run "
                         "times the build and the searches)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick-postings", type=int, default=None,
                    help="IdentifyConfig.quick_postings for the searches (0: the full pass alone, as before #12's "
                         "last round; default: the shipped value)")
    ap.add_argument("--json", action="store_true", help="print only the JSON report on stdout")
    args = ap.parse_args(argv)

    import concurrent.futures as cf
    import multiprocessing as mp
    import tempfile

    from bench_identify import real_tracks

    from pipeline.config import IdentifyConfig
    from pipeline.search import index
    from pipeline.store import open_db

    rng = np.random.default_rng(args.seed)
    lib_db = Path(args.library_db)
    if not lib_db.exists():
        print(f"no real library database at {lib_db}: run `python benchmarks/bench_identify.py --quick --workdir "
              f"{lib_db.parent}` first", file=sys.stderr)
        return 2
    paths, pool = load_pool(lib_db)
    real = sharing(pool)
    p_keep, calib = calibrate(pool, real, rng)
    print(f"sharing, real library ({len(pool)} tracks): {real}; synthetic of the same size (p_keep {p_keep:.3f}): "
          f"{calib}", file=sys.stderr)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_index_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / f"scale-{args.tracks}.sqlite"
    sharing_file = work / f"sharing-{args.tracks}.json"
    if not (args.reuse and db.exists()):
        t0 = time.perf_counter()
        synth = synth_tracks(pool, max(0, args.tracks - len(pool)), p_keep, rng, np.array([len(c) for c in pool]))
        print(f"{len(synth)} synthetic tracks in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        at_n = sharing(pool + synth) if args.tracks <= 400_000 else None
        print(f"sharing at {args.tracks} tracks: {at_n}", file=sys.stderr)
        store(db, paths, pool, synth)
        del synth
        sharing_file.write_text(json.dumps(at_n))
        if args.store_only:
            return 0
    at_n = json.loads(sharing_file.read_text()) if sharing_file.exists() else None
    build_s = None if args.build == "none" else build_index(db, args.build)
    if build_s is not None:
        print(f"index build ({args.build}) {build_s:.0f} s", file=sys.stderr)
    st = index.stats(open_db(db, readonly=True))
    lib_names = {Path(p).stem for p in paths}
    others = [f for f in real_tracks(Path(__file__).resolve().parents[1]) if f.stem not in lib_names]
    # Queries from their own seed: the same clips whether the tracks were generated or reused.
    sets, truth = query_chroma(paths, others, args.queries, np.random.default_rng(args.seed + 1))
    with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        res = ex.submit(timed_search, str(db), sets, truth, args.quick_postings).result()
    hours = st["live_postings"] * 4 / (22050 / 512) / 3600  # one posting per code, 4 analysis frames per code

    def pct(q: float, kind: str) -> dict:
        return {k.split("/")[1]: round(float(np.percentile(v, q)), 2) for k, v in res["lat_ms"].items()
                if k.startswith(kind)}

    report = {"tracks": st["tracks"], "postings": st["postings"], "index_bytes": st["bytes"],
              "audio_hours": round(hours, 1), "bytes_per_audio_hour": round(st["bytes"] / hours),
              "build_s": None if build_s is None else round(build_s, 1), "build": args.build,
              "search_p50_ms": {"clean": pct(50, "clean"), "mix0": pct(50, "mix0")},
              "search_p95_ms": {"clean": pct(95, "clean"), "mix0": pct(95, "mix0")},
              "top1": {k: round(v, 3) for k, v in res["top1"].items()},
              "rss_mb": round(res["rss_mb"], 1),
              "sharing": {"real_library": real, "synthetic_same_size": calib, "p_keep": round(p_keep, 4),
                          "at_n": at_n},
              "queries_per_set": args.queries,
              "quick_postings": IdentifyConfig().quick_postings if args.quick_postings is None else args.quick_postings,
              "note": "search only (features excluded); mix0 = search, then search_partial without an accepted "
                      "match; top1 = accepted, and the clip's own track with its offset within 1 s or a synthetic "
                      "track holding a verbatim copy of that passage (top1 own: the own track only); shared 2-core "
                      "machine"}
    text = json.dumps(report, indent=2)
    if not args.json:
        print(f"{report['tracks']} tracks, {report['postings']} postings, {st['bytes'] / 1e6:.1f} MB "
              f"({report['bytes_per_audio_hour'] / 1e6:.3f} MB per audio hour), build {report['build_s']} s; "
              f"search p50 {report['search_p50_ms']} p95 {report['search_p95_ms']}; top1 {report['top1']}; "
              f"rss {report['rss_mb']} MB", file=sys.stderr)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
