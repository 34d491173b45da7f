"""`chromaray duplicates` at scale: a library of N tracks (the scale benchmark's generator) with
planted true duplicates and planted traps; time, groups found, precision / recall, false groups.

    .venv/bin/python benchmarks/bench_duplicates.py --tracks 100000 --workdir benchmarks/out/dup-1e5 --json

Library. The synthetic tracks of benchmarks/bench_index_scale.py (chains of 5-20 s segments of
the real library's code sequences, sharing calibrated on the real library: every synthetic track
shares passages with others, which is itself a trap: sharing a passage is not being the same
recording), the 50 real tracks of that pool, and, through the pipeline's feature chain:

- true duplicates: real tracks re-encoded with ffmpeg (libmp3lame 64-128 kbit/s, libvorbis q0):
  pool tracks (their codes are shared by hundreds of synthetic tracks: the hard case) and
  out-of-pool real tracks stored with one or two re-encoded copies (one copy trimmed by 10 s);
- traps, none of which may be grouped with anything: drum-only tracks (synthetic drum loops at
  several tempos), loop-based tracks (one 4 s loop of a real track tiled under different real
  passages), drones (sustained chords in several registers and timbres), digital silence and
  near-silence, and pairs of tracks that share a long real intro and then go different ways.

Pairs are scored against the planted truth: precision and recall over pairs (every pair within a
found group), groups found, *false groups* (a group that is not inside one true group) and
which kind of track they hold. Run in stages: ``--store-only`` generates and stores (untimed);
``--reuse`` times the index build (Ray) and `duplicates`. The planted tracks are analysed once
per --workdir (planted.sqlite; the same for every --tracks) and stored with the synthetic ones as
fingerprint rows. Synthetic tracks are at least 60 s long here (see main).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline.synth import SR, synthetic_hash

ROOT = Path(__file__).resolve().parents[1]


def planted(pool_paths: list[str], others: list[Path], rng: np.random.Generator, work: Path,
            n_pool: int) -> tuple[list[tuple[str, np.ndarray]], list[set[str]], dict[str, str]]:
    """Signals to store (path, mono float32 at SR), the true groups (paths; pool tracks by their
    pool path) and the kind of every planted path ("duplicate" or a trap family)."""
    from bench_identify import ffmpeg_encode, mix_at

    from actors.decode import decode_file
    from pipeline.synth import varied_song
    from pipeline.synth.signals import chord, drum_pattern, noise, silence

    enc = work / "encoded"
    enc.mkdir(parents=True, exist_ok=True)

    def encoded(y: np.ndarray, name: str, codec: str) -> np.ndarray:
        path = enc / f"{name}.{'mp3' if codec == 'mp3' else 'ogg'}"
        ffmpeg_encode(y, path, codec, rng)
        return decode_file(str(path), SR)

    items: list[tuple[str, np.ndarray]] = []
    truth: list[set[str]] = []
    kind: dict[str, str] = {}
    # True duplicates of pool tracks: the pool track is in the library already.
    for i in rng.choice(len(pool_paths), n_pool, replace=False):
        src = pool_paths[int(i)]
        codec = "mp3" if len(truth) % 2 == 0 else "ogg"
        p = f"/planted/dup/pool-{Path(src).stem}.{codec}"
        items.append((p, encoded(decode_file(src, SR), f"pool-{Path(src).stem}", codec)))
        truth.append({src, p})
        kind[p] = "duplicate"
    # Out-of-pool real tracks: the original and one or two copies (one trimmed by 10 s).
    for j, f in enumerate(others):
        y = decode_file(str(f), SR)
        group = {f"/planted/dup/{f.stem}.orig"}
        items.append((f"/planted/dup/{f.stem}.orig", y))
        items.append((f"/planted/dup/{f.stem}.mp3", encoded(y, f"{f.stem}-a", "mp3")))
        group.add(f"/planted/dup/{f.stem}.mp3")
        if j % 2 == 0:
            items.append((f"/planted/dup/{f.stem}.trim.ogg", encoded(y[10 * SR:], f"{f.stem}-b", "ogg")))
            group.add(f"/planted/dup/{f.stem}.trim.ogg")
        truth.append(group)
        kind.update(dict.fromkeys(group, "duplicate"))
    # Traps.
    traps: list[tuple[str, str, np.ndarray]] = []
    for k, bpm in enumerate((90.0, 100.0, 120.0, 120.0, 128.0, 140.0)):
        traps.append(("drum", f"drum-{k}", drum_pattern(bpm=bpm, seconds=float(rng.uniform(30, 60)), seed=k % 3)))
    reals = [decode_file(str(p), SR) for p in rng.choice(pool_paths, 8, replace=False)]
    loop = reals[0][30 * SR: 34 * SR]
    for k in range(6):
        over = reals[1 + k][40 * SR: 80 * SR]
        traps.append(("loop", f"loop-{k}", mix_at(np.tile(loop, 10)[: len(over)], over, -3.0)))
    for k, (notes, harm) in enumerate((([60, 64, 67], 4), ([48, 52, 55], 6), ([57, 60, 64], 4),
                                       ([45, 48, 52], 8), ([62, 65, 69], 3), ([50, 53, 57], 5))):
        traps.append(("drone", f"drone-{k}", chord(notes, seconds=float(rng.uniform(30, 60)), harmonics=harm,
                                                   seed=k)))
    for k, sec in enumerate((20.0, 35.0, 50.0)):
        traps.append(("silence", f"silence-{k}", silence(seconds=sec)))
    for k, sec in enumerate((25.0, 40.0)):
        traps.append(("silence", f"hiss-{k}", noise(seconds=sec, seed=k, amplitude=1e-3)))
    for k in range(3):  # pairs sharing a 30 s real intro, then different real music (60 s, and 12 s)
        intro = reals[5 + k % 3][: 30 * SR]
        traps.append(("intro", f"intro-{k}a", np.r_[intro, varied_song(900 + k, 60.0)]))
        traps.append(("intro", f"intro-{k}b", np.r_[intro, varied_song(950 + k, 12.0 if k == 0 else 60.0)]))
    for fam, name, y in traps:
        p = f"/planted/trap/{name}.wav"
        items.append((p, np.asarray(y, dtype=np.float32)))
        kind[p] = fam
    return items, truth, kind


def evaluate(groups: list, truth: list[set[str]], kind: dict[str, str], hash_of: dict[str, str]) -> dict:
    """Pair precision / recall, groups, false groups (not inside one true group) by track kind."""
    true_sets = [{hash_of[p] for p in g} for g in truth]
    kind_of = {hash_of[p]: k for p, k in kind.items()}
    true_pairs = {frozenset(pr) for g in true_sets for pr in combinations(sorted(g), 2)}
    found = [{m["content_hash"] for m in g.members} for g in groups]
    found_pairs = {frozenset(pr) for g in found for pr in combinations(sorted(g), 2)}
    false = [g for g in found if not any(g <= t for t in true_sets)]
    false_kinds: dict[str, int] = {}
    for g in false:
        for h in g:
            k = kind_of.get(h, "synthetic or pool")
            false_kinds[k] = false_kinds.get(k, 0) + 1
    tp = len(true_pairs & found_pairs)
    return {"groups_found": len(found), "true_groups": len(true_sets),
            "true_groups_found_exactly": sum(any(g == t for g in found) for t in true_sets),
            "pair_precision": round(tp / len(found_pairs), 4) if found_pairs else None,
            "pair_recall": round(tp / len(true_pairs), 4) if true_pairs else None,
            "false_groups": len(false), "false_group_tracks_by_kind": false_kinds,
            "traps_grouped": sum(1 for g in found for h in g if kind_of.get(h, "duplicate") != "duplicate")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=100_000, help="tracks in the library (all kinds)")
    ap.add_argument("--pool-duplicates", type=int, default=6, help="pool tracks planted with a re-encoded copy")
    ap.add_argument("--library-db", default=str(ROOT / "benchmarks" / "out" / "identify-real" / "real-1234-50.sqlite"))
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--workers", choices=("auto", "ray", "driver"), default="auto",
                    help="where duplicates compares (auto: Ray from pipeline.search.duplicates.RAY_MIN_TRACKS)")
    ap.add_argument("--store-only", action="store_true", help="generate and store, then stop (untimed)")
    ap.add_argument("--reuse", action="store_true", help="reuse what --store-only stored in --workdir")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--json", action="store_true", help="print only the JSON report on stdout")
    args = ap.parse_args(argv)

    import bench_index_scale as scale
    from bench_identify import real_tracks

    from pipeline.search import index
    from pipeline.search.duplicates import DuplicateFinder
    from pipeline.store import open_db
    from pipeline.synth import store_signals

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_duplicates_"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / f"dup-{args.tracks}.sqlite"
    meta = work / f"truth-{args.tracks}.json"
    rng = np.random.default_rng(args.seed)
    paths, pool = scale.load_pool(Path(args.library_db))
    if not (args.reuse and db.exists() and meta.exists()):
        planted_db, planted_meta = work / "planted.sqlite", work / "planted.json"
        if not (planted_db.exists() and planted_meta.exists()):  # the same for every --tracks (own seed)
            names = {Path(p).stem for p in paths}
            others = [f for f in real_tracks(ROOT) if f.stem not in names]
            items, truth, kind = planted(paths, others, np.random.default_rng(args.seed), work, args.pool_duplicates)
            engine = open_db(planted_db)
            for i in range(0, len(items), 4):  # a few tracks at a time: the feature chain holds them all
                store_signals(engine, work / "out", items[i: i + 4], run_id=f"planted-{i}")
            engine.dispose()
            planted_meta.write_text(json.dumps({"truth": [sorted(g) for g in truth], "kind": kind,
                                                "paths": [p for p, _ in items]}))
        pm = json.loads(planted_meta.read_text())
        codes_of = dict(scale.load_all(open_db(planted_db, readonly=True)))
        p_paths = pm["paths"]
        p_codes = [np.asarray(codes_of[synthetic_hash(p)], dtype=np.uint32) for p in p_paths]
        p_keep, _ = scale.calibrate(pool, scale.sharing(pool), rng)
        n_synth = max(0, args.tracks - len(pool) - len(p_paths))
        # At least 60 s each: a shorter synthetic track can be one verbatim segment of a pool track,
        # i.e. an excerpt of it (a duplicate by definition) that the truth would not know of.
        lengths = np.maximum(np.array([len(c) for c in pool]), 648)
        synth = scale.synth_tracks(pool, n_synth, p_keep, rng, lengths)
        scale.store(db, paths + p_paths, pool + p_codes, synth)  # hashes: synthetic_hash(path), as store_signals
        del synth
        hash_of = {p: synthetic_hash(p) for p in paths + p_paths}
        meta.write_text(json.dumps({"truth": pm["truth"], "kind": pm["kind"], "hash_of": hash_of,
                                    "planted": len(p_paths), "synthetic": n_synth, "p_keep": p_keep}))
        print(f"stored {n_synth} synthetic + {len(pool)} pool + {len(p_paths)} planted tracks", file=sys.stderr)
        if args.store_only:
            return 0
    m = json.loads(meta.read_text())
    engine = open_db(db)
    t0 = time.perf_counter()
    index.rebuild(engine)  # on Ray workers from index.RAY_MIN_POSTINGS postings on
    build_s = time.perf_counter() - t0
    st = index.stats(engine)
    engine.dispose()
    engine = open_db(db, readonly=True)
    finder = DuplicateFinder(engine)
    t0 = time.perf_counter()
    groups = finder.find(workers=args.workers)
    dup_s = time.perf_counter() - t0
    report = {"tracks": st["tracks"], "planted": m["planted"], "synthetic": m["synthetic"],
              "index_build_s": round(build_s, 1), "duplicates_s": round(dup_s, 1),
              "duplicates_workers": finder.timing.get("workers"), "edges_s": finder.timing.get("edges_s"),
              **evaluate(groups, [set(g) for g in m["truth"]], m["kind"], m["hash_of"]),
              "note": "shared 2-core machine; duplicates_s = DuplicateFinder.find (Ray start included when on Ray)"}
    if not args.json:
        print(json.dumps(report), file=sys.stderr)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
